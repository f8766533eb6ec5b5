"""Sampling: ``sample(...)``, one jit-compiled ``lax.scan`` over steps, over an init/step layer.

The one-call entry point :func:`sample` builds a :class:`Plan` (the grid in ``t`` and in the
form's variable, and the times of every stage), then runs the solver's ``step`` in a
``lax.scan``. The whole thing is one :func:`equinox.filter_jit` program: array leaves of
``score_fn`` (e.g. a Flax model's parameters), of the process and of ``x_init`` are traced, so
new parameters or a new ``x_init`` of the same shape do not recompile; the solver, the grid name
and ``num_steps`` are static.

Manual stepping uses the same pieces::

    plan = make_plan(process, solver, ts)
    state = init(plan, score_fn, process, x_init)
    for _ in range(plan.num_steps):
        state = step(plan, score_fn, process, state)
    x = current_x(plan, process, state)
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any, NamedTuple

import equinox as eqx
import jax
import jax.numpy as jnp
import numpy as np

from . import tableaux as _tableaux
from .forms import FORM_NAMES, get_form
from .grids import make_grid, validate_grid
from .processes import ForwardProcess
from .solvers.base import AbstractSolver, StepInfo
from .solvers.runge_kutta import RungeKutta

__all__ = [
    "sample",
    "Solution",
    "Plan",
    "SamplerState",
    "make_plan",
    "make_times",
    "init",
    "step",
    "current_x",
    "get_solver",
    "register_solver",
    "solver_names",
    "NonFiniteSampleError",
]

# name -> factory(form_name or None) -> AbstractSolver; filled by solver modules.
_SOLVER_REGISTRY: dict[str, Callable[[str | None], AbstractSolver]] = {}


def register_solver(name: str, factory: Callable[[str | None], AbstractSolver]) -> None:
    """Register a non-tableau solver under ``name`` (e.g. ``"dpmpp_2m"``).

    ``factory(form)`` receives the form name given before ``:`` (or ``None``) and returns the
    solver; it should raise ``ValueError`` for forms it does not support.
    """
    _SOLVER_REGISTRY[name.lower()] = factory


def solver_names() -> list[str]:
    """Names accepted after ``FORM:`` (tableaux) and on their own (tableaux and solvers)."""
    return sorted(set(_tableaux.names()) | set(_SOLVER_REGISTRY))


def get_solver(solver) -> AbstractSolver:
    """Resolve a solver spec.

    Args:
        solver: an :class:`AbstractSolver`; a :class:`~jaxode_diffusion.tableaux.ButcherTableau`
            (plain RK in ``x-t``); a tableau or solver name (``"rk4"``: plain RK in ``x-t``;
            ``"dpmpp_2m"``); or ``"FORM:NAME"`` (``"x0-lambda:rk4"``, ``"eps-rho:heun"``).

    Raises:
        ValueError: unknown form or name, with the valid choices.
    """
    if isinstance(solver, AbstractSolver):
        return solver
    if isinstance(solver, _tableaux.ButcherTableau):
        return RungeKutta(solver)
    if not isinstance(solver, str):
        raise ValueError(
            f"solver must be a name like 'rk4' or 'x0-lambda:rk4', a ButcherTableau or a solver "
            f"object; got {type(solver).__name__}."
        )
    form_name, sep, name = solver.partition(":")
    if not sep:
        form_name, name = None, form_name
    if form_name is not None and form_name.lower() not in FORM_NAMES:
        raise ValueError(
            f"solver={solver!r}: unknown form {form_name!r}; forms are {list(FORM_NAMES)} "
            "(write 'FORM:TABLEAU', e.g. 'x0-lambda:rk4')."
        )
    key = name.lower()
    if key in _SOLVER_REGISTRY:
        return _SOLVER_REGISTRY[key](form_name)
    if key in {n.lower() for n in _tableaux.names()}:
        return RungeKutta(_tableaux.get(key), get_form(form_name or "x-t"))
    raise ValueError(
        f"solver={solver!r}: unknown method {name!r}; choose a tableau or solver from "
        f"{solver_names()}, optionally prefixed by a form from {list(FORM_NAMES)}."
    )


class Plan(eqx.Module):
    """Precomputed step data: the grid in ``t`` and ``u`` and the time of every stage."""

    solver: AbstractSolver = eqx.field(static=True)
    ts: jax.Array  # (N+1,)
    us: jax.Array  # (N+1,)
    t_stages: jax.Array  # (N, S)

    @property
    def num_steps(self) -> int:
        return self.ts.shape[0] - 1

    def step_info(self, n) -> StepInfo:
        return StepInfo(
            index=jnp.asarray(n, jnp.int32),
            t0=self.ts[n],
            t1=self.ts[n + 1],
            u0=self.us[n],
            u1=self.us[n + 1],
            t_stages=self.t_stages[n],
            num_steps=self.num_steps,
        )


def make_plan(process: ForwardProcess, solver, ts) -> Plan:
    """Build the :class:`Plan` for ``solver`` on the time grid ``ts`` (decreasing)."""
    solver = get_solver(solver)
    form = solver.form
    ts = jnp.asarray(ts)
    us = form.u(process, ts).astype(ts.dtype)
    fr = np.asarray(solver.stage_fractions, dtype=np.float64)
    u_st = us[:-1, None] + jnp.asarray(fr, ts.dtype)[None, :] * (us[1:] - us[:-1])[:, None]
    t_st = form.t_of_u(process, u_st).astype(ts.dtype)
    # Stage fractions 0 and 1 sit on grid points: use the grid's exact times there.
    t_st = jnp.where(jnp.asarray(fr == 0.0)[None, :], ts[:-1, None], t_st)
    t_st = jnp.where(jnp.asarray(fr == 1.0)[None, :], ts[1:, None], t_st)
    return Plan(solver, ts, us, t_st)


class SamplerState(NamedTuple):
    """State of a run: the form's state ``y``, the solver's history, step index, NFE so far."""

    y: jax.Array
    solver_state: Any
    index: jax.Array
    nfe: jax.Array


def init(plan: Plan, score_fn, process: ForwardProcess, x_init) -> SamplerState:
    """Initial state from ``x_init`` at ``plan.ts[0]``."""
    y0 = plan.solver.form.to_state(process, x_init, plan.ts[0])
    sstate = plan.solver.init(score_fn, process, y0, plan.ts[0])
    return SamplerState(y0, sstate, jnp.asarray(0, jnp.int32), jnp.asarray(0, jnp.int32))


def step(plan: Plan, score_fn, process: ForwardProcess, state: SamplerState) -> SamplerState:
    """Advance one step of the plan."""
    info = plan.step_info(state.index)
    y1, sstate, nfe = plan.solver.step(score_fn, process, state.y, state.solver_state, info)
    return SamplerState(y1, sstate, state.index + 1, state.nfe + jnp.asarray(nfe, jnp.int32))


def current_x(plan: Plan, process: ForwardProcess, state: SamplerState):
    """The sample ``x`` at the state's current time."""
    return plan.solver.form.from_state(process, state.y, plan.ts[state.index])


