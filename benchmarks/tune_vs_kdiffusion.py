"""``tune`` at NFE 10 vs the best k-diffusion sampler, on mixtures and schedules never tuned on.

The acceptance check of ``tune``: on Gaussian-mixture problems and schedules that neither the
defaults nor ``tune`` were developed on, ``tune(..., nfe=10)`` should reach at most half the
end-point error of the best k-diffusion sampler on the same problem and held-back ``x_init``,
and its learned grids should never be worse than their starting grids on held-back samples.

Problems (``PROBLEMS``; seeds 1401-1406 and data keys 14100+i / 14200+i / 14300+i, chosen once
before any result was looked at and used nowhere else in the repository): random Gaussian
mixtures (``GaussianMixture.random``: 4-6 components, full covariances with eigenvalues spread
over a factor 25-40, so anisotropic), d = 2, 8 and 16, exact scores, under the schedules
``VPCosine``, ``SubVP``, ``EDM``, ``RectifiedFlow``, ``VE`` and a user-given VP schedule defined
below (``custom_vp``: ``log(alpha / sigma) = 5 - 9 t^2``, a log-SNR quadratic in t that no built-in has).
Everything in float64. For each problem, three disjoint batches of exact draws of ``p_T``:

* calibration (``--batch``, 128 by default; the recorded run uses 512, the size ``tune``'s
  docstring advises at d >= 8): ``tune`` fits its learned grids on it;
* held-back (``--batch``): ``tune`` scores every candidate and chooses its learned-grid iterate on it (its
  ``heldout_x_init``), and every k-diffusion sampler runs on the same initial states;
* fresh (1024): never seen by ``tune``; the winner, its starting grid and every k-diffusion
  sampler are re-run on it, an unbiased check of the held-back comparison. It is large because
  the RMSE is dominated by rare trajectories (about 1 in 100 at d = 16) that end in another mode
  than the reference when the step across the mode decision is too long: a batch of 128 may hold
  none or two of them, which moves the RMSE by a factor 3-4. The median per-sample error is
  reported beside it.

Mode flips: a trajectory flips when its end point's most probable mixture component (of ``p_{t_end}``)
differs from the reference end point's. The report counts them for the winner and the best k-diffusion sampler
on both batches, gives the held-back medians, and for each held-back trajectory that both flip, the fewest steps
with which dpmpp_3m on the log-SNR grid keeps it in its mode: when one such trajectory decides the RMSE ratio,
this says how hard it is.

End-point RMSE ``sqrt(mean_b ||x_b - x_ref_b||^2)`` against a tight reference (``reference_solve``,
Dopri8 in the x0-lambda form, rtol = atol = 1e-11) of the exact probability-flow ODE from the same
initial states.

k-diffusion: every sampler of ``accuracy_vs_nfe.KDIFF`` with NFE <= 10 (euler, heun, dpm_2,
lms(4), dpmpp_2s_ancestral(eta=0), dpmpp_2m, dpmpp_3m_sde(eta=0)) on Karras and exponential
(log-SNR) grids, plus dpm_fast on its own grid, run by ``accuracy_vs_nfe.k_diffusion_rows`` with the
exact torch denoiser of ``benchmarks/common.py`` (``x / alpha`` in ``sigma / alpha``); its VP grid
(``get_sigmas_vp``) is VPLinear's and is not used for these schedules. A consistency column runs
k-diffusion's dpmpp_2m with 1000 steps: it must agree with the reference to its discretisation
error (second order: ~1e-5), which checks the mapping of each schedule to k-diffusion's convention.

Run (one core; about 25 min with the defaults, about 40 min as recorded):
``taskset -c 0 python -m benchmarks.tune_vs_kdiffusion --batch 512 --max-seconds 300 --error-grids``
(writes ``benchmarks/results/tune_vs_kdiffusion.md``; ``--problems`` picks a subset by name;
``--error-grids`` runs ``tune(..., error_grids=True)``, which the recorded run uses).
"""

