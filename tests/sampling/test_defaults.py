"""Measured defaults: default_grid_for resolves every solver to a named grid from the table."""

import pytest

import jaxode_diffusion as jd
from jaxode_diffusion.sampling.core import get_solver, solver_names
from jaxode_diffusion.sampling.defaults import (
    DEFAULT_SOLVER,
    FORM_GRIDS,
    OVERALL_GRID,
    SOLVER_GRIDS,
    default_grid_for,
)


def test_table_keys_are_canonical_solver_names_and_values_are_grids():
    for name, grid in SOLVER_GRIDS.items():
        assert get_solver(name).name == name
        assert grid in jd.sampling.GRID_NAMES
        assert default_grid_for(name) == grid
    assert set(FORM_GRIDS) <= set(jd.solvers.FORM_NAMES) and set(FORM_GRIDS.values()) <= set(jd.sampling.GRID_NAMES)
    assert OVERALL_GRID in jd.sampling.GRID_NAMES and DEFAULT_SOLVER in solver_names()


def test_every_registered_solver_and_form_gets_a_grid():
    for name in solver_names():
        assert default_grid_for(name) in jd.sampling.GRID_NAMES
    # Names, aliases and objects agree; unmeasured tableaux follow their form; equivalents share.
    assert default_grid_for("rk4") == SOLVER_GRIDS["x-t:rk4"]
    assert default_grid_for(get_solver("dpmpp_2m")) == SOLVER_GRIDS["dpmpp_2m"]
    assert default_grid_for("x0-lambda:ralston") == FORM_GRIDS["x0-lambda"]
    assert default_grid_for("ou:heun") == OVERALL_GRID
    assert default_grid_for("dpm_solver_1") == default_grid_for("ddim") == default_grid_for("dpmpp_1")
    with pytest.raises(ValueError, match="unknown"):
        default_grid_for("no_such_solver")


def test_noise_level_clock_gets_only_noise_level_grids():
    from jaxode_diffusion.sampling.defaults import (
        NOISE_CLOCK_GRIDS,
        NOISE_FORM_GRIDS,
        NOISE_OVERALL_GRID,
        clock_of,
    )

    assert clock_of(jd.EDM()) == "noise" and clock_of(jd.EDM(sigma_max=3.0)) == "noise"
    for proc in (jd.VPLinear(), jd.VPCosine(), jd.SubVP(), jd.VE(), jd.RectifiedFlow()):
        assert clock_of(proc) == "unit"
    # A user process on a long clock (t up to 5) is a noise-level clock; on [0, 1] a unit clock.
    import jax.numpy as jnp

    long = jd.ForwardProcess.from_alpha_sigma(lambda t: jnp.ones_like(t), lambda t: t, t_max=5.0)
    unit = jd.ForwardProcess.from_alpha_sigma(lambda t: 1 - t, lambda t: t, t_max=0.99)
    assert clock_of(long) == "noise" and clock_of(unit) == "unit"
    assert set(NOISE_CLOCK_GRIDS.values()) | set(NOISE_FORM_GRIDS.values()) | {NOISE_OVERALL_GRID} <= {"log_snr", "edm"}
    for name in solver_names():
        assert default_grid_for(name, jd.EDM()) in ("log_snr", "edm")
        assert default_grid_for(name, jd.VPLinear()) == default_grid_for(name)
    # sample()/make_times follow the process: the EDM default grid is the noise-clock one.
    ts = jd.make_times(jd.EDM(), num_steps=4, solver="dpmpp_2m")
    expect = jd.make_times(jd.EDM(), num_steps=4, grid=NOISE_CLOCK_GRIDS["dpmpp_2m"])
    assert (ts == expect).all()


def test_choose_grid_rejects_bad_arguments_before_solving():
    import jax.numpy as jnp

    from jaxode_diffusion.tuning.autogrid import choose_grid

    vp, x = jd.VPLinear(), jnp.zeros((8, 2))
    sf = lambda x, t: -x  # noqa: E731
    with pytest.raises(ValueError, match="grids"):
        choose_grid(sf, vp, x, "dpmpp_2m", 5, grids=("uniform", "nope"))
    with pytest.raises(ValueError, match="grids"):
        choose_grid(sf, vp, x, "dpmpp_2m", 5, grids=())
    with pytest.raises(ValueError, match="x_pilot"):
        choose_grid(sf, vp, jnp.zeros((1, 2)), "dpmpp_2m", 5)
    with pytest.raises(ValueError, match="num_steps"):
        choose_grid(sf, vp, x, "dpmpp_2m", 0)
