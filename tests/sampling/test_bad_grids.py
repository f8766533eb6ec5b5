"""Bad grids, step counts and time ranges for ``make_grid`` / ``validate_grid`` / ``grid_is_valid`` /
``sample``: each raises ValueError whose message names the argument (and usually the value and the
fix); the checks run under jit where the end points are static, and ``grid_is_valid`` traces."""

import jax
import jax.numpy as jnp
import pytest

import jaxode_diffusion as jd
from jaxode_diffusion.processes import VE, DiscreteVP, VPLinear
from jaxode_diffusion.sampling.grids import grid_is_valid, make_grid, validate_grid

NAN = float("nan")

# (id, thunk, regex the message must match: the argument's name, often the value)
CASES = [
    ("grid_t_end_zero", lambda: make_grid("uniform", VPLinear(), 4, 1.0, 0.0), r"t_end=0\.0"),
    ("grid_t_start_high", lambda: make_grid("uniform", VPLinear(), 4, 2.0, 0.1), r"t_start=2\.0"),
    ("grid_t_start_nan", lambda: make_grid("uniform", VPLinear(), 4, NAN, 0.1), r"t_start must be finite"),
    ("grid_reversed", lambda: make_grid("uniform", VPLinear(), 4, 0.1, 0.5), r"t_start=0\.1 must be larger than t_end"),
    ("grid_discrete_below", lambda: make_grid("uniform", DiscreteVP.ddpm_linear(), 4, 1.0, 1e-4), r"t_end=0\.0001"),
    ("sample_t_end_zero", lambda: jd.sample(lambda x, t: -x, VPLinear(), jnp.zeros((2, 2)), num_steps=2, t_end=0.0), r"t_end"),
    ("edm_tiny_exponent", lambda: make_grid("edm:1e-9", VPLinear(), 10, 1.0, 1e-3), r"grid='edm:1e-9'.*invalid grid.*edm:7"),
    ("edm_zero_exponent", lambda: make_grid("edm:0", VPLinear(), 10, 1.0, 1e-3), r"grid='edm:0'.*> 0"),
    ("edm_nan_exponent", lambda: make_grid("edm:nan", VPLinear(), 10, 1.0, 1e-3), r"grid='edm:nan'"),
    ("edm_word_exponent", lambda: make_grid("edm:seven", VPLinear(), 10, 1.0, 1e-3), r"grid='edm:seven'.*number"),
    ("uniform_with_param", lambda: make_grid("uniform:3", VPLinear(), 10, 1.0, 1e-3), r"grid='uniform:3'"),
    ("num_steps_true", lambda: make_grid("uniform", VPLinear(), True, 1.0, 1e-3), r"num_steps=True is a bool"),
    ("num_steps_float", lambda: make_grid("uniform", VPLinear(), 2.5, 1.0, 1e-3), r"num_steps must be a positive integer.*2\.5"),
    ("num_steps_whole_float", lambda: make_grid("uniform", VPLinear(), 4.0, 1.0, 1e-3), r"num_steps.*int\(4\.0\)"),
    ("num_steps_zero", lambda: make_grid("uniform", VPLinear(), 0, 1.0, 1e-3), r"num_steps=0"),
    ("num_steps_negative", lambda: make_grid("uniform", VPLinear(), -3, 1.0, 1e-3), r"num_steps=-3"),
    ("num_steps_string", lambda: make_grid("uniform", VPLinear(), "10", 1.0, 1e-3), r"num_steps.*'10'"),
    ("sample_num_steps_true", lambda: jd.sample(lambda x, t: -x, VPLinear(), jnp.zeros((2, 2)), num_steps=True), r"num_steps"),
    ("user_grid_nan", lambda: validate_grid(jnp.array([1.0, NAN, 0.1]), VPLinear()), r"grid\[1\] = nan"),
    ("user_grid_zero", lambda: validate_grid(jnp.array([1.0, 0.5, 0.0]), VPLinear()), r"grid must lie in .*\(0\.0, 1\.0\]"),
    ("user_grid_2d", lambda: validate_grid(jnp.ones((2, 2)), VPLinear()), r"grid must be a 1-D array"),
    ("user_grid_repeated", lambda: validate_grid(jnp.array([1.0, 0.5, 0.5]), VPLinear(), name="t_grid"), r"t_grid must be strictly monotone"),
    ("grid_is_valid_2d", lambda: grid_is_valid(jnp.ones((2, 2)), VPLinear()), r"grid must be a 1-D array"),
]


@pytest.mark.parametrize("thunk, match", [c[1:] for c in CASES], ids=[c[0] for c in CASES])
def test_bad_grid_is_a_clear_value_error(thunk, match):
    with pytest.raises(ValueError, match=match):
        thunk()


def test_enough_cases():
    assert len(CASES) >= 20
    assert len({c[0] for c in CASES}) == len(CASES)


def test_grid_checked_under_jit_when_end_points_are_static():
    # Named grids with concrete end points are built eagerly, so a NaN grid is refused even
    # inside jit (it would otherwise reach the solver as a tracer).
    @jax.jit
    def f(x):
        return x * make_grid("edm:1e-9", VPLinear(), 10, 1.0, 1e-3)[0]

    with pytest.raises(ValueError, match="invalid grid"):
        f(1.0)


def test_grid_is_valid_traced():
    vp = VPLinear()
    check = jax.jit(lambda ts: grid_is_valid(ts, vp))
    assert bool(check(jnp.array([1.0, 0.5, 1e-3])))
    assert not bool(check(jnp.array([1.0, 0.5, 0.0])))  # t = 0: singular
    assert not bool(check(jnp.array([1.0, 1.0, 0.1])))  # not strictly decreasing
    assert not bool(check(jnp.array([1.0, NAN, 0.1])))
    assert not bool(check(jnp.array([1.5, 0.5, 0.1])))  # beyond t_max
    assert bool(jax.jit(lambda ts: grid_is_valid(ts, VE()))(jnp.array([1.0, 0.0])))  # VE: 0 is fine
