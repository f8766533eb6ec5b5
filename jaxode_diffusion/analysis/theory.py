"""The theorem's error terms, fitting its constants, and scores with a prescribed error.

Huang, Huang & Lin (arXiv:2506.13061) bound the total variation between the law of a ``p``-th
order Runge-Kutta / exponential Runge-Kutta probability-flow sampler and the data law, for scores
with bounded first and second derivatives, by

    TV <= C1 * d^{7/4} * eps_score^{1/2}  +  C2 * d * (d H_max)^p

with ``d`` the dimension, ``eps_score^2`` the time-averaged ``L2`` score error and ``H_max`` the
largest step. The constants are not explicit, so this module

* evaluates the two terms (:func:`bound_terms`);
* fits ``C1, C2 >= 0`` to measured TVs (:func:`fit_bound_constants`) — a report that uses them must
  say the constants were fitted;
* builds scores with a *prescribed* error and bounded derivatives (:class:`PerturbedScore`,
  :func:`make_perturbed_score`) so the score term can be varied on purpose;
* measures ``eps_score`` (:func:`measure_score_error`, over
  :func:`~jaxode_diffusion.analysis.score_errors.score_error`).
"""

from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import dataclass
from typing import NamedTuple

import equinox as eqx
import jax
import jax.numpy as jnp
import numpy as np

from jaxode_diffusion.processes import ForwardProcess
from jaxode_diffusion.analysis.score_errors import score_error
from jaxode_diffusion.models.mixture import GaussianMixture

__all__ = [
    "BoundTerms",
    "bound_terms",
    "BoundFit",
    "fit_bound_constants",
    "PerturbedScore",
    "make_perturbed_score",
    "measure_score_error",
]


class BoundTerms(NamedTuple):
    """The theorem's two terms (constants not included).

    Attributes:
        score: ``d^{7/4} eps_score^{1/2}``.
        discretization: ``d (d H_max)^p``.
    """

    score: np.ndarray | float
    discretization: np.ndarray | float


def bound_terms(d, eps_score, h_max, order) -> BoundTerms:
    """The two terms of the TV bound: ``d^{7/4} eps_score^{1/2}`` and ``d (d h_max)^order``.

    Broadcasts over NumPy arrays (one entry per run of a study).

    Args:
        d: dimension (``>= 1``).
        eps_score: the root of the time-averaged squared score error (``>= 0``), e.g. from
            :func:`measure_score_error`.
        h_max: the largest step of the grid (``> 0``). Any fixed unit works (a factor ``k`` in
            ``h`` only rescales the fitted ``C2`` by ``k^p``) as long as every run uses the same
            variable, e.g. ``ConvergenceResult.h_max`` (the step in the solver form's variable).
        order: the solver's order ``p`` (``>= 1``).

    Returns:
        :class:`BoundTerms` (floats for scalar inputs).

    Raises:
        ValueError: on out-of-range inputs.

    Example:
        >>> t = bound_terms(16, 0.01, 0.1, 2)
        >>> round(float(t.score), 6), round(float(t.discretization), 6)
        (12.8, 40.96)
    """
    d, eps, h, p = (np.asarray(v, dtype=np.float64) for v in (d, eps_score, h_max, order))
    if np.any(d < 1) or np.any(eps < 0) or np.any(h <= 0) or np.any(p < 1):
        raise ValueError(
            f"bound_terms: need d >= 1, eps_score >= 0, h_max > 0, order >= 1; got d={d}, "
            f"eps_score={eps}, h_max={h}, order={p}."
        )
    score = d**1.75 * np.sqrt(eps)
    disc = d * (d * h) ** p
    if score.ndim == 0 and disc.ndim == 0:
        return BoundTerms(float(score), float(disc))
    return BoundTerms(score, disc)


