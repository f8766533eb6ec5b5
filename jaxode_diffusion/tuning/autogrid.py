"""The named grid that suits *your* model: measured on a small pilot batch, not read from a table.

Which named grid (``uniform``, ``log_snr``, ``edm``, ``quadratic``) is best for a solver depends on
the model and the step count, and the table default
(:func:`~jaxode_diffusion.sampling.defaults.default_grid_for`) can be far from the best (measurements:
``benchmarks/README.md``). :func:`choose_grid` measures instead: it solves a pilot batch
with the solver on every candidate grid at the requested number of steps and compares the end
points with a tight solve of the same batch (RK4 in the exponential ``x0-lambda`` form on many
log-SNR steps, its own error estimated by halving the steps).

Candidates are compared on two measures against the reference: the energy distance between the
candidate's pilot samples and the reference's (a distribution-level distance with no bandwidth or
random projections to choose, cheap at pilot sizes in any dimension) and the end-point RMSE. Both
come with a paired bootstrap standard error over the pilot draws, and the table's grid is kept
unless a candidate's energy distance is lower beyond ``margin`` standard errors of the paired
difference while its RMSE is not higher beyond the same margin.

:func:`plan_pilot` sizes the pilot for ``jaxode-diffusion sample``: the pilot's cost is estimated
from one measured score evaluation (:func:`seconds_per_draw_evaluation`) and compared with the
sampling asked for; when even the smallest pilot does not fit, the table's grid is used.

Example:
    >>> import jax, jaxode_diffusion as jd
    >>> from jaxode_diffusion.tuning.autogrid import choose_grid
    >>> vp = jd.VPLinear()
    >>> gm = jd.GaussianMixture.random(jax.random.PRNGKey(0), 2, 2)
    >>> x = vp.prior_sample(jax.random.PRNGKey(1), (32, 2))
    >>> c = choose_grid(gm.score_fn(vp), vp, x, "dpmpp_2m", 6)
    >>> c.grid in jd.sampling.GRID_NAMES and c.baseline == jd.sampling.default_grid_for("dpmpp_2m", vp)
    True
"""

from __future__ import annotations

import dataclasses
import math
import time

import numpy as np

from jaxode_diffusion.analysis.distances import energy_distance
from jaxode_diffusion.sampling.core import make_times, solve
from jaxode_diffusion.sampling.defaults import default_grid_for
from jaxode_diffusion.sampling.grids import GRID_NAMES, check_num_steps
from jaxode_diffusion.solvers.registry import get_solver
from jaxode_diffusion.utils.checks import check_finite_score

__all__ = ["GridChoice", "choose_grid", "PilotPlan", "plan_pilot", "seconds_per_draw_evaluation",
           "evaluations_per_draw"]

#: Score evaluations per step of the pilot's reference (RK4) and its half-step check: ``4 m + 4 m / 2``.
_REFERENCE_EVALS_PER_STEP = 6


@dataclasses.dataclass(frozen=True)
class GridChoice:
    """The result of :func:`choose_grid`.

    Attributes:
        grid: the chosen grid.
        errors: pilot end-point RMSE against the reference, per candidate grid (``inf`` if not finite).
        reference_error: estimated RMSE of the reference itself (its difference to the half-step
            reference / 15, Richardson for a 4th-order method).
        reference_steps: steps of the reference used.
        solver: the solver's name; num_steps: its steps; num_pilot: pilot batch size.
        ts: the chosen grid's times (NumPy, float64) when it is an error grid
            (``error_grids=True``), else ``None`` (a named grid: ``make_times(..., grid=grid)``).
        distances: energy distance between each candidate's pilot samples and the reference's
            (``inf`` if not finite).
        distance_se, error_se: bootstrap standard errors of ``distances`` and ``errors``.
        baseline: the grid kept unless beaten (the table's grid for the solver).
        reason: one sentence on why ``grid`` was chosen.
    """

    grid: str
    errors: dict
    reference_error: float
    reference_steps: int
    solver: str
    num_steps: int
    num_pilot: int
    ts: object = None
    distances: dict = dataclasses.field(default_factory=dict)
    distance_se: dict = dataclasses.field(default_factory=dict)
    error_se: dict = dataclasses.field(default_factory=dict)
    baseline: str = ""
    reason: str = ""

    def to_json(self) -> dict:
        out = {k: (dict(v) if isinstance(v, dict) else v) for k, v in dataclasses.asdict(self).items()}
        out["ts"] = None if self.ts is None else [float(t) for t in self.ts]
        return out

    def summary(self) -> str:
        def one(g):
            d, e = self.distances.get(g), self.errors[g]
            ds = f"energy {d:.3g} +- {self.distance_se.get(g, float('nan')):.2g}, " if d is not None else ""
            return f"{g}: {ds}RMSE {e:.3g} +- {self.error_se.get(g, float('nan')):.2g}"

        rows = "; ".join(one(g) for g in self.errors)
        return (f"grid {self.grid} ({self.reason}) [measured on {self.num_pilot} pilot draws, {self.solver} at "
                f"{self.num_steps} steps, against a tight solve: {rows}; reference error {self.reference_error:.1g}]")


