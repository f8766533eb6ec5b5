"""Worker for tests/sampling/test_distributed.py: one process of a (multi-)process run on CPU devices.

    python tests/sampling/distributed_worker.py OUT.npz --mode single            # 1 process, all its devices
    python tests/sampling/distributed_worker.py OUT.npz --mode multi --process-id I --num-processes N --port P

XLA_FLAGS (the number of CPU devices) is set by the caller. Writes, from process 0 only:
samples of a random-init MLP score (dpmpp_2m, 6 steps; each process holds its slice of the
noise) and the parameters after 20 data-parallel training steps, gathered over all processes;
``--mode single`` also writes the one-device references (``ref_*``).
"""

import argparse
import sys
import time

import numpy as np


def main() -> int:
    p = argparse.ArgumentParser()
    p.add_argument("out")
    p.add_argument("--mode", choices=["single", "multi"], required=True)
    p.add_argument("--process-id", type=int, default=0)
    p.add_argument("--num-processes", type=int, default=1)
    p.add_argument("--port", type=int, default=0)
    p.add_argument("--data-parallel", type=int, default=1)
    a = p.parse_args()

    import jax

    if a.mode == "multi":
        # Cross-process collectives on CPU (the gradient all-reduce, the gather) go through gloo.
        jax.config.update("jax_cpu_collectives_implementation", "gloo")
        jax.distributed.initialize(
            coordinator_address=f"127.0.0.1:{a.port}",
            num_processes=a.num_processes,
            process_id=a.process_id,
            initialization_timeout=60,
        )
    from flax import nnx

    from jaxode_diffusion import VPLinear
    from jaxode_diffusion.models import ScoreModel, build_model
    from jaxode_diffusion.sampling.distributed import sample_multiprocess
    from jaxode_diffusion.training import TrainConfig, train

    t0 = time.time()
    vp = VPLinear()
    net = build_model({"type": "mlp", "dim": 4, "width": 16, "depth": 1}, seed=3)
    graphdef, state = nnx.split(net)
    score = ScoreModel(graphdef, nnx.to_pure_dict(state), vp, "eps")
    n_proc, pid = jax.process_count(), jax.process_index()
    batch = 32  # global batch, divisible by 8 devices
    x_all = np.asarray(jax.random.normal(jax.random.key(0), (batch, 4)), np.float32) * 1.5
    # Each process holds only its slice of the batch (rows in process order).
    per = batch // n_proc
    x_local = x_all[pid * per : (pid + 1) * per]
    out = {}
    out["samples"] = sample_multiprocess(score, vp, x_local, solver="dpmpp_2m", num_steps=6, grid="log_snr")
    cfg = dict(
        data="two_moons", steps=20, batch_size=32, width=16, depth=1, n_train=256, n_heldout=32,
        progress=False, eval_every=20, ckpt_every=0, lr=3e-3,
    )
    runs = [("", True)]
    if a.mode == "single":  # the one-device reference, in the same process
        from jaxode_diffusion import sample

        out["ref_samples"] = np.asarray(sample(score, vp, x_all, solver="dpmpp_2m", num_steps=6, grid="log_snr"))
        runs.append(("ref_", False))
    for prefix, parallel in runs:
        # The 8-device run also writes a checkpoint: the test restores it on one device.
        run_dir = a.out + "_run" if (parallel and a.mode == "single") else None
        res = train(TrainConfig(**cfg, data_parallel=parallel, out_dir=run_dir))
        for i, leaf in enumerate(jax.tree.leaves(res.params)):
            if parallel:
                assert leaf.sharding.is_fully_replicated and len(leaf.sharding.device_set) == len(jax.devices())
            out[f"{prefix}param_{i}"] = np.asarray(jax.device_get(leaf))
        out[f"{prefix}heldout_loss"] = np.asarray([h["heldout_loss"] for h in res.history if "heldout_loss" in h])
    out["num_devices"] = np.asarray(len(jax.devices()))
    out["num_processes"] = np.asarray(n_proc)
    if pid == 0:
        np.savez(a.out, **out)
    print(f"process {pid}/{n_proc}: {len(jax.devices())} devices, done in {time.time() - t0:.1f} s", flush=True)
    if a.mode == "multi":
        jax.distributed.shutdown()
    return 0


if __name__ == "__main__":
    sys.exit(main())
