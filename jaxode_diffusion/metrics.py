"""Distances between a sampler's output and its target: exact-density TV, and sample-based metrics.

* **Exact-density TV.** A fixed-step ODE sampler is a deterministic map ``Phi`` of its initial
  state, so its output density follows from the change of variables

      log q(Phi(x)) = log p_init(x) - log |det D Phi(x)|,

  with ``D Phi`` computed exactly by forward-mode autodiff through the whole sampler
  (:func:`sampler_log_density`). With ``q`` known at its own samples,
  ``TV(p, q) = int (q - p)_+ = E_{y ~ q}[(1 - p(y)/q(y))_+]`` is a plain Monte Carlo mean with a
  CLT confidence interval (:func:`tv_distance`, :func:`sampler_tv`). No kernel density estimate,
  no binning: the only error is Monte Carlo error, which is reported.
* **Sample-based metrics** (jit-able, any event shape, float32-safe): :func:`sliced_wasserstein`,
  :func:`mmd`, :func:`energy_distance`; :func:`histogram_tv` (1-D/2-D cross-check);
  :func:`frechet_distance` between feature sets.
* :func:`empirical_order`: the slope of ``log err`` against ``log h``
  (:func:`~jaxode_diffusion.convergence.fit_order`).
"""

from __future__ import annotations

import functools
import math
import statistics
import warnings
from collections.abc import Callable
from dataclasses import dataclass

import equinox as eqx
import jax
import jax.numpy as jnp
import numpy as np

from .convergence import fit_order
from .processes import ForwardProcess
from .sampling import NonFiniteSampleError, get_solver, make_times, solve
from .targets import GaussianMixture

__all__ = [
    "sampler_log_density",
    "TVEstimate",
    "tv_distance",
    "sampler_tv",
    "histogram_tv",
    "sliced_wasserstein",
    "mmd",
    "energy_distance",
    "frechet_distance",
    "gaussian_frechet_distance",
    "empirical_order",
]

_LOG_2PI = math.log(2.0 * math.pi)


# ---------------------------------------------------------------------------------------------
# Exact output density of a fixed-step sampler
# ---------------------------------------------------------------------------------------------


@eqx.filter_jit
def _flow_and_jacobian(score_fn, process, x_init, ts, solver):
    """Per example: ``Phi(x)`` (shape of ``x_init``) and ``D Phi(x)`` (``(B, D, D)``) by ``jacfwd``."""
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