from __future__ import annotations

import argparse
import datetime
import os
import pickle
import platform
import shlex
import sys
import time

# Sets the XLA flag (before jax is imported) and x64; holds the k-diffusion rows.
from benchmarks import accuracy_vs_nfe as avn  # noqa: E402
from benchmarks import common  # noqa: E402

# isort: split
import jax  # noqa: E402
import jax.numpy as jnp  # noqa: E402
import numpy as np  # noqa: E402

import jaxode_diffusion as jd  # noqa: E402
from jaxode_diffusion.analysis.diffrax_drivers import reference_solve  # noqa: E402
from jaxode_diffusion.analysis.distances import rmse  # noqa: E402
from jaxode_diffusion.sampling.core import make_times, solve  # noqa: E402
from jaxode_diffusion.tuning.tuner import tune  # noqa: E402

NFE = 10
#: the run options recorded with each rows file (runs merge only when they agree on all of them)
SETTINGS = ("max_seconds", "batch", "error_grids", "calib", "learn_probe")
BATCH = 128
FRESH = 1024
EG_NOTE = (" (error-grid candidates for the best learn_top solvers, scored on the held-back batch with the named "
           "grids; each learned grid starts from its solver's best grid of all)")

# A user-given VP schedule: the package's log-SNR lambda = log(alpha / sigma) quadratic in t,
# lambda(t) = LMAX - (LMAX - LMIN) t^2, with alpha^2 = sigmoid(2 lambda), sigma^2 = sigmoid(-2 lambda)
# (alpha^2 + sigma^2 = 1), and its closed-form inverse t(lambda).
LMAX, LMIN = 5.0, -4.0


def custom_vp():
    def lam(t):
        return LMAX - (LMAX - LMIN) * jnp.asarray(t) ** 2

    return jd.ForwardProcess.from_alpha_sigma(
        lambda t: jnp.sqrt(jax.nn.sigmoid(2.0 * lam(t))),
        lambda t: jnp.sqrt(jax.nn.sigmoid(-2.0 * lam(t))),
        t_max=1.0,
        t_of_lambda_fn=lambda la: jnp.sqrt((LMAX - la) / (LMAX - LMIN)),
    )


# name -> (process factory, d, components, mixture seed, scale, min_var, max_var). Fixed before
# any result was seen; not tuned afterwards.
PROBLEMS = {
    "vp_cosine d=2": (jd.VPCosine, 2, 5, 1401, 2.0, 0.02, 0.6),
    "subvp d=8": (jd.SubVP, 8, 4, 1402, 2.0, 0.03, 0.8),
    "edm d=16": (jd.EDM, 16, 6, 1403, 2.0, 0.02, 0.5),
    "rectified_flow d=2": (jd.RectifiedFlow, 2, 6, 1404, 2.0, 0.01, 0.4),
    "ve d=8": (jd.VE, 8, 5, 1405, 2.0, 0.02, 0.6),
    "custom_vp d=16": (custom_vp, 16, 4, 1406, 2.0, 0.03, 0.8),
}


