"""Measured defaults: the time grid that suits each solver, and the default solver.

The tables below come from ``python benchmarks/defaults.py`` (results, machine, date and command in
``benchmarks/results/defaults.md``): every solver on every named grid, on exact-score Gaussian
mixtures under several schedules and dimensions, at NFE 10 and 20; a solver's grid is the one
with the lowest mean ``log10(RMSE / RMSE on the solver's best grid)``. Solvers not in the table
(user tableaux, other forms) get the grid that measured best for the family of their form.

Example:
    >>> from jaxode_diffusion.defaults import default_grid_for
    >>> default_grid_for("x0-lambda:rk4")
    'log_snr'
"""

from __future__ import annotations

from .solvers.registry import get_solver

__all__ = ["default_grid_for", "DEFAULT_SOLVER", "DEFAULT_NUM_STEPS", "SOLVER_GRIDS", "FORM_GRIDS", "OVERALL_GRID"]

#: The solver that measured best on average at NFE 10-20 (benchmarks/results/defaults.md).
DEFAULT_SOLVER = "unipc_bh2_2"

#: Default number of steps of the ``sample`` command (NFE 10 with the default multistep solver).
DEFAULT_NUM_STEPS = 10

#: Measured best named grid per solver (keys are canonical solver names, ``get_solver(s).name``).
SOLVER_GRIDS: dict[str, str] = {
    "ddim": "edm",
    "dpm_solver_2": "edm",
    "dpm_solver_3": "quadratic",
    "dpmpp_2s": "edm",
    "dpmpp_3s": "edm",
    "dpmpp_2m": "log_snr",
    "dpmpp_3m_exact": "log_snr",  # measured as "dpmpp_3m" before the rename (issue 14)
    "deis_ab2": "edm",
    "deis_ab3": "edm",
    "unipc_bh1_2": "log_snr",
    "unipc_bh1_3": "log_snr",
    "unipc_bh2_2": "log_snr",
    "unipc_bh2_3": "log_snr",
    "edm_heun": "edm",
    "x-t:euler": "edm",
    "x-t:heun": "quadratic",
    "x-t:rk4": "uniform",
    "x0-lambda:heun": "log_snr",
    "x0-lambda:rk4": "log_snr",
    "eps-rho:heun": "edm",
    "eps-rho:rk4": "edm",
    "x0-snr:heun": "quadratic",
    "ou-exp:heun": "edm",
}

#: Fallback per ODE form (the best grid of the Runge-Kutta solvers in that form), for solvers not
#: measured (a user's tableau in that form).
FORM_GRIDS: dict[str, str] = {
    "eps-rho": "edm",
    "ou-exp": "edm",
    "x-t": "edm",
    "x0-lambda": "log_snr",
    "x0-snr": "quadratic",
}

#: The grid with the lowest mean score over all measured solvers: for forms not measured (``ou``).
OVERALL_GRID = "log_snr"

# Exactly the same method as a measured one (DPM-Solver-1 = DPM-Solver++(1) = DEIS-AB1 = DDIM,
# Lu et al. 2022, Sec. 4.1; Zhang & Chen 2023): the same grid.
_EQUIVALENT = {"dpm_solver_1": "ddim", "dpmpp_1": "ddim", "deis_ab1": "ddim"}


def default_grid_for(solver) -> str:
    """The named grid that measured best for ``solver`` (see :data:`SOLVER_GRIDS`).

    Args:
        solver: a solver name (``"dpmpp_2m"``, ``"rk4"``, ``"x0-lambda:heun"``), a
            ``ButcherTableau`` or a solver object.

    Returns:
        A grid name from :data:`~jaxode_diffusion.grids.GRID_NAMES`.

    Raises:
        ValueError: an unknown solver (from :func:`~jaxode_diffusion.solvers.registry.get_solver`).

    Example:
        >>> default_grid_for("dpmpp_2m") in ("uniform", "log_snr", "edm", "quadratic")
        True
    """
    obj = get_solver(solver)
    name = str(getattr(obj, "name", "")).lower()
    name = _EQUIVALENT.get(name, name)
    if name in SOLVER_GRIDS:
        return SOLVER_GRIDS[name]
    form = getattr(getattr(obj, "form", None), "name", None)
    return FORM_GRIDS.get(form, OVERALL_GRID)
