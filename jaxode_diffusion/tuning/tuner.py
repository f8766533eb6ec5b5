"""Tune a sampler for *your* model at *your* NFE budget, by measurement.

:func:`tune` takes a score function, a process and a calibration batch of initial states and

1. solves the calibration batch and a separate held-back batch tightly
   (:func:`~jaxode_diffusion.analysis.diffrax_drivers.reference_solve`, an adaptive Dopri8 solve);
2. runs every registered solver (:func:`~jaxode_diffusion.sampling.solver_names`, plus
   ``FORM:TABLEAU`` combinations for a few tableaux) on every named grid
   (:data:`~jaxode_diffusion.sampling.grids.GRID_NAMES`) at the largest step count whose NFE fits the
   budget, and scores each on the held-back batch (end-point RMSE against its reference);
3. optionally (``error_grids=True``) adds, for the best few solvers, grids placed by the model's
   measured local error (:func:`~jaxode_diffusion.tuning.error_grids.error_grid_candidates`, built from
   calibration draws) and scores them on the held-back batch like the named grids;
4. learns a grid (:func:`~jaxode_diffusion.tuning.grid_optimization.optimize_grid`, fitted on the
   calibration batch, iterate chosen on the held-back batch, so never worse than its starting
   grid there) for the best few solvers, started from their best grid (named, or error grid);
5. returns the candidate with the lowest held-back error as a :class:`TunedSampler` that holds the
   solver name and the explicit times ``ts``, so that
   ``sample(score_fn, process, x, solver=t.solver, grid=t.ts, num_steps=None)`` reproduces it,
   and that saves to / loads from JSON (``jaxode-diffusion tune`` / ``sample --tuned``).

The held-back errors are what the winner is chosen by, so the winner's own held-back error is an
optimistic estimate; score it on a fresh batch (:func:`~jaxode_diffusion.tuning.grid_optimization.
evaluate_grid`) when an unbiased number matters.

Learned grids run best solver first, each with all the time left (it stops earlier by patience
or ``learn_steps`` and leaves the rest to the next). With ``learn_probe > learn_top`` they are
chosen by successive halving: the ``learn_probe`` best solvers each learn for ``probe_steps``
iterations, and the ``learn_top`` best of those (held-back error) continue from their best
iterate up to ``learn_steps`` in all, since the solver whose grid learns best is often not the best
on fixed grids.

Every evaluation of a solver at one step count is one compiled program; the grids reuse it (the
grid is a traced array), so the cost is about (number of solvers) compilations plus the learned
grids' gradient steps (up to ``learn_top x learn_steps``, with probes up to ``learn_probe x
probe_steps`` more) and one compilation of the gradient per learned grid. ``max_seconds`` bounds
the whole run (candidates not reached are listed as skipped); the fixed-grid scan stops at
``(1 - learn_share) * max_seconds``, keeping the rest for the learned grids, where most of the gain
is.
"""

from __future__ import annotations

import dataclasses
import json
import math
import os
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np

from jaxode_diffusion.analysis.distances import rmse
from jaxode_diffusion.tuning.grid_optimization import (
    optimize_grid,
    process_spec,
    reference_tolerance,
    saved_field,
    spec_matches,
    tight_reference,
)
from jaxode_diffusion.tuning.learned import LearnedSolver
from jaxode_diffusion.tuning.learned import learn_solver as fit_learned_solver
from jaxode_diffusion.sampling.grids import GRID_NAMES
from jaxode_diffusion.utils.checks import check_finite_score
from jaxode_diffusion.utils.outputs import write_json_atomic
from jaxode_diffusion.processes import ForwardProcess

__all__ = ["TunedSampler", "tune", "load_tuned", "DEFAULT_FORM_TABLEAUX", "SCAN_PRIORITY"]

_FORMAT = "jaxode_diffusion.tuned_sampler/1"

#: ``FORM:TABLEAU`` combinations tried besides the registered names (plain RK in ``x-t`` is
#: covered by the tableau names themselves): the integrating-factor forms where RK does well.
DEFAULT_FORM_TABLEAUX = (
    "x0-lambda:heun",
    "x0-lambda:kutta3",
    "x0-lambda:rk4",
    "eps-rho:heun",
    "eps-rho:rk4",
    "x0-snr:heun",
    "ou-exp:heun",
)

#: Solvers scanned first, in this order (the solver ranking at NFE 10-20 of
#: benchmarks/results/defaults.md: the exponential multistep family), then every other one in
#: registry order. Only matters when ``max_seconds`` cuts the fixed-grid scan short: what is left
#: out is then the least promising.
SCAN_PRIORITY = (
    "unipc_bh2_2", "dpmpp_3m", "unipc_bh2_3", "unipc_bh1_3", "deis_ab3", "dpmpp_3m_exact", "dpmpp_2m",
    "deis_ab2", "dpmpp_3s", "dpmpp_2s", "unipc_bh1_2",
)


