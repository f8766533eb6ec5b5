"""Learned time grids: choose where a fixed budget of steps falls by gradient descent.

For a solver and a step count the interior times ``t_1 > ... > t_{N-1}`` are parameters; the loss
is the end-point error of the jit-compiled sampler against a tight reference solve on a
calibration batch, and its gradient flows through the whole ``lax.scan`` (the grid is a traced
array passed to the sampler; the solver stays static). Monotonicity holds by
construction: the steps in log-SNR are

    lambda_{i+1} - lambda_i = softmax(theta)_i * (lambda(t_end) - lambda(t_start)),

positive and summing to the whole range, and ``t_i = t(lambda_i)`` through the process's inverse
(whose derivative we take by the implicit-function rule ``dt/dlambda = 1 / lambda'(t)``, so
processes whose inverse is a bisection are differentiable too). Optimisation uses
``optax.adam`` on ``log`` of the mean squared end-point error (scale free, so one learning rate
suits every problem). The idea is that of "AYS" / learned schedules (Sabour, Fidler, Kreis 2024,
"Align Your Steps"; Watson et al. 2021, "Learning fast samplers"), here with the exact end-point
error as the objective.

Generalisation: the iterate returned is the one with the lowest error on held-back samples that
the gradient never sees (the starting grid included), so a learned grid is never worse than its
start on them; optimisation stops early when that error stops improving. Non-finite losses or
gradients are reported (warning and ``nonfinite_iteration``, or an error), never zeroed.

An :class:`OptimizedGrid` is saved as plain JSON (times, process class and parameters, solver,
step count, calibration loss, held-out validation error) and :func:`load_grid` validates it.
"""

from __future__ import annotations

import dataclasses
import json
import math
import os
import time
import warnings
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import equinox as eqx
import jax
import jax.numpy as jnp
import numpy as np
import optax

from jaxode_diffusion import processes as _processes
from jaxode_diffusion.analysis.diffrax_drivers import reference_solve
from jaxode_diffusion.analysis.distances import rmse
from jaxode_diffusion.utils.outputs import write_json_atomic
from jaxode_diffusion.processes import ForwardProcess
from jaxode_diffusion.sampling.core import get_solver, make_times

__all__ = ["OptimizedGrid", "optimize_grid", "evaluate_grid", "load_grid", "grid_from_logits",
           "NonFiniteGridLossError", "reference_tolerance", "saved_field", "tight_reference"]

_FORMAT = "jaxode_diffusion.optimized_grid/1"


# ---------------------------------------------------------------------------------------------
# Parametrisation.
# ---------------------------------------------------------------------------------------------
def _t_of_lambda(process: ForwardProcess, lam):
    """``t(lambda)`` with the implicit-function derivative ``1 / lambda'(t)`` (exact to first order)."""
    t0 = jax.lax.stop_gradient(process.t_of_lambda(lam))
    slope = jax.lax.stop_gradient(process.dlam_dt(t0))
    return t0 + (lam - jax.lax.stop_gradient(lam)) / slope


def grid_from_logits(process: ForwardProcess, logits, t_start, t_end):
    """The grid ``t_0 = t_start > ... > t_N = t_end`` whose log-SNR steps are ``softmax(logits)``.

    Example:
        >>> import jax.numpy as jnp
        >>> from jaxode_diffusion import VPLinear
        >>> ts = grid_from_logits(VPLinear(), jnp.zeros(4), 1.0, 1e-3)  # = the "log_snr" grid
        >>> ts.shape
        (5,)
    """
    logits = jnp.asarray(logits)
    t_start = jnp.asarray(t_start, logits.dtype)
    t_end = jnp.asarray(t_end, logits.dtype)
    l0, l1 = process.lam(t_start), process.lam(t_end)
    inc = jax.nn.softmax(logits) * (l1 - l0)
    lams = l0 + jnp.concatenate([jnp.zeros((1,), logits.dtype), jnp.cumsum(inc)])
    ts = _t_of_lambda(process, lams[1:-1])
    return jnp.concatenate([t_start[None], ts.astype(logits.dtype), t_end[None]])


def logits_of_grid(process, ts):
    """The logits whose :func:`grid_from_logits` is ``ts``: log shares of the log-SNR steps."""
    lam = np.asarray(process.lam(jnp.asarray(ts)), dtype=np.float64)
    d = np.diff(lam)
    if not np.all(d > 0):
        raise ValueError("init_grid must be strictly decreasing in t (increasing in log-SNR).")
    return np.log(d / d.sum())


