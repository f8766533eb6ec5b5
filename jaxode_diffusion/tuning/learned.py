"""Fit a solver to *your* model: per-step coefficients and the time grid, keeping the solver's order.

:func:`learn_solver` starts from a fixed solver on a grid (a name such as ``"dpmpp_2m"`` on its
default grid, or the winner of :func:`~jaxode_diffusion.tuning.tuner.tune`) and fits, by Adam on the
gradient through :func:`~jaxode_diffusion.solve`, the free coefficients of the base's order family
(:mod:`jaxode_diffusion.solvers.learned`: free multistep weights, or singlestep stage fractions)
together with the grid (the log-SNR logits of
:func:`~jaxode_diffusion.tuning.grid_optimization.grid_from_logits`) to a tight teacher solve of
calibration draws. In the spirit of Bespoke / BNS solvers (Shaul et al. 2023-2024) and LD3 (times by
backpropagation), but the order conditions are kept by parametrisation.

The iterate returned is the one with the lowest end-point RMSE on a held-back batch the gradient
never sees; the start is iterate 0, so the result is never worse than its start there. A fresh
batch (``fresh_x_init``), used for nothing else, gives an unbiased error. A
:class:`LearnedSolver` saves to / loads from JSON with its provenance.

Measurements (against the base, a learned grid alone and ``tune``): benchmarks/README.md, "Learned solvers".
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

import equinox as eqx
import jax
import jax.numpy as jnp
import numpy as np
import optax

from jaxode_diffusion.analysis.diffrax_drivers import reference_solve
from jaxode_diffusion.processes import ForwardProcess
from jaxode_diffusion.sampling.core import make_times, solve
from jaxode_diffusion.sampling.defaults import default_grid_for
from jaxode_diffusion.solvers.base import AbstractSolver
from jaxode_diffusion.solvers.learned import (
    LearnedMultistep,
    learnable_bases,
    learned_solver_from_dict,
    learned_start,
)
from jaxode_diffusion.tuning.grid_optimization import grid_from_logits, logits_of_grid, process_spec, spec_matches
from jaxode_diffusion.utils.outputs import write_json_atomic

__all__ = ["LearnedSolver", "learn_solver", "load_learned"]

_FORMAT = "jaxode_diffusion.learned_solver/1"


@dataclass
class LearnedSolver:
    """A solver fitted by :func:`learn_solver`, its grid and how it was obtained.

    Use it as ``solve(score_fn, process, x, learned.ts, learned.solver)`` or ``learned.sample(...)``.

    Attributes:
        solver: the learned :class:`~jaxode_diffusion.solvers.base.AbstractSolver` (per-step arrays).
        ts: ``(num_steps + 1,)`` decreasing times it was fitted on (NumPy float64).
        base, family, order: the fixed solver it started from, ``"multistep"`` or ``"singlestep"``,
            and the order it keeps.
        nfe, nfe_budget, num_steps: score evaluations of one run, the budget, steps of ``ts``.
        grid: the start grid (a name, ``"array"``, or ``"tuned(...)"``).
        process: ``{"class", "params"}`` of the forward process.
        heldout_error, start_heldout_error: end-point RMSE on the held-back batch (chose the iterate).
        fresh_error, start_fresh_error: the same on the fresh batch (``None`` without one).
        calibration_size, heldout_size, fresh_size: batch sizes.
        iterations, best_iteration, improved: Adam iterations run, the one returned (0: the start),
            whether it beat the start on the held-back batch.
        history, heldout_history: calibration and held-back RMSE per iteration.
        nonfinite_iteration: the iteration where a loss or gradient was NaN/inf (fitting stopped).
        seconds: wall time of the fit. note: one line on what happened.
    """

    solver: AbstractSolver
    ts: np.ndarray
    base: str
    family: str
    order: int
    nfe: int
    nfe_budget: int
    num_steps: int
    grid: str
    process: dict
    heldout_error: float
    start_heldout_error: float
    fresh_error: float | None = None
    start_fresh_error: float | None = None
    calibration_size: int = 0
    heldout_size: int = 0
    fresh_size: int = 0
    iterations: int = 0
    best_iteration: int = 0
    improved: bool = False
    history: list = field(default_factory=list)
    heldout_history: list = field(default_factory=list)
    nonfinite_iteration: int | None = None
    seconds: float = 0.0
    note: str = ""

    def sample(self, score_fn, process: ForwardProcess, x_init, **kwargs):
        """``solve(score_fn, process, x_init, self.ts, self.solver, **kwargs).samples``."""
        ts = jnp.asarray(self.ts, jnp.asarray(x_init).dtype)
        return solve(score_fn, process, x_init, ts, self.solver, **kwargs).samples

    def to_dict(self) -> dict:
        d = {f.name: getattr(self, f.name) for f in dataclasses.fields(self)}
        d["solver"] = self.solver.to_dict()
        d["ts"] = [float(t) for t in np.asarray(self.ts, np.float64)]
        return {"format": _FORMAT, **d}

    @classmethod
    def from_dict(cls, d, where: str = "the learned solver", process: ForwardProcess | None = None):
        """The inverse of :meth:`to_dict`, checked; errors name ``where`` and the field (see
        :func:`load_learned`)."""
        if not isinstance(d, dict) or d.get("format") != _FORMAT:
            fmt = d.get("format") if isinstance(d, dict) else None
            raise ValueError(f"{where}: field 'format' is {fmt!r}, want {_FORMAT!r}; write the file with "
                             "LearnedSolver.save.")
        fields = {f.name: f for f in dataclasses.fields(cls)}
        required = [n for n, f in fields.items()
                    if f.default is dataclasses.MISSING and f.default_factory is dataclasses.MISSING]
        missing = [n for n in required if n not in d]
        if missing:
            raise ValueError(f"{where}: field {missing[0]!r} is missing (and {missing[1:]}); re-save the solver.")
        solver = learned_solver_from_dict(d["solver"], where)
        ts = _checked_times(d["ts"], solver.num_steps, where)
        if not isinstance(d["process"], dict) or "class" not in d["process"] or "params" not in d["process"]:
            raise ValueError(f"{where}: field 'process' must be {{'class': ..., 'params': ...}}.")
        if process is not None and not spec_matches(d["process"], process_spec(process)):
            raise ValueError(f"{where}: field 'process' is {d['process']}, not the given "
                             f"{process_spec(process)}; pass the matching process or learn the solver again.")
        for name in ("heldout_error", "start_heldout_error"):
            if not isinstance(d[name], int | float):
                raise ValueError(f"{where}: field {name!r} must be a number, got {d[name]!r}.")
        kw = {k: v for k, v in d.items() if k in fields}
        kw.update(solver=solver, ts=ts)
        return cls(**kw)

    def save(self, path: str | os.PathLike) -> Path:
        """Write JSON to ``path`` atomically (non-finite numbers as ``null``); returns the path."""
        return write_json_atomic(path, self.to_dict(), sort_keys=False, parents=True)


def load_learned(path: str | os.PathLike, process: ForwardProcess | None = None) -> LearnedSolver:
    """Read a :class:`LearnedSolver` written by :meth:`LearnedSolver.save`.

    Args:
        path: the JSON file.
        process: if given, the recorded process must match it (class and parameters).

    Raises:
        ValueError: naming the file and the field: unreadable, another format, a missing or bad
            field (coefficients, times), or a process mismatch.

    Example:
        >>> ls = load_learned("learned.json")                                 # doctest: +SKIP
        >>> x = ls.sample(score_fn, process, x_init)                          # doctest: +SKIP
    """
    where = repr(os.fspath(path))
    try:
        d = json.loads(Path(path).read_text())
    except (OSError, json.JSONDecodeError) as err:
        raise ValueError(f"cannot read a learned solver from {where}: {err}") from err
    return LearnedSolver.from_dict(d, where, process)


def _checked_times(values, num_steps: int, where: str) -> np.ndarray:
    try:
        ts = np.asarray(values, dtype=np.float64)
    except (TypeError, ValueError) as err:
        raise ValueError(f"{where}: field 'ts' must be a list of numbers: {err}") from err
    if ts.ndim != 1 or ts.shape[0] != num_steps + 1:
        raise ValueError(f"{where}: field 'ts' must hold {num_steps + 1} times (solver.num_steps + 1), "
                         f"got shape {ts.shape}.")
    if not (np.all(np.isfinite(ts)) and np.all(np.diff(ts) < 0)):
        raise ValueError(f"{where}: field 'ts' must be finite and strictly decreasing; got {ts.tolist()}.")
    return ts


# ---------------------------------------------------------------------------------------------
# The traced pieces: parameters -> (grid, solver) -> log MSE, and one Adam step.
# ---------------------------------------------------------------------------------------------
def _apply(params, start, theta0, t_se, process):
    phi, delta = params
    return grid_from_logits(process, theta0 + phi, t_se[0], t_se[1]), start.with_free(delta)


def _log_mse_impl(params, start, theta0, t_se, remat, sf, proc, x, ref):
    ts, solver = _apply(params, start, theta0, t_se, proc)
    out = solve(sf, proc, x, ts, solver, throw=False, remat=remat).samples
    diff = (out - ref).reshape(x.shape[0], -1)
    return jnp.log(jnp.mean(jnp.sum(diff**2, axis=1)))


_log_mse = eqx.filter_jit(_log_mse_impl)


@eqx.filter_jit
def _update(params, opt_state, start, theta0, t_se, lr, time_mask, remat, sf, proc, x, ref):
    """One Adam step on ``log MSE`` (module level: compiled once per solver layout, shapes and score)."""
    loss, g = jax.value_and_grad(_log_mse_impl)(params, start, theta0, t_se, remat, sf, proc, x, ref)
    g = (g[0] * time_mask, g[1])
    upd, new_state = optax.adam(lr).update(g, opt_state, params)
    ok = jnp.isfinite(loss) & jnp.all(jnp.array([jnp.all(jnp.isfinite(v)) for v in jax.tree.leaves(g)]))
    return optax.apply_updates(params, upd), new_state, loss, ok


# ---------------------------------------------------------------------------------------------
# Steps of learn_solver: validate, prepare, fit, select.
# ---------------------------------------------------------------------------------------------
@dataclass
class _Problem:
    score_fn: object
    process: ForwardProcess
    start: AbstractSolver
    base: str
    grid_name: str
    ts0: jax.Array
    t_se: jax.Array
    nfe_budget: int
    x_cal: jax.Array
    ref_cal: jax.Array
    x_held: jax.Array
    ref_held: jax.Array
    x_fresh: jax.Array | None
    ref_fresh: jax.Array | None


def _family_steps(base: str, order, history, nfe: int) -> int:
    """Steps that fit ``nfe`` for ``base``'s family; raises when the family cannot learn anything there."""
    probe = learned_start(base, 1, order=order, history=history)
    if isinstance(probe, LearnedMultistep):
        need = max(2, probe.conditions + 1)
        what = (f"its {probe.conditions} order conditions leave a free weight only from step "
                f"{probe.conditions + 1} on")
        steps = nfe
    else:
        stages = probe.stages.num_stages
        need, what, steps = stages, f"one step costs {stages} evaluations", nfe // stages
    if nfe < need:
        raise ValueError(f"nfe={nfe}: the {type(probe).__name__} family of {base!r} at order {probe.order} "
                         f"needs nfe >= {need} ({what}); raise nfe or choose a lower order or another base.")
    return steps