@dataclasses.dataclass(frozen=True)
class PilotPlan:
    """The result of :func:`plan_pilot`: whether ``--grid auto`` runs a pilot, and its size.

    Attributes:
        run: ``True`` when a pilot fits the budget.
        num_pilot: pilot draws; reference_steps: steps of its RK4 reference (both the largest that fit,
            or the smallest considered when none fits).
        pilot_seconds: estimated pilot time (score evaluations only, compilation not included).
        sample_seconds: estimated time of the sampling asked for, on the same basis.
        budget_seconds: the time allowed for the pilot.
        evaluations: score evaluations per pilot draw (candidate solves and reference pair).
    """

    run: bool
    num_pilot: int
    reference_steps: int
    pilot_seconds: float
    sample_seconds: float
    budget_seconds: float
    evaluations: int

    def message(self, solver, num_steps: int, num_grids: int, table_grid: str) -> str:
        """One line for the user: what the pilot does and how long it should take, or why there is none."""
        if self.run:
            return (f"--grid auto: measuring the grid for {solver} at {num_steps} steps on {self.num_pilot} pilot "
                    f"draws ({num_grids} candidate grids and a {self.reference_steps}-step RK4 reference), about "
                    f"{self.pilot_seconds:.1f} s plus compilation (the sampling asked for: about "
                    f"{self.sample_seconds:.1f} s); --grid table skips this")
        return (f"grid {table_grid} (the measured table's grid for {solver}; no pilot: the smallest would take "
                f"about {self.pilot_seconds:.1f} s, over its budget of {self.budget_seconds:.1f} s next to about "
                f"{self.sample_seconds:.1f} s of sampling asked for)")


def evaluations_per_draw(solver, num_steps: int) -> int:
    """Score evaluations per draw of ``solver`` over ``num_steps`` steps (its stages per step x steps).

    Example:
        >>> evaluations_per_draw("x0-lambda:rk4", 5), evaluations_per_draw("dpmpp_2m", 5)
        (20, 5)
    """
    stages = len(getattr(get_solver(solver), "stage_fractions", ()) or (0,))
    return max(1, stages) * int(num_steps)


