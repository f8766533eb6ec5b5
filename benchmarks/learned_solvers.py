"""Learned solvers (``learn_solver``) against their fixed base, a learned grid alone, and ``tune``'s winner.

Problem: a 2-D Gaussian mixture (``GaussianMixture.random(PRNGKey(2701), 5, 2, scale=2, min_var=0.03,
max_var=0.6)``, exact score) under ``VPLinear``, float64; three disjoint batches of exact draws of
``p_T`` (keys 27100 / 27200 / 27300): calibration (``--batch``) fits, held-back (``--batch``) picks the
iterate, fresh (``--fresh``, 1024) only reports. End-point RMSE against ``reference_solve`` (Dopri8 in
x0-lambda, rtol = atol = 1e-11) from the same initial states.

Rows for each NFE and base: the base on its default grid; ``optimize_grid`` (the grid alone, from that
grid, chosen on the held-back batch); ``learn_solver`` (coefficients and grid); with ``--coef-only``
also ``learn_solver(learn_times=False)``. With ``--tune-seconds S``: ``tune``'s winner (learned grids
for its 3 best solvers) and ``learn_solver`` started from it when its solver is learnable.

Run: ``python -m benchmarks.learned_solvers --nfe 5,10 --out benchmarks/results/learned_solvers.md``.
"""

from __future__ import annotations

import argparse
import shlex
import sys
import time

import jax

jax.config.update("jax_enable_x64", True)

# isort: split
import jax.numpy as jnp  # noqa: E402

import jaxode_diffusion as jd  # noqa: E402
from jaxode_diffusion.analysis.diffrax_drivers import reference_solve  # noqa: E402
from jaxode_diffusion.analysis.distances import rmse  # noqa: E402
from jaxode_diffusion.sampling.defaults import default_grid_for  # noqa: E402
from jaxode_diffusion.solvers.learned import learnable_bases  # noqa: E402
from jaxode_diffusion.solvers.multistep import MULTISTEP_ALIASES, MULTISTEP_SCHEMES  # noqa: E402
from jaxode_diffusion.tuning.grid_optimization import optimize_grid  # noqa: E402
from jaxode_diffusion.tuning.learned import learn_solver  # noqa: E402
from jaxode_diffusion.tuning.tuner import tune  # noqa: E402

SEED, KEYS = 2701, (27100, 27200, 27300)


def problem(batch: int, fresh: int, seed: int = SEED):
    """The model, the process, the three batches and their references (seed 2701 is the recorded one;
    another seed shifts the batch keys by the same amount)."""
    vp = jd.VPLinear()
    gm = jd.GaussianMixture.random(jax.random.PRNGKey(seed), 5, 2, scale=2.0, min_var=0.03, max_var=0.6)
    sf = gm.score_fn(vp)
    t1 = float(vp.default_t_start)
    xs = [gm.sample_marginal(jax.random.PRNGKey(k), n, vp, t1).astype(jnp.float64)
          for k, n in zip((k + seed - SEED for k in KEYS), (batch, batch, fresh))]
    refs = [reference_solve(sf, vp, x) for x in xs]
    return sf, vp, xs, refs


def multistep(base: str) -> bool:
    return base in MULTISTEP_SCHEMES or base in MULTISTEP_ALIASES


def fresh_error(sf, vp, x, ref, ts, solver) -> float:
    sol = jd.solve(sf, vp, x, jnp.asarray(ts, x.dtype), solver, throw=False)
    return float(rmse(sol.samples, ref)), int(sol.nfe)


def rows_for(nfe, base, sf, vp, xs, refs, args, log):
    (x_cal, x_held, x_fresh), (r_cal, r_held, r_fresh) = xs, refs
    common = dict(heldout_x_init=x_held, fresh_x_init=x_fresh, reference=r_cal, heldout_reference=r_held,
                  steps=args.steps, learning_rate=args.lr, patience=args.patience)
    t0 = time.time()
    ls = learn_solver(sf, vp, x_cal, nfe=nfe, base=base, history=args.history if multistep(base) else None,
                      **common)
    out = [dict(nfe=nfe, method=f"{base} on {ls.grid}", used=ls.nfe, held=ls.start_heldout_error,
                fresh=ls.start_fresh_error, seconds=0.0),
           dict(nfe=nfe, method=f"learn_solver({base})", used=ls.nfe, held=ls.heldout_error, fresh=ls.fresh_error,
                seconds=ls.seconds, note=f"iterate {ls.best_iteration}/{ls.iterations}")]
    log(f"NFE {nfe} {base}: learned {ls.start_fresh_error:.4g} -> {ls.fresh_error:.4g} ({time.time() - t0:.0f} s)")
    if args.coef_only:
        lc = learn_solver(sf, vp, x_cal, nfe=nfe, base=base, learn_times=False, **common)
        out.append(dict(nfe=nfe, method=f"learn_solver({base}, learn_times=False)", used=lc.nfe,
                        held=lc.heldout_error, fresh=lc.fresh_error, seconds=lc.seconds,
                        note=f"iterate {lc.best_iteration}/{lc.iterations}"))
    t0 = time.time()
    og = optimize_grid(sf, vp, x_cal, solver=base, num_steps=ls.num_steps, init_grid=default_grid_for(base, vp),
                       reference=r_cal, steps=args.steps, learning_rate=args.lr, patience=args.patience,
                       selection_x_init=x_held, selection_reference=r_held, validate=False)
    err, used = fresh_error(sf, vp, x_fresh, r_fresh, og.ts, base)
    out.append(dict(nfe=nfe, method=f"optimize_grid({base})", used=used, held=og.selection_error, fresh=err,
                    seconds=time.time() - t0, note=f"iterate {og.best_iteration}/{og.iterations}"))
    log(f"NFE {nfe} {base}: grid only -> {err:.4g}")
    return out