def sampler_log_density(
    score_fn: Callable,
    process: ForwardProcess,
    x_init,
    *,
    solver="rk4",
    num_steps: int | None = None,
    t_start=None,
    t_end=None,
    grid="uniform",
    init_log_prob: Callable | None = None,
):
    """Samples of a fixed-step sampler and their exact log-density under the sampler's law.

    The sampler (the same program as :func:`~jaxode_diffusion.sample`) is a deterministic map
    ``Phi`` of the initial state, so for ``x ~ p_init`` the output ``y = Phi(x)`` has density

        log q(y) = log p_init(x) - log |det D Phi(x)|.

    ``D Phi(x)`` is computed exactly (up to floating point) by ``jax.jacfwd`` through every step
    and stage of the sampler, per example (``vmap`` over the batch). That costs ``D`` forward
    passes per example (``D`` = event size), so this is for small ``D`` (2-D toys, ``D`` up to
    a few dozen).

    The formula needs ``Phi`` to be injective, which holds when each step is a diffeomorphism
    (small enough steps: the exact flow map always is). A non-positive Jacobian determinant
    shows that the discrete map folds; it is reported with a warning and ``log_q`` there uses
    ``|det|`` (it is then not the density of the output).

    Args:
        score_fn, process, solver, num_steps, t_start, t_end, grid: as for
            :func:`~jaxode_diffusion.sample`.
        x_init: ``(B, *event_shape)`` initial states at ``t_start``, drawn from ``p_init``.
        init_log_prob: ``log p_init`` as a callable on a batch ``(B, *event_shape) -> (B,)``.
            Default: the prior ``N(0, c(t_start)^2 I)``, ``c = sqrt(alpha^2 + sigma^2)``, i.e. the
            law of :meth:`~jaxode_diffusion.processes.ForwardProcess.prior_sample`. When
            ``x_init`` comes from the exact ``p_{t_start}`` of a Gaussian mixture pass
            ``mixture.marginal(process, t_start).log_prob``.

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
    if not isinstance(process, ForwardProcess):
        raise ValueError(f"process must be a ForwardProcess; got {type(process).__name__}.")
    if not callable(score_fn):
        raise ValueError(f"score_fn must be callable score_fn(x, t); got {type(score_fn).__name__}.")
    x_init = jnp.asarray(x_init)
    if x_init.ndim < 2 or not jnp.issubdtype(x_init.dtype, jnp.floating):
        raise ValueError(
            f"x_init must be a floating-point batch (B, *event_shape); got shape {x_init.shape} and "
            f"dtype {x_init.dtype}. For one sample use x[None]."
        )
    solver = get_solver(solver)
    ts = make_times(process, num_steps=num_steps, t_start=t_start, t_end=t_end, grid=grid)
    if init_log_prob is None:
        log_p0 = _isotropic_gaussian_log_prob(x_init, process.c(ts[0]).astype(x_init.dtype))
    else:
        log_p0 = jnp.asarray(init_log_prob(x_init))
        if log_p0.shape != (x_init.shape[0],):
            raise ValueError(
                f"init_log_prob must map a batch of shape {x_init.shape} to shape ({x_init.shape[0]},); "
                f"got shape {log_p0.shape}."
            )
    samples, jac = _flow_and_jacobian(score_fn, process, x_init, ts, solver)
    signs, logdets = jnp.linalg.slogdet(jac)
    log_q = log_p0 - logdets
    if not isinstance(log_q, jax.core.Tracer):
        ok = np.asarray(jnp.isfinite(log_q) & jnp.all(jnp.isfinite(samples.reshape(samples.shape[0], -1)), 1))
        if not ok.all():
            i = int(np.argmin(ok))
            raise NonFiniteSampleError(
                f"sampler_log_density: non-finite sample or log-density for batch element {i} "
                f"({int((~ok).sum())} of {ok.size} affected). Use more steps or check the score."
            )
        folded = int(np.sum(np.asarray(signs) <= 0))
        if folded:
            warnings.warn(
                f"sampler_log_density: det D Phi <= 0 for {folded} of {ok.size} samples: the discrete "
                "map is not orientation preserving there (it folds), so log_q is not the output "
                "density at those points. Use more or smaller steps.",
                stacklevel=2,
            )
    return samples, log_q


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
    grid="uniform",
    compare_to: str = "t_end",
    confidence: float = 0.95,
    return_samples: bool = False,
):
    """TV between a sampler's output law and a Gaussian-mixture target, from exact densities.

    ``x_init`` is drawn from the target's *exact* ``p_{t_start}`` (so no prior-mismatch error),
    pushed through the sampler by :func:`sampler_log_density` with
    ``init_log_prob = log p_{t_start}``, and compared by :func:`tv_distance`.

    Args:
        score_fn: the score the sampler uses (exact ``target.score_fn(process)``, a perturbed or a
            learned one).
        target: the :class:`~jaxode_diffusion.targets.GaussianMixture` (the data law ``p_0``).
        compare_to: which density of the target the output is compared against:

            * ``"t_end"`` (default): ``p_{t_end}``, the law the exact flow produces at the
              early-stopping time. The TV then measures only the sampler's error
              (discretisation + score error), the quantity the theorem bounds.
            * ``"data"``: ``p_0``; the TV also contains the early-stopping error
              ``TV(p_{t_end}, p_0)``.

        key: PRNG key for ``x_init``. Other arguments as for :func:`sampler_log_density`.
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
    ts = make_times(process, num_steps=num_steps, t_start=t_start, t_end=t_end, grid=grid)
    p_start = target.marginal(process, ts[0])
    x_init = p_start.sample(key, int(num_samples))
    samples, log_q = sampler_log_density(score_fn, process, x_init, solver=solver, grid=ts,
                                         init_log_prob=p_start.log_prob)
    ref = target.marginal(process, ts[-1]) if compare_to == "t_end" else target
    est = tv_distance(ref.log_prob, samples, log_q, confidence=confidence)
    return (est, samples, log_q) if return_samples else est


