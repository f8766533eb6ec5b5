"""Sample-based distances (sliced Wasserstein, MMD, energy, Frechet, histogram TV) and the end-point
RMSE: exact values on known laws, symmetry, float32 safety, gradients, validation, and the names
re-exported by jaxode_diffusion.analysis."""

import math

import jax
import jax.numpy as jnp
import numpy as np
import pytest
import scipy.linalg
import scipy.stats

import jaxode_diffusion as jd
from jaxode_diffusion import analysis as M

# ------------------------------------------------------------------------------------------
# Sample-based distances
# ------------------------------------------------------------------------------------------

_KEY = jax.random.PRNGKey(0)


def _sets(n=300, m=300, d=2, dtype=jnp.float64):
    k1, k2 = jax.random.split(jax.random.PRNGKey(42))
    return jax.random.normal(k1, (n, d), dtype), jax.random.normal(k2, (m, d), dtype)


_DISTANCES = {
    "sw": lambda x, y: M.sliced_wasserstein(x, y, key=_KEY, num_projections=64),
    "mmd": lambda x, y: M.mmd(x, y),
    "energy": lambda x, y: M.energy_distance(x, y),
}


@pytest.mark.parametrize("name", sorted(_DISTANCES))
def test_distance_zero_grows_symmetric(name):
    f = _DISTANCES[name]
    x, y = _sets(300, 200)
    assert abs(float(f(x, x))) < 1e-2
    shift = jnp.array([1.0, 0.0])
    vals = [float(f(x, y + a * shift)) for a in (0.0, 0.5, 1.0, 2.0)]
    assert all(a < b for a, b in zip(vals, vals[1:], strict=False)), vals
    np.testing.assert_allclose(float(f(x, y + shift)), float(f(y + shift, x)), rtol=1e-8)


@pytest.mark.parametrize("name", sorted(_DISTANCES))
def test_distance_float32_safe(name):
    f = _DISTANCES[name]
    x64, y64 = _sets(300, 200)  # the shapes above: the float64 program is reused
    y64 = y64 + 100.0  # far from the origin: float32 cancellation would show
    x64 = x64 + 100.5
    out32 = f(x64.astype(jnp.float32), y64.astype(jnp.float32))
    assert out32.dtype == jnp.float32 and bool(jnp.isfinite(out32))
    np.testing.assert_allclose(float(out32), float(f(x64, y64)), rtol=2e-3, atol=1e-5)


def test_sliced_wasserstein_1d_is_exact_wasserstein():
    x, y = _sets(137, 61, d=1)
    ref = scipy.stats.wasserstein_distance(np.asarray(x[:, 0]), np.asarray(y[:, 0]))
    val = M.sliced_wasserstein(x, y, key=_KEY, num_projections=4, p=1)
    np.testing.assert_allclose(float(val), ref, rtol=1e-10)
    # equal sizes, p = 2: the sorted pairing
    x, y = _sets(100, 100, d=1)
    ref2 = np.sqrt(np.mean((np.sort(x[:, 0]) - np.sort(y[:, 0])) ** 2))
    val2 = M.sliced_wasserstein(x, y, key=_KEY, num_projections=4)
    np.testing.assert_allclose(float(val2), ref2, rtol=1e-10)
    # any event shape: (n, 2, 3) is flattened
    a, b = _sets(50, 40, d=6)
    val3 = M.sliced_wasserstein(a.reshape(50, 2, 3), b.reshape(40, 2, 3), key=_KEY, num_projections=4)
    assert np.isfinite(float(val3))


def test_energy_distance_matches_scipy_1d():
    x, y = _sets(120, 90, d=1)
    ref = scipy.stats.energy_distance(np.asarray(x[:, 0]), np.asarray(y[:, 0] + 0.3)) ** 2
    np.testing.assert_allclose(float(M.energy_distance(x, y + 0.3)), ref, rtol=1e-10)