@dataclass(frozen=True)
class BoundFit:
    """Result of :func:`fit_bound_constants`.

    Attributes:
        c_score, c_disc: the fitted constants ``C1, C2 >= 0``.
        fitted: ``C1 * terms_score + C2 * terms_disc`` at the data points.
        relative_residuals: ``(fitted - measured) / measured``.
        weighting: ``"relative"`` or ``"absolute"``.
    """

    c_score: float
    c_disc: float
    fitted: np.ndarray
    relative_residuals: np.ndarray
    weighting: str

    def predict(self, terms_score, terms_disc):
        """``C1 * terms_score + C2 * terms_disc`` for new terms."""
        return self.c_score * np.asarray(terms_score) + self.c_disc * np.asarray(terms_disc)


def fit_bound_constants(measured_tv, terms_score, terms_disc, *, weighting: str = "relative") -> BoundFit:
    """Fit ``TV ~= C1 * terms_score + C2 * terms_disc`` with ``C1, C2 >= 0`` (non-negative LS).

    The model is linear in the constants, so the fit is a non-negative least-squares problem
    (``scipy.optimize.nnls``, Lawson & Hanson's active-set method), solved in plain space:

    * ``weighting="relative"`` (default): minimise ``sum_i ((fit_i - tv_i) / tv_i)^2``, i.e. rows
      divided by ``tv_i``. TVs in a study span orders of magnitude; relative residuals weigh
      them equally. This is the first-order expansion of a fit of ``log fit`` to ``log tv``
      (``log(fit/tv) ~= fit/tv - 1``) while keeping the problem convex with an exact solution.
    * ``weighting="absolute"``: minimise ``sum_i (fit_i - tv_i)^2`` (dominated by the largest TVs).

    Args:
        measured_tv: ``(n,)`` measured TVs (``> 0`` for relative weighting).
        terms_score, terms_disc: ``(n,)`` terms from :func:`bound_terms`.
        weighting: ``"relative"`` or ``"absolute"``.

    Returns:
        a :class:`BoundFit`.

    Raises:
        ValueError: on mismatched shapes, fewer than 2 points, non-finite values, or a
            non-positive TV with relative weighting.

    Example:
        >>> import numpy as np
        >>> t1, t2 = np.array([1.0, 2.0, 0.5, 1.0]), np.array([0.1, 0.1, 1.0, 3.0])
        >>> fit = fit_bound_constants(0.3 * t1 + 2.0 * t2, t1, t2)
        >>> round(fit.c_score, 8), round(fit.c_disc, 8)
        (0.3, 2.0)
    """
    from scipy.optimize import nnls  # scipy ships with scikit-learn, a dependency

    tv = np.asarray(measured_tv, np.float64).reshape(-1)
    a = np.stack([np.asarray(terms_score, np.float64).reshape(-1),
                  np.asarray(terms_disc, np.float64).reshape(-1)], axis=1)
    if a.shape[0] != tv.shape[0] or tv.shape[0] < 2:
        raise ValueError(
            f"fit_bound_constants: need >= 2 points and equal lengths; got measured_tv {tv.shape}, "
            f"terms {a.shape[0]} rows."
        )
    if not (np.isfinite(tv).all() and np.isfinite(a).all()):
        raise ValueError("fit_bound_constants: measured_tv and terms must be finite.")
    if weighting == "relative":
        if np.any(tv <= 0):
            raise ValueError(
                "fit_bound_constants: weighting='relative' needs every measured TV > 0; drop zero TVs "
                "or use weighting='absolute'."
            )
        w = 1.0 / tv
    elif weighting == "absolute":
        w = np.ones_like(tv)
    else:
        raise ValueError(f"weighting={weighting!r}: choose 'relative' or 'absolute'.")
    # Column scaling keeps NNLS well conditioned when the two terms differ by many decades;
    # it does not change the minimiser (c_j = coef_j / scale_j).
    aw = a * w[:, None]
    scale = np.linalg.norm(aw, axis=0)
    scale = np.where(scale > 0, scale, 1.0)
    coef, _ = nnls(aw / scale, tv * w)
    c = coef / scale
    fitted = a @ c
    with np.errstate(divide="ignore", invalid="ignore"):
        rel = (fitted - tv) / tv
    return BoundFit(float(c[0]), float(c[1]), fitted, rel, weighting)


# ---------------------------------------------------------------------------------------------
# Scores with a prescribed error
# ---------------------------------------------------------------------------------------------


