"""The end-to-end study behind ``jaxode-diffusion study``: both terms of the bound, measured.

Sections (each a function returning a typed result whose ``to_dict()`` is its entry of
``metrics.json``; :mod:`jaxode_diffusion.study.report` writes the report from that file's dict):

1. ``discretisation``: exact-density TV (change of variables through the sampler) against
   ``H_max`` for orders ``p = 1..4`` (euler, heun, kutta3, rk4) in the plain ``x-t`` form and
   the exponential ``x0-snr`` and ``ou-exp`` forms, with exact scores and exact ``x_init ~ p_T``, so the only
   error is the discretisation; fitted slopes (expected about ``p``).
2. ``score_floor``: TV against ``eps_score`` with a smooth perturbation of the exact score of
   prescribed L2 size (fine steps, so discretisation is negligible); fitted slope.
3. ``dimension``: on Gaussian mixtures whose difficulty grows with ``d`` (means and anisotropic
   covariances in all directions, unit per-coordinate scale): TV at a fixed step count against
   ``d`` for ``p = 1..4`` with fitted exponents and intervals, and the step size needed to reach
   a fixed TV against ``d``.
4. ``bound``: the theorem's terms ``d^{7/4} eps^{1/2}`` and ``d (d H_max)^p`` from the measured
   quantities beside the measured TV, constants fitted by non-negative least squares.
5. ``learned``: a Flax MLP trained by denoising score matching on the mixture; measured
   ``eps_score``; TV of its sampler beside the exact-score sampler's.
6. ``regularity``: sigma-weighted derivative norms of the exact and the learned score along
   trajectories and at noised data, and whether they stay bounded down to ``t_end``.

Everything runs in float64 (``jax_enable_x64``) except the learned model (float32 network).
"""

from __future__ import annotations

import dataclasses
import math
import time
from dataclasses import dataclass, field
from pathlib import Path

import jax
import jax.numpy as jnp
import numpy as np
from tqdm.auto import tqdm

from jaxode_diffusion.utils.outputs import dumps_json

__all__ = ["StudyConfig", "run_study", "PRESETS", "SECTIONS"]

ORDERS = {1: "euler", 2: "heun", 3: "kutta3", 4: "rk4"}


@dataclass
class StudyConfig:
    """Settings of a study run; ``preset`` picks sizes, other fields override them."""

    out: str = "study_out"
    preset: str = "default"
    seed: int = 0
    dim: int = 2
    process: str = "vp_linear"
    grid: str = "log_snr"
    t_end: float = 1e-3
    forms: tuple = ("x-t", "x0-snr", "ou-exp")
    step_counts: tuple = (4, 8, 16, 32, 64, 128)
    tv_samples: int = 4000
    floor_solver: str = "x0-lambda:rk4"
    floor_steps: int = 32
    eps_values: tuple = (0.005, 0.01, 0.03, 0.1)
    dims: tuple = (2, 4, 8, 16, 32)
    dim_solver: str = "x-t:rk4"
    dim_steps: int = 8
    # Section 3: orders p whose TV-vs-d exponent is fitted at a fixed step count (fixed H_max),
    # the step count per order, and the TV that section 3(b) asks each d to reach with dim_solver.
    dim_orders: tuple = (1, 2, 3, 4)
    dim_steps_by_order: tuple = ((1, 16), (2, 8), (3, 8), (4, 8))
    dim_tv_target: float = 0.02
    dim_max_steps: int = 64
    # (a) doubles an order's step count while TV at the largest d is above this (TV saturates at 1).
    dim_tv_high: float = 0.4
    # Section 1: each (form, order) family doubles its step count from step_counts until its local
    # slopes settle, up to max_steps; TV at or below tv_floor is round-off, not discretisation
    # (the float64 measurement behind 1e-12: benchmarks/README.md).
    max_steps: int = 1024
    tv_floor: float = 1e-12
    # Section 1: a settled slope farther than this from p (either side) is extended further, or
    # reported as not asymptotic.
    order_gap: float = 0.5
    # Section 1 samples (the same draws for every run); 0: tv_samples.
    order_samples: int = 0
    # Section 2, adversarial perturbation: gradient-ascent steps on the TV, samples per step.
    adv_steps: int = 15
    adv_samples: int = 512
    adv_lr: float = 0.03
    learned: bool = True
    train_steps: int = 3000
    learned_solver: str = "x0-lambda:rk4"
    learned_steps: int = 8
    regularity: bool = True
    regularity_times: int = 10
    regularity_batch: int = 32
    # Sections to run (names in SECTIONS); empty: all of them (learned / regularity as set above).
    only: tuple = ()
    extras: dict = field(default_factory=dict)

    def wants(self, section: str) -> bool:
        return not self.only or section in self.only

    def to_dict(self) -> dict:
        d = dataclasses.asdict(self)
        return {k: (list(v) if isinstance(v, tuple) else v) for k, v in d.items()}


PRESETS = {
    # about 2.5 minutes on 2 idle CPU cores (measured: benchmarks/README.md)
    "quick": dict(step_counts=(4, 8, 16), tv_samples=1000, eps_values=(0.01, 0.03, 0.1), dims=(2, 4, 8, 16),
                  dim_orders=(2, 4), adv_steps=4, adv_samples=256, max_steps=512, order_samples=500,
                  train_steps=600, regularity_times=5, regularity_batch=8, floor_steps=16),
    # the default: about 20 minutes on a shared 2-core CPU
    "default": {},
    # sized for a GPU
    "full": dict(step_counts=(4, 8, 16, 32, 64, 128), tv_samples=50_000, eps_values=(0.003, 0.01, 0.03, 0.1),
                 dims=(2, 4, 8, 16, 32, 64, 128), train_steps=20_000, regularity_times=20, regularity_batch=256,
                 floor_steps=64, adv_steps=40, adv_samples=4096),
}