def run_problem(i, name, spec, log, *, max_seconds, batch=BATCH, error_grids=False, calib=None, learn_probe=0):
    make_process, d, k, seed, scale, min_var, max_var = spec
    process = make_process()
    gm = jd.GaussianMixture.random(jax.random.PRNGKey(seed), k, d, scale=scale, min_var=min_var, max_var=max_var)
    sf = gm.score_fn(process)
    t1, t_end = float(process.default_t_start), float(process.default_t_end)
    x_cal, x_held, x_fresh = (gm.sample_marginal(jax.random.PRNGKey(base + i), n, process, t1)
                              for base, n in ((14100, calib or batch), (14200, batch), (14300, FRESH)))
    t0 = time.time()
    ref_held = reference_solve(sf, process, x_held, t_start=t1, t_end=t_end)
    ref_fresh = reference_solve(sf, process, x_fresh, t_start=t1, t_end=t_end)
    log(f"{name}: references in {time.time() - t0:.0f} s")

    # k-diffusion on the held-back and the fresh batch (the same initial states as ours).
    den = common.mixture_denoiser(gm.weights, gm.means, gm.covs)
    t0 = time.time()
    k_held = avn.k_diffusion_rows(den, process, x_held, ref_held, d, [NFE], t_end=t_end)
    k_fresh = avn.k_diffusion_rows(den, process, x_fresh, ref_fresh, d, [NFE], t_end=t_end)
    k_check = consistency(den, process, x_held, ref_held, t_end)
    k_best = min(k_held, key=lambda r: r["rmse"])
    k_best_fresh = next(r for r in k_fresh if (r["solver"], r["grid"]) == (k_best["solver"], k_best["grid"]))
    k_min_fresh = min(k_fresh, key=lambda r: r["rmse"])
    log(f"{name}: k-diffusion in {time.time() - t0:.0f} s; best {k_best['solver']} / {k_best['grid']} "
        f"{k_best['rmse']:.3e}; dpmpp_2m 1000 steps {k_check:.1e}")

    t0 = time.time()
    t = tune(sf, process, x_cal, nfe=NFE, heldout_x_init=x_held, t_start=t1, t_end=t_end,
             max_seconds=max_seconds, error_grids=error_grids, learn_probe=learn_probe, progress=False)
    tune_s = time.time() - t0

    def run(ts, solver, x):
        return solve(sf, process, x, jnp.asarray(ts), jd.get_solver(solver), throw=False).samples

    x_t_held = run(t.ts, t.solver, x_held)
    held = float(rmse(x_t_held, ref_held))  # recomputed against this script's reference
    x_t = run(t.ts, t.solver, x_fresh)
    fresh = float(rmse(x_t, ref_fresh))
    fresh_median = float(jnp.median(jnp.linalg.norm(x_t - ref_fresh, axis=1)))
    learned = []
    for c in t.candidates:
        if c["grid"].startswith("learned(") and "start_heldout_error" in c:
            learned.append(dict(solver=c["solver"], grid=c["grid"], start=c["start_heldout_error"],
                                learned=c["heldout_error"], iterations=c.get("iterations"), status=c["status"]))
    skipped = sum(1 for c in t.candidates if str(c.get("status", "")).startswith("skipped"))
    fixed = [c for c in t.candidates if not c["grid"].startswith("learned(") and c["status"] == "ok"]
    best_fixed = min(fixed, key=lambda c: c["heldout_error"]) if fixed else None
    row = dict(name=name, d=d, k=k, seed=seed, solver=t.solver, grid=t.grid, steps=t.num_steps, nfe=t.nfe,
               held=held, tune_held=t.heldout_error, fresh=fresh, fresh_median=fresh_median, k_best=k_best,
               k_best_fresh=k_best_fresh, k_min_fresh=k_min_fresh,
               k_check=k_check, learned=learned, tune_s=tune_s, skipped=skipped, best_fixed=best_fixed,
               k_rows=k_held)
    if t.grid.startswith("learned("):  # the winner's learned grid vs its start on the fresh batch too
        start = t.grid[len("learned("):-1]
        if start in jd.sampling.GRID_NAMES:
            ts0 = make_times(process, num_steps=t.num_steps, t_start=t1, t_end=t_end, grid=start)
        else:  # an error grid: its times are in the candidates table
            ts0 = next(c["ts"] for c in t.candidates if (c["solver"], c["grid"]) == (t.solver, start))
        row["fresh_start"] = float(rmse(run(ts0, t.solver, x_fresh), ref_fresh))
    # Median per-sample error of the best k-diffusion sampler on the fresh batch (robust to outliers).
    row["k_fresh_median"] = float(np.median(k_errors(den, process, x_fresh, ref_fresh, t_end, k_min_fresh)))
    row["flips"] = mode_flips(sf, process, gm, den, (t1, t_end), (x_held, ref_held, x_t_held, k_best),
                              (x_fresh, ref_fresh, x_t, k_best_fresh))
    log(f"{name}: tune {tune_s:.0f} s -> {t.solver} / {t.grid} (NFE {t.nfe}) held-back {held:.3e}, "
        f"ratio {held / k_best['rmse']:.3f}; fresh {fresh:.3e} vs {k_best_fresh['rmse']:.3e}")
    return row



