"""diffrax drivers of the probability-flow ODE: tight references, adaptive solves, fixed-step checks.

* :func:`reference_solve`: a tight adaptive diffrax solve (Dopri8 + PIDController by default) of
  the probability-flow ODE in any form; the ground truth for end-point errors.
* :func:`adaptive_sample`: diffrax's PIDController driving any of our tableaux that carries an
  embedded error estimate (``b_error``), reporting NFE.
* :func:`diffrax_fixed_step`: the same fixed grid as :func:`~jaxode_diffusion.sample`, run by
  ``diffrax.diffeqsolve`` with ``StepTo`` (used to cross-check our RK step).

The tableau conversion itself lives in :mod:`jaxode_diffusion.solvers.diffrax_bridge`.
"""

from __future__ import annotations

import diffrax
import equinox as eqx
import jax.numpy as jnp

from jaxode_diffusion.solvers.forms import get_form
from jaxode_diffusion.processes import ForwardProcess
from jaxode_diffusion.sampling.core import get_solver, make_times
from jaxode_diffusion.solvers.adaptive import AdaptiveResult
from jaxode_diffusion.solvers.diffrax_bridge import diffrax_solver
from jaxode_diffusion.solvers.runge_kutta import RungeKutta

__all__ = ["reference_solve", "adaptive_sample", "diffrax_fixed_step"]


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

    Example:
        >>> import jax
        >>> from jaxode_diffusion import GaussianMixture, VPLinear
        >>> from jaxode_diffusion.analysis import reference_solve
        >>> gm, vp = GaussianMixture.ring(4), VPLinear()
        >>> x0 = vp.prior_sample(jax.random.PRNGKey(0), (8, 2))
        >>> reference_solve(gm.score_fn(vp), vp, x0, rtol=1e-6, atol=1e-6).shape
        (8, 2)
    """
    form = get_form(form)
    t_start = process.default_t_start if t_start is None else t_start
    t_end = process.default_t_end if t_end is None else t_end
    x_init = jnp.asarray(x_init)
    return _pid_jit(score_fn, process, x_init, jnp.asarray(t_start, x_init.dtype),
                    jnp.asarray(t_end, x_init.dtype), form, rtol, atol,
                    solver or diffrax.Dopri8(), max_steps, 64)[0]


def _pid_impl(score_fn, process, x_init, t_start, t_end, form, rtol, atol, solver, max_steps, first_steps):
    """One PID-controlled diffrax solve in the form's variable; the first step is 1/first_steps of the range."""
    u0, u1 = form.u(process, t_start), form.u(process, t_end)
    y0 = form.to_state(process, x_init, t_start)
    sol = diffrax.diffeqsolve(
        _term(score_fn, process, form),
        solver,
        t0=u0,
        t1=u1,
        dt0=(u1 - u0) / first_steps,
        y0=y0,
        stepsize_controller=diffrax.PIDController(rtol=rtol, atol=atol),
        max_steps=max_steps,
    )
    x = form.from_state(process, sol.ys[-1], t_end)
    return x, {k: sol.stats[k] for k in ("num_accepted_steps", "num_rejected_steps")}


_pid_jit = eqx.filter_jit(_pid_impl)


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
    x, stats = _pid_jit(score_fn, process, x_init, jnp.asarray(t_start, x_init.dtype),
                        jnp.asarray(t_end, x_init.dtype), rk.form, rtol, atol,
                        diffrax_solver(tab), max_steps, 16)
    acc = int(stats["num_accepted_steps"])
    rej = int(stats["num_rejected_steps"])
    s = tab.num_stages
    nfe = (acc + rej) * s - (max(acc - 1, 0) if tab.is_fsal else 0)
    return AdaptiveResult(x, nfe, acc, rej)


def diffrax_fixed_step(score_fn, process, x_init, *, solver="rk4", num_steps=None, t_start=None,
                       t_end=None, grid=None):
    """Run ``diffrax.diffeqsolve`` on exactly the grid :func:`~jaxode_diffusion.sample` would use.

    The tableau is converted with :func:`~jaxode_diffusion.solvers.diffrax_bridge.diffrax_solver`
    and stepped with ``diffrax.StepTo`` over the grid in the form's variable.

    Example:
        >>> import jax, jax.numpy as jnp
        >>> from jaxode_diffusion import GaussianMixture, VPLinear, sample
        >>> from jaxode_diffusion.analysis import diffrax_fixed_step
        >>> gm, vp = GaussianMixture.ring(4), VPLinear()
        >>> x0 = vp.prior_sample(jax.random.PRNGKey(0), (8, 2))
        >>> a = diffrax_fixed_step(gm.score_fn(vp), vp, x0, solver="rk4", num_steps=8)
        >>> b = sample(gm.score_fn(vp), vp, x0, solver="rk4", num_steps=8)
        >>> bool(jnp.allclose(a, b, atol=1e-5))
        True
    """
    rk = get_solver(solver)
    if not isinstance(rk, RungeKutta):
        raise ValueError(f"solver={solver!r}: diffrax_fixed_step needs a Runge-Kutta tableau solver.")
    ts = make_times(process, num_steps=num_steps, t_start=t_start, t_end=t_end, grid=grid, solver=solver)
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