@pytest.mark.parametrize("kernel", ["rbf", "laplace", "imq"])
def test_mmd_matches_naive(kernel):
    x, y = _sets(50, 60, d=3)
    y = y + 0.5
    h = 1.3
    xn, yn = np.asarray(x), np.asarray(y)

    def k(a, b):
        r2 = np.sum((a[:, None] - b[None]) ** 2, -1)
        return {"rbf": np.exp(-0.5 * r2 / h**2), "laplace": np.exp(-np.sqrt(r2) / h),
                "imq": 1 / np.sqrt(1 + r2 / h**2)}[kernel]

    kxx, kyy, kxy = k(xn, xn), k(yn, yn), k(xn, yn)
    n, m = 50, 60
    ref = ((kxx.sum() - np.trace(kxx)) / (n * (n - 1)) + (kyy.sum() - np.trace(kyy)) / (m * (m - 1))
           - 2 * kxy.mean())
    np.testing.assert_allclose(float(M.mmd(x, y, bandwidth=h, kernel=kernel)), ref, rtol=1e-10)
    if kernel != "rbf":
        return
    # median heuristic
    z = np.concatenate([xn, yn])
    iu = np.triu_indices(len(z), 1)
    h_med = np.median(np.linalg.norm(z[iu[0]] - z[iu[1]], axis=-1))
    np.testing.assert_allclose(float(M.mmd(x, y)), float(M.mmd(x, y, bandwidth=h_med)), rtol=1e-8)


def test_distances_differentiable():
    x, y = _sets(300, 200)
    assert bool(jnp.all(jnp.isfinite(jax.grad(lambda a: M.energy_distance(a, y))(x))))
    # zero distances on the diagonal of the within-sample terms: the safe sqrt keeps this finite
    assert bool(jnp.all(jnp.isfinite(jax.grad(lambda a: M.energy_distance(a, y))(y))))


def test_distance_validation():
    x, _ = _sets(10, 10)
    with pytest.raises(ValueError, match="event size"):
        M.energy_distance(x, jnp.zeros((10, 3)))
    with pytest.raises(ValueError, match="kernel"):
        M.mmd(x, x, kernel="poly")


# ------------------------------------------------------------------------------------------
# Frechet distance, histogram TV, RMSE
# ------------------------------------------------------------------------------------------


def test_gaussian_frechet_distance_matches_sqrtm():
    rng = np.random.default_rng(0)
    a, b = rng.normal(size=(4, 4)), rng.normal(size=(4, 4))
    c1, c2 = a @ a.T + 0.1 * np.eye(4), b @ b.T + 0.1 * np.eye(4)
    mu1, mu2 = rng.normal(size=4), rng.normal(size=4)
    ref = np.sum((mu1 - mu2) ** 2) + np.trace(c1 + c2 - 2 * scipy.linalg.sqrtm(c1 @ c2).real)
    np.testing.assert_allclose(M.gaussian_frechet_distance(mu1, c1, mu2, c2), ref, rtol=1e-9)
    # rank-deficient covariances stay finite and non-negative
    v = rng.normal(size=(4, 1))
    assert M.gaussian_frechet_distance(mu1, v @ v.T, mu1, v @ v.T) < 1e-7


def test_frechet_distance_of_feature_sets():
    rng = np.random.default_rng(1)
    a = rng.normal(size=(20_000, 3))
    b = np.array([1.0, 0.0, -1.0]) + 2.0 * rng.normal(size=(20_000, 3))
    assert M.frechet_distance(a, a) < 1e-9
    # exact for the laws: ||mu||^2 + sum (1 - 2)^2 = 2 + 3
    assert abs(M.frechet_distance(a, b) - 5.0) < 0.15
    with pytest.raises(ValueError):
        M.frechet_distance(a, b[:, :2])


def test_rmse_and_analysis_reexports():
    from jaxode_diffusion.analysis import density, distances

    x = jnp.array([[3.0, 4.0], [0.0, 0.0]])
    assert float(distances.rmse(x, jnp.zeros_like(x))) == pytest.approx(math.sqrt(12.5))
    with pytest.raises(ValueError, match="ref has shape"):
        distances.rmse(x, jnp.zeros((3, 2)))
    assert M.mmd is distances.mmd and M.sampler_tv is density.sampler_tv and jd.analysis.rmse is distances.rmse


@pytest.mark.parametrize("d", [1, 2])
def test_histogram_tv_matches_closed_form(d):
    rng = np.random.default_rng(11)
    mu = np.array([1.0, 0.0])[:d]
    n = 200_000
    p, q = rng.normal(size=(n, d)), mu + rng.normal(size=(n, d))
    exact = 2 * scipy.stats.norm.cdf(np.linalg.norm(mu) / 2) - 1
    rng_ = (-5.0, 6.0) if d == 1 else ((-5.0, 6.0), (-5.0, 5.0))
    if d == 1:
        p, q = p[:, 0], q[:, 0]
    val = M.histogram_tv(p, q, bins=100 if d == 1 else 25, range=rng_)
    assert abs(val - exact) < 0.03
    with pytest.raises(ValueError, match="1-D or 2-D"):
        M.histogram_tv(np.zeros((5, 3)), np.zeros((5, 3)))
