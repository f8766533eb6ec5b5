"""The study's dimension family and its exponent fit."""

import jax.numpy as jnp
import numpy as np
import pytest

from jaxode_diffusion import GaussianMixture, VPLinear
from jaxode_diffusion.study import _fit_exponent


@pytest.mark.parametrize("d", [2, 16, 128])
def test_dimension_family_normalised_and_spanning(d):
    gm = GaussianMixture.dimension_family(d, seed=3)
    assert gm.dim == d and gm.num_components == 4 and not gm.diagonal
    cov = np.asarray(gm.covariance())
    np.testing.assert_allclose(np.diag(cov), 1.0, atol=1e-10)  # unit per-coordinate scale
    np.testing.assert_allclose(np.asarray(gm.mean()), 0.0, atol=1e-10)
    # Every component is anisotropic in all d directions: full rank, eigenvalues spread out, and
    # its principal axes are not the coordinate axes.
    off_diagonal = []
    for c in np.asarray(gm.covs):
        ev = np.linalg.eigvalsh(c)
        assert ev.min() > 0 and ev.max() / ev.min() > 2.0
        off_diagonal.append(np.abs(c - np.diag(np.diag(c))).max())
    assert max(off_diagonal) > 1e-2
    # Means in generic directions: the K = 4 centred means span min(K - 1, d) dimensions.
    assert np.linalg.matrix_rank(np.asarray(gm.means)) == min(3, d)
    # Deterministic from the seed; another seed gives another mixture.
    again = GaussianMixture.dimension_family(d, seed=3)
    np.testing.assert_array_equal(np.asarray(again.means), np.asarray(gm.means))
    other = GaussianMixture.dimension_family(d, seed=4)
    assert not np.allclose(np.asarray(other.means), np.asarray(gm.means))
    s = gm.score(jnp.zeros((2, d)), VPLinear(), 0.01)
    assert s.shape == (2, d) and bool(jnp.all(jnp.isfinite(s)))


def test_dimension_family_bad_arguments():
    with pytest.raises(ValueError, match="dim=0"):
        GaussianMixture.dimension_family(0)
    with pytest.raises(ValueError, match="num_components"):
        GaussianMixture.dimension_family(4, num_components=0)
    with pytest.raises(ValueError, match="min_var"):
        GaussianMixture.dimension_family(4, min_var=0.5, max_var=0.1)


def test_fit_exponent_recovers_slope_with_interval():
    d = np.array([2.0, 4, 8, 16, 32])
    rng = np.random.default_rng(0)
    tv = 1e-3 * d**1.5 * np.exp(0.05 * rng.standard_normal(d.size))
    fit = _fit_exponent(d, tv, 0.02 * tv)
    assert fit["low"] < 1.5 < fit["high"] and abs(fit["slope"] - 1.5) < 0.1
    assert fit["high"] - fit["low"] < 0.5
    assert np.isnan(_fit_exponent(d[:1], tv[:1], tv[:1])["slope"])


def test_adversarial_perturbation_keeps_size_and_raises_tv():
    import jax

    from jaxode_diffusion.study import _adversarial, make_config
    from jaxode_diffusion.theory import make_perturbed_score, measure_score_error

    gm, vp = GaussianMixture.ring(4), VPLinear()
    cfg = make_config("quick", floor_solver="x-t:heun", floor_steps=4, adv_steps=3, adv_samples=48)
    pert, _ = make_perturbed_score(gm, vp, 0.1, jax.random.PRNGKey(0), t_min=cfg.t_end, num_samples=512,
                                   num_times=16)
    adv, history = _adversarial(pert, gm, vp, cfg, jax.random.PRNGKey(1))
    assert len(history) == 4 and history[-1] > history[0]  # ascent on the (fixed-sample) TV
    eps = measure_score_error(adv, gm, vp, key=jax.random.PRNGKey(2), num_times=16, num_samples=1024,
                              t_min=cfg.t_end)
    assert abs(eps - 0.1) < 0.01  # the projection keeps the prescribed L2 size
    assert np.all(np.isfinite(adv.perturbation_bounds()))


# The section-1 order rule (estimate_order / extend_until_asymptotic) is tested in tests/test_study_slopes.py.