class Solution(NamedTuple):
    """Result of :func:`sample` when a ``return_*`` flag is set.

    Attributes:
        samples: final samples, shaped like ``x_init``.
        trajectory: ``(num_steps + 1, *x_init.shape)`` states at ``ts`` (``None`` unless asked).
        nfe: number of score evaluations (int32 scalar).
        ts: the time grid used.
    """

    samples: jax.Array
    trajectory: jax.Array | None
    nfe: jax.Array
    ts: jax.Array


class NonFiniteSampleError(FloatingPointError):
    """Raised when sampling produced NaN or inf (names the batch element and step)."""


def make_times(process: ForwardProcess, *, num_steps=None, t_start=None, t_end=None, grid="uniform"):
    """The time grid :func:`sample` uses for these arguments (validated)."""
    if isinstance(grid, str):
        if num_steps is None:
            raise ValueError("num_steps is required with a named grid (e.g. num_steps=10).")
        t_start = process.default_t_start if t_start is None else t_start
        t_end = process.default_t_end if t_end is None else t_end
        if not isinstance(t_start, jax.core.Tracer) and not isinstance(t_end, jax.core.Tracer):
            ts_, te_ = float(t_start), float(t_end)
            if not ts_ > te_:
                raise ValueError(
                    f"t_start={ts_!r} must be larger than t_end={te_!r}: sampling runs from noise "
                    "(large t) to data (small t)."
                )
            if te_ < float(process.t_min) or ts_ > float(process.t_max) * (1 + 1e-12):
                raise ValueError(
                    f"t_start={ts_!r} and t_end={te_!r} must lie in the process's range "
                    f"[{process.t_min}, {process.t_max}]."
                )
        return make_grid(grid, process, num_steps, t_start, t_end)
    if callable(grid):
        return validate_grid(grid(process, num_steps, t_start, t_end), process)
    ts = validate_grid(grid, process)
    if num_steps is not None and num_steps != ts.shape[0] - 1:
        raise ValueError(
            f"num_steps={num_steps} disagrees with the grid array of {ts.shape[0]} times "
            f"({ts.shape[0] - 1} steps); drop num_steps or fix the grid."
        )
    if t_start is not None or t_end is not None:
        raise ValueError("t_start/t_end are taken from a grid array; do not pass them as well.")
    return ts


