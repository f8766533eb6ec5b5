"""analysis.density: the exact-density TV estimate and the change-of-variables density of a sampler.

The sampler-density checks share one problem (a 2-D Gaussian mixture, 4 steps of
``x0-lambda:rk4``, so the sampler's law q is visibly different from the target) and one batch
shape, so the flow-and-Jacobian program compiles once for all of them.

How the change-of-variables density is checked without trusting it:
* importance identity: ``E_{y~q}[p(y)/q(y)] = 1`` for any density p that q covers — a wrong
  ``log q`` (shape or normalisation) breaks it;
* output-space normalisation: q is evaluated on a grid of *output* points y by inverting the
  discrete map (reversed-grid run as a first guess, then Newton on ``Phi(x) = y`` with the exact
  Jacobian, residual checked), and its Riemann sum must be 1;
* the grid density integrated over coarse cells must match the histogram of independent sampler
  outputs (chi-square), and the quadrature TV ``int (q - p)_+`` on the grid must fall in the
  Monte Carlo interval of :func:`tv_distance`.
"""

import math

import jax
import jax.numpy as jnp
import numpy as np
import pytest
import scipy.linalg
import scipy.stats

import jaxode_diffusion as jd
from jaxode_diffusion import analysis as M
from jaxode_diffusion.analysis.density import flow_and_jacobian
from jaxode_diffusion.sampling.core import get_solver, make_times, solve

# ------------------------------------------------------------------------------------------
# TV with an exact density, between known Gaussians
# ------------------------------------------------------------------------------------------


def _gauss_logpdf(x, mu, s):
    x = np.asarray(x, np.float64).reshape(x.shape[0], -1)
    mu = np.broadcast_to(np.asarray(mu, np.float64), (x.shape[1],))
    d = x.shape[1]
    return -0.5 * np.sum((x - mu) ** 2, 1) / s**2 - d * np.log(s) - 0.5 * d * np.log(2 * np.pi)


@pytest.mark.parametrize(
    "d,mu,s", [(1, 1.0, 1.0), (1, -0.4, 0.5), (2, (0.6, -0.8), 1.0), (2, (2.0, 1.0), 1.5)]
)
def test_tv_equal_covariance_closed_form(d, mu, s):
    # q = N(0, s^2 I), p = N(mu, s^2 I): TV = 2 Phi(|mu| / 2s) - 1.
    rng = np.random.default_rng(d)
    y = s * rng.normal(size=(40_000, d))
    exact = 2 * scipy.stats.norm.cdf(np.linalg.norm(mu) / (2 * s)) - 1
    # One fixed draw: a 99.9% interval (nominal coverage is tested by test_tv_interval_coverage).
    est = M.tv_distance(lambda x: _gauss_logpdf(x, mu, s), y, _gauss_logpdf(y, 0.0, s), confidence=0.999)
    assert est.low <= exact <= est.high, (est, exact)
    assert abs(est.value - exact) < 4 * est.stderr
    assert est.n == 40_000 and 0 < est.stderr < 0.01


def test_tv_unequal_variance_quadrature():
    # q = N(0, 1), p = N(0.5, 0.6^2) in 1-D: TV = 1/2 int |p - q| on a fine grid.
    grid = np.linspace(-12, 12, 200_001)
    p, q = scipy.stats.norm.pdf(grid, 0.5, 0.6), scipy.stats.norm.pdf(grid, 0.0, 1.0)
    exact = 0.5 * np.trapezoid(np.abs(p - q), grid)
    y = np.random.default_rng(3).normal(size=(40_000, 1))
    log_p = lambda x: scipy.stats.norm.logpdf(x[:, 0], 0.5, 0.6)
    est = M.tv_distance(log_p, y, scipy.stats.norm.logpdf(y[:, 0]), confidence=0.999)
    assert est.low <= exact <= est.high
    assert abs(est.value - exact) < 4 * est.stderr


def test_tv_interval_coverage():
    # Over many replications the 90% interval covers the exact TV about 90% of the time.
    rng = np.random.default_rng(7)
    exact = 2 * scipy.stats.norm.cdf(0.5) - 1
    covered = []
    for _ in range(300):
        y = rng.normal(size=(400,))
        est = M.tv_distance(lambda x: scipy.stats.norm.logpdf(x, 1.0), y, scipy.stats.norm.logpdf(y),
                            confidence=0.9)
        covered.append(est.low <= exact <= est.high)
    # Binomial(300, 0.9): sd 0.017; accept +-4 sd.
    assert 0.83 < np.mean(covered) < 0.97