def _check_draws(x, name: str) -> jax.Array:
    x = jnp.asarray(x)
    if x.ndim < 2 or x.shape[0] < 2 or not jnp.issubdtype(x.dtype, jnp.floating):
        raise ValueError(f"{name} must be a float batch (B >= 2, *event_shape); got shape {x.shape}, "
                         f"dtype {x.dtype}.")
    bad = ~jnp.all(jnp.isfinite(x.reshape(x.shape[0], -1)), axis=1)
    if bool(jnp.any(bad)):
        raise ValueError(f"{name} holds NaN/inf in {int(jnp.sum(bad))} draws (first: draw {int(jnp.argmax(bad))}); "
                         "pass finite initial states (e.g. process.prior_sample(key, shape)).")
    return x


def _resolve_base(base, grid):
    """``(solver name, start grid, its label or None)``; a TunedSampler gives its solver and times."""
    from jaxode_diffusion.tuning.tuner import TunedSampler  # tuner.py may import this module

    if isinstance(base, TunedSampler):
        if grid is not None:
            raise ValueError("grid: a TunedSampler base brings its own times; pass grid=None.")
        return base.solver, np.asarray(base.ts, np.float64), f"tuned({base.grid})"
    if not isinstance(base, str) or base.lower() not in learnable_bases():
        raise ValueError(f"base={base!r} cannot be learned; choose one of {list(learnable_bases())} (or a "
                         "TunedSampler whose solver is one of them).")
    return base, grid, None