class _Metrics:
    """Base of the sections' results: :meth:`to_dict` is the section as ``metrics.json`` holds it
    (fields in order, values as they are; a field with ``metadata={"metrics": False}`` is left out)."""

    def to_dict(self) -> dict:
        fields = dataclasses.fields(self)
        return {f.name: getattr(self, f.name) for f in fields if f.metadata.get("metrics", True)}


@dataclass
class Discretisation(_Metrics):
    """Section 1: a row per run, a fit per (form, order) family."""

    rows: list
    fits: list
    dim: int
    folds: int
    samples: int
    max_steps: int
    tv_floor: float


@dataclass
class ScoreFloor(_Metrics):
    """Section 2: TV against eps_score for smooth random (``rows``, ``fit``) and adversarial
    (``adversarial``: rows, fit and ascent settings, or ``None``) perturbations."""

    rows: list
    exact_score_tv: dict
    slope: float
    fit: dict
    adversarial: dict | None
    solver: str
    steps: int
    dim: int
    h_max: float


@dataclass
class Dimension(_Metrics):
    """Section 3: (a) TV against d at fixed step counts (``all_rows``, ``fits``; ``rows``: those of
    ``solver``), (b) the steps needed to reach ``tv_target`` (``needed``, ``need_fit``)."""

    rows: list
    all_rows: list
    fits: list
    slope: float
    solver: str
    steps: int
    needed: list
    need_fit: dict
    need_order: int
    tv_target: float
    tv_samples: int
    cost: list
    family: str


@dataclass
class Bound(_Metrics):
    """Section 4: the theorem's terms with fitted constants, one entry per family of runs."""

    families: list


@dataclass
class Learned(_Metrics):
    """Section 5: a trained model's score error and sampler TV; ``score_fn`` (float32 network in a
    float64 sampler) serves the regularity section and is not part of the metrics."""

    train_steps: int
    train_seconds: float
    eps_score_sq: float
    eps_score_sq_weighted: float
    zero_score_eps_sq: float
    tv_learned: dict
    tv_exact: dict
    solver: str
    steps: int
    model_dir: str
    score_fn: object = field(default=None, repr=False, metadata={"metrics": False})


@dataclass
class ScoreRegularity(_Metrics):
    """Section 6, one score: its profile, figure and the bounded-or-not verdict."""

    profile: dict
    figure: str
    checks: dict
    bounded: bool


@dataclass
class StudyResults:
    """Every section's result (``None``: not run), the timings and the machine.

    :meth:`to_dict` is ``metrics.json``'s content (keys in the order the sections run).
    """

    config: dict
    timings: dict = field(default_factory=dict)
    discretisation: Discretisation | None = None
    score_floor: ScoreFloor | None = None
    dimension: Dimension | None = None
    bound: Bound | None = None
    learned: Learned | None = None
    regularity: dict | None = None  # score name -> ScoreRegularity
    machine: dict | None = None

    def to_dict(self) -> dict:
        out = {"config": self.config, "timings": self.timings}
        for name in ("discretisation", "score_floor", "dimension", "bound", "learned"):
            section = getattr(self, name)
            if section is not None:
                out[name] = section.to_dict()
        if self.regularity is not None:
            out["regularity"] = {k: v.to_dict() for k, v in self.regularity.items()}
        if self.machine is not None:
            out["machine"] = self.machine
        return out


#: The study's sections, in the order they run (``StudyConfig.only`` / ``study --only`` pick some).
SECTIONS = ("discretisation", "score_floor", "dimension", "learned", "regularity")


def make_config(preset: str = "default", **overrides) -> StudyConfig:
    if preset not in PRESETS:
        raise ValueError(f"preset={preset!r}: choose one of {sorted(PRESETS)}.")
    cfg = StudyConfig(preset=preset, **PRESETS[preset])
    for k, v in overrides.items():
        if v is None:
            continue
        if not hasattr(cfg, k):
            raise ValueError(f"unknown study setting {k!r}.")
        setattr(cfg, k, v)
    bad = [s for s in cfg.only if s not in SECTIONS]
    if bad:
        raise ValueError(f"only={tuple(cfg.only)!r}: unknown section(s) {bad}; choose from {SECTIONS}.")
    if any(int(d) < 1 for d in cfg.dims) or not cfg.dims:
        raise ValueError(f"dims={tuple(cfg.dims)!r}: give one or more positive dimensions, e.g. (2, 4, 8).")
    if int(cfg.tv_samples) < 2:
        raise ValueError(f"tv_samples={cfg.tv_samples!r} must be at least 2 (a standard error needs two samples).")
    return cfg


def _target(cfg: StudyConfig, d: int):
    from jaxode_diffusion.training.data import default_gmm

    return default_gmm(d)


def _slope(x, y, floor=None):
    x, y = np.asarray(x, float), np.asarray(y, float)
    keep = np.isfinite(y) & (y > 0)
    if floor is not None:
        keep &= y > floor
    if keep.sum() < 2:
        return float("nan")
    from jaxode_diffusion.analysis.convergence import fit_order

    return fit_order(x[keep], y[keep])


def _tv(score_fn, process, target, cfg, key, solver, num_steps):
    """Exact-density TV of one sampler run, as a dict (value, stderr, low, high, folds). ``folds``
    counts the samples where the discrete map is not orientation preserving (det D Phi <= 0, where
    log q is not the output density): the density module warns about each such run; the study
    collects the counts into its report instead (other warnings pass through)."""
    import re
    import warnings

    from jaxode_diffusion.analysis.density import sampler_tv

    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        est = sampler_tv(score_fn, process, target, solver=solver, num_steps=num_steps, key=key,
                         num_samples=cfg.tv_samples, t_end=cfg.t_end, grid=cfg.grid)
    folds = 0
    for w in caught:
        m = re.search(r"det D Phi <= 0 for (\d+) of", str(w.message))
        if m:
            folds += int(m.group(1))
        else:
            warnings.warn_explicit(w.message, w.category, w.filename, w.lineno)
    return {"value": est.value, "stderr": est.stderr, "low": est.low, "high": est.high, "folds": folds}