def mode_flips(sf, process, gm, den, times, held, fresh):
    """Mode flips: trajectories that end at another component than the reference (the most probable
    component of p_{t_end} given the end point), of ``tune``'s sampler and of the best k-diffusion row.

    ``held`` and ``fresh`` are ``(x_init, reference, tune's samples, k-diffusion row)``. The RMSE is
    dominated by flips; the ones both samplers flip on the held-back batch get the step count
    dpmpp_3m needs to keep them.
    """
    t1, t_end = times
    x_held, ref_held, x_t_held, k_best = held
    x_fresh, ref_fresh, x_t, k_best_fresh = fresh
    x_k_held, e_k_held = k_errors(den, process, x_held, ref_held, t_end, k_best, samples=True)
    x_k_fresh, e_k_fresh = k_errors(den, process, x_fresh, ref_fresh, t_end, k_best_fresh, samples=True)
    e_t_held = np.asarray(jnp.linalg.norm(x_t_held - ref_held, axis=1))
    m_end = gm.marginal(process, t_end)
    c_held, c_fresh = components(m_end, ref_held), components(m_end, ref_fresh)
    f_t_held = components(m_end, x_t_held) != c_held
    f_k_held = components(m_end, x_k_held) != c_held
    both = np.where(f_t_held & f_k_held)[0]
    return dict(held_tune=int(f_t_held.sum()), held_k=int(f_k_held.sum()),
                fresh_tune=int((components(m_end, x_t) != c_fresh).sum()),
                fresh_k=int((components(m_end, x_k_fresh) != c_fresh).sum()),
                held_both=both.tolist(), held_both_err=[(float(e_t_held[b]), float(e_k_held[b])) for b in both],
                held_median=float(np.median(e_t_held)), k_held_median=float(np.median(e_k_held)),
                held_both_steps=(steps_to_keep_mode(sf, process, m_end, x_held[both], ref_held[both], t1, t_end)
                                 if both.size else []))


def k_errors(den, process, x, ref, t_end, row, samples=False):
    """Per-sample end-point errors ``||x_b - x_ref_b||`` of one k-diffusion row (its sampler and grid) on ``x``
    (and the samples first if ``samples``)."""
    import torch

    ks = common.load_sampling()
    t1 = float(process.default_t_start)
    r_max, r_min = float(process.rho(t1)), float(process.rho(t_end))
    n = row["steps"]
    with common.torch_float64():
        xk = torch.tensor(np.asarray(x, np.float64) / float(process.alpha(t1)))
        if row["solver"] == "k:dpm_fast":
            y = ks.sample_dpm_fast(den, xk, r_min, r_max, row["nfe"], disable=True)
        else:
            fn, kw, _ = avn.KDIFF[row["solver"]]
            sig = (ks.get_sigmas_exponential(n + 1, r_min, r_max) if row["grid"] == "log_snr"
                   else ks.get_sigmas_karras(n + 1, r_min, r_max, rho=7.0))[:-1]
            y = getattr(ks, fn)(den, xk, sig, disable=True, **kw)
    x_k = jnp.asarray(y.numpy() * float(process.alpha(t_end)))
    assert abs(float(rmse(x_k, ref)) - row["rmse"]) <= 1e-9 * max(1.0, row["rmse"])  # the same run as the row
    err = np.asarray(jnp.linalg.norm((x_k - ref).reshape(x_k.shape[0], -1), axis=1))
    return (x_k, err) if samples else err