def histogram_tv(samples_p, samples_q, bins=50, range=None) -> float:  # noqa: A002 (NumPy's name)
    """Plug-in TV between two sample sets from 1-D or 2-D histograms (a cross-check).

    ``0.5 * sum_cells |P_cell - Q_cell|`` with cell masses ``count / n`` (each set normalised by
    its own size); mass outside ``range`` counts as one extra cell. Biased: sampling noise adds
    roughly ``0.5 * sum_cells sqrt(2 P_cell / (pi n))`` per set, binning removes structure finer
    than a cell; use many samples and moderate ``bins``.

    Args:
        samples_p, samples_q: ``(n,)``, ``(n, 1)`` or ``(n, 2)`` arrays.
        bins: as for ``numpy.histogramdd`` (an int, per-axis ints or edges).
        range: ``(lo, hi)`` in 1-D, ``((lo, hi), (lo, hi))`` in 2-D; default: the pooled extent.

    Returns:
        the TV estimate (float).

    Example:
        >>> import numpy as np
        >>> x = np.random.default_rng(0).normal(size=(50_000,))
        >>> histogram_tv(x, x + 100.0, bins=20)
        1.0
    """
    p = np.asarray(samples_p, dtype=np.float64)
    q = np.asarray(samples_q, dtype=np.float64)
    p = p[:, None] if p.ndim == 1 else p
    q = q[:, None] if q.ndim == 1 else q
    if p.ndim != 2 or q.ndim != 2 or p.shape[1] != q.shape[1] or p.shape[1] not in (1, 2):
        raise ValueError(
            f"histogram_tv works on 1-D or 2-D samples of equal dimension; got shapes {p.shape}, {q.shape}."
        )
    d = p.shape[1]
    if range is None:
        pooled = np.concatenate([p, q])
        range = [(float(pooled[:, i].min()), float(pooled[:, i].max())) for i in np.arange(d)]
    elif d == 1 and np.ndim(range) == 1:
        range = [tuple(range)]
    hp, edges = np.histogramdd(p, bins=bins, range=range)
    hq, _ = np.histogramdd(q, bins=edges)
    mp, mq = hp / p.shape[0], hq / q.shape[0]
    out = abs((1.0 - mp.sum()) - (1.0 - mq.sum()))
    return float(0.5 * (np.abs(mp - mq).sum() + out))


# ---------------------------------------------------------------------------------------------
# Sample-based distances (jit-able)
# ---------------------------------------------------------------------------------------------


def _flatten(x):
    x = jnp.asarray(x)
    if x.ndim == 1:
        return x[:, None]
    return x.reshape(x.shape[0], -1)


def _check_pair(x, y, name):
    if x.shape[1] != y.shape[1]:
        raise ValueError(f"{name}: x and y need the same event size; got {x.shape[1]} and {y.shape[1]}.")
    if x.shape[0] < 2 or y.shape[0] < 2:
        raise ValueError(f"{name}: need at least 2 samples in each set; got {x.shape[0]} and {y.shape[0]}.")


def _quantile_coupling(n: int, m: int):
    """Exact monotone coupling of two uniform empirical measures of sizes n and m.

    ``W_p^p = int_0^1 |F^{-1}(u) - G^{-1}(u)|^p du``; both quantile functions are piecewise
    constant with breaks at ``i/n`` and ``j/m``. Merging the breaks (exactly, in integers over
    the common denominator ``n m``) gives intervals of width ``w_k`` on which they equal
    ``x_(i_k)`` and ``y_(j_k)``. Computed in NumPy at trace time (n, m are static).
    """
    breaks = np.union1d(np.arange(1, n + 1, dtype=np.int64) * m, np.arange(1, m + 1, dtype=np.int64) * n)
    lo = np.concatenate([[0], breaks[:-1]])
    w = (breaks - lo) / float(n * m)
    ix = lo // m  # the interval (lo, break] lies inside ((i) m, (i+1) m]
    iy = lo // n
    return ix, iy, w


