"""Measured defaults: default_grid_for resolves every solver to a named grid from the table."""

import pytest

import jaxode_diffusion as jd
from jaxode_diffusion.defaults import DEFAULT_SOLVER, FORM_GRIDS, OVERALL_GRID, SOLVER_GRIDS, default_grid_for
from jaxode_diffusion.sampling import get_solver, solver_names


def test_table_keys_are_canonical_solver_names_and_values_are_grids():
    for name, grid in SOLVER_GRIDS.items():
        assert get_solver(name).name == name
        assert grid in jd.GRID_NAMES
        assert default_grid_for(name) == grid
    assert set(FORM_GRIDS) <= set(jd.FORM_NAMES) and set(FORM_GRIDS.values()) <= set(jd.GRID_NAMES)
    assert OVERALL_GRID in jd.GRID_NAMES and DEFAULT_SOLVER in solver_names()


def test_every_registered_solver_and_form_gets_a_grid():
    for name in solver_names():
        assert default_grid_for(name) in jd.GRID_NAMES
    # Names, aliases and objects agree; unmeasured tableaux follow their form; equivalents share.
    assert default_grid_for("rk4") == SOLVER_GRIDS["x-t:rk4"]
    assert default_grid_for(get_solver("dpmpp_2m")) == SOLVER_GRIDS["dpmpp_2m"]
    assert default_grid_for("x0-lambda:ralston") == FORM_GRIDS["x0-lambda"]
    assert default_grid_for("ou:heun") == OVERALL_GRID
    assert default_grid_for("dpm_solver_1") == default_grid_for("ddim") == default_grid_for("dpmpp_1")
    with pytest.raises(ValueError, match="unknown"):
        default_grid_for("no_such_solver")
