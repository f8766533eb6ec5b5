"""Regularity profiles: derivative norms of a score on a grid of times along the sampling path.

:func:`profile` evaluates the estimators of :mod:`jaxode_diffusion.analysis.regularity.estimators` at
points from two sources (probability-flow ODE trajectories, forward-noised data) on a grid of
``t``, raw and weighted by ``sigma^2`` (first derivative) or ``sigma^3`` (second derivative), the
scale-free forms in which they enter the error bounds of high-order samplers. The result is a
typed :class:`RegularityProfile`: one :class:`ProfileCurve` per (source, quantity), each with
:class:`BatchStats` (statistics over the batch, one value per ``t``) and
:class:`EstimateAccuracy`. ``to_dict`` / ``from_dict`` / ``to_json`` / ``from_json`` keep the JSON
schema of the files written by ``jaxode-diffusion regularity`` and the study; the JSON is strict
(a NaN or inf is written ``null``, through :func:`jaxode_diffusion.utils.outputs.dumps_json`) and
``from_dict`` reads ``null`` back as NaN.

The two sources of points ``x`` at each grid time ``t``:

* ``"trajectory"``: the states of probability-flow ODE trajectories, from
  :func:`jaxode_diffusion.sampling.sample` with ``return_trajectory=True`` run on the grid itself
  (refined ``substeps`` times, linearly in ``t`` between grid points, for accuracy), started at
  ``max(t_grid)`` from ``x_init`` (default: ``process.prior_sample`` with the batch shape of
  ``x_source``); see :func:`trajectory_points`. With ``cond`` the trajectories are sampled with
  the condition and every derivative is taken at it;
* ``"data"``: forward-noised data ``alpha(t) x0 + sigma(t) eps`` with ``x0 = x_source`` and one
  fixed draw of ``eps`` for all ``t`` (common random numbers: smoother curves); see
  :func:`noised_data_points`.
"""

from __future__ import annotations

import dataclasses
import json
import warnings
from collections.abc import Callable, Mapping, Sequence
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np

from jaxode_diffusion.processes import ForwardProcess
from jaxode_diffusion.utils.outputs import dumps_json
from jaxode_diffusion.analysis.regularity.conditioning import with_cond
from jaxode_diffusion.analysis.regularity.estimators import (
    METHODS,
    check_choice,
    check_positive_int,
    jacobian_estimator,
    resolve_method,
    second_derivative_estimator,
)

__all__ = [
    "QUANTITIES",
    "SIGMA_POWER",
    "BatchStats",
    "EstimateAccuracy",
    "ProfileCurve",
    "ProfileSettings",
    "RegularityProfile",
    "profile",
]

#: The derivative norms a profile can hold (first derivative: spectral / Frobenius norm of
#: ``Ds``; second: operator / Frobenius norm of ``D^2 s``).
QUANTITIES = ("jacobian_spectral", "jacobian_fro", "second_operator", "second_fro")
#: The sigma power that makes each quantity scale-free: s ~ 1/sigma, Ds ~ 1/sigma^2, D^2 s ~ 1/sigma^3.
SIGMA_POWER = {"jacobian_spectral": 2, "jacobian_fro": 2, "second_operator": 3, "second_fro": 3}
_SOURCES = ("trajectory", "data", "both")


# ------------------------------------------------------------------------------------------
# typed result
# ------------------------------------------------------------------------------------------
def _nan_for_null(values) -> tuple:
    # Strict JSON writes NaN and inf as null (utils.outputs.jsonable); a profile holds NaN there.
    return tuple(float("nan") if v is None else v for v in values)


def stat_name(q: float) -> str:
    """The name of the batch quantile ``q`` in a profile: ``stat_name(0.5) == "q50"``.

    Example:
        >>> stat_name(0.5), stat_name(0.995)
        ('q50', 'q99_5')
    """
    return f"q{100 * q:g}".replace(".", "_")