# ---------------------------------------------------------------------------------------------
# Result and (de)serialisation.
# ---------------------------------------------------------------------------------------------
def process_spec(process: ForwardProcess) -> dict:
    """``{"class", "params"}``: the process's class and scalar parameters, for saved grids to match."""
    params: dict[str, Any] = {}
    for f in dataclasses.fields(process):
        v = getattr(process, f.name)
        if isinstance(v, bool | int | float | str) or v is None:
            params[f.name] = v
        elif isinstance(v, jax.Array | np.ndarray | np.generic) and np.ndim(v) == 0:
            params[f.name] = float(v)
        else:
            params[f.name] = None  # not representable (a callable, an array of parameters)
            params.setdefault("_unrepresentable", []).append(f.name)
    return {"class": type(process).__name__, "params": params}


def spec_matches(a: dict, b: dict) -> bool:
    """Whether two :func:`process_spec` dicts describe the same process (floats to 1e-12)."""
    if a["class"] != b["class"]:
        return False
    pa, pb = a["params"], b["params"]
    for k in set(pa) | set(pb):
        va, vb = pa.get(k), pb.get(k)
        if isinstance(va, float) and isinstance(vb, float | int):
            if not math.isclose(va, float(vb), rel_tol=1e-12, abs_tol=0.0):
                return False
        elif va != vb:
            return False
    return True


@dataclass
class OptimizedGrid:
    """A learned time grid and how it was obtained.

    Attributes:
        ts: ``(num_steps + 1,)`` decreasing times (NumPy float64).
        solver: the solver spec it was optimised for (e.g. ``"dpmpp_2m"``).
        num_steps: number of steps.
        process: ``{"class": name, "params": {...}}`` of the forward process.
        init_grid: the grid it started from.
        calibration_loss: end-point RMSE on the fitted part of the calibration batch.
        initial_calibration_loss: the same for the initial grid.
        validation_error: end-point RMSE on held-out samples (never the calibration batch).
        initial_validation_error: the initial grid's held-out RMSE.
        history: RMSE on the fitted part of the calibration batch, per iteration.
        selection_error: RMSE on the held-back samples that chose the iterate (of the returned grid).
        initial_selection_error: the same for the initial grid (``>= selection_error``).
        selection_history: held-back RMSE after each iteration.
        improved: whether an iterate beat the starting grid on the held-back samples (if not, the
            starting grid is returned).
        best_iteration: the chosen iterate (0 = the starting grid); iterations: how many ran.
        nonfinite_iteration: the iteration where a loss/gradient was NaN/inf (optimisation stopped
            there), or ``None``.
        note: one line saying what happened.
    """

    ts: np.ndarray
    solver: str
    num_steps: int
    process: dict
    init_grid: str
    calibration_loss: float
    initial_calibration_loss: float
    validation_error: float | None = None
    initial_validation_error: float | None = None
    history: list[float] = field(default_factory=list)
    selection_error: float | None = None
    initial_selection_error: float | None = None
    selection_history: list[float] = field(default_factory=list)
    improved: bool | None = None
    best_iteration: int | None = None
    iterations: int | None = None
    nonfinite_iteration: int | None = None
    note: str = ""

    @property
    def t_start(self) -> float:
        return float(self.ts[0])

    @property
    def t_end(self) -> float:
        return float(self.ts[-1])

    def to_dict(self) -> dict:
        d = dataclasses.asdict(self)
        d["ts"] = [float(t) for t in np.asarray(self.ts, dtype=np.float64)]
        d["format"] = _FORMAT
        return d

    def save(self, path: str | os.PathLike) -> Path:
        """Write the grid as JSON to ``path`` (atomically); returns the path."""
        return write_json_atomic(path, self.to_dict(), sort_keys=False, parents=True)


def saved_field(d: dict, name: str, path, kind: str, *, fix: str = "re-save it"):
    """Field ``name`` of a loaded JSON dict ``d`` read as ``kind``; the error names the file and field.

    ``kind``: ``"times"`` (1-D finite floats), ``"steps"`` (an int >= 1), ``"str"``, ``"dict"``,
    ``"error"`` (a number or ``null``, returned as float, ``null`` -> NaN) or ``"errors"`` (a list of
    those).

    Raises:
        ValueError: ``"'{path}': field {name}={value!r} <what is wrong>; {fix}."``

    Example:
        >>> saved_field({"num_steps": "five"}, "num_steps", "grid.json", "steps")
        Traceback (most recent call last):
        ...
        ValueError: 'grid.json': field num_steps='five' must be an integer >= 1; re-save it.
    """
    value = d[name]
    where = f"{os.fspath(path)!r}: field {name}={value!r}"
    try:
        if kind == "times":
            ts = np.asarray(value, dtype=np.float64)
            if ts.ndim != 1:
                raise ValueError
            return ts
        if kind == "steps":
            if isinstance(value, bool) or not isinstance(value, int | float) or int(value) != value or value < 1:
                raise ValueError
            return int(value)
        if kind == "error":
            if isinstance(value, bool) or not (value is None or isinstance(value, int | float | str)):
                raise ValueError
            return float("nan") if value is None else float(value)
        if kind == "errors":
            if not isinstance(value, list):
                raise ValueError
            return [float("nan") if v is None else float(v) for v in value]
        if kind in ("str", "dict") and isinstance(value, str if kind == "str" else dict):
            return value
        raise ValueError
    except (TypeError, ValueError):
        expected = {"times": "must be a list of numbers (the decreasing times)",
                    "steps": "must be an integer >= 1",
                    "error": "must be a number or null",
                    "errors": "must be a list of numbers or nulls",
                    "str": "must be a string", "dict": "must be an object ({...})"}[kind]
        raise ValueError(f"{where} {expected}; {fix}.") from None