def test_tv_validation():
    y = np.zeros((10, 2))
    with pytest.raises(ValueError, match="confidence"):
        M.tv_distance(lambda x: np.zeros(10), y, np.zeros(10), confidence=1.5)
    with pytest.raises(ValueError, match="shape"):
        M.tv_distance(lambda x: np.zeros(10), y, np.zeros(9))
    with pytest.raises(ValueError, match="non-finite"):
        M.tv_distance(lambda x: np.zeros(10), y, np.full(10, np.nan))
    # log p = -inf (outside p's support) is allowed and counts fully.
    assert M.tv_distance(lambda x: np.full(10, -np.inf), y, np.zeros(10)).value == 1.0


# ------------------------------------------------------------------------------------------
# The change-of-variables density of a sampler
# ------------------------------------------------------------------------------------------

_G = 100  # grid points per axis; the Monte Carlo batch has the same size (one compilation)
_L = 6.0  # half-width of the box holding the mass of q and p


@pytest.fixture(scope="module")
def flow_problem():
    vp = jd.VPLinear()
    gm = jd.GaussianMixture.random(jax.random.PRNGKey(0), 3, 2, scale=1.0, min_var=0.2, max_var=0.6,
                                   diagonal=True)
    sf = gm.score_fn(vp)
    solver = get_solver("x0-lambda:rk4")
    ts = make_times(vp, num_steps=4, grid="log_snr")
    p_start, p_end = gm.marginal(vp, ts[0]), gm.marginal(vp, ts[-1])
    n = _G * _G
    x0 = p_start.sample(jax.random.PRNGKey(1), n)
    y, log_q = M.sampler_log_density(sf, vp, x0, solver=solver, grid=ts, init_log_prob=p_start.log_prob)

    # Output grid, and its preimage under the discrete map Phi.
    g = (jnp.arange(_G) + 0.5) / _G * 2 * _L - _L
    grid_y = jnp.stack(jnp.meshgrid(g, g, indexing="ij"), -1).reshape(-1, 2)
    xg = solve(sf, vp, grid_y, ts[::-1], solver, throw=False).samples  # the same RK run backwards: first guess
    for _ in range(8):
        phi, jac = flow_and_jacobian(sf, vp, xg, ts, solver)
        xg = xg - jnp.linalg.solve(jac, (phi - grid_y)[..., None])[..., 0]
    yg, log_qg = M.sampler_log_density(sf, vp, xg, solver=solver, grid=ts, init_log_prob=p_start.log_prob)
    # Newton stalls only far in the tails, where the 4-step map is strongly nonlinear (p ~ 1e-19
    # there for this problem); those points get q = 0 and their mass is bounded by the
    # normalisation test (the Riemann sum over the converged points is already ~1).
    converged = jnp.linalg.norm(yg - grid_y, axis=1) < 1e-8
    q_grid = jnp.where(converged, jnp.exp(log_qg), 0.0)
    return dict(vp=vp, gm=gm, sf=sf, solver=solver, ts=ts, p_end=p_end, x0=x0, y=y, log_q=log_q,
                grid_y=grid_y, converged=converged, q_grid=q_grid, cell=(2 * _L / _G) ** 2)


def test_density_samples_are_the_sampler_outputs(flow_problem):
    fp = flow_problem
    y_ref = jd.sample(fp["sf"], fp["vp"], fp["x0"], solver=fp["solver"], grid=fp["ts"])
    np.testing.assert_allclose(fp["y"], y_ref, rtol=1e-12, atol=1e-12)
    assert fp["log_q"].shape == (_G * _G,)


def test_importance_weights_average_to_one(flow_problem):
    fp = flow_problem
    w = np.exp(np.asarray(fp["p_end"].log_prob(fp["y"]) - fp["log_q"]))
    se = w.std(ddof=1) / math.sqrt(w.size)
    assert abs(w.mean() - 1.0) < 4 * se + 1e-3, (w.mean(), se)


def test_density_integrates_to_one_over_output_grid(flow_problem):
    fp = flow_problem
    # Newton converged (the grid points really are outputs of the sampler) except at a few points
    # far in the tails.
    bad = ~fp["converged"]
    assert int(bad.sum()) < 0.02 * _G * _G
    assert float(jnp.max(jnp.where(bad, fp["p_end"].log_prob(fp["grid_y"]), -jnp.inf))) < -20.0
    total_q = float(jnp.sum(fp["q_grid"])) * fp["cell"]
    total_p = float(jnp.sum(jnp.exp(fp["p_end"].log_prob(fp["grid_y"])))) * fp["cell"]
    assert abs(total_p - 1.0) < 1e-4  # the box holds the mass
    assert abs(total_q - 1.0) < 1e-4


