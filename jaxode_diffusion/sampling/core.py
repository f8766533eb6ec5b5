"""Sampling: the public core :func:`solve` and the convenience layer :func:`sample`.

``solve(score_fn, process, x_init, ts, solver)`` integrates the probability-flow ODE on an
explicit grid ``ts``: it is jit-able, vmap-able and differentiable, and it returns a
:class:`Solution` whose ``result`` code records failures (non-finite input, an invalid grid, a
non-finite state: which element, which step). With ``throw=True`` (the default) a failure is
raised, also when ``solve`` is traced inside ``jax.jit``/``jax.grad``/``jax.vmap`` (through
``equinox.branched_error_if``), in the manner of diffrax's ``RESULTS``.

The grid ``ts`` of :func:`solve` is strictly monotone: decreasing samples (noise to data),
increasing encodes data into noise (e.g. DDIM inversion). Runge-Kutta solvers also accept
zero-length steps (exact no-ops), so grids of different lengths can be padded into one compiled
program. The score's output shape and dtype are checked with ``jax.eval_shape`` (no FLOPs) while
tracing, so once per compilation. :func:`solve` runs in two halves: an eager preparation
(``_prepare_solve``: argument checks in a fixed order, the solver resolved, ``cond`` bound) and
the traced kernel (``_solve_impl`` under ``equinox.filter_jit``).

``sample(...)`` resolves names (solver, grid, defaults) into a grid and calls :func:`solve`.
Both run one :func:`equinox.filter_jit` program over a ``lax.scan`` (stages unrolled): array
leaves of ``score_fn`` (a model's parameters), of the process, of ``x_init`` and of ``cond`` are
traced, so new values of the same shape do not recompile; the solver is static.

Manual stepping uses the same pieces::

    plan = make_plan(process, solver, ts)
    state = init(plan, score_fn, process, x_init)
    for _ in range(plan.num_steps):
        state = step(plan, score_fn, process, state)
    x = current_x(plan, process, state)
"""

from __future__ import annotations

import dataclasses
import math
from collections.abc import Callable
from typing import Any, NamedTuple

import equinox as eqx
import equinox.internal as eqxi
import jax
import jax.numpy as jnp
import numpy as np

from jaxode_diffusion.sampling.defaults import DEFAULT_SOLVER, default_grid_for
from jaxode_diffusion.sampling.grids import check_num_steps, make_grid, validate_grid
from jaxode_diffusion.processes import ForwardProcess
from jaxode_diffusion.solvers.base import AbstractSolver, StepInfo
from jaxode_diffusion.solvers.registry import get_solver, register_solver, solver_names
from jaxode_diffusion.solvers.runge_kutta import RungeKutta
from jaxode_diffusion.utils.checks import (
    check_batch,
    check_bool,
    check_callable,
    check_instance,
    check_times_in_range,
    nonfinite_rows,
)