def _start_grid(process, name, grid, label, nfe, num_steps, t_start, t_end, dt):
    """``(label, ts0)``: the grid the fit starts from."""
    if grid is None:
        grid = default_grid_for(name, process)
    if isinstance(grid, str):
        return grid, make_times(process, num_steps=num_steps, t_start=t_start, t_end=t_end, grid=grid).astype(dt)
    ts = make_times(process, grid=jnp.asarray(grid, dt))
    if ts.shape[0] != num_steps + 1:
        raise ValueError(f"grid has {ts.shape[0] - 1} steps, but {name!r} takes {num_steps} steps at nfe={nfe}; "
                         f"pass a grid of {num_steps + 1} times, a grid name, or the nfe the grid was made for.")
    return label or "array", ts.astype(dt)


def _prepare(score_fn, process, calib_x_init, *, nfe, base, order, history, grid, t_start, t_end,
             heldout_x_init, fresh_x_init, key, reference, heldout_reference, rtol) -> _Problem:
    if isinstance(nfe, bool) or int(nfe) != nfe or nfe < 1:
        raise ValueError(f"nfe={nfe!r}: the budget must be a positive integer number of score evaluations.")
    name, grid, label = _resolve_base(base, grid)
    x_cal = _check_draws(calib_x_init, "calib_x_init")
    dt = x_cal.dtype
    steps = _family_steps(name, order, history, int(nfe))
    t_start = float(process.default_t_start if t_start is None else t_start)
    t_end = float(process.default_t_end if t_end is None else t_end)
    grid_name, ts0 = _start_grid(process, name, grid, label, nfe, steps, t_start, t_end, dt)
    if heldout_x_init is None:
        heldout_x_init = process.prior_sample(jax.random.PRNGKey(1) if key is None else key, x_cal.shape,
                                              float(ts0[0]), dtype=dt)
    x_held = _check_draws(heldout_x_init, "heldout_x_init").astype(dt)
    for other, nm in ((x_held, "heldout_x_init"), (fresh_x_init, "fresh_x_init")):
        if other is not None and jnp.shape(other) == x_cal.shape and bool(jnp.all(jnp.asarray(other) == x_cal)):
            raise ValueError(f"{nm} equals calib_x_init; pass a separate batch.")
    x_fresh = None if fresh_x_init is None else _check_draws(fresh_x_init, "fresh_x_init").astype(dt)
    tol = rtol if rtol is not None else (1e-10 if dt == jnp.float64 else 1e-6)

    def teacher(x, given):
        if given is not None:
            return jnp.asarray(given, dt)
        return reference_solve(score_fn, process, x, t_start=ts0[0], t_end=ts0[-1], rtol=tol, atol=tol)

    start = learned_start(name, steps, order=order, history=history, dtype=dt)
    return _Problem(score_fn, process, start, name.lower(), grid_name, ts0, jnp.stack([ts0[0], ts0[-1]]),
                    int(nfe), x_cal, teacher(x_cal, reference), x_held, teacher(x_held, heldout_reference),
                    x_fresh, None if x_fresh is None else teacher(x_fresh, None))


