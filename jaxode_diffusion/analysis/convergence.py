"""Empirical convergence orders: the one home of order fitting.

* :func:`fit_order`: least-squares slope of log error against log step size;
* :func:`convergence_study`: errors for a list of step counts against the reference and the
  fitted order (slope of log error vs log H_max);
* :func:`estimate_order`: the order from per-sample errors measured with common random numbers
  at several step counts, with a bootstrap interval, over the window where the local slopes have
  stopped changing -- or an honest "not asymptotic" with the measured slope and the reason;
* :func:`extend_until_asymptotic`: doubles the number of steps until :func:`estimate_order`
  finds such a window, a step budget is spent or the error reaches its floor.

How :func:`estimate_order` decides which step counts carry the order (the method's nominal order
is never used): with common random numbers, ratios of errors between step counts are measured
much more precisely than each error alone. A step count is usable when its mean error lies in
``(max(floor, 3 stderr), ceiling)`` and ``valid`` holds; the local slopes between consecutive
usable step counts of the last contiguous usable run are computed, and the *window* is the
longest run of them, ending at the largest N, that all lie within ``tolerance`` of the last local
slope. The family is called asymptotic when that window holds at least ``min_slopes`` local slopes
and the interval (bootstrap over the samples, jointly for every N, joined with the range of the
local slopes inside the window) is at most ``max_width`` wide. A steady pre-asymptotic decay (two
nearby slopes at small N followed by a jump) is not accepted, because the window must end at the
largest usable N; run enough step counts (:func:`extend_until_asymptotic`) for the slopes to
settle. Why ``min_slopes`` defaults to 3: benchmarks/README.md ("Convergence orders").
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import asdict, dataclass, field, replace

import jax.numpy as jnp
import numpy as np

from jaxode_diffusion.analysis.diffrax_drivers import reference_solve
from jaxode_diffusion.analysis.distances import rmse
from jaxode_diffusion.processes import ForwardProcess
from jaxode_diffusion.sampling.core import get_solver, make_plan, make_times, solve
from jaxode_diffusion.solvers.runge_kutta import RungeKutta

__all__ = ["convergence_study", "ConvergenceResult", "estimate_order", "extend_until_asymptotic", "fit_order",
           "OrderEstimate"]


def fit_order(h, err) -> float:
    """Least-squares slope of ``log err`` against ``log h`` (the empirical order).

    Example:
        >>> round(fit_order([0.1, 0.05, 0.025], [1e-4, 1.25e-5, 1.5625e-6]), 6)
        3.0
    """
    h = np.asarray(h, dtype=np.float64)
    err = np.asarray(err, dtype=np.float64)
    if h.shape != err.shape or h.size < 2:
        raise ValueError("fit_order needs at least two (h, err) pairs of equal length.")
    if np.any(err <= 0) or np.any(h <= 0):
        raise ValueError(f"fit_order needs positive errors and steps; got err={err}, h={h}.")
    return float(np.polyfit(np.log(h), np.log(err), 1)[0])


@dataclass
class ConvergenceResult:
    """Result of :func:`convergence_study`."""

    solver: str
    grid: str
    step_counts: list[int]
    nfe: list[int]
    h_max: list[float]
    errors: list[float]
    order: float
    local_orders: list[float]
    design_order: int

    def to_dict(self) -> dict:
        return asdict(self)


def convergence_study(
    score_fn,
    process: ForwardProcess,
    x_init,
    solver,
    step_counts: Sequence[int],
    *,
    grid="log_snr",
    t_start=None,
    t_end=None,
    reference=None,
    error="rmse",
) -> ConvergenceResult:
    """Measure end-point errors for each step count and fit the empirical order.

    Args:
        solver: any spec :func:`~jaxode_diffusion.sample` accepts.
        step_counts: increasing step counts (at least two).
        grid: a named grid (H_max is the largest step in the form's variable).
        reference: precomputed reference end points; default :func:`reference_solve`.
        error: ``"rmse"`` (root mean square over the batch of ``||x - x_ref||``) or ``"max"``.

    Returns:
        :class:`ConvergenceResult`; ``order`` is the slope of log error against log H_max.

    Example:
        >>> import jax
        >>> jax.config.update("jax_enable_x64", True)
        >>> from jaxode_diffusion import GaussianMixture, VPLinear
        >>> gm, vp = GaussianMixture.ring(4), VPLinear()
        >>> x0 = gm.sample_marginal(jax.random.PRNGKey(0), 8, vp, vp.t_max)
        >>> r = convergence_study(gm.score_fn(vp), vp, x0, "x0-lambda:heun", [32, 64])
        >>> 1.5 < r.order < 2.5
        True
    """
    if len(step_counts) < 2:
        raise ValueError(f"step_counts needs at least two entries, got {list(step_counts)}.")
    if error not in ("rmse", "max"):
        raise ValueError(f"error={error!r}: choose 'rmse' or 'max'.")
    rk = get_solver(solver)
    x_init = jnp.asarray(x_init)
    if reference is None:
        reference = reference_solve(score_fn, process, x_init, t_start=t_start, t_end=t_end)
    # Every step count runs through ONE compiled program: each grid is padded to the longest
    # with zero-length steps at t_end, which an explicit RK step leaves exactly unchanged
    # (y + 0 * k = y), so the padded result equals the unpadded one bit for bit.
    grids = [make_times(process, num_steps=int(n), t_start=t_start, t_end=t_end, grid=grid)
             for n in step_counts]
    n_max = max(int(n) for n in step_counts)
    errs, hs, nfes = [], [], []
    for n, ts in zip(step_counts, grids, strict=True):
        pad = jnp.full((n_max - int(n),), ts[-1], ts.dtype)
        ts_pad = jnp.concatenate([ts, pad]) if isinstance(rk, RungeKutta) else ts
        sol = solve(score_fn, process, x_init, ts_pad, rk, throw=False)
        x, nfe = sol.samples, sol.nfe
        diff = (x - reference).reshape(x_init.shape[0], -1)
        per = jnp.sqrt(jnp.sum(diff**2, axis=1))
        errs.append(float(rmse(x, reference) if error == "rmse" else jnp.max(per)))
        plan = make_plan(process, rk, ts)
        hs.append(float(jnp.max(jnp.abs(jnp.diff(plan.us)))))
        nfes.append(int(nfe) if not isinstance(rk, RungeKutta) else int(n) * rk.tableau.num_stages)
    order = fit_order(hs, errs) if min(errs) > 0 else float("nan")
    local = [float(np.log(errs[i] / errs[i + 1]) / np.log(hs[i] / hs[i + 1])) for i in range(len(errs) - 1)]
    return ConvergenceResult(
        solver=rk.name,
        grid=str(grid),
        step_counts=[int(n) for n in step_counts],
        nfe=nfes,
        h_max=hs,
        errors=errs,
        order=float(order),
        local_orders=local,
        design_order=int(rk.order),
    )


# ---------------------------------------------------------------------------------------------
# Orders from per-sample errors: where the asymptotic regime starts, measured rather than assumed
# ---------------------------------------------------------------------------------------------

#: Local slopes within this distance of the last local slope count as "stopped changing". It is
#: half of the +-0.5 resolution a reported order claims: a window whose local slopes all lie within
#: +-0.25 of the last one has no drift across it larger than 0.5.
SLOPE_TOLERANCE = 0.25

#: Errors at or above this are not used: total variation is at most 1 and bends over well before
#: it (where the families leave their power law: benchmarks/README.md, "Convergence orders").
ERROR_CEILING = 0.3


@dataclass(frozen=True)
class OrderEstimate:
    """Result of :func:`estimate_order` / :func:`extend_until_asymptotic`.

    Attributes:
        order: minus the least-squares slope of log error against log N over ``window`` (NaN when
            fewer than two usable step counts exist).
        low, high: its interval: the ``confidence`` bootstrap interval (resampling the samples,
            jointly for every N) joined with the range of the local slopes inside the window.
        asymptotic: True when at least ``min_slopes`` local slopes ending at the largest usable N
            agree with the last one within ``tolerance`` and the interval is at most ``max_width``
            wide; False means the measured slope is not claimed as an order.
        window: the step counts the slope is fitted over.
        steps, errors, stderr, status: every step count run, its mean error and standard error, and
            why it was or was not used: ``"ok"``, ``"saturated"`` (>= ceiling), ``"noise"`` (within
            3 standard errors of 0), ``"floor"`` (<= floor) or ``"invalid"`` (the caller's
            ``valid`` flag, e.g. a sampler map that folds).
        local_steps, local_orders, local_stderr: local slopes ``-log(e_2/e_1)/log(N_2/N_1)``
            between consecutive usable step counts of the last contiguous usable run (labelled by
            the larger N) with their bootstrap standard errors.
        reason: why the family is not asymptotic ("" when it is).
    """

    order: float
    low: float
    high: float
    asymptotic: bool
    window: tuple = ()
    steps: tuple = ()
    errors: tuple = ()
    stderr: tuple = ()
    status: tuple = ()
    local_steps: tuple = ()
    local_orders: tuple = ()
    local_stderr: tuple = ()
    reason: str = ""
    settings: dict = field(default_factory=dict)

    def describe(self) -> str:
        """One line: ``"3.99 [3.95, 4.03] over N = 32..128"`` or ``"not asymptotic (...)"``."""
        if self.asymptotic:
            return f"{self.order:.2f} [{self.low:.2f}, {self.high:.2f}] over N = {self.window[0]}..{self.window[-1]}"
        if len(self.window) < 2:
            return f"not asymptotic ({self.reason})"
        return (f"not asymptotic (slope {self.order:.2f} [{self.low:.2f}, {self.high:.2f}] over N = "
                f"{self.window[0]}..{self.window[-1]}: {self.reason})")

    def to_dict(self) -> dict:
        d = asdict(self)
        d["describe"] = self.describe()
        return {k: (list(v) if isinstance(v, tuple) else v) for k, v in d.items()}


def _slopes_over(lx, ly):
    """Least-squares slopes of the columns of ``ly`` (K, B) against ``lx`` (K,)."""
    xc = lx - lx.mean()
    return xc @ (ly - ly.mean(axis=0)) / (xc @ xc)


def estimate_order(
    steps,
    errors,
    *,
    valid=None,
    floor: float = 0.0,
    ceiling: float = ERROR_CEILING,
    tolerance: float = SLOPE_TOLERANCE,
    min_slopes: int = 3,
    max_width: float = 1.0,
    confidence: float = 0.95,
    num_boot: int = 1000,
    seed: int = 0,
) -> OrderEstimate:
    """Empirical order of a method from per-sample errors at several step counts N.

    ``errors[k, i]`` is sample ``i``'s contribution to the error at ``steps[k]`` (the error is its
    mean over ``i``), with the *same* samples for every N (common random numbers). The order is
    minus the slope of log error against log N over the window where the local slopes have stopped
    changing, chosen from the data alone (the module docstring describes the rule); otherwise the
    slope over the last ``min_slopes + 1`` usable step counts is returned as measured, with the reason.

    Args:
        steps: increasing step counts, shape ``(K,)``.
        errors: per-sample errors, shape ``(K, n)``, non-negative and finite.
        valid: optional ``(K,)`` booleans; False drops that step count (status ``"invalid"``).
        floor: errors at or below this are not discretisation (round-off, Monte Carlo).
        ceiling: errors at or above this are saturated (default 0.3, for TV).
        tolerance: how far local slopes may lie from the last one (default 0.25).
        min_slopes: local slopes the window needs (default 3, i.e. four step counts).
        max_width: widest interval that still counts as an order (default 1: +-0.5).
        confidence: coverage of the bootstrap interval.
        num_boot, seed: bootstrap resamples and their seed.

    Returns:
        an :class:`OrderEstimate`.

    Raises:
        ValueError: for mismatched shapes, unsorted or non-positive step counts, negative or
            non-finite errors, or bad settings.

    Example:
        >>> import numpy as np
        >>> n = np.array([4, 8, 16, 32, 64])
        >>> c = np.random.default_rng(0).uniform(0.5, 1.5, 400)   # per-sample constants
        >>> est = estimate_order(n, (2.0 * n[:, None] ** -3.0) * c)
        >>> est.asymptotic, round(est.order, 2), est.window
        (True, 3.0, (4, 8, 16, 32, 64))
        >>> tv = np.array([1.26e-1, 1.66e-2, 2.73e-3, 1.03e-4])  # TV of VP x-t:rk4 at N = 4..32
        >>> print(estimate_order(n[:4], tv[:, None] * c).describe())
        not asymptotic (slope 3.34 [2.60, 4.73] over N = 4..32: local slopes still change at the largest N: 2.92, 2.60, 4.73 (N = 8, 16, 32))
    """
    steps, errors, valid, min_slopes = _check_order_inputs(
        steps, errors, valid, tolerance=tolerance, min_slopes=min_slopes, max_width=max_width,
        confidence=confidence, num_boot=num_boot,
    )
    n = errors.shape[1]
    mean = errors.mean(axis=1)
    se = errors.std(axis=1, ddof=1) / np.sqrt(n)
    status = _error_status(mean, se, valid, floor, ceiling)
    usable = status == "ok"
    settings = dict(floor=float(floor), ceiling=float(ceiling), tolerance=float(tolerance), min_slopes=min_slopes,
                    max_width=float(max_width), confidence=float(confidence), samples=int(n))
    common = dict(steps=tuple(int(s) for s in steps), errors=tuple(float(v) for v in mean),
                  stderr=tuple(float(v) for v in se), status=tuple(str(s) for s in status), settings=settings)
    if not usable.any():
        return OrderEstimate(np.nan, np.nan, np.nan, False, reason=_no_usable_reason(status), **common)
    slopes = _local_slopes(steps, errors, mean, _last_usable_run(usable), num_boot, seed)
    fit, agree = _select_window(slopes.local, len(slopes.block), tolerance, min_slopes)
    window = tuple(int(s) for s in steps[slopes.block[fit]])
    local_info = dict(local_steps=tuple(int(s) for s in steps[slopes.block[1:]]),
                      local_orders=tuple(float(v) for v in slopes.local),
                      local_stderr=tuple(float(v) for v in slopes.local_se))
    if fit.size < 2:
        return OrderEstimate(np.nan, np.nan, np.nan, False, window=window, reason=(
            f"only one usable step count (N = {window[0]}); run more step counts"), **local_info, **common)
    order, low, high = _fit_with_interval(slopes, fit, confidence)
    reason = _not_asymptotic_reason(slopes, steps, agree, high - low, min_slopes, max_width)
    return OrderEstimate(order, low, high, not reason, window=window, reason=reason, **local_info, **common)


def _check_order_inputs(steps, errors, valid, *, tolerance, min_slopes, max_width, confidence, num_boot):
    """``(steps, errors, valid, min_slopes)`` as arrays and an int, after checking shapes, values and settings."""
    steps = np.asarray(steps)
    errors = np.asarray(errors, dtype=np.float64)
    if steps.ndim != 1 or steps.size < 1 or not np.issubdtype(steps.dtype, np.integer) or np.any(steps <= 0):
        raise ValueError(f"steps must be a 1-D array of positive integers; got {steps!r}.")
    if np.any(np.diff(steps) <= 0):
        raise ValueError(f"steps must be strictly increasing; got {steps.tolist()}. Sort them (and errors).")
    if errors.ndim != 2 or errors.shape[0] != steps.size or errors.shape[1] < 2:
        raise ValueError(
            f"errors must have shape (len(steps), n) = ({steps.size}, n) with n >= 2 samples; got {errors.shape}."
        )
    if not np.all(np.isfinite(errors)) or np.any(errors < 0):
        raise ValueError("errors must be finite and non-negative (per-sample error contributions).")
    valid = np.ones(steps.size, bool) if valid is None else np.asarray(valid, bool)
    if valid.shape != steps.shape:
        raise ValueError(f"valid must have shape {steps.shape}; got {valid.shape}.")
    if not (0.0 < confidence < 1.0) or tolerance <= 0 or max_width <= 0 or int(min_slopes) < 1 or num_boot < 100:
        raise ValueError(
            f"bad settings: confidence={confidence} must lie in (0, 1), tolerance={tolerance} and "
            f"max_width={max_width} must be positive, min_slopes={min_slopes} >= 1, num_boot={num_boot} >= 100."
        )
    return steps, errors, valid, int(min_slopes)


def _error_status(mean, se, valid, floor, ceiling) -> np.ndarray:
    """Per step count: ``"ok"``, ``"invalid"``, ``"saturated"``, ``"floor"`` or ``"noise"`` (first match)."""
    return np.where(~valid, "invalid", np.where(mean >= ceiling, "saturated", np.where(
        mean <= floor, "floor", np.where(mean <= 3 * se, "noise", "ok"))))


def _no_usable_reason(status) -> str:
    counts = {s: int((status == s).sum()) for s in ("saturated", "noise", "floor", "invalid") if (status == s).any()}
    why = ", ".join(f"{k} at {v}" for k, v in counts.items())
    return f"no usable step count ({why} of {status.size})"


def _last_usable_run(usable) -> np.ndarray:
    """Indices of the last contiguous run of usable step counts."""
    end = int(np.flatnonzero(usable)[-1])
    start = end
    while start > 0 and usable[start - 1]:
        start -= 1
    return np.arange(start, end + 1)


@dataclass(frozen=True)
class _LocalSlopes:
    """Over the usable run ``block``: log step counts ``lx``, log mean errors ``ly``, their bootstrap
    ``boot`` ``(len(block), num_boot)``, and the local slopes with their bootstrap standard errors."""

    block: np.ndarray
    lx: np.ndarray
    ly: np.ndarray
    boot: np.ndarray
    local: np.ndarray
    local_se: np.ndarray


def _local_slopes(steps, errors, mean, block, num_boot, seed) -> _LocalSlopes:
    n = errors.shape[1]
    lx = np.log(steps[block].astype(np.float64))
    ly = np.log(mean[block])
    # Bootstrap: resample the n samples jointly for all step counts (their errors are paired).
    rng = np.random.default_rng(seed)
    counts = rng.multinomial(n, np.full(n, 1.0 / n), size=num_boot).astype(np.float64)  # (B, n)
    boot = np.log(np.maximum(errors[block] @ counts.T / n, 1e-300))  # (K_block, B)
    local = -np.diff(ly) / np.diff(lx)
    local_b = -np.diff(boot, axis=0) / np.diff(lx)[:, None]
    local_se = local_b.std(axis=1, ddof=1) if local.size else np.zeros(0)
    return _LocalSlopes(block, lx, ly, boot, local, local_se)


def _select_window(local, n_block: int, tolerance: float, min_slopes: int):
    """``(fit, agree)``: the block indices to fit over, and whether the local slopes settled there.

    The window is the longest run of local slopes ending at the largest N that lie within
    ``tolerance`` of the last one; without ``min_slopes`` of them, the last ``min_slopes + 1`` points.
    """
    first = n_block - 1  # index (within block) of the window's first point
    if local.size:
        first = local.size - 1
        while first > 0 and abs(local[first - 1] - local[-1]) <= tolerance:
            first -= 1
    agree = n_block - 1 - first >= min_slopes
    fit = np.arange(first, n_block) if agree else np.arange(max(0, n_block - 1 - min_slopes), n_block)
    return fit, agree


def _fit_with_interval(slopes: _LocalSlopes, fit, confidence: float):
    """``(order, low, high)``: the slope over ``fit``, its bootstrap interval joined with the local slopes."""
    order = -float(_slopes_over(slopes.lx[fit], slopes.ly[fit][:, None])[0])
    orders_b = -_slopes_over(slopes.lx[fit], slopes.boot[fit])
    a = 0.5 * (1.0 - confidence)
    low, high = (float(v) for v in np.quantile(orders_b, [a, 1.0 - a]))
    inside = slopes.local[fit[1:] - 1]
    return order, min(low, float(inside.min())), max(high, float(inside.max()))


def _not_asymptotic_reason(slopes: _LocalSlopes, steps, agree: bool, width: float, min_slopes: int,
                           max_width: float) -> str:
    """Why the window is not an order (``""`` when it is)."""
    if not agree:
        local = slopes.local
        shown = ", ".join(f"{v:.2f}" for v in local[-(min_slopes + 1):])
        at = ", ".join(str(int(s)) for s in steps[slopes.block[1:]][-(min_slopes + 1):])
        return (f"local slopes still change at the largest N: {shown} (N = {at})" if local.size >= min_slopes else
                f"only {len(slopes.block)} consecutive usable step counts; need {min_slopes + 1}")
    if width > max_width:
        return f"interval wider than {max_width:g}"
    return ""


def extend_until_asymptotic(
    run,
    step_counts: Sequence[int],
    *,
    max_steps: int,
    growth: int = 2,
    expected: float | None = None,
    max_gap: float = 0.5,
    **estimate_kwargs,
) -> OrderEstimate:
    """Run ``step_counts``, then keep multiplying the largest by ``growth`` until
    :func:`estimate_order` finds an asymptotic window, the next count would exceed ``max_steps``,
    or the error at the largest count has reached its floor (Monte Carlo noise or ``floor``),
    where more steps cannot help. The window then ends at the largest N that budget and floor
    allow, and a family that never settles is reported as not asymptotic with the reason.

    With ``expected`` (the nominal order p), a settled slope more than ``max_gap`` from p, above
    or below, is not accepted either: the extension goes on, and if budget or floor stop it first
    the estimate is returned with ``asymptotic=False`` and a reason naming the gap, where it stopped
    and which way the local slopes are moving. p never moves the window, only whether it counts.

    Args:
        run: ``run(num_steps) -> (errors, valid)``: per-sample errors ``(n,)`` measured on the same
            samples for every step count, and whether they are valid (e.g. no folded samples).
        step_counts: the step counts to run first (increasing).
        max_steps: largest step count the extension may run.
        growth: factor between successive step counts of the extension.
        expected: nominal order to hold a settled slope to (``None``: any settled slope counts).
        max_gap: largest accepted ``|order - expected|`` (default 0.5).
        estimate_kwargs: passed to :func:`estimate_order`.

    Returns:
        the final :class:`OrderEstimate` (its ``steps`` list every count run).

    Raises:
        ValueError: for empty step counts, ``growth < 2``, ``max_steps`` below the step counts or
            a non-positive ``max_gap``.

    Example:
        >>> import numpy as np
        >>> c = np.random.default_rng(0).uniform(0.5, 1.5, 400)
        >>> run = lambda n: (0.05 * (1.0 / n + 400.0 / n**3) * c, True)   # order 1 beyond N ~ 40
        >>> est = extend_until_asymptotic(run, [4, 8, 16], max_steps=1024)
        >>> print(est.describe())
        1.04 [1.01, 1.10] over N = 64..512
        >>> print(extend_until_asymptotic(run, [4, 8, 16], max_steps=32).describe())
        not asymptotic (slope 2.19 [1.88, 2.50] over N = 8..32: only 3 consecutive usable step counts; need 4; step budget max_steps = 32 reached)
        >>> print(extend_until_asymptotic(run, [4, 8, 16], max_steps=1024, expected=2).reason)
        slope 1.03 is 0.97 below p=2 at N = 64..1024, the finest step count the budget allows (max_steps = 1024); local slopes still falling (1.10, 1.03, 1.01, 1.00)
    """
    counts = sorted(int(n) for n in step_counts)
    if not counts or int(growth) < 2 or int(max_steps) < counts[-1] or not max_gap > 0:
        raise ValueError(
            f"step_counts={list(step_counts)} must be non-empty, growth={growth} >= 2, max_steps={max_steps} "
            f"at least the largest step count and max_gap={max_gap} positive."
        )
    steps, errs, valids = [], [], []

    def do(n):
        e, ok = run(int(n))
        steps.append(int(n))
        errs.append(np.asarray(e, dtype=np.float64).reshape(-1))
        valids.append(bool(ok))

    for n in counts:
        do(n)
    floor = float(estimate_kwargs.get("floor", 0.0))
    while True:
        est = estimate_order(steps, np.stack(errs), valid=valids, **estimate_kwargs)
        gap = expected is not None and est.asymptotic and abs(est.order - expected) > max_gap
        if est.asymptotic and not gap:
            return est
        where, at_floor = _stop_cause(est, floor, steps[-1] * int(growth), int(max_steps))
        if where is None:
            do(steps[-1] * int(growth))
        elif gap:
            return replace(est, asymptotic=False, reason=_gap_reason(est, float(expected), max_gap, at_floor, where,
                                                                     int(max_steps)))
        else:
            return replace(est, reason=f"{est.reason}; {where}")


def _stop_cause(est: OrderEstimate, floor: float, next_steps: int, max_steps: int):
    """``(where, at_floor)``: why the extension stops at ``est``'s largest N (``where=None``: it goes on)."""
    m, s = est.errors[-1], est.stderr[-1]
    if m <= max(floor, 3 * s):
        return f"the error at N = {est.steps[-1]} has reached its floor ({m:.2g}, standard error {s:.2g})", True
    if next_steps > max_steps:
        return f"step budget max_steps = {max_steps} reached", False
    return None, False


def _gap_reason(est: OrderEstimate, expected: float, max_gap: float, at_floor: bool, where: str,
                max_steps: int) -> str:
    """Why a settled slope ``est.order`` more than the allowed gap from ``expected`` is not an order."""
    gap = est.order - expected
    side = "above" if gap > 0 else "below"
    span = f"N = {est.window[0]}..{est.window[-1]}"
    stop = where if at_floor else f"the finest step count the budget allows (max_steps = {max_steps})"
    k = min(len(est.local_orders), max(len(est.window) - 1, 1))
    recent = est.local_orders[-k:]
    drift = recent[-1] - recent[0] if len(recent) > 1 else 0.0
    trend = "still falling" if drift < -0.05 else "still rising" if drift > 0.05 else "level"
    shown = ", ".join(f"{v:.2f}" for v in recent)
    nd = 3 if round(abs(gap), 2) <= max_gap else 2  # 4.504 is more than 0.5 above 4: do not print 0.50
    return (f"slope {est.order:.{nd}f} is {abs(gap):.{nd}f} {side} p={expected:g} at {span}, {stop}; "
            f"local slopes {trend} ({shown})")
