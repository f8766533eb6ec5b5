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
           "NonFiniteGridLossError"]

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


def _logits_of_grid(process, ts):
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
        path = Path(path)
        path.parent.mkdir(parents=True, exist_ok=True)
        write_json_atomic(path, self.to_dict(), sort_keys=False)
        return path


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

    Example:
        >>> g = load_grid("grid.json")          # doctest: +SKIP
        >>> sample(score_fn, VPLinear(), x, solver=g.solver, grid=g.ts)  # doctest: +SKIP
    """
    path = Path(path)
    try:
        d = json.loads(path.read_text())
    except (OSError, json.JSONDecodeError) as err:
        raise ValueError(f"cannot read an optimised grid from {str(path)!r}: {err}") from err
    if d.get("format") != _FORMAT:
        raise ValueError(f"{str(path)!r} is not an optimised-grid file (format={d.get('format')!r}, want {_FORMAT!r}).")
    required = ["ts", "solver", "num_steps", "process", "init_grid", "calibration_loss", "initial_calibration_loss"]
    missing = [k for k in required if k not in d]
    if missing:
        raise ValueError(f"{str(path)!r} lacks the fields {missing}; re-save it with OptimizedGrid.save.")
    ts = np.asarray(d["ts"], dtype=np.float64)
    n = int(d["num_steps"])
    if ts.ndim != 1 or ts.shape[0] != n + 1:
        raise ValueError(f"{str(path)!r}: num_steps={n} needs {n + 1} times, got shape {ts.shape}.")
    if not np.all(np.isfinite(ts)) or not np.all(np.diff(ts) < 0):
        raise ValueError(f"{str(path)!r}: the times must be finite and strictly decreasing; got {ts}.")
    spec = d["process"]
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
    return OptimizedGrid(**kw)


# ---------------------------------------------------------------------------------------------
# Evaluation and optimisation.
# ---------------------------------------------------------------------------------------------
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
        reference = reference_solve(score_fn, process, x_init, t_start=ts[0], t_end=ts[-1])
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
    score_fn,
    process: ForwardProcess,
    calib_x_init,
    *,
    solver,
    num_steps: int,
    t_start=None,
    t_end=None,
    init_grid="log_snr",
    reference=None,
    steps: int = 200,
    learning_rate: float = 0.02,
    selection_x_init=None,
    selection_reference=None,
    holdout_fraction: float = 0.25,
    patience: int | None = 60,
    regularization: float = 0.0,
    max_step_change: float | None = None,
    on_nonfinite: str = "stop",
    validation_x_init=None,
    validation_reference=None,
    key=None,
    validate: bool = True,
    max_seconds: float | None = None,
) -> OptimizedGrid:
    """Learn the interior times of an ``num_steps`` grid for ``solver`` by Adam.

    Minimises ``log mean_b ||x_b(grid) - x_ref_b||^2`` (plus an optional penalty
    ``regularization * ||theta - theta_0||^2 / N`` pulling the log-SNR step logits toward the
    starting grid's) over the *fitted* calibration samples, where ``x_b(grid)`` is the
    jit-compiled sampler's end point and ``x_ref`` a tight reference solve. The iterate returned
    is chosen on **held-back** samples the gradient never sees: ``selection_x_init`` when given,
    else the first ``holdout_fraction`` of ``calib_x_init``. The starting grid is iterate 0, so the
    result is never worse than the start on the held-back samples; when no iterate beats it, the
    starting grid itself is returned and ``improved`` is ``False`` (with a note saying so).
    Optimisation stops early when the held-back error has not improved for ``patience``
    iterations.

    Why held-back selection: end-point RMSE is dominated by the few trajectories passing near a
    boundary between modes, so a grid fitted to one batch can overfit it. What it does and does not
    fix (benchmarks/results/accuracy_vs_nfe.md, d = 16, unipc_bh2_3, 128 calibration samples of
    which 32 held back, errors on a third batch of 128): NFE 10, held-out RMSE 0.278 -> 0.066; NFE
    20, the held-back RMSE falls 0.045 -> 0.0052 and the median error 0.019 -> 0.0039, yet the
    held-out RMSE rises 0.052 -> 0.36 (one trajectory of the third batch, unlike any in the first
    two, lands elsewhere). The trust region ``max_step_change=2`` prevents that (NFE 20: 0.052 ->
    0.048) at a price where learning helps (NFE 10: 0.278 -> 0.108); ``max_step_change=4`` gives
    0.404 and 0.073, so it is off by default (same problem and batches; the benchmark's
    ``--variants 2``). ``regularization=0.3`` changed nothing measurable (0.066 / 0.335).

    Calibration batch size: with 32 samples (8 held back) the selection kept the starting grid in
    the test problem (the 24 fitted samples overfit). At d >= 8 the fitted RMSE keeps falling
    while the held-back one stalls: the fit follows the few mode-switching trajectories of its own
    batch. Measured with separate calibration and held-back batches of B each (``selection_x_init``),
    unipc_bh2_3 at 10 steps from ``log_snr``, 100 steps, RMSE on a fresh batch of 1024 (start ->
    learned; mixtures of 4-6 anisotropic components, seeds 2402-2405): VE d = 8, B = 128 0.390 ->
    0.352, B = 256 0.355, B = 512 0.275 (``learning_rate`` 0.02) / 0.186 (0.05); EDM d = 16,
    B = 128 0.704 -> 0.684 (0.02) / 0.704 (0.05: start kept), B = 512 0.481 (0.05, median per-sample
    error 0.33 -> 0.079); SubVP d = 8, B = 128 0.523 -> 0.494, B = 512 0.346 (0.05). Use a few
    hundred, 512 at d >= 8, where the model allows it. Fitting the mean error instead of the RMSE
    (less weight on those trajectories) did not help (VE d = 8, B = 128: 0.349), nor did a cosine
    decay of the learning rate to 0.1x (B = 512: 0.195 VE, 0.394 SubVP).

    Args:
        score_fn, process: as for :func:`~jaxode_diffusion.sample`.
        calib_x_init: ``(B, ...)`` calibration initial states at ``t_start``.
        solver: any solver spec (``"dpmpp_2m"``, ``"x0-lambda:heun"``, ...).
        num_steps: steps of the grid (``>= 2``; a 1-step grid has no interior point).
        t_start, t_end: the range (process defaults).
        init_grid: a named grid or an array to start from.
        reference: reference end points of ``calib_x_init`` (default :func:`reference_solve`).
        steps: maximum Adam iterations; ``learning_rate``: Adam's step on the logits.
        selection_x_init, selection_reference: held-back initial states (and their reference)
            used only to choose the iterate; when given, the whole calibration batch is fitted.
        holdout_fraction: share of ``calib_x_init`` held back for selection when
            ``selection_x_init`` is not given (at least 2 samples must remain on each side).
        patience: stop after this many iterations without a held-back improvement (``None``:
            run all ``steps``).
        regularization: weight of the quadratic pull toward the starting grid's logits (0: off).
        max_step_change: a trust region: each log-SNR step may shrink or grow by at most this factor
            relative to the starting grid (``None``: unbounded).
        on_nonfinite: what to do when a loss or gradient is NaN/inf: ``"stop"`` (stop, keep the
            best iterate so far, warn, record the iteration in ``nonfinite_iteration``) or
            ``"raise"`` (:class:`NonFiniteGridLossError`). Gradients are never silently zeroed.
        validation_x_init, validation_reference: a third, independent batch only for reporting
            ``validation_error`` (never used to fit or select). Without it a batch is drawn from
            ``process.prior_sample(key or PRNGKey(0), ...)`` unless ``validate=False``.
        max_seconds: stop iterating once this many seconds have passed (checked after each
            iteration, so at least one runs; ``None``: no limit). The best iterate so far is kept.

    Returns:
        :class:`OptimizedGrid` with calibration, held-back (selection) and validation errors of
        the initial and the returned grid.

    Raises:
        ValueError: ``num_steps < 2``, ``steps < 1``, a non-positive learning rate, a bad
            ``holdout_fraction``/``patience``/``on_nonfinite``, or a held-back / validation batch
            identical to the calibration batch.
        NonFiniteGridLossError: with ``on_nonfinite="raise"``.

    Example:
        >>> import jax
        >>> from jaxode_diffusion import GaussianMixture, VPLinear
        >>> gm, vp = GaussianMixture.ring(4), VPLinear()
        >>> x = vp.prior_sample(jax.random.PRNGKey(1), (16, 2))
        >>> g = optimize_grid(gm.score_fn(vp), vp, x, solver="dpmpp_2m", num_steps=5, steps=5)
        >>> g.ts.shape, g.selection_error <= g.initial_selection_error
        ((6,), True)
    """
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
    x_cal = jnp.asarray(calib_x_init)
    dt = x_cal.dtype
    t_start = process.default_t_start if t_start is None else float(t_start)
    t_end = process.default_t_end if t_end is None else float(t_end)
    solver_obj = get_solver(solver)
    solver_name = solver if isinstance(solver, str) else solver_obj.name
    if isinstance(init_grid, str):
        ts0 = make_times(process, num_steps=num_steps, t_start=t_start, t_end=t_end, grid=init_grid)
        init_name = init_grid
    else:
        ts0 = make_times(process, grid=init_grid)
        if ts0.shape[0] != num_steps + 1:
            raise ValueError(f"init_grid has {ts0.shape[0] - 1} steps but num_steps={num_steps}.")
        t_start, t_end = float(ts0[0]), float(ts0[-1])
        init_name = "array"
    ts0 = ts0.astype(dt)
    if reference is None:
        reference = reference_solve(score_fn, process, x_cal, t_start=t_start, t_end=t_end)

    def _same(a):
        return a.shape == x_cal.shape and bool(jnp.all(a == x_cal))

    # The fitted and the held-back (selection) samples.
    b = x_cal.shape[0]
    if selection_x_init is not None:
        x_sel = jnp.asarray(selection_x_init, dt)
        if _same(x_sel):
            raise ValueError("selection_x_init equals the calibration batch; pass held-back samples.")
        if selection_reference is None:
            selection_reference = reference_solve(score_fn, process, x_sel, t_start=t_start, t_end=t_end)
        x_fit, ref_fit, ref_sel = x_cal, reference, jnp.asarray(selection_reference)
    else:
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
        x_sel, ref_sel = x_cal[:n_sel], reference[:n_sel]
        x_fit, ref_fit = x_cal[n_sel:], reference[n_sel:]

    x_val = None
    if validation_x_init is not None or validate:
        if validation_x_init is None:
            k = jax.random.PRNGKey(0) if key is None else key
            validation_x_init = process.prior_sample(k, x_cal.shape, t_start, dtype=dt)
        x_val = jnp.asarray(validation_x_init, dt)
        if _same(x_val):
            raise ValueError("validation_x_init equals the calibration batch; pass held-out samples.")
        if validation_reference is None:
            validation_reference = reference_solve(score_fn, process, x_val, t_start=t_start, t_end=t_end)

    theta0 = jnp.asarray(_logits_of_grid(process, ts0), dt)
    reg = jnp.asarray(float(regularization) / max(1, int(num_steps)), dt)
    lr = jnp.asarray(learning_rate, dt)
    t_se = jnp.asarray([t_start, t_end], dt)
    opt = optax.adam(learning_rate)  # for init only: the jitted update rebuilds it from the traced lr

    bound = jnp.asarray(math.inf if max_step_change is None else math.log(max_step_change) / 2, dt)

    def update(phi, opt_state, sf, proc, x, ref):
        return _update(phi, opt_state, theta0, bound, reg, lr, t_se, _Static(solver_obj), sf, proc, x, ref)

    def sel_loss(phi, sf, proc, x, ref):
        return _mse_log(phi, theta0, bound, t_se, _Static(solver_obj), sf, proc, x, ref)

    started = time.monotonic()
    theta = jnp.zeros_like(theta0)  # the optimised variable phi; logits = _logits(phi, theta0, bound)
    opt_state = opt.init(theta)
    history: list[float] = []
    selection_history: list[float] = []
    best_sel = float(sel_loss(theta, score_fn, process, x_sel, ref_sel))
    initial_sel = best_sel
    best_theta, best_it, since = theta, 0, 0
    nonfinite_it = None
    stopped_at = 0
    for it in range(int(steps)):
        new_theta, new_state, loss, ok = update(theta, opt_state, score_fn, process, x_fit, ref_fit)
        loss = float(loss)
        history.append(math.exp(0.5 * loss) if np.isfinite(loss) else float("nan"))
        stopped_at = it + 1
        if not bool(ok):
            msg = (f"optimize_grid({solver_name}, num_steps={num_steps}): non-finite loss or gradient at "
                   f"iteration {it} (loss {loss!r}); ")
            if on_nonfinite == "raise":
                raise NonFiniteGridLossError(msg + "lower learning_rate, use float64, or pass "
                                             "on_nonfinite='stop'.")
            warnings.warn(msg + f"stopped there, keeping the best iterate ({best_it}).", RuntimeWarning,
                          stacklevel=2)
            nonfinite_it = it
            break
        theta, opt_state = new_theta, new_state
        s = float(sel_loss(theta, score_fn, process, x_sel, ref_sel))
        selection_history.append(math.exp(0.5 * s) if np.isfinite(s) else float("nan"))
        if np.isfinite(s) and s < best_sel:
            best_sel, best_theta, best_it, since = s, theta, it + 1, 0
        else:
            since += 1
        if patience is not None and since >= patience:
            break
        if max_seconds is not None and time.monotonic() - started > max_seconds:
            break
    improved = best_it > 0
    if improved:
        ts_best = grid_from_logits(process, _logits(best_theta, theta0, bound), t_start, t_end)
        note = (f"iterate {best_it} of {stopped_at}: held-back RMSE {math.exp(0.5 * initial_sel):.4g} -> "
                f"{math.exp(0.5 * best_sel):.4g}")
    else:
        ts_best = ts0
        note = (f"no iterate beat the starting grid {init_name!r} on the held-back samples "
                f"(RMSE {math.exp(0.5 * initial_sel):.4g}); returning the starting grid")
    if nonfinite_it is not None:
        note += f"; stopped at a non-finite loss/gradient at iteration {nonfinite_it}"
    ts_np = np.asarray(ts_best, dtype=np.float64)
    # Rounding of t(lambda) cannot break monotonicity unless two lambdas coincide; check anyway.
    if not np.all(np.diff(ts_np) < 0):
        raise ValueError("the optimised grid collapsed (two equal times); lower learning_rate or steps.")

    def ev(x, ts, ref):
        return evaluate_grid(score_fn, process, x, ts, solver=solver_obj, reference=ref)

    return OptimizedGrid(
        ts=ts_np,
        solver=solver_name,
        num_steps=int(num_steps),
        process=process_spec(process),
        init_grid=init_name,
        calibration_loss=ev(x_fit, ts_best, ref_fit),
        initial_calibration_loss=ev(x_fit, ts0, ref_fit),
        validation_error=None if x_val is None else ev(x_val, ts_best, validation_reference),
        initial_validation_error=None if x_val is None else ev(x_val, ts0, validation_reference),
        history=history,
        selection_error=math.exp(0.5 * best_sel),
        initial_selection_error=math.exp(0.5 * initial_sel),
        selection_history=selection_history,
        improved=improved,
        best_iteration=best_it,
        iterations=stopped_at,
        nonfinite_iteration=nonfinite_it,
        note=note,
    )
