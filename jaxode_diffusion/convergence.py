"""Empirical convergence orders: the one home of order fitting.

* :func:`fit_order`: least-squares slope of log error against log step size;
* :func:`convergence_study`: errors for a list of step counts against the reference and the
  fitted order (slope of log error vs log H_max).
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import asdict, dataclass

import jax.numpy as jnp
import numpy as np

from .diffrax_drivers import reference_solve
from .distances import rmse
from .processes import ForwardProcess
from .sampling import get_solver, make_plan, make_times, solve
from .solvers.runge_kutta import RungeKutta

__all__ = ["convergence_study", "ConvergenceResult", "fit_order"]


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