@dataclass
class TunedSampler:
    """The winner of :func:`tune` and the record of how it won.

    Attributes:
        solver: solver spec (pass as ``sample(..., solver=t.solver)``).
        ts: ``(num_steps + 1,)`` decreasing times (NumPy float64; pass as ``grid=t.ts``).
        nfe: score evaluations of one sample run (``<= nfe_budget``).
        num_steps: steps of ``ts``.
        grid: how ``ts`` was made (a grid name, or ``"learned(NAME)"``).
        heldout_error: the winner's end-point RMSE on the held-back batch.
        nfe_budget: the budget it was tuned for.
        process: ``{"class", "params"}`` of the forward process.
        candidates: one dict per candidate (``solver``, ``grid``, ``num_steps``, ``nfe``,
            ``heldout_error``, ``status``; learned grids also ``ts``, ``start_heldout_error`` and
            ``iterations``), sorted by held-back error.
        calibration_size, heldout_size: batch sizes used.
        seconds: wall time of the tuning run.
        info: free-form extras (e.g. the checkpoint path for the CLI).
        learned: the :class:`~jaxode_diffusion.tuning.learned.LearnedSolver` when one won
            (``tune(..., learn_solver=True)``); then ``solver`` is its label ``"learned(BASE)"``, which
            no solver name resolves: sample with :meth:`sample`.
    """

    solver: str
    ts: np.ndarray
    nfe: int
    num_steps: int
    grid: str
    heldout_error: float
    nfe_budget: int
    process: dict
    candidates: list[dict] = field(default_factory=list)
    calibration_size: int = 0
    heldout_size: int = 0
    seconds: float = 0.0
    info: dict = field(default_factory=dict)
    learned: LearnedSolver | None = None

    def sample(self, score_fn, process: ForwardProcess, x_init, **kwargs):
        """``sample(score_fn, process, x_init, solver=self.solver, grid=self.ts, num_steps=None)``, or the
        learned solver's :meth:`~jaxode_diffusion.tuning.learned.LearnedSolver.sample` when one won."""
        from jaxode_diffusion.sampling.core import sample

        if self.learned is not None:
            return self.learned.sample(score_fn, process, x_init, **kwargs)
        return sample(score_fn, process, x_init, solver=self.solver, grid=self.ts, num_steps=None, **kwargs)

    def table(self, top: int | None = None) -> str:
        """The candidates as a markdown table (best first)."""
        lines = ["| solver | grid | steps | NFE | held-back RMSE | status |", "|---|---|---:|---:|---:|---|"]
        for c in self.candidates[: top or None]:
            err = c.get("heldout_error")
            e = f"{err:.3e}" if isinstance(err, float) and math.isfinite(err) else str(err)
            lines.append(f"| {c['solver']} | {c['grid']} | {c.get('num_steps', '-')} | {c.get('nfe', '-')} | "
                         f"{e} | {c.get('status', '')} |")
        return "\n".join(lines)

    def to_dict(self) -> dict:
        d = dataclasses.asdict(dataclasses.replace(self, learned=None))
        d["ts"] = [float(t) for t in np.asarray(self.ts, dtype=np.float64)]
        d["learned"] = None if self.learned is None else self.learned.to_dict()
        d["format"] = _FORMAT
        return d

    def save(self, path: str | os.PathLike) -> Path:
        """Write JSON to ``path`` atomically; returns the path."""
        return write_json_atomic(path, self.to_dict(), sort_keys=False, parents=True)


def _error_value(v) -> float:
    """A saved error as a float: ``null`` (strict JSON) and the strings ``"nan"`` / ``"inf"`` (files of
    earlier releases) are non-finite numbers."""
    return float("nan") if v is None else float(v)


