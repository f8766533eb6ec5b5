"""Accuracy vs NFE: every sampler x time grid on Gaussian mixtures with exact scores, vs diffrax.

Problem (per dimension d): ``GaussianMixture.random(PRNGKey(d), 4, d, scale=2, min_var=0.05,
max_var=0.5)`` under ``VPLinear``, sampled from ``t = 1`` to ``t_end = 1e-3``; initial states are
exact draws of ``p_1``. Metrics, all in float64:

* end-point RMSE ``sqrt(mean_b ||x_b - x_ref_b||^2)`` against a tight reference solve
  (``reference_solve``, Dopri8, rtol = atol = 1e-11) from the same initial states;
* sliced Wasserstein-2 distance (64 random directions) to exact samples of ``p_{t_end}`` (its
  Monte Carlo floor, the reference solve's own distance, is printed alongside).

Samplers: this package's exponential / multistep family (DDIM, DPM-Solver-2/3, DPM-Solver++ 2S/2M/3M,
UniPC, DEIS, EDM-Heun) and its Runge-Kutta schemes in the ``x0-lambda`` form, on the grids
``uniform``, ``log_snr``, ``edm``, ``quadratic`` and on grids learned by
``jaxode_diffusion.tuning.grid_optimization.optimize_grid`` (on a separate calibration batch: the reported
errors are held-out). Baseline: diffrax's fixed-step solvers (Euler, Heun, Midpoint, Ralston,
Bosh3, Tsit5, Dopri5) stepping the plain ``x-t`` form on the same grids (``StepTo``). For an NFE
budget each sampler takes the largest step count whose NFE fits (the actual NFE is reported).

``--checkpoint RUN`` adds a trained model (loaded with ``jaxode_diffusion.training.
load_checkpoint_score``, which uses ``training.load_run``) with the reference
solve of that model as the ground truth.

k-diffusion side by side (when torch and k-diffusion are installed: ``pip install -e ".[bench]"``
then ``pip install --no-deps "k-diffusion==0.1.1.post1"``; loaded by ``benchmarks/common.py``):
its samplers (``KDIFF``) run on the identical problem and initial states, with an exact mixture
denoiser written in torch, in float64. k-diffusion integrates ``x / alpha`` in ``sigma / alpha``
(``x / alpha = x0 + (sigma / alpha) eps``), so its sigmas are ``rho = sigma / alpha`` of the grid
and its result is multiplied by ``alpha(t_end)``. Its grids: ``get_sigmas_vp`` (this package's
``uniform`` grid for VPLinear), ``get_sigmas_exponential`` (``log_snr``), ``get_sigmas_karras``
(``edm``), each without the appended 0 (the problem stops at ``t_end``; the equality of each
pair is tested in ``tests/solvers/test_kdiffusion_equivalence.py``); ``dpm_fast`` uses its own log-SNR
grid.

Learned grids choose their iterate on held-back samples (``optimize_grid``'s default: a quarter of
the calibration batch); ``--variants`` adds other selection rules (see ``VARIANTS``), and
``--learned-only`` reruns only the learned grids, reading the fixed-grid rows from the existing
report (``--dim-solvers "16:unipc_bh2_3;64:dpmpp_2m"`` picks the solvers per dimension).

Run: ``python -m benchmarks.accuracy_vs_nfe [--quick] [--no-learned] [--checkpoint RUN]``
(writes ``benchmarks/results/accuracy_vs_nfe.md`` and ``.png``).
"""

from __future__ import annotations

import argparse
import datetime
import os
import platform
import sys
import time

# XLA's CPU "concurrency optimized" scheduler deadlocks (all threads parked on a futex, no CPU
# use) executing a 3-stage singlestep sampler (dpm_solver_3 / dpmpp_3s, 3 steps) on the d = 64
# mixture with JAX 0.10.2; the default scheduler is fine. Must be set before jax is imported.
os.environ["XLA_FLAGS"] = (
    os.environ.get("XLA_FLAGS", "") + " --xla_cpu_enable_concurrency_optimized_scheduler=false"
).strip()

import jax  # noqa: E402

jax.config.update("jax_enable_x64", True)

import diffrax  # noqa: E402
import equinox as eqx  # noqa: E402
import jax.numpy as jnp  # noqa: E402
import numpy as np  # noqa: E402

import jaxode_diffusion as jd  # noqa: E402
from benchmarks import common  # noqa: E402  (k-diffusion's samplers without its __init__)
from jaxode_diffusion.analysis.diffrax_drivers import reference_solve  # noqa: E402
from jaxode_diffusion.analysis.distances import rmse  # noqa: E402
from jaxode_diffusion.sampling.core import make_times, solve  # noqa: E402
from jaxode_diffusion.tuning.grid_optimization import optimize_grid  # noqa: E402

