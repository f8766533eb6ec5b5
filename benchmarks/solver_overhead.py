"""Solver overhead: how close the sampler gets to the cost of its score evaluations.

For a Flax NNX MLP score (batch 4096, d = 64, float32) and RK4 in the x-t form at 10 and 50
steps, it reports, measured in one run on one machine:

* overhead = sampler time / (NFE x one score evaluation), where one score evaluation is timed
  inside a compiled loop of NFE evaluations (no per-call dispatch), so 1.00 means the solver
  adds nothing on top of the network;
* ours / diffrax = sampler time / ``diffrax.diffeqsolve`` time on the same tableau (converted
  with ``diffrax_solver``) and the same grid (``StepTo``).

Run: ``python -m benchmarks.solver_overhead [--repeats 20] [--out benchmarks/results/solver_overhead.md]``
"""

from __future__ import annotations

import argparse
import datetime
import os
import platform

import equinox as eqx
import jax
import jax.numpy as jnp
from flax import nnx

import jaxode_diffusion as jd
from benchmarks.common import time_interleaved
from jaxode_diffusion.analysis.diffrax_drivers import diffrax_fixed_step


class MLPScore(nnx.Module):
    """A 4-layer SiLU MLP on [x, embed(t)] (hidden 512), the shape of a typical vector score net."""

    def __init__(self, d, hidden=512, *, rngs):
        self.l1 = nnx.Linear(d + 16, hidden, rngs=rngs)
        self.l2 = nnx.Linear(hidden, hidden, rngs=rngs)
        self.l3 = nnx.Linear(hidden, hidden, rngs=rngs)
        self.l4 = nnx.Linear(hidden, d, rngs=rngs)

    def __call__(self, x, t):
        freqs = jnp.exp(jnp.linspace(0.0, 4.0, 8, dtype=x.dtype))
        emb = jnp.concatenate([jnp.sin(freqs * t), jnp.cos(freqs * t)])
        h = jnp.concatenate([x, jnp.broadcast_to(emb, (x.shape[0], 16))], axis=-1)
        h = jax.nn.silu(self.l1(h))
        h = jax.nn.silu(self.l2(h))
        h = jax.nn.silu(self.l3(h))
        return self.l4(h)


class NNXScore(eqx.Module):
    """Pytree wrapper: graphdef static, parameters traced (so they are arguments, not constants)."""

    graphdef: object = eqx.field(static=True)
    state: object

    def __call__(self, x, t):
        return nnx.merge(self.graphdef, self.state)(x, t)


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--repeats", type=int, default=20)
    ap.add_argument("--batch", type=int, default=4096)
    ap.add_argument("--dim", type=int, default=64)
    ap.add_argument("--steps", default="10,50")
    ap.add_argument("--out", default=None, help="also write the markdown table here")
    args = ap.parse_args(argv)

    model = MLPScore(args.dim, rngs=nnx.Rngs(0))
    graphdef, state = nnx.split(model)
    score = NNXScore(graphdef, state)
    vp = jd.VPLinear()
    x0 = jax.random.normal(jax.random.PRNGKey(0), (args.batch, args.dim), jnp.float32)

    rows = []
    for n in [int(s) for s in args.steps.split(",")]:
        nfe = 4 * n

        @eqx.filter_jit
        def score_loop(score, x):
            def body(i, acc):
                return acc + score(x + acc * 1e-6, 0.5)  # data dependence keeps evals sequential
            return jax.lax.fori_loop(0, nfe, body, jnp.zeros_like(x))

        t_loop, t_ours, t_ours_checked, t_dfx = time_interleaved([
            lambda: score_loop(score, x0),
            lambda: jd.sample(score, vp, x0, solver="rk4", num_steps=n, check_finite=False),
            lambda: jd.sample(score, vp, x0, solver="rk4", num_steps=n),
            lambda: diffrax_fixed_step(score, vp, x0, solver="rk4", num_steps=n),
        ], args.repeats)
        rows.append((n, nfe, t_loop / nfe, t_ours, t_ours_checked, t_dfx))

    dev = jax.devices()[0]
    lines = [
        f"Machine: {platform.machine()} {platform.processor() or ''}, {os.cpu_count()} CPUs, "
        f"JAX {jax.__version__} on {dev.platform} ({dev.device_kind}); date {datetime.date.today()}; "
        f"command: `python -m benchmarks.solver_overhead --repeats {args.repeats}`",
        "",
        f"RK4 (x-t form, uniform grid), MLP score, batch {args.batch}, d = {args.dim}, float32; "
        "median of repeats.",
        "",
        "| steps | NFE | overhead = sampler / (NFE x score eval) | same, with finite check | ours / diffrax |",
        "|---|---|---|---|---|",
    ]
    for n, nfe, te, to, toc, td in rows:
        lines.append(f"| {n} | {nfe} | {to / (nfe * te):.3f} | {toc / (nfe * te):.3f} | {to / td:.3f} |")
    if dev.platform == "gpu":
        lines += ["", "Absolute times (GPU): " + "; ".join(
            f"{n} steps: ours {to * 1e3:.2f} ms, diffrax {td * 1e3:.2f} ms, score eval {te * 1e6:.1f} us"
            for n, nfe, te, to, toc, td in rows)]
    text = "\n".join(lines)
    print(text)
    if args.out:
        with open(args.out, "w") as fh:
            fh.write(text + "\n")


if __name__ == "__main__":
    main()