def load_tuned(path: str | os.PathLike, process: ForwardProcess | None = None) -> TunedSampler:
    """Read a :class:`TunedSampler` saved by :meth:`TunedSampler.save` (or ``jaxode-diffusion tune``).

    Args:
        path: the JSON file.
        process: if given, the recorded process must match it (class and parameters).

    Raises:
        ValueError: unreadable or not a tuned-sampler file, bad times, or a process mismatch.

    Non-finite errors are ``null`` in the file (earlier releases wrote ``"nan"``); both load as NaN.

    Example:
        >>> t = load_tuned("tuned.json")                                     # doctest: +SKIP
        >>> x = t.sample(score_fn, process, x_init)  # doctest: +SKIP
    """
    path = Path(path)
    try:
        d = json.loads(path.read_text())
    except (OSError, json.JSONDecodeError) as err:
        raise ValueError(f"cannot read a tuned sampler from {str(path)!r}: {err}") from err
    if not isinstance(d, dict) or d.get("format") != _FORMAT:
        fmt = d.get("format") if isinstance(d, dict) else None
        raise ValueError(f"{str(path)!r} is not a tuned-sampler file (format={fmt!r}, want {_FORMAT!r}); "
                         "write one with `jaxode-diffusion tune` or TunedSampler.save.")
    fields = {f.name for f in dataclasses.fields(TunedSampler)}
    required = {f.name for f in dataclasses.fields(TunedSampler)
                if f.default is dataclasses.MISSING and f.default_factory is dataclasses.MISSING}
    missing = sorted(required - set(d))
    if missing:
        raise ValueError(f"{str(path)!r} lacks the fields {missing}; re-run the tuning.")
    fix = "re-run the tuning"
    ts = saved_field(d, "ts", path, "times", fix=fix)
    n = saved_field(d, "num_steps", path, "steps", fix=fix)
    for name, kind in (("solver", "str"), ("grid", "str"), ("process", "dict"), ("nfe", "steps"),
                       ("nfe_budget", "steps")):
        saved_field(d, name, path, kind, fix=fix)
    if ts.shape[0] != n + 1:
        raise ValueError(f"{str(path)!r}: num_steps={n} needs {n + 1} times, got shape {ts.shape}.")
    if not np.all(np.isfinite(ts)) or not np.all(np.diff(ts) < 0):
        raise ValueError(f"{str(path)!r}: field ts: the times must be finite and strictly decreasing; got {ts}.")
    if process is not None and not spec_matches(d["process"], process_spec(process)):
        raise ValueError(f"{str(path)!r} was tuned for {d['process']}, not for {process_spec(process)}; "
                         "pass the matching process or re-tune.")
    kw = {k: v for k, v in d.items() if k in fields}
    kw["ts"] = ts
    kw["heldout_error"] = saved_field(d, "heldout_error", path, "error", fix=fix)
    if not isinstance(kw.get("candidates", []), list):
        raise ValueError(f"{str(path)!r}: field candidates={kw['candidates']!r} must be a list; {fix}.")
    kw["candidates"] = [_candidate_from_json(c) for c in kw.get("candidates", [])]
    if kw.get("learned") is not None:
        kw["learned"] = LearnedSolver.from_dict(kw["learned"], f"{str(path)!r} (field 'learned')", process)
    return TunedSampler(**kw)


def _candidate_from_json(c):
    if not isinstance(c, dict):
        return c
    errors = ("heldout_error", "start_heldout_error")
    return {k: (_error_value(v) if k in errors else v) for k, v in c.items()}


def _run(score_fn, process, x, ts, solver):
    """(samples, nfe) of one fixed-grid solve; failures (NaN/inf) come back as samples, not raised."""
    from jaxode_diffusion.sampling import core as sampling

    solve = getattr(sampling, "solve", None)
    if solve is not None:
        sol = solve(score_fn, process, x, ts, solver, throw=False)
    else:
        sol = sampling.sample(score_fn, process, x, solver=solver, grid=ts, num_steps=None, return_nfe=True,
                              check_finite=False)
    return sol.samples, int(sol.nfe)


def _default_solvers(form_tableaux) -> list[str]:
    from jaxode_diffusion.sampling.core import get_solver, solver_names

    # One name per method: aliases (unipc_bh2 = unipc_bh2_2) resolve to the same solver name.
    names = list(solver_names())
    first = [s for s in SCAN_PRIORITY if s in names]  # those registered in this build
    out, seen = [], set()
    for s in [*first, *names, *form_tableaux]:
        canonical = get_solver(s).name
        if canonical not in seen:
            seen.add(canonical)
            out.append(s)
    return out


def _best_per_solver(ranked, top: int) -> list[dict]:
    """The best row of each of the ``top`` best distinct solvers in ``ranked`` (sorted by held-back
    error), among rows with at least 2 steps (a grid with one step has nothing to place)."""
    chosen, seen = [], set()
    for c in ranked:
        if len(chosen) >= top:
            break
        if c["solver"] not in seen and c["num_steps"] >= 2:
            seen.add(c["solver"])
            chosen.append(c)
    return chosen