def _h_max(process, solver, num_steps, cfg):
    from jaxode_diffusion.sampling.core import make_plan, make_times

    ts = make_times(process, num_steps=num_steps, t_end=cfg.t_end, grid=cfg.grid)
    plan = make_plan(process, solver, ts)
    return float(jnp.max(jnp.abs(jnp.diff(plan.us))))


def _family_runner(sf, process, target, cfg, rk, x_init, log_p0, cap, rows, row):
    """``run(n)`` for :func:`~jaxode_diffusion.analysis.convergence.extend_until_asymptotic`: the
    exact-density TV integrand ``(1 - p/q)_+`` per sample of ``solver`` with ``n`` steps, on the
    fixed draws ``x_init`` (common random numbers: every step count and family sees the same
    samples), valid when no sample folds (det D Phi <= 0) and all are finite. The grid is padded
    with zero-length steps at t_end (exact no-ops of an explicit RK step) to ``cap`` steps, so one
    compiled program serves every step count of the family. Appends a row per run to ``rows``."""
    from jaxode_diffusion.analysis.density import flow_and_jacobian
    from jaxode_diffusion.sampling.core import make_times

    ref = target.marginal(process, cfg.t_end)
    z = 1.959963984540054  # 97.5% normal quantile: the rows' 95% CLT interval, as tv_distance

    def run(n):
        ts = make_times(process, num_steps=n, t_end=cfg.t_end, grid=cfg.grid)
        ts_pad = jnp.concatenate([ts, jnp.full((cap - n,), ts[-1], ts.dtype)])
        y, jac = flow_and_jacobian(sf, process, x_init, ts_pad, rk)
        sign, logdet = np.linalg.slogdet(np.asarray(jac))
        log_r = np.asarray(ref.log_prob(y), np.float64) - (log_p0 - logdet)  # log p/q at the sample
        finite = ~np.isnan(log_r) & np.all(np.isfinite(np.asarray(y).reshape(len(y), -1)), 1)
        # (1 - p/q)_+ as tv_distance computes it; a non-finite sample counts as maximal error (1)
        # and makes the run invalid.
        w = np.where(finite, -np.expm1(np.minimum(np.where(finite, log_r, 0.0), 0.0)), 1.0)
        folds = int(np.sum(sign <= 0))
        tv, se = float(w.mean()), float(w.std(ddof=1) / np.sqrt(w.size))
        rows.append(dict(row, steps=int(n), h_max=_h_max(process, rk, n, cfg),
                         tv={"value": tv, "stderr": se, "low": max(0.0, tv - z * se), "high": min(1.0, tv + z * se)},
                         folds=folds, nonfinite=int((~finite).sum())))
        return w, folds == 0 and bool(finite.all())

    return run


def discretisation(cfg: StudyConfig, process, bar) -> Discretisation:
    """Section 1: exact-density TV against the number of steps N for p = 1..4 in each form, on one
    fixed grid family (``cfg.grid``), with the order read off where the data say the asymptotic
    regime has started (:func:`~jaxode_diffusion.analysis.convergence.extend_until_asymptotic`): every
    family starts at ``step_counts`` and doubles N until its local slopes settle (all within 0.25
    of the last, over at least four N) within ``order_gap`` of p (above or below: a fit may be
    pre-asymptotic from either side) or ``max_steps`` / the TV floor is reached; then either
    "order [interval] over N = a..b" or "not asymptotic" with the measured slope and the reason.

    All runs use the same draws from the exact p_T (common random numbers), so ratios of TV between
    step counts -- the slopes -- are measured far more precisely than each TV alone (the per-sample
    error is a smooth function of N), and the interval is a paired bootstrap over samples. There
    is no prior mismatch (x_init ~ exact p_T) and no early-stopping error (q is compared with the
    exact p_t_end), so the only floors are Monte Carlo resolution (TV within 3 standard errors of
    0, which with exact densities scales with TV itself) and round-off (``tv_floor``). Fold counts
    (samples where the discrete map is not orientation preserving; such a run is not used for the
    fit) go into the rows and the report."""
    target = _target(cfg, cfg.dim)
    sf = target.score_fn(process)
    p_start = target.marginal(process, process.default_t_start)
    num = int(cfg.order_samples or cfg.tv_samples)
    x_init = p_start.sample(jax.random.PRNGKey(cfg.seed), num)
    log_p0 = np.asarray(p_start.log_prob(x_init), np.float64)
    cap = int(max(cfg.max_steps, max(cfg.step_counts)))
    rows, fits = [], []
    for form in cfg.forms:
        for p, tab in ORDERS.items():
            fam, fit = _fit_family(cfg, process, target, sf, (x_init, log_p0), cap, f"{form}:{tab}", p, bar)
            rows.extend(fam)
            fits.append(fit)
    return Discretisation(rows=rows, fits=fits, dim=cfg.dim, folds=int(sum(r["folds"] for r in rows)),
                          samples=num, max_steps=cap, tv_floor=float(cfg.tv_floor))


def _fit_family(cfg, process, target, sf, draws, cap, solver, p, bar):
    """Section 1, one (form, order) family: ``(rows, fit)``.

    Runs ``cfg.step_counts`` and extends them (doubling N, each N run once) until both the order
    and the reference slope against H_max over the order's window lie within ``cfg.order_gap`` of
    ``p`` (either side), or budget / floor stop it; each is then flagged in ``fit`` (``asymptotic``
    and ``reason``; ``slope_asymptotic`` and ``slope_reason``) when it is not an order. Its effect
    on the quick study: benchmarks/README.md ("Study section 1: fits held to p on either side").
    """
    from jaxode_diffusion.analysis.convergence import extend_until_asymptotic
    from jaxode_diffusion.sampling.core import get_solver

    form = solver.split(":")[0]
    rk = get_solver(solver)
    if not isinstance(rk, _runge_kutta_cls()):
        raise ValueError(f"forms={cfg.forms!r}: section 1 pads grids with zero-length steps, which needs "
                         f"a Runge-Kutta form; {solver!r} is not one.")
    fam: list = []
    run = _family_runner(sf, process, target, cfg, rk, *draws, cap, fam, dict(form=form, order=p, solver=solver))
    done: dict = {}

    def counted(n):
        if n not in done:
            if n not in cfg.step_counts:  # an extension run: not in the bar's planned total
                bar.total += 1
            done[n] = run(n)
            bar.update(1)
        return done[n]

    def extend(counts):
        return extend_until_asymptotic(counted, counts, max_steps=cap, floor=cfg.tv_floor, seed=cfg.seed,
                                       expected=p, max_gap=cfg.order_gap)

    est = extend(cfg.step_counts)
    while (est.asymptotic and abs(_window_slope(fam, est) - p) > cfg.order_gap
           and 2 * est.steps[-1] <= cap and est.status[-1] == "ok"):
        est = extend(list(est.steps) + [2 * est.steps[-1]])
    fam.sort(key=lambda r: r["steps"])
    return fam, _family_fit(fam, est, form, p, solver, cfg.order_gap, cap)