def plan_pilot(seconds_per_evaluation: float, *, num_samples: int, solver, num_steps: int,
               num_grids: int = len(GRID_NAMES), share: float = 1.0, floor_seconds: float = 3.0,
               pilot_sizes=(64, 32, 16), reference_steps=None) -> PilotPlan:
    """Size the ``--grid auto`` pilot so that it costs at most ``share`` of the sampling asked for.

    Costs are counted in score evaluations of one draw, at ``seconds_per_evaluation`` each. The
    sampling asked for costs ``num_samples x evaluations_per_draw(solver, num_steps)``; a pilot of
    ``n`` draws with a reference of ``m`` steps costs ``n x (num_grids x evaluations_per_draw + 6 m)``
    (the reference is RK4 on ``m`` and ``m / 2`` steps). The budget is
    ``max(share x sampling, floor_seconds)``. Among ``pilot_sizes`` and references of ``m0``,
    ``m0 / 2`` and ``m0 / 4`` steps (``m0 = reference_steps or max(160, 16 num_steps)``, none below
    ``max(4 num_steps, 32)``), the most expensive pilot that fits is chosen.

    Args:
        seconds_per_evaluation: measured time of one score evaluation of one draw
            (:func:`seconds_per_draw_evaluation`).
        num_samples, solver, num_steps: the sampling asked for.
        num_grids: candidate grids; share, floor_seconds: the budget; pilot_sizes: pilot sizes tried.
        reference_steps: the largest reference considered (``choose_grid``'s default without it).

    Returns:
        a :class:`PilotPlan` (``run=False`` when no pilot fits; then its sizes are the smallest).

    Example:
        >>> plan_pilot(1e-3, num_samples=4, solver="dpmpp_2m", num_steps=5).run
        False
        >>> plan_pilot(1e-6, num_samples=4, solver="dpmpp_2m", num_steps=5).num_pilot
        64
    """
    if not (seconds_per_evaluation >= 0 and math.isfinite(seconds_per_evaluation)):
        raise ValueError(f"seconds_per_evaluation must be finite and >= 0, got {seconds_per_evaluation!r}.")
    per_draw = evaluations_per_draw(solver, num_steps)
    sample_s = num_samples * per_draw * seconds_per_evaluation
    budget = max(share * sample_s, floor_seconds)
    m0 = int(reference_steps or max(160, 16 * num_steps))
    low = max(4 * num_steps, 32)
    refs = sorted({m for m in (m0, m0 // 2, m0 // 4) if m >= low} or {m0})
    options = sorted((n * (num_grids * per_draw + _REFERENCE_EVALS_PER_STEP * m), n, m)
                     for n in pilot_sizes for m in refs)
    fits = [o for o in options if o[0] * seconds_per_evaluation <= budget]
    evals, n, m = fits[-1] if fits else options[0]
    return PilotPlan(run=bool(fits), num_pilot=n, reference_steps=m, pilot_seconds=evals * seconds_per_evaluation,
                     sample_seconds=sample_s, budget_seconds=budget, evaluations=evals // n)


def seconds_per_draw_evaluation(score_fn, x, *, t=0.5, cond=None, repeats: int = 2) -> float:
    """Measured seconds of one score evaluation of one draw: ``score_fn`` on the batch ``x``, compiled
    first (compilation not counted), the fastest of ``repeats`` calls divided by the batch size.

    Example:
        >>> import jax, jaxode_diffusion as jd
        >>> gm = jd.GaussianMixture.random(jax.random.PRNGKey(0), 2, 2)
        >>> seconds_per_draw_evaluation(gm.score_fn(jd.VPLinear()), jax.numpy.ones((8, 2))) > 0
        True
    """
    import equinox as eqx
    import jax
    import jax.numpy as jnp

    # The model goes in as an argument: closed over, its weights would be compiled in as constants.
    args = (score_fn, x, jnp.asarray(t, x.dtype)) + (() if cond is None else (cond,))
    f = eqx.filter_jit(lambda fn, *a: fn(*a))
    jax.block_until_ready(f(*args))
    best = math.inf
    for _ in range(max(1, repeats)):
        t0 = time.perf_counter()
        jax.block_until_ready(f(*args))
        best = min(best, time.perf_counter() - t0)
    return max(best, 1e-12) / x.shape[0]


def _pairwise(a, b):
    """Euclidean distances between the rows of ``a`` and ``b`` (float64)."""
    d2 = (a * a).sum(1)[:, None] + (b * b).sum(1)[None, :] - 2.0 * a @ b.T
    return np.sqrt(np.maximum(d2, 0.0))


def _bootstrap_weights(n: int, num_bootstrap: int, seed: int = 0):
    """Row 0: the plain average (the point estimate); rows 1..: bootstrap resampling weights."""
    counts = np.random.default_rng(seed).multinomial(n, np.full(n, 1.0 / n), size=num_bootstrap)
    return np.vstack([np.ones(n), counts]).astype(np.float64) / n


def _measures(samples: dict, ref, weights):
    """Per candidate: (energy distances, RMSEs) to ``ref`` under every row of ``weights`` (``inf`` when
    the candidate has non-finite samples). Energy distance is the V-statistic of
    :func:`~jaxode_diffusion.analysis.distances.energy_distance`, on the weighted empirical laws."""
    n = ref.shape[0]
    r = np.asarray(ref, np.float64).reshape(n, -1)
    rr = np.einsum("bi,ij,bj->b", weights, _pairwise(r, r), weights)
    out = {}
    for g, y in samples.items():
        y = np.asarray(y, np.float64).reshape(n, -1)
        if not np.all(np.isfinite(y)):
            out[g] = (np.full(len(weights), np.inf), np.full(len(weights), np.inf))
            continue
        yy = np.einsum("bi,ij,bj->b", weights, _pairwise(y, y), weights)
        yr = np.einsum("bi,ij,bj->b", weights, _pairwise(y, r), weights)
        err = np.sqrt(weights @ np.mean((y - r) ** 2, axis=1))
        out[g] = (np.maximum(2.0 * yr - yy - rr, 0.0), err)
    return out


def _select(measures: dict, baseline: str, margin: float):
    """``(grid, reason)``: ``baseline`` unless a candidate's energy distance is lower beyond ``margin``
    paired bootstrap standard errors and its RMSE is not higher beyond the same margin."""
    finite = [g for g, (d, _) in measures.items() if math.isfinite(d[0])]
    if baseline not in finite:
        best = min(finite, key=lambda g: measures[g][0][0])
        return best, f"lowest energy distance; the table's grid {baseline} was not usable"
    d0, e0 = measures[baseline]
    winners, closest = [], None
    for g in finite:
        if g == baseline:
            continue
        dd, de = measures[g][0] - d0, measures[g][1] - e0
        sd, se = float(np.std(dd[1:], ddof=1)), float(np.std(de[1:], ddof=1))
        if closest is None or dd[0] + margin * sd < closest[1] + margin * closest[2]:
            closest = (g, float(dd[0]), sd)
        if dd[0] + margin * sd < 0 and de[0] <= margin * se:
            winners.append((float(measures[g][0][0]), g, float(dd[0]), sd))
    if not winners:
        near = "" if closest is None else f"; closest: {closest[0]}, {closest[1]:+.2g} +- {closest[2]:.2g}"
        return baseline, (f"the table's grid: no candidate's energy distance was lower by more than {margin:g} "
                          f"paired standard errors{near}")
    _, g, dd, sd = min(winners)
    return g, (f"energy distance lower than the table's {baseline} by {-dd:.2g} +- {sd:.2g} (beyond {margin:g} "
               f"paired standard errors), RMSE not higher beyond them")


def _solve_candidates(score_fn, process, x_pilot, solver, num_steps, grids, times_kw, kw, error_grids, progress):
    """End points of ``solver`` on every candidate grid, and the error grids' times."""
    samples, error_ts = {}, {}
    for g in grids:
        sol = solve(score_fn, process, x_pilot, make_times(process, num_steps=num_steps, grid=g, **times_kw),
                    solver, **kw)
        samples[g] = sol.samples
        progress(int(sol.nfe))
    if error_grids:
        from jaxode_diffusion.sampling.core import Conditioned
        from jaxode_diffusion.tuning.error_grids import error_grid_candidates

        sf = score_fn if kw["cond"] is None else Conditioned(score_fn, kw["cond"])
        error_ts = error_grid_candidates(sf, process, x_pilot, solver, num_steps, **times_kw)
        for name, ts in error_ts.items():
            samples[name] = solve(score_fn, process, x_pilot, ts.astype(x_pilot.dtype), solver, **kw).samples
    return samples, error_ts


def _reference(score_fn, process, x_pilot, samples, m, max_steps, times_kw, kw, progress):
    """``(reference end points, its estimated RMSE, its steps)``: RK4 in ``x0-lambda`` on ``m`` log-SNR
    steps, doubled until its error (vs ``m / 2``) is below a tenth of the best candidate's RMSE."""
    def run(steps):
        sol = solve(score_fn, process, x_pilot, make_times(process, num_steps=steps, grid="log_snr", **times_kw),
                    "x0-lambda:rk4", **kw)
        progress(int(sol.nfe))
        return sol.samples

    half = run(m // 2)
    while True:
        ref = run(m)
        ref_err = _rmse(ref, half) / 15.0
        best = min(_rmse(y, ref) for y in samples.values())
        if not math.isfinite(best) or ref_err <= 0.1 * best or 2 * m > max_steps:
            return ref, ref_err, m
        half, m = ref, 2 * m


def _rmse(a, b) -> float:
    v = float(np.sqrt(np.mean((np.asarray(a, np.float64) - np.asarray(b, np.float64)) ** 2)))
    return v if math.isfinite(v) else float("inf")


def choose_grid(score_fn, process, x_pilot, solver, num_steps, *, grids=GRID_NAMES, t_start=None, t_end=None,
                cond=None, reference_steps=None, max_reference_steps=4096, error_grids=False, baseline=None,
                margin=2.0, num_bootstrap=200, progress=None) -> GridChoice:
    """Choose the grid for ``solver`` at ``num_steps`` on this model: the table's grid unless beaten on the pilot.

    Args:
        score_fn: the model's score ``score_fn(x, t)`` (``score_fn(x, t, cond)`` with ``cond``).
        process: its forward process.
        x_pilot: pilot draws of the prior, shaped ``(n, *event_shape)`` (use draws independent of the
            ones you will sample from).
        solver, num_steps: the solver (name or object) the grid is for and its number of steps.
        grids: candidate named grids (default all of :data:`~jaxode_diffusion.sampling.grids.GRID_NAMES`).
        t_start, t_end: as in :func:`~jaxode_diffusion.sampling.sample`.
        cond: conditioning passed to ``score_fn`` (e.g. a guided class label).
        reference_steps: steps of the reference (default ``max(160, 16 * num_steps)``); doubled
            until its estimated error is below a tenth of the best candidate's RMSE (or
            ``max_reference_steps`` is reached; then ``reference_error`` says how far it got).
        error_grids: also rank grids placed by the model's measured local error, built from the same
            pilot draws (:func:`~jaxode_diffusion.tuning.error_grids.error_grid_candidates`); the choice
            then comes with its times in ``ts`` (measurements: ``benchmarks/results/error_grid.md``).
        baseline: the grid kept unless beaten (default ``default_grid_for(solver, process)``).
        margin: paired bootstrap standard errors a candidate must beat the baseline by.
        num_bootstrap: bootstrap resamples of the pilot draws.
        progress: called with the score evaluations per draw of each finished solve (a progress bar).

    Returns:
        a :class:`GridChoice` (energy distances and RMSEs with standard errors, and the reason).

    Raises:
        ValueError: unknown grid names, an empty ``grids``, a bad ``num_steps`` or ``x_pilot``, NaN/inf
            pilot draws or a NaN/inf score at ``t_start`` (named before any solve), or when
            the solver gives non-finite samples on every candidate grid (the message lists the errors).
    """
    num_steps = check_num_steps(num_steps)
    grids = tuple(grids)
    bad = [g for g in grids if g not in GRID_NAMES]
    if not grids or bad:
        raise ValueError(f"grids={grids!r}: choose among {GRID_NAMES} (at least one).")
    if x_pilot.ndim < 2 or x_pilot.shape[0] < 2:
        raise ValueError(f"x_pilot: need a batch of at least 2 draws shaped (n, *event_shape), got {x_pilot.shape}.")
    # NaN draws or a NaN score would otherwise surface as a reference "needing more steps".
    bound = score_fn if cond is None else (lambda x, t: score_fn(x, t, cond))
    check_finite_score(bound, x_pilot, process.default_t_start if t_start is None else t_start, name="x_pilot",
                       prefix="choose_grid: ")
    progress = progress or (lambda n: None)
    times_kw, kw = dict(t_start=t_start, t_end=t_end), dict(cond=cond, throw=False)
    samples, error_ts = _solve_candidates(score_fn, process, x_pilot, solver, num_steps, grids, times_kw, kw,
                                          error_grids, progress)
    m = int(reference_steps or max(160, 16 * num_steps))
    ref, ref_err, m = _reference(score_fn, process, x_pilot, samples, m, max_reference_steps, times_kw, kw, progress)
    measures = _measures(samples, ref, _bootstrap_weights(x_pilot.shape[0], max(2, int(num_bootstrap))))
    errors = {g: float(e[0]) for g, (_, e) in measures.items()}
    if not any(math.isfinite(e) for e in errors.values()):
        raise ValueError(f"choose_grid: {solver!r} at {num_steps} steps gave non-finite samples on every grid "
                         f"({errors}); try more steps or another solver.")
    base = baseline or default_grid_for(solver, process)
    grid, reason = _select(measures, base, float(margin))
    return GridChoice(
        grid=grid, errors=errors, reference_error=ref_err, reference_steps=m,
        solver=str(getattr(solver, "name", solver)), num_steps=num_steps, num_pilot=int(x_pilot.shape[0]),
        ts=error_ts.get(grid), distances={g: float(d[0]) for g, (d, _) in measures.items()},
        distance_se={g: _se(d) for g, (d, _) in measures.items()},
        error_se={g: _se(e) for g, (_, e) in measures.items()}, baseline=base, reason=reason)


def _se(boot) -> float:
    return float(np.std(boot[1:], ddof=1)) if math.isfinite(boot[0]) else float("inf")