@dataclasses.dataclass(frozen=True)
class BatchStats:
    """Statistics of a quantity over the batch, one value per grid time (increasing ``t``).

    Attributes:
        max, mean: batch maximum and mean.
        quantiles: ``{q: values}`` for each requested batch quantile ``q`` in ``[0, 1]``.

    Example:
        >>> s = BatchStats.of([np.array([1.0, 3.0]), np.array([2.0, 4.0])], (0.5,))
        >>> s.max, s.stat("q50")
        ((3.0, 4.0), (2.0, 3.0))
    """

    max: tuple[float, ...]
    mean: tuple[float, ...]
    quantiles: dict[float, tuple[float, ...]]

    @classmethod
    def of(cls, per_t: Sequence[np.ndarray], quantiles: Sequence[float]) -> BatchStats:
        """Summarise per-time batches of values (``per_t[i]`` holds the batch at time ``i``)."""
        vals = [np.asarray(v, np.float64) for v in per_t]
        return cls(
            max=tuple(float(np.max(v)) for v in vals),
            mean=tuple(float(np.mean(v)) for v in vals),
            quantiles={float(q): tuple(float(np.quantile(v, q)) for v in vals) for q in quantiles},
        )

    def names(self) -> list[str]:
        """The statistic names accepted by :meth:`stat`: ``"max"``, ``"mean"``, ``"q50"``, ..."""
        return ["max", "mean", *(stat_name(q) for q in self.quantiles)]

    def stat(self, name: str) -> tuple[float, ...]:
        """Values of the statistic ``name`` (``"max"``, ``"mean"`` or a quantile such as ``"q90"``)."""
        if name == "max":
            return self.max
        if name == "mean":
            return self.mean
        for q, vals in self.quantiles.items():
            if stat_name(q) == name:
                return vals
        raise ValueError(f"stat={name!r} is not a statistic of the profile; choose from {self.names()}.")

    def to_dict(self) -> dict:
        return {name: list(self.stat(name)) for name in self.names()}

    @classmethod
    def from_dict(cls, data: Mapping, quantiles: Sequence[float]) -> BatchStats:
        return cls(max=_nan_for_null(data["max"]), mean=_nan_for_null(data["mean"]),
                   quantiles={float(q): _nan_for_null(data[stat_name(q)]) for q in quantiles})


@dataclasses.dataclass(frozen=True)
class EstimateAccuracy:
    """How accurate the estimates behind a curve are, one value per grid time.

    Fields that do not apply to the estimator are ``None``.

    Attributes:
        exact_frac: fraction of the batch computed by the dense (exact) path.
        converged_frac: iterative estimates: fraction whose iteration met the tolerance.
        min_num_at_max: operator-norm restarts: the smallest (over the batch) number of restarts
            that reached the maximum (1 means "found once": consider more restarts).
        max_rel_stderr: stochastic estimates: the largest relative standard error in the batch.

    Example:
        >>> EstimateAccuracy(exact_frac=(1.0, 1.0)).converged_frac is None
        True
    """

    exact_frac: tuple[float, ...]
    converged_frac: tuple[float, ...] | None = None
    min_num_at_max: tuple[int, ...] | None = None
    max_rel_stderr: tuple[float, ...] | None = None

    @classmethod
    def of(cls, infos: Sequence[Mapping], values: Sequence[np.ndarray]) -> EstimateAccuracy:
        """From the estimators' per-time ``info`` dicts and values (see :func:`jacobian_norm`)."""
        first = infos[0]

        def over_t(fn):
            return tuple(fn(info, np.asarray(v, np.float64)) for info, v in zip(infos, values, strict=True))

        return cls(
            exact_frac=over_t(lambda i, v: float(np.mean(np.asarray(i["exact"])))),
            converged_frac=over_t(lambda i, v: float(np.mean(np.asarray(i["converged"]))))
            if "converged" in first else None,
            min_num_at_max=over_t(lambda i, v: int(np.min(np.asarray(i["num_at_max"]))))
            if "num_at_max" in first else None,
            max_rel_stderr=over_t(lambda i, v: float(np.max(
                np.asarray(i["stderr"], np.float64) / np.maximum(v, np.finfo(np.float64).tiny))))
            if "stderr" in first else None,
        )

    def to_dict(self) -> dict:
        return {f.name: list(getattr(self, f.name)) for f in dataclasses.fields(self)
                if getattr(self, f.name) is not None}

    @classmethod
    def from_dict(cls, data: Mapping) -> EstimateAccuracy:
        return cls(**{f.name: _nan_for_null(data[f.name]) for f in dataclasses.fields(cls) if f.name in data})