def load_grid(path: str | os.PathLike, process: ForwardProcess | None = None) -> OptimizedGrid:
    """Read a grid saved by :meth:`OptimizedGrid.save` and validate it.

    Args:
        path: the JSON file.
        process: if given, the grid's recorded process must match it (class and parameters).

    Returns:
        The :class:`OptimizedGrid`; pass ``grid.ts`` as ``sample(..., grid=grid.ts)``.

    Raises:
        ValueError: unreadable or incomplete file, times not strictly decreasing / not finite /
            not ``num_steps + 1`` of them, or a process mismatch.

    Losses that were not finite are ``null`` in the file (bare ``NaN`` in earlier releases' files);
    both load as NaN.

    Example:
        >>> g = load_grid("grid.json")          # doctest: +SKIP
        >>> sample(score_fn, VPLinear(), x, solver=g.solver, grid=g.ts)  # doctest: +SKIP
    """
    path = Path(path)
    try:
        d = json.loads(path.read_text())
    except (OSError, json.JSONDecodeError) as err:
        raise ValueError(f"cannot read an optimised grid from {str(path)!r}: {err}") from err
    if not isinstance(d, dict) or d.get("format") != _FORMAT:
        raise ValueError(f"{str(path)!r} is not an optimised-grid file (format="
                         f"{d.get('format') if isinstance(d, dict) else None!r}, want {_FORMAT!r}).")
    required = ["ts", "solver", "num_steps", "process", "init_grid", "calibration_loss", "initial_calibration_loss"]
    missing = [k for k in required if k not in d]
    if missing:
        raise ValueError(f"{str(path)!r} lacks the fields {missing}; re-save it with OptimizedGrid.save.")
    fix = "re-save it with OptimizedGrid.save"
    ts = saved_field(d, "ts", path, "times", fix=fix)
    n = saved_field(d, "num_steps", path, "steps", fix=fix)
    saved_field(d, "solver", path, "str", fix=fix)
    if ts.shape[0] != n + 1:
        raise ValueError(f"{str(path)!r}: num_steps={n} needs {n + 1} times, got shape {ts.shape}.")
    if not np.all(np.isfinite(ts)) or not np.all(np.diff(ts) < 0):
        raise ValueError(f"{str(path)!r}: field ts: the times must be finite and strictly decreasing; got {ts}.")
    spec = saved_field(d, "process", path, "dict", fix=fix)
    if process is not None:
        if not spec_matches(spec, process_spec(process)):
            raise ValueError(
                f"{str(path)!r} was optimised for {spec}, not for {process_spec(process)}; "
                "pass the matching process (or none)."
            )
        if ts[0] > float(process.t_max) * (1 + 1e-12) or ts[-1] < float(process.t_min):
            raise ValueError(f"{str(path)!r}: times outside the process range [{process.t_min}, {process.t_max}].")
    elif not hasattr(_processes, spec.get("class", "")):
        raise ValueError(f"{str(path)!r}: unknown process class {spec.get('class')!r}.")
    fields = {f.name for f in dataclasses.fields(OptimizedGrid)}
    kw = {k: v for k, v in d.items() if k in fields}
    kw["ts"] = ts
    # Non-finite numbers are null in strict JSON (earlier releases wrote bare NaN, which loads as is).
    for name in ("calibration_loss", "initial_calibration_loss"):
        kw[name] = saved_field(d, name, path, "error", fix=fix)
    for name in ("history", "selection_history"):
        if name in d:
            kw[name] = saved_field(d, name, path, "errors", fix=fix)
    return OptimizedGrid(**kw)


