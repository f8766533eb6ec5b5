"""Measured defaults: for every solver, the named grid that measures best across problems; the best
default solver at a moderate NFE (10-20).

Problems (exact scores, float64, x_init exact draws of p_{t_start}, end-point RMSE against
``reference_solve`` from the same x_init):

* the accuracy_vs_nfe problems ``GaussianMixture.random(PRNGKey(d), 4, d, scale=2, min_var=0.05,
  max_var=0.5)`` under ``VPLinear`` (t: 1 -> 1e-3) for several d;
* the same kind of mixture (another seed, d = 8) under ``EDM`` (another schedule and time scale);
* with ``--trained DIR ...``: trained score networks (run directories of ``jaxode-diffusion train``),
  x_init drawn from the prior, the reference a tight ``reference_solve`` of the same network. Learned
  scores are smooth where exact mixture scores are sharp (small component variances), so the grid
  that suits a solver can differ between the two kinds; both are reported and the chosen grid
  weighs the two kinds equally (see ``analyse``).

For every solver and budget the step count is the largest whose NFE fits (measured NFE). A grid's
score for a solver is the mean over problems and budgets of ``log10(RMSE(grid) / min over grids
RMSE)`` (0 = always the best grid; non-finite results count as 1000x). A solver's score is the mean
of ``log10(RMSE(solver on its chosen grid) / best RMSE of any solver and grid)``.

Run: ``python -m benchmarks.defaults`` (writes ``benchmarks/results/defaults.md``). Measuring only some
solvers or problems and merging them into saved rows: ``--solvers dpmpp_3m,edm_heun --merge
benchmarks/results/defaults.json``; the trained models of the results table::

    jaxode-diffusion train --data checkerboard --steps 1500 --out /tmp/m_checkerboard   # also
    #   eight_gaussians, swiss_roll, two_moons --seed 3 (VPLinear, 1500 steps each) and, 1000 steps:
    #   rings --process vp_cosine --seed 11, two_moons --process edm --seed 12,
    #   eight_gaussians --process rectified_flow --prediction flow --seed 13,
    #   swiss_roll --process subvp --prediction x0 --seed 14, checkerboard --process ve --seed 15,
    #   gmm --prediction v --seed 16
    python -m benchmarks.defaults --trained /tmp/m_checkerboard ... --merge benchmarks/results/defaults.json
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

# See accuracy_vs_nfe.py: XLA's concurrency-optimised CPU scheduler can deadlock on 3-stage solvers.
os.environ["XLA_FLAGS"] = (
    os.environ.get("XLA_FLAGS", "") + " --xla_cpu_enable_concurrency_optimized_scheduler=false"
).strip()

import jax  # noqa: E402

jax.config.update("jax_enable_x64", True)

import numpy as np  # noqa: E402

import jaxode_diffusion as jd  # noqa: E402
from jaxode_diffusion.analysis.convergence import reference_solve  # noqa: E402
from jaxode_diffusion.analysis.distances import rmse  # noqa: E402
from jaxode_diffusion.sampling.core import make_times, solve  # noqa: E402
from jaxode_diffusion.sampling.defaults import clock_of  # noqa: E402

GRIDS = ("uniform", "log_snr", "edm", "quadratic")

# solver -> family. Aliases and exact equivalents (dpm_solver_1 = dpmpp_1 = deis_ab1 = ddim,
# unipc_bh1/bh2 = unipc_bh1_2/bh2_2) are left out, and so are some RK variants, to bound the time on
# a shared 2-core machine (one compilation per solver, budget and problem).
FAMILIES = {
    "ddim": "exponential, noise prediction, singlestep (DPM-Solver)",
    "dpm_solver_2": "exponential, noise prediction, singlestep (DPM-Solver)",
    "dpm_solver_3": "exponential, noise prediction, singlestep (DPM-Solver)",
    "dpmpp_2s": "exponential, data prediction, singlestep (DPM-Solver++)",
    "dpmpp_3s": "exponential, data prediction, singlestep (DPM-Solver++)",
    "dpmpp_2m": "exponential multistep (DPM-Solver++ / DEIS / UniPC)",
    "dpmpp_3m": "exponential multistep (DPM-Solver++ / DEIS / UniPC)",
    "dpmpp_3m_exact": "exponential multistep (DPM-Solver++ / DEIS / UniPC)",
    "deis_ab2": "exponential multistep (DPM-Solver++ / DEIS / UniPC)",
    "deis_ab3": "exponential multistep (DPM-Solver++ / DEIS / UniPC)",
    "unipc_bh1_2": "exponential multistep (DPM-Solver++ / DEIS / UniPC)",
    "unipc_bh1_3": "exponential multistep (DPM-Solver++ / DEIS / UniPC)",
    "unipc_bh2_2": "exponential multistep (DPM-Solver++ / DEIS / UniPC)",
    "unipc_bh2_3": "exponential multistep (DPM-Solver++ / DEIS / UniPC)",
    "edm_heun": "EDM Heun (eps-rho)",
    "euler": "Runge-Kutta in x-t",
    "heun": "Runge-Kutta in x-t",
    "rk4": "Runge-Kutta in x-t",
    "x0-lambda:heun": "Runge-Kutta in x0-lambda",
    "x0-lambda:rk4": "Runge-Kutta in x0-lambda",
    "eps-rho:heun": "Runge-Kutta in eps-rho",
    "eps-rho:rk4": "Runge-Kutta in eps-rho",
    "x0-snr:heun": "Runge-Kutta in x0-snr",
    "ou-exp:heun": "Runge-Kutta in ou-exp",
}
CAP = 3.0  # log10 excess charged for a non-finite result (1000x)


TRAINED = "trained: "  # label prefix of the trained-model problems


def problems(quick):
    """(label, mixture, process, t_start, t_end, x seed), in the order they are measured."""
    vp = jd.VPLinear()
    out = []
    for d in (2,) if quick else (2,):
        gm = jd.GaussianMixture.random(jax.random.PRNGKey(d), 4, d, scale=2.0, min_var=0.05, max_var=0.5)
        out.append((f"VPLinear d={d}", gm, vp, 1.0, 1e-3, 1000 + d))
    if not quick:
        for name, proc, d in (("EDM", jd.EDM(), 8), ("VPCosine", jd.VPCosine(), 4)):
            gm = jd.GaussianMixture.random(jax.random.PRNGKey(100 + d), 4, d, scale=2.0, min_var=0.05, max_var=0.5)
            out.append((f"{name} d={d}", gm, proc, None, None, 2000 + d))
    return out


def trained_problem(run_dir):
    """A trained run directory as a problem: (label, score_fn, process, t_start, t_end, x seed)."""
    from jaxode_diffusion.training import load_run

    score_fn, cfg = load_run(run_dir)
    proc = score_fn.process
    label = (f"{TRAINED}{cfg['data']['name']} / {type(proc).__name__} / {cfg['model']['prediction']} "
             f"({os.path.basename(os.path.normpath(run_dir))})")
    return (label, score_fn, proc, None, None, 3000, tuple(cfg["data"]["event_shape"]))


# (problem index, budget) passes, most informative first: a report is written after each, so a run
# stopped early (the machine is shared) still leaves its measurements.
PASSES = ((0, 10), (1, 10), (0, 20), (2, 10), (1, 20), (2, 20))


def accuracy_rows(path, budgets):
    """Rows of benchmarks/results/accuracy_vs_nfe.md (d = 16, 64: the VPLinear mixtures) for the solvers
    measured here, so that the grid choice also sees higher dimensions."""
    if not os.path.exists(path):
        return []
    rows, d = [], None
    for line in open(path).read().split("## Trained model")[0].splitlines():
        if line.startswith("### d = "):
            d = int(line.split("=")[1])
        elif d in (16, 64) and line.startswith("| ") and "(SW" in line:
            cells = [c.strip() for c in line.strip().strip("|").split("|")]
            if cells[0] not in FAMILIES or cells[1] not in GRIDS:
                continue
            for b, v in zip((5, 10, 20, 50), cells[2:], strict=False):
                if b in budgets and v != "-":
                    rows.append(dict(problem=f"VPLinear d={d} (accuracy_vs_nfe)", solver=cells[0], grid=cells[1],
                                     budget=b, steps=None, nfe=None, rmse=float(v.split(" (SW")[0])))
    return rows


def finite_rmse(x, ref) -> float:
    """The package's end-point RMSE as a float, with a non-finite error (a diverged run) as inf."""
    v = float(rmse(x, ref))
    return v if math.isfinite(v) else float("inf")