@dataclasses.dataclass(frozen=True)
class ProfileCurve:
    """One quantity at one source of points, over the grid.

    Attributes:
        source: ``"trajectory"`` or ``"data"``.
        quantity: one of :data:`QUANTITIES`.
        sigma_power: the power of ``sigma`` in the weighted values (2 or 3).
        raw: batch statistics of the norm.
        weighted: batch statistics of ``sigma^sigma_power`` times the norm.
        accuracy: accuracy of the estimates.

    Example:
        >>> acc = EstimateAccuracy(exact_frac=(1.0,))
        >>> c = ProfileCurve("data", "jacobian_fro", 2, BatchStats((2.0,), (1.0,), {}),
        ...                  BatchStats((0.5,), (0.25,), {}), acc)
        >>> c.stats("weighted").max
        (0.5,)
    """

    source: str
    quantity: str
    sigma_power: int
    raw: BatchStats
    weighted: BatchStats
    accuracy: EstimateAccuracy

    def stats(self, weighting: str) -> BatchStats:
        """``raw`` or ``weighted`` by name."""
        check_choice("weighting", weighting, ("raw", "weighted"))
        return self.raw if weighting == "raw" else self.weighted


@dataclasses.dataclass
class ProfileSettings:
    """How a profile was computed (``score`` and ``command`` are free labels for reports)."""

    process: str
    dim: int
    event_shape: tuple[int, ...]
    batch: int
    method: str
    source: str
    solver: str
    substeps: int
    quantities: tuple[str, ...]
    quantiles: tuple[float, ...]
    dtype: str
    score: str = ""
    command: str = ""

    def to_dict(self) -> dict:
        out = dataclasses.asdict(self)
        out["event_shape"] = list(self.event_shape)
        out["quantities"] = list(self.quantities)
        out["quantiles"] = list(self.quantiles)
        out["sigma_power"] = {q: SIGMA_POWER[q] for q in self.quantities}
        for label in ("score", "command"):
            if not out[label]:
                del out[label]
        return out

    @classmethod
    def from_dict(cls, data: Mapping) -> ProfileSettings:
        names = {f.name for f in dataclasses.fields(cls)}
        kw = {k: v for k, v in data.items() if k in names}
        kw["event_shape"] = tuple(kw["event_shape"])
        kw["quantities"] = tuple(kw["quantities"])
        kw["quantiles"] = tuple(float(q) for q in kw["quantiles"])
        return cls(**kw)