def _error_grid_rows(score_fn, process, x_cal, ranked, top, pilot, t_start, t_end, dt, *, evaluate_ts,
                     out_of_time) -> list[dict]:
    """Candidate rows for the error grids (:func:`~jaxode_diffusion.tuning.error_grids.error_grid_candidates`)
    of the ``top`` best distinct solvers in ``ranked`` (at least 2 steps), at each one's step count,
    scored on the held-back batch by ``evaluate_ts(solver, ts) -> (error, nfe)``.

    The grids are built from the first ``pilot`` draws of the calibration batch (never from the
    held-back batch that scores them); the teacher trajectory and the cost matrices are shared
    between solvers through one cache (they depend on the nodes and the cost solver only).
    """
    from jaxode_diffusion.tuning.error_grids import error_grid_candidates

    x_pilot = x_cal[: max(2, int(pilot))]
    cache: dict = {}
    rows = []
    for c in _best_per_solver(ranked, top):
        if out_of_time():
            rows.append(dict(solver=c["solver"], grid="error grids", num_steps=c["num_steps"], nfe=c["nfe"],
                             heldout_error=float("nan"), status="skipped: out of time"))
            continue
        try:
            cands = error_grid_candidates(score_fn, process, x_pilot, c["solver"], c["num_steps"],
                                          t_start=t_start, t_end=t_end, cache=cache)
        except ValueError as err:  # e.g. no finite path: the named grids stay the candidates
            rows.append(dict(solver=c["solver"], grid="error grids", num_steps=c["num_steps"], nfe=c["nfe"],
                             heldout_error=float("nan"), status=f"failed: {err}"))
            continue
        for name, ts in cands.items():
            err, used = evaluate_ts(c["solver"], np.asarray(ts, np.float64).astype(dt))
            rows.append(dict(solver=c["solver"], grid=name, num_steps=c["num_steps"], nfe=used,
                             heldout_error=err, status="ok" if math.isfinite(err) else "non-finite samples",
                             ts=np.asarray(ts, np.float64)))
    return rows


def tune(
    score_fn, process: ForwardProcess, calib_x_init, *, nfe: int, heldout_x_init=None, key=None, solvers=None,
    grids=GRID_NAMES, form_tableaux=DEFAULT_FORM_TABLEAUX, learn_top: int = 3, learn_probe: int = 0,
    probe_steps: int = 20, learn_steps: int = 100, learning_rate: float = 0.05, patience: int = 30,
    t_start=None, t_end=None, rtol: float | None = None, max_seconds: float | None = None,
    learn_share: float = 0.5, error_grids: bool = False, error_grid_pilot: int = 128, progress: bool = True,
    learn_solver: bool = False, learn_solver_steps: int = 200,
) -> TunedSampler:
    """Find the best solver and time grid for ``score_fn`` within ``nfe`` score evaluations.

    Steps: the module docstring; measurements behind the defaults: benchmarks/README.md.

    Args:
        score_fn, process: as for :func:`~jaxode_diffusion.sample`.
        calib_x_init: ``(B, *event_shape)`` initial states at ``t_start`` that learned grids fit.
        nfe: the budget of score evaluations per sample (``>= 1``).
        heldout_x_init: the held-back batch that scores every candidate (default: drawn with
            ``key or PRNGKey(1)``); must differ from the calibration batch.
        solvers, grids: what to scan (default: every registered solver plus ``form_tableaux``).
        learn_top: how many of the best distinct solvers learn a grid (0: none).
        learn_probe, probe_steps: with ``learn_probe > learn_top``, that many solvers first learn for
            ``probe_steps`` iterations and the ``learn_top`` best continue (successive halving).
        learn_steps, learning_rate, patience: :func:`optimize_grid`'s steps, learning_rate, patience.
        t_start, t_end, rtol: the range (process defaults) and the reference solves' tolerance.
        max_seconds: time limit (``None``: none); the scan stops at ``(1 - learn_share)`` of it (solvers
            in :data:`SCAN_PRIORITY` order first), leaving the rest to the learned grids, best first.
        error_grids, error_grid_pilot: also score the error grids of the ``max(1, learn_top)`` best
            solvers, built from the first ``error_grid_pilot`` calibration draws.
        progress: show a tqdm progress bar.
        learn_solver, learn_solver_steps: also fit a :func:`~jaxode_diffusion.tuning.learned.learn_solver`
            (that many iterations) from the best learnable candidate; it competes like every candidate.

    Returns:
        :class:`TunedSampler` (its held-back error chose it, so that error is optimistic).

    Raises:
        ValueError: bad arguments, NaN/inf rows or scores (named), or no finite candidate within nfe.

    Example:
        >>> import jax
        >>> from jaxode_diffusion import GaussianMixture, VPLinear
        >>> gm, vp = GaussianMixture.ring(4), VPLinear()
        >>> x_cal = vp.prior_sample(jax.random.PRNGKey(0), (32, 2))
        >>> t = tune(gm.score_fn(vp), vp, x_cal, nfe=6, solvers=["ddim", "dpmpp_2m"], learn_top=0,
        ...          progress=False)
        >>> t.nfe <= 6
        True
    """
    from tqdm.auto import tqdm

    t0 = time.time()
    nfe = _check_tune_args(nfe, learn_top, learn_probe, probe_steps, learn_share, error_grid_pilot)
    _check_budget_args(max_seconds, solvers, grids, rtol)
    batches = _checked_batches(score_fn, process, calib_x_init, heldout_x_init, key, t_start, t_end, rtol)
    grids, resolved = _resolve_candidates(process, batches, grids, solvers, form_tableaux)
    problem = _Problem.build(score_fn, process, batches, rtol)
    plan = _LearnPlan(top=learn_top, pool=max(learn_top, learn_probe) if learn_top else 0,
                      probe_steps=probe_steps, steps=learn_steps, learning_rate=learning_rate,
                      patience=patience)
    clock = _Clock(t0, max_seconds, None if max_seconds is None
                   else max_seconds * (1.0 - (learn_share if learn_top else 0.0)))
    bar = tqdm(total=len(resolved) * len(grids) + plan.pool, desc=f"tune NFE {nfe}", disable=not progress,
               leave=False)
    candidates: list[dict] = []
    for spec, solver in resolved:
        candidates += _scan_solver(spec, solver, nfe, grids, problem, clock, bar)
    ranked = _ranked(candidates)
    if error_grids:
        candidates += _error_grid_rows(score_fn, process, batches.x_cal, ranked, max(1, learn_top),
                                       error_grid_pilot, batches.t_start, batches.t_end, batches.dt,
                                       evaluate_ts=problem.score, out_of_time=clock.out_of_time)
        ranked = _ranked(candidates)
    candidates += _learned_rows(ranked, plan, problem, clock, bar)
    learned, row = (_learned_solver_row(_ranked(candidates), nfe, problem, clock, learn_solver_steps)
                     if learn_solver else (None, None))
    candidates += [row] if row else []
    bar.close()
    return _select_winner(candidates, nfe, process, batches, t0, learned)


