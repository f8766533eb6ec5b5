"""Training throughput (optimisation steps per second) of the score networks on this machine.

Measures the jit-compiled train step of :func:`jaxode_diffusion.training.train` (DSM loss,
clip + AdamW, EMA) after warm-up, for:

* MLP, d = 2 and d = 64, batch 256;
* U-Net, digits 8x8x1 and random 32x32x3, batch 64.

Run: ``python -m benchmarks.training_throughput [--steps 30]``; prints a markdown table.
"""

from __future__ import annotations

import argparse
import datetime
import os
import platform
import time

import jax
import jax.numpy as jnp
import numpy as np
import optax
from flax import nnx

from jaxode_diffusion.models import build_model
from jaxode_diffusion.processes import VPLinear
from jaxode_diffusion.training import TrainConfig, dsm_loss, make_optimizer, model_config_for
from jaxode_diffusion.training.data import load_digits


def bench(name, kind, data, batch, steps, config):
    process = VPLinear()
    model_cfg = model_config_for(config, kind, data.shape[1:], float(data.std()))
    model = build_model(model_cfg)
    graphdef, state = nnx.split(model)
    params = nnx.to_pure_dict(state)
    n_params = sum(int(np.prod(x.shape)) for x in jax.tree.leaves(params))
    tx = make_optimizer(config)
    opt = tx.init(params)
    ema = params
    xs = jnp.asarray(data)

    @jax.jit
    def step(p, o, e, s, key):
        kd, kn = jax.random.split(jax.random.fold_in(key, s))
        x0 = xs[jax.random.randint(kd, (batch,), 0, xs.shape[0])]
        loss, g = jax.value_and_grad(lambda q: dsm_loss(nnx.merge(graphdef, q), process, x0, kn))(p)
        u, o = tx.update(g, o, p)
        p = optax.apply_updates(p, u)
        e = jax.tree.map(lambda a, b: 0.999 * a + 0.001 * b, e, p)
        return p, o, e, loss

    key = jax.random.key(0)
    t0 = time.perf_counter()
    params, opt, ema, loss = step(params, opt, ema, jnp.int32(0), key)
    loss.block_until_ready()
    compile_s = time.perf_counter() - t0
    for s in range(1, 4):  # warm-up
        params, opt, ema, loss = step(params, opt, ema, jnp.int32(s), key)
    loss.block_until_ready()
    t0 = time.perf_counter()
    for s in range(steps):
        params, opt, ema, loss = step(params, opt, ema, jnp.int32(4 + s), key)
    loss.block_until_ready()
    dt = time.perf_counter() - t0
    return dict(
        name=name,
        batch=batch,
        params=n_params,
        compile_s=compile_s,
        steps_per_s=steps / dt,
        ex_per_s=steps * batch / dt,
    )


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--steps", type=int, default=30, help="timed steps per configuration")
    args = ap.parse_args(argv)
    rng = np.random.default_rng(0)
    cfg = TrainConfig(steps=1000)
    rows = [
        bench("MLP d=2", "vector", rng.standard_normal((4096, 2)).astype(np.float32), 256, args.steps, cfg),
        bench("MLP d=64", "vector", rng.standard_normal((4096, 64)).astype(np.float32), 256, args.steps, cfg),
        bench("U-Net digits 8x8x1", "image", load_digits().train, 64, args.steps, cfg),
        bench(
            "U-Net 32x32x3 (random)",
            "image",
            rng.uniform(-1, 1, (512, 32, 32, 3)).astype(np.float32),
            64,
            max(5, args.steps // 3),
            cfg,
        ),
    ]
    dev = jax.devices()[0]
    print(
        f"Machine: {platform.platform()}, {platform.processor() or platform.machine()}, "
        f"CPU count {os.cpu_count()}, JAX {jax.__version__} on {dev.platform} ({dev.device_kind}); "
        f"date {datetime.date.today().isoformat()}"
    )
    print("Command: python -m benchmarks.training_throughput --steps", args.steps)
    print()
    print("| model | batch | params | compile (s) | steps/s | examples/s |")
    print("|---|---:|---:|---:|---:|---:|")
    for r in rows:
        print(
            f"| {r['name']} | {r['batch']} | {r['params']:,} | {r['compile_s']:.1f} | "
            f"{r['steps_per_s']:.1f} | {r['ex_per_s']:.0f} |"
        )


if __name__ == "__main__":
    main()
