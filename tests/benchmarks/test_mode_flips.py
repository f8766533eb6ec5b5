"""The mode-flip diagnostics of benchmarks/tune_vs_kdiffusion.py: which component an end point
belongs to, and the step count a solver needs to keep a trajectory in its component."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest

import jaxode_diffusion as jd
from benchmarks import tune_vs_kdiffusion as tk  # torch and k-diffusion are test dependencies
from jaxode_diffusion.analysis.diffrax_drivers import reference_solve


def _mixture(key, diagonal=False):
    # Means 8 apart along a random orthonormal basis (pairwise distance 8 sqrt 2), covariances well below 1.
    q, _ = jnp.linalg.qr(jax.random.normal(key, (3, 3)))
    means = 8.0 * q
    if diagonal:
        covs = jnp.full((3, 3), 0.1)
    else:
        a = 0.3 * jax.random.normal(jax.random.fold_in(key, 1), (3, 3, 3))
        covs = jnp.einsum("kij,klj->kil", a, a) + 0.05 * jnp.eye(3)
    return jd.GaussianMixture(jnp.array([0.2, 0.3, 0.5]), means, covs)


@pytest.mark.parametrize("diagonal", [False, True])
def test_components_name_the_component_of_points_near_each_mean(diagonal):
    key = jax.random.PRNGKey(np.random.SeedSequence().entropy % 2**31)
    gm, vp = _mixture(key, diagonal), jd.VPLinear()
    t = vp.default_t_end
    m = gm.marginal(vp, t)
    x = m.means + 0.05 * jax.random.normal(jax.random.fold_in(key, 2), m.means.shape)
    np.testing.assert_array_equal(tk.components(m, x), [0, 1, 2])
    # A point moved onto another component's mean changes its component.
    np.testing.assert_array_equal(tk.components(m, m.means[jnp.array([1, 2, 0])]), [1, 2, 0])


def test_steps_to_keep_mode_counts_kept_and_flipped_trajectories(monkeypatch):
    monkeypatch.setattr(tk, "HARD_STEPS", (8, 16))  # two step counts keep the test's compiles few
    key = jax.random.PRNGKey(np.random.SeedSequence().entropy % 2**31)
    gm, vp = _mixture(key), jd.VPLinear()
    sf = gm.score_fn(vp)
    t1, t_end = float(vp.default_t_start), float(vp.default_t_end)
    x = gm.sample_marginal(jax.random.fold_in(key, 3), 4, vp, t1)
    ref = reference_solve(sf, vp, x, t_start=t1, t_end=t_end, rtol=1e-8, atol=1e-8)
    m_end = gm.marginal(vp, t_end)
    comp = tk.components(m_end, ref)
    # Far-apart components: the solver keeps every trajectory from the first count on.
    assert tk.steps_to_keep_mode(sf, vp, m_end, x, ref, t1, t_end) == [8, 8, 8, 8]
    # A "reference" in another component: no step count keeps it, reported as None.
    other = m_end.means[(comp + 1) % 3]
    assert tk.steps_to_keep_mode(sf, vp, m_end, x, other, t1, t_end) == [None] * 4
