"""Does a grid placed by the model's measured local error beat the named grids at 5-10 NFE on
trained models? (:mod:`jaxode_diffusion.tuning.error_grids`; ``choose_grid(..., error_grids=True)``.)

The method (GITS: Chen et al., "On the Trajectory Regularity of ODE-based Diffusion Sampling",
ICML 2024; and the classical equidistribution of local error, Hairer, Norsett & Wanner, Solving ODEs I,
sec. II.4): a teacher trajectory of a pilot batch (``x0-lambda:rk4``, 8 steps per node) at ``K = 40``
candidate nodes uniform in log-SNR; a cost matrix ``C[i, j]``, the RMS over the batch of the error of
one step of a cost solver from the teacher at node ``i`` to node ``j``; then the ``N``-step path with
the least sum of costs by dynamic programming (optionally with consecutive steps within a factor
``max_ratio``), or ``N`` steps with equal shares of ``c^(1/(p+1))``, ``c`` the one-interval cost.

For every trained run directory (``jaxode-diffusion train`` output), solver and NFE budget:

* ``x_init``: a fresh batch of prior draws (``--batch``, key 3000) and its reference, a tight
  ``x0-lambda:rk4`` solve on 384 log-SNR steps (float64) of the same network;
* a pilot batch of 64 other prior draws (key 20261201, as ``jaxode-diffusion sample --grid auto``);
* the step count is the largest whose measured NFE fits the budget;
* end-point RMSE on the fresh batch of: every named grid (the best one picked with hindsight on the
  fresh batch itself: the hardest comparison), the grid that ``choose_grid``'s rule picks from the pilot
  batch (lowest pilot RMSE against the teacher's end point, a 320-step ``x0-lambda:rk4`` solve), the
  error grids of ``jaxode_diffusion.tuning.error_grids.error_grid_candidates`` built from the pilot batch
  (``error``: DP on the solver's own one-step errors; ``error:r2``: the same with consecutive steps
  within a factor 2; ``error-proxy:r2``: DP on the one-step errors of the singlestep solver of the
  same order, multistep solvers only; ``equidistributed``: equal shares of the local-error density),
  and ``select``: the same pilot rule over the named grids and the error grids together (what
  ``choose_grid(..., error_grids=True)`` does).

Run (the trained models of the results table; the development models were separate)::

    jaxode-diffusion train --data checkerboard --steps 1500 --seed 31 --out /tmp/beyond/fin_cb_vp   # and
    #   swiss_roll --process subvp --prediction x0 --seed 32, eight_gaussians --process edm --seed 33,
    #   gmm --prediction v --seed 34, rings --process rectified_flow --prediction flow --seed 35
    python -m benchmarks.error_grid --trained /tmp/beyond/fin_cb_vp ... --out benchmarks/results/error_grid.md
"""

from __future__ import annotations

import argparse
import datetime
import json
import math
import os
import platform
import sys
import time

os.environ["XLA_FLAGS"] = (
    os.environ.get("XLA_FLAGS", "") + " --xla_cpu_enable_concurrency_optimized_scheduler=false"
).strip()

import jax  # noqa: E402

jax.config.update("jax_enable_x64", True)

import numpy as np  # noqa: E402

import jaxode_diffusion as jd  # noqa: E402
from jaxode_diffusion.analysis.distances import rmse  # noqa: E402
from jaxode_diffusion.sampling.core import make_times, solve  # noqa: E402
from jaxode_diffusion.tuning.error_grids import error_grid_candidates  # noqa: E402

SOLVERS = ("unipc_bh2_2", "dpmpp_2m", "dpmpp_3m", "x0-lambda:heun")
BUDGETS = (5, 8, 10)
REF_STEPS = 384
VARIANTS = ("error", "error:r2", "error-proxy:r2", "equidistributed", "select")


def _err(x, ref):
    v = float(rmse(x, ref))
    return v if math.isfinite(v) else float("inf")


