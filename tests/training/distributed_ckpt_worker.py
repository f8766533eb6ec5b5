"""Worker for tests/training/test_distributed_checkpoints.py: one process of a data-parallel run
on CPU devices that checkpoints into a shared run directory, and may kill itself or resume.

    python tests/training/distributed_ckpt_worker.py OUT.npz --run DIR [--resume] [--kill-at K]
        [--reference DIR] [--process-id I --num-processes N --port P]

XLA_FLAGS (the number of CPU devices) is set by the caller. Process 0 writes the final parameters
(``param_*``) to OUT.npz: of the run in DIR, or with ``--reference REF`` of an uninterrupted run
into REF trained first. ``--kill-at K`` SIGKILLs every process when step K is done (after the
checkpoint of step 4, the first due), as a crash or a preempted job would.
"""

import argparse
import os
import signal
import sys

import numpy as np

CONFIG = dict(
    data="two_moons", steps=8, batch_size=32, width=16, depth=1, n_train=256, n_heldout=32,
    progress=False, eval_every=0, ckpt_every=4, log_every=1, lr=3e-3, data_parallel=True,
)


def main() -> int:
    p = argparse.ArgumentParser()
    p.add_argument("out")
    p.add_argument("--run", required=True)
    p.add_argument("--resume", action="store_true")
    p.add_argument("--kill-at", type=int, default=None)
    p.add_argument("--reference", default=None)
    p.add_argument("--process-id", type=int, default=0)
    p.add_argument("--num-processes", type=int, default=1)
    p.add_argument("--port", type=int, default=0)
    a = p.parse_args()

    import jax

    if a.num_processes > 1:
        jax.config.update("jax_cpu_collectives_implementation", "gloo")
        jax.distributed.initialize(
            coordinator_address=f"127.0.0.1:{a.port}", num_processes=a.num_processes,
            process_id=a.process_id, initialization_timeout=60,
        )
    from jaxode_diffusion.training import TrainConfig, train

    def save(res, path):
        out = {f"param_{i}": np.asarray(jax.device_get(x)) for i, x in enumerate(jax.tree.leaves(res.params))}
        out["num_processes"] = np.asarray(jax.process_count())
        out["num_devices"] = np.asarray(len(jax.devices()))
        if jax.process_index() == 0:
            np.savez(path, **out)

    if a.reference:
        save(train(TrainConfig(**CONFIG, out_dir=a.reference)), a.out)

    def crash(step, loss):
        if a.kill_at is not None and step == a.kill_at:
            os.kill(os.getpid(), signal.SIGKILL)

    res = train(TrainConfig(**CONFIG, out_dir=a.run, resume=a.resume), callback=crash)
    if not a.reference:
        save(res, a.out)
    if a.num_processes > 1:
        jax.distributed.shutdown()
    return 0


if __name__ == "__main__":
    sys.exit(main())