# ---------------------------------------------------------------------------------------------
# Evaluation and optimisation.
# ---------------------------------------------------------------------------------------------
def reference_tolerance(dtype, rtol=None, *, default: float = 1e-11) -> float:
    """The rtol/atol of a reference solve in precision ``dtype``: ``rtol`` (or ``default``).

    A default below what the dtype can reach (8 machine epsilons: ``9.5e-7`` in float32) is raised
    to it, so a float32 batch never asks an adaptive solver for float64 accuracy (it would run into
    its step limit); an explicit ``rtol`` below it is refused.

    Raises:
        ValueError: ``rtol`` is not a finite number > 0, or below 8 eps of ``dtype``.

    Example:
        >>> import jax.numpy as jnp
        >>> reference_tolerance(jnp.float64), round(reference_tolerance(jnp.float32), 9)
        (1e-11, 9.54e-07)
    """
    floor = 8.0 * float(jnp.finfo(dtype).eps)
    if rtol is None:
        return max(float(default), floor)
    if isinstance(rtol, bool) or not isinstance(rtol, int | float | np.floating) or not (
            math.isfinite(rtol) and rtol > 0):
        raise ValueError(f"rtol={rtol!r} must be a finite number > 0 (the reference solves' tolerance), "
                         "or None for the default of the batch's precision.")
    if rtol < floor:
        raise ValueError(
            f"rtol={rtol!r} is below what {jnp.dtype(dtype).name} can reach (8 eps = {floor:.2g}): the "
            f"reference solve would hit its step limit; pass rtol >= {floor:.2g}, None, or float64 inputs."
        )
    return float(rtol)


def tight_reference(score_fn, process, x, t_start, t_end, *, rtol=None, default: float = 1e-11,
                    name: str = "x"):
    """The reference end points of ``x`` (an adaptive Dopri8 solve at :func:`reference_tolerance`).

    Raises:
        ValueError: a bad ``rtol``; or the solve ran into its step limit, with the likely causes
            (a score NaN/inf along the way, or a tolerance the precision cannot reach) instead of
            diffrax's bare message.

    Example:
        >>> import jax.numpy as jnp
        >>> from jaxode_diffusion import VPLinear
        >>> tight_reference(lambda x, t: -x, VPLinear(), jnp.ones((2, 1)), 1.0, 0.5).shape
        (2, 1)
    """
    x = jnp.asarray(x)
    tol = reference_tolerance(x.dtype, rtol, default=default)
    try:
        return reference_solve(score_fn, process, x, t_start=t_start, t_end=t_end, rtol=tol, atol=tol)
    except Exception as err:
        if "maximum number of solver steps" not in str(err):
            raise
        raise ValueError(
            f"the reference solve of {name} ({x.dtype}, rtol=atol={tol:.2g}, t {float(t_start):.4g} -> "
            f"{float(t_end):.4g}) hit diffrax's step limit: the score most likely returns NaN/inf or blows "
            "up somewhere on that range; check score_fn(x, t) at a few times (a larger budget or more "
            "steps cannot help), or pass a looser rtol."
        ) from None


def _reference(score_fn, process, x, t_start, t_end):
    """The tight reference end points of ``x``, at the tolerance its precision can reach."""
    return tight_reference(score_fn, process, x, t_start, t_end)


def _endpoint(score_fn, process, x_init, ts, solver):
    """End points of ``solver`` on the (possibly traced) grid ``ts``; jit- and grad-able.

    Uses the public ``solve`` when the sampling module has it (non-finite values are this
    module's business: it checks every loss and gradient), else ``sample`` with an explicit grid.
    """
    from jaxode_diffusion.sampling import core as sampling

    solve = getattr(sampling, "solve", None)
    if solve is not None:
        return solve(score_fn, process, x_init, ts, solver, throw=False).samples
    return sampling.sample(score_fn, process, x_init, solver=solver, grid=ts, num_steps=None, check_finite=False)


class NonFiniteGridLossError(FloatingPointError):
    """Raised by :func:`optimize_grid` (``on_nonfinite="raise"``) when a loss or gradient is NaN/inf."""


def evaluate_grid(score_fn, process: ForwardProcess, x_init, grid, *, solver, reference=None) -> float:
    """End-point RMSE ``sqrt(mean_b ||x_b - x_ref_b||^2)`` of ``solver`` on ``grid``.

    Args:
        x_init: held-out initial states (do not reuse the calibration batch).
        grid: an array of times, or an :class:`OptimizedGrid`.
        reference: reference end points (default :func:`reference_solve` over the grid's range).

    Returns:
        The RMSE (``nan`` or ``inf`` when the solver blew up; never silently finite).

    Example:
        >>> err = evaluate_grid(sf, vp, x_test, g, solver="dpmpp_2m")  # doctest: +SKIP
    """
    ts = grid.ts if isinstance(grid, OptimizedGrid) else grid
    ts = make_times(process, grid=jnp.asarray(ts, jnp.asarray(x_init).dtype))
    x_init = jnp.asarray(x_init)
    if reference is None:
        reference = _reference(score_fn, process, x_init, ts[0], ts[-1])
    x = _endpoint(score_fn, process, x_init, ts, get_solver(solver))
    return float(rmse(x, reference))