def _window_slope(fam, est) -> float:
    """The slope of log TV against log H_max over ``est``'s window (NaN with fewer than two points)."""
    win = sorted((r for r in fam if r["steps"] in est.window), key=lambda r: r["steps"])
    return _slope([r["h_max"] for r in win], [r["tv"]["value"] for r in win])


def _family_fit(fam, est, form, p, solver, max_gap, cap) -> dict:
    """Section 1's fit entry of one family (its ``metrics.json`` dict), with both flags and reasons."""
    win = [r for r in fam if r["steps"] in est.window]
    slope = _window_slope(fam, est)
    slope_ok = bool(est.asymptotic and abs(slope - p) <= max_gap)
    return dict(form=form, order=p, solver=solver,
                # the slope against H_max in the form's own variable, for reference
                slope=slope, slope_asymptotic=slope_ok,
                slope_reason="" if slope_ok else _slope_reason(win, est, slope, p, max_gap, cap),
                points=len(win), order_fit=est.order, order_low=est.low, order_high=est.high,
                window_points=len(est.window), window_steps=list(est.window),
                asymptotic=est.asymptotic, reason=est.reason, describe=est.describe(),
                local_steps=list(est.local_steps), local_orders=list(est.local_orders),
                local_stderr=list(est.local_stderr), status=list(est.status),
                folds=int(sum(r["folds"] for r in fam)), expected_order=p, gap=est.order - p, max_gap=float(max_gap))


def _slope_reason(win, est, slope, p, max_gap, cap) -> str:
    """Why the slope against H_max over the window is not an order (the caller knows it is not)."""
    if not est.asymptotic:
        return "the family is not asymptotic (see reason)"
    if not np.isfinite(slope):
        return "fewer than two usable step counts in the window"
    gap = slope - p
    lh = np.log([r["h_max"] for r in win])
    lt = np.log([r["tv"]["value"] for r in win])
    local = np.diff(lt) / np.diff(lh)
    drift = local[-1] - local[0] if local.size > 1 else 0.0
    trend = "still falling" if drift < -0.05 else "still rising" if drift > 0.05 else "level"
    stop = (f"the finest step count the budget allows (max_steps = {cap})" if 2 * est.steps[-1] > cap
            else f"the last N the TV allows (at N = {est.steps[-1]} it is not usable: {est.status[-1]})")
    nd = 3 if round(abs(gap), 2) <= max_gap else 2  # 4.504 is more than 0.5 above 4: do not print 0.50
    return (f"slope vs H_max {slope:.{nd}f} is {abs(gap):.{nd}f} {'above' if gap > 0 else 'below'} p={p} over N = "
            f"{est.window[0]}..{est.window[-1]} (more than {max_gap:g}), at {stop}; H_max is not yet proportional "
            f"to 1/N there; local slopes vs H_max {trend} ({', '.join(f'{v:.2f}' for v in local)})")


def _runge_kutta_cls():
    from jaxode_diffusion.solvers.runge_kutta import RungeKutta

    return RungeKutta


def _stages(tab):
    from jaxode_diffusion.solvers import tableaux

    return tableaux.get(tab).num_stages


def score_floor(cfg: StudyConfig, process, bar) -> ScoreFloor:
    """Section 2: TV against eps_score for (i) smooth random perturbations of the exact score and
    (ii) an adversarial one: the same Fourier features (so the same derivative bounds per unit
    amplitude), amplitudes found by gradient ascent on the exact-density TV at the prescribed L2
    size. Fitted exponents with intervals for both, and each perturbation's derivative bounds."""
    from jaxode_diffusion.analysis.theory import make_perturbed_score, measure_score_error

    target = _target(cfg, cfg.dim)
    key = jax.random.PRNGKey(cfg.seed + 1)
    rows, adv_rows = [], []
    base = _tv(target.score_fn(process), process, target, cfg, key, cfg.floor_solver, cfg.floor_steps)
    for eps in cfg.eps_values:
        key, k1, k2, k3, k4, k5 = jax.random.split(key, 6)
        pert, eps_meas = make_perturbed_score(target, process, eps, k1, t_min=cfg.t_end,
                                              num_samples=1024, num_times=16)
        tv = _tv(pert, process, target, cfg, k2, cfg.floor_solver, cfg.floor_steps)
        bounds = [float(eps) * v for v in pert.perturbation_bounds()]
        rows.append(dict(eps_target=float(eps), eps_score=float(eps_meas), tv=tv, derivative_bounds=bounds))
        bar.update(1)
        if cfg.adv_steps > 0:
            adv, history = _adversarial(pert, target, process, cfg, k3)
            adv_meas = measure_score_error(adv, target, process, key=k4, num_times=16, num_samples=1024,
                                           t_min=cfg.t_end)
            tv_adv = _tv(adv, process, target, cfg, k5, cfg.floor_solver, cfg.floor_steps)
            adv_rows.append(dict(eps_target=float(eps), eps_score=float(adv_meas), tv=tv_adv,
                                 ascent_tv=history, derivative_bounds=[float(eps) * v for v in adv.perturbation_bounds()]))
            bar.update(1)

    def fit(rs):
        ok = [r for r in rs if _usable(r)]
        return _fit_exponent([r["eps_score"] for r in ok], [r["tv"]["value"] for r in ok],
                             [r["tv"]["stderr"] for r in ok])

    smooth_fit = fit(rows)
    adversarial = {"rows": adv_rows, "fit": fit(adv_rows), "steps": cfg.adv_steps,
                   "samples": cfg.adv_samples, "lr": cfg.adv_lr} if adv_rows else None
    return ScoreFloor(rows=rows, exact_score_tv=base, slope=smooth_fit["slope"], fit=smooth_fit,
                      adversarial=adversarial, solver=cfg.floor_solver, steps=cfg.floor_steps, dim=cfg.dim,
                      h_max=_h_max(process, cfg.floor_solver, cfg.floor_steps, cfg))