@dataclass
class _Fit:
    best: tuple | None  # the parameters of the best iterate (None: the start)
    best_iteration: int
    iterations: int
    history: list
    heldout_history: list
    nonfinite_iteration: int | None


def _fit(pb: _Problem, *, steps, learning_rate, patience, learn_times, max_seconds, remat) -> _Fit:
    """Adam iterations; the held-back batch picks the iterate (the start is iterate 0)."""
    started = time.monotonic()
    dt = pb.x_cal.dtype
    theta0 = jnp.asarray(logits_of_grid(pb.process, pb.ts0), dt)
    params = (jnp.zeros_like(theta0), pb.start.free_parameters())
    opt_state = optax.adam(learning_rate).init(params)
    lr, mask = jnp.asarray(learning_rate, dt), jnp.asarray(1.0 if learn_times else 0.0, dt)
    x0 = solve(pb.score_fn, pb.process, pb.x_held, pb.ts0, pb.start, throw=False).samples
    best_sel = 2.0 * math.log(_rmse(x0, pb.ref_held))
    fit = _Fit(None, 0, 0, [], [], None)
    since = 0
    for it in range(int(steps)):
        new, new_state, loss, ok = _update(params, opt_state, pb.start, theta0, pb.t_se, lr, mask, bool(remat),
                                           pb.score_fn, pb.process, pb.x_cal, pb.ref_cal)
        fit.iterations = it + 1
        fit.history.append(math.exp(0.5 * float(loss)) if math.isfinite(float(loss)) else float("nan"))
        if not bool(ok):
            warnings.warn(f"learn_solver({pb.base}): non-finite loss or gradient at iteration {it}; stopped "
                          f"there, keeping iterate {fit.best_iteration}. Lower learning_rate or use float64.",
                          RuntimeWarning, stacklevel=3)
            fit.nonfinite_iteration = it
            break
        params, opt_state = new, new_state
        s = float(_log_mse(params, pb.start, theta0, pb.t_se, bool(remat), pb.score_fn, pb.process, pb.x_held,
                           pb.ref_held))
        fit.heldout_history.append(math.exp(0.5 * s) if math.isfinite(s) else float("nan"))
        if math.isfinite(s) and s < best_sel:
            best_sel, fit.best, fit.best_iteration, since = s, params, it + 1, 0
        else:
            since += 1
        if (patience is not None and since >= patience) or (
                max_seconds is not None and time.monotonic() - started > max_seconds):
            break
    return fit