def components(m, x):
    """The component of the mixture ``m`` (the marginal ``p_{t_end}``) with the largest posterior probability,
    per sample of ``x``."""
    covs = m.covs if m.covs.ndim == 3 else jax.vmap(jnp.diag)(m.covs)  # full or diagonal covariances
    logits = jnp.stack([jnp.log(m.weights[k]) + jax.scipy.stats.multivariate_normal.logpdf(x, m.means[k], covs[k])
                        for k in range(m.num_components)], axis=-1)
    return np.asarray(jnp.argmax(logits, axis=-1))


#: step counts tried to find the NFE at which a flipped trajectory stops flipping
HARD_STEPS = (10, 12, 15, 20, 25, 30, 40, 60, 80)


def steps_to_keep_mode(sf, process, m_end, x, ref, t1, t_end, solver="dpmpp_3m", grid="log_snr"):
    """For each trajectory of ``x``: the fewest steps in ``HARD_STEPS`` with which ``solver`` on ``grid``
    (dpmpp_3m on the log-SNR grid: k-diffusion's dpmpp_3m, tested equal to 1e-12) ends at the component of the
    reference (its component in ``m_end``, the marginal ``p_{t_end}``) and stays there for every larger count
    (``None``: flips even at the largest)."""
    ref_c = components(m_end, ref)
    ok = []
    for n in HARD_STEPS:
        ts = make_times(process, num_steps=n, t_start=t1, t_end=t_end, grid=grid)
        y = solve(sf, process, x, ts, jd.get_solver(solver), throw=False).samples
        ok.append(components(m_end, y) == ref_c)
    # stays[i, b]: trajectory b is kept at every count from HARD_STEPS[i] on
    stays = np.flip(np.cumprod(np.flip(np.stack(ok), 0), 0), 0).astype(bool)
    return [HARD_STEPS[int(np.argmax(col))] if col.any() else None for col in stays.T]


def consistency(den, process, x, ref, t_end):
    """k-diffusion's dpmpp_2m with 1000 steps on the log-SNR grid: checks the schedule mapping."""
    import torch

    ks = common.load_sampling()
    t1 = float(process.default_t_start)
    r_max, r_min = float(process.rho(t1)), float(process.rho(t_end))
    with common.torch_float64():
        y = ks.sample_dpmpp_2m(den, torch.tensor(np.asarray(x, np.float64) / float(process.alpha(t1))),
                               ks.get_sigmas_exponential(1001, r_min, r_max)[:-1], disable=True)
    return float(rmse(jnp.asarray(y.numpy() * float(process.alpha(t_end))), ref))


