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

``--kdiffusion PROBLEMS`` (names from ``benchmarks.tune_vs_kdiffusion.PROBLEMS``, comma-separated, or
``all``) runs instead the comparison on those unseen mixtures, with that module's batches (calibration
key 14100+i, held-back 14200+i, fresh 14300+i of 1024 draws), reference, k-diffusion rows and mode
flips: per problem and NFE, ``learn_solver(--kd-base)``, the base on its default grid, and the
k-diffusion sampler best on the held-back batch, all scored on the fresh batch (RMSE, median
per-sample error, mode flips, sliced Wasserstein to 4096 exact draws of ``p_{t_end}``). Results:
``benchmarks/results/learned_solvers_kdiffusion.md``; the reading is in ``benchmarks/README.md``.
"""

from __future__ import annotations

import argparse
import os
import shlex
import sys
import time
from dataclasses import dataclass

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
    p.add_argument("--kdiffusion", default=None,
                   help="compare with k-diffusion on these tune_vs_kdiffusion problems (comma-separated, or 'all')")
    p.add_argument("--kd-base", default="unipc_bh2_2", help="the base learn_solver starts from with --kdiffusion")
    args = p.parse_args(argv)
    if args.kdiffusion is not None:
        return main_kdiffusion(args, sys.argv[1:] if argv is None else argv)
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


@dataclass
class Scored:
    """One sampler on the fresh batch: end-point RMSE, median per-sample error, mode flips, sliced W2."""

    method: str
    nfe: int
    rmse: float
    median: float
    flips: int
    sw: float
    held: float = float("nan")
    seconds: float = 0.0
    note: str = ""


@dataclass
class KdProblem:
    """A ``tune_vs_kdiffusion`` problem: its model, batches, references and exact target draws."""

    name: str
    gm: object
    sf: object
    process: object
    times: tuple
    xs: tuple
    refs: tuple
    target: jax.Array
    den: object


def kd_problem(name, batch, log) -> KdProblem:
    """Builds ``tune_vs_kdiffusion.PROBLEMS[name]`` with that module's keys (calibration and held-back of
    ``batch`` draws, fresh of 1024) and Dopri8 references of all three batches."""
    from benchmarks import common
    from benchmarks import tune_vs_kdiffusion as tvk

    i = list(tvk.PROBLEMS).index(name)
    make_process, d, k, seed, scale, min_var, max_var = tvk.PROBLEMS[name]
    process = make_process()
    gm = jd.GaussianMixture.random(jax.random.PRNGKey(seed), k, d, scale=scale, min_var=min_var, max_var=max_var)
    sf = gm.score_fn(process)
    t1, t_end = float(process.default_t_start), float(process.default_t_end)
    xs = tuple(gm.sample_marginal(jax.random.PRNGKey(b + i), n, process, t1)
               for b, n in ((14100, batch), (14200, batch), (14300, tvk.FRESH)))
    t0 = time.time()
    refs = tuple(reference_solve(sf, process, x, t_start=t1, t_end=t_end) for x in xs)
    log(f"{name}: references in {time.time() - t0:.0f} s")
    target = gm.sample_marginal(jax.random.PRNGKey(14400 + i), 4096, process, t_end)
    return KdProblem(name, gm, sf, process, (t1, t_end), xs, refs, target,
                     common.mixture_denoiser(gm.weights, gm.means, gm.covs))


def score_fresh(pb: KdProblem, method, nfe, samples, **kw) -> Scored:
    """Scores end points ``samples`` of the fresh batch against its reference and the exact target."""
    from benchmarks import tune_vs_kdiffusion as tvk
    from jaxode_diffusion.analysis.distances import sliced_wasserstein

    ref = pb.refs[2]
    m_end = pb.gm.marginal(pb.process, pb.times[1])
    err = jnp.linalg.norm(samples - ref, axis=1)
    flips = int((tvk.components(m_end, samples) != tvk.components(m_end, ref)).sum())
    sw = float(sliced_wasserstein(samples, pb.target, key=jax.random.PRNGKey(7)))
    return Scored(method, nfe, float(rmse(samples, ref)), float(jnp.median(err)), flips, sw, **kw)


def kd_rows(pb: KdProblem, nfe, args, log) -> list:
    """Learned solver, its base on the default grid and the best k-diffusion sampler at ``nfe``."""
    from benchmarks import accuracy_vs_nfe as avn
    from benchmarks import tune_vs_kdiffusion as tvk
    from jaxode_diffusion.sampling.core import make_times

    (x_cal, x_held, x_fresh), (r_cal, r_held, r_fresh) = pb.xs, pb.refs
    t1, t_end = pb.times
    base = args.kd_base
    ls = learn_solver(pb.sf, pb.process, x_cal, nfe=nfe, base=base, t_start=t1, t_end=t_end, heldout_x_init=x_held,
                      reference=r_cal, heldout_reference=r_held, steps=args.steps, learning_rate=args.lr,
                      patience=args.patience, history=args.history if multistep(base) else None)
    x_l = jd.solve(pb.sf, pb.process, x_fresh, jnp.asarray(ls.ts), ls.solver, throw=False).samples
    ts0 = make_times(pb.process, num_steps=ls.num_steps, t_start=t1, t_end=t_end, grid=ls.grid)
    x_b = jd.solve(pb.sf, pb.process, x_fresh, ts0, jd.get_solver(base), throw=False).samples
    out = [score_fresh(pb, f"learn_solver({base})", ls.nfe, x_l, held=ls.heldout_error, seconds=ls.seconds,
                       note=f"iterate {ls.best_iteration}/{ls.iterations}"),
           score_fresh(pb, f"{base} on {ls.grid} (its start)", ls.nfe, x_b, held=ls.start_heldout_error)]
    t0 = time.time()
    k_held = avn.k_diffusion_rows(pb.den, pb.process, x_held, r_held, x_held.shape[1], [nfe], t_end=t_end)
    k_fresh = avn.k_diffusion_rows(pb.den, pb.process, x_fresh, r_fresh, x_held.shape[1], [nfe], t_end=t_end)
    kb = min(k_held, key=lambda r: r["rmse"])
    kf = next(r for r in k_fresh if (r["solver"], r["grid"]) == (kb["solver"], kb["grid"]))
    x_k, _ = tvk.k_errors(pb.den, pb.process, x_fresh, r_fresh, t_end, kf, samples=True)
    out.append(score_fresh(pb, f"k-diffusion best: {kb['solver'][2:]} / {kb['grid']}", kf["nfe"], x_k,
                           held=kb["rmse"], note=f"of {len(k_held)} samplers x grids"))
    out.append(score_fresh(pb, "reference (Dopri8) end points", 0, r_fresh, note="the distance floor"))
    log(f"{pb.name} NFE {nfe}: learned {out[0].rmse:.3e} (fit {ls.seconds:.0f} s), base {out[1].rmse:.3e}, "
        f"k best {out[2].rmse:.3e} ({time.time() - t0:.0f} s k-diffusion)")
    return out


def kd_table(results) -> str:
    """The fresh-batch table of every problem and NFE."""
    lines = ["| problem | NFE | method | NFE used | held-back RMSE | fresh RMSE | fresh median | flips | SW2 to target "
             "| fit s | note |", "|---|---:|---|---:|---:|---:|---:|---:|---:|---:|---|"]
    for name, nfe, rows in results:
        for r in rows:
            lines.append(f"| {name} | {nfe} | {r.method} | {r.nfe} | {r.held:.3e} | {r.rmse:.3e} | {r.median:.3e} | "
                         f"{r.flips} | {r.sw:.4f} | {r.seconds:.0f} | {r.note} |")
    lines += ["", "| problem | NFE | learned / base RMSE | learned / k-diffusion best RMSE |", "|---|---:|---:|---:|"]
    for name, nfe, rows in results:
        lines.append(f"| {name} | {nfe} | {rows[0].rmse / rows[1].rmse:.3f} | {rows[0].rmse / rows[2].rmse:.3f} |")
    return "\n".join(lines)


def main_kdiffusion(args, argv):
    """``--kdiffusion``: runs the problems one after the other, rewriting ``--out`` after each."""
    import datetime
    import platform

    from benchmarks import tune_vs_kdiffusion as tvk

    names = list(tvk.PROBLEMS) if args.kdiffusion == "all" else [n.strip() for n in args.kdiffusion.split(",")]
    for n in names:
        if n not in tvk.PROBLEMS:
            raise ValueError(f"--kdiffusion: unknown problem {n!r}; choose from {list(tvk.PROBLEMS)}.")
    started = time.time()

    def log(msg):
        print(f"[{time.time() - started:6.0f} s] {msg}", flush=True)

    results = []
    for name in names:
        pb = kd_problem(name, args.batch, log)
        for nfe in (int(v) for v in args.nfe.split(",")):
            results.append((name, nfe, kd_rows(pb, nfe, args, log)))
        text = (f"# Learned solvers vs k-diffusion on the unseen mixtures of tune_vs_kdiffusion\n\n"
                f"Machine: {platform.machine()}, {os.cpu_count()} CPUs, JAX {jax.__version__} on "
                f"{jax.devices()[0].platform}; float64; date {datetime.date.today()}; "
                f"{time.time() - started:.0f} s.\n\n"
                f"Command: `{shlex.join(['python', '-m', 'benchmarks.learned_solvers', *argv])}`\n\n"
                f"Batches: calibration {args.batch} (fits), held-back {args.batch} (picks the learned iterate and "
                f"the k-diffusion sampler), fresh {tvk.FRESH} (every row below). Flips: end points whose most "
                f"probable component of p_t_end differs from the reference's. SW2: sliced Wasserstein-2 (256 "
                f"directions) to 4096 exact draws of p_t_end.\n\n{kd_table(results)}\n")
        if args.out:
            with open(args.out, "w") as f:
                f.write(text)
    print(text)


if __name__ == "__main__":
    main()