def _rmse(x, ref) -> float:
    diff = (jnp.asarray(x) - ref).reshape(ref.shape[0], -1)
    return float(jnp.sqrt(jnp.mean(jnp.sum(diff**2, axis=1))))


def _materialise(pb: _Problem, params):
    """Concrete ``(ts as NumPy float64, solver)`` of an iterate (the start for ``None``)."""
    if params is None:
        return np.asarray(pb.ts0, np.float64), pb.start
    theta0 = jnp.asarray(logits_of_grid(pb.process, pb.ts0), pb.x_cal.dtype)
    ts, solver = _apply(params, pb.start, theta0, pb.t_se, pb.process)
    solver = jax.tree.map(lambda a: jnp.asarray(np.asarray(a)), solver)
    return np.asarray(ts, np.float64), solver


def _select(pb: _Problem, fit: _Fit, seconds_so_far: float) -> LearnedSolver:
    """The best iterate as a :class:`LearnedSolver`, re-scored; the start if it is not strictly better."""
    started = time.monotonic()

    def err(x, ref, ts, solver):
        return _rmse(solve(pb.score_fn, pb.process, x, jnp.asarray(ts, x.dtype), solver, throw=False).samples, ref)

    ts0, s0 = _materialise(pb, None)
    e0 = err(pb.x_held, pb.ref_held, ts0, s0)
    ts, solver = _materialise(pb, fit.best)
    e = err(pb.x_held, pb.ref_held, ts, solver) if fit.best is not None else e0
    improved = fit.best is not None and math.isfinite(e) and e < e0 and bool(np.all(np.diff(ts) < 0))
    if not improved:
        ts, solver, e = ts0, s0, e0
    note = (f"iterate {fit.best_iteration} of {fit.iterations}: held-back RMSE {e0:.4g} -> {e:.4g}" if improved
            else f"no iterate beat the start ({pb.base} on {pb.grid_name}) on the held-back batch (RMSE "
                 f"{e0:.4g}); returning the start")
    fresh = (None, None)
    if pb.x_fresh is not None:
        fresh = (err(pb.x_fresh, pb.ref_fresh, ts, solver), err(pb.x_fresh, pb.ref_fresh, ts0, s0))
    nfe = int(solve(pb.score_fn, pb.process, pb.x_held[:1], jnp.asarray(ts, pb.x_held.dtype), solver,
                    throw=False).nfe)
    return LearnedSolver(
        solver=solver, ts=ts, base=pb.base, family=solver.to_dict()["family"], order=int(solver.order), nfe=nfe,
        nfe_budget=pb.nfe_budget, num_steps=int(ts.shape[0] - 1), grid=pb.grid_name,
        process=process_spec(pb.process), heldout_error=e, start_heldout_error=e0, fresh_error=fresh[0],
        start_fresh_error=fresh[1], calibration_size=int(pb.x_cal.shape[0]),
        heldout_size=int(pb.x_held.shape[0]), fresh_size=0 if pb.x_fresh is None else int(pb.x_fresh.shape[0]),
        iterations=fit.iterations, best_iteration=fit.best_iteration if improved else 0, improved=improved,
        history=fit.history, heldout_history=fit.heldout_history, nonfinite_iteration=fit.nonfinite_iteration,
        seconds=seconds_so_far + time.monotonic() - started, note=note)


