"""The solver registry: every name ``sample(..., solver=NAME)`` accepts, in one explicit table.

Names resolve in this order:

* an :class:`~jaxode_diffusion.solvers.base.AbstractSolver` object is used as it is;
* a :class:`~jaxode_diffusion.solvers.tableaux.ButcherTableau` is plain RK in the ``x-t`` form;
* ``"FORM:TABLEAU"`` (``"x0-lambda:rk4"``) or ``"TABLEAU"`` (``"rk4"``: ``x-t``) is the generic
  RK step of :mod:`~jaxode_diffusion.solvers.runge_kutta` in that form;
* a named method (``"dpmpp_2m"``, ``"ddim"``, ``"edm_heun"``) from :data:`SOLVERS` below, or one
  a user added with :func:`register_solver`.

Nothing is registered by importing a module: the built-in table is written out here.
"""

from __future__ import annotations

from collections.abc import Callable

from jaxode_diffusion.solvers import tableaux as _tableaux
from jaxode_diffusion.solvers.forms import FORM_NAMES, get_form
from jaxode_diffusion.solvers.base import AbstractSolver
from jaxode_diffusion.solvers.exponential import SINGLESTEP_COEFFICIENTS, EDMHeun, ExponentialSinglestep
from jaxode_diffusion.solvers.multistep import MULTISTEP_ALIASES, MULTISTEP_SCHEMES, ExponentialMultistep
from jaxode_diffusion.solvers.predictions import PREDICTIONS, check_form
from jaxode_diffusion.solvers.runge_kutta import RungeKutta

__all__ = ["SOLVERS", "get_solver", "register_solver", "solver_names"]

Factory = Callable[[str | None], AbstractSolver]


def _singlestep(name: str, order: int, prediction: str) -> Factory:
    def factory(form_name):
        check_form(name, form_name, PREDICTIONS[prediction].form_name)
        return ExponentialSinglestep(SINGLESTEP_COEFFICIENTS[order], prediction, name)

    return factory


def _multistep(name: str, scheme_name: str) -> Factory:
    scheme = MULTISTEP_SCHEMES[scheme_name]

    def factory(form_name):
        check_form(name, form_name, PREDICTIONS[scheme.prediction].form_name)
        return ExponentialMultistep(scheme)

    return factory


def _edm_heun(form_name):
    check_form("edm_heun", form_name, "eps-rho")
    return EDMHeun()


# name -> factory(form_name or None) -> solver. DDIM = DPM-Solver-1 (Lu et al. 2022, Sec. 4.1).
SOLVERS: dict[str, Factory] = {
    "ddim": _singlestep("ddim", 1, "noise"),
    "dpm_solver_1": _singlestep("dpm_solver_1", 1, "noise"),
    "dpm_solver_2": _singlestep("dpm_solver_2", 2, "noise"),
    "dpm_solver_3": _singlestep("dpm_solver_3", 3, "noise"),
    "dpmpp_1": _singlestep("dpmpp_1", 1, "data"),
    "dpmpp_2s": _singlestep("dpmpp_2s", 2, "data"),
    "dpmpp_3s": _singlestep("dpmpp_3s", 3, "data"),
    "edm_heun": _edm_heun,
    **{name: _multistep(name, name) for name in MULTISTEP_SCHEMES},
    **{alias: _multistep(alias, target) for alias, target in MULTISTEP_ALIASES.items()},
}

_USER_SOLVERS: dict[str, Factory] = {}


def register_solver(name: str, factory: Factory) -> None:
    """Add a user's solver under ``name`` (a built-in name cannot be replaced).

    Args:
        name: the name ``sample(..., solver=name)`` will accept (case-insensitive).
        factory: ``factory(form_name_or_None) -> AbstractSolver``; raise ``ValueError`` for forms
            the solver does not support.

    Example:
        >>> from jaxode_diffusion import register_solver, get_solver
        >>> from jaxode_diffusion.solvers import tableaux
        >>> from jaxode_diffusion.solvers.runge_kutta import RungeKutta
        >>> register_solver("my_rk2", lambda form: RungeKutta(tableaux.get("heun")))
        >>> get_solver("my_rk2").order
        2
    """
    if not isinstance(name, str) or not name or ":" in name:
        raise ValueError(f"name={name!r}: a solver name is a non-empty string without ':'.")
    key = name.lower()
    if not callable(factory):
        raise ValueError(f"factory must be callable factory(form_name) -> solver; got {type(factory).__name__}.")
    if key in SOLVERS or key in {n.lower() for n in _tableaux.names()}:
        raise ValueError(f"name={name!r} is a built-in solver or tableau; choose another name.")
    _USER_SOLVERS[key] = factory


def solver_names() -> list[str]:
    """Every name accepted on its own: tableaux (plain RK in ``x-t``) and named methods.

    Example:
        >>> from jaxode_diffusion import solver_names
        >>> "dpmpp_2m" in solver_names() and "rk4" in solver_names()
        True
    """
    return sorted(set(_tableaux.names()) | set(SOLVERS) | set(_USER_SOLVERS))


def get_solver(solver) -> AbstractSolver:
    """Resolve a solver spec to a solver object.

    Args:
        solver: an :class:`AbstractSolver`; a :class:`~jaxode_diffusion.solvers.tableaux.ButcherTableau`
            (plain RK in ``x-t``); a tableau or solver name (``"rk4"``: plain RK in ``x-t``;
            ``"dpmpp_2m"``); or ``"FORM:NAME"`` (``"x0-lambda:rk4"``, ``"eps-rho:heun"``).

    Raises:
        ValueError: unknown form or name, with the valid choices.

    Example:
        >>> from jaxode_diffusion import get_solver
        >>> get_solver("x0-lambda:rk4").order, get_solver("dpmpp_2m").order
        (4, 2)
    """
    if isinstance(solver, AbstractSolver):
        return solver
    if isinstance(solver, _tableaux.ButcherTableau):
        return RungeKutta(solver)
    if not isinstance(solver, str):
        raise ValueError(
            f"solver must be a name like 'rk4' or 'x0-lambda:rk4', a ButcherTableau or a solver "
            f"object; got {type(solver).__name__}."
        )
    form_name, sep, name = solver.partition(":")
    if not sep:
        form_name, name = None, form_name
    if form_name is not None and form_name.lower() not in FORM_NAMES:
        raise ValueError(
            f"solver={solver!r}: unknown form {form_name!r}; forms are {list(FORM_NAMES)} "
            "(write 'FORM:TABLEAU', e.g. 'x0-lambda:rk4')."
        )
    key = name.lower()
    if key in SOLVERS:
        return SOLVERS[key](form_name)
    if key in _USER_SOLVERS:
        return _USER_SOLVERS[key](form_name)
    if key in {n.lower() for n in _tableaux.names()}:
        return RungeKutta(_tableaux.get(key), get_form(form_name or "x-t"))
    raise ValueError(
        f"solver={solver!r}: unknown method {name!r}; choose a tableau or solver from "
        f"{solver_names()}, optionally prefixed by a form from {list(FORM_NAMES)}."
    )