@eqx.filter_jit
def _run(score_fn, process, x_init, ts, solver, return_trajectory: bool):
    plan = make_plan(process, solver, ts)
    state = init(plan, score_fn, process, x_init)
    bad0 = jnp.full(x_init.shape[:1], -1, jnp.int32)

    def body(carry, _):
        state, first_bad = carry
        state = step(plan, score_fn, process, state)
        finite = jnp.all(jnp.isfinite(state.y).reshape(state.y.shape[0], -1), axis=1)
        first_bad = jnp.where((first_bad < 0) & ~finite, state.index - 1, first_bad)
        out = state.y if return_trajectory else None
        return (state, first_bad), out

    (state, first_bad), ys = jax.lax.scan(body, (state, bad0), None, length=plan.num_steps)
    form = plan.solver.form
    x = form.from_state(process, state.y, ts[-1])
    traj = None
    if return_trajectory:
        scale = form.scale(process, ts[1:]).astype(ys.dtype)
        xs = ys * scale.reshape((-1,) + (1,) * (ys.ndim - 1))
        traj = jnp.concatenate([x_init[None].astype(xs.dtype), xs], axis=0)
    return x, traj, state.nfe, first_bad


def sample(
    score_fn: Callable,
    process: ForwardProcess,
    x_init,
    *,
    solver="rk4",
    num_steps: int | None = None,
    t_start=None,
    t_end=None,
    grid="uniform",
    return_trajectory: bool = False,
    return_nfe: bool = False,
    check_finite: bool = True,
):
    """Integrate the probability-flow ODE from ``t_start`` (noise) down to ``t_end`` (data).

    Args:
        score_fn: ``score_fn(x, t)`` for a batch ``x`` of shape ``(B, *event_shape)`` and a scalar
            ``t``. If it is a pytree (an ``equinox.Module``, a model adapter) its array leaves are
            traced: new parameters do not recompile. A plain function is static (keep the same
            function object across calls to avoid retracing).
        process: the :class:`~jaxode_diffusion.processes.ForwardProcess`.
        x_init: ``(B, *event_shape)`` initial states at ``t_start``.
        solver: ``"rk4"`` (plain RK in ``x-t``), ``"FORM:TABLEAU"`` (``"x0-lambda:rk4"``), a
            registered solver name, a ``ButcherTableau`` or a solver object.
        num_steps: number of steps (NFE = steps x stages for RK); required with a named grid.
        t_start, t_end: defaults ``process.default_t_start`` and ``process.default_t_end``.
        grid: ``"uniform"``, ``"log_snr"``, ``"edm"`` (``"edm:R"``), ``"quadratic"``, an array of
            t values (then ``num_steps``/``t_start``/``t_end`` come from it; pass
            ``num_steps=None``), or a callable ``(process, num_steps, t_start, t_end) -> ts``.
        return_trajectory: also return the states at every grid time.
        return_nfe: return a :class:`Solution` with the NFE.
        check_finite: raise :class:`NonFiniteSampleError` naming the first bad batch element and
            step when a result is NaN/inf (skipped when ``sample`` is itself traced).

    Returns:
        The samples (shape of ``x_init``), or a :class:`Solution` if a ``return_*`` flag is set.

    Example:
        >>> import jax
        >>> from jaxode_diffusion import GaussianMixture, VPLinear, sample
        >>> gm, vp = GaussianMixture.ring(8), VPLinear()
        >>> x0 = vp.prior_sample(jax.random.PRNGKey(0), (16, 2))
        >>> x = sample(gm.score_fn(vp), vp, x0, solver="x0-lambda:rk4", num_steps=10, grid="log_snr")
        >>> x.shape
        (16, 2)
    """
    if not isinstance(process, ForwardProcess):
        raise ValueError(
            f"process must be a ForwardProcess (e.g. VPLinear() or ForwardProcess.from_alpha_sigma(...)); "
            f"got {type(process).__name__}."
        )
    if not callable(score_fn):
        raise ValueError(f"score_fn must be callable score_fn(x, t); got {type(score_fn).__name__}.")
    x_init = jnp.asarray(x_init)
    if x_init.ndim < 2:
        raise ValueError(
            f"x_init must be a batch of shape (B, *event_shape) with B >= 1; got shape {x_init.shape}. "
            "For one sample use x[None]."
        )
    if not jnp.issubdtype(x_init.dtype, jnp.floating):
        raise ValueError(f"x_init must be a floating-point array, got dtype {x_init.dtype}.")
    solver = get_solver(solver)
    ts = make_times(process, num_steps=num_steps, t_start=t_start, t_end=t_end, grid=grid)
    x, traj, nfe, first_bad = _run(score_fn, process, x_init, ts, solver, bool(return_trajectory))
    if check_finite and not isinstance(first_bad, jax.core.Tracer):
        fb = np.asarray(first_bad)
        if np.any(fb >= 0):
            i = int(np.argmax(fb >= 0))
            raise NonFiniteSampleError(
                f"sampling produced non-finite values: batch element {i} first at step {int(fb[i])} "
                f"(t = {float(ts[int(fb[i])]):.4g} -> {float(ts[int(fb[i]) + 1]):.4g}); "
                f"{int(np.sum(fb >= 0))} of {fb.shape[0]} elements affected. Check the score near "
                "that time, use more steps, or start at a smaller t_start."
            )
    if return_trajectory or return_nfe:
        return Solution(x, traj, nfe, ts)
    return x
