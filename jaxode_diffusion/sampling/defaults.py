"""Measured defaults: the time grid that suits each solver, and the default solver.

The tables below come from ``python benchmarks/defaults.py`` (results, machine, date and command in
``benchmarks/results/defaults.md``): every solver on every named grid at NFE 10 and 20, on
exact-score Gaussian mixtures under several schedules and dimensions and on ten trained 2-D
networks (six processes, four predictions); a solver's grid is the one with the lowest mean
``log10(RMSE / RMSE on the solver's best grid)``, the mean taken per kind of problem (exact,
trained) and then over the two kinds. Problems are split by the clock of their process
(:func:`clock_of`): on a unit clock every named grid is a candidate; on a noise-level clock (EDM)
only ``log_snr`` and ``edm``. Solvers not in the tables (user tableaux, other forms) get the grid
that measured best for the family of their form.

No fixed grid is best on every model (how far the table's choice can be from the best grid of a
trained network: ``benchmarks/README.md``, "Solver notes"). ``jaxode-diffusion sample`` therefore
measures the grid on the user's model by default
(:func:`~jaxode_diffusion.tuning.autogrid.choose_grid`), keeping the table's grid unless another is
better beyond the pilot's uncertainty; these tables are the default of the Python API, of
``--grid table``, and of ``--grid auto`` when a pilot would cost more than the sampling asked for
(:func:`~jaxode_diffusion.tuning.autogrid.plan_pilot`).

Example:
    >>> from jaxode_diffusion.sampling.defaults import default_grid_for
    >>> default_grid_for("x0-lambda:rk4")
    'log_snr'
"""

from __future__ import annotations

from jaxode_diffusion.solvers.registry import get_solver

__all__ = ["default_grid_for", "clock_of", "DEFAULT_SOLVER", "DEFAULT_NUM_STEPS", "SOLVER_GRIDS", "FORM_GRIDS",
           "OVERALL_GRID", "NOISE_CLOCK_GRIDS", "NOISE_FORM_GRIDS", "NOISE_OVERALL_GRID"]

#: The solver that measured best on average at NFE 10-20 (benchmarks/results/defaults.md).
DEFAULT_SOLVER = "unipc_bh2_2"

#: Default number of steps of the ``sample`` command (NFE 10 with the default multistep solver).
DEFAULT_NUM_STEPS = 10

#: Measured best named grid per solver on a unit clock (``clock_of(process) == "unit"``: VP linear
#: and cosine, sub-VP, VE, rectified flow, discrete tables; also used without a process). Chosen over
#: exact-score mixtures and trained 2-D networks, the two kinds weighted equally (keys are canonical
#: solver names, ``get_solver(s).name``).
SOLVER_GRIDS: dict[str, str] = {
    "ddim": "uniform",
    "dpm_solver_2": "quadratic",
    "dpm_solver_3": "uniform",
    "dpmpp_2s": "uniform",
    "dpmpp_3s": "log_snr",
    "dpmpp_2m": "log_snr",
    "dpmpp_3m": "log_snr",
    "dpmpp_3m_exact": "log_snr",
    "deis_ab2": "uniform",
    "deis_ab3": "uniform",
    "unipc_bh1_2": "log_snr",
    "unipc_bh1_3": "log_snr",
    "unipc_bh2_2": "quadratic",
    "unipc_bh2_3": "log_snr",
    "edm_heun": "uniform",
    "x-t:euler": "uniform",
    "x-t:heun": "uniform",
    "x-t:rk4": "uniform",
    "x0-lambda:heun": "quadratic",
    "x0-lambda:rk4": "log_snr",
    "eps-rho:heun": "edm",
    "eps-rho:rk4": "edm",
    "x0-snr:heun": "uniform",
    "ou-exp:heun": "log_snr",
}

#: Fallback per ODE form on a unit clock (the best grid of the Runge-Kutta solvers in that form), for
#: solvers not measured (a user's tableau in that form).
FORM_GRIDS: dict[str, str] = {
    "eps-rho": "edm",
    "ou-exp": "log_snr",
    "x-t": "uniform",
    "x0-lambda": "log_snr",
    "x0-snr": "uniform",
}

#: For forms not measured (``ou``) on a unit clock: the log-SNR grid, the one named grid that was
#: never worse than 5x the best on any measured problem.
OVERALL_GRID = "log_snr"