class PerturbedScore(eqx.Module):
    """``s_eps(x, t) = s(x, t) + eps * u(x)``: an exact score plus a smooth bounded perturbation.

    ``u(x) = sin(x W^T + b) A`` (random Fourier features: ``W`` ``(F, d)``, ``b`` ``(F,)``, ``A``
    ``(F, d)``), with ``A`` normalised so that the time average over ``[t_min, t_max]`` of
    ``E_{x ~ p_t} ||u(x)||^2`` equals 1 on the target; then the score error of ``s_eps`` is
    ``eps_score = eps`` (up to the Monte Carlo error of the normaliser).

    ``u`` does *not* depend on ``t`` and is *not* scaled by ``1/sigma(t)``. So its value and its
    first and second derivatives are bounded uniformly in ``x`` and ``t``
    (:meth:`perturbation_bounds`), and the perturbed score keeps the theorem's assumption of
    bounded first/second derivatives whenever the exact score has it. (A ``1/sigma`` scaling,
    typical of learned-score error, would put almost all the error near ``t_end``
    and make the derivative bounds blow up there.)

    Attributes:
        base: the exact score ``score_fn(x, t)`` (e.g. a :class:`~jaxode_diffusion.MixtureScore`).
        eps: the perturbation size.
        w, b, a: the feature frequencies, phases and (normalised) amplitudes.

    Example:
        >>> import jax
        >>> from jaxode_diffusion import GaussianMixture, VPLinear
        >>> gm, vp = GaussianMixture.ring(4), VPLinear()
        >>> s, eps = make_perturbed_score(gm, vp, 0.1, jax.random.PRNGKey(0), num_samples=512)
        >>> s(jax.numpy.zeros((3, 2)), 0.5).shape
        (3, 2)
    """

    base: Callable
    eps: jax.Array
    w: jax.Array
    b: jax.Array
    a: jax.Array

    def perturbation(self, x):
        """``u(x)`` for a batch ``(B, *event)`` (shape of ``x``)."""
        xf = x.reshape(x.shape[0], -1)
        return (jnp.sin(xf @ self.w.T + self.b) @ self.a).reshape(x.shape)

    def __call__(self, x, t):
        return self.base(x, t) + self.eps * self.perturbation(x)

    def perturbation_bounds(self) -> tuple[float, float, float]:
        """Upper bounds on ``sup ||u||``, ``sup ||D u||_op``, ``sup ||D^2 u||`` (times ``eps``
        for the score's perturbation): ``sum_f ||a_f|| ||w_f||^k`` for ``k = 0, 1, 2``, since
        ``u = sum_f a_f sin(w_f . x + b_f)``."""
        an = np.linalg.norm(np.asarray(self.a), axis=1)
        wn = np.linalg.norm(np.asarray(self.w), axis=1)
        return float(an.sum()), float((an * wn).sum()), float((an * wn**2).sum())


def _midpoints(t_min, t_max, num_times):
    # The same midpoint rule as score_error, so eps_score is measured the way it is normalised.
    return t_min + (jnp.arange(num_times) + 0.5) / num_times * (t_max - t_min)


@eqx.filter_jit
def _mean_sq_features(w, b, mixture, process, ts, keys, num_samples: int):
    def one(args):
        t, key = args
        x = mixture.sample_marginal(key, num_samples, process, t)
        feats = jnp.sin(x @ w.T + b)  # (n, F)
        # E||sin(xW^T+b) A||^2 = tr(A^T G A), G = E[feats^T feats]: accumulate G, not u.
        return feats.T @ feats / num_samples

    return jnp.mean(jax.lax.map(one, (ts, keys)), axis=0)


