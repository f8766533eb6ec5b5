"""Tests for jaxode_diffusion.analysis.theory: bound terms, constant fits, scores with a prescribed error."""

import math

import jax
import jax.numpy as jnp
import numpy as np
import pytest

import jaxode_diffusion as jd
from jaxode_diffusion.analysis import theory as T
from jaxode_diffusion.analysis.score_errors import score_error

# ------------------------------------------------------------------------------------------
# bound_terms
# ------------------------------------------------------------------------------------------


def test_bound_terms_arithmetic():
    t = T.bound_terms(16, 0.01, 0.1, 2)
    assert t.score == pytest.approx(16**1.75 * 0.1)  # = 8 * 0.1 * 16 = 12.8
    assert t.score == pytest.approx(12.8)
    assert t.discretization == pytest.approx(16 * (1.6) ** 2)
    assert isinstance(t.score, float)
    # broadcasting over a study
    d = np.array([1, 2, 4])
    t = T.bound_terms(d, 0.04, np.array([0.5, 0.25, 0.125]), 4)
    np.testing.assert_allclose(t.score, d**1.75 * 0.2)
    np.testing.assert_allclose(t.discretization, d * 0.5**4)  # d * h = 0.5 throughout
    assert T.bound_terms(3, 0.0, 1.0, 1).score == 0.0


@pytest.mark.parametrize("kw", [dict(d=0), dict(eps_score=-1.0), dict(h_max=0.0), dict(order=0)])
def test_bound_terms_validation(kw):
    args = dict(d=2, eps_score=0.1, h_max=0.1, order=2) | kw
    with pytest.raises(ValueError, match="bound_terms"):
        T.bound_terms(**args)


# ------------------------------------------------------------------------------------------
# fit_bound_constants
# ------------------------------------------------------------------------------------------


def _synthetic_study():
    # A study grid: dims x score errors x step sizes, 2nd-order solver, terms spanning decades.
    d, eps, h = np.meshgrid([2, 4, 8], [1e-4, 1e-2], [0.05, 0.02, 0.01], indexing="ij")
    return T.bound_terms(d.ravel(), eps.ravel(), h.ravel(), 2)


@pytest.mark.parametrize("weighting", ["relative", "absolute"])
def test_fit_recovers_known_constants(weighting):
    t = _synthetic_study()
    c1, c2 = 0.003, 0.7
    tv = c1 * t.score + c2 * t.discretization
    fit = T.fit_bound_constants(tv, t.score, t.discretization, weighting=weighting)
    assert fit.c_score == pytest.approx(c1, rel=1e-8)
    assert fit.c_disc == pytest.approx(c2, rel=1e-8)
    np.testing.assert_allclose(fit.fitted, tv, rtol=1e-8)
    np.testing.assert_allclose(fit.predict(t.score, t.discretization), tv, rtol=1e-8)
    assert np.max(np.abs(fit.relative_residuals)) < 1e-8 and fit.weighting == weighting


def test_fit_with_noise_and_nonnegativity():
    t = _synthetic_study()
    rng = np.random.default_rng(0)
    tv = (0.003 * t.score + 0.7 * t.discretization) * np.exp(0.02 * rng.normal(size=t.score.shape))
    fit = T.fit_bound_constants(tv, t.score, t.discretization)
    assert fit.c_score == pytest.approx(0.003, rel=0.05)
    assert fit.c_disc == pytest.approx(0.7, rel=0.05)
    # Data explained by the second term alone minus a bit: unconstrained LS would give C1 < 0.
    tv2 = 0.7 * t.discretization - 1e-4 * t.score
    tv2 = np.where(tv2 > 0, tv2, 1e-6)
    fit2 = T.fit_bound_constants(tv2, t.score, t.discretization)
    assert fit2.c_score == 0.0 and fit2.c_disc > 0


def test_fit_validation():
    with pytest.raises(ValueError, match="TV > 0"):
        T.fit_bound_constants([0.0, 0.1], [1.0, 2.0], [1.0, 1.0])
    with pytest.raises(ValueError, match="weighting"):
        T.fit_bound_constants([0.1, 0.1], [1.0, 2.0], [1.0, 1.0], weighting="log")
    with pytest.raises(ValueError, match="equal lengths"):
        T.fit_bound_constants([0.1, 0.1, 0.2], [1.0, 2.0], [1.0, 1.0])