class _Static(eqx.Module):
    """Carries the solver through ``filter_jit`` as a static (hashed) value."""

    value: Any = eqx.field(static=True)


def _logits(phi, theta0, bound):
    """Logits ``theta0 + bound * tanh(phi / bound)``: each log-SNR step's share moves by at most a
    factor ``exp(bound)`` before normalisation (``exp(2 bound)`` after); ``bound = inf``: unbounded."""
    finite = jnp.isfinite(bound)
    b = jnp.where(finite, bound, 1.0)
    return theta0 + jnp.where(finite, b * jnp.tanh(phi / b), phi)


def _mse_log_impl(phi, theta0, bound, t_se, solver, sf, proc, x, ref):
    ts = grid_from_logits(proc, _logits(phi, theta0, bound), t_se[0], t_se[1])
    out = _endpoint(sf, proc, x, ts, solver.value)
    diff = (out - ref).reshape(x.shape[0], -1)
    return jnp.log(jnp.mean(jnp.sum(diff**2, axis=1)))


_mse_log = eqx.filter_jit(_mse_log_impl)


@eqx.filter_jit
def _update(phi, opt_state, theta0, bound, reg, lr, t_se, solver, sf, proc, x, ref):
    """One Adam step on ``log MSE + reg |theta - theta0|^2`` (module level: compiled once per solver,
    shapes and score, not once per call; every number is traced)."""

    def loss_fn(ph):
        d = _logits(ph, theta0, bound) - theta0
        d = d - jnp.mean(d)  # softmax is shift invariant: penalise only what changes the grid
        return _mse_log_impl(ph, theta0, bound, t_se, solver, sf, proc, x, ref) + reg * jnp.sum(d**2)

    loss, g = jax.value_and_grad(loss_fn)(phi)
    upd, new_state = optax.adam(lr).update(g, opt_state, phi)
    ok = jnp.isfinite(loss) & jnp.all(jnp.isfinite(g))
    return optax.apply_updates(phi, upd), new_state, loss, ok


def optimize_grid(
    score_fn, process: ForwardProcess, calib_x_init, *, solver, num_steps: int, t_start=None, t_end=None,
    init_grid="log_snr", reference=None, steps: int = 200, learning_rate: float = 0.02, selection_x_init=None,
    selection_reference=None, holdout_fraction: float = 0.25, patience: int | None = 60,
    regularization: float = 0.0, max_step_change: float | None = None, on_nonfinite: str = "stop",
    validation_x_init=None, validation_reference=None, key=None, validate: bool = True,
    max_seconds: float | None = None,
) -> OptimizedGrid:
    """Learn the interior times of a ``num_steps`` grid for ``solver`` by Adam (see the module docstring).

    Minimises ``log mean_b ||x_b(grid) - x_ref_b||^2`` (plus ``regularization * ||theta - theta_0||^2 / N``
    on the log-SNR step logits) over the fitted calibration samples; the iterate returned is the best on
    held-back samples the gradient never sees, the starting grid included (``improved`` says whether an
    iterate beat it). Measurements behind the defaults and batch sizes: benchmarks/README.md.

    Args:
        score_fn, process: as for :func:`~jaxode_diffusion.sample`; ``solver``: any solver spec.
        calib_x_init: ``(B, ...)`` calibration initial states at ``t_start`` (a few hundred; 512 at d >= 8).
        num_steps: steps of the grid (``>= 2``); ``t_start, t_end``: the range (process defaults).
        init_grid: a named grid or an array to start from; ``reference``: end points of ``calib_x_init``.
        steps, learning_rate: maximum Adam iterations and Adam's step on the logits.
        selection_x_init, selection_reference: held-back states (and reference) that only choose the
            iterate; without them the first ``holdout_fraction`` of ``calib_x_init`` is held back.
        patience: stop after this many iterations without a held-back improvement (``None``: never).
        max_step_change: trust region: a log-SNR step may shrink or grow by at most this factor.
        on_nonfinite: ``"stop"`` (keep the best iterate, warn, set ``nonfinite_iteration``) or ``"raise"``.
        validation_x_init, validation_reference, key, validate: a third batch only for reporting
            ``validation_error`` (default: drawn from ``key or PRNGKey(0)`` unless ``validate=False``).
        max_seconds: stop iterating after this long (at least one iteration runs; ``None``: no limit).

    Returns:
        :class:`OptimizedGrid` with calibration, held-back and validation errors, start and result.

    Raises:
        ValueError: a bad argument, or a held-back / validation batch equal to the calibration batch.
        NonFiniteGridLossError: a NaN/inf loss or gradient with ``on_nonfinite="raise"``.

    Example:
        >>> import jax
        >>> from jaxode_diffusion import GaussianMixture, VPLinear
        >>> gm, vp = GaussianMixture.ring(4), VPLinear()
        >>> x = vp.prior_sample(jax.random.PRNGKey(1), (16, 2))
        >>> g = optimize_grid(gm.score_fn(vp), vp, x, solver="dpmpp_2m", num_steps=5, steps=5)
        >>> g.ts.shape, g.selection_error <= g.initial_selection_error
        ((6,), True)
    """
    _check_optimize_args(num_steps, steps, learning_rate, patience, max_step_change, regularization,
                         on_nonfinite, max_seconds)
    x_cal = jnp.asarray(calib_x_init)
    t_start = process.default_t_start if t_start is None else float(t_start)
    t_end = process.default_t_end if t_end is None else float(t_end)
    solver_obj = get_solver(solver)
    solver_name = solver if isinstance(solver, str) else solver_obj.name
    start = _start_grid(process, num_steps, t_start, t_end, init_grid, x_cal.dtype)
    if reference is None:
        reference = _reference(score_fn, process, x_cal, start.t_start, start.t_end)
    split = _split_batches(score_fn, process, x_cal, reference, selection_x_init, selection_reference,
                           holdout_fraction, start)
    x_val, validation_reference = _validation_batch(score_fn, process, x_cal, validation_x_init,
                                                    validation_reference, key, validate, start)
    problem = _Problem(score_fn, process, solver_obj, solver_name, int(num_steps), start, split, x_val,
                       validation_reference)
    obj = _Objective.build(process, problem, regularization, learning_rate, max_step_change)
    loop = _adam_loop(problem, obj, steps=steps, learning_rate=learning_rate, patience=patience,
                      on_nonfinite=on_nonfinite, max_seconds=max_seconds)
    return _result(problem, obj, loop)