_NFE: dict = {}
_REF: dict = {}


def measure_pass(prob, b, batch, log, solvers=None):
    label, gm, proc, t0, t1, seed = prob[:6]
    t0 = proc.default_t_start if t0 is None else t0
    t1 = proc.default_t_end if t1 is None else t1
    if (label, batch) not in _REF:  # x_init and the reference are shared by the budgets of a problem
        if label.startswith(TRAINED):  # gm is the trained score function; x_init from the prior
            sf = gm
            x = proc.prior_sample(jax.random.PRNGKey(seed), (batch, *prob[6]), t=t0)  # as `sample` does
            ref = reference_solve(sf, proc, x, t_start=t0, t_end=t1, rtol=1e-9, atol=1e-9)
        else:
            sf = gm.score_fn(proc)
            x = gm.sample_marginal(jax.random.PRNGKey(seed), batch, proc, t0)
            ref = reference_solve(sf, proc, x, t_start=t0, t_end=t1)
        _REF.clear()
        _REF[label, batch] = (sf, x, ref)
    sf, x, ref = _REF[label, batch]
    rows = []
    for name in solvers or FAMILIES:
        solver = jd.get_solver(name)
        stages = max(1, len(solver.stage_fractions))
        memo = _NFE.setdefault(name, {})  # the NFE of n steps depends on the solver only

        def nfe_at(n, solver=solver, memo=memo):
            if n not in memo:
                ts = make_times(proc, num_steps=n, t_start=t0, t_end=t1, grid=GRIDS[0])
                memo[n] = int(solve(sf, proc, x, ts, solver, throw=False).nfe)
            return memo[n]

        n = max(1, b // stages)  # then the largest n whose measured NFE fits b
        while n > 1 and nfe_at(n) > b:
            n -= 1
        while nfe_at(n) + nfe_at(n) / n <= b and nfe_at(n + 1) <= b:
            n += 1
        if nfe_at(n) > b:
            continue
        for g in GRIDS:
            ts = make_times(proc, num_steps=n, t_start=t0, t_end=t1, grid=g)
            sol = solve(sf, proc, x, ts, solver, throw=False)
            rows.append(dict(problem=label, solver=name, grid=g, budget=b, steps=n, nfe=int(sol.nfe),
                             rmse=finite_rmse(sol.samples, ref)))
        log(f"    {label} NFE {b} {name} ({n} steps)")
    return rows


def _kind(problem):
    return "trained" if problem.startswith(TRAINED) else "exact"


def _clock(problem):
    """The clock kind (``clock_of``) of a problem's process, from its label."""
    name = problem[len(TRAINED):].split(" / ")[1] if problem.startswith(TRAINED) else problem.split()[0]
    return clock_of(getattr(jd, name)())


def candidate_grids(clock):
    return GRIDS if clock == "unit" else tuple(g for g in GRIDS if g in ("log_snr", "edm"))


def analyse(rows, budgets, clock="unit"):
    """Grid and solver scores on the problems whose process has this kind of clock (``clock_of``).
    A grid's score for a solver is the mean log10 excess over the solver's best named grid, computed
    per problem kind (exact-score mixtures, trained networks) and then averaged over the kinds
    present, so that neither kind outweighs the other by its number of problems. The chosen grid is
    the candidate grid of the clock (every grid on a unit clock; the noise-level grids otherwise)
    with the lowest score."""
    rows = [r for r in rows if _clock(r["problem"]) == clock]
    keys = sorted({(r["problem"], r["budget"]) for r in rows})
    err = {(r["problem"], r["budget"], r["solver"], r["grid"]): r["rmse"] for r in rows}
    kinds = sorted({_kind(p) for p, _ in keys})

    def lg(v):
        return math.log10(v) if math.isfinite(v) and v > 0 else None

    grid_score, grid_kind_score, grid_wins, grid_worst, grid_within = {}, {}, {}, {}, {}
    for s in FAMILIES:
        for g in GRIDS:
            per_kind, wins, worst, within = {}, 0, {}, {}
            for k in kinds:
                vals = []
                for p, b in keys:
                    if _kind(p) != k:
                        continue
                    e = [err.get((p, b, s, h), float("inf")) for h in GRIDS]
                    best = min(e)
                    if not math.isfinite(best):
                        continue
                    v = err.get((p, b, s, g), float("inf"))
                    vals.append(CAP if not math.isfinite(v) else min(CAP, lg(v) - lg(best)))
                    wins += v == best
                if vals:
                    per_kind[k] = float(np.mean(vals))
                    worst[k] = float(np.max(vals))
                    within[k] = float(np.mean(np.asarray(vals) <= math.log10(1.3) + 1e-12))
            grid_kind_score[s, g] = per_kind
            grid_worst[s, g] = worst
            grid_within[s, g] = within
            grid_score[s, g] = float(np.mean(list(per_kind.values()))) if per_kind else float("inf")
            grid_wins[s, g] = wins
    best_grid = {s: min(candidate_grids(clock), key=lambda g: grid_score[s, g]) for s in FAMILIES}
    solver_score = {}
    # Solvers are ranked on the passes measured here (every solver ran there), not on the rows read
    # from accuracy_vs_nfe.md (only some solvers); again the mean over kinds of the mean over problems.
    own = [(p, b) for p, b in keys if "accuracy_vs_nfe" not in p]
    for s in FAMILIES:
        per_kind = {}
        for k in kinds:
            vals = []
            for p, b in own:
                if _kind(p) != k:
                    continue
                allbest = min(v for (pp, bb, _, _), v in err.items() if pp == p and bb == b)
                v = err.get((p, b, s, best_grid[s]), float("inf"))
                vals.append(CAP if not math.isfinite(v) else min(CAP, lg(v) - lg(allbest)))
            if vals:
                per_kind[k] = float(np.mean(vals))
        solver_score[s] = float(np.mean(list(per_kind.values()))) if per_kind else float("inf")
    fam_grid = {}
    for fam in sorted(set(FAMILIES.values())):
        members = [s for s in FAMILIES if FAMILIES[s] == fam]
        def fam_score(g, members=members):
            v = [grid_score[s, g] for s in members if math.isfinite(grid_score[s, g])]
            return float(np.mean(v)) if v else float("inf")

        fam_grid[fam] = min(candidate_grids(clock), key=fam_score)
    return dict(keys=keys, own=own, err=err, kinds=kinds, grid_score=grid_score, grid_kind_score=grid_kind_score,
                grid_worst=grid_worst, grid_within=grid_within, grid_wins=grid_wins, best_grid=best_grid, solver_score=solver_score,
                fam_grid=fam_grid)


CLOCK_TITLES = {"unit": "Unit clock (t_max <= 1: VP linear/cosine, sub-VP, VE, rectified flow, ...)",
                "noise": "Noise-level clock (t_max > 1: EDM, t = sigma); candidates log_snr and edm only"}


def write(path, rows, budgets, command, seconds, quick):
    allkeys = sorted({(r["problem"], r["budget"]) for r in rows})
    probs = sorted({p for p, _ in allkeys})
    lines = [
        "# Measured defaults: the grid that suits each solver, and the best default solver",
        "",
        f"- date: {datetime.datetime.now(datetime.timezone.utc).isoformat(timespec='seconds')}",
        f"- machine: {platform.platform()}, {os.cpu_count()} CPU cores, JAX {jax.__version__} on "
        f"{jax.default_backend()}; float64 (the machine was shared with other jobs)",
        f"- command: `{command}` (total {seconds:.0f} s)",
        f"- problems: {', '.join(probs)}; NFE budgets {list(budgets)}; end-point RMSE vs `reference_solve` "
        "from the same x_init (exact problems: Dopri8, tol 1e-11, exact draws of p_{t_start}; trained "
        "networks: tol 1e-9, draws of the prior as `jaxode-diffusion sample` makes them).",
        "- grid score: mean over problems x budgets of log10(RMSE on that grid / RMSE on the solver's best named "
        f"grid) (0 = always best; non-finite = {CAP:g}), per kind of problem (exact scores, trained networks), "
        "then the mean over the kinds; solver score: the same against the best of all solvers and grids, each "
        "solver on its chosen grid. Problems are split by the clock of their process "
        "(`jaxode_diffusion.sampling.defaults.clock_of`): the `t`-spaced grids (uniform, quadratic) mean different things "
        "on a unit clock and on a noise-level clock.",
    ]
    out = {}
    for clock in ("unit", "noise"):
        A = analyse(rows, budgets, clock)
        keys, own, err, kinds = A["keys"], A["own"], A["err"], A["kinds"]
        if not keys:
            continue
        grid_score, best_grid, solver_score = A["grid_score"], A["best_grid"], A["solver_score"]
        out[clock] = A
        lines += [
            "", f"## {CLOCK_TITLES[clock]}", "",
            f"Problems: {', '.join(sorted({p for p, _ in keys}))}.", "",
            "### Best grid per solver (chosen = the candidate with the lowest grid score)",
            "",
            "Cells: grid score (per kind: " + " / ".join(kinds) + "). Worst ratio: the chosen grid's largest "
            "RMSE ratio to the best named grid on one problem and budget, per kind; within 1.3x: the fraction of "
            "problems x budgets where the chosen grid is within 1.3x of the best named grid, per kind.",
            "",
            "| family | solver | " + " | ".join(GRIDS) + " | chosen grid | worst ratio (" + " / ".join(kinds) +
            ") | within 1.3x | wins (of " + str(len(keys)) + ") |",
            "|---|---|" + "---:|" * len(GRIDS) + "---|---:|---:|---:|",
        ]
        for s in FAMILIES:
            cells = []
            for g in GRIDS:
                ks = A["grid_kind_score"][s, g]
                cells.append(f"{grid_score[s, g]:.2f} (" + " / ".join(f"{ks.get(k, float('nan')):.2f}" for k in kinds)
                             + ")")
            w = A["grid_worst"][s, best_grid[s]]
            worst = " / ".join(f"{10 ** w[k]:.2f}" if k in w else "-" for k in kinds)
            within = A["grid_within"][s, best_grid[s]]
            wtxt = " / ".join(f"{within[k]:.0%}" if k in within else "-" for k in kinds)
            lines.append(f"| {FAMILIES[s]} | {s} | " + " | ".join(cells) + f" | **{best_grid[s]}** | {worst} | "
                         f"{wtxt} | {A['grid_wins'][s, best_grid[s]]} |")
        lines += ["", "### Best grid per family (lowest mean grid score over its members)", ""]
        lines += [f"- {fam}: **{g}**" for fam, g in A["fam_grid"].items()]
        lines += ["", "### Solvers ranked at moderate NFE (each on its chosen grid)", "",
                  "| rank | solver | chosen grid | solver score | " + " | ".join(f"{p} @ {b}" for p, b in own) + " |",
                  "|---:|---|---|---:|" + "---:|" * len(own)]
        for i, s in enumerate(sorted(FAMILIES, key=lambda s: solver_score[s]), 1):
            cells = [f"{err.get((p, b, s, best_grid[s]), float('nan')):.2e}" for p, b in own]
            lines.append(f"| {i} | {s} | {best_grid[s]} | {solver_score[s]:.2f} | " + " | ".join(cells) + " |")
    err = {(r["problem"], r["budget"], r["solver"], r["grid"]): r["rmse"] for r in rows}
    lines += ["", "## All runs (RMSE)", "", "| problem | NFE | solver | steps | " + " | ".join(GRIDS) + " |",
              "|---|---:|---|---:|" + "---:|" * len(GRIDS)]
    for p, b in allkeys:
        for s in FAMILIES:
            r = [x for x in rows if x["problem"] == p and x["budget"] == b and x["solver"] == s]
            if r:
                lines.append(f"| {p} | {b} | {s} | {r[0]['steps']} | " +
                             " | ".join(f"{err.get((p, b, s, g), float('nan')):.2e}" for g in GRIDS) + " |")
    with open(path, "w") as fh:
        fh.write("\n".join(lines) + "\n")
    return {c: A["best_grid"] for c, A in out.items()}, {c: A["solver_score"] for c, A in out.items()}, \
        {c: A["fam_grid"] for c, A in out.items()}


def main(argv=None):
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--quick", action="store_true", help="VPLinear problems only")
    p.add_argument("--batch", type=int, default=128)
    p.add_argument("--budgets", default="10,20")
    p.add_argument("--out", default=os.path.join(os.path.dirname(__file__), "results", "defaults.md"))
    p.add_argument("--from-json", default=None, help="rewrite the report from saved rows (OUT.json) only")
    p.add_argument("--trained", nargs="*", default=[], metavar="RUN_DIR",
                   help="trained run directories to measure as problems as well")
    p.add_argument("--no-exact", action="store_true", help="measure only the --trained problems")
    p.add_argument("--solvers", default=None, help="comma-separated subset of the solvers to measure")
    p.add_argument("--merge", default=None, metavar="JSON",
                   help="saved rows to keep; rows measured now replace theirs (same problem, budget, solver)")
    args = p.parse_args(argv)
    t0 = time.time()
    budgets = [int(b) for b in args.budgets.split(",")]
    solvers = None
    if args.solvers:
        solvers = [x.strip() for x in args.solvers.split(",") if x.strip()]
        unknown = [x for x in solvers if x not in FAMILIES]
        if unknown:
            p.error(f"--solvers: unknown {unknown}; choose from {sorted(FAMILIES)}")

    def log(msg):
        print(f"[{time.time() - t0:6.0f} s] {msg}", flush=True)

    extra = accuracy_rows(os.path.join(os.path.dirname(__file__), "results", "accuracy_vs_nfe.md"), budgets)
    command = ("python -m benchmarks.defaults " + " ".join(sys.argv[1:] if argv is None else argv)).strip()
    if args.from_json:
        saved = json.load(open(args.from_json))
        write(args.out, saved["rows"] + extra, budgets, saved["command"], saved["seconds"], args.quick)
        return
    kept, history, before = [], [], 0.0
    if args.merge:
        saved = json.load(open(args.merge))
        kept, history, before = saved["rows"], saved.get("history", [saved["command"]]), saved["seconds"]
    probs = [] if args.no_exact else problems(args.quick)
    passes = [(probs[i], b) for i, b in PASSES if i < len(probs) and b in budgets]
    passes += [(prob, b) for prob in map(trained_problem, args.trained) for b in budgets]
    rows, done = [], []
    for prob, b in passes:
        rows += measure_pass(prob, b, args.batch, log, solvers)
        done.append(f"{prob[0]} @ NFE {b}")
        new_keys = {(r["problem"], r["budget"], r["solver"]) for r in rows}
        merged = [r for r in kept if (r["problem"], r["budget"], r["solver"]) not in new_keys] + rows
        cmd = history + [command + f"  [passes done: {'; '.join(done)}]"]
        best_grid, solver_score, fam_grid = write(args.out, merged + extra, budgets, " ; then ".join(cmd),
                                                  before + time.time() - t0, args.quick)
        with open(os.path.splitext(args.out)[0] + ".json", "w") as fh:
            json.dump({"rows": merged, "command": " ; then ".join(cmd), "history": cmd,
                       "seconds": before + time.time() - t0}, fh)
        log(f"pass done: {done[-1]}")
    log(f"wrote {args.out}")
    for clock in best_grid:
        print(f"[{clock} clock] best grid per solver:", best_grid[clock])
        print(f"[{clock} clock] family grids:", fam_grid[clock])
        print(f"[{clock} clock] solver ranking:", sorted(solver_score[clock].items(), key=lambda kv: kv[1])[:8])


if __name__ == "__main__":
    main()