def reference(sf, proc, x, t0, t1, steps=REF_STEPS):
    """x0-lambda:rk4 on ``steps`` log-SNR steps; its error estimated against half the steps (/15,
    Richardson for 4th order). A fixed-step reference: adaptive Dopri8 at tol 1e-9 took minutes per
    batch on trained networks on the shared machine."""
    def run(m):
        return solve(sf, proc, x, make_times(proc, num_steps=m, t_start=t0, t_end=t1, grid="log_snr"),
                     "x0-lambda:rk4").samples

    ref = run(steps)
    return ref, _err(run(steps // 2), ref) / 15.0


def steps_for(sf, proc, x, solver, budget, t0, t1):
    memo = {}

    def nfe(n):
        if n not in memo:
            memo[n] = int(solve(sf, proc, x[:2], make_times(proc, num_steps=n, t_start=t0, t_end=t1,
                                                             grid="log_snr"), solver, throw=False).nfe)
        return memo[n]

    stages = max(1, len(jd.get_solver(solver).stage_fractions))
    n = max(1, budget // stages)
    while n > 1 and nfe(n) > budget:
        n -= 1
    while nfe(n + 1) <= budget:
        n += 1
    return n, nfe(n)


def measure_model(run_dir, solvers, budgets, batch, variants, log):
    from jaxode_diffusion.training import load_run

    sf, cfg = load_run(run_dir)
    proc = sf.process
    shape = tuple(cfg["data"]["event_shape"])
    label = (f"{cfg['data']['name']} / {type(proc).__name__} / {cfg['model']['prediction']} "
             f"({os.path.basename(os.path.normpath(run_dir))})")
    t0, t1 = proc.default_t_start, proc.default_t_end
    x = proc.prior_sample(jax.random.PRNGKey(3000), (batch, *shape), t=t0)
    x_pilot = proc.prior_sample(jax.random.key(20261201), (64, *shape))
    t = time.time()
    ref, ref_err = reference(sf, proc, x, t0, t1)
    log(f"  {label}: reference {time.time() - t:.0f} s, its estimated RMSE {ref_err:.1e}")
    cache = {}  # the teacher and the cost matrices, shared by all solvers and step counts
    rows = []
    for s in solvers:
        for b in budgets:
            n, nfe = steps_for(sf, proc, x, s, b, t0, t1)
            grids = {g: make_times(proc, num_steps=n, t_start=t0, t_end=t1, grid=g) for g in jd.sampling.GRID_NAMES}
            named = {g: _err(solve(sf, proc, x, ts, s, throw=False).samples, ref) for g, ts in grids.items()}
            tt = time.time()
            cand = error_grid_candidates(sf, proc, x_pilot, s, n, t_start=t0, t_end=t1, cache=cache)
            secs = time.time() - tt
            # choose_grid's rule (lowest pilot RMSE against a tight pilot solve), with the teacher's end
            # point (x0-lambda:rk4, 320 log-SNR steps) as that solve.
            teacher = cache["teacher", 40]
            pilot = {g: _err(solve(sf, proc, x_pilot, ts, s, throw=False).samples, teacher[-1])
                     for g, ts in grids.items()}
            pick = min(pilot, key=pilot.get)
            row = dict(model=label, solver=s, budget=b, steps=n, nfe=nfe, named=named, choose_grid=pick,
                       reference_error=ref_err, candidates_seconds=secs)
            for v, ts in cand.items():
                row[v] = _err(solve(sf, proc, x, ts, s, throw=False).samples, ref)
            # select: choose_grid's rule over the named grids and the error grids together
            for v, ts in cand.items():
                pilot[v] = _err(solve(sf, proc, x_pilot, ts, s, throw=False).samples, teacher[-1])
            sel = min(pilot, key=pilot.get)
            row["select"] = named[sel] if sel in named else row[sel]
            row["select_pick"] = sel
            rows.append(row)
            best = min(named, key=named.get)
            log(f"    {s} NFE {b} ({n} steps): best named {best} {named[best]:.4g}, choose_grid {pick} "
                f"{named[pick]:.4g}, " + ", ".join(f"{v} {row[v]:.4g}" for v in variants if v in row))
    return rows


def summarise(rows, variants):
    out = {}
    for v in variants:
        r = [row for row in rows if v in row]
        if not r:
            continue
        vs_best = np.array([row[v] / min(row["named"].values()) for row in r])
        vs_pick = np.array([row[v] / row["named"][row["choose_grid"]] for row in r])
        out[v] = dict(n=len(r), wins_best=int((vs_best < 1).sum()), wins_pick=int((vs_pick < 1).sum()),
                      geo_best=float(np.exp(np.mean(np.log(vs_best)))),
                      geo_pick=float(np.exp(np.mean(np.log(vs_pick)))),
                      worst_best=float(vs_best.max()), worst_pick=float(vs_pick.max()),
                      losses_pick=int((vs_pick > 1.1).sum()))
    return out


def write(path, rows, variants, command, seconds, note):
    s = summarise(rows, variants)
    lines = [
        "# Error grid (GITS-style dynamic programming on measured local errors) vs named grids, trained models",
        "",
        f"- date: {datetime.datetime.now(datetime.timezone.utc).isoformat(timespec='seconds')}",
        f"- machine: {platform.platform()}, {os.cpu_count()} CPU cores, JAX {jax.__version__} on "
        f"{jax.default_backend()}; float64; shared with other jobs (one core)",
        f"- command: `{command}` (total {seconds:.0f} s)",
        "- cells: end-point RMSE on a fresh batch of prior draws against a tight reference of the same network "
        "(x0-lambda:rk4 on 384 log-SNR steps; its estimated error, vs 192 steps / 15, in the JSON); `best named` is chosen with hindsight on that batch; `choose_grid` is "
        "the named grid `choose_grid`'s rule picks from 64 pilot draws (lowest pilot RMSE vs a 320-step x0-lambda:rk4 solve); the error grids are built from the same 64 "
        "pilot draws (`error`: dynamic programming on the solver's own one-step errors; `error:r2`: consecutive steps "
        "within a factor 2; `error-proxy:r2`: costs of dpmpp_2s/dpmpp_3s by order, multistep solvers only; "
        "`equidistributed`: equal shares of the local-error density); `select`: the pilot rule of `choose_grid` over the named and "
        "the error grids together (`choose_grid(..., error_grids=True)`).",
        "",
    ]
    if note:
        lines += [note, ""]
    lines += ["## Summary", "", "| variant | cases | wins vs best named | geo-mean ratio vs best named | worst ratio | "
              "wins vs choose_grid | > 1.1x worse than choose_grid | geo-mean ratio vs choose_grid | worst ratio |",
              "|---|---:|---:|---:|---:|---:|---:|---:|---:|"]
    for v, d in s.items():
        lines.append(f"| {v} | {d['n']} | {d['wins_best']} | {d['geo_best']:.3f} | {d['worst_best']:.2f} | "
                     f"{d['wins_pick']} | {d['losses_pick']} | {d['geo_pick']:.3f} | {d['worst_pick']:.2f} |")
    lines += ["", "## All cases", "",
              "| model | solver | NFE | steps | uniform | log_snr | edm | quadratic | choose_grid | "
              + " | ".join(variants) + " |",
              "|---|---|---:|---:|---:|---:|---:|---:|---|" + "---:|" * len(variants)]
    for r in rows:
        best = min(r["named"].values())
        cells = [f"**{e:.4g}**" if e == best else f"{e:.4g}" for e in (r["named"][g] for g in jd.sampling.GRID_NAMES)]
        vc = [(f"{r[v]:.4g} ({r[v] / best:.2f}x)" if v in r else "-") for v in variants]
        if "select_pick" in r:
            vc[-1] += f" {r['select_pick']}"
        pick = r["choose_grid"]
        lines.append(f"| {r['model']} | {r['solver']} | {r['budget']} | {r['steps']} | " + " | ".join(cells)
                     + f" | {pick} {r['named'][pick]:.4g} | " + " | ".join(vc) + " |")
    lines.append("")
    with open(path, "w") as f:
        f.write("\n".join(lines))


def main(argv=None):
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--trained", nargs="+", default=[], help="run directories of `jaxode-diffusion train`")
    p.add_argument("--solvers", default=",".join(SOLVERS))
    p.add_argument("--budgets", default=",".join(map(str, BUDGETS)))
    p.add_argument("--batch", type=int, default=256)
    p.add_argument("--out", default="benchmarks/results/error_grid.md")
    p.add_argument("--note", default="")
    p.add_argument("--note-command", default=None, help="with --rewrite: the command of the measured run")
    p.add_argument("--rewrite", default=None, help="re-render --out from this saved JSON instead of measuring")
    p.add_argument("--seconds", type=float, default=None, help="with --rewrite: the measured run's total seconds")
    a = p.parse_args(argv)
    solvers, variants = a.solvers.split(","), list(VARIANTS)
    budgets = [int(b) for b in a.budgets.split(",")]
    command = "python -m benchmarks.error_grid " + " ".join(sys.argv[1:] if argv is None else argv)
    if a.rewrite:
        rows = json.load(open(a.rewrite))
        write(a.out, rows, variants, a.note_command or command, a.seconds or float("nan"), a.note)
        return
    t = time.time()
    rows = []
    for d in a.trained:
        rows += measure_model(d, solvers, budgets, a.batch, variants, lambda m: print(m, flush=True))
        write(a.out, rows, variants, command, time.time() - t, a.note)
        with open(os.path.splitext(a.out)[0] + ".json", "w") as f:
            json.dump(rows, f, indent=1)
    print(json.dumps(summarise(rows, variants), indent=1))


if __name__ == "__main__":
    main()