def _checked_batches(score_fn, process, calib_x_init, heldout_x_init, key, t_start, t_end, rtol):
    """The calibration and held-back batches, refused when a row or the score at ``t_start`` is NaN/inf
    or when ``rtol`` is beyond the batches' precision."""
    batches = _prepare_batches(process, calib_x_init, heldout_x_init, key, t_start, t_end)
    reference_tolerance(batches.dt, rtol, default=1e-6)  # an rtol the batch's precision cannot reach
    for x, name in ((batches.x_cal, "calib_x_init"), (batches.x_held, "heldout_x_init")):
        check_finite_score(score_fn, x, batches.t_start, name=name, prefix="tune: ")
    return batches


# ---------------------------------------------------------------------------------------------
# The steps of tune(): validate, prepare, scan, learn, select.
# ---------------------------------------------------------------------------------------------
@dataclass(frozen=True)
class _Batches:
    """The calibration and held-back initial states, their dtype and the sampling range."""

    x_cal: jax.Array
    x_held: jax.Array
    dt: object
    t_start: float
    t_end: float


@dataclass(frozen=True)
class _LearnPlan:
    """How many solvers learn a grid (``pool``; ``top`` of them to the end) and with what settings."""

    top: int
    pool: int
    probe_steps: int
    steps: int
    learning_rate: float
    patience: int


@dataclass(frozen=True)
class _Clock:
    """The time limits of a run: all of it (``max_seconds``) and the fixed-grid scan's share."""

    t0: float
    max_seconds: float | None
    scan_seconds: float | None

    def out_of_time(self) -> bool:
        return self.max_seconds is not None and time.time() - self.t0 > self.max_seconds

    def scan_out_of_time(self) -> bool:
        return self.scan_seconds is not None and time.time() - self.t0 > self.scan_seconds

    def left(self) -> float | None:
        return None if self.max_seconds is None else max(0.0, self.max_seconds - (time.time() - self.t0))


@dataclass(frozen=True)
class _FirstRun:
    """A solver's run on the first grid at the largest step count whose NFE fits the budget."""

    num_steps: int
    ts: jax.Array
    error: float
    nfe: int


def _check_tune_args(nfe, learn_top, learn_probe, probe_steps, learn_share, pilot) -> int:
    if isinstance(nfe, bool) or int(nfe) != nfe or nfe < 1:
        raise ValueError(f"nfe={nfe!r}: the budget must be a positive integer number of score evaluations.")
    if int(learn_top) != learn_top or learn_top < 0:
        raise ValueError(f"learn_top={learn_top!r} must be an integer >= 0.")
    if int(learn_probe) != learn_probe or learn_probe < 0:
        raise ValueError(f"learn_probe={learn_probe!r} must be an integer >= 0 (how many solvers get a "
                         "probe of probe_steps iterations; <= learn_top: no probes).")
    if int(probe_steps) != probe_steps or probe_steps < 1:
        raise ValueError(f"probe_steps={probe_steps!r} must be an integer >= 1.")
    if not 0.0 <= learn_share < 1.0:
        raise ValueError(f"learn_share={learn_share!r} must lie in [0, 1): the share of max_seconds kept for "
                         "learned grids (0.5 is the default).")
    if isinstance(pilot, bool) or int(pilot) != pilot or pilot < 2:
        raise ValueError(f"error_grid_pilot={pilot!r} must be an integer >= 2 (draws of the calibration "
                         "batch the error grids are built from; 128 is the default).")
    return int(nfe)