def _adversarial(pert, target, process, cfg, key):
    """Gradient ascent (Adam) on the exact-density TV over the amplitudes ``a`` of ``pert``'s
    Fourier features, projected after every step back to the prescribed size
    ``time-averaged E_{p_t} ||u||^2 = 1`` (so eps_score stays ``pert.eps``). The frequencies are
    fixed, so the derivative bounds ``sum_f ||a_f|| ||w_f||^k`` stay of the same order. The TV is
    the Monte Carlo estimate on ``adv_samples`` fixed draws (common random numbers); the final
    perturbation is evaluated by the caller on fresh draws, so the ascent's selection bias does not
    enter the reported TV. Returns (perturbed score, TV along the ascent)."""
    import equinox as eqx
    import optax

    from jaxode_diffusion.analysis.density import flow_and_jacobian
    from jaxode_diffusion.sampling.core import get_solver, make_times

    solver = get_solver(cfg.floor_solver)
    ts = make_times(process, num_steps=cfg.floor_steps, t_end=cfg.t_end, grid=cfg.grid)
    p_start, ref = target.marginal(process, ts[0]), target.marginal(process, ts[-1])
    kx, kg = jax.random.split(key)
    x = p_start.sample(kx, int(cfg.adv_samples))
    log_p0 = p_start.log_prob(x)
    # G = time-average of E_{p_t}[phi phi^T], phi = sin(x W^T + b): then the perturbation's
    # time-averaged E||u||^2 is tr(A^T G A) (the normaliser of theory.make_perturbed_score,
    # midpoint rule in t over the same range).
    t_mid = cfg.t_end + (jnp.arange(16) + 0.5) / 16 * (process.default_t_start - cfg.t_end)
    gram = 0.0
    for t, kt in zip(t_mid, jax.random.split(kg, 16), strict=True):
        feats = jnp.sin(target.sample_marginal(kt, 1024, process, t) @ pert.w.T + pert.b)
        gram = gram + feats.T @ feats / (1024 * 16)

    def project(a):
        return a / jnp.sqrt(jnp.trace(a.T @ gram @ a))

    @eqx.filter_jit
    def neg_tv(a, p):
        sf = eqx.tree_at(lambda q: q.a, p, project(a))
        y, jac = flow_and_jacobian(sf, process, x, ts, solver)
        log_q = log_p0 - jnp.linalg.slogdet(jac)[1]
        return -jnp.mean(-jnp.expm1(jnp.minimum(ref.log_prob(y) - log_q, 0.0)))

    grad_fn = eqx.filter_jit(jax.value_and_grad(neg_tv))
    opt = optax.adam(cfg.adv_lr)
    a = pert.a
    state = opt.init(a)
    history = []
    for _ in range(int(cfg.adv_steps)):
        val, g = grad_fn(a, pert)
        history.append(-float(val))
        upd, state = opt.update(g, state, a)
        a = project(optax.apply_updates(a, upd))
    history.append(-float(neg_tv(a, pert)))
    return eqx.tree_at(lambda q: q.a, pert, project(a)), history


def dimension_target(d: int, seed: int = 0):
    """Section 3's family: :meth:`GaussianMixture.dimension_family` (4 components, means and
    anisotropic covariances in all d directions, per-coordinate variance 1), so the problem
    really gets harder with d (the former two Gaussians at +-2 e_1 were one-dimensional)."""
    from jaxode_diffusion.models.mixture import GaussianMixture

    return GaussianMixture.dimension_family(int(d), seed=seed)


def _fit_exponent(x, tv, se, *, confidence: float = 0.95, num_boot: int = 2000, seed: int = 0) -> dict:
    """Slope of log TV against log x with a confidence interval.

    The interval combines the two sources of uncertainty: Monte Carlo error of each TV (parametric
    bootstrap, TV_i ~ N(TV_i, se_i), refit; 95%) and departure from a power law (the range of the
    local slopes between consecutive points, sorted by x). The reported interval is the union of
    the two. (An OLS t-interval was tried first: with 3 points it has one degree of freedom and a
    t quantile of 12.7, so it says nothing.) Fewer than 2 usable points: slope NaN.
    """
    x, tv, se = (np.asarray(v, float) for v in (x, tv, se))
    n = x.size
    out = dict(slope=float("nan"), low=float("nan"), high=float("nan"), points=int(n))
    if n < 2:
        return out
    lx, ly = np.log(x), np.log(tv)
    slope = float(np.polyfit(lx, ly, 1)[0])
    rng = np.random.default_rng(seed)
    boot = []
    for _ in range(num_boot):
        yb = tv + se * rng.standard_normal(n)
        if np.all(yb > 0):
            boot.append(np.polyfit(lx, np.log(yb), 1)[0])
    a = 0.5 * (1 - confidence)
    lo, hi = (np.quantile(boot, [a, 1 - a]) if len(boot) >= 100 else (-np.inf, np.inf))
    if n >= 3:
        order = np.argsort(lx)
        local = np.diff(ly[order]) / np.diff(lx[order])
        lo, hi = min(lo, float(local.min())), max(hi, float(local.max()))
    out.update(slope=slope, low=float(lo), high=float(hi))
    return out


