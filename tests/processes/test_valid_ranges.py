"""valid_t_range: the coefficients f, g^2 and lambda are finite exactly where a process says so.
(The docstring examples of processes.py, tableaux.py and grids.py run via --doctest-modules.)"""

import jax.numpy as jnp
import pytest

import jaxode_diffusion as jd
from jaxode_diffusion.processes import DiscreteVP
from tests.helpers import ALL_PROCESSES

PROCESSES = (*ALL_PROCESSES, DiscreteVP.ddpm_linear(), DiscreteVP.from_alphas_cumprod([1.0, 0.9, 0.5, 0.1]))


def _coefficients(p, t):
    t = jnp.asarray([t])
    return [p.f(t), p.g2(t), p.lam(t)]


@pytest.mark.parametrize("p", PROCESSES, ids=lambda p: type(p).__name__)
def test_coefficients_finite_exactly_on_the_valid_range(p):
    rng = p.valid_t_range()
    assert (rng.lo, rng.hi) == (float(p.t_min), float(p.t_max))
    inside = rng.lo + 1e-3 * (rng.hi - rng.lo)
    for t in (inside, rng.hi) if rng.lo_open else (rng.lo, inside, rng.hi):
        assert all(bool(jnp.all(jnp.isfinite(v))) for v in _coefficients(p, t)), (p, t)
    if rng.lo_open:
        assert rng.reason
        assert not all(bool(jnp.all(jnp.isfinite(v))) for v in _coefficients(p, rng.lo)), p
    # the defaults are valid sampling times, and a grid between them is valid
    p.check_times(p.default_t_end, "t_end")
    p.check_times(p.default_t_start, "t_start")
    ts = jd.sampling.make_grid("log_snr", p, 4, p.default_t_start, p.default_t_end)
    assert bool(jd.sampling.grid_is_valid(ts, p))
