"""The named grid that suits *your* model: measured on a small pilot batch, not read from a table.

Which named grid (``uniform``, ``log_snr``, ``edm``, ``quadratic``) is best for a solver depends on
the model and the step count, and the table default
(:func:`~jaxode_diffusion.sampling.defaults.default_grid_for`) can be far from the best (measurements:
``benchmarks/README.md``). :func:`choose_grid` measures instead: it solves a pilot batch
with the solver on every candidate grid at the requested number of steps and compares the end
points with a tight solve of the same batch (RK4 in the exponential ``x0-lambda`` form on many
log-SNR steps, its own error estimated by halving the steps and required to be well below the
differences being ranked). ``jaxode-diffusion sample`` uses it by default and caches the choice in
the run directory.

Cost: ``len(grids)`` solves at ``num_steps`` plus two reference solves (``reference_steps`` and half)
of ``num_pilot`` samples; one compilation each for the solver and the reference.

Example:
    >>> import jax, jaxode_diffusion as jd
    >>> from jaxode_diffusion.tuning.autogrid import choose_grid
    >>> vp = jd.VPLinear()
    >>> gm = jd.GaussianMixture.random(jax.random.PRNGKey(0), 2, 2)
    >>> x = vp.prior_sample(jax.random.PRNGKey(1), (32, 2))
    >>> c = choose_grid(gm.score_fn(vp), vp, x, "dpmpp_2m", 6)
    >>> c.grid in jd.sampling.GRID_NAMES and c.errors[c.grid] == min(c.errors.values())
    True
"""

from __future__ import annotations

import dataclasses
import math

from jaxode_diffusion.analysis.distances import rmse
from jaxode_diffusion.sampling.grids import GRID_NAMES, check_num_steps
from jaxode_diffusion.sampling.core import make_times, solve

__all__ = ["GridChoice", "choose_grid"]


@dataclasses.dataclass(frozen=True)
class GridChoice:
    """The result of :func:`choose_grid`.

    Attributes:
        grid: the chosen named grid (lowest pilot error).
        errors: pilot end-point RMSE against the reference, per candidate grid (``inf`` if not finite).
        reference_error: estimated RMSE of the reference itself (its difference to the half-step
            reference / 15, Richardson for a 4th-order method).
        reference_steps: steps of the reference used.
        solver: the solver's name; num_steps: its steps; num_pilot: pilot batch size.
        ts: the chosen grid's times (NumPy, float64) when it is an error grid
            (``error_grids=True``), else ``None`` (a named grid: ``make_times(..., grid=grid)``).
    """

    grid: str
    errors: dict
    reference_error: float
    reference_steps: int
    solver: str
    num_steps: int
    num_pilot: int
    ts: object = None

    def to_json(self) -> dict:
        out = {k: (dict(v) if isinstance(v, dict) else v) for k, v in dataclasses.asdict(self).items()}
        out["ts"] = None if self.ts is None else [float(t) for t in self.ts]
        return out

    def summary(self) -> str:
        errs = ", ".join(f"{g} {e:.3g}" for g, e in self.errors.items())
        return (f"grid {self.grid} (measured on {self.num_pilot} pilot draws, {self.solver} at {self.num_steps} "
                f"steps; RMSE vs a tight solve: {errs}; reference error {self.reference_error:.1g})")


def _rmse(a, b) -> float:
    v = float(rmse(a, b))
    return v if math.isfinite(v) else float("inf")