@dataclasses.dataclass
class RegularityProfile:
    """Summaries of derivative norms of a score on a grid of times (typed; JSON via ``to_dict``).

    Attributes:
        t, lam, alpha, sigma: the grid (increasing ``t``) and the schedule on it.
        curves: one :class:`ProfileCurve` per (source, quantity), sources in the order
            ``"data"``, ``"trajectory"``; look one up with :meth:`curve`.
        settings: a :class:`ProfileSettings` (process, d, batch, method, solver, ...).

    ``to_dict()`` gives the JSON schema of the files the CLI writes:
    ``{"t", "lam", "alpha", "sigma", "results", "accuracy", "meta"}`` with
    ``results[source][quantity][weighting][stat]`` and ``accuracy[source][quantity][name]``
    lists over ``t``; ``from_dict`` reads it back.

    Example:
        >>> import jax
        >>> from jaxode_diffusion import GaussianMixture, VPLinear
        >>> gm, vp = GaussianMixture.ring(4), VPLinear()
        >>> p = profile(gm.score_fn(vp), vp, t_grid=[0.05, 0.5], source="data",
        ...             x_source=gm.sample(jax.random.PRNGKey(1), 4), quantities=["jacobian_fro"])
        >>> c = p.curve("data", "jacobian_fro")
        >>> len(c.weighted.stat("q50")), p.sources, p.settings.method
        (2, ('data',), 'exact')
    """

    t: tuple[float, ...]
    lam: tuple[float, ...]
    alpha: tuple[float, ...]
    sigma: tuple[float, ...]
    curves: tuple[ProfileCurve, ...]
    settings: ProfileSettings

    @property
    def sources(self) -> tuple[str, ...]:
        """The sources present, in order (``"data"`` before ``"trajectory"``)."""
        return tuple(dict.fromkeys(c.source for c in self.curves))

    @property
    def quantities(self) -> tuple[str, ...]:
        """The quantities present, in order."""
        return tuple(dict.fromkeys(c.quantity for c in self.curves))

    def curve(self, source: str, quantity: str) -> ProfileCurve:
        """The curve of ``quantity`` at ``source``; ValueError naming what the profile holds."""
        for c in self.curves:
            if c.source == source and c.quantity == quantity:
                return c
        raise ValueError(
            f"the profile has no curve for source={source!r}, quantity={quantity!r}; it holds "
            f"sources {list(self.sources)} and quantities {list(self.quantities)}."
        )

    @property
    def results(self) -> dict:
        """Deprecated: the nested dict ``results[source][quantity][weighting][stat]``; use :meth:`curve`."""
        warnings.warn("RegularityProfile.results is deprecated: use profile.curve(source, quantity)"
                      ".raw/.weighted, or to_dict()['results'].", DeprecationWarning, stacklevel=2)
        return self.to_dict()["results"]

    def to_dict(self) -> dict:
        results: dict = {}
        accuracy: dict = {}
        for c in self.curves:
            results.setdefault(c.source, {})[c.quantity] = {"raw": c.raw.to_dict(),
                                                            "weighted": c.weighted.to_dict()}
            accuracy.setdefault(c.source, {})[c.quantity] = c.accuracy.to_dict()
        return {"t": list(self.t), "lam": list(self.lam), "alpha": list(self.alpha),
                "sigma": list(self.sigma), "results": results, "accuracy": accuracy,
                "meta": self.settings.to_dict()}

    def to_json(self, path=None, *, indent: int | None = 1, sort_keys: bool = False) -> str:
        """The profile as strict JSON text (the schema of :meth:`to_dict`; NaN and inf as ``null``),
        written to ``path`` too when given; :meth:`from_json` reads it back.

        Example:
            >>> nan_max = BatchStats((float("nan"),), (1.0,), {})
            >>> c = ProfileCurve("data", "jacobian_fro", 2, nan_max, nan_max, EstimateAccuracy((1.0,)))
            >>> s = ProfileSettings("VPLinear", 2, (2,), 4, "exact", "data", "rk4", 1, ("jacobian_fro",), (),
            ...                     "float64")
            >>> text = RegularityProfile((0.5,), (0.0,), (0.7,), (0.7,), (c,), s).to_json(indent=None)
            >>> "NaN" in text, RegularityProfile.from_json(text).curve("data", "jacobian_fro").raw.max
            (False, (nan,))
        """
        text = dumps_json(self.to_dict(), indent=indent, sort_keys=sort_keys)
        if path is not None:
            with open(path, "w") as fh:
                fh.write(text)
        return text

    @classmethod
    def from_json(cls, text: str) -> RegularityProfile:
        """Read back the text of :meth:`to_json` (``null`` becomes NaN)."""
        return cls.from_dict(json.loads(text))

    @classmethod
    def from_dict(cls, data: Mapping) -> RegularityProfile:
        """Read back :meth:`to_dict` (or a ``regularity.json`` file's contents)."""
        settings = ProfileSettings.from_dict(data["meta"])
        curves = []
        for src, by_q in data["results"].items():
            for q, by_w in by_q.items():
                curves.append(ProfileCurve(
                    source=src, quantity=q, sigma_power=SIGMA_POWER[q],
                    raw=BatchStats.from_dict(by_w["raw"], settings.quantiles),
                    weighted=BatchStats.from_dict(by_w["weighted"], settings.quantiles),
                    accuracy=EstimateAccuracy.from_dict(data.get("accuracy", {}).get(src, {}).get(q, {})
                                                        or {"exact_frac": [float("nan")] * len(data["t"])}),
                ))
        return cls(t=_nan_for_null(data["t"]), lam=_nan_for_null(data["lam"]), alpha=_nan_for_null(data["alpha"]),
                   sigma=_nan_for_null(data["sigma"]), curves=tuple(curves), settings=settings)