# ------------------------------------------------------------------------------------------
# Perturbed scores
# ------------------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def problem():
    vp = jd.VPLinear()
    gm = jd.GaussianMixture.random(jax.random.PRNGKey(0), 3, 2, scale=1.0, min_var=0.2, max_var=0.6,
                                   diagonal=True)
    return gm, vp


_MC = dict(num_times=16, num_samples=2048)


def test_perturbed_score_has_prescribed_error(problem):
    gm, vp = problem
    eps = 0.3
    s, measured = T.make_perturbed_score(gm, vp, eps, jax.random.PRNGKey(1), **_MC)
    # Monte Carlo error of the normaliser and of the measurement: E||u||^2 is estimated from
    # 16 x 2048 samples with relative sd ~ 1%; eps is its square root (halves it). 5% is ample.
    assert measured == pytest.approx(eps, rel=0.05)
    # A third, independent measurement agrees as well.
    res = score_error(s, gm, vp, key=jax.random.PRNGKey(99), **_MC)
    assert math.sqrt(float(res.value)) == pytest.approx(eps, rel=0.05)
    # The error scales linearly with eps (same features for the same key).
    s2, measured2 = T.make_perturbed_score(gm, vp, 2 * eps, jax.random.PRNGKey(1), **_MC)
    assert measured2 == pytest.approx(2 * measured, rel=1e-10)


def test_perturbed_score_structure(problem):
    gm, vp = problem
    s, measured = T.make_perturbed_score(gm, vp, 0.5, jax.random.PRNGKey(2), **_MC)
    x = gm.sample(jax.random.PRNGKey(3), 256)
    t = 0.4
    np.testing.assert_allclose(s(x, t), gm.score(x, vp, t) + 0.5 * s.perturbation(x), rtol=1e-12)
    # eps = 0 is the exact score
    s0, m0 = T.make_perturbed_score(gm, vp, 0.0, jax.random.PRNGKey(2), **_MC)
    np.testing.assert_allclose(s0(x, t), gm.score(x, vp, t), rtol=1e-12)
    assert m0 == 0.0
    # the derivative bounds hold (sampled far and wide)
    sup_u, sup_du, sup_d2u = s.perturbation_bounds()
    xs = 4.0 * jax.random.normal(jax.random.PRNGKey(4), (128, 2))
    u = lambda z: s.perturbation(z[None])[0]
    assert float(jnp.max(jnp.linalg.norm(s.perturbation(xs), axis=1))) <= sup_u
    du = jax.jit(jax.vmap(jax.jacfwd(u)))(xs)
    assert float(jnp.max(jnp.linalg.norm(du, ord=2, axis=(1, 2)))) <= sup_du
    d2u = jax.jit(jax.vmap(jax.jacfwd(jax.jacfwd(u))))(xs)
    assert float(jnp.max(jnp.sqrt(jnp.sum(d2u**2, axis=(1, 2, 3))))) <= sup_d2u


def test_measure_score_error_wraps_score_error(problem):
    gm, vp = problem
    s, _ = T.make_perturbed_score(gm, vp, 0.2, jax.random.PRNGKey(6), **_MC)
    key = jax.random.PRNGKey(7)
    val = T.measure_score_error(s, gm, vp, key=key, **_MC)
    assert val == pytest.approx(math.sqrt(float(score_error(s, gm, vp, key=key, **_MC).value)), rel=1e-12)
    assert T.measure_score_error(gm.score_fn(vp), gm, vp, key=key, **_MC) == 0.0


def test_make_perturbed_score_validation(problem):
    gm, vp = problem
    with pytest.raises(ValueError, match="eps"):
        T.make_perturbed_score(gm, vp, -0.1, jax.random.PRNGKey(0))
    with pytest.raises(ValueError, match="lengthscale"):
        T.make_perturbed_score(gm, vp, 0.1, jax.random.PRNGKey(0), lengthscale=0.0)
    with pytest.raises(ValueError, match="t_min < t_max"):
        T.make_perturbed_score(gm, vp, 0.1, jax.random.PRNGKey(0), t_min=0.5, t_max=0.2)