def _check_numbers(steps, learning_rate, patience, max_seconds) -> None:
    if isinstance(steps, bool) or int(steps) != steps or steps < 1:
        raise ValueError(f"steps={steps!r}: the number of Adam iterations must be an integer >= 1.")
    if not (isinstance(learning_rate, int | float) and learning_rate > 0 and math.isfinite(learning_rate)):
        raise ValueError(f"learning_rate={learning_rate!r} must be a finite number > 0 (0.02 is the default).")
    if patience is not None and (isinstance(patience, bool) or int(patience) != patience or patience < 1):
        raise ValueError(f"patience={patience!r} must be a positive integer or None (no early stopping).")
    if max_seconds is not None and not max_seconds >= 0:
        raise ValueError(f"max_seconds={max_seconds!r} must be >= 0 (or None: no time limit).")


def learn_solver(
    score_fn,
    process: ForwardProcess,
    calib_x_init,
    *,
    nfe: int,
    base="dpmpp_2m",
    order: int | None = None,
    history: int | None = None,
    grid=None,
    t_start=None,
    t_end=None,
    heldout_x_init=None,
    fresh_x_init=None,
    key=None,
    steps: int = 200,
    learning_rate: float = 0.02,
    patience: int | None = 50,
    learn_times: bool = True,
    max_seconds: float | None = None,
    reference=None,
    heldout_reference=None,
    rtol: float | None = None,
    remat: bool = False,
) -> LearnedSolver:
    """Fit per-step coefficients and the grid of ``base``'s order family to ``score_fn`` at ``nfe``.

    Minimises ``log mean_b ||x_b - x_ref_b||^2`` over the calibration draws (``x_ref``: a tight
    :func:`~jaxode_diffusion.analysis.reference_solve`) by Adam through the sampler; the iterate is
    chosen on the held-back batch, so the result is never worse than the start there.

    Args:
        score_fn, process: as for :func:`~jaxode_diffusion.solve`.
        calib_x_init: ``(B, *event_shape)`` finite initial states the fit uses.
        nfe: score evaluations per sample (multistep: steps; singlestep: ``nfe // stages`` steps).
        base: a name from :func:`~jaxode_diffusion.solvers.learned.learnable_bases`, or a
            :class:`~jaxode_diffusion.tuning.tuner.TunedSampler` (its solver and grid are the start).
        order, history: see :func:`~jaxode_diffusion.solvers.learned.learned_start`.
        grid, t_start, t_end: start grid (a name, an array, ``None``: the base's default grid) and
            the range of a named grid (process defaults).
        heldout_x_init: picks the iterate (default: ``process.prior_sample(key or PRNGKey(1), ...)``).
        fresh_x_init: only for reporting ``fresh_error`` (unbiased).
        steps, learning_rate, patience: Adam iterations, step size, and the iterations without a
            held-back improvement after which fitting stops (``None``: never).
        learn_times, max_seconds: also fit the grid (``False``: coefficients only); stop iterating
            after this long (at least one iteration runs).
        reference, heldout_reference, rtol: teacher end points of the calibration / held-back draws
            (default: solved with tolerance ``rtol``, ``1e-10`` in float64, ``1e-6`` in float32).
        remat: memory-bounded gradients (:func:`~jaxode_diffusion.solve`'s ``remat``).

    Returns a :class:`LearnedSolver`.

    Raises:
        ValueError: a base that cannot be learned, ``nfe`` too small for the family, a bad ``order``
            or ``history``, non-finite or equal batches, a grid of the wrong length, bad numbers.

    Example:
        >>> import jax
        >>> from jaxode_diffusion import GaussianMixture, VPLinear
        >>> gm, vp = GaussianMixture.ring(4), VPLinear()
        >>> x = vp.prior_sample(jax.random.PRNGKey(0), (16, 2))
        >>> ls = learn_solver(gm.score_fn(vp), vp, x, nfe=5, steps=3)
        >>> ls.heldout_error <= ls.start_heldout_error, ls.num_steps
        (True, 5)
    """
    started = time.monotonic()
    _check_numbers(steps, learning_rate, patience, max_seconds)
    pb = _prepare(score_fn, process, calib_x_init, nfe=nfe, base=base, order=order, history=history, grid=grid,
                  t_start=t_start, t_end=t_end, heldout_x_init=heldout_x_init, fresh_x_init=fresh_x_init,
                  key=key, reference=reference, heldout_reference=heldout_reference, rtol=rtol)
    fit = _fit(pb, steps=steps, learning_rate=learning_rate, patience=patience, learn_times=bool(learn_times),
               max_seconds=max_seconds, remat=remat)
    return _select(pb, fit, time.monotonic() - started)