# ------------------------------------------------------------------------------------------
# profile(): validation, points, estimators, summaries
# ------------------------------------------------------------------------------------------
def _check_profile_args(source, method, quantities, substeps, quantiles, estimator_kwargs):
    check_choice("source", source, _SOURCES)
    check_choice("method", method, METHODS)
    quantities = tuple(quantities)
    for q in quantities:
        check_choice("quantities", q, QUANTITIES)
    if not quantities:
        raise ValueError(f"quantities must name at least one of {list(QUANTITIES)}.")
    substeps = check_positive_int("substeps", substeps)
    for q in quantiles:
        if not 0.0 <= float(q) <= 1.0:
            raise ValueError(f"quantiles must lie in [0, 1], got {q!r}.")
    estimator_kwargs = dict(estimator_kwargs or {})
    for q in estimator_kwargs:
        check_choice("estimator_kwargs key", q, QUANTITIES)
    return quantities, substeps, tuple(float(q) for q in quantiles), estimator_kwargs


def _as_float_batch(x_source):
    x_source = jnp.asarray(x_source)
    if x_source.ndim < 2:
        raise ValueError(f"x_source must have shape (B, *event_shape); got {x_source.shape}.")
    if not jnp.issubdtype(x_source.dtype, jnp.floating):
        x_source = x_source.astype(jnp.float64 if jax.config.jax_enable_x64 else jnp.float32)
    return x_source


def noised_data_points(process: ForwardProcess, x0, ts_asc, key) -> list:
    """``alpha(t) x0 + sigma(t) eps`` at each ``t`` of ``ts_asc``, one fixed draw of ``eps``.

    Common random numbers (the same ``eps`` for every ``t``) make the profile's curves smooth.

    Example:
        >>> import jax, jax.numpy as jnp
        >>> from jaxode_diffusion import VPLinear
        >>> pts = noised_data_points(VPLinear(), jnp.zeros((3, 2)), [0.1, 0.5], jax.random.PRNGKey(0))
        >>> len(pts), pts[0].shape
        (2, (3, 2))
    """
    eps = jax.random.normal(key, x0.shape, x0.dtype)
    return [process.marginal(x0, jnp.asarray(t, x0.dtype), eps) for t in ts_asc]


def trajectory_points(score_fn, process: ForwardProcess, x_init, ts_desc, *, solver="rk4",
                      substeps: int = 1, cond=None) -> list:
    """States of probability-flow ODE trajectories at each time of ``ts_desc``, in increasing ``t``.

    Runs :func:`~jaxode_diffusion.sampling.sample` with ``return_trajectory=True`` on ``ts_desc``
    refined ``substeps`` times (linearly in ``t`` between grid points), from ``x_init`` at
    ``ts_desc[0]``, and keeps the states at the grid points.

    Example:
        >>> import jax.numpy as jnp
        >>> from jaxode_diffusion import VPLinear
        >>> pts = trajectory_points(lambda x, t: -x, VPLinear(), jnp.ones((2, 1)),
        ...                         jnp.array([1.0, 0.5, 0.1]), substeps=2)
        >>> len(pts), pts[-1].shape
        (3, (2, 1))
    """
    from jaxode_diffusion.sampling.core import sample

    n_t = ts_desc.shape[0]
    frac = jnp.linspace(0.0, 1.0, substeps + 1, dtype=ts_desc.dtype)[:-1]
    fine = (ts_desc[:-1, None] + frac[None, :] * (ts_desc[1:] - ts_desc[:-1])[:, None]).reshape(-1)
    fine = jnp.concatenate([fine, ts_desc[-1:]])
    cond_kw = {} if cond is None else {"cond": cond}
    sol = sample(score_fn, process, x_init, solver=solver, grid=fine, return_trajectory=True, **cond_kw)
    traj = sol.trajectory[::substeps]
    assert traj.shape[0] == n_t
    return [traj[n_t - 1 - i] for i in range(n_t)]


