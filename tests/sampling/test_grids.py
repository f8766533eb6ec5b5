import jax.numpy as jnp
import numpy as np
import pytest

import jaxode_diffusion as jd
from tests.helpers import ALL_PROCESSES


@pytest.mark.parametrize("process", ALL_PROCESSES, ids=lambda p: type(p).__name__)
@pytest.mark.parametrize("grid", ["uniform", "log_snr", "edm", "edm:3", "quadratic"])
def test_named_grids_monotone_and_endpoints(process, grid):
    t0, t1 = process.default_t_start, process.default_t_end + 1e-3
    ts = jd.sampling.make_grid(grid, process, 12, t0, t1)
    assert ts.shape == (13,)
    assert float(ts[0]) == pytest.approx(t0) and float(ts[-1]) == pytest.approx(t1)
    assert bool(jnp.all(jnp.diff(ts) < 0))


def test_grid_spacing_definitions():
    vp = jd.VPLinear()
    ts = jd.sampling.make_grid("log_snr", vp, 8, 1.0, 1e-3)
    np.testing.assert_allclose(jnp.diff(vp.lam(ts)), jnp.diff(vp.lam(ts))[0], rtol=1e-9)
    ts = jd.sampling.make_grid("edm", vp, 8, 1.0, 1e-3)
    r = vp.rho(ts) ** (1 / 7)
    np.testing.assert_allclose(jnp.diff(r), jnp.diff(r)[0], rtol=1e-9)
    ts = jd.sampling.make_grid("uniform", vp, 8, 1.0, 1e-3)
    np.testing.assert_allclose(jnp.diff(ts), jnp.diff(ts)[0], rtol=1e-9)


def test_user_grid_validation():
    vp = jd.VPLinear()
    gm = jd.GaussianMixture.ring(4)
    x = jnp.zeros((2, 2))
    with pytest.raises(ValueError, match="strictly monotone"):
        jd.sample(gm.score_fn(vp), vp, x, grid=jnp.array([1.0, 0.5, 0.5, 0.1]))
    with pytest.raises(ValueError, match="range"):
        jd.sample(gm.score_fn(vp), vp, x, grid=jnp.array([1.5, 0.5, 0.1]))
    with pytest.raises(ValueError, match="non-finite"):
        jd.sample(gm.score_fn(vp), vp, x, grid=jnp.array([1.0, jnp.nan, 0.1]))
    with pytest.raises(ValueError, match="not a known grid"):
        jd.sample(gm.score_fn(vp), vp, x, num_steps=3, grid="cosine")
    with pytest.raises(ValueError, match="disagrees"):
        jd.sample(gm.score_fn(vp), vp, x, num_steps=5, grid=jnp.array([1.0, 0.5, 0.1]))
    # an increasing array is accepted and used in sampling order
    sol = jd.sample(gm.score_fn(vp), vp, x, grid=jnp.array([0.1, 0.5, 1.0]), return_nfe=True)
    assert float(sol.ts[0]) == 1.0 and float(sol.ts[-1]) == 0.1