@functools.partial(jax.jit, static_argnames=("num_projections", "p"))
def sliced_wasserstein(x, y, *, key, num_projections: int = 256, p: float = 2):
    """Sliced Wasserstein distance ``SW_p(x, y)`` between two sample sets of any dimension.

    ``SW_p^p = E_theta W_p^p(theta^T x, theta^T y)`` over directions uniform on the sphere,
    estimated with ``num_projections`` random directions. Each 1-D ``W_p`` is exact between the
    empirical measures: sorted projections paired directly when sizes are equal, otherwise the
    exact quantile coupling (breaks at ``i/n`` and ``j/m``).

    Args:
        x, y: ``(n, *event)`` and ``(m, *event)`` samples (flattened to vectors).
        key: PRNG key for the directions (the same key gives the same directions, in any dtype,
            so the value is symmetric in ``x`` and ``y``).
        num_projections: number of directions (static).
        p: the order (static), ``p >= 1``.

    Returns:
        ``SW_p`` (a scalar in the dtype of ``x``).

    Example:
        >>> import jax
        >>> x = jax.random.normal(jax.random.PRNGKey(0), (500, 3))
        >>> float(sliced_wasserstein(x, x, key=jax.random.PRNGKey(1)))
        0.0
    """
    x, y = _flatten(x), _flatten(y)
    _check_pair(x, y, "sliced_wasserstein")
    if p < 1:
        raise ValueError(f"sliced_wasserstein: p must be >= 1, got {p}.")
    dtype = jnp.result_type(x.dtype, y.dtype)
    # Directions drawn in float32 whatever the data dtype, so a key gives the same directions
    # (up to rounding) for float32 and float64 inputs.
    theta = jax.random.normal(key, (x.shape[1], num_projections), jnp.float32).astype(dtype)
    theta = theta / jnp.linalg.norm(theta, axis=0, keepdims=True)
    xs = jnp.sort(x.astype(dtype) @ theta, axis=0)
    ys = jnp.sort(y.astype(dtype) @ theta, axis=0)
    n, m = x.shape[0], y.shape[0]
    if n == m:
        wpp = jnp.mean(jnp.abs(xs - ys) ** p, axis=0)
    else:
        ix, iy, w = _quantile_coupling(n, m)
        wpp = jnp.asarray(w, dtype) @ (jnp.abs(xs[ix] - ys[iy]) ** p)
    return jnp.mean(wpp) ** (1.0 / p)