def report_header(command, seconds, *, max_seconds, batch, error_grids, calib, learn_probe, quote):
    """The report's title, machine, command and settings paragraphs."""
    cpu = ""
    try:
        with open("/proc/cpuinfo") as fh:
            cpu = next((ln.split(":", 1)[1].strip() for ln in fh if ln.startswith("model name")), "")
    except OSError:
        pass
    import inspect

    import torch

    dflt = {k: v.default for k, v in inspect.signature(tune).parameters.items()}
    return [
        "# tune (NFE 10) vs the best k-diffusion sampler on unseen mixtures and schedules", "",
        f"Machine: {platform.machine()} {cpu}, {os.cpu_count()} CPUs (run pinned to one core), JAX "
        f"{jax.__version__} on {jax.devices()[0].platform}, torch {torch.__version__}, k-diffusion "
        f"{common.K_DIFFUSION_VERSION}; float64; date {datetime.date.today()}; "
        f"total {seconds:.0f} s.", "",
        f"Command: `{command}`" if quote else f"Command: {command}", "",
        f"Batches: calibration ({calib or batch}, fits learned grids), held-back ({batch}; `tune` scores candidates and "
        "picks learned-grid iterates on it; every k-diffusion sampler runs on the same initial states), "
        f"fresh ({FRESH}, never seen by `tune`: the winner, its starting grid and every k-diffusion sampler "
        "re-run). "
        f"`tune` defaults (all solvers x 4 grids, learn_top={dflt['learn_top']}, learn_probe={learn_probe}, "
        f"probe_steps={dflt['probe_steps']}, learn_steps={dflt['learn_steps']}, "
        f"learning_rate={dflt['learning_rate']}, patience={dflt['patience']}, learn_share={dflt['learn_share']}: the "
        f"scan stops at {100 * (1 - dflt['learn_share']):.0f} % of max_seconds, then the learned grids, best solver "
        f"first, each with all the time left; the learn_probe best solvers get probe_steps iterations, the "
        f"learn_top best probes continue; 0: no probes), max_seconds={max_seconds}, error_grids={error_grids}"
        f"{EG_NOTE if error_grids else ''}. "
        "RMSE against a Dopri8 reference (rtol = atol = 1e-11) from the same initial states. "
        "Problem seeds (mixture 1401-1406, data 14100+i / 14200+i / 14300+i) fixed before any result.", "",
    ]


def held_back_section(rows):
    """Held-back batch: tune's winner vs the best k-diffusion sampler per problem."""
    lines = [
        "## Held-back batch: tune vs best k-diffusion (target ratio <= 0.5)", "",
        "| problem | K | tune winner (grid, steps, NFE) | tune RMSE | best k-diffusion (grid) | k RMSE | ratio | "
        "meets | tune best fixed grid | tune time |",
        "|---|---:|---|---:|---|---:|---:|---|---|---:|",
    ]
    for r in rows:
        kb, bf = r["k_best"], r["best_fixed"]
        ratio = r["held"] / kb["rmse"]
        bfs = f"{bf['solver']} / {bf['grid']} {bf['heldout_error']:.3e}" if bf else "-"
        lines.append(f"| {r['name']} | {r['k']} | {r['solver']} / {r['grid']}, {r['steps']}, {r['nfe']} | "
                     f"{r['held']:.3e} | {kb['solver']} / {kb['grid']} | {kb['rmse']:.3e} | {ratio:.3f} | "
                     f"{'yes' if ratio <= 0.5 else 'no'} | {bfs} | {r['tune_s']:.0f} s"
                     f"{' (' + str(r['skipped']) + ' skipped)' if r['skipped'] else ''} |")
    met = sum(r["held"] <= 0.5 * r["k_best"]["rmse"] for r in rows)
    return lines + ["", f"Ratio <= 0.5 on {met} of {len(rows)} problems."]


def fresh_section(rows):
    """Fresh batch: the same samplers re-run on draws tune never saw."""
    lines = ["", f"## Fresh batch of {FRESH} (never seen by tune)", "",
             "k-diffusion (held-back choice): the sampler that was best on the held-back batch; best on fresh: "
             "the best of all k-diffusion samplers and grids on this batch (chosen with hindsight). Medians are "
             "per-sample end-point errors ||x_b - x_ref_b||.", "",
             "| problem | tune RMSE | k (held-back choice) RMSE | ratio | k best on fresh (grid) RMSE | ratio | "
             "tune median | k best median | winner's learned grid vs its start (RMSE) |",
             "|---|---:|---:|---:|---|---:|---:|---:|---|"]
    for r in rows:
        ls = (f"{r['fresh_start']:.3e} -> {r['fresh']:.3e}" if "fresh_start" in r else "(winner is a named grid)")
        km = r["k_min_fresh"]
        lines.append(f"| {r['name']} | {r['fresh']:.3e} | {r['k_best_fresh']['rmse']:.3e} | "
                     f"{r['fresh'] / r['k_best_fresh']['rmse']:.3f} | {km['solver']} / {km['grid']} {km['rmse']:.3e} | "
                     f"{r['fresh'] / km['rmse']:.3f} | {r['fresh_median']:.3e} | {r['k_fresh_median']:.3e} | {ls} |")
    met_f = sum(r["fresh"] <= 0.5 * r["k_min_fresh"]["rmse"] for r in rows)
    return lines + ["", f"Ratio to the best k-diffusion on the fresh batch <= 0.5 on {met_f} of {len(rows)} problems."]