# ---------------------------------------------------------------------------------------------
# The steps of optimize_grid(): validate, prepare, loop, select.
# ---------------------------------------------------------------------------------------------
@dataclass(frozen=True)
class _StartGrid:
    """The starting grid (in the batch's dtype), its range and its name (``"array"`` for times)."""

    ts: jax.Array
    t_start: float
    t_end: float
    name: str


@dataclass(frozen=True)
class _Split:
    """The fitted samples and the held-back (selection) samples, with their reference end points."""

    x_fit: jax.Array
    ref_fit: jax.Array
    x_sel: jax.Array
    ref_sel: jax.Array


@dataclass(frozen=True)
class _Problem:
    """What is optimised: model, solver, step count, starting grid and the three batches."""

    score_fn: Any
    process: ForwardProcess
    solver: Any
    solver_name: str
    num_steps: int
    start: _StartGrid
    split: _Split
    x_val: jax.Array | None
    ref_val: jax.Array | None


@dataclass(frozen=True)
class _Loop:
    """The outcome of the Adam loop: the best iterate (0: the start) and the losses along the way."""

    best_theta: jax.Array
    best_iteration: int
    best_selection: float  # log MSE on the held-back samples
    initial_selection: float
    history: list
    selection_history: list
    iterations: int
    nonfinite_iteration: int | None


def _check_optimize_args(num_steps, steps, learning_rate, patience, max_step_change, regularization,
                         on_nonfinite, max_seconds) -> None:
    if int(num_steps) != num_steps or num_steps < 2:
        raise ValueError(f"num_steps={num_steps!r}: need an integer >= 2 (a grid with interior points).")
    if int(steps) != steps or steps < 1:
        raise ValueError(f"steps={steps!r}: the number of Adam iterations must be >= 1.")
    if not learning_rate > 0:
        raise ValueError(f"learning_rate={learning_rate!r} must be > 0.")
    if patience is not None and (int(patience) != patience or patience < 1):
        raise ValueError(f"patience={patience!r} must be a positive integer or None (no early stopping).")
    if max_step_change is not None and not max_step_change > 1:
        raise ValueError(f"max_step_change={max_step_change!r} must be > 1 (or None: unbounded).")
    if not regularization >= 0:
        raise ValueError(f"regularization={regularization!r} must be >= 0.")
    if on_nonfinite not in ("stop", "raise"):
        raise ValueError(f"on_nonfinite={on_nonfinite!r}: choose 'stop' or 'raise'.")
    if max_seconds is not None and not max_seconds >= 0:
        raise ValueError(f"max_seconds={max_seconds!r} must be >= 0 (or None: no time limit).")