def _block_rows(n: int, m: int, dim: int) -> int:
    # Pairwise terms are formed by direct differences (float32-safe: no ||x||^2 + ||y||^2 - 2 x.y
    # cancellation), a (block, m, dim) array at a time: ~2^22 elements (16 MiB in float32).
    return max(1, min(n, (1 << 22) // max(1, m * dim)))


def _pairwise_sum(x, y, fn):
    """``sum_{i,j} fn(||x_i - y_j||^2)`` in row blocks of x (bounded memory, jit-able)."""
    n, dim = x.shape
    m = y.shape[0]
    block = _block_rows(n, m, dim)
    nb = -(-n // block)
    pad = nb * block - n
    xb = jnp.pad(x, ((0, pad), (0, 0))).reshape(nb, block, dim)
    mask = (jnp.arange(nb * block) < n).reshape(nb, block)

    def one(args):
        xi, mi = args
        d2 = jnp.sum((xi[:, None, :] - y[None, :, :]) ** 2, axis=-1)
        return jnp.sum(jnp.where(mi[:, None], fn(d2), 0.0))

    return jnp.sum(jax.lax.map(one, (xb, mask)))


def _safe_sqrt(d2):
    # sqrt with a finite (zero) gradient at 0, where the diagonal of a within-sample matrix sits.
    pos = d2 > 0
    return jnp.where(pos, jnp.sqrt(jnp.where(pos, d2, 1.0)), 0.0)


_KERNELS = {
    # k(r^2; h) for squared distance r^2 and bandwidth h; all have k(0) = 1.
    "rbf": lambda d2, h: jnp.exp(-0.5 * d2 / h**2),
    "laplace": lambda d2, h: jnp.exp(-_safe_sqrt(d2) / h),
    "imq": lambda d2, h: jax.lax.rsqrt(1.0 + d2 / h**2),
}


def _median_distance(x, y, max_points: int = 1000):
    """Median pairwise distance of the pooled sample (on at most ``max_points`` of it)."""
    k = max_points // 2
    z = jnp.concatenate([x[:k], y[:k]])
    iu = np.triu_indices(z.shape[0], 1)
    d2 = jnp.sum((z[iu[0]] - z[iu[1]]) ** 2, axis=-1)
    return jnp.sqrt(jnp.median(d2))


@functools.partial(jax.jit, static_argnames=("kernel",))
def mmd(x, y, *, bandwidth=None, kernel: str = "rbf"):
    """Unbiased estimate of the squared maximum mean discrepancy ``MMD^2(x, y)``.

    ``MMD^2_u = 1/(n(n-1)) sum_{i != j} k(x_i, x_j) + 1/(m(m-1)) sum_{i != j} k(y_i, y_j)
    - 2/(n m) sum_{i,j} k(x_i, y_j)`` (Gretton et al., JMLR 2012); it is unbiased, so it can be
    slightly negative when the two laws are equal.

    Args:
        x, y: ``(n, *event)`` and ``(m, *event)`` samples.
        bandwidth: kernel length scale ``h``; default the median heuristic (median pairwise
            distance of the pooled samples, on at most 1000 of them).
        kernel: ``"rbf"`` ``exp(-r^2 / 2h^2)``, ``"laplace"`` ``exp(-r / h)`` or ``"imq"``
            ``(1 + r^2/h^2)^(-1/2)`` (static).

    Returns:
        the ``MMD^2`` estimate (scalar).

    Example:
        >>> import jax
        >>> x = jax.random.normal(jax.random.PRNGKey(0), (400, 2))
        >>> abs(float(mmd(x, x))) < 1e-2
        True
    """
    if kernel not in _KERNELS:
        raise ValueError(f"mmd: kernel={kernel!r}; choose one of {sorted(_KERNELS)}.")
    x, y = _flatten(x), _flatten(y)
    _check_pair(x, y, "mmd")
    dtype = jnp.result_type(x.dtype, y.dtype)
    x, y = x.astype(dtype), y.astype(dtype)
    h = _median_distance(x, y) if bandwidth is None else jnp.asarray(bandwidth, dtype)
    h = jnp.maximum(h, jnp.finfo(dtype).tiny)
    k = functools.partial(_KERNELS[kernel], h=h)
    n, m = x.shape[0], y.shape[0]
    # Diagonal terms are k(0) = 1 exactly (direct differences give d2 = 0 there).
    sxx = (_pairwise_sum(x, x, k) - n) / (n * (n - 1))
    syy = (_pairwise_sum(y, y, k) - m) / (m * (m - 1))
    sxy = _pairwise_sum(x, y, k) / (n * m)
    return sxx + syy - 2.0 * sxy


@jax.jit
def energy_distance(x, y):
    """Energy distance ``2 E||X - Y|| - E||X - X'|| - E||Y - Y'||`` (Szekely & Rizzo 2013).

    The V-statistic (all pairs, diagonals included): non-negative (round-off is clipped at 0), and
    zero up to rounding when the two empirical measures coincide. It is the squared energy
    distance of the empirical laws (``2 x`` the Cramer distance in 1-D).

    Args:
        x, y: ``(n, *event)`` and ``(m, *event)`` samples.

    Returns:
        the energy distance (scalar).

    Example:
        >>> import jax
        >>> x = jax.random.normal(jax.random.PRNGKey(0), (300, 2))
        >>> float(energy_distance(x, x)) < 1e-6
        True
    """
    x, y = _flatten(x), _flatten(y)
    _check_pair(x, y, "energy_distance")
    dtype = jnp.result_type(x.dtype, y.dtype)
    x, y = x.astype(dtype), y.astype(dtype)
    n, m = x.shape[0], y.shape[0]
    exy = _pairwise_sum(x, y, _safe_sqrt) / (n * m)
    exx = _pairwise_sum(x, x, _safe_sqrt) / (n * n)
    eyy = _pairwise_sum(y, y, _safe_sqrt) / (m * m)
    return jnp.maximum(2.0 * exy - exx - eyy, 0.0)


# ---------------------------------------------------------------------------------------------
# Frechet distance between feature sets
# ---------------------------------------------------------------------------------------------


def _sym_sqrt(a):
    lam, v = np.linalg.eigh(0.5 * (a + a.T))
    return (v * np.sqrt(np.clip(lam, 0.0, None))) @ v.T


def gaussian_frechet_distance(mu1, cov1, mu2, cov2) -> float:
    """Frechet (2-Wasserstein squared) distance between ``N(mu1, cov1)`` and ``N(mu2, cov2)``.

    ``||mu1 - mu2||^2 + tr(C1 + C2 - 2 (C1^{1/2} C2 C1^{1/2})^{1/2})``. The matrix square root of
    the non-symmetric ``C1 C2`` (FID's ``scipy.linalg.sqrtm``) is avoided: ``C1^{1/2} C2 C1^{1/2}``
    is symmetric PSD with the same eigenvalues, so its root's trace is ``sum sqrt(eig)`` from a
    symmetric eigendecomposition (negative round-off eigenvalues clipped to 0). Float64 NumPy.

    Example:
        >>> import numpy as np
        >>> round(gaussian_frechet_distance([0.0], [[1.0]], [1.0], [[4.0]]), 12)  # 1 + (1 - 2)^2
        2.0
    """
    mu1, mu2 = np.atleast_1d(np.asarray(mu1, np.float64)), np.atleast_1d(np.asarray(mu2, np.float64))
    c1, c2 = np.atleast_2d(np.asarray(cov1, np.float64)), np.atleast_2d(np.asarray(cov2, np.float64))
    if mu1.shape != mu2.shape or c1.shape != c2.shape or c1.shape != (mu1.size, mu1.size):
        raise ValueError(
            f"gaussian_frechet_distance: shapes mu {mu1.shape}, {mu2.shape} and cov {c1.shape}, {c2.shape} "
            "do not match (need (k,), (k,), (k, k), (k, k))."
        )
    s1 = _sym_sqrt(c1)
    m = s1 @ c2 @ s1
    tr_sqrt = np.sqrt(np.clip(np.linalg.eigvalsh(0.5 * (m + m.T)), 0.0, None)).sum()
    val = float(np.sum((mu1 - mu2) ** 2) + np.trace(c1) + np.trace(c2) - 2.0 * tr_sqrt)
    return max(val, 0.0)


def frechet_distance(feats_a, feats_b) -> float:
    """Frechet distance between two feature sets, each summarised by its mean and covariance.

    The FID formula (Heusel et al. 2017) on whatever features are given (raw samples for toys,
    network features for images); see :func:`gaussian_frechet_distance`.

    Args:
        feats_a, feats_b: ``(n, k)`` and ``(m, k)`` features (``n, m >= 2``; ``(n,)`` is 1-D).

    Returns:
        the distance (float, ``>= 0``).

    Example:
        >>> import numpy as np
        >>> a = np.random.default_rng(0).normal(size=(1000, 2))
        >>> frechet_distance(a, a)
        0.0
    """
    a = np.asarray(feats_a, np.float64)
    b = np.asarray(feats_b, np.float64)
    a = a[:, None] if a.ndim == 1 else a.reshape(a.shape[0], -1)
    b = b[:, None] if b.ndim == 1 else b.reshape(b.shape[0], -1)
    if a.shape[1] != b.shape[1] or a.shape[0] < 2 or b.shape[0] < 2:
        raise ValueError(
            f"frechet_distance: need (n, k) and (m, k) with n, m >= 2; got {a.shape}, {b.shape}."
        )
    cov = lambda z: np.atleast_2d(np.cov(z, rowvar=False))
    return gaussian_frechet_distance(a.mean(0), cov(a), b.mean(0), cov(b))


def empirical_order(h, err) -> float:
    """Empirical order: the least-squares slope of ``log err`` against ``log h``.

    The same fit as :func:`~jaxode_diffusion.convergence.fit_order` (this is that function).

    Example:
        >>> round(empirical_order([0.1, 0.05, 0.025], [1e-4, 6.25e-6, 3.90625e-7]), 6)
        4.0
    """
    return fit_order(h, err)