def tune_rows(nfe, sf, vp, xs, refs, args, log):
    (x_cal, x_held, x_fresh), (r_cal, r_held, r_fresh) = xs, refs
    t0 = time.time()
    t = tune(sf, vp, x_cal, nfe=nfe, heldout_x_init=x_held, max_seconds=args.tune_seconds, progress=False)
    err, used = fresh_error(sf, vp, x_fresh, r_fresh, t.ts, t.solver)
    out = [dict(nfe=nfe, method=f"tune: {t.solver} on {t.grid}", used=used, held=t.heldout_error, fresh=err,
                seconds=time.time() - t0)]
    log(f"NFE {nfe} tune: {t.solver} on {t.grid} fresh {err:.4g}")
    if t.solver.lower() in learnable_bases():
        ls = learn_solver(sf, vp, x_cal, nfe=nfe, base=t, heldout_x_init=x_held, fresh_x_init=x_fresh,
                          reference=r_cal, heldout_reference=r_held, steps=args.steps, learning_rate=args.lr,
                          patience=args.patience)
        out.append(dict(nfe=nfe, method=f"learn_solver(tune's {t.solver})", used=ls.nfe, held=ls.heldout_error,
                        fresh=ls.fresh_error, seconds=ls.seconds, note=f"iterate {ls.best_iteration}/{ls.iterations}"))
        log(f"NFE {nfe} learned from tune: {ls.fresh_error:.4g}")
    return out


def table(rows) -> str:
    lines = ["| NFE | method | NFE used | held-back RMSE | fresh RMSE | fit s | note |",
             "|---:|---|---:|---:|---:|---:|---|"]
    for r in rows:
        lines.append(f"| {r['nfe']} | {r['method']} | {r['used']} | {r['held']:.4g} | {r['fresh']:.4g} | "
                     f"{r['seconds']:.0f} | {r.get('note', '')} |")
    return "\n".join(lines)


def main(argv=None):
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--nfe", default="5,10")
    p.add_argument("--bases", default="dpmpp_2m,unipc_bh2_2,dpmpp_3m,dpmpp_2s")
    p.add_argument("--batch", type=int, default=512)
    p.add_argument("--fresh", type=int, default=1024)
    p.add_argument("--steps", type=int, default=200)
    p.add_argument("--lr", type=float, default=0.02)
    p.add_argument("--patience", type=int, default=50)
    p.add_argument("--history", type=int, default=None, help="model values kept by the multistep families")
    p.add_argument("--coef-only", action="store_true")
    p.add_argument("--tune-seconds", type=float, default=None, help="also run tune (this long) and learn from its winner")
    p.add_argument("--seed", type=int, default=SEED, help="mixture seed (2701: the recorded problem)")
    p.add_argument("--out", default=None)
    args = p.parse_args(argv)
    started = time.time()

    def log(msg):
        print(f"[{time.time() - started:6.0f} s] {msg}", flush=True)

    sf, vp, xs, refs = problem(args.batch, args.fresh, args.seed)
    rows = []
    for nfe in (int(v) for v in args.nfe.split(",")):
        for base in args.bases.split(","):
            rows += rows_for(nfe, base, sf, vp, xs, refs, args, log)
        if args.tune_seconds is not None:
            rows += tune_rows(nfe, sf, vp, xs, refs, args, log)
    text = (f"# Learned solvers vs their base\n\n`{shlex.join(['python', '-m', 'benchmarks.learned_solvers', *sys.argv[1:]])}`"
            f" ({time.time() - started:.0f} s)\n\n{table(rows)}\n")
    print(text)
    if args.out:
        with open(args.out, "w") as f:
            f.write(text)


if __name__ == "__main__":
    main()