def _compiled_estimators(score_fn, x_source, key, quantities, method, estimator_kwargs) -> dict:
    """One compiled estimator per quantity, reused at every t (t is a traced argument)."""
    estimators = {}
    for q in quantities:
        setup = jacobian_estimator if q.startswith("jacobian") else second_derivative_estimator
        try:
            _, _, estimators[q] = setup(score_fn, x_source, key, ord=q.split("_", 1)[1],
                                        method=method, **estimator_kwargs.get(q, {}))
        except TypeError as err:
            raise ValueError(f"estimator_kwargs[{q!r}] = {estimator_kwargs.get(q)!r}: {err}") from None
    return estimators


def _source_curves(source, points, ts_asc, sig, estimators, score_fn, key, cond, quantiles) -> list:
    """The :class:`ProfileCurve` of every quantity at one source's points (``points[i]`` at ``ts_asc[i]``)."""
    curves = []
    for q, estimate in estimators.items():
        values, infos = [], []
        for x, t in zip(points, ts_asc, strict=True):
            args = (jnp.asarray(t, x.dtype), key)
            vals, info = (estimate(score_fn, x, *args) if cond is None
                          else with_cond(estimate, score_fn, x, cond, *args))
            values.append(np.asarray(vals, np.float64))
            infos.append(info)
        power = SIGMA_POWER[q]
        curves.append(ProfileCurve(
            source=source, quantity=q, sigma_power=power,
            raw=BatchStats.of(values, quantiles),
            weighted=BatchStats.of([v * s**power for v, s in zip(values, sig, strict=True)], quantiles),
            accuracy=EstimateAccuracy.of(infos, values),
        ))
    return curves


