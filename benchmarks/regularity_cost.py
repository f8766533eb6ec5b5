"""Cost of the regularity estimators: exact (dense) vs matrix-free, as the dimension grows.

For an MLP score ``s(x, t) = W2 tanh(W1 x + t c + b) - x`` (hidden width 256, random weights)
and ``d`` in {16, 64, 256, 784, 3072}, times one call (after a warm-up call that compiles) and
reads the compiled program's temporary-buffer size (XLA's ``memory_analysis().temp_size_in_bytes``,
the working memory beyond inputs and outputs) of

* ``||Ds||_2``: exact = ``jax.jacfwd`` + ``eigvalsh(J^T J)``; matrix-free = power iteration on ``J^T J``;
* ``||D^2 s||_op``: exact = dense ``d^3`` tensor (``jacfwd(jacfwd)``) + block ascent with eigen-steps
  from 36 starts; matrix-free = alternating higher-order power method, 8 restarts.

Iterative methods run a fixed number of iterations (``tol=0``) so that times compare equal work.
A dense path whose tensor alone exceeds ``--budget-gb`` is reported as infeasible.

Usage::

    python -m benchmarks.regularity_cost                      # writes benchmarks/results/regularity_cost.md
    python -m benchmarks.regularity_cost --dims 16 64 --repeats 5
"""

from __future__ import annotations

import argparse
import datetime
import os
import platform
import sys
import time
from pathlib import Path

import jax
import jax.numpy as jnp
import numpy as np

from jaxode_diffusion.analysis.regularity import jacobian_norm, second_derivative_norm

WIDTH = 256


def make_score(d: int, width: int = WIDTH, seed: int = 0):
    k1, k2, k3, k4 = jax.random.split(jax.random.PRNGKey(seed), 4)
    w1 = jax.random.normal(k1, (width, d)) / np.sqrt(d)
    w2 = jax.random.normal(k2, (d, width)) / np.sqrt(width)
    b = jax.random.normal(k3, (width,))
    c = jax.random.normal(k4, (width,))

    def score(x, t):
        return jnp.tanh(x @ w1.T + t * c + b) @ w2.T - x

    return score


def _gb(nbytes: float) -> str:
    if nbytes >= 2**30:
        return f"{nbytes / 2**30:.2f} GiB"
    if nbytes >= 2**20:
        return f"{nbytes / 2**20:.1f} MiB"
    return f"{nbytes / 2**10:.1f} KiB"


def measure(fn, x, repeats: int):
    """(temp bytes, seconds per call, value) of ``fn(x)`` compiled once."""
    compiled = jax.jit(fn).lower(x).compile()
    mem = compiled.memory_analysis()
    temp = getattr(mem, "temp_size_in_bytes", float("nan")) if mem is not None else float("nan")
    out = jax.block_until_ready(compiled(x))  # warm-up
    t0 = time.perf_counter()
    for _ in range(repeats):
        out = jax.block_until_ready(compiled(x))
    return temp, (time.perf_counter() - t0) / repeats, float(np.asarray(out)[0])


def run(dims, budget_gb: float, batch: int, repeats: int, iters: int):
    rows = []
    itemsize = jnp.dtype(jnp.float64 if jax.config.jax_enable_x64 else jnp.float32).itemsize
    for d in dims:
        score = make_score(d)
        x = jax.random.normal(jax.random.PRNGKey(1), (batch, d))
        t = 0.5
        cases = [
            ("‖Ds‖₂", "exact", "jacfwd + eigvalsh(J^T J)", d * d * itemsize,
             lambda y: jacobian_norm(score, y, t, method="exact")),
            ("‖Ds‖₂", "matrix_free", f"power iteration, {iters} its",
             0, lambda y: jacobian_norm(score, y, t, method="matrix_free", tol=0.0, num_iters=iters)),
            ("‖D²s‖_op", "exact", f"d^3 tensor + ascent, 36 starts <= {iters} its",
             d**3 * itemsize,
             lambda y: second_derivative_norm(score, y, t, method="exact", num_iters=iters)),
            ("‖D²s‖_op", "matrix_free", f"HOPM, 4 sketched + 8 random starts x {iters} its", 0,
             lambda y: second_derivative_norm(score, y, t, method="matrix_free", tol=0.0, num_iters=iters)),
        ]
        for quantity, method, detail, dense_bytes, fn in cases:
            if dense_bytes * batch > budget_gb * 2**30:
                rows.append((d, quantity, method, detail, f"infeasible (needs {_gb(dense_bytes * batch)})",
                             "-", "-"))
                print(rows[-1], flush=True)
                continue
            reps = repeats if d < 784 else 1
            temp, sec, val = measure(fn, x, reps)
            rows.append((d, quantity, method, detail, _gb(temp), f"{sec * 1e3:.1f} ms", f"{val:.5g}"))
            print(rows[-1], flush=True)
    return rows


def to_markdown(rows, args, elapsed: float) -> str:
    dev = jax.devices()[0]
    lines = [
        "# Regularity estimator cost: exact vs matrix-free",
        "",
        f"- date: {datetime.datetime.now().astimezone().isoformat(timespec='seconds')}",
        f"- machine: {platform.platform()}, {os.cpu_count()} CPU cores, {platform.processor() or 'cpu'}; "
        f"JAX {jax.__version__} on {dev.platform} ({dev.device_kind}); "
        f"{'float64' if jax.config.jax_enable_x64 else 'float32'}",
        "- command: `" + " ".join(["python", f"benchmarks/{Path(__file__).name}", *sys.argv[1:]]) + "`",
        f"- score: MLP `W2 tanh(W1 x + t c + b) - x`, width {WIDTH}; batch {args.batch}; "
        f"t = 0.5; dense budget {args.budget_gb} GiB; total run {elapsed:.0f} s",
        "- memory: compiled temporary buffers (`memory_analysis().temp_size_in_bytes`); time: one call "
        "after a warm-up call (mean of the repeats)",
        "- the machine may have been shared with other jobs: times are indicative",
        "",
        "| d | quantity | method | work | temp memory | time / call | value (ex. 0) |",
        "|---:|---|---|---|---:|---:|---:|",
    ]
    for row in rows:
        lines.append("| " + " | ".join(str(c) for c in row) + " |")
    return "\n".join(lines) + "\n"


def main(argv=None):
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--dims", type=int, nargs="+", default=[16, 64, 256, 784, 3072])
    parser.add_argument("--budget-gb", type=float, default=1.0, help="largest dense tensor allowed (GiB)")
    parser.add_argument("--batch", type=int, default=1)
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--iters", type=int, default=50, help="iterations of the iterative methods")
    parser.add_argument("--out", default=str(Path(__file__).parent / "results" / "regularity_cost.md"))
    args = parser.parse_args(argv)
    t0 = time.perf_counter()
    rows = run(args.dims, args.budget_gb, args.batch, args.repeats, args.iters)
    text = to_markdown(rows, args, time.perf_counter() - t0)
    Path(args.out).parent.mkdir(parents=True, exist_ok=True)
    Path(args.out).write_text(text)
    print(text)
    print(f"wrote {args.out}")


if __name__ == "__main__":
    main()