def make_perturbed_score(
    mixture: GaussianMixture,
    process: ForwardProcess,
    eps,
    key,
    *,
    num_features: int = 64,
    lengthscale: float = 1.0,
    t_min: float | None = None,
    t_max: float | None = None,
    num_times: int = 32,
    num_samples: int = 4096,
):
    """A :class:`PerturbedScore` with time-averaged score error ``eps``, and its measured error.

    Frequencies ``w_f ~ N(0, I / lengthscale^2)``, phases ``b_f ~ U[0, 2 pi)``, amplitudes
    ``a_f ~ N(0, I)``; ``A`` is then scaled so that
    ``1/(t_max - t_min) int E_{p_t} ||u||^2 dt = 1`` (midpoint rule in ``t`` with exact samples of
    ``p_t``, ``num_times x num_samples`` of them). The error is then re-measured independently
    (fresh samples) by :func:`measure_score_error`.

    Args:
        mixture: the target (its exact score is the base).
        process: the forward process.
        eps: the prescribed ``eps_score`` (``>= 0``).
        key: PRNG key (features, normaliser samples and measurement samples are split from it).
        num_features: number of Fourier features ``F``.
        lengthscale: length scale of ``u`` in ``x`` units (derivative bounds scale like
            ``1/lengthscale`` and ``1/lengthscale^2``).
        t_min, t_max: averaging range (defaults ``process.default_t_end``/``default_t_start``,
            the range a sampler integrates over; as in
            :func:`~jaxode_diffusion.analysis.score_errors.score_error`).
        num_times, num_samples: Monte Carlo sizes, used for both normalising and measuring.

    Returns:
        ``(PerturbedScore, eps_measured)`` with ``eps_measured`` a float.

    Raises:
        ValueError: for ``eps < 0``, ``num_features < 1`` or ``lengthscale <= 0``.
    """
    if not float(eps) >= 0:
        raise ValueError(f"make_perturbed_score: eps must be >= 0, got {eps}.")
    if int(num_features) < 1 or not float(lengthscale) > 0:
        raise ValueError(
            f"make_perturbed_score: need num_features >= 1 and lengthscale > 0; got {num_features}, "
            f"{lengthscale}."
        )
    t_min = float(process.default_t_end if t_min is None else t_min)
    t_max = float(process.default_t_start if t_max is None else t_max)
    if not t_min < t_max:
        raise ValueError(f"make_perturbed_score: need t_min < t_max, got {t_min}, {t_max}.")
    d, dtype = mixture.dim, mixture.means.dtype
    kw, kb, ka, kn, km = jax.random.split(key, 5)
    w = jax.random.normal(kw, (num_features, d), dtype) / lengthscale
    b = jax.random.uniform(kb, (num_features,), dtype, 0.0, 2.0 * math.pi)
    a = jax.random.normal(ka, (num_features, d), dtype)
    ts = _midpoints(t_min, t_max, num_times)
    g = _mean_sq_features(w, b, mixture, process, ts, jax.random.split(kn, num_times), int(num_samples))
    a = a / jnp.sqrt(jnp.trace(a.T @ g @ a))
    score = PerturbedScore(mixture.score_fn(process), jnp.asarray(eps, dtype), w, b, a)
    measured = measure_score_error(score, mixture, process, key=km, num_times=num_times,
                                   num_samples=num_samples, t_min=t_min, t_max=t_max)
    return score, measured


def measure_score_error(
    score_fn,
    mixture: GaussianMixture,
    process: ForwardProcess,
    *,
    key,
    num_times: int = 32,
    num_samples: int = 2048,
    t_min: float | None = None,
    t_max: float | None = None,
) -> float:
    """``eps_score``: the root of the time-averaged ``E_{p_t} ||s(x, t) - grad log p_t(x)||^2``.

    A thin wrapper over :func:`~jaxode_diffusion.analysis.score_errors.score_error` (which returns the
    squared value, its ``sigma^2``-weighted variant and per-time values), giving the quantity
    :func:`bound_terms` takes.

    Example:
        >>> import jax
        >>> from jaxode_diffusion import GaussianMixture, VPLinear
        >>> gm, vp = GaussianMixture.ring(4), VPLinear()
        >>> measure_score_error(gm.score_fn(vp), gm, vp, key=jax.random.PRNGKey(0), num_times=4,
        ...                     num_samples=64)
        0.0
    """
    res = score_error(score_fn, mixture, process, key=key, num_times=num_times, num_samples=num_samples,
                      t_min=t_min, t_max=t_max)
    return float(jnp.sqrt(res.value))
