"""The exact output density of a fixed-step sampler, and total variation from exact densities.

A fixed-step ODE sampler is a deterministic map ``Phi`` of its initial state, so its output
density follows from the change of variables

    log q(Phi(x)) = log p_init(x) - log |det D Phi(x)|,

with ``D Phi`` computed exactly by forward-mode autodiff through the whole sampler
(:func:`sampler_log_density`): ``jax.jacfwd`` through every step and stage, per example (``vmap``
over the batch). That costs ``D`` forward passes per example (``D`` = event size), so it is for
small ``D`` (2-D toys, ``D`` up to a few dozen). The Jacobians of one chunk of examples
(``batch_size x D x D`` numbers) are the memory peak: by default a chunk holds at most
``2**24 / D**2`` examples (the whole batch for ``D <= 64`` and up to 4096 examples), so ``D = 128``
or more fits on any machine; the last chunk is padded, so one compiled program serves every chunk.

The formula needs ``Phi`` to be injective, which holds when each step is a diffeomorphism (small
enough steps: the exact flow map always is). A non-positive Jacobian determinant shows that the
discrete map folds; it is reported with a warning, and ``log_q`` there uses ``|det|`` (it is then
not the density of the output).

With ``q`` known at its own samples,
``TV(p, q) = int (q - p)_+ = E_{y ~ q}[(1 - p(y)/q(y))_+]`` is a plain Monte Carlo mean with a
CLT confidence interval (:func:`tv_distance`, :func:`sampler_tv`). No kernel density estimate,
no binning: the only error is Monte Carlo error, which is reported. Sample-based distances
live in :mod:`jaxode_diffusion.analysis.distances`.
"""

from __future__ import annotations

import math
import statistics
import warnings
from collections.abc import Callable
from dataclasses import dataclass

import equinox as eqx
import jax
import jax.numpy as jnp
import numpy as np

from jaxode_diffusion.processes import ForwardProcess
from jaxode_diffusion.sampling.core import NonFiniteSampleError, get_solver, make_times, solve
from jaxode_diffusion.models.mixture import GaussianMixture
from jaxode_diffusion.utils.checks import (
    check_callable,
    check_float_batch,
    check_instance,
    check_int,
    check_per_sample,
    nonfinite_rows,
)

__all__ = [
    "flow_and_jacobian",
    "sampler_log_density",
    "TVEstimate",
    "tv_distance",
    "sampler_tv",
]

_LOG_2PI = math.log(2.0 * math.pi)


@eqx.filter_jit
def flow_and_jacobian(score_fn, process, x_init, ts, solver):
    """The sampler's map ``Phi`` and its Jacobian, per example: ``(Phi(x), D Phi(x))``.

    ``Phi`` is :func:`~jaxode_diffusion.solve` on the explicit decreasing grid ``ts`` with the
    solver object ``solver`` (from :func:`~jaxode_diffusion.get_solver`); ``D Phi`` is exact
    (``jax.jacfwd`` through every step and stage), shape ``(B, D, D)`` for ``D`` the event size.
    Compiled with ``equinox.filter_jit``.

    Example:
        >>> import jax.numpy as jnp
        >>> from jaxode_diffusion import VPLinear, get_solver, make_times
        >>> vp = VPLinear()
        >>> ts = make_times(vp, num_steps=4)
        >>> y, jac = flow_and_jacobian(lambda x, t: -x, vp, jnp.ones((3, 2)), ts, get_solver("euler"))
        >>> y.shape, jac.shape
        ((3, 2), (3, 2, 2))
    """
    batch, event_shape = x_init.shape[0], x_init.shape[1:]
    dim = int(np.prod(event_shape))

    def phi(xf):
        # The sampler is run on a batch of one so that jacfwd sees a map R^D -> R^D (D forward
        # passes); vmap batches it back. Exactly the program sample() runs (same solve, same plan).
        y = solve(score_fn, process, xf.reshape((1, *event_shape)), ts, solver, throw=False).samples
        y = y.reshape(dim)
        return y, y

    jac, ys = jax.vmap(jax.jacfwd(phi, has_aux=True))(x_init.reshape(batch, dim))
    return ys.reshape(x_init.shape), jac


def _isotropic_gaussian_log_prob(x, scale):
    """``log N(x; 0, scale^2 I)`` summed over the event dims of a batch ``x``."""
    xf = x.reshape(x.shape[0], -1)
    dim = xf.shape[1]
    return -0.5 * jnp.sum(xf**2, axis=1) / scale**2 - dim * jnp.log(scale) - 0.5 * dim * _LOG_2PI