def choose_grid(score_fn, process, x_pilot, solver, num_steps, *, grids=GRID_NAMES, t_start=None, t_end=None,
                cond=None, reference_steps=None, max_reference_steps=4096, error_grids=False) -> GridChoice:
    """Choose the named grid with the lowest end-point error for ``solver`` at ``num_steps`` on this model.

    Args:
        score_fn: the model's score ``score_fn(x, t)`` (``score_fn(x, t, cond)`` with ``cond``).
        process: its forward process.
        x_pilot: pilot draws of the prior, shaped ``(n, *event_shape)`` (a few dozen suffice: the
            ranking, not the error itself, is what is used; use draws independent of the ones you
            will sample from).
        solver: the solver (name or object) the grid is for.
        num_steps: its number of steps.
        grids: candidate named grids (default all of :data:`~jaxode_diffusion.sampling.grids.GRID_NAMES`).
        t_start, t_end: as in :func:`~jaxode_diffusion.sampling.sample`.
        cond: conditioning passed to ``score_fn`` (e.g. a guided class label).
        reference_steps: steps of the reference (default ``max(160, 16 * num_steps)``); doubled
            until its estimated error is below a tenth of the best candidate's error (or
            ``max_reference_steps`` is reached; then ``reference_error`` says how far it got).
        error_grids: also rank grids placed by the model's measured local error, built from the same
            pilot draws (:func:`~jaxode_diffusion.tuning.error_grids.error_grid_candidates`: GITS-style dynamic
            programming on one-step errors, and their equidistribution); the choice then comes with its
            times in ``ts``. Measured on 5 trained 2-D networks it was not developed on, 60 cases
            (4 solvers x NFE 5, 8, 10), fresh draws (``benchmarks/results/error_grid.md``): lower RMSE
            than the named-grid choice in 37, the same grid in 18, higher in 5 (worst 1.45x),
            geometric mean ratio 0.79. Extra cost: one teacher solve (1280 evaluations) and 820
            single steps per cost solver (one or two) on the pilot batch.

    Returns:
        a :class:`GridChoice`.

    Raises:
        ValueError: unknown grid names, an empty ``grids``, a bad ``num_steps``, or when the solver
            gives non-finite samples on every candidate grid (the message lists the errors).
    """
    num_steps = check_num_steps(num_steps)
    grids = tuple(grids)
    bad = [g for g in grids if g not in GRID_NAMES]
    if not grids or bad:
        raise ValueError(f"grids={grids!r}: choose among {GRID_NAMES} (at least one).")
    if x_pilot.ndim < 2 or x_pilot.shape[0] < 2:
        raise ValueError(f"x_pilot: need a batch of at least 2 draws shaped (n, *event_shape), got {x_pilot.shape}.")
    kw = dict(cond=cond, throw=False)
    errors_raw = {g: solve(score_fn, process, x_pilot,
                           make_times(process, num_steps=num_steps, t_start=t_start, t_end=t_end, grid=g),
                           solver, **kw).samples for g in grids}
    error_ts = {}
    if error_grids:
        from jaxode_diffusion.tuning.error_grids import error_grid_candidates
        from jaxode_diffusion.sampling.core import Conditioned

        sf = score_fn if cond is None else Conditioned(score_fn, cond)
        error_ts = error_grid_candidates(sf, process, x_pilot, solver, num_steps, t_start=t_start, t_end=t_end)
        for name, ts in error_ts.items():
            errors_raw[name] = solve(score_fn, process, x_pilot, ts.astype(x_pilot.dtype), solver, **kw).samples

    def reference(m):
        ts = make_times(process, num_steps=m, t_start=t_start, t_end=t_end, grid="log_snr")
        return solve(score_fn, process, x_pilot, ts, "x0-lambda:rk4", **kw).samples

    m = int(reference_steps or max(160, 16 * num_steps))
    half = reference(m // 2)
    while True:
        ref = reference(m)
        ref_err = _rmse(ref, half) / 15.0
        errors = {g: _rmse(y, ref) for g, y in errors_raw.items()}
        best = min(errors.values())
        if not math.isfinite(best):
            raise ValueError(f"choose_grid: {solver!r} at {num_steps} steps gave non-finite samples on every grid "
                             f"({errors}); try more steps or another solver.")
        if ref_err <= 0.1 * best or 2 * m > max_reference_steps:
            break
        half, m = ref, 2 * m
    grid = min(errors, key=errors.get)
    name = str(getattr(solver, "name", solver))
    return GridChoice(grid=grid, errors=errors, reference_error=ref_err, reference_steps=m, solver=name,
                      num_steps=num_steps, num_pilot=int(x_pilot.shape[0]), ts=error_ts.get(grid))