def test_density_matches_histogram_of_outputs(flow_problem):
    fp = flow_problem
    k = 10  # coarse cells per axis
    qg = np.asarray(fp["q_grid"]).reshape(_G, _G) * fp["cell"]
    q_cells = qg.reshape(k, _G // k, k, _G // k).sum((1, 3))
    h, _ = np.histogramdd(np.asarray(fp["y"]), bins=k, range=[(-_L, _L)] * 2)
    n = fp["y"].shape[0]
    keep = q_cells > 5.0 / n
    chi2 = np.sum((h[keep] - n * q_cells[keep]) ** 2 / (n * q_cells[keep]))
    dof = int(keep.sum()) - 1
    assert chi2 < dof + 5 * math.sqrt(2 * dof), (chi2, dof)


def test_grid_tv_matches_monte_carlo_tv(flow_problem):
    fp = flow_problem
    q = np.asarray(fp["q_grid"])
    p = np.exp(np.asarray(fp["p_end"].log_prob(fp["grid_y"])))
    tv_grid = float(np.sum(np.maximum(q - p, 0.0)) * fp["cell"])
    est = M.tv_distance(fp["p_end"].log_prob, fp["y"], fp["log_q"], confidence=0.999)
    assert tv_grid > 0.02  # four RK4 steps: a visible error, so the check has teeth
    assert est.low - 1e-3 <= tv_grid <= est.high + 1e-3, (est, tv_grid)


def test_default_init_density_is_the_prior(flow_problem):
    fp = flow_problem
    vp, ts = fp["vp"], fp["ts"]
    x0 = vp.prior_sample(jax.random.PRNGKey(5), (_G * _G, 2), t=ts[0])
    c = float(vp.c(ts[0]))
    prior = lambda x: jax.scipy.stats.multivariate_normal.logpdf(x, jnp.zeros(2), c**2 * jnp.eye(2))
    _, lq_default = M.sampler_log_density(fp["sf"], vp, x0, solver=fp["solver"], grid=ts)
    _, lq_explicit = M.sampler_log_density(fp["sf"], vp, x0, solver=fp["solver"], grid=ts,
                                           init_log_prob=prior)
    np.testing.assert_allclose(lq_default, lq_explicit, rtol=1e-10, atol=1e-10)


def test_sampler_tv_decreases_with_steps(flow_problem):
    fp = flow_problem
    kw = dict(solver="x0-lambda:rk4", grid="log_snr", key=jax.random.PRNGKey(2))
    few = M.sampler_tv(fp["sf"], fp["vp"], fp["gm"], num_steps=4, num_samples=_G * _G, **kw)
    many = M.sampler_tv(fp["sf"], fp["vp"], fp["gm"], num_steps=16, num_samples=_G * _G, **kw)
    assert many.high < few.low / 5, (few, many)
    est, y, lq = M.sampler_tv(fp["sf"], fp["vp"], fp["gm"], num_steps=4, num_samples=_G * _G,
                              compare_to="data", return_samples=True, **kw)
    assert y.shape == (_G * _G, 2) and lq.shape == (_G * _G,)
    assert abs(est.value - few.value) < 0.02  # t_end = 1e-3: p_t_end is close to p_0
    with pytest.raises(ValueError, match="compare_to"):
        M.sampler_tv(fp["sf"], fp["vp"], fp["gm"], num_steps=4, num_samples=8, compare_to="x", **kw)


def test_sampler_log_density_chunks_agree_with_one_batch(flow_problem):
    # batch_size only bounds memory (one chunk's Jacobians at a time; the last chunk padded):
    # samples and log-densities equal the unchunked ones, in the original order.
    fp = flow_problem
    x0 = fp["vp"].prior_sample(jax.random.PRNGKey(11), (23, 2), t=fp["ts"][0])
    y1, lq1 = M.sampler_log_density(fp["sf"], fp["vp"], x0, solver=fp["solver"], grid=fp["ts"])
    y2, lq2 = M.sampler_log_density(fp["sf"], fp["vp"], x0, solver=fp["solver"], grid=fp["ts"], batch_size=5)
    np.testing.assert_allclose(y2, y1, rtol=1e-13, atol=1e-13)
    np.testing.assert_allclose(lq2, lq1, rtol=1e-12, atol=1e-12)


def test_sampler_log_density_validation():
    vp = jd.VPLinear()
    sf = jd.GaussianMixture.ring(4).score_fn(vp)
    with pytest.raises(ValueError, match="batch_size"):
        M.sampler_log_density(sf, vp, jnp.zeros((3, 2)), num_steps=2, batch_size=0)
    with pytest.raises(ValueError, match="x_init"):
        M.sampler_log_density(sf, vp, jnp.zeros(2), num_steps=2)
    with pytest.raises(ValueError, match="init_log_prob"):
        M.sampler_log_density(sf, vp, jnp.zeros((3, 2)), num_steps=2, init_log_prob=lambda x: jnp.zeros(2))