def _flow_logdet_chunked(score_fn, process, x_init, ts, solver, batch_size):
    """``(Phi(x), sign det D Phi, log |det D Phi|)`` in chunks of ``batch_size`` examples (see
    :func:`sampler_log_density`); only one chunk's Jacobians are alive at a time."""
    batch = x_init.shape[0]
    dim = int(np.prod(x_init.shape[1:]))
    if batch_size is None:
        batch_size = max(1, min(batch, 2**24 // max(dim * dim, 1)))
    else:
        batch_size = check_int(batch_size, "batch_size", expected="a positive integer",
                               hint=" (or None for automatic chunks)", whole_numbers=True)
    if batch_size >= batch or isinstance(x_init, jax.core.Tracer):
        samples, jac = flow_and_jacobian(score_fn, process, x_init, ts, solver)
        signs, logdets = jnp.linalg.slogdet(jac)
        return samples, signs, logdets
    outs = []
    for start in range(0, batch, batch_size):
        chunk = x_init[start:start + batch_size]
        n = chunk.shape[0]
        if n < batch_size:  # pad with copies of the first example: the same compiled program
            chunk = jnp.concatenate([chunk, jnp.broadcast_to(chunk[:1], (batch_size - n, *chunk.shape[1:]))])
        y, jac = flow_and_jacobian(score_fn, process, chunk, ts, solver)
        signs, logdets = jnp.linalg.slogdet(jac)
        outs.append((y[:n], signs[:n], logdets[:n]))
    return tuple(jnp.concatenate(parts) for parts in zip(*outs, strict=True))


def sampler_log_density(
    score_fn: Callable,
    process: ForwardProcess,
    x_init,
    *,
    solver="rk4",
    num_steps: int | None = None,
    t_start=None,
    t_end=None,
    grid=None,
    init_log_prob: Callable | None = None,
    batch_size: int | None = None,
):
    """Samples of a fixed-step sampler and their exact log-density under the sampler's law.

    ``log q(Phi(x)) = log p_init(x) - log |det D Phi(x)|`` with ``D Phi`` exact (``jax.jacfwd``
    through every step and stage, ``D`` forward passes per example: for small event sizes ``D``).
    The formula needs ``Phi`` to be injective; where ``det D Phi <= 0`` the discrete map folds,
    which is reported with a warning (``log_q`` then uses ``|det|``). See the module docstring.

    Args:
        score_fn, process, solver, num_steps, t_start, t_end, grid: as for
            :func:`~jaxode_diffusion.sample`.
        x_init: ``(B, *event_shape)`` initial states at ``t_start``, drawn from ``p_init``.
        init_log_prob: ``log p_init`` on a batch ``(B, *event_shape) -> (B,)``. Default: the prior
            ``N(0, c(t_start)^2 I)`` of :meth:`~jaxode_diffusion.processes.ForwardProcess.prior_sample`;
            for ``x_init`` from a Gaussian mixture's exact ``p_{t_start}`` pass
            ``mixture.marginal(process, t_start).log_prob``.
        batch_size: examples pushed through ``jacfwd`` at once (a positive int; ``None``: chunks
            of at most ``2**24 / D**2`` examples, 128 MiB of float64 Jacobians).

    Returns:
        ``(samples, log_q)``: samples shaped like ``x_init`` and ``log_q`` of shape ``(B,)``.

    Raises:
        ValueError: on a bad ``x_init`` shape/dtype or bad sampler arguments.
        NonFiniteSampleError: if a sample or its log-density is NaN/inf (names the element).

    Example:
        >>> import jax
        >>> from jaxode_diffusion import GaussianMixture, VPLinear
        >>> gm, vp = GaussianMixture.ring(4), VPLinear()
        >>> x0 = vp.prior_sample(jax.random.PRNGKey(0), (8, 2))
        >>> y, log_q = sampler_log_density(gm.score_fn(vp), vp, x0, solver="x0-lambda:rk4",
        ...                                num_steps=8, grid="log_snr")
        >>> y.shape, log_q.shape
        ((8, 2), (8,))
    """
    check_instance(process, ForwardProcess, "process")
    check_callable(score_fn)
    x_init = check_float_batch(x_init, "x_init")
    solver = get_solver(solver)
    ts = make_times(process, num_steps=num_steps, t_start=t_start, t_end=t_end, grid=grid, solver=solver)
    log_p0 = _initial_log_prob(process, x_init, ts, init_log_prob)
    samples, signs, logdets = _flow_logdet_chunked(score_fn, process, x_init, ts, solver, batch_size)
    log_q = log_p0 - logdets
    if not isinstance(log_q, jax.core.Tracer):
        _check_density_output(samples, log_q, signs)
    return samples, log_q


def _initial_log_prob(process, x_init, ts, init_log_prob):
    """``log p_init(x_init)``, ``(B,)``: the caller's ``init_log_prob`` or the prior at ``ts[0]``."""
    if init_log_prob is None:
        return _isotropic_gaussian_log_prob(x_init, process.c(ts[0]).astype(x_init.dtype))
    return check_per_sample(init_log_prob(x_init), x_init, "init_log_prob")


def _check_density_output(samples, log_q, signs) -> None:
    """Raise on a non-finite sample or log-density (naming the first element); warn where the map folds."""
    bad = nonfinite_rows(samples, log_q)
    if bad.any():
        raise NonFiniteSampleError(
            f"sampler_log_density: non-finite sample or log-density for batch element {int(np.argmax(bad))} "
            f"({int(bad.sum())} of {bad.size} affected). Use more steps or check the score."
        )
    folded = int(np.sum(np.asarray(signs) <= 0))
    if folded:
        warnings.warn(
            f"sampler_log_density: det D Phi <= 0 for {folded} of {bad.size} samples: the discrete "
            "map is not orientation preserving there (it folds), so log_q is not the output "
            "density at those points. Use more or smaller steps.",
            stacklevel=3,
        )


# ---------------------------------------------------------------------------------------------
# Total variation
# ---------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class TVEstimate:
    """A Monte Carlo estimate of a total-variation distance with its confidence interval.

    Attributes:
        value: the estimate (mean of ``(1 - p/q)_+`` over ``n`` samples of ``q``).
        stderr: its standard error (sample std / sqrt(n)).
        low, high: the CLT interval ``value -/+ z stderr`` clipped to ``[0, 1]``.
        n: number of samples.
        confidence: the interval's nominal coverage.
    """

    value: float
    stderr: float
    low: float
    high: float
    n: int
    confidence: float = 0.95

    def __str__(self) -> str:
        return (f"TV = {self.value:.4g} +- {self.stderr:.2g} "
                f"({100 * self.confidence:g}% CI [{self.low:.4g}, {self.high:.4g}], n={self.n})")


def tv_distance(target_log_prob: Callable, samples, log_q, *, confidence: float = 0.95) -> TVEstimate:
    """Total variation ``TV(p, q)`` from samples of ``q`` with known ``log q`` and ``log p``.

    ``TV(p, q) = int (q - p)_+ dy = E_{y ~ q}[(1 - p(y)/q(y))_+]``; the integrand lies in
    ``[0, 1]``, so the Monte Carlo mean has finite variance whatever ``p`` and ``q`` are, and
    the CLT interval is ``mean -/+ z_{(1+confidence)/2} * std / sqrt(n)``. Computed in float64
    NumPy as ``-expm1(min(log p - log q, 0))`` (no overflow of ``p/q``).

    Args:
        target_log_prob: ``log p`` on a batch (e.g. ``mixture.log_prob``).
        samples: ``(n, ...)`` samples of ``q``.
        log_q: ``(n,)`` ``log q`` at the samples (e.g. from :func:`sampler_log_density`).
        confidence: nominal coverage of the interval, in ``(0, 1)``.

    Returns:
        a :class:`TVEstimate`.

    Raises:
        ValueError: on mismatched shapes, ``n < 2``, a bad ``confidence``, or non-finite
            ``log q`` / NaN ``log p`` (``log p = -inf`` is allowed).

    Example:
        >>> import jax, jax.numpy as jnp
        >>> from jax.scipy.stats import norm
        >>> y = jax.random.normal(jax.random.PRNGKey(0), (20000,))
        >>> est = tv_distance(lambda x: norm.logpdf(x, 1.0), y, norm.logpdf(y))
        >>> abs(est.value - 0.3829) < 4 * est.stderr  # 2 Phi(1/2) - 1
        True
    """
    if not 0.0 < confidence < 1.0:
        raise ValueError(f"confidence must lie in (0, 1), got {confidence}.")
    log_q = np.asarray(log_q, dtype=np.float64)
    n = log_q.shape[0] if log_q.ndim == 1 else -1
    if log_q.ndim != 1 or np.shape(samples)[0] != n:
        raise ValueError(
            f"log_q must have shape (n,) matching samples (n, ...); got {log_q.shape} and "
            f"{np.shape(samples)}."
        )
    if n < 2:
        raise ValueError(f"tv_distance needs at least 2 samples, got {n}.")
    log_p = np.asarray(target_log_prob(samples), dtype=np.float64).reshape(-1)
    if log_p.shape != (n,):
        raise ValueError(f"target_log_prob returned shape {log_p.shape}; expected ({n},).")
    if not np.isfinite(log_q).all():
        raise ValueError("log_q has non-finite entries; the samples are not from a density q.")
    if np.isnan(log_p).any() or np.isposinf(log_p).any():
        raise ValueError("target_log_prob returned NaN or +inf.")
    w = -np.expm1(np.minimum(log_p - log_q, 0.0))
    value = float(w.mean())
    stderr = float(w.std(ddof=1) / math.sqrt(n))
    z = statistics.NormalDist().inv_cdf(0.5 + 0.5 * confidence)
    return TVEstimate(value, stderr, max(0.0, value - z * stderr), min(1.0, value + z * stderr), n,
                      float(confidence))


def sampler_tv(
    score_fn: Callable,
    process: ForwardProcess,
    target: GaussianMixture,
    *,
    solver="rk4",
    num_steps: int | None = None,
    key,
    num_samples: int = 4096,
    t_start=None,
    t_end=None,
    grid=None,
    compare_to: str = "t_end",
    confidence: float = 0.95,
    return_samples: bool = False,
    batch_size: int | None = None,
):
    """TV between a sampler's output law and a Gaussian-mixture target, from exact densities.

    ``x_init`` is drawn from the target's *exact* ``p_{t_start}`` (so no prior-mismatch error),
    pushed through the sampler by :func:`sampler_log_density` with
    ``init_log_prob = log p_{t_start}``, and compared by :func:`tv_distance`.

    Args:
        score_fn: the score the sampler uses (exact ``target.score_fn(process)``, a perturbed or a
            learned one).
        target: the :class:`~jaxode_diffusion.models.mixture.GaussianMixture` (the data law ``p_0``).
        compare_to: which density of the target the output is compared against:

            * ``"t_end"`` (default): ``p_{t_end}``, the law the exact flow produces at the
              early-stopping time. The TV then measures only the sampler's error
              (discretisation + score error), the quantity the theorem bounds.
            * ``"data"``: ``p_0``; the TV also contains the early-stopping error
              ``TV(p_{t_end}, p_0)``.

        key: PRNG key for ``x_init``. Other arguments (``batch_size``: examples per ``jacfwd``
            chunk) as for :func:`sampler_log_density`.
        return_samples: also return ``(samples, log_q)``.

    Returns:
        a :class:`TVEstimate`, or ``(TVEstimate, samples, log_q)`` with ``return_samples``.

    Raises:
        ValueError: for an unknown ``compare_to``; see also :func:`sampler_log_density`.

    Example:
        >>> import jax
        >>> from jaxode_diffusion import GaussianMixture, VPLinear
        >>> gm, vp = GaussianMixture.ring(4), VPLinear()
        >>> est = sampler_tv(gm.score_fn(vp), vp, gm, solver="x0-lambda:rk4", num_steps=10,
        ...                  grid="log_snr", key=jax.random.PRNGKey(0), num_samples=256)
        >>> 0.0 <= est.value <= 1.0
        True
    """
    if compare_to not in ("t_end", "data"):
        raise ValueError(f"compare_to={compare_to!r}: choose 't_end' (p_t_end) or 'data' (p_0).")
    if not isinstance(target, GaussianMixture):
        raise ValueError(f"target must be a GaussianMixture; got {type(target).__name__}.")
    ts = make_times(process, num_steps=num_steps, t_start=t_start, t_end=t_end, grid=grid, solver=solver)
    p_start = target.marginal(process, ts[0])
    x_init = p_start.sample(key, int(num_samples))
    samples, log_q = sampler_log_density(score_fn, process, x_init, solver=solver, grid=ts,
                                         init_log_prob=p_start.log_prob, batch_size=batch_size)
    ref = target.marginal(process, ts[-1]) if compare_to == "t_end" else target
    est = tv_distance(ref.log_prob, samples, log_q, confidence=confidence)
    return (est, samples, log_q) if return_samples else est
