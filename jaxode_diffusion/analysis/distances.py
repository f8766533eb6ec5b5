"""Distances between two sample sets, and the end-point error of a sampler against a reference.

* jit-able, any event shape, float32-safe: :func:`sliced_wasserstein`, :func:`mmd`,
  :func:`energy_distance`, :func:`rmse` (paired samples);
* float64 NumPy: :func:`frechet_distance` between feature sets (and
  :func:`gaussian_frechet_distance` between Gaussians), :func:`histogram_tv` (a 1-D/2-D
  cross-check of the exact-density TV of :mod:`jaxode_diffusion.analysis.density`).
"""

from __future__ import annotations

import functools

import jax
import jax.numpy as jnp
import numpy as np

__all__ = [
    "rmse",
    "histogram_tv",
    "sliced_wasserstein",
    "mmd",
    "energy_distance",
    "frechet_distance",
    "gaussian_frechet_distance",
]


def rmse(x, ref):
    """End-point root mean square error ``sqrt(mean_b ||x_b - ref_b||^2)`` of paired samples.

    The error of a sampler's output ``x`` against reference solutions ``ref`` of the same initial
    states (norms over all event dimensions, mean over the batch). jit-able and differentiable.

    Args:
        x, ref: ``(B, *event_shape)`` arrays of equal shape.

    Returns:
        A scalar array (in the dtype of ``x - ref``).

    Raises:
        ValueError: if the shapes differ.

    Example:
        >>> import jax.numpy as jnp
        >>> round(float(rmse(jnp.array([[3.0, 4.0], [0.0, 0.0]]), jnp.zeros((2, 2)))), 6)  # sqrt(25 / 2)
        3.535534
    """
    x, ref = jnp.asarray(x), jnp.asarray(ref)
    if x.shape != ref.shape:
        raise ValueError(f"rmse: x has shape {x.shape} but ref has shape {ref.shape}; pass paired samples.")
    diff = (x - ref).reshape(x.shape[0], -1)
    return jnp.sqrt(jnp.mean(jnp.sum(diff**2, axis=1)))


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