def _check_budget_args(max_seconds, solvers, grids, rtol) -> None:
    """Refuse a time limit that leaves no time, empty or string solver / grid lists and a bad rtol."""
    if max_seconds is not None and (isinstance(max_seconds, bool) or not isinstance(max_seconds, int | float | np.number)
                                    or not (math.isfinite(max_seconds) and max_seconds > 0)):
        raise ValueError(f"max_seconds={max_seconds!r} must be a finite number of seconds > 0 (e.g. 60), "
                         "or None for no time limit.")
    for arg, value, example in (("solvers", solvers, "['dpmpp_2m', 'unipc_bh2_2']"), ("grids", grids, "['log_snr']")):
        if value is None and arg == "solvers":
            continue
        if isinstance(value, str) or not isinstance(value, list | tuple):
            raise ValueError(f"{arg}={value!r} must be a list of names, e.g. {example}"
                             + (" (or None: all)." if arg == "solvers" else "."))
        if not value:
            raise ValueError(f"{arg}={value!r} is empty: nothing to tune; name at least one, e.g. {example}"
                             + (", or pass None for all." if arg == "solvers" else "."))
    if rtol is not None:
        reference_tolerance(jnp.float64, rtol)  # the type and sign; the precision is checked per batch


def _prepare_batches(process, calib_x_init, heldout_x_init, key, t_start, t_end) -> _Batches:
    x_cal = jnp.asarray(calib_x_init)
    if x_cal.ndim < 2 or x_cal.shape[0] < 2 or not jnp.issubdtype(x_cal.dtype, jnp.floating):
        raise ValueError(f"calib_x_init must be a float batch (B >= 2, *event_shape); got {x_cal.shape} "
                         f"{x_cal.dtype}.")
    dt = x_cal.dtype
    t_start = float(process.default_t_start if t_start is None else t_start)
    t_end = float(process.default_t_end if t_end is None else t_end)
    if heldout_x_init is None:
        heldout_x_init = process.prior_sample(jax.random.PRNGKey(1) if key is None else key, x_cal.shape,
                                              t_start, dtype=dt)
    x_held = jnp.asarray(heldout_x_init, dt)
    if x_held.shape[1:] != x_cal.shape[1:]:
        raise ValueError(f"heldout_x_init has event shape {x_held.shape[1:]}, calib_x_init "
                         f"{x_cal.shape[1:]}; "
                         "they must match.")
    if x_held.shape == x_cal.shape and bool(jnp.all(x_held == x_cal)):
        raise ValueError("heldout_x_init equals calib_x_init; pass a separate held-back batch.")
    return _Batches(x_cal, x_held, dt, t_start, t_end)


def _resolve_candidates(process, b: _Batches, grids, solvers, form_tableaux):
    """``(grids, [(spec, solver)])``: the named grids checked and the solver specs resolved (a
    ``ValueError`` names an unknown grid or solver)."""
    from jaxode_diffusion.sampling.core import get_solver, make_times

    grids = tuple(grids)
    for g in grids:
        make_times(process, num_steps=2, t_start=b.t_start, t_end=b.t_end, grid=g)  # names the bad grid
    specs = list(solvers) if solvers is not None else _default_solvers(form_tableaux)
    resolved = []
    for s in specs:
        resolved.append((s, get_solver(s)))  # ValueError names an unknown solver
    return grids, resolved


@dataclass(frozen=True)
class _Problem:
    """The model, the batches and their tight reference solves: what every candidate is scored on."""

    score_fn: Any
    process: ForwardProcess
    b: _Batches
    ref_cal: jax.Array
    ref_held: jax.Array

    @classmethod
    def build(cls, score_fn, process, b: _Batches, rtol) -> _Problem:
        span = dict(rtol=rtol, default=1e-10 if b.dt == jnp.float64 else 1e-6)
        ref_cal = tight_reference(score_fn, process, b.x_cal, b.t_start, b.t_end, name="calib_x_init", **span)
        ref_held = tight_reference(score_fn, process, b.x_held, b.t_start, b.t_end, name="heldout_x_init",
                                   **span)
        return cls(score_fn, process, b, ref_cal, ref_held)

    def score(self, solver, ts) -> tuple[float, int]:
        """``(held-back RMSE, nfe)`` of ``solver`` on the times ``ts``."""
        x, used = _run(self.score_fn, self.process, self.b.x_held, jnp.asarray(ts, self.b.dt), solver)
        return float(rmse(x, self.ref_held)), used

    def evaluate(self, solver, n, grid):
        """``(ts, held-back RMSE, nfe)`` of ``solver`` on the named ``grid`` with ``n`` steps."""
        from jaxode_diffusion.sampling.core import make_times

        ts = make_times(self.process, num_steps=n, t_start=self.b.t_start, t_end=self.b.t_end, grid=grid)
        ts = ts.astype(self.b.dt)
        err, used = self.score(solver, ts)
        return ts, err, used

    def learn(self, c: dict, init, steps: int, plan: _LearnPlan, clock: _Clock):
        """:func:`optimize_grid` for candidate ``c`` from the grid ``init``, fitted on the calibration
        batch and selected on the held-back one, within the time left."""
        return optimize_grid(self.score_fn, self.process, self.b.x_cal, solver=c["solver"],
                             num_steps=c["num_steps"], init_grid=init, reference=self.ref_cal, steps=steps,
                             learning_rate=plan.learning_rate, patience=plan.patience,
                             selection_x_init=self.b.x_held, selection_reference=self.ref_held,
                             validate=False, max_seconds=clock.left())