def _start_grid(process, num_steps, t_start, t_end, init_grid, dt) -> _StartGrid:
    if isinstance(init_grid, str):
        ts0 = make_times(process, num_steps=num_steps, t_start=t_start, t_end=t_end, grid=init_grid)
        init_name = init_grid
    else:
        ts0 = make_times(process, grid=init_grid)
        if ts0.shape[0] != num_steps + 1:
            raise ValueError(f"init_grid has {ts0.shape[0] - 1} steps but num_steps={num_steps}.")
        t_start, t_end = float(ts0[0]), float(ts0[-1])
        init_name = "array"
    return _StartGrid(ts0.astype(dt), t_start, t_end, init_name)


def _same(a, x_cal) -> bool:
    return a.shape == x_cal.shape and bool(jnp.all(a == x_cal))


def _split_batches(score_fn, process, x_cal, reference, selection_x_init, selection_reference,
                   holdout_fraction, start: _StartGrid) -> _Split:
    """The fitted and the held-back (selection) samples."""
    b = x_cal.shape[0]
    if selection_x_init is not None:
        x_sel = jnp.asarray(selection_x_init, x_cal.dtype)
        if _same(x_sel, x_cal):
            raise ValueError("selection_x_init equals the calibration batch; pass held-back samples.")
        if selection_reference is None:
            selection_reference = _reference(score_fn, process, x_sel, start.t_start, start.t_end)
        return _Split(x_cal, reference, x_sel, jnp.asarray(selection_reference))
    if not 0.0 < holdout_fraction < 1.0:
        raise ValueError(
            f"holdout_fraction={holdout_fraction!r} must lie in (0, 1) (or pass selection_x_init)."
        )
    n_sel = int(round(b * holdout_fraction))
    if n_sel < 2 or b - n_sel < 2:
        raise ValueError(
            f"calib_x_init has {b} samples: holding back holdout_fraction={holdout_fraction} leaves "
            f"{n_sel} held-back and {b - n_sel} fitted; need >= 2 of each (use a larger batch, "
            "a few hundred is advisable, or pass selection_x_init)."
        )
    return _Split(x_cal[n_sel:], reference[n_sel:], x_cal[:n_sel], reference[:n_sel])


def _validation_batch(score_fn, process, x_cal, validation_x_init, validation_reference, key, validate,
                      start: _StartGrid):
    """``(x_val, reference)`` of the batch that only reports ``validation_error``, or ``(None, None)``."""
    if validation_x_init is None and not validate:
        return None, validation_reference
    if validation_x_init is None:
        k = jax.random.PRNGKey(0) if key is None else key
        validation_x_init = process.prior_sample(k, x_cal.shape, start.t_start, dtype=x_cal.dtype)
    x_val = jnp.asarray(validation_x_init, x_cal.dtype)
    if _same(x_val, x_cal):
        raise ValueError("validation_x_init equals the calibration batch; pass held-out samples.")
    if validation_reference is None:
        validation_reference = _reference(score_fn, process, x_val, start.t_start, start.t_end)
    return x_val, validation_reference


@dataclass(frozen=True)
class _Objective:
    """The traced constants of the loss (start logits, trust region, penalty, learning rate, range)
    and the solver, bound once: :func:`_update` and :func:`_mse_log` compile once per solver."""

    theta0: jax.Array
    bound: jax.Array
    reg: jax.Array
    lr: jax.Array
    t_se: jax.Array
    solver: _Static

    @classmethod
    def build(cls, process, problem: _Problem, regularization, learning_rate, max_step_change) -> _Objective:
        dt = problem.start.ts.dtype
        theta0 = jnp.asarray(logits_of_grid(process, problem.start.ts), dt)
        reg = jnp.asarray(float(regularization) / max(1, problem.num_steps), dt)
        bound = jnp.asarray(math.inf if max_step_change is None else math.log(max_step_change) / 2, dt)
        return cls(theta0, bound, reg, jnp.asarray(learning_rate, dt),
                   jnp.asarray([problem.start.t_start, problem.start.t_end], dt), _Static(problem.solver))

    def update(self, phi, opt_state, sf, proc, x, ref):
        return _update(phi, opt_state, self.theta0, self.bound, self.reg, self.lr, self.t_se, self.solver,
                       sf, proc, x, ref)

    def selection_loss(self, phi, sf, proc, x, ref) -> float:
        return float(_mse_log(phi, self.theta0, self.bound, self.t_se, self.solver, sf, proc, x, ref))

    def grid(self, process, phi, t_start, t_end):
        return grid_from_logits(process, _logits(phi, self.theta0, self.bound), t_start, t_end)