T_END = 1e-3
GRIDS = ("uniform", "log_snr", "edm", "quadratic")

# name -> (family, NFE as a function of steps)
OURS = {
    "ddim": ("exponential", lambda n: n),
    "dpm_solver_2": ("exponential", lambda n: 2 * n),
    "dpm_solver_3": ("exponential", lambda n: 3 * n),
    "dpmpp_2s": ("exponential", lambda n: 2 * n),
    "dpmpp_2m": ("exponential", lambda n: n),
    "dpmpp_3m": ("exponential", lambda n: n),
    "dpmpp_3m_exact": ("exponential", lambda n: n),
    "unipc_bh2_2": ("exponential", lambda n: n),
    "unipc_bh1_3": ("exponential", lambda n: n),
    "unipc_bh2_3": ("exponential", lambda n: n),
    "deis_ab3": ("exponential", lambda n: n),
    "edm_heun": ("exponential", lambda n: 2 * n),
    "x0-lambda:heun": ("rk-in-forms", lambda n: 2 * n),
    "x0-lambda:rk4": ("rk-in-forms", lambda n: 4 * n),
}
# diffrax solver -> NFE(steps): FSAL methods evaluate their first stage once.
DIFFRAX = {
    "Euler": (diffrax.Euler, lambda n: n),
    "Heun": (diffrax.Heun, lambda n: 2 * n),
    "Midpoint": (diffrax.Midpoint, lambda n: 2 * n),
    "Ralston": (diffrax.Ralston, lambda n: 2 * n),
    "Bosh3": (diffrax.Bosh3, lambda n: 3 * n + 1),
    "Tsit5": (diffrax.Tsit5, lambda n: 6 * n + 1),
    "Dopri5": (diffrax.Dopri5, lambda n: 6 * n + 1),
}


def _zero_noise(sigma, sigma_next):  # eta = 0: ancestral noise is scaled by 0
    import torch

    return torch.zeros((), dtype=torch.float64)


# k-diffusion sampler -> (function name, keyword arguments, NFE(steps)). On a grid that ends above
# sigma = 0 every Heun / DPM-2 step takes its second evaluation.
KDIFF = {
    "k:euler": ("sample_euler", {}, lambda n: n),
    "k:heun": ("sample_heun", {}, lambda n: 2 * n),
    "k:dpm_2": ("sample_dpm_2", {}, lambda n: 2 * n),
    "k:lms": ("sample_lms", {"order": 4}, lambda n: n),
    "k:dpmpp_2s": ("sample_dpmpp_2s_ancestral", {"eta": 0.0, "noise_sampler": _zero_noise}, lambda n: 2 * n),
    "k:dpmpp_2m": ("sample_dpmpp_2m", {}, lambda n: n),
    "k:dpmpp_3m": ("sample_dpmpp_3m_sde", {"eta": 0.0, "noise_sampler": _zero_noise}, lambda n: n),
}
# k-diffusion grid function -> the equal named grid of this package (VPLinear, rho = sigma / alpha).
KGRIDS = {"uniform": "get_sigmas_vp", "log_snr": "get_sigmas_exponential", "edm": "get_sigmas_karras"}