#: Measured best noise-level grid (``log_snr`` or ``edm``) per solver on a noise-level clock
#: (``clock_of(process) == "noise"``: EDM, where ``t = sigma``).
NOISE_CLOCK_GRIDS: dict[str, str] = {
    "ddim": "edm",
    "dpm_solver_2": "edm",
    "dpm_solver_3": "log_snr",
    "dpmpp_2s": "edm",
    "dpmpp_3s": "edm",
    "dpmpp_2m": "log_snr",
    "dpmpp_3m": "log_snr",
    "dpmpp_3m_exact": "log_snr",
    "deis_ab2": "edm",
    "deis_ab3": "edm",
    "unipc_bh1_2": "log_snr",
    "unipc_bh1_3": "log_snr",
    "unipc_bh2_2": "log_snr",
    "unipc_bh2_3": "log_snr",
    "edm_heun": "edm",
    "x-t:euler": "edm",
    "x-t:heun": "edm",
    "x-t:rk4": "edm",
    "x0-lambda:heun": "log_snr",
    "x0-lambda:rk4": "log_snr",
    "eps-rho:heun": "edm",
    "eps-rho:rk4": "edm",
    "x0-snr:heun": "edm",
    "ou-exp:heun": "edm",
}

#: Fallback per ODE form on a noise-level clock.
NOISE_FORM_GRIDS: dict[str, str] = {
    "eps-rho": "edm",
    "ou-exp": "edm",
    "x-t": "edm",
    "x0-lambda": "log_snr",
    "x0-snr": "edm",
}

#: For forms not measured on a noise-level clock.
NOISE_OVERALL_GRID = "edm"

# Exactly the same method as a measured one (DPM-Solver-1 = DPM-Solver++(1) = DEIS-AB1 = DDIM,
# Lu et al. 2022, Sec. 4.1; Zhang & Chen 2023): the same grid.
_EQUIVALENT = {"dpm_solver_1": "ddim", "dpmpp_1": "ddim", "deis_ab1": "ddim"}


def clock_of(process) -> str:
    """``"unit"`` for a process whose clock is the unit interval (``t_max <= 1``), else ``"noise"``.

    The named grids ``uniform`` and ``quadratic`` are spaced in the process's own time ``t``;
    ``log_snr`` and ``edm`` in its noise level. On a unit clock (VP linear and cosine, sub-VP, VE,
    rectified flow, discrete DDPM tables, most user ``alpha``/``sigma``) every grid is a candidate;
    when ``t`` is itself a noise level on a long range (EDM: ``t = sigma`` up to 80; any process with
    ``t_max > 1``) the ``t``-spaced grids put almost every step at high noise and do far worse, so
    only the noise-level grids are candidates there.

    Example:
        >>> import jaxode_diffusion as jd
        >>> clock_of(jd.VPLinear()), clock_of(jd.EDM())
        ('unit', 'noise')
    """
    return "unit" if float(process.t_max) <= 1.0 else "noise"


def default_grid_for(solver, process=None) -> str:
    """The named grid that measured best for ``solver`` (on ``process``'s kind of clock).

    Args:
        solver: a solver name (``"dpmpp_2m"``, ``"rk4"``, ``"x0-lambda:heun"``), a
            ``ButcherTableau`` or a solver object.
        process: the forward process sampled (optional): with ``t_max > 1`` (EDM-like, see
            :func:`clock_of`) the choice is among the noise-level grids (:data:`NOISE_CLOCK_GRIDS`);
            otherwise, and without a process, :data:`SOLVER_GRIDS`.

    Returns:
        A grid name from :data:`~jaxode_diffusion.sampling.grids.GRID_NAMES`.

    Raises:
        ValueError: an unknown solver (from :func:`~jaxode_diffusion.solvers.registry.get_solver`).

    Example:
        >>> import jaxode_diffusion as jd
        >>> default_grid_for("dpmpp_2m") in ("uniform", "log_snr", "edm", "quadratic")
        True
        >>> default_grid_for("dpmpp_2m", jd.EDM()) in ("log_snr", "edm")
        True
    """
    obj = get_solver(solver)
    name = str(getattr(obj, "name", "")).lower()
    name = _EQUIVALENT.get(name, name)
    noise = process is not None and clock_of(process) == "noise"
    table, forms, overall = ((NOISE_CLOCK_GRIDS, NOISE_FORM_GRIDS, NOISE_OVERALL_GRID) if noise
                             else (SOLVER_GRIDS, FORM_GRIDS, OVERALL_GRID))
    if name in table:
        return table[name]
    form = getattr(getattr(obj, "form", None), "name", None)
    return forms.get(form, overall)
