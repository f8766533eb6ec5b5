"""Reference solves with diffrax, adaptive sampling, and empirical convergence-order studies.

* :func:`reference_solve`: a tight adaptive diffrax solve (Dopri8 + PIDController by default) of
  the probability-flow ODE in any form; the ground truth for end-point errors.
* :func:`adaptive_sample`: diffrax's PIDController driving any of our tableaux that carries an
  embedded error estimate (``b_error``), reporting NFE.
* :func:`diffrax_fixed_step`: the same fixed grid as :func:`~jaxode_diffusion.sample`, run by
  ``diffrax.diffeqsolve`` with ``StepTo`` (used to cross-check our RK step).
* :func:`convergence_study`: errors for a list of step counts against the reference and the
  fitted order (slope of log error vs log H_max).
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import asdict, dataclass

import diffrax
import equinox as eqx
import jax
import jax.numpy as jnp
import numpy as np

from .forms import get_form
from .processes import ForwardProcess
from .sampling import get_solver, make_plan, make_times
from .solvers.diffrax_bridge import diffrax_solver
from .solvers.runge_kutta import RungeKutta

__all__ = [
    "reference_solve",
    "adaptive_sample",
    "diffrax_fixed_step",
    "convergence_study",
    "ConvergenceResult",
    "fit_order",
    "AdaptiveResult",
]


def _term(score_fn, process, form):
    def vf(u, y, args):
        t = form.t_of_u(process, u)
        return form.vector_field(score_fn, process, y, t)

    return diffrax.ODETerm(vf)


def reference_solve(
    score_fn,
    process: ForwardProcess,
    x_init,
    *,
    t_start=None,
    t_end=None,
    form="x0-lambda",
    rtol: float = 1e-11,
    atol: float = 1e-11,
    solver=None,
    max_steps: int = 100_000,
):
    """A tight adaptive solve of the probability-flow ODE from ``t_start`` to ``t_end``.

    Args:
        form: the ODE form to integrate in (default ``x0-lambda``, the smoothest for VP-type
            schedules); the result is returned in ``x``.
        rtol, atol: PID tolerances (use float64 for tolerances below ~1e-6).
        solver: a diffrax solver (default ``diffrax.Dopri8()``).

    Returns:
        The end points, shaped like ``x_init``.
    """
    form = get_form(form)
    t_start = process.default_t_start if t_start is None else t_start
    t_end = process.default_t_end if t_end is None else t_end
    x_init = jnp.asarray(x_init)
    return _reference_jit(score_fn, process, x_init, jnp.asarray(t_start, x_init.dtype),
                          jnp.asarray(t_end, x_init.dtype), form, rtol, atol,
                          solver or diffrax.Dopri8(), max_steps)


def _reference_impl(score_fn, process, x_init, t_start, t_end, form, rtol, atol, solver, max_steps):
    u0, u1 = form.u(process, t_start), form.u(process, t_end)
    y0 = form.to_state(process, x_init, t_start)
    sol = diffrax.diffeqsolve(
        _term(score_fn, process, form),
        solver,
        t0=u0,
        t1=u1,
        dt0=(u1 - u0) / 64,
        y0=y0,
        stepsize_controller=diffrax.PIDController(rtol=rtol, atol=atol),
        max_steps=max_steps,
    )
    return form.from_state(process, sol.ys[-1], t_end)


_reference_jit = eqx.filter_jit(_reference_impl)


@dataclass
class AdaptiveResult:
    """End points of an adaptive solve and its cost."""

    samples: jax.Array
    nfe: int
    num_accepted_steps: int
    num_rejected_steps: int


def adaptive_sample(
    score_fn,
    process: ForwardProcess,
    x_init,
    *,
    solver="x0-lambda:dopri5",
    rtol: float = 1e-5,
    atol: float = 1e-5,
    t_start=None,
    t_end=None,
    max_steps: int = 10_000,
) -> AdaptiveResult:
    """Adaptive steps chosen by diffrax's PIDController for a tableau with an embedded estimate.

    NFE counts every stage of every attempted step (accepted and rejected); a first-same-as-last
    tableau saves one evaluation per accepted step after the first, which is credited.

    Raises:
        ValueError: if the tableau has no embedded error estimate (``b_error``).

    Example:
        >>> import jax
        >>> from jaxode_diffusion import GaussianMixture, VPLinear
        >>> gm, vp = GaussianMixture.ring(4), VPLinear()
        >>> res = adaptive_sample(gm.score_fn(vp), vp, vp.prior_sample(jax.random.PRNGKey(0), (8, 2)))
        >>> res.nfe > 0
        True
    """
    rk = get_solver(solver)
    if not isinstance(rk, RungeKutta):
        raise ValueError(f"solver={solver!r}: adaptive_sample needs a Runge-Kutta tableau solver.")
    tab = rk.tableau
    if not tab.has_error_estimate:
        raise ValueError(
            f"solver={solver!r}: tableau {tab.name!r} has no embedded error estimate (b_error); "
            "use one such as 'heun', 'bosh3', 'dopri5' or 'tsit5'."
        )
    t_start = process.default_t_start if t_start is None else t_start
    t_end = process.default_t_end if t_end is None else t_end
    x_init = jnp.asarray(x_init)
    x, stats = _adaptive_jit(score_fn, process, x_init, jnp.asarray(t_start, x_init.dtype),
                             jnp.asarray(t_end, x_init.dtype), rk.form, rtol, atol,
                             diffrax_solver(tab), max_steps)
    acc = int(stats["num_accepted_steps"])
    rej = int(stats["num_rejected_steps"])
    s = tab.num_stages
    nfe = (acc + rej) * s - (max(acc - 1, 0) if tab.is_fsal else 0)
    return AdaptiveResult(x, nfe, acc, rej)


def _adaptive_impl(score_fn, process, x_init, t_start, t_end, form, rtol, atol, solver, max_steps):
    u0, u1 = form.u(process, t_start), form.u(process, t_end)
    y0 = form.to_state(process, x_init, t_start)
    sol = diffrax.diffeqsolve(
        _term(score_fn, process, form),
        solver,
        t0=u0,
        t1=u1,
        dt0=(u1 - u0) / 16,
        y0=y0,
        stepsize_controller=diffrax.PIDController(rtol=rtol, atol=atol),
        max_steps=max_steps,
    )
    x = form.from_state(process, sol.ys[-1], t_end)
    return x, {k: sol.stats[k] for k in ("num_accepted_steps", "num_rejected_steps")}


_adaptive_jit = eqx.filter_jit(_adaptive_impl)


def diffrax_fixed_step(score_fn, process, x_init, *, solver="rk4", num_steps=None, t_start=None,
                       t_end=None, grid="uniform"):
    """Run ``diffrax.diffeqsolve`` on exactly the grid :func:`~jaxode_diffusion.sample` would use.

    The tableau is converted with :func:`~jaxode_diffusion.solvers.diffrax_bridge.diffrax_solver`
    and stepped with ``diffrax.StepTo`` over the grid in the form's variable.
    """
    rk = get_solver(solver)
    if not isinstance(rk, RungeKutta):
        raise ValueError(f"solver={solver!r}: diffrax_fixed_step needs a Runge-Kutta tableau solver.")
    ts = make_times(process, num_steps=num_steps, t_start=t_start, t_end=t_end, grid=grid)
    return _fixed_jit(score_fn, process, jnp.asarray(x_init), ts, rk.form, diffrax_solver(rk.tableau))


def _fixed_impl(score_fn, process, x_init, ts, form, dsolver):
    us = form.u(process, ts)
    y0 = form.to_state(process, x_init, ts[0])
    sol = diffrax.diffeqsolve(
        _term(score_fn, process, form),
        dsolver,
        t0=us[0],
        t1=us[-1],
        dt0=None,
        y0=y0,
        stepsize_controller=diffrax.StepTo(ts=us),
        max_steps=us.shape[0],
    )
    return form.from_state(process, sol.ys[-1], ts[-1])


_fixed_jit = eqx.filter_jit(_fixed_impl)


def fit_order(h, err) -> float:
    """Least-squares slope of ``log err`` against ``log h`` (the empirical order)."""
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
    from .sampling import _run  # the same compiled program sample() uses

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
        x, _, nfe, _ = _run(score_fn, process, x_init, ts_pad, rk, False)
        diff = (x - reference).reshape(x_init.shape[0], -1)
        per = jnp.sqrt(jnp.sum(diff**2, axis=1))
        errs.append(float(jnp.sqrt(jnp.mean(per**2)) if error == "rmse" else jnp.max(per)))
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