def _usable(r) -> bool:
    # Within 3 standard errors of 0 is Monte Carlo noise; above 0.5, TV saturates (TV <= 1).
    return 3 * r["tv"]["stderr"] < r["tv"]["value"] < 0.5


def dimension(cfg: StudyConfig, process, bar) -> Dimension:
    """Section 3: (a) TV at a fixed step count (fixed H_max) against d for each order p, with the
    fitted exponent and its interval beside the bound's d^{p+1}; (b) the steps (and H_max) that
    ``dim_solver`` needs to reach TV = ``dim_tv_target`` against d, beside the bound's
    H ~ d^{-(p+1)/p}. Exact-density TV (jacfwd through the sampler: d forward passes and an
    O(d^3) log-determinant per sample); the seconds per TV are recorded to show where it becomes
    too costly."""
    from jaxode_diffusion.sampling.core import get_solver

    keys = _KeyChain(jax.random.PRNGKey(cfg.seed + 2))
    runs = _dimension_fixed_steps(cfg, process, keys, bar)
    fits = _dimension_fits(cfg, runs)
    p_b = get_solver(cfg.dim_solver).order
    need = []
    for d in cfg.dims:
        need.append(_steps_needed(cfg, process, d, runs.probes, keys))
        bar.update(1)
    okb = [r for r in need if r["reached"]]
    fit_b = _fit_exponent([r["dim"] for r in okb], [r["h_lambda_needed"] for r in okb],
                          [0.0 * r["h_lambda_needed"] for r in okb])
    rows = runs.rows
    main_fit = next((f for f in fits if f["solver"] == cfg.dim_solver), None)
    main = [r for r in rows if r["solver"] == cfg.dim_solver and (main_fit is None or r["steps"] == main_fit["steps"])]
    cost = [dict(dim=r["dim"], seconds=r["seconds"]) for r in main] or \
        [dict(dim=r["dim"], seconds=r["seconds"]) for r in rows if r["order"] == cfg.dim_orders[-1]]
    return Dimension(rows=main, all_rows=rows, fits=fits,
                     slope=main_fit["slope"] if main_fit else float("nan"), solver=cfg.dim_solver,
                     steps=main_fit["steps"] if main_fit else cfg.dim_steps, needed=need, need_fit=fit_b,
                     need_order=int(p_b), tv_target=cfg.dim_tv_target, tv_samples=cfg.tv_samples, cost=cost,
                     family="GaussianMixture.dimension_family(d, num_components=4, seed)")


class _KeyChain:
    """The section's PRNG key, split once per TV in the order the TVs run."""

    def __init__(self, key):
        self.key = key

    def next(self):
        self.key, sub = jax.random.split(self.key)
        return sub


@dataclass
class _FixedStepRuns:
    """Section 3(a)'s runs: ``rows`` (one per order and d, at the order's final step count),
    ``probes`` (every run, also those at step counts then raised), the step count per order and the
    count it was raised from (``None``: not raised)."""

    rows: list
    probes: list
    steps_used: dict
    raised: dict


def _dimension_probe(cfg, process, keys: _KeyChain, d, p, solver, n) -> dict:
    """One exact-density TV of ``solver`` with ``n`` steps on the dimension family at ``d``."""
    target = dimension_target(int(d), cfg.seed)
    sub = keys.next()
    s = time.time()
    tv = _tv(target.score_fn(process), process, target, cfg, sub, solver, n)
    return dict(dim=int(d), order=int(p), solver=solver, steps=n, tv=tv,
                h_max=_h_max(process, solver, n, cfg), seconds=time.time() - s)


def _dimension_fixed_steps(cfg, process, keys: _KeyChain, bar) -> _FixedStepRuns:
    """Section 3(a): for each order, TV at every d with one step count (one H_max for every d)."""
    steps_by_order = dict(cfg.dim_steps_by_order)
    rows, probes = [], []
    steps_used, raised = {}, {}
    d_top = max(int(d) for d in cfg.dims)
    for p in cfg.dim_orders:
        solver = f"x-t:{ORDERS[p]}"
        n = int(steps_by_order[p])

        def run(d, n, p=p, solver=solver):
            probes.append(_dimension_probe(cfg, process, keys, d, p, solver, n))
            return probes[-1]

        # The step count is doubled from the preset's until TV at the largest d lies below
        # dim_tv_high, so that the fit is not cut off by TV's saturation at 1.
        top = run(d_top, n)
        first_n = n
        while top["tv"]["value"] > cfg.dim_tv_high and 2 * n <= cfg.dim_max_steps:
            n *= 2
            top = run(d_top, n)
        steps_used[p], raised[p] = n, (first_n if n != first_n else None)
        for d in cfg.dims:
            rows.append(top if int(d) == d_top else run(d, n))
            bar.update(1)
    return _FixedStepRuns(rows, probes, steps_used, raised)


def _dimension_fits(cfg, runs: _FixedStepRuns) -> list[dict]:
    """Section 3(a): the fitted exponent of TV ~ d^a per order, on its usable rows."""
    fits = []
    for p in cfg.dim_orders:
        ok = [r for r in runs.rows if r["order"] == p and _usable(r)]
        fit = _fit_exponent([r["dim"] for r in ok], [r["tv"]["value"] for r in ok], [r["tv"]["stderr"] for r in ok])
        fits.append(dict(order=int(p), solver=f"x-t:{ORDERS[p]}", steps=int(runs.steps_used[p]),
                         steps_raised_from=runs.raised[p], bound_exponent=p + 1,
                         excluded=[r["dim"] for r in runs.rows if r["order"] == p and not _usable(r)], **fit))
    return fits


