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

Every evaluation of a solver at one step count is one compiled program; the grids reuse it (the
grid is a traced array), so the cost is about (number of solvers) compilations plus the learned
grids' gradient steps. ``max_seconds`` bounds the whole run (candidates not reached are listed as
skipped).
"""

from __future__ import annotations

import dataclasses
import json
import math
import os
import time
from dataclasses import dataclass, field
from pathlib import Path

import jax
import jax.numpy as jnp
import numpy as np

from jaxode_diffusion.analysis.convergence import reference_solve
from jaxode_diffusion.analysis.distances import rmse
from jaxode_diffusion.tuning.grid_optimization import optimize_grid, process_spec, spec_matches
from jaxode_diffusion.sampling.grids import GRID_NAMES
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

    def sample(self, score_fn, process: ForwardProcess, x_init, **kwargs):
        """``sample(score_fn, process, x_init, solver=self.solver, grid=self.ts, num_steps=None)``."""
        from jaxode_diffusion.sampling.core import sample

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
        d = dataclasses.asdict(self)
        d["ts"] = [float(t) for t in np.asarray(self.ts, dtype=np.float64)]
        d["format"] = _FORMAT
        return d

    def save(self, path: str | os.PathLike) -> Path:
        """Write JSON to ``path`` atomically; returns the path."""
        path = Path(path)
        path.parent.mkdir(parents=True, exist_ok=True)
        write_json_atomic(path, _jsonable(self.to_dict()), sort_keys=False)
        return path


def _jsonable(v):
    if isinstance(v, dict):
        return {k: _jsonable(x) for k, x in v.items()}
    if isinstance(v, list | tuple):
        return [_jsonable(x) for x in v]
    if isinstance(v, float) and not math.isfinite(v):
        return str(v)  # "nan" / "inf": JSON has no such numbers
    if isinstance(v, np.generic):
        return _jsonable(v.item())
    return v


def load_tuned(path: str | os.PathLike, process: ForwardProcess | None = None) -> TunedSampler:
    """Read a :class:`TunedSampler` saved by :meth:`TunedSampler.save` (or ``jaxode-diffusion tune``).

    Args:
        path: the JSON file.
        process: if given, the recorded process must match it (class and parameters).

    Raises:
        ValueError: unreadable or not a tuned-sampler file, bad times, or a process mismatch.

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
    ts = np.asarray(d["ts"], dtype=np.float64)
    if ts.ndim != 1 or ts.shape[0] != int(d["num_steps"]) + 1:
        raise ValueError(f"{str(path)!r}: num_steps={d['num_steps']} needs {int(d['num_steps']) + 1} times, "
                         f"got shape {ts.shape}.")
    if not np.all(np.isfinite(ts)) or not np.all(np.diff(ts) < 0):
        raise ValueError(f"{str(path)!r}: the times must be finite and strictly decreasing; got {ts}.")
    if process is not None and not spec_matches(d["process"], process_spec(process)):
        raise ValueError(f"{str(path)!r} was tuned for {d['process']}, not for {process_spec(process)}; "
                         "pass the matching process or re-tune.")
    kw = {k: v for k, v in d.items() if k in fields}
    kw["ts"] = ts
    kw["heldout_error"] = float(kw["heldout_error"])
    return TunedSampler(**kw)


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
    score_fn,
    process: ForwardProcess,
    calib_x_init,
    *,
    nfe: int,
    heldout_x_init=None,
    key=None,
    solvers=None,
    grids=GRID_NAMES,
    form_tableaux=DEFAULT_FORM_TABLEAUX,
    learn_top: int = 3,
    learn_probe: int = 0,
    probe_steps: int = 20,
    learn_steps: int = 100,
    learning_rate: float = 0.05,
    patience: int = 30,
    t_start=None,
    t_end=None,
    rtol: float | None = None,
    max_seconds: float | None = None,
    learn_share: float = 0.5,
    error_grids: bool = False,
    error_grid_pilot: int = 128,
    progress: bool = True,
) -> TunedSampler:
    """Find the best solver and time grid for ``score_fn`` within ``nfe`` score evaluations.

    Every solver in ``solvers`` (default: all registered names, plus ``form_tableaux``) runs on
    every grid in ``grids`` at the largest step count whose NFE fits ``nfe``; each is scored by
    the end-point RMSE ``sqrt(mean_b ||x_b - x_ref_b||^2)`` on the held-back batch against a
    tight reference solve. With ``error_grids=True`` the ``max(1, learn_top)`` best solvers also get
    their error grids as candidates, scored the same way. Then grids are learned from each solver's
    best grid (named or error grid) with
    :func:`~jaxode_diffusion.tuning.grid_optimization.optimize_grid`: fitted on the calibration batch, the
    iterate chosen on the held-back batch (so a learned grid is never worse than its start
    there), for the ``learn_top`` best solvers (distinct, at least 2 steps); with ``learn_probe >
    learn_top`` by successive halving instead: the ``learn_probe`` best solvers get ``probe_steps``
    iterations each, and the ``learn_top`` best of those probes continue from their best iterate up to
    ``learn_steps`` in all. The candidate with the lowest held-back error wins.

    Batch sizes: 512 samples in each batch at d >= 8 (a few hundred at d = 2, where 128 did well).
    A calibration batch larger than the held-back one is allowed (the CLI's ``--calib-batch``), but
    4x did not help consistently. Calibration 512 -> 2048, held-back 512, NFE 10, RMSE on a fresh
    batch of 1024: on four mixtures the benchmark does not use (the winning solver's grid learned from
    its best named grid, no time limit) EDM d = 8 0.550 -> 0.510, VPLinear d = 16 0.497 -> 0.400,
    VE d = 16 0.533 -> 0.415, a cubic-log-SNR VP d = 8 0.441 -> 0.447 (8192 did no better); on the
    benchmark's six (``max_seconds=300``, benchmarks/results/tune_vs_kdiffusion_calib2048.md vs
    the 600 s run with 512) the fresh ratio to the best k-diffusion sampler went
    0.378 / 0.442 / 0.656 / 0.305 / 0.605 / 0.313 -> 0.376 / 0.495 / 0.516 / 0.363 / 0.550 / 0.422
    (mean 0.450 -> 0.454) and the held-back ratio was <= 0.5 on 4 of 6 instead of 5. With exact
    mixture scores on one CPU core a gradient step costs about the same at 2048 as at 512 (the
    reference solve 15 s instead of 8 at d = 16); with a network it grows with the batch.
    At d >= 8 the RMSE is dominated by the ~1 % of trajectories that end in another mode than the
    reference: a batch of 128 holds none or a few of them, so a learned grid fits those few (its
    calibration RMSE falls 4x while the held-back one stalls) and the held-back error is
    optimistic (benchmarks/results/tune_vs_kdiffusion.md with 128: held-back 0.039 vs 0.71 on a
    fresh batch of 1024 for EDM d = 16). Measured on mixtures that the benchmark does not use
    (unipc_bh2_3, 10 steps, learned from ``log_snr``, RMSE on a fresh batch of 1024, start ->
    learned; ``learning_rate`` 0.02 with B = 128, 0.05 with 256 and 512): VE d = 8 0.390 -> 0.352
    with B = 128, 0.319 with 256, 0.186 with 512; EDM d = 16 0.704 -> 0.684 with 128 (0.05: start
    kept), 0.481 with 512; SubVP d = 8 0.523 -> 0.494 with 128, 0.346 with 512
    (:func:`~jaxode_diffusion.tuning.grid_optimization.optimize_grid` lists the runs). A batch of 512
    costs about 4x per gradient step; the compilations, which dominate the scan, are the same.
    On the benchmark's six unseen problems (benchmarks/README.md, the run without error grids) calibrating
    on 512 instead of 128 (with this learning rate and time allocation) took the fresh-batch RMSE
    ratio to the best k-diffusion sampler from a mean 0.60 to 0.45 (<= 0.5 on 4 of 6, was 3).
    The run costs two reference solves, one compilation per solver, and up to
    ``learn_top x learn_steps`` gradient steps (with probes, up to ``learn_probe x probe_steps`` more),
    plus one compilation of the gradient per learned grid (tens of seconds on one CPU core).

    Args:
        score_fn, process: as for :func:`~jaxode_diffusion.sample`.
        calib_x_init: ``(B, *event_shape)`` initial states at ``t_start`` used to fit learned grids.
        nfe: the budget of score evaluations per sample (``>= 1``).
        heldout_x_init: the held-back batch that scores every candidate (default: drawn from
            ``process.prior_sample(key or PRNGKey(1), calib_x_init.shape)``); must differ from the
            calibration batch.
        solvers: solver specs to try (default: :func:`~jaxode_diffusion.sampling.solver_names`
            plus ``form_tableaux``).
        grids: named grids to try.
        learn_top: how many solvers' learned grids run to ``learn_steps`` (0: no learned grids).
        learn_probe, probe_steps: how many of the best solvers (on fixed grids) get a learned grid,
            and the iterations of each before all but the ``learn_top`` best (on the held-back batch)
            stop; ``learn_probe <= learn_top``: no probes, the ``learn_top`` best solvers learn for
            ``learn_steps`` each. The solver whose grid learns best is often not the best on fixed
            grids: with ``learn_top=6`` (no probes) on two mixtures the benchmark does not use (batches
            of 512, NFE 10, no time limit), VPLinear d = 16's winner became dpmpp_3m on a grid learned
            from ``quadratic`` (held-back 0.150, fresh batch of 1024 0.416) instead of the best of the first
            three, deis_ab3 (0.204, fresh 0.497); dpmpp_3m was the 4th-best solver on fixed grids. On EDM
            d = 8 the winner stayed the same. That took 323-326 s instead of about 150-170. With
            ``learn_probe=6, probe_steps=20`` (278-289 s): VPLinear d = 16 found the same winner, but on
            EDM d = 8 the probe cut dpmpp_3m (0.593 after 20 iterations; 0.480 after 100), and the winner
            was unipc_bh1_3 (held-back 0.547 instead of 0.480, fresh 0.539 instead of 0.550). On the
            benchmark's six problems (``max_seconds=600``, benchmarks/results/tune_vs_kdiffusion_probe.md)
            it did worse than the same run without probes: fresh-batch ratio to the best k-diffusion sampler
            <= 0.5 on 3 of 6 instead of 4 (mean 0.493 vs 0.450). So off by default (``learn_probe=0``).
        learn_steps, learning_rate, patience: :func:`optimize_grid`'s ``steps``,
            ``learning_rate`` and ``patience``. The rate 0.05 (optimize_grid's default is 0.02)
            measured better with batches of 512: fresh RMSE 0.186 vs 0.275 (VE d = 8), and
            0.319 vs 0.355 with 256; with 128 neither helped on EDM d = 16.
        t_start, t_end: the sampling range (process defaults).
        rtol: tolerance of the reference solves (default ``1e-10`` in float64, ``1e-6`` in float32).
        max_seconds: stop trying new candidates after this many seconds (``None``: no limit). With
            512-draw batches at d = 2-16 on one CPU core, 300 s cuts the scan short; with 600 s every
            run of benchmarks/tune_vs_kdiffusion.py ended by itself (patience or ``learn_steps``) after
            199-447 s, with the same winners as at 300 s on 5 of 6 problems
            (benchmarks/results/tune_vs_kdiffusion_600s.md).
        learn_share: with ``max_seconds`` and ``learn_top > 0``, the share of ``max_seconds``
            kept for the learned grids: the fixed-grid scan stops at ``(1 - learn_share) *
            max_seconds`` (solvers in :data:`SCAN_PRIORITY` order first). Learned grids are where
            most of the gain is (benchmarks/results/tune_vs_kdiffusion.md); without the reserve a
            slow or shared machine spent the whole budget on the scan and learned no grid. The
            learned grids then run best solver first, each with all the time left (so the best
            one gets its ``learn_steps``; the others what remains): with 512 samples, d = 8, on a
            shared core, the scan took 133 s (149 runs, mostly compilation) and each learned
            grid's first iteration 45 s, so splitting 40 % of 240 s three ways left each grid a
            single iteration.
        error_grids: also try grids placed by the model's measured local error
            (:func:`~jaxode_diffusion.tuning.error_grids.error_grid_candidates`: GITS-style least-total-error paths
            and their equidistribution, from a teacher trajectory of calibration draws) for the
            ``max(1, learn_top)`` best solvers of the scan, at each one's step count; they are scored on the
            held-back batch with the named grids (rows ``error``, ``error:r2``, ``error-proxy:r2``,
            ``equidistributed``, with their ``ts``), and a learned grid starts from its solver's best grid
            of all. Off by default: measured on mixtures the benchmark does not use (15 solvers, batches of
            512, no time limit, NFE 10, RMSE on a fresh batch of 1024, off -> on), it changed the winner on
            one of four: VPLinear d = 16, deis_ab3's equidistributed grid 0.234 vs its best named 0.263 on
            the held-back batch, learned from it 0.208 (from the named grid 0.204), fresh 0.497 -> 0.479; on
            a user VP schedule with cubic log-SNR (d = 8), EDM d = 8 and VE d = 16 every error grid was
            1.3x-70x worse than the best named grid of its solver on the held-back batch, so nothing changed
            but the time: one teacher solve, and an 820-step cost matrix per solver and per proxy solver
            (shared between solvers), about 45 CPU-s for three solvers at d = 16 with 128 pilot draws (28
            for the first), taken from the learned grids' share of ``max_seconds``. On the benchmark's six
            unseen problems (benchmarks/results/tune_vs_kdiffusion.md, run with it on; ``max_seconds=300``)
            the held-back ratio to the best k-diffusion sampler went 0.343 -> 0.119 on VPCosine d = 2
            (unipc_bh2_2's ``error`` grid 0.149 vs ``log_snr`` 0.161, learned from it 0.025 vs 0.073; fresh
            0.428 -> 0.281), 0.594 -> 0.628 on the user VP d = 16 (the winner's grid, learned third, got the
            time left: 10 iterations instead of 65), 0.096 -> 0.117 on RectifiedFlow d = 2 (another solver
            set reached the learned phase), and stayed the same on the other three.
        error_grid_pilot: how many calibration draws (the first ones) build the error grids.
        progress: show a tqdm progress bar.

    Returns:
        :class:`TunedSampler`.

    Raises:
        ValueError: a bad budget or batch, a held-back batch equal to the calibration batch, an
            unknown solver or grid, or no candidate that fits the budget and stays finite.

    Example:
        >>> import jax
        >>> from jaxode_diffusion import GaussianMixture, VPLinear, sample
        >>> gm, vp = GaussianMixture.ring(4), VPLinear()
        >>> sf = gm.score_fn(vp)
        >>> x_cal = vp.prior_sample(jax.random.PRNGKey(0), (32, 2))
        >>> t = tune(sf, vp, x_cal, nfe=6, solvers=["ddim", "dpmpp_2m"], learn_top=0, progress=False)
        >>> x = sample(sf, vp, x_cal, solver=t.solver, grid=t.ts, num_steps=None)
        >>> t.nfe <= 6
        True
    """
    from tqdm.auto import tqdm

    from jaxode_diffusion.sampling.core import get_solver, make_times

    t0 = time.time()
    if isinstance(nfe, bool) or int(nfe) != nfe or nfe < 1:
        raise ValueError(f"nfe={nfe!r}: the budget must be a positive integer number of score evaluations.")
    nfe = int(nfe)
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
    pilot = error_grid_pilot
    if isinstance(pilot, bool) or int(pilot) != pilot or pilot < 2:
        raise ValueError(f"error_grid_pilot={pilot!r} must be an integer >= 2 (draws of the calibration "
                         "batch the error grids are built from; 128 is the default).")
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
    grids = tuple(grids)
    for g in grids:
        make_times(process, num_steps=2, t_start=t_start, t_end=t_end, grid=g)  # names the bad grid
    specs = list(solvers) if solvers is not None else _default_solvers(form_tableaux)
    resolved = []
    for s in specs:
        resolved.append((s, get_solver(s)))  # ValueError names an unknown solver

    tol = rtol if rtol is not None else (1e-10 if dt == jnp.float64 else 1e-6)
    ref_cal = reference_solve(score_fn, process, x_cal, t_start=t_start, t_end=t_end, rtol=tol, atol=tol)
    ref_held = reference_solve(score_fn, process, x_held, t_start=t_start, t_end=t_end, rtol=tol, atol=tol)

    candidates: list[dict] = []
    n_learned = max(learn_top, learn_probe) if learn_top else 0
    bar = tqdm(total=len(resolved) * len(grids) + n_learned, desc=f"tune NFE {nfe}", disable=not progress,
               leave=False)

    def out_of_time() -> bool:
        return max_seconds is not None and time.time() - t0 > max_seconds

    scan_seconds = None if max_seconds is None else max_seconds * (1.0 - (learn_share if learn_top else 0.0))

    def scan_out_of_time() -> bool:
        return scan_seconds is not None and time.time() - t0 > scan_seconds

    def _score(solver, ts):
        x, used = _run(score_fn, process, x_held, jnp.asarray(ts, dt), solver)
        return float(rmse(x, ref_held)), used

    def evaluate(spec, solver, n, g):
        ts = make_times(process, num_steps=n, t_start=t_start, t_end=t_end, grid=g).astype(dt)
        err, used = _score(solver, ts)
        return ts, err, used

    for spec, solver in resolved:
        # Largest n with NFE(n) <= budget: start from budget / stages, correct by the actual count.
        stages = max(1, len(getattr(solver, "stage_fractions", (0,))))
        n = max(1, nfe // stages)
        first = None
        while n >= 1:
            if scan_out_of_time():
                break
            ts, err, used = evaluate(spec, solver, n, grids[0])
            per_step = used / n
            if used > nfe:
                n -= 1
                continue
            if used + per_step <= nfe and first is None:
                # The stage count underestimated the budget (e.g. multistep: 1 per step).
                n_try = n + int((nfe - used) // max(per_step, 1e-9))
                ts2, err2, used2 = evaluate(spec, solver, n_try, grids[0]) if n_try > n else (ts, err, used)
                if used2 <= nfe:
                    n, ts, err, used = n_try, ts2, err2, used2
            first = (n, ts, err, used)
            break
        if first is None:
            status = ("skipped: out of time" if scan_out_of_time()
                      else f"skipped: one step needs more than {nfe} NFE")
            for g in grids:
                candidates.append(dict(solver=spec, grid=g, num_steps=None, nfe=None,
                                       heldout_error=float("nan"),
                                       status=status))
            bar.update(len(grids))
            continue
        n, ts, err, used = first
        rows = [(grids[0], ts, err)]
        bar.update(1)
        for g in grids[1:]:
            if scan_out_of_time():
                candidates.append(dict(solver=spec, grid=g, num_steps=n, nfe=used, heldout_error=float("nan"),
                                       status="skipped: out of time"))
            else:
                ts_g, err_g, _ = evaluate(spec, solver, n, g)
                rows.append((g, ts_g, err_g))
            bar.update(1)
        for g, ts_g, err_g in rows:
            candidates.append(dict(solver=spec, grid=g, num_steps=n, nfe=used, heldout_error=err_g,
                                   status="ok" if math.isfinite(err_g) else "non-finite samples",
                                   ts=np.asarray(ts_g, np.float64)))
        bar.set_postfix_str(f"{spec}: {min(r[2] for r in rows):.3g}")

    def finite(c):
        return isinstance(c["heldout_error"], float) and math.isfinite(c["heldout_error"])

    ranked = sorted([c for c in candidates if finite(c)], key=lambda c: c["heldout_error"])
    if error_grids:
        candidates += _error_grid_rows(score_fn, process, x_cal, ranked, max(1, learn_top), error_grid_pilot,
                                       t_start, t_end, dt, evaluate_ts=_score,
                                       out_of_time=out_of_time)
        ranked = sorted([c for c in candidates if finite(c)], key=lambda c: c["heldout_error"])
    # Learned grids for the best few distinct solvers, each from its best grid (named or error grid).
    # With learn_probe > learn_top: every one of the learn_probe best solvers first gets probe_steps
    # iterations, then the learn_top best of them (by held-back error) continue from their best iterate
    # (the solver that learns best is often not the best on fixed grids).
    pool = _best_per_solver(ranked, n_learned)
    probing = len(pool) > learn_top

    def learn(c, init, steps):
        left = None if max_seconds is None else max(0.0, max_seconds - (time.time() - t0))
        return optimize_grid(score_fn, process, x_cal, solver=c["solver"], num_steps=c["num_steps"],
                             init_grid=init, reference=ref_cal, steps=steps, learning_rate=learning_rate,
                             patience=patience, selection_x_init=x_held, selection_reference=ref_held,
                             validate=False, max_seconds=left)

    runs = []  # (candidate, [optimize_grid results, in order])
    for c in pool:
        # Best solver first, with all the time left (it stops earlier by patience or learn_steps and
        # leaves the rest to the next): the learned grid of the best fixed-grid solver usually wins,
        # and a gradient's compilation alone can take tens of seconds on one core, so an equal split
        # left every grid one or two iterations. At least one iteration always runs.
        if out_of_time():
            candidates.append(dict(solver=c["solver"], grid=f"learned({c['grid']})", num_steps=c["num_steps"],
                                   nfe=c["nfe"], heldout_error=float("nan"), status="skipped: out of time"))
        else:
            og = learn(c, c["ts"], min(probe_steps, learn_steps) if probing else learn_steps)
            runs.append((c, [og]))
            bar.set_postfix_str(f"learned {c['solver']}: {og.initial_selection_error:.3g} -> "
                                f"{og.selection_error:.3g}")
        bar.update(1)
    if probing:  # the learn_top best probes continue (those that stopped by patience are done)
        for c, ogs in sorted(runs, key=lambda r: r[1][-1].selection_error)[:learn_top]:
            og = ogs[-1]
            more = learn_steps - og.iterations
            if more > 0 and og.iterations == probe_steps and og.nonfinite_iteration is None and not out_of_time():
                ogs.append(learn(c, og.ts, more))
    for c, ogs in runs:
        first, last = ogs[0], ogs[-1]
        improved = last.selection_error < first.initial_selection_error
        candidates.append(dict(solver=c["solver"], grid=f"learned({c['grid']})", num_steps=c["num_steps"],
                               nfe=c["nfe"], heldout_error=float(last.selection_error),
                               status="ok" if improved else "ok (no iterate beat the start: start kept)",
                               start_heldout_error=float(first.initial_selection_error),
                               iterations=sum(o.iterations for o in ogs), ts=np.asarray(last.ts, np.float64)))
    bar.close()

    ok = sorted([c for c in candidates if finite(c)], key=lambda c: c["heldout_error"])
    if not ok:
        raise ValueError(f"nfe={nfe}: no candidate fits the budget with finite samples "
                         f"({len(candidates)} tried); raise nfe or check the score function.")
    best = ok[0]
    rest = [c for c in candidates if not finite(c)]
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
        calibration_size=int(x_cal.shape[0]),
        heldout_size=int(x_held.shape[0]),
        seconds=time.time() - t0,
    )