def flips_section(rows):
    """Mode flips of both samplers (rows that have them)."""
    flipped = [r for r in rows if "flips" in r]
    if not flipped:
        return []
    lines = ["", "## Mode flips (the trajectories that dominate the RMSE)", "",
             "A flip: the end point's most probable component of the mixture at t_end differs from the "
             "reference end point's (the trajectory ends in another mode). Held-back flips of both: the "
             "trajectories that the tune winner and the best k-diffusion sampler both flip, with their two errors "
             f"and the fewest steps (of {list(HARD_STEPS)}) with which dpmpp_3m on the log-SNR grid (= k-diffusion's "
             "dpmpp_3m) keeps each one in its mode at every larger count tried.", "",
             "| problem | held-back flips: tune / k best | fresh flips: tune / k | "
             "held-back median: tune / k best (ratio) | held-back flips of both: errors (tune, k), steps needed |",
             "|---|---:|---:|---:|---|"]
    for r in flipped:
        f = r["flips"]
        both = "; ".join(f"#{b}: ({et:.2f}, {ek:.2f}), {n if n is not None else '>' + str(HARD_STEPS[-1])}"
                         for b, (et, ek), n in zip(f["held_both"], f["held_both_err"], f["held_both_steps"], strict=True))
        lines.append(f"| {r['name']} | {f['held_tune']} / {f['held_k']} | "
                     f"{f['fresh_tune']} / {f['fresh_k']} | {f['held_median']:.3e} / {f['k_held_median']:.3e} "
                     f"({f['held_median'] / f['k_held_median']:.3f}) | {both or '-'} |")
    return lines


def learned_and_kdiffusion_sections(rows):
    """Learned grids vs their starting grid, and every k-diffusion sampler at NFE 10."""
    lines = ["", "## Learned grids vs their starting grid on the held-back batch (never worse)", "",
             "| problem | solver | grid | start RMSE | learned RMSE | never worse | iterations | status |",
             "|---|---|---|---:|---:|---|---:|---|"]
    for r in rows:
        for c in r["learned"]:
            lines.append(f"| {r['name']} | {c['solver']} | {c['grid']} | {c['start']:.3e} | {c['learned']:.3e} | "
                         f"{'yes' if c['learned'] <= c['start'] else 'NO'} | {c['iterations']} | {c['status']} |")
    lines += ["", "## k-diffusion at NFE 10 on the held-back batch (all samplers and grids)", "",
              "| problem | 1000-step dpmpp_2m vs reference (mapping check) | " +
              " | ".join(["sampler / grid: RMSE"]) + " |", "|---|---:|---|"]
    for r in rows:
        cells = ", ".join(f"{k['solver'][2:]}/{k['grid']} {k['rmse']:.2e}"
                          for k in sorted(r["k_rows"], key=lambda k: k["rmse"]))
        lines.append(f"| {r['name']} | {r['k_check']:.1e} | {cells} |")
    return lines


def write_report(path, rows, command, seconds, *, max_seconds, batch=BATCH, error_grids=False, calib=None,
                 learn_probe=0, quote=True):
    lines = report_header(command, seconds, max_seconds=max_seconds, batch=batch, error_grids=error_grids,
                          calib=calib, learn_probe=learn_probe, quote=quote)
    lines += held_back_section(rows) + fresh_section(rows) + flips_section(rows) + learned_and_kdiffusion_sections(rows)
    with open(path, "w") as fh:
        fh.write("\n".join(lines) + "\n")