def _adam_loop(p: _Problem, obj: _Objective, *, steps, learning_rate, patience, on_nonfinite,
               max_seconds) -> _Loop:
    """Adam on the fitted samples; after each step the held-back loss picks the best iterate so far.
    Stops after ``steps``, ``patience`` iterations without improvement, ``max_seconds``, or at a
    non-finite loss or gradient (warning, or :class:`NonFiniteGridLossError`)."""
    sf, proc, s = p.score_fn, p.process, p.split
    started = time.monotonic()
    theta = jnp.zeros_like(obj.theta0)  # the optimised variable phi; logits = _logits(phi, theta0, bound)
    opt_state = optax.adam(learning_rate).init(theta)  # init only: the jitted update uses the traced lr
    history: list[float] = []
    selection_history: list[float] = []
    best_sel = obj.selection_loss(theta, sf, proc, s.x_sel, s.ref_sel)
    initial_sel = best_sel
    best_theta, best_it, since = theta, 0, 0
    nonfinite_it = None
    stopped_at = 0
    for it in range(int(steps)):
        new_theta, new_state, loss, ok = obj.update(theta, opt_state, sf, proc, s.x_fit, s.ref_fit)
        loss = float(loss)
        history.append(math.exp(0.5 * loss) if np.isfinite(loss) else float("nan"))
        stopped_at = it + 1
        if not bool(ok):
            msg = (f"optimize_grid({p.solver_name}, num_steps={p.num_steps}): non-finite loss or gradient at "
                   f"iteration {it} (loss {loss!r}); ")
            if on_nonfinite == "raise":
                raise NonFiniteGridLossError(msg + "lower learning_rate, use float64, or pass "
                                             "on_nonfinite='stop'.")
            warnings.warn(msg + f"stopped there, keeping the best iterate ({best_it}).", RuntimeWarning,
                          stacklevel=3)
            nonfinite_it = it
            break
        theta, opt_state = new_theta, new_state
        sel = obj.selection_loss(theta, sf, proc, s.x_sel, s.ref_sel)
        selection_history.append(math.exp(0.5 * sel) if np.isfinite(sel) else float("nan"))
        if np.isfinite(sel) and sel < best_sel:
            best_sel, best_theta, best_it, since = sel, theta, it + 1, 0
        else:
            since += 1
        if patience is not None and since >= patience:
            break
        if max_seconds is not None and time.monotonic() - started > max_seconds:
            break
    return _Loop(best_theta, best_it, best_sel, initial_sel, history, selection_history, stopped_at,
                 nonfinite_it)


def _result(p: _Problem, obj: _Objective, loop: _Loop) -> OptimizedGrid:
    """The chosen grid (the best iterate, or the start if none beat it) with its errors and a note."""
    start = p.start
    rmse_initial, rmse_best = math.exp(0.5 * loop.initial_selection), math.exp(0.5 * loop.best_selection)
    improved = loop.best_iteration > 0
    if improved:
        ts_best = obj.grid(p.process, loop.best_theta, start.t_start, start.t_end)
        note = (f"iterate {loop.best_iteration} of {loop.iterations}: held-back RMSE {rmse_initial:.4g} -> "
                f"{rmse_best:.4g}")
    else:
        ts_best = start.ts
        note = (f"no iterate beat the starting grid {start.name!r} on the held-back samples "
                f"(RMSE {rmse_initial:.4g}); returning the starting grid")
    if loop.nonfinite_iteration is not None:
        note += f"; stopped at a non-finite loss/gradient at iteration {loop.nonfinite_iteration}"
    ts_np = np.asarray(ts_best, dtype=np.float64)
    # Rounding of t(lambda) cannot break monotonicity unless two lambdas coincide; check anyway.
    if not np.all(np.diff(ts_np) < 0):
        raise ValueError("the optimised grid collapsed (two equal times); lower learning_rate or steps.")

    def ev(x, ts, ref):
        return evaluate_grid(p.score_fn, p.process, x, ts, solver=p.solver, reference=ref)

    s = p.split
    return OptimizedGrid(
        ts=ts_np,
        solver=p.solver_name,
        num_steps=p.num_steps,
        process=process_spec(p.process),
        init_grid=start.name,
        calibration_loss=ev(s.x_fit, ts_best, s.ref_fit),
        initial_calibration_loss=ev(s.x_fit, start.ts, s.ref_fit),
        validation_error=None if p.x_val is None else ev(p.x_val, ts_best, p.ref_val),
        initial_validation_error=None if p.x_val is None else ev(p.x_val, start.ts, p.ref_val),
        history=loop.history,
        selection_error=rmse_best,
        initial_selection_error=rmse_initial,
        selection_history=loop.selection_history,
        improved=improved,
        best_iteration=loop.best_iteration,
        iterations=loop.iterations,
        nonfinite_iteration=loop.nonfinite_iteration,
        note=note,
    )