def k_diffusion_rows(den, vp, x0, ref, d, budgets, t_end=T_END, target=None, skey=None):
    """k-diffusion's samplers on the same problem and x_init (rows of family ``k-diffusion``).

    ``den(x, s)``: a torch denoiser of ``x / alpha = x0 + s eps`` (``s = sigma / alpha``).
    """
    import torch

    ks = common.load_sampling()
    t1 = float(vp.default_t_start)
    r_max, r_min = float(vp.rho(t1)), float(vp.rho(t_end))
    a1, a_end = float(vp.alpha(t1)), float(vp.alpha(t_end))
    xk = torch.tensor(np.asarray(x0, np.float64) / a1)
    grids = dict(KGRIDS)
    if not (isinstance(vp, jd.VPLinear) and t1 == 1.0):
        grids.pop("uniform")  # get_sigmas_vp is VPLinear's uniform grid from t = 1

    def grid(name, n):
        if name == "uniform":
            beta_min = float(vp.beta_min)
            return ks.get_sigmas_vp(n + 1, beta_d=float(vp.beta_max) - beta_min, beta_min=beta_min, eps_s=t_end)[:-1]
        if name == "log_snr":
            return ks.get_sigmas_exponential(n + 1, r_min, r_max)[:-1]
        return ks.get_sigmas_karras(n + 1, r_min, r_max, rho=7.0)[:-1]

    def finish(y):
        x = jnp.asarray(y.numpy() * a_end).astype(ref.dtype)
        sw = sliced_wasserstein(x, target, skey) if target is not None else float("nan")
        return float(rmse(x, ref)), sw

    rows = []
    with common.torch_float64():
        for name, (fn, kw, nfe_of) in KDIFF.items():
            for nfe in budgets:
                n = steps_for(nfe_of, nfe)
                if n is None:
                    continue
                for g in grids:
                    e, sw = finish(getattr(ks, fn)(den, xk.clone(), grid(g, n), disable=True, **kw))
                    rows.append(dict(d=d, family="k-diffusion", solver=name, grid=g, budget=nfe, nfe=nfe_of(n),
                                     steps=n, rmse=e, sw=sw))
        for nfe in budgets:  # DPM-Solver-fast: orders 3, ..., 3, then 2 / 1; its own log-SNR grid
            e, sw = finish(ks.sample_dpm_fast(den, xk.clone(), r_min, r_max, nfe, disable=True))
            rows.append(dict(d=d, family="k-diffusion", solver="k:dpm_fast", grid="log_snr (own)", budget=nfe,
                             nfe=nfe, steps=nfe // 3 + 1, rmse=e, sw=sw))
    return rows


def model_denoiser(score_fn, process, dtype):
    """A trained score model as k-diffusion's ``model(x, sigma)`` on ``x / alpha`` and ``s = sigma / alpha``."""
    import torch

    @jax.jit
    def x0_hat(xk, s):
        t = process.t_of_lambda(-jnp.log(s))
        a, sg = process.alpha(t), process.sigma(t)
        x = (a * xk).astype(dtype)
        return (x + (sg**2).astype(dtype) * score_fn(x, t.astype(dtype))) / a.astype(dtype)

    def den(x, sigma):
        y = x0_hat(jnp.asarray(x.numpy()), jnp.asarray(float(sigma[0])))
        return torch.tensor(np.asarray(y, np.float64))

    return den


def steps_for(nfe_of, budget):
    """Largest step count whose NFE fits the budget (None if even one step does not)."""
    n = 0
    while nfe_of(n + 1) <= budget:
        n += 1
    return n or None


def sliced_wasserstein(a, b, key, num_dirs=64):
    """Sliced W2 between equal-size samples ``a``, ``b`` (``(n, d)``): sorted projections."""
    d = a.shape[1]
    dirs = jax.random.normal(key, (num_dirs, d), a.dtype)
    dirs = dirs / jnp.linalg.norm(dirs, axis=1, keepdims=True)
    pa = jnp.sort(a @ dirs.T, axis=0)
    pb = jnp.sort(b @ dirs.T, axis=0)
    return float(jnp.sqrt(jnp.mean((pa - pb) ** 2)))


@eqx.filter_jit
def diffrax_xt(score_fn, process, x_init, ts, dsolver):
    form = jd.solvers.get_form("x-t")

    def vf(t, y, args):
        return form.vector_field(score_fn, process, y, t)

    sol = diffrax.diffeqsolve(diffrax.ODETerm(vf), dsolver, t0=ts[0], t1=ts[-1], dt0=None, y0=x_init,
                              stepsize_controller=diffrax.StepTo(ts=ts), max_steps=ts.shape[0])
    return sol.ys[-1]


# Learned-grid variants measured (optimize_grid keywords); the first is the package default and the
# one that enters the "best per family" tables. "separate held-back batch" is what `tune` does.
VARIANTS = {
    "default: 25 % of the calibration batch held back": {},
    "+ pull toward the start (regularization=0.3)": {"regularization": 0.3},
    "trust region (max_step_change=2)": {"max_step_change": 2.0},
    "separate held-back batch (as in tune)": "separate",  # another compile per shape
}


def fixed_grid_rows(d, gm, sf, vp, x0, ref, target, skey, budgets, log):
    """Rows of every sampler on the named grids at each budget: this package's (``OURS``), diffrax's
    fixed-step solvers in ``x-t`` (``DIFFRAX``) and, when installed, k-diffusion's."""
    rows = []
    grids = {}
    for name, (family, nfe_of) in OURS.items():
        solver = jd.get_solver(name)
        for nfe in budgets:
            n = steps_for(nfe_of, nfe)
            if n is None:
                continue
            for g in GRIDS:
                ts = grids.setdefault((n, g), make_times(vp, num_steps=n, t_end=T_END, grid=g))
                sol = solve(sf, vp, x0, ts, solver, throw=False)
                x, nfe_run = sol.samples, sol.nfe
                assert int(nfe_run) == nfe_of(n), (name, n, int(nfe_run))
                rows.append(dict(d=d, family=family, solver=name, grid=g, budget=nfe, nfe=nfe_of(n), steps=n,
                                 rmse=float(rmse(x, ref)), sw=sliced_wasserstein(x, target, skey)))
        log(f"  d={d} {name} done")
    for name, (cls, nfe_of) in DIFFRAX.items():
        for nfe in budgets:
            n = steps_for(nfe_of, nfe)
            if n is None:
                continue
            for g in GRIDS:
                ts = grids.setdefault((n, g), make_times(vp, num_steps=n, t_end=T_END, grid=g))
                x = diffrax_xt(sf, vp, x0, ts, cls())
                rows.append(dict(d=d, family="diffrax (x-t)", solver=name, grid=g, budget=nfe, nfe=nfe_of(n),
                                 steps=n, rmse=float(rmse(x, ref)), sw=sliced_wasserstein(x, target, skey)))
    log(f"  d={d} diffrax done")
    if k_diffusion_available():
        den = common.mixture_denoiser(gm.weights, gm.means, gm.covs)
        rows += k_diffusion_rows(den, vp, x0, ref, d, budgets, target=target, skey=skey)
        log(f"  d={d} k-diffusion done")
    return rows


def run_problem(d, budgets, batch, opt_solvers, opt_steps, log, fixed=True, variants=None):
    variants = tuple(VARIANTS)[:1] if variants is None else variants
    vp = jd.VPLinear()
    gm = jd.GaussianMixture.random(jax.random.PRNGKey(d), 4, d, scale=2.0, min_var=0.05, max_var=0.5)
    sf = gm.score_fn(vp)
    x0 = gm.sample_marginal(jax.random.PRNGKey(1000 + d), batch, vp, 1.0)
    x_cal = gm.sample_marginal(jax.random.PRNGKey(2000 + d), batch, vp, 1.0)  # calibration only
    ref = reference_solve(sf, vp, x0, t_end=T_END)
    target = gm.sample_marginal(jax.random.PRNGKey(3000 + d), batch, vp, T_END)
    skey = jax.random.PRNGKey(7)
    sw_floor = sliced_wasserstein(ref, target, skey)
    rows = fixed_grid_rows(d, gm, sf, vp, x0, ref, target, skey, budgets, log) if fixed else []
    # Learned grids at NFE 10 (and the other budgets in the full run), started from log_snr.
    opt_info = []
    ref_cal = reference_solve(sf, vp, x_cal, t_end=T_END) if variants and opt_solvers else None
    x_sel = ref_sel = None
    for name in opt_solvers if variants else ():
        _, nfe_of = OURS[name]
        # NFE 10 (the headline budget) for every listed solver; NFE 20 for the first one only.
        for nfe in [b for b in budgets if b == 10 or (b == 20 and name == opt_solvers[0])]:
            n = steps_for(nfe_of, nfe)
            if n is None or n < 2:
                continue
            for vi, variant in enumerate(variants):
                kw = VARIANTS[variant]
                if kw == "separate":
                    if x_sel is None:
                        x_sel = gm.sample_marginal(jax.random.PRNGKey(4000 + d), batch, vp, 1.0)
                        ref_sel = reference_solve(sf, vp, x_sel, t_end=T_END)
                    kw = {"selection_x_init": x_sel, "selection_reference": ref_sel}
                t0 = time.time()
                og = optimize_grid(sf, vp, x_cal, solver=name, num_steps=n, t_end=T_END, steps=opt_steps,
                                   learning_rate=0.02, reference=ref_cal, validation_x_init=x0,
                                   validation_reference=ref, **kw)
                dt = time.time() - t0
                x = solve(sf, vp, x0, jnp.asarray(og.ts), jd.get_solver(name), throw=False).samples
                held = float(rmse(x, ref))
                assert abs(held - og.validation_error) <= 1e-9 * max(1.0, held)
                x_log = solve(sf, vp, x0, make_times(vp, num_steps=n, t_end=T_END, grid="log_snr"),
                              jd.get_solver(name), throw=False).samples
                med0 = float(jnp.median(jnp.linalg.norm((x_log - ref).reshape(batch, -1), axis=1)))
                med = float(jnp.median(jnp.linalg.norm((x - ref).reshape(batch, -1), axis=1)))
                if vi == 0:
                    rows.append(dict(d=d, family="exponential + learned grid", solver=name, grid="optimized",
                                     budget=nfe, nfe=nfe_of(n), steps=n, rmse=held,
                                     sw=sliced_wasserstein(x, target, skey)))
                opt_info.append(dict(d=d, solver=name, nfe=nfe_of(n), seconds=dt, cal0=og.initial_calibration_loss,
                                     cal=og.calibration_loss, val0=og.initial_validation_error,
                                     val=og.validation_error, med0=med0, med=med, variant=variant,
                                     it=og.best_iteration, iters=og.iterations, sel0=og.initial_selection_error,
                                     sel=og.selection_error))
                log(f"  d={d} optimised {name} NFE {nfe} [{variant}]: held-out "
                    f"{og.initial_validation_error:.3g} -> {og.validation_error:.3g} ({dt:.0f} s; {og.note})")
    return rows, opt_info, sw_floor


def run_checkpoint(path, budgets, batch, log):
    from jaxode_diffusion.training.scores import load_checkpoint_score

    score_fn, process, info = load_checkpoint_score(path)
    shape = tuple(info.get("event_shape") or ())
    if not shape:
        raise SystemExit(f"--checkpoint {path}: the run does not record its event_shape.")
    x0 = process.prior_sample(jax.random.PRNGKey(0), (batch, *shape), dtype=jnp.float32)
    t_end = process.default_t_end
    ref = reference_solve(score_fn, process, x0, t_end=t_end, rtol=1e-6, atol=1e-6)
    rows = []
    for name in ("ddim", "dpmpp_2m", "dpmpp_3m", "unipc_bh2_2", "unipc_bh2_3", "deis_ab3", "dpm_solver_3",
                 "x0-lambda:heun"):
        fam, nfe_of = OURS[name]
        for nfe in budgets:
            n = steps_for(nfe_of, nfe)
            if n is None:
                continue
            for g in GRIDS:
                ts = make_times(process, num_steps=n, t_end=t_end, grid=g).astype(x0.dtype)
                x = solve(score_fn, process, x0, ts, jd.get_solver(name), throw=False).samples
                rows.append(dict(d=int(np.prod(shape)), family=fam, solver=name, grid=g, budget=nfe,
                                 nfe=nfe_of(n), steps=n, rmse=float(rmse(x, ref)), sw=float("nan")))
    if k_diffusion_available():
        rows += k_diffusion_rows(model_denoiser(score_fn, process, x0.dtype), process, x0, ref,
                                 int(np.prod(shape)), budgets, t_end=t_end)
    log(f"  checkpoint {path}: {len(rows)} runs")
    return rows


def best(rows, **match):
    sel = [r for r in rows if all(r[k] == v for k, v in match.items()) and np.isfinite(r["rmse"])]
    return min(sel, key=lambda r: r["rmse"]) if sel else None


def k_diffusion_available():
    return common.available()


def load_fixed_rows(md_path, dims, budgets):
    """The fixed-grid rows (and SW floors, header) of a previous report, for ``--learned-only``."""
    text = open(md_path).read()
    rows, floors, d = [], {}, None
    for line in text.splitlines():
        if line.startswith("### d = "):
            d = int(line.split("=")[1])
        elif line.startswith("- d = ") and ":" in line and "e" in line.split(":")[1]:
            try:
                floors[int(line[6:].split(":")[0])] = float(line.split(":")[1])
            except ValueError:
                pass
        elif d is not None and line.startswith("| ") and not line.startswith("| solver") and "(SW" in line:
            cells = [c.strip() for c in line.strip().strip("|").split("|")]
            solver, grid, vals = cells[0], cells[1], cells[2:]
            if grid == "optimized" or len(vals) != len(budgets):
                continue
            if solver in OURS:
                family, nfe_of = OURS[solver]
            elif solver in KDIFF or solver == "k:dpm_fast":
                family, nfe_of = "k-diffusion", (KDIFF[solver][2] if solver in KDIFF else (lambda n: n))
            else:
                family, nfe_of = "diffrax (x-t)", DIFFRAX[solver][1]
            for b, v in zip(budgets, vals, strict=True):
                if v == "-":
                    continue
                r, sw = v.split(" (SW ")
                n = steps_for(nfe_of, b) if solver != "k:dpm_fast" else b // 3 + 1
                rows.append(dict(d=d, family=family, solver=solver, grid=grid, budget=b,
                                 nfe=nfe_of(n) if solver != "k:dpm_fast" else b, steps=n,
                                 rmse=float(r), sw=float(sw.rstrip(")"))))
    header = [ln for ln in text.splitlines()[:8] if ln.startswith(("- date", "- machine", "- command"))]
    old = text[text.index("## Learned grids"):text.index("## Sliced-Wasserstein")] if "## Learned grids" in text else ""
    return rows, floors, header, old


def report_header(all_rows, opt_info, command, seconds, fixed_header, previous_learned):
    """The report's title and the list of what was run, how and where."""
    return [
        "# Accuracy vs NFE: exponential / multistep samplers and learned grids vs diffrax and k-diffusion",
        "",
        f"- date: {datetime.datetime.now(datetime.timezone.utc).isoformat(timespec='seconds')}",
        f"- machine: {platform.platform()}, {os.cpu_count()} CPU cores, "
        f"JAX {jax.__version__} on {jax.default_backend()} ({jax.devices()[0].device_kind}); float64",
        f"- command: `{command}`  (total {seconds:.0f} s; the machine was shared with other jobs)",
        *(["- fixed-grid rows (all but the learned grids) are from the previous full run: "
           + "; ".join(h[2:] for h in fixed_header)] if fixed_header else []),
        "- problem: `GaussianMixture.random(PRNGKey(d), 4, d, scale=2, min_var=0.05, max_var=0.5)`, "
        "VPLinear, t: 1 -> 1e-3, x_init exact draws of p_1; RMSE of end points vs "
        "`reference_solve` (Dopri8, tol 1e-11) from the same x_init; SW = sliced W2 (64 directions) "
        "to exact samples of p_{t_end} (Monte Carlo floor = the reference's own SW, listed).",
        *([] if not (opt_info or previous_learned) else ["- learned grids: `optimize_grid` fitted on a separate calibration batch (same size), started from "
        "`log_snr`, the iterate chosen on held-back samples (the default: a quarter of the calibration "
        "batch; the variants below), early stopping after 60 iterations without a held-back improvement; "
        "all errors in the tables are on the evaluation batch, which neither fits nor selects."]),
        "- each sampler uses the largest step count whose NFE fits the budget; `NFE` is the actual count.",
        "- k-diffusion side by side: " + (
            f"k-diffusion {common.K_DIFFUSION_VERSION} samplers (rows `k:NAME`, torch float64) on the same "
            "problem and x_init with an exact mixture denoiser in torch; its sigmas are rho = sigma/alpha "
            "of k-diffusion's own grids, named here by the equal grid of this package: `get_sigmas_vp` = "
            "`uniform`, `get_sigmas_exponential` = `log_snr`, `get_sigmas_karras` = `edm` (without the "
            "appended 0); `k:dpm_fast` uses its own log-SNR grid"
            if any(r["family"] == "k-diffusion" for r in all_rows) else
            "skipped (torch / k-diffusion not installed: `pip install -e \".[bench]\"` and "
            "`pip install --no-deps \"k-diffusion==0.1.1.post1\"`)"),
        "",
    ]


def best_per_family_table(all_rows, fams, dims, budgets):
    """The best end-point RMSE of each family per dimension and budget, and the ratios of ours to the others."""
    lines = [
        "## Best per family (end-point RMSE; solver / grid / actual NFE)",
        "",
        "| d | NFE budget | " + " | ".join(fams) + " | best ours / best diffrax | best ours / best k-diffusion |",
        "|---:|---:|" + "---|" * len(fams) + "---:|---:|",
    ]
    ours_fams = ("exponential", "exponential + learned grid", "rk-in-forms")
    for d in dims:
        for b in budgets:
            cells, vals = [], {}
            for f in fams:
                r = best(all_rows, d=d, budget=b, family=f)
                vals[f] = r["rmse"] if r else None
                cells.append(f"{r['rmse']:.2e} ({r['solver']} / {r['grid']} / {r['nfe']})" if r else "-")
            ours = [vals[f] for f in ours_fams if vals.get(f) is not None]
            ratios = [f"{min(ours) / vals[f]:.3f}" if ours and vals.get(f) else "-"
                      for f in ("diffrax (x-t)", "k-diffusion")]
            lines.append(f"| {d} | {b} | " + " | ".join(cells) + f" | {ratios[0]} | {ratios[1]} |")
    return lines


def goal_check(all_rows, dims):
    """Whether the best of ours is at most half the best diffrax RMSE at NFE 10, per dimension."""
    lines = ["", "## Goal check at NFE 10", ""]
    for d in dims:
        fixed = [best(all_rows, d=d, budget=10, family=f) for f in ("exponential", "rk-in-forms")]
        fixed = min([r for r in fixed if r], key=lambda r: r["rmse"], default=None)
        learned = best(all_rows, d=d, budget=10, family="exponential + learned grid")
        dx = best(all_rows, d=d, budget=10, family="diffrax (x-t)")
        if not (fixed and dx):
            continue
        ours = min([r for r in (fixed, learned) if r], key=lambda r: r["rmse"])
        ok = ours["rmse"] <= 0.5 * dx["rmse"]
        lines.append(
            f"- d = {d}: best ours {ours['rmse']:.3e} ({ours['solver']} / {ours['grid']}), best fixed-grid "
            f"ours {fixed['rmse']:.3e} ({fixed['solver']} / {fixed['grid']}), best diffrax {dx['rmse']:.3e} "
            f"({dx['solver']} / {dx['grid']}): ratio {ours['rmse'] / dx['rmse']:.3f} -> "
            f"{'meets' if ok else 'misses'} the <= 0.5 goal"
        )
    return lines


def learned_grid_section(opt_info, previous_learned):
    """The learned grids' errors (fitted, held-back, held-out) and the previous run's table if given."""
    lines = []
    if opt_info:
        lines += ["", "## Learned grids (held-out = evaluation batch, never used to fit or to select)", "",
                  "| d | solver | NFE | selection rule | fitted RMSE log_snr -> learned | held-back (selection) "
                  "RMSE | held-out RMSE log_snr -> learned | held-out gain | held-out median error | "
                  "chosen iterate / run | time |",
                  "|---:|---|---:|---|---|---|---|---:|---|---|---:|"]
        for o in opt_info:
            lines.append(f"| {o['d']} | {o['solver']} | {o['nfe']} | {o.get('variant', '')} | "
                         f"{o['cal0']:.3e} -> {o['cal']:.3e} | {o['sel0']:.3e} -> {o['sel']:.3e} | "
                         f"{o['val0']:.3e} -> {o['val']:.3e} | {o['val0'] / o['val']:.2f}x | "
                         f"{o['med0']:.3e} -> {o['med']:.3e} | {o['it']} / {o['iters']} | {o['seconds']:.0f} s |")
    if previous_learned:
        lines += ["", "## Before: learned grids chosen on the fitted loss (previous run, kept for comparison)", "",
                  *previous_learned.strip().splitlines()[1:]]
    return lines


def all_runs_section(all_rows, floors, dims, budgets, ckpt_rows):
    """The SW floor, every solver and grid by budget, and the trained model's rows."""
    lines = ["", "## Sliced-Wasserstein floor (reference solve vs exact samples)", ""]
    lines += [f"- d = {d}: {floors[d]:.3e}" for d in dims]
    lines += ["", "## All runs: RMSE by solver and grid (columns: NFE budget)", ""]
    for d in dims:
        lines += [f"### d = {d}", "", "| solver | grid | " + " | ".join(str(b) for b in budgets) + " |",
                  "|---|---|" + "---:|" * len(budgets)]
        keys = []
        for r in all_rows:
            if r["d"] == d and (r["solver"], r["grid"]) not in keys:
                keys.append((r["solver"], r["grid"]))
        for s, g in keys:
            cells = []
            for b in budgets:
                r = best(all_rows, d=d, solver=s, grid=g, budget=b)
                cells.append(f"{r['rmse']:.2e} (SW {r['sw']:.2e})" if r else "-")
            lines.append(f"| {s} | {g} | " + " | ".join(cells) + " |")
        lines.append("")
    if ckpt_rows:
        lines += ["## Trained model (reference: tight solve of the same model)", "",
                  "| solver | grid | NFE | RMSE |", "|---|---|---:|---:|"]
        for r in sorted(ckpt_rows, key=lambda r: (r["budget"], r["rmse"])):
            lines.append(f"| {r['solver']} | {r['grid']} | {r['nfe']} | {r['rmse']:.3e} |")
    return lines


def write_report(path, all_rows, opt_info, floors, dims, budgets, command, seconds, ckpt_rows,
                 fixed_header=None, previous_learned=""):
    fams = ["exponential", "exponential + learned grid", "rk-in-forms", "diffrax (x-t)", "k-diffusion"]
    fams = [f for f in fams if any(r["family"] == f for r in all_rows)]
    lines = report_header(all_rows, opt_info, command, seconds, fixed_header, previous_learned)
    lines += best_per_family_table(all_rows, fams, dims, budgets) + goal_check(all_rows, dims)
    lines += learned_grid_section(opt_info, previous_learned)
    lines += all_runs_section(all_rows, floors, dims, budgets, ckpt_rows)
    with open(path, "w") as fh:
        fh.write("\n".join(lines) + "\n")


def plot(path, all_rows, dims, budgets):
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, axes = plt.subplots(1, len(dims), figsize=(5.2 * len(dims), 4.4), squeeze=False)
    styles = {"exponential": "-", "rk-in-forms": "-.", "diffrax (x-t)": "--", "k-diffusion": ":"}
    for ax, d in zip(axes[0], dims, strict=True):
        solvers = []
        for r in all_rows:
            if r["d"] == d and r["family"] in styles and r["solver"] not in solvers:
                solvers.append(r["solver"])
        for s in solvers:
            pts = [best(all_rows, d=d, solver=s, budget=b) for b in budgets]
            pts = [p for p in pts if p and p["family"] != "exponential + learned grid"]
            if not pts:
                continue
            fam = pts[0]["family"]
            ax.loglog([p["nfe"] for p in pts], [p["rmse"] for p in pts], styles[fam], marker="o", ms=3,
                      lw=1.2 if fam != "diffrax (x-t)" else 1.0, alpha=0.9, label=s,
                      color=None if fam != "diffrax (x-t)" else "0.5")
        opt = [r for r in all_rows if r["d"] == d and r["grid"] == "optimized"]
        if opt:
            ax.loglog([r["nfe"] for r in opt], [r["rmse"] for r in opt], "k*", ms=10, label="learned grid")
        ax.set_title(f"d = {d} (best grid per solver)")
        ax.set_xlabel("NFE")
        ax.set_ylabel("end-point RMSE")
        ax.grid(True, which="both", alpha=0.3)
    axes[0][-1].legend(fontsize=6, ncol=2, loc="lower left")
    fig.tight_layout()
    fig.savefig(path, dpi=130)


def main(argv=None):
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--quick", action="store_true", help="d = 2, 16; NFE 10, 20; fewer optimisation steps")
    p.add_argument("--checkpoint", default=None, help="a trained run directory (optional)")
    p.add_argument("--batch", type=int, default=128)
    p.add_argument("--dims", default=None, help="comma-separated dimensions (default 2,16,64; quick 2,16)")
    p.add_argument("--out", default=os.path.join(os.path.dirname(__file__), "results", "accuracy_vs_nfe"))
    p.add_argument("--learned-only", action="store_true",
                   help="rerun only the learned grids (all selection variants); take the fixed-grid rows from "
                        "the existing OUT.md")
    p.add_argument("--opt-solvers", default=None, help="comma-separated solvers whose grids are learned")
    p.add_argument("--dim-solvers", default=None,
                   help='per-dimension learned-grid solvers, run in this order: "16:unipc_bh2_3;64:dpmpp_2m" '
                        "(with --learned-only; overrides --dims and --opt-solvers)")
    p.add_argument("--no-learned", action="store_true", help="skip the learned grids (fixed grids only)")
    p.add_argument("--variants", default=None,
                   help="comma-separated indices into VARIANTS (learned-grid selection rules; default 0)")
    args = p.parse_args(argv)
    t0 = time.time()
    dims = [2, 16] if args.quick else [2, 16, 64]
    if args.dims:
        dims = [int(v) for v in args.dims.split(",")]
    budgets = [10, 20] if args.quick else [5, 10, 20, 50]
    opt_steps = 60 if args.quick else 150
    # unipc_bh2_2 is the best fixed-grid solver at NFE 10 for d = 2: learn its grid too.
    opt_solvers = ["unipc_bh2_3", "unipc_bh2_2", "dpmpp_2m"] if not args.quick else ["unipc_bh2_3", "unipc_bh2_2"]

    def log(msg):
        print(f"[{time.time() - t0:6.0f} s] {msg}", flush=True)

    if args.opt_solvers:
        opt_solvers = args.opt_solvers.split(",")
    log(f"device: {jax.devices()[0]}")
    all_rows, opt_info, floors = [], [], {}
    fixed_header, previous_learned = None, ""
    variants = tuple(VARIANTS)[:1]
    if args.variants:
        variants = tuple(tuple(VARIANTS)[int(i)] for i in args.variants.split(","))
    if args.no_learned:
        variants = ()
    if args.learned_only:
        all_rows, floors, fixed_header, previous_learned = load_fixed_rows(args.out + ".md", dims, budgets)
        if "Before:" in previous_learned or "selection rule" in previous_learned:
            previous_learned = ""  # already a rerun: do not nest the old comparison
        dims = sorted(set(dims) | {r["d"] for r in all_rows})
        run_dims = [int(v) for v in args.dims.split(",")] if args.dims else dims
        per_dim = {}
        if args.dim_solvers:
            for part in args.dim_solvers.split(";"):
                dd, names = part.split(":", 1)
                per_dim[int(dd)] = names.split(",")
            run_dims = list(per_dim)
    else:
        run_dims, per_dim = dims, {}
    for d in run_dims:
        d_solvers = per_dim.get(d, opt_solvers) if args.learned_only else opt_solvers
        rows, oi, fl = run_problem(d, budgets, args.batch, d_solvers, opt_steps, log, fixed=not args.learned_only,
                                   variants=variants)
        all_rows += rows
        opt_info += oi
        floors.setdefault(d, fl)
        if args.learned_only:  # a partial report after each dimension (the run is long)
            command = "python -m benchmarks.accuracy_vs_nfe " + " ".join(sys.argv[1:] if argv is None else argv)
            write_report(args.out + ".md", all_rows, opt_info, floors, dims, budgets, command.strip() +
                         f"  [partial: d in {run_dims[:run_dims.index(d) + 1]}]", time.time() - t0, [],
                         fixed_header=fixed_header, previous_learned=previous_learned)
    ckpt_rows = run_checkpoint(args.checkpoint, budgets, 64, log) if args.checkpoint else []
    os.makedirs(os.path.dirname(args.out), exist_ok=True)
    command = "python -m benchmarks.accuracy_vs_nfe " + " ".join(sys.argv[1:] if argv is None else argv)
    write_report(args.out + ".md", all_rows, opt_info, floors, dims, budgets, command.strip(),
                 time.time() - t0, ckpt_rows, fixed_header=fixed_header, previous_learned=previous_learned)
    plot(args.out + ".png", all_rows, dims, budgets)
    log(f"wrote {args.out}.md and .png")


if __name__ == "__main__":
    main()