def _steps_needed(cfg, process, d, probes, keys: _KeyChain) -> dict:
    """Section 3(b) at one d: the steps ``dim_solver`` needs to reach TV = ``dim_tv_target``, by
    doubling / halving from ``dim_steps`` (reusing (a)'s runs) and log-log interpolation."""
    target = dimension_target(int(d), cfg.seed)
    sf = target.score_fn(process)
    tried = {}

    def tv_at(n):
        if n not in tried:
            reuse = [r for r in probes if r["dim"] == d and r["solver"] == cfg.dim_solver and r["steps"] == n]
            if reuse:
                tried[n] = reuse[0]["tv"]
            else:
                tried[n] = _tv(sf, process, target, cfg, keys.next(), cfg.dim_solver, n)
        return tried[n]["value"]

    s = time.time()
    n = int(cfg.dim_steps)
    if tv_at(n) > cfg.dim_tv_target:
        while tv_at(n) > cfg.dim_tv_target and 2 * n <= cfg.dim_max_steps:
            n *= 2
        lo_n, hi_n = n // 2, n
    else:
        while tv_at(n) <= cfg.dim_tv_target and n // 2 >= 1:
            n //= 2
        lo_n, hi_n = n, 2 * n
    reached = lo_n in tried and hi_n in tried and tv_at(hi_n) <= cfg.dim_tv_target < tv_at(lo_n)
    if reached:
        # log-log interpolation of TV between the bracketing step counts
        a, b = math.log(tv_at(lo_n)), math.log(max(tv_at(hi_n), 1e-300))
        frac = (a - math.log(cfg.dim_tv_target)) / (a - b)
        n_star = math.exp(math.log(lo_n) + frac * (math.log(hi_n) - math.log(lo_n)))
    else:
        n_star = float("nan")
    lam0, lam1 = float(process.lam(process.default_t_start)), float(process.lam(cfg.t_end))
    return dict(dim=int(d), steps_needed=n_star, h_lambda_needed=abs(lam1 - lam0) / n_star,
                tried={str(k): v for k, v in sorted(tried.items())}, reached=bool(reached),
                seconds=time.time() - s)


def _bound_family(name: str, tv, terms, x: list, x_name: str) -> dict:
    """The theorem's two terms (broadcast to the runs of ``tv``) with NNLS-fitted constants beside
    the measured TV, as one entry of ``bound()["families"]``."""
    from jaxode_diffusion.analysis.theory import fit_bound_constants

    score = np.broadcast_to(np.asarray(terms.score, float), tv.shape).copy()
    disc = np.broadcast_to(np.asarray(terms.discretization, float), tv.shape).copy()
    bf = fit_bound_constants(tv, score, disc)
    return dict(name=name, c_score=bf.c_score, c_disc=bf.c_disc, measured=tv.tolist(),
                fitted=np.asarray(bf.fitted).tolist(), term_score=score.tolist(), term_disc=disc.tolist(),
                x=x, x_name=x_name)


def bound(disc: Discretisation | None, floor: ScoreFloor | None, dims: Dimension | None) -> Bound:
    """Theorem terms from measured quantities beside measured TV; constants fitted (NNLS)."""
    from jaxode_diffusion.analysis.theory import bound_terms
    from jaxode_diffusion.sampling.core import get_solver

    out = Bound(families=[])
    # Discretisation runs (exact score: eps = 0), one constant pair per (form, order).
    for fit in disc.fits if disc is not None else []:
        rs = [r for r in disc.rows if r["form"] == fit["form"] and r["order"] == fit["order"]
              and 3 * r["tv"]["stderr"] < r["tv"]["value"] < 0.5]
        if len(rs) < 2:
            continue
        terms = bound_terms(disc.dim, 0.0, np.array([r["h_max"] for r in rs]), fit["order"])
        tv = np.array([r["tv"]["value"] for r in rs])
        out.families.append(_bound_family(f"{fit['form']} p={fit['order']}", tv, terms,
                                          [r["h_max"] for r in rs], "H_max"))
    # Score-error runs: both terms, discretisation at the floor solver's h_max.
    if floor is not None and len(floor.rows) >= 2:
        p = get_solver(floor.solver).order
        eps = np.array([r["eps_score"] for r in floor.rows])
        terms = bound_terms(floor.dim, eps, np.full_like(eps, floor.h_max), p)
        tv = np.array([max(r["tv"]["value"], 1e-12) for r in floor.rows])
        out.families.append(_bound_family(f"score error ({floor.solver}, {floor.steps} steps)", tv,
                                          terms, eps.tolist(), "eps_score"))
    if dims is not None and len(dims.rows) >= 2:
        p = get_solver(dims.solver).order
        d = np.array([r["dim"] for r in dims.rows], float)
        terms = bound_terms(d, 0.0, np.array([r["h_max"] for r in dims.rows]), p)
        tv = np.array([max(r["tv"]["value"], 1e-12) for r in dims.rows])
        out.families.append(_bound_family(f"dimension ({dims.solver}, {dims.steps} steps)", tv, terms,
                                          d.tolist(), "d"))
    return out