__all__ = [
    "solve",
    "sample",
    "Solution",
    "RESULTS",
    "Conditioned",
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

class Plan(eqx.Module):
    """Precomputed step data: the grid in ``t`` and ``u`` and the time of every stage.

    Build it with :func:`make_plan`; :func:`init`, :func:`step` and :func:`current_x` step
    through it by hand (the loop :func:`solve` runs inside one ``lax.scan``).

    Example:
        >>> import jax
        >>> from jaxode_diffusion import GaussianMixture, VPLinear, make_times
        >>> gm, vp = GaussianMixture.ring(4), VPLinear()
        >>> score_fn, x = gm.score_fn(vp), vp.prior_sample(jax.random.PRNGKey(0), (4, 2))
        >>> plan = make_plan(vp, "dpmpp_2m", make_times(vp, num_steps=4, grid="log_snr"))
        >>> state = init(plan, score_fn, vp, x)
        >>> for _ in range(plan.num_steps):
        ...     state = step(plan, score_fn, vp, state)
        >>> current_x(plan, vp, state).shape, int(state.nfe)
        ((4, 2), 4)
    """

    # A pytree field, not static: a learned solver's per-step coefficients are arrays (traced, so
    # differentiable; as static data eqx warns and jit cannot hash them); a fixed solver has no array leaves.
    solver: AbstractSolver
    ts: jax.Array  # (N+1,)
    us: jax.Array  # (N+1,)
    t_stages: jax.Array  # (N, S)

    @property
    def num_steps(self) -> int:
        """Number of steps ``N`` (the grid has ``N + 1`` times)."""
        return self.ts.shape[0] - 1

    def step_info(self, n) -> StepInfo:
        """The :class:`~jaxode_diffusion.solvers.base.StepInfo` of step ``n`` (traced ``n`` allowed)."""
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
    """Build the :class:`Plan` for ``solver`` on the time grid ``ts``: the grid in ``t`` and in the
    form's variable ``u``, and the time of every stage.

    Example:
        >>> from jaxode_diffusion import VPLinear, make_times
        >>> from jaxode_diffusion.sampling import make_plan
        >>> vp = VPLinear()
        >>> plan = make_plan(vp, "x0-lambda:rk4", make_times(vp, num_steps=5, grid="log_snr"))
        >>> plan.num_steps, plan.t_stages.shape
        (5, (5, 4))
    """
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
    """State of a run: the form's state ``y``, the solver's history, step index, NFE so far.

    Example:
        >>> import jax.numpy as jnp
        >>> from jaxode_diffusion import VPLinear, make_times
        >>> plan = make_plan(VPLinear(), "rk4", make_times(VPLinear(), num_steps=2, grid="uniform"))
        >>> state = init(plan, lambda x, t: -x, VPLinear(), jnp.ones((1, 2)))
        >>> int(state.index), int(state.nfe), state.solver_state is None
        (0, 0, True)
    """

    y: jax.Array
    solver_state: Any
    index: jax.Array
    nfe: jax.Array


def init(plan: Plan, score_fn, process: ForwardProcess, x_init) -> SamplerState:
    """Initial state from ``x_init`` at ``plan.ts[0]`` (a multistep solver evaluates the score
    once here; that evaluation is counted by the first :func:`step`).

    Example:
        >>> import jax.numpy as jnp
        >>> from jaxode_diffusion import VE, make_times
        >>> plan = make_plan(VE(), "x-t:euler", make_times(VE(), num_steps=2, grid="uniform"))
        >>> init(plan, lambda x, t: -x, VE(), jnp.ones((1, 2))).y.tolist()  # x-t: y = x
        [[1.0, 1.0]]
    """
    y0 = plan.solver.form.to_state(process, x_init, plan.ts[0])
    sstate = plan.solver.init(score_fn, process, y0, plan.ts[0])
    return SamplerState(y0, sstate, jnp.asarray(0, jnp.int32), jnp.asarray(0, jnp.int32))


def step(plan: Plan, score_fn, process: ForwardProcess, state: SamplerState) -> SamplerState:
    """Advance one step of the plan (the state's ``index`` and ``nfe`` grow accordingly).

    Example:
        >>> import jax.numpy as jnp
        >>> from jaxode_diffusion import VE, make_times
        >>> plan = make_plan(VE(), "rk4", make_times(VE(), num_steps=2, grid="uniform"))
        >>> state = step(plan, lambda x, t: -x, VE(), init(plan, lambda x, t: -x, VE(), jnp.ones((1, 2))))
        >>> int(state.index), int(state.nfe)
        (1, 4)
    """
    info = plan.step_info(state.index)
    y1, sstate, nfe = plan.solver.step(score_fn, process, state.y, state.solver_state, info)
    return SamplerState(y1, sstate, state.index + 1, state.nfe + jnp.asarray(nfe, jnp.int32))


def current_x(plan: Plan, process: ForwardProcess, state: SamplerState):
    """The sample ``x`` at the state's current time ``plan.ts[state.index]``.

    Example:
        >>> import jax.numpy as jnp
        >>> from jaxode_diffusion import VPLinear, make_times
        >>> plan = make_plan(VPLinear(), "x0-lambda:heun", make_times(VPLinear(), num_steps=2, grid="uniform"))
        >>> state = init(plan, lambda x, t: -x, VPLinear(), jnp.ones((1, 2)))
        >>> current_x(plan, VPLinear(), state).tolist()  # back from y = x / sigma
        [[1.0, 1.0]]
    """
    return plan.solver.form.from_state(process, state.y, plan.ts[state.index])


class RESULTS:
    """Result codes of :func:`solve` (``Solution.result``), in the manner of diffrax's RESULTS.

    ``successful`` (0); ``nonfinite_input``: ``x_init`` holds NaN/inf; ``invalid_grid``: ``ts``
    is not finite and strictly decreasing inside the process's time range; ``nonfinite_state``:
    the solver produced NaN/inf (``Solution.first_nonfinite_step`` says where).

    Example:
        >>> RESULTS.invalid_grid, RESULTS.messages[RESULTS.successful]
        (2, 'successful')
    """

    successful = 0
    nonfinite_input = 1
    invalid_grid = 2
    nonfinite_state = 3

    messages = {
        0: "successful",
        1: "x_init holds NaN or inf values: the input is bad, not the score",
        2: "the time grid ts is not finite and strictly monotone inside the process's time range",
        3: "the solver produced NaN or inf values (the score or the step size is the likely cause)",
    }


class Solution(NamedTuple):
    """What :func:`solve` returns (and :func:`sample` with a ``return_*`` flag).

    Attributes:
        samples: final samples, shaped and typed like ``x_init``.
        trajectory: ``(num_steps + 1, *x_init.shape)`` states at ``ts`` (``None`` unless asked).
        nfe: number of score evaluations (int32 scalar).
        ts: the time grid used.
        result: a :class:`RESULTS` code (int32 scalar; ``0`` on success).
        first_nonfinite_step: ``(B,)`` int32, for each batch element the first step whose result
            was NaN/inf, ``-1`` where every step was finite.

    Example:
        >>> import jax.numpy as jnp
        >>> from jaxode_diffusion import VE, make_times, solve
        >>> x = jnp.ones((2, 1)).at[1, 0].set(jnp.nan)
        >>> sol = solve(lambda x, t: -x, VE(), x, make_times(VE(), num_steps=3, grid="uniform"), "rk4", throw=False)
        >>> sol.ok, int(sol.result) == RESULTS.nonfinite_input
        (False, True)
    """

    samples: jax.Array
    trajectory: jax.Array | None
    nfe: jax.Array
    ts: jax.Array
    result: jax.Array | None = None
    first_nonfinite_step: jax.Array | None = None

    @property
    def ok(self) -> bool:
        """``True`` when ``result`` is ``RESULTS.successful`` (concrete solutions only)."""
        return int(self.result) == RESULTS.successful


class NonFiniteSampleError(FloatingPointError):
    """Raised when sampling produced NaN or inf (names the batch element and step).

    Example:
        >>> import jax.numpy as jnp
        >>> from jaxode_diffusion import VE, make_times, solve
        >>> blow_up = lambda x, t: x / (t - 0.5)         # infinite at t = 0.5, a grid point
        >>> try:
        ...     solve(blow_up, VE(), jnp.ones((2, 1)), make_times(VE(), num_steps=2, grid="uniform"), "x-t:euler")
        ... except NonFiniteSampleError as err:
        ...     print(str(err)[:56])
        sampling produced non-finite values: batch element 0 fir
    """


class Conditioned(eqx.Module):
    """``score_fn`` with its conditioning bound: ``Conditioned(f, cond)(x, t) = f(x, t, cond)``.

    A pytree, so the array leaves of ``cond`` are traced: new labels or embeddings of the same
    shape do not recompile. :func:`solve` and :func:`sample` build it from their ``cond`` argument.

    Example:
        >>> import jax.numpy as jnp
        >>> f = lambda x, t, c: x * c[:, None]
        >>> float(Conditioned(f, jnp.array([1.0, 2.0]))(jnp.ones((2, 3)), 0.5)[1, 0])
        2.0
    """

    score_fn: Callable
    cond: Any

    def __call__(self, x, t):
        return self.score_fn(x, t, self.cond)


@dataclasses.dataclass(frozen=True)
class _NonFiniteMessages:
    """The message for each (element, step) pair, formatted on demand (static, hashable)."""

    num_elements: int
    num_steps: int

    def __len__(self):
        return self.num_elements * self.num_steps

    def __getitem__(self, index: int) -> str:
        elem, n = divmod(int(index), self.num_steps)
        return (
            f"solve produced non-finite values: batch element {elem} (the first affected) first at step "
            f"{n} of {self.num_steps} (ts[{n}] -> ts[{n + 1}]). "
            "Check the score near that time, use more steps, or start at a smaller t_start; solve with "
            "throw=False and read Solution.first_nonfinite_step for every element."
        )


_INPUT_MESSAGES = (RESULTS.messages[1] + " (solve with throw=False to inspect).",
                   RESULTS.messages[2] + " (pass a grid from make_times or check it).")


_PROCESS_EXAMPLE = " (e.g. VPLinear() or ForwardProcess.from_alpha_sigma(...))"


def _is_traced(*trees) -> bool:
    return any(isinstance(leaf, jax.core.Tracer) for leaf in jax.tree_util.tree_leaves(trees))


def _state_dtype(x_init):
    # The state follows x_init; grids in low precision would be useless, so they are at least f32.
    return x_init.dtype if jnp.finfo(x_init.dtype).bits >= 32 else jnp.float32


def _validate_score(score_fn, x_init, t0, *, what="score_fn"):
    """Check ``score_fn``'s output shape and dtype by ``jax.eval_shape`` (no FLOPs)."""
    try:
        out = jax.eval_shape(score_fn, x_init, t0)
    except TypeError as e:
        raise ValueError(
            f"{what} could not be called as {what}(x, t) with x of shape {x_init.shape}: {e}. "
            "A conditional network takes score_fn(x, t, cond): pass cond=... to solve/sample."
        ) from e
    if not hasattr(out, "shape") or tuple(out.shape) != tuple(x_init.shape):
        got = getattr(out, "shape", type(out).__name__)
        raise ValueError(
            f"{what} must return an array shaped like x {tuple(x_init.shape)}; it returned {got}. "
            "A (B, 1) or (1, d) output would be broadcast silently into wrong samples: fix the "
            "network's output shape."
        )
    if not jnp.issubdtype(out.dtype, jnp.floating):
        raise ValueError(f"{what} must return floating-point values; it returned dtype {out.dtype}.")


def _validate_cond(cond, batch: int):
    for path, leaf in jax.tree_util.tree_leaves_with_path(cond):
        shape = jnp.shape(leaf)
        if len(shape) > 0 and shape[0] != batch:
            raise ValueError(
                f"cond{jax.tree_util.keystr(path)} has leading dimension {shape[0]} but x_init has batch "
                f"size {batch}: give one condition per sample (e.g. jnp.full(({batch},), label))."
            )


def _raise_nonfinite_input(x_init):
    bad = nonfinite_rows(x_init)
    i = int(np.argmax(bad))
    raise ValueError(
        f"x_init holds NaN/inf values: batch element {i} first ({int(bad.sum())} of {bad.shape[0]} "
        "elements affected). This is bad input, not a score failure: check how x_init was made."
    )


def _allows_zero_steps(solver) -> bool:
    # A zero-length step of an explicit one-step RK method is exactly the identity (y + 0 * k),
    # which lets callers pad grids of different lengths into one compiled program.
    return isinstance(solver, RungeKutta)


def _validate_grid_static(ts, process, solver):
    if ts.ndim != 1 or ts.shape[0] < 2:
        raise ValueError(f"ts must be a 1-D array of at least 2 times; got shape {ts.shape}.")
    if _is_traced(ts):
        return
    a = np.asarray(ts, dtype=np.float64)
    if not np.all(np.isfinite(a)):
        i = int(np.argmax(~np.isfinite(a)))
        raise ValueError(f"ts[{i}] = {a[i]!r} is not finite; every time in the grid must be finite.")
    d = np.diff(a) * np.sign(a[-1] - a[0])  # > 0 along the direction of integration
    ok = d >= 0 if _allows_zero_steps(solver) else d > 0
    if not (np.all(ok) and a[0] != a[-1]):
        i = int(np.argmax(~ok)) if not np.all(ok) else 0
        raise ValueError(
            f"ts must be strictly monotone (decreasing to sample from noise to data, increasing to "
            f"encode data into noise); ts[{i}] = {a[i]!r}, ts[{i + 1}] = {a[i + 1]!r}. Sort the grid "
            "and remove repeated times (make_times builds one)."
        )
    native = np.asarray(ts)  # its own dtype: a float32 end rounded from t_max is the end itself
    check_times_in_range(process, [native.min(), native.max()], "ts", f"got [{a.min()!r}, {a.max()!r}]")


def _grid_ok(ts, process, solver):
    fin = jnp.all(jnp.isfinite(ts))
    d = jnp.diff(ts) * jnp.sign(ts[-1] - ts[0])
    dec = jnp.all(d >= 0 if _allows_zero_steps(solver) else d > 0) & (ts[0] != ts[-1])
    inside = jnp.all(process.valid_t_range().contains(jnp.stack([jnp.min(ts), jnp.max(ts)])))
    return fin & dec & inside


def _solve_impl(score_fn, process, x_init, ts, solver, return_trajectory: bool, remat: bool,
                throw: bool):
    # Checked while tracing, so once per compilation: free on every cached call.
    _validate_score(score_fn, x_init, ts[0])
    plan = make_plan(process, solver, ts)
    input_ok = jnp.all(jnp.isfinite(x_init))
    grid_ok = _grid_ok(ts, process, plan.solver)
    if throw:
        # Input problems are reported before the solve runs (index 0: x_init, 1: grid).
        x_init = eqx.branched_error_if(
            x_init, ~(input_ok & grid_ok), jnp.where(input_ok, 1, 0), _INPUT_MESSAGES
        )
    state = init(plan, score_fn, process, x_init)
    batch = x_init.shape[0]
    bad0 = jnp.full((batch,), -1, jnp.int32)

    def body(carry, _):
        state, first_bad = carry
        state = step(plan, score_fn, process, state)
        finite = jnp.all(jnp.isfinite(state.y).reshape(state.y.shape[0], -1), axis=1)
        first_bad = jnp.where((first_bad < 0) & ~finite, state.index - 1, first_bad)
        out = state.y if return_trajectory else None
        return (state, first_bad), out

    if remat:
        # Online treeverse (equinox's checkpointed scan): gradient memory independent of steps.
        (state, first_bad), ys = eqxi.scan(
            body, (state, bad0), None, length=plan.num_steps, kind="checkpointed"
        )
    else:
        (state, first_bad), ys = jax.lax.scan(body, (state, bad0), None, length=plan.num_steps)
    form = plan.solver.form
    x = form.from_state(process, state.y, ts[-1]).astype(x_init.dtype)
    traj = None
    if return_trajectory:
        scale = form.scale(process, ts[1:]).astype(ys.dtype)
        xs = ys * scale.reshape((-1,) + (1,) * (ys.ndim - 1))
        traj = jnp.concatenate([x_init[None].astype(xs.dtype), xs], axis=0).astype(x_init.dtype)
    any_bad = jnp.any(first_bad >= 0)
    result = jnp.where(
        ~input_ok,
        RESULTS.nonfinite_input,
        jnp.where(~grid_ok, RESULTS.invalid_grid, jnp.where(any_bad, RESULTS.nonfinite_state, 0)),
    ).astype(jnp.int32)
    if throw:
        elem = jnp.argmax(first_bad >= 0)
        index = elem * plan.num_steps + jnp.maximum(first_bad[elem], 0)
        x = eqx.branched_error_if(x, any_bad, index, _NonFiniteMessages(batch, plan.num_steps))
    return Solution(x, traj, state.nfe, ts, result, first_bad)


_solve_jit = eqx.filter_jit(_solve_impl)


def _check_trajectory_size(ts, x_init, max_trajectory_bytes: int) -> None:
    nbytes = (ts.shape[0]) * x_init.size * x_init.dtype.itemsize
    if nbytes > max_trajectory_bytes:
        raise ValueError(
            f"return_trajectory=True would hold {nbytes / 2**30:.2f} GiB ({ts.shape[0]} states of "
            f"shape {x_init.shape}), over max_trajectory_bytes={max_trajectory_bytes}. Use fewer "
            "steps or a smaller batch, or raise max_trajectory_bytes if the memory is there."
        )


def _prepare_solve(score_fn, process, x_init, ts, solver, cond, flags, return_trajectory: bool,
                   max_trajectory_bytes: int):
    """The eager half of :func:`solve`: check the arguments (in the order their errors are
    reported) and bring them to what the compiled program takes.

    Returns:
        ``(score_fn, x_init, ts, solver)``: the score with ``cond`` bound (:class:`Conditioned`),
        ``x_init`` as an array, ``ts`` in the state's dtype, the solver object.
    """
    check_instance(process, ForwardProcess, "process", example=_PROCESS_EXAMPLE)
    check_callable(score_fn)
    for name, flag in flags:
        check_bool(flag, name)
    x_init = check_batch(x_init, "x_init")
    solver = get_solver(DEFAULT_SOLVER if solver is None else solver)
    ts = jnp.asarray(ts).astype(_state_dtype(x_init))
    _validate_grid_static(ts, process, solver)
    if cond is not None:
        _validate_cond(cond, x_init.shape[0])
        score_fn = Conditioned(score_fn, cond)
    if return_trajectory:
        _check_trajectory_size(ts, x_init, max_trajectory_bytes)
    return score_fn, x_init, ts, solver


def solve(
    score_fn: Callable,
    process: ForwardProcess,
    x_init,
    ts,
    solver=None,
    *,
    cond=None,
    return_trajectory: bool = False,
    throw: bool = True,
    remat: bool = False,
    max_trajectory_bytes: int = 4 * 2**30,
) -> Solution:
    """Integrate the probability-flow ODE on the explicit grid ``ts`` (from ``ts[0]`` to ``ts[-1]``).

    The public core: jit-able, vmap-able and differentiable with respect to ``x_init``, ``ts``,
    process, network parameters and ``cond`` (see the module docstring for failures and grids).

    Args:
        score_fn: ``score_fn(x, t)`` (``score_fn(x, t, cond)`` with ``cond``) for a batch ``x`` of
            shape ``(B, *event_shape)`` and a scalar ``t``, returning an array shaped like ``x``.
        process: the :class:`~jaxode_diffusion.processes.ForwardProcess`.
        x_init: ``(B, *event_shape)`` states at ``ts[0]``; the state's dtype follows it.
        ts: strictly monotone 1-D array of times (decreasing: noise to data, see
            :func:`make_times`; increasing: encode data into noise).
        solver: a name (``"rk4"``, ``"x0-lambda:rk4"``, ``"dpmpp_2m"``), a ``ButcherTableau`` or a
            solver object; ``None``: :data:`~jaxode_diffusion.sampling.defaults.DEFAULT_SOLVER`.
        cond: optional conditioning pytree (traced; leaves with a leading axis have ``B`` rows).
        return_trajectory: also return the states at every grid time.
        throw: raise on failure; ``False`` only records it in ``Solution.result``.
        remat: checkpointed scan, so the memory of ``jax.grad`` does not grow with the steps.
        max_trajectory_bytes: refuse ``return_trajectory`` above this many bytes of output.

    Returns:
        A :class:`Solution`.

    Raises:
        ValueError: bad arguments, named (shapes, dtypes, grid, score output shape, cond batch).
        NonFiniteSampleError: NaN/inf produced while solving (``throw=True``, eager call; under
            ``jit`` equinox's runtime error carries the same message).

    Example:
        >>> import jax, jax.numpy as jnp
        >>> from jaxode_diffusion import GaussianMixture, VPLinear, make_times, solve
        >>> gm, vp = GaussianMixture.ring(8), VPLinear()
        >>> x0 = vp.prior_sample(jax.random.PRNGKey(0), (16, 2))
        >>> ts = make_times(vp, num_steps=10, grid="log_snr")
        >>> sol = jax.jit(lambda x: solve(gm.score_fn(vp), vp, x, ts, "x0-lambda:rk4"))(x0)
        >>> sol.samples.shape, int(sol.nfe), int(sol.result)
        ((16, 2), 40, 0)
    """
    flags = (("return_trajectory", return_trajectory), ("throw", throw), ("remat", remat))
    score_fn, x_init, ts, solver = _prepare_solve(score_fn, process, x_init, ts, solver, cond, flags,
                                                  return_trajectory, max_trajectory_bytes)
    # Multi-process arrays cannot be read on one host: report failures in-program for those too.
    traced = _is_traced(score_fn, process, x_init, ts) or not getattr(x_init, "is_fully_addressable", True)
    sol = _solve_jit(score_fn, process, x_init, ts, solver, bool(return_trajectory), bool(remat),
                     bool(throw) and traced)
    if throw and not traced:
        _raise_if_failed(sol, x_init)
    return sol


def _raise_if_failed(sol: Solution, x_init) -> None:
    code = int(sol.result)
    if code == RESULTS.successful:
        return
    if code == RESULTS.nonfinite_input:
        _raise_nonfinite_input(x_init)
    if code == RESULTS.nonfinite_state:
        fb = np.asarray(sol.first_nonfinite_step)
        i = int(np.argmax(fb >= 0))
        n = int(fb[i])
        raise NonFiniteSampleError(
            f"sampling produced non-finite values: batch element {i} first at step {n} "
            f"(t = {float(sol.ts[n]):.4g} -> {float(sol.ts[n + 1]):.4g}); "
            f"{int(np.sum(fb >= 0))} of {fb.shape[0]} elements affected. Check the score near "
            "that time, use more steps, or start at a smaller t_start."
        )
    raise ValueError(RESULTS.messages[code] + ".")


def make_times(process: ForwardProcess, *, num_steps=None, t_start=None, t_end=None, grid=None, solver=None):
    """The time grid :func:`sample` uses for these arguments (validated).

    Args:
        process: the forward process.
        num_steps: number of steps (a positive int) for a named grid.
        t_start, t_end: defaults ``process.default_t_start`` / ``process.default_t_end``.
        grid: a name (``"uniform"``, ``"log_snr"``, ``"edm"``, ``"edm:R"``, ``"quadratic"``), an
            array of times, or a callable ``(process, num_steps, t_start, t_end) -> ts``;
            ``None``: the grid that measured best for ``solver`` on this kind of process
            (:func:`~jaxode_diffusion.sampling.defaults.default_grid_for`).
        solver: the solver the grid is for (only used when ``grid`` is ``None``; ``None``: the
            default solver).

    Example:
        >>> from jaxode_diffusion import VPLinear, make_times
        >>> make_times(VPLinear(), num_steps=4, grid="log_snr").shape
        (5,)
    """
    if num_steps is not None:
        num_steps = check_num_steps(num_steps)
    if grid is None:
        grid = default_grid_for(DEFAULT_SOLVER if solver is None else solver, process)
    if isinstance(grid, str):
        if num_steps is None:
            raise ValueError("num_steps is required with a named grid (e.g. num_steps=10).")
        t_start = process.default_t_start if t_start is None else t_start
        t_end = process.default_t_end if t_end is None else t_end
        if not _is_traced(t_start, t_end):
            ts_, te_ = float(t_start), float(t_end)
            if not (math.isfinite(ts_) and math.isfinite(te_)):
                raise ValueError(f"t_start={ts_!r} and t_end={te_!r} must be finite.")
            process.check_times(ts_, "t_start")
            process.check_times(te_, "t_end")
            if not ts_ > te_:
                raise ValueError(
                    f"t_start={ts_!r} must be larger than t_end={te_!r}: sampling runs from noise "
                    "(large t) to data (small t)."
                )
            check_times_in_range(process, [te_, ts_], f"t_start={ts_!r} and t_end={te_!r}",
                                 f"e.g. t_end={float(process.default_t_end)!r}")
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


def sample(
    score_fn: Callable,
    process: ForwardProcess,
    x_init,
    *,
    solver=None,
    num_steps: int | None = None,
    t_start=None,
    t_end=None,
    grid=None,
    cond=None,
    return_trajectory: bool = False,
    return_nfe: bool = False,
    check_finite: bool = True,
    remat: bool = False,
):
    """Sample from noise ``x_init`` at ``t_start`` down to ``t_end``: names -> grid -> :func:`solve`.

    Args:
        score_fn: ``score_fn(x, t)`` (``score_fn(x, t, cond)`` with ``cond``); see :func:`solve`.
            A plain function is static (keep the same function object across calls to avoid
            retracing); a pytree score's array leaves are traced.
        process: the :class:`~jaxode_diffusion.processes.ForwardProcess`.
        x_init: ``(B, *event_shape)`` initial states at ``t_start``.
        solver: ``"rk4"`` (plain RK in ``x-t``), ``"FORM:TABLEAU"`` (``"x0-lambda:rk4"``), a
            registered solver name, a ``ButcherTableau`` or a solver object. ``None`` (default):
            :data:`~jaxode_diffusion.sampling.defaults.DEFAULT_SOLVER`, the solver that measured best at
            NFE 10-20 (``"unipc_bh2_2"``; table in ``benchmarks/results/defaults.md``).
        num_steps: number of steps (NFE = steps x stages for RK); required with a named grid.
        t_start, t_end: defaults ``process.default_t_start`` and ``process.default_t_end``.
        grid: ``"uniform"``, ``"log_snr"``, ``"edm"`` (``"edm:R"``), ``"quadratic"``, an array of
            t values (then ``num_steps``/``t_start``/``t_end`` come from it; pass
            ``num_steps=None``), or a callable ``(process, num_steps, t_start, t_end) -> ts``.
            ``None`` (default): the named grid that measured best for this solver
            (:func:`~jaxode_diffusion.sampling.defaults.default_grid_for`, e.g. ``"log_snr"`` for
            ``"x0-lambda:rk4"`` and the DPM-Solver++/UniPC multistep family, ``"uniform"`` for
            plain ``"rk4"``).
        cond: conditioning pytree passed to ``score_fn(x, t, cond)`` (traced).
        return_trajectory: also return the states at every grid time.
        return_nfe: return a :class:`Solution` with the NFE.
        check_finite: raise :class:`NonFiniteSampleError` naming the first bad batch element and
            step when a result is NaN/inf (also under ``jit``, via :func:`solve`'s ``throw``).
        remat: memory-bounded gradients through the sampler (see :func:`solve`).

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
    check_instance(process, ForwardProcess, "process", example=_PROCESS_EXAMPLE)
    for name, flag in (("return_nfe", return_nfe), ("check_finite", check_finite)):
        check_bool(flag, name)
    solver = get_solver(DEFAULT_SOLVER if solver is None else solver)
    ts = make_times(process, num_steps=num_steps, t_start=t_start, t_end=t_end, grid=grid, solver=solver)
    sol = solve(score_fn, process, x_init, ts, solver, cond=cond, return_trajectory=return_trajectory,
                throw=bool(check_finite), remat=remat)
    if return_trajectory or return_nfe:
        return sol
    return sol.samples
