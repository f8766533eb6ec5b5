"""Solvers as data: Butcher tableaux, ODE forms and the solver classes that step them.

Files:

* ``tableaux.py``: :class:`ButcherTableau` with its order computed from the rooted-tree order
  conditions, and the library of named tableaux (``tableaux.get(name)``);
* ``forms.py``: the ODE forms (``x-t``, ``eps-rho``, ``x0-lambda``, ``x0-snr``, ``ou``,
  ``ou-exp``): the state and clock a tableau steps in;
* ``base.py``: :class:`AbstractSolver`, the interface every solver implements;
* ``runge_kutta.py``, ``exponential.py``, ``multistep.py``: plain RK in any form, exponential
  singlestep (DPM-Solver, DPM-Solver++, EDM Heun) and exponential multistep (DPM-Solver++(2M/3M),
  UniPC, DEIS/iPNDM-style) solvers; ``predictions.py`` and ``phi.py`` are their shared pieces;
* ``learned.py``: solvers with per-step coefficients that keep their order (non-stationary
  multistep and singlestep exponential families), fitted by :func:`jaxode_diffusion.tuning.learn_solver`;
* ``registry.py``: solver names (``"dpmpp_2m"``, ``"x0-lambda:rk4"``) to instances;
* ``adaptive.py``: DPM-Solver's adaptive step-size solver;
* ``diffrax_bridge.py``: conversion to and from diffrax solvers and tableaux (imports diffrax).

Solvers import only :mod:`jaxode_diffusion.processes` below them.
"""


from jaxode_diffusion.solvers.base import (
    AbstractSolver,
    StepInfo,
)
from jaxode_diffusion.solvers.tableaux import (
    ButcherTableau,
    get,
    MAX_ORDER,
    names,
    order_conditions,
    ORDER_TOL,
    PUBLISHED_ORDER,
    register,
    rooted_trees,
    ROW_SUM_TOL,
)
from jaxode_diffusion.solvers.forms import (
    AbstractForm,
    EpsRho,
    FORM_NAMES,
    get_form,
    OU,
    OUExp,
    X0Lambda,
    X0Snr,
    XT,
)
from jaxode_diffusion.solvers.runge_kutta import (
    RungeKutta,
)
from jaxode_diffusion.solvers.exponential import (
    combine_stages,
    EDMHeun,
    ExponentialSinglestep,
    FIRST_ORDER,
    second_order_coefficients,
    SINGLESTEP_COEFFICIENTS,
    singlestep_stages,
    SinglestepCoefficients,
    THIRD_ORDER,
)
from jaxode_diffusion.solvers.multistep import (
    ExponentialMultistep,
    MULTISTEP_ALIASES,
    MULTISTEP_SCHEMES,
    MultistepScheme,
)
from jaxode_diffusion.solvers.learned import (
    learnable_bases,
    learned_solver_from_dict,
    learned_start,
    LearnedMultistep,
    LearnedSinglestep,
)
from jaxode_diffusion.solvers.registry import (
    get_solver,
    register_solver,
    solver_names,
    SOLVERS,
)

__all__ = [
    "AbstractForm",
    "AbstractSolver",
    "ButcherTableau",
    "combine_stages",
    "EDMHeun",
    "EpsRho",
    "ExponentialMultistep",
    "ExponentialSinglestep",
    "FIRST_ORDER",
    "FORM_NAMES",
    "get",
    "get_form",
    "get_solver",
    "learnable_bases",
    "learned_solver_from_dict",
    "learned_start",
    "LearnedMultistep",
    "LearnedSinglestep",
    "MAX_ORDER",
    "MULTISTEP_ALIASES",
    "MULTISTEP_SCHEMES",
    "MultistepScheme",
    "names",
    "order_conditions",
    "ORDER_TOL",
    "OU",
    "OUExp",
    "PUBLISHED_ORDER",
    "register",
    "register_solver",
    "rooted_trees",
    "ROW_SUM_TOL",
    "RungeKutta",
    "second_order_coefficients",
    "SINGLESTEP_COEFFICIENTS",
    "singlestep_stages",
    "SinglestepCoefficients",
    "solver_names",
    "SOLVERS",
    "StepInfo",
    "THIRD_ORDER",
    "X0Lambda",
    "X0Snr",
    "XT",
]

_LAZY_SUBMODULES = ("adaptive", "diffrax_bridge")  # diffrax_bridge imports diffrax: loaded on first use


def __getattr__(name: str):
    if name in _LAZY_SUBMODULES:
        import importlib

        return importlib.import_module(f"{__name__}.{name}")
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