def _fit_budget(solver, nfe: int, grid: str, problem: _Problem, clock: _Clock) -> _FirstRun | None:
    """The run at the largest step count whose NFE fits ``nfe``, or ``None`` (out of scan time, or
    one step is over budget)."""
    # Start from budget / stages and correct by the actual count.
    stages = max(1, len(getattr(solver, "stage_fractions", (0,))))
    n = max(1, nfe // stages)
    while n >= 1:
        if clock.scan_out_of_time():
            return None
        ts, err, used = problem.evaluate(solver, n, grid)
        per_step = used / n
        if used > nfe:
            n -= 1
            continue
        if used + per_step <= nfe:
            # The stage count underestimated the budget (e.g. multistep: 1 per step).
            n_try = n + int((nfe - used) // max(per_step, 1e-9))
            ts2, err2, used2 = problem.evaluate(solver, n_try, grid) if n_try > n else (ts, err, used)
            if used2 <= nfe:
                n, ts, err, used = n_try, ts2, err2, used2
        return _FirstRun(n, ts, err, used)
    return None


def _scan_solver(spec, solver, nfe: int, grids, problem: _Problem, clock: _Clock, bar) -> list[dict]:
    """One solver on every named grid at its largest step count within budget: its candidate rows."""
    first = _fit_budget(solver, nfe, grids[0], problem, clock)
    if first is None:
        status = ("skipped: out of time" if clock.scan_out_of_time()
                  else f"skipped: one step needs more than {nfe} NFE")
        bar.update(len(grids))
        return [dict(solver=spec, grid=g, num_steps=None, nfe=None, heldout_error=float("nan"), status=status)
                for g in grids]
    n, used = first.num_steps, first.nfe
    out, runs = [], [(grids[0], first.ts, first.error)]
    bar.update(1)
    for g in grids[1:]:
        if clock.scan_out_of_time():
            out.append(dict(solver=spec, grid=g, num_steps=n, nfe=used, heldout_error=float("nan"),
                            status="skipped: out of time"))
        else:
            ts_g, err_g, _ = problem.evaluate(solver, n, g)
            runs.append((g, ts_g, err_g))
        bar.update(1)
    for g, ts_g, err_g in runs:
        out.append(dict(solver=spec, grid=g, num_steps=n, nfe=used, heldout_error=err_g,
                        status="ok" if math.isfinite(err_g) else "non-finite samples",
                        ts=np.asarray(ts_g, np.float64)))
    bar.set_postfix_str(f"{spec}: {min(r[2] for r in runs):.3g}")
    return out


def _finite(c: dict) -> bool:
    return isinstance(c["heldout_error"], float) and math.isfinite(c["heldout_error"])


def _ranked(candidates) -> list[dict]:
    """The candidates with a finite held-back error, best first."""
    return sorted([c for c in candidates if _finite(c)], key=lambda c: c["heldout_error"])


def _learned_rows(ranked, plan: _LearnPlan, problem: _Problem, clock: _Clock, bar) -> list[dict]:
    """Learned grids for the best few distinct solvers, each from its best grid (named or error grid).

    Best solver first, with all the time left (it stops earlier by patience or ``steps`` and leaves
    the rest to the next; at least one iteration always runs). With ``pool > top`` every solver of
    the pool first gets ``probe_steps`` iterations, then the ``top`` best of them (held-back error)
    continue from their best iterate: the solver that learns best is often not the best on fixed
    grids.
    """
    pool = _best_per_solver(ranked, plan.pool)
    probing = len(pool) > plan.top
    rows, runs = [], []  # runs: (candidate, [optimize_grid results, in order])
    for c in pool:
        if clock.out_of_time():
            rows.append(dict(solver=c["solver"], grid=f"learned({c['grid']})", num_steps=c["num_steps"],
                             nfe=c["nfe"], heldout_error=float("nan"), status="skipped: out of time"))
        else:
            og = problem.learn(c, c["ts"], min(plan.probe_steps, plan.steps) if probing else plan.steps, plan,
                               clock)
            runs.append((c, [og]))
            bar.set_postfix_str(f"learned {c['solver']}: {og.initial_selection_error:.3g} -> "
                                f"{og.selection_error:.3g}")
        bar.update(1)
    if probing:  # the best probes continue (those that stopped by patience are done)
        for c, ogs in sorted(runs, key=lambda r: r[1][-1].selection_error)[:plan.top]:
            og = ogs[-1]
            more = plan.steps - og.iterations
            if more > 0 and og.iterations == plan.probe_steps and og.nonfinite_iteration is None \
                    and not clock.out_of_time():
                ogs.append(problem.learn(c, og.ts, more, plan, clock))
    for c, ogs in runs:
        first, last = ogs[0], ogs[-1]
        improved = last.selection_error < first.initial_selection_error
        rows.append(dict(solver=c["solver"], grid=f"learned({c['grid']})", num_steps=c["num_steps"],
                         nfe=c["nfe"], heldout_error=float(last.selection_error),
                         status=_learned_status(improved, ogs),
                         start_heldout_error=float(first.initial_selection_error),
                         iterations=sum(o.iterations for o in ogs), ts=np.asarray(last.ts, np.float64)))
    return rows


def _learned_status(improved: bool, ogs) -> str:
    """A learned row's status; it names the iteration where a NaN/inf loss or gradient stopped it."""
    status = "ok" if improved else "ok (no iterate beat the start: start kept)"
    done = 0
    for og in ogs:
        if og.nonfinite_iteration is not None:
            return status + (f"; stopped at iteration {done + og.nonfinite_iteration}: NaN/inf loss or gradient "
                             "(NonFiniteGridLossError with on_nonfinite='raise'; best iterate kept)")
        done += og.iterations
    return status


def _learned_solver_row(ranked, nfe: int, problem: _Problem, clock: _Clock, steps: int):
    """``(LearnedSolver or None, candidate row)``: :func:`~jaxode_diffusion.tuning.learned.learn_solver`
    from the best candidate (in ``ranked``) whose solver has a learnable family, on that candidate's
    grid, fitted on the calibration batch and chosen on the held-back one, within the time left."""
    from jaxode_diffusion.solvers.learned import learnable_bases

    start = next((c for c in ranked if str(c["solver"]).lower() in learnable_bases()), None)
    row = dict(solver="learned solver", grid="-", num_steps=None, nfe=None, heldout_error=float("nan"))
    if start is None:
        return None, dict(row, status="skipped: no candidate's solver has a learnable family")
    if clock.out_of_time():
        return None, dict(row, status="skipped: out of time")
    try:
        ls = fit_learned_solver(problem.score_fn, problem.process, problem.b.x_cal, nfe=nfe, base=start["solver"],
                                grid=start["ts"], heldout_x_init=problem.b.x_held, reference=problem.ref_cal,
                                heldout_reference=problem.ref_held, steps=steps, max_seconds=clock.left())
    except ValueError as err:  # e.g. nfe too small for the family: the other candidates stand
        return None, dict(row, status=f"failed: {err}")
    grid = start["grid"] if str(start["grid"]).startswith("learned(") else f"learned({start['grid']})"
    return ls, dict(solver=f"learned({ls.base})", grid=grid, num_steps=ls.num_steps,
                    nfe=ls.nfe, heldout_error=float(ls.heldout_error), learned_solver=True,
                    status="ok" if ls.improved else "ok (no iterate beat the start: start kept)",
                    start_heldout_error=float(ls.start_heldout_error), iterations=ls.iterations,
                    ts=np.asarray(ls.ts, np.float64))


def _select_winner(candidates, nfe: int, process, b: _Batches, t0: float,
                   learned: LearnedSolver | None = None) -> TunedSampler:
    """The candidate with the lowest held-back error, with every candidate as its record."""
    ok = _ranked(candidates)
    if not ok:
        raise ValueError(f"nfe={nfe}: no candidate fits the budget with finite samples "
                         f"({len(candidates)} tried); raise nfe or check the score function.")
    best = ok[0]
    rest = [c for c in candidates if not _finite(c)]
    # Named grids are reproducible from (grid, num_steps); learned and error grids keep their times
    # (a list, JSON-able) so that any such candidate, not only the winner, can be re-used or re-checked.
    table = [{k: ([float(t) for t in v] if k == "ts" else v) for k, v in c.items()
              if k != "ts" or c["grid"] not in GRID_NAMES} for c in ok + rest]
    return TunedSampler(
        solver=best["solver"],
        ts=np.asarray(best["ts"], np.float64),
        nfe=int(best["nfe"]),
        num_steps=int(best["num_steps"]),
        grid=best["grid"],
        heldout_error=float(best["heldout_error"]),
        nfe_budget=nfe,
        process=process_spec(process),
        candidates=table,
        calibration_size=int(b.x_cal.shape[0]),
        heldout_size=int(b.x_held.shape[0]),
        seconds=time.time() - t0,
        learned=learned if best.get("learned_solver") else None,
    )