def profile(
    score_fn: Callable,
    process: ForwardProcess,
    *,
    t_grid,
    x_source,
    source: str = "both",
    key=None,
    x_init=None,
    solver="rk4",
    substeps: int = 1,
    quantities: Sequence[str] = QUANTITIES,
    method: str = "auto",
    quantiles: Sequence[float] = (0.5, 0.9, 0.99),
    estimator_kwargs: dict | None = None,
    cond=None,
) -> RegularityProfile:
    """Derivative norms of ``score_fn`` on a grid of times, along ODE trajectories and at noised data.

    The two sources of points are described in the module docstring.

    Args:
        score_fn, process: ``score_fn(x, t)`` and the forward process.
        t_grid: 1-D array of times (any order; strictly monotone, inside the process's range).
        x_source: ``(B, *event_shape)`` data samples (source ``"data"``); for
            ``source="trajectory"`` only its shape and dtype are used.
        source: ``"trajectory"``, ``"data"`` or ``"both"``.
        key: PRNG key (prior draw, noise, estimator probes); ``None`` means ``PRNGKey(0)``.
        x_init: optional ``(B, *event_shape)`` start of the trajectories at ``max(t_grid)``
            (default: ``process.prior_sample`` with the batch shape of ``x_source``).
        solver, substeps: sampler for the trajectories and its steps per grid interval.
        quantities, method: a subset of :data:`QUANTITIES`; ``"exact"``, ``"matrix_free"`` or
            ``"auto"`` (as in :func:`jacobian_norm`).
        quantiles: batch quantiles to report (besides max and mean).
        estimator_kwargs: extra keyword arguments per quantity, e.g.
            ``{"second_operator": {"num_restarts": 16}}``.
        cond: optional condition of a conditional (or guided) score ``score_fn(x, t, cond)``,
            per example (leading axis ``B``) or shared (scalars).

    Returns:
        A :class:`RegularityProfile` (``p.curve(source, quantity).weighted.stat("q50")``).

    Raises:
        ValueError: unknown ``source``/``quantities``/``method``, bad grid or shapes.

    Example:
        >>> import jax
        >>> from jaxode_diffusion import GaussianMixture, VPLinear
        >>> gm, vp = GaussianMixture.ring(4), VPLinear()
        >>> p = profile(gm.score_fn(vp), vp, t_grid=[0.01, 0.1, 1.0],
        ...             x_source=gm.sample(jax.random.PRNGKey(1), 8), source="data")
        >>> len(p.curve("data", "jacobian_spectral").weighted.stat("q50"))
        3
    """
    quantities, substeps, quantiles, estimator_kwargs = _check_profile_args(
        source, method, quantities, substeps, quantiles, estimator_kwargs)
    x_source = _as_float_batch(x_source)
    key = jax.random.PRNGKey(0) if key is None else key
    k_prior, k_noise, k_est = jax.random.split(key, 3)
    ts_desc, ts_asc = _time_grid(t_grid, process, x_source.dtype)
    resolved = resolve_method(method, int(np.prod(x_source.shape[1:])))

    points = _source_points(score_fn, process, source, x_source, x_init, ts_desc, ts_asc, k_prior, k_noise,
                            solver=solver, substeps=substeps, cond=cond)
    estimators = _compiled_estimators(score_fn, x_source, k_est, quantities, resolved, estimator_kwargs)
    sig = np.asarray([float(process.sigma(jnp.asarray(t))) for t in ts_asc])
    curves = [c for src, xs in points.items()
              for c in _source_curves(src, xs, ts_asc, sig, estimators, score_fn, k_est, cond, quantiles)]
    return RegularityProfile(
        t=tuple(float(t) for t in ts_asc),
        lam=tuple(float(process.lam(jnp.asarray(t))) for t in ts_asc),
        alpha=tuple(float(process.alpha(jnp.asarray(t))) for t in ts_asc),
        sigma=tuple(float(s) for s in sig),
        curves=tuple(curves),
        settings=_profile_settings(process, x_source, resolved, source, solver, substeps, quantities,
                                   quantiles),
    )


def _profile_settings(process, x_source, method, source, solver, substeps, quantities, quantiles):
    return ProfileSettings(
        process=type(process).__name__, dim=int(np.prod(x_source.shape[1:])),
        event_shape=tuple(x_source.shape[1:]), batch=int(x_source.shape[0]), method=method, source=source,
        solver=str(solver), substeps=substeps, quantities=quantities, quantiles=quantiles,
        dtype=str(x_source.dtype),
    )


def _time_grid(t_grid, process, dtype):
    """``(ts_desc, ts_asc)``: the validated grid decreasing (a jax array) and increasing (NumPy)."""
    from jaxode_diffusion.sampling.grids import validate_grid

    ts_desc = validate_grid(jnp.asarray(t_grid, dtype), process, name="t_grid")
    return ts_desc, np.asarray(ts_desc)[::-1]


def _source_points(score_fn, process, source, x_source, x_init, ts_desc, ts_asc, k_prior, k_noise, *,
                   solver, substeps, cond) -> dict[str, list]:
    """Points per source (``"data"`` first), each a list over increasing t of ``(B, *event)`` batches."""
    points: dict[str, Any] = {}
    if source in ("data", "both"):
        points["data"] = noised_data_points(process, x_source, ts_asc, k_noise)
    if source in ("trajectory", "both"):
        if x_init is None:
            x_init = process.prior_sample(k_prior, x_source.shape, t=ts_desc[0], dtype=x_source.dtype)
        x_init = jnp.asarray(x_init, x_source.dtype)
        if x_init.shape != x_source.shape:
            raise ValueError(f"x_init must have shape {x_source.shape} like x_source; got {x_init.shape}.")
        points["trajectory"] = trajectory_points(score_fn, process, x_init, ts_desc, solver=solver,
                                                 substeps=substeps, cond=cond)
    return points