def main(argv=None):
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--problems", default=None, help="comma-separated names from PROBLEMS (default: all)")
    p.add_argument("--max-seconds", type=float, default=240.0, help="tune's time bound per problem")
    p.add_argument("--batch", type=int, default=BATCH, help="size of the held-back batch (and of the calibration "
                   "batch unless --calib)")
    p.add_argument("--learn-probe", type=int, default=0,
                   help="tune(..., learn_probe=N): probe learned grids for the N best solvers first (0: off)")
    p.add_argument("--calib", type=int, default=None,
                   help="size of the calibration batch that fits the learned grids (default: --batch)")
    p.add_argument("--error-grids", action="store_true",
                   help="tune(..., error_grids=True): also score error grids and start learned grids from the best")
    p.add_argument("--out", default=os.path.join(os.path.dirname(os.path.abspath(__file__)), "results",
                                                 "tune_vs_kdiffusion.md"))
    p.add_argument("--rows-out", default=None,
                   help="also pickle the per-problem results here (to merge runs split over cores with --merge)")
    p.add_argument("--merge", default=None,
                   help="comma-separated --rows-out files of runs with the same settings (e.g. --problems split "
                        "over two cores): write one report from them and run nothing")
    args = p.parse_args(argv)
    if args.merge is not None:
        parts = []
        for f in args.merge.split(","):
            with open(f, "rb") as fh:
                parts.append(pickle.load(fh))
        # Older rows files keep the settings at the top level, some without calib / learn_probe.
        settings = [{"calib": None, "learn_probe": 0, **{k: q[k] for k in SETTINGS if k in q}, **q.get("settings", {})}
                    for q in parts]
        keys = {tuple(sorted(st.items())) for st in settings}
        if len(keys) != 1:
            raise ValueError(f"--merge: the runs used different settings {[dict(k) for k in keys]}; merge only like runs.")
        order = list(PROBLEMS)
        rows = sorted((r for q in parts for r in q["rows"]), key=lambda r: order.index(r["name"]))
        command = " ; ".join(f"`{q['command']}` ({q['seconds']:.0f} s)" for q in parts)
        write_report(args.out, rows, f"{len(parts)} processes, one core each: {command}; merged with "
                     f"`python -m benchmarks.tune_vs_kdiffusion --merge ...`", sum(q["seconds"] for q in parts),
                     quote=False, **settings[0])
        print(f"wrote {args.out}")
        return
    names = list(PROBLEMS) if args.problems is None else [s.strip() for s in args.problems.split(",")]
    for n in names:
        if n not in PROBLEMS:
            raise ValueError(f"--problems: unknown problem {n!r}; choose from {list(PROBLEMS)}.")
    t0 = time.time()

    def log(msg):
        print(f"[{time.time() - t0:6.0f} s] {msg}", flush=True)

    if not avn.k_diffusion_available():
        raise SystemExit('k-diffusion is needed: pip install -e ".[bench]" && '
                         'pip install --no-deps "k-diffusion==0.1.1.post1"')
    log(f"device: {jax.devices()[0]}")
    command = "python -m benchmarks.tune_vs_kdiffusion " + shlex.join(sys.argv[1:] if argv is None else argv)
    settings = {k: getattr(args, k) for k in SETTINGS}
    rows = []
    for name in names:
        rows.append(run_problem(list(PROBLEMS).index(name), name, PROBLEMS[name], log, **settings))
        os.makedirs(os.path.dirname(args.out), exist_ok=True)
        write_report(args.out, rows, command.strip(), time.time() - t0, **settings)
        if args.rows_out:
            with open(args.rows_out, "wb") as fh:
                pickle.dump(dict(rows=rows, command=command.strip(), seconds=time.time() - t0, settings=settings), fh)
    log(f"wrote {args.out}")


if __name__ == "__main__":
    main()
