"""Mixed precision: a bfloat16 network sampled with a float32 (or float64) solver state.

The same network is adapted twice with :func:`jaxode_diffusion.as_score_fn`: in full precision,
and with ``compute_dtype=jnp.bfloat16`` (parameters stored in bfloat16, every layer computing in
bfloat16; the preconditioning skip ``c_skip x``, the conversion to a score and the solver state
stay in the state's dtype). Both are sampled from the same noise with the same solver and grid.
Reported, per network and solver:

* accuracy: RMSE(bf16 samples - full-precision samples) / RMS(full-precision samples), next to
  the discretisation error of the full-precision run itself (RMSE against a 4x finer run of the
  same solver) for scale;
* speed: median sampler wall time, bf16 / full precision (interleaved timing, one machine).

Networks: the package's MLP trained briefly on the 8-Gaussian ring (d = 2), and, for speed, an
MLP on d = 64 and a U-Net on 8x8x1 with random weights (output layers randomised: the packaged
models start with a zero output layer, which would hide the network).

Run: ``python -m benchmarks.mixed_precision [--train-steps 1500] [--repeats 5] [--out benchmarks/results/mixed_precision.md]``
"""

from __future__ import annotations

import argparse
import datetime
import os
import platform
import sys

import jax
import jax.numpy as jnp
import numpy as np
from flax import nnx

import jaxode_diffusion as jd
from benchmarks.common import time_interleaved
from jaxode_diffusion.models import MLP, UNet, as_score_fn


def _randomise_output(model, attr, key):
    layer = getattr(model, attr)
    layer.kernel[...] = 0.3 * jax.random.normal(key, layer.kernel.shape, layer.kernel.dtype)
    return model


def _networks(train_steps: int, seed: int):
    vp = jd.VPLinear()
    out = []
    res = jd.train(
        jd.TrainConfig(data="gmm", steps=train_steps, width=256, depth=3, progress=False, eval_every=0, seed=seed)
    )
    out.append((f"MLP d=2, trained {train_steps} steps (ring)", res.model(), res.process, (4096, 2)))
    mlp = _randomise_output(MLP(64, width=512, depth=3, rngs=nnx.Rngs(seed)), "out", jax.random.PRNGKey(seed + 1))
    out.append(("MLP d=64 width 512, random", mlp, vp, (4096, 64)))
    unet = UNet((8, 8, 1), channels=32, rngs=nnx.Rngs(seed))
    unet = _randomise_output(unet, "conv_out", jax.random.PRNGKey(seed + 2))
    out.append(("U-Net 8x8x1 32 ch, random", unet, vp, (256, 8, 8, 1)))
    return out


def _rel_rmse(a, b):
    a, b = np.asarray(a, np.float64), np.asarray(b, np.float64)
    return float(np.sqrt(np.mean((a - b) ** 2)) / np.sqrt(np.mean(b**2)))


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--train-steps", type=int, default=1500)
    ap.add_argument("--repeats", type=int, default=5)
    ap.add_argument("--solvers", default="dpmpp_2m:10,x0-lambda:rk4:5")
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--x64", action="store_true", help="float64 solver state (jax_enable_x64)")
    ap.add_argument("--out", default=None, help="also write the markdown table here")
    args = ap.parse_args(argv)
    if args.x64:
        jax.config.update("jax_enable_x64", True)
    state_dtype = jnp.float64 if args.x64 else jnp.float32
    solvers = [(s.rsplit(":", 1)[0], int(s.rsplit(":", 1)[1])) for s in args.solvers.split(",")]

    rows = []
    for name, model, process, shape in _networks(args.train_steps, args.seed):
        full = as_score_fn(model, process)
        half = as_score_fn(model, process, compute_dtype=jnp.bfloat16)
        x_init = process.prior_sample(jax.random.PRNGKey(args.seed + 3), shape, dtype=state_dtype)
        for solver, steps in solvers:

            def run(score, n=steps, solver=solver):
                return jd.sample(score, process, x_init, solver=solver, num_steps=n, grid="log_snr")

            x_full, x_half, x_fine = run(full), run(half), run(full, 4 * steps)
            assert x_half.dtype == x_init.dtype, (x_half.dtype, x_init.dtype)  # state dtype follows x_init
            t_full, t_half = time_interleaved([lambda: run(full), lambda: run(half)], args.repeats)
            rows.append(
                (name, f"{solver}, {steps} steps", _rel_rmse(x_half, x_full), _rel_rmse(x_full, x_fine),
                 t_full, t_half)
            )
            print(rows[-1], flush=True)

    dev = jax.devices()[0]
    cmd = "python " + " ".join([os.path.relpath(sys.argv[0])] + (argv if argv is not None else sys.argv[1:]))
    lines = [
        f"Machine: {platform.machine()} {platform.processor() or ''}, {os.cpu_count()} CPUs, "
        f"JAX {jax.__version__} on {dev.platform} ({dev.device_kind}); date {datetime.date.today()}; "
        f"command: `{cmd}`",
        "",
        f"Solver state {np.dtype(state_dtype).name}; bf16 = `as_score_fn(model, process, compute_dtype=jnp.bfloat16)` "
        "(parameters and layers in bfloat16); grid log_snr; median of "
        f"{args.repeats} interleaved repeats.",
        "",
        "| network | solver | bf16 vs full: rel. RMSE | full: discretisation rel. RMSE (vs 4x steps) "
        "| full time (s) | bf16 time (s) | bf16 / full time |",
        "|---|---|---:|---:|---:|---:|---:|",
    ]
    for name, solver, e_half, e_disc, tf, th in rows:
        lines.append(f"| {name} | {solver} | {e_half:.2e} | {e_disc:.2e} | {tf:.4f} | {th:.4f} | {th / tf:.2f} |")
    text = "\n".join(lines)
    print(text)
    if args.out:
        mode = "a" if os.path.exists(args.out) and args.x64 else "w"
        with open(args.out, mode) as fh:
            fh.write(("\n" if mode == "a" else "") + text + "\n")


if __name__ == "__main__":
    main()