def learned(cfg: StudyConfig, process, out_dir: Path, bar) -> Learned:
    from jaxode_diffusion.analysis.score_errors import score_error
    from jaxode_diffusion.training import TrainConfig, train

    target = _target(cfg, 2)
    tcfg = TrainConfig(data="gmm", dim=2, steps=cfg.train_steps, out_dir=str(out_dir / "model"),
                       seed=cfg.seed, progress=False, eval_every=0, ckpt_every=max(cfg.train_steps // 2, 1),
                       process=cfg.process)
    t0 = time.time()
    res = train(tcfg)
    train_s = time.time() - t0
    bar.update(1)
    sf = res.score_fn()
    key = jax.random.PRNGKey(cfg.seed + 3)
    k1, k2, k3, k4 = jax.random.split(key, 4)

    def f32_score(x, t):  # the network is float32; the study's samplers run in float64
        return sf(x.astype(jnp.float32), jnp.asarray(t, jnp.float32)).astype(x.dtype)

    err = score_error(f32_score, target, process, key=k1, t_min=cfg.t_end)
    untrained = score_error(lambda x, t: jnp.zeros_like(x), target, process, key=k1, t_min=cfg.t_end)
    tv_learned = _tv(f32_score, process, target, cfg, k2, cfg.learned_solver, cfg.learned_steps)
    tv_exact = _tv(target.score_fn(process), process, target, cfg, k3, cfg.learned_solver, cfg.learned_steps)
    bar.update(1)
    return Learned(
        train_steps=cfg.train_steps,
        train_seconds=train_s,
        eps_score_sq=float(err.value),
        eps_score_sq_weighted=float(err.weighted),
        zero_score_eps_sq=float(untrained.value),
        tv_learned=tv_learned,
        tv_exact=tv_exact,
        solver=cfg.learned_solver,
        steps=cfg.learned_steps,
        model_dir=str(out_dir / "model"),
        score_fn=f32_score,
    )


def regularity_section(cfg: StudyConfig, process, out_dir: Path, learned_score, bar) -> dict:
    """Section 6: a :class:`ScoreRegularity` per score (exact, and learned when given)."""
    from jaxode_diffusion.analysis.plotting import plot_profile
    from jaxode_diffusion.analysis.regularity import profile

    target = _target(cfg, 2)
    t_grid = np.geomspace(cfg.t_end, process.default_t_start, cfg.regularity_times)
    x0 = target.sample(jax.random.PRNGKey(cfg.seed + 4), cfg.regularity_batch)
    out = {}
    scores = {"exact": target.score_fn(process)}
    if learned_score is not None:
        scores["learned"] = learned_score
    for name, sf in scores.items():
        prof = profile(sf, process, t_grid=t_grid, x_source=x0, key=jax.random.PRNGKey(cfg.seed + 5))
        png = out_dir / f"regularity_{name}.png"
        plot_profile(prof, png, title=f"{name} score: derivative norms")
        out[name] = ScoreRegularity(profile=prof.to_dict(), figure=png.name, **_bounded_verdict(prof))
        bar.update(1)
    return out


def _bounded_verdict(prof) -> dict:
    """Do sigma-weighted norms stay bounded down to t_end? Compare the smallest-t values with the
    largest over the grid: bounded if the value at t_end is within 10x of the grid's median and
    does not grow monotonically over the last three grid points by more than 3x in total.
    ``prof``: a :class:`~jaxode_diffusion.analysis.regularity.RegularityProfile`."""
    res = {}
    for c in prof.curves:
        vals = np.asarray(c.weighted.max, float)
        if vals.size < 3 or not np.all(np.isfinite(vals)):
            continue
        first3 = vals[:3]  # increasing t: the first entries are nearest t_end
        growth = float(first3[0] / max(first3[2], 1e-300))
        ok = bool(vals[0] <= 10 * np.median(vals) and growth <= 3.0)
        res[f"{c.source}/{c.quantity}"] = dict(at_t_end=float(vals[0]), median=float(np.median(vals)),
                                               max=float(vals.max()), growth_last3=growth, bounded=ok)
    return {"checks": res, "bounded": bool(res) and all(v["bounded"] for v in res.values())}


def run_study(cfg: StudyConfig) -> dict:
    """Run every section, write ``metrics.json``, ``config.json``, figures and ``report.md``.

    Returns:
        The metrics (the content of ``metrics.json``, before non-finite numbers become ``null``).
    """
    jax.config.update("jax_enable_x64", True)
    from jaxode_diffusion.processes import get_process
    from jaxode_diffusion.study.report import write_report

    out_dir = Path(cfg.out)
    out_dir.mkdir(parents=True, exist_ok=True)
    (out_dir / "config.json").write_text(dumps_json(cfg.to_dict(), indent=2))
    process = get_process(cfg.process)
    t0 = time.time()
    results = StudyResults(config=cfg.to_dict())
    with tqdm(total=_planned_runs(cfg), desc="study", unit="run") as bar:
        _run_sections(cfg, process, out_dir, bar, results)
    results.timings["total"] = time.time() - t0
    results.machine = _machine()
    metrics = results.to_dict()
    (out_dir / "metrics.json").write_text(dumps_json(metrics, indent=1))
    write_report(metrics, out_dir)
    return metrics


def _planned_runs(cfg: StudyConfig) -> int:
    """The progress bar's total (section 1's extension runs are added as they happen)."""
    do_learned = cfg.learned and cfg.wants("learned")
    do_regularity = cfg.regularity and cfg.wants("regularity")
    return ((len(cfg.forms) * len(ORDERS) * len(cfg.step_counts) if cfg.wants("discretisation") else 0)
            + (len(cfg.eps_values) * (2 if cfg.adv_steps > 0 else 1) if cfg.wants("score_floor") else 0)
            + (len(cfg.dims) * (len(cfg.dim_orders) + 1) if cfg.wants("dimension") else 0)
            + (2 if do_learned else 0) + ((2 if do_learned else 1) if do_regularity else 0))


def _run_sections(cfg: StudyConfig, process, out_dir: Path, bar, results: StudyResults) -> None:
    """Run the sections ``cfg`` asks for, in order, into ``results`` (with their timings)."""
    def timed(name, fn):
        bar.set_postfix_str(name)
        s = time.time()
        setattr(results, name, fn())
        results.timings[name] = time.time() - s

    sections = (("discretisation", discretisation), ("score_floor", score_floor), ("dimension", dimension))
    for name, fn in sections:
        if cfg.wants(name):
            timed(name, lambda fn=fn: fn(cfg, process, bar))
    results.bound = bound(results.discretisation, results.score_floor, results.dimension)
    if cfg.learned and cfg.wants("learned"):
        timed("learned", lambda: learned(cfg, process, out_dir, bar))
    if cfg.regularity and cfg.wants("regularity"):
        learned_score = results.learned.score_fn if results.learned is not None else None
        timed("regularity", lambda: regularity_section(cfg, process, out_dir, learned_score, bar))


def _machine() -> dict:
    import os
    import platform

    dev = jax.devices()[0]
    return {"platform": platform.platform(), "cpus": os.cpu_count(), "jax": jax.__version__,
            "device": f"{dev.platform} ({dev.device_kind})", "date": time.strftime("%Y-%m-%d")}
