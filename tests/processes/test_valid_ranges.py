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


@pytest.mark.parametrize("t_max", [0.99, 0.7])
def test_float32_grid_from_a_float64_t_max_is_accepted(t_max):
    """t_max=0.99 is 0.9900000095 in float32: a grid starting there is the end itself, not outside
    the range; a time beyond the rounded end is still refused."""
    p = jd.ForwardProcess.from_alpha_sigma(lambda t: jnp.cos(jnp.pi * t / 2), lambda t: jnp.sin(jnp.pi * t / 2),
                                           t_max=t_max)
    x = jnp.zeros((3, 2), jnp.float32)
    out = jd.sample(lambda x, t: -x, p, x, solver="dpmpp_2m", num_steps=4)
    assert out.dtype == jnp.float32 and bool(jnp.all(jnp.isfinite(out)))
    beyond = jnp.asarray([t_max + 1e-3, 0.5, 0.01], jnp.float32)
    with pytest.raises(ValueError, match="ts must lie in"):
        jd.solve(lambda x, t: -x, p, x, beyond, jd.get_solver("ddim"))
