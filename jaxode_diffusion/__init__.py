"""jaxode_diffusion: fast, provably accurate high-order ODE samplers for diffusion models in JAX.

The top level holds what a first script needs; everything else lives in one subpackage per
layer, from the bottom up:

* :mod:`~jaxode_diffusion.processes`: forward processes (any ``alpha(t), sigma(t)``) and the
  conversions between what a network predicts;
* :mod:`~jaxode_diffusion.solvers`: Butcher tableaux, ODE forms and the solver classes;
* :mod:`~jaxode_diffusion.sampling`: :func:`solve` and :func:`sample`, named grids, the measured
  default grids, sampling across devices;
* :mod:`~jaxode_diffusion.models`: Flax NNX score networks, the adapter for any network
  convention, guidance, exact Gaussian-mixture scores;
* :mod:`~jaxode_diffusion.training`: data sets, the DSM loss, the trainer and checkpoints;
* :mod:`~jaxode_diffusion.analysis`: distances, exact densities, likelihood, empirical orders,
  regularity of a score, the theorem's terms;
* :mod:`~jaxode_diffusion.tuning`: how a grid and a solver are chosen for a model;
* :mod:`~jaxode_diffusion.study`: the end-to-end study and its report;
* :mod:`~jaxode_diffusion.cli`: the ``jaxode-diffusion`` command.

``import jaxode_diffusion`` loads JAX, equinox and the first three layers; the others (and flax,
optax, orbax, diffrax, matplotlib) load on first use.

Example:
    >>> import jax
    >>> import jaxode_diffusion as jd
    >>> process = jd.VPLinear()
    >>> x_init = process.prior_sample(jax.random.PRNGKey(0), (4, 2))
    >>> score_fn = lambda x, t: -x  # the score of N(0, I), stationary under VP
    >>> jd.sample(score_fn, process, x_init, solver="dpmpp_2m", num_steps=5).shape
    (4, 2)
"""

import importlib as _importlib
import os as _os
import sys as _sys

# XLA's CPU "concurrency optimized" scheduler deadlocks (no CPU use, no progress) on some
# 3-stage singlestep sampler programs at d = 64 with JAX 0.10; the default scheduler is fine.
# The flag only takes effect before JAX is first imported, so a program that imported JAX
# earlier keeps its own settings.
if "jax" not in _sys.modules and "concurrency_optimized_scheduler" not in _os.environ.get("XLA_FLAGS", ""):
    _os.environ["XLA_FLAGS"] = (
        _os.environ.get("XLA_FLAGS", "") + " --xla_cpu_enable_concurrency_optimized_scheduler=false"
    ).strip()

from jaxode_diffusion import _moved, processes, sampling, solvers
from jaxode_diffusion.processes import (
    EDM,
    VE,
    DiscreteVP,
    ForwardProcess,
    RectifiedFlow,
    SubVP,
    VPCosine,
    VPLinear,
    get_process,
)
from jaxode_diffusion.sampling import (
    RESULTS,
    NonFiniteSampleError,
    Solution,
    get_solver,
    make_times,
    register_solver,
    sample,
    solve,
    solver_names,
)
from jaxode_diffusion.solvers import AbstractSolver, ButcherTableau

#: Names loaded on first use (their subpackages import flax, optax or orbax): name -> module.
_LAZY = {
    "GaussianMixture": "jaxode_diffusion.models",
    "TrainConfig": "jaxode_diffusion.training",
    "as_score_fn": "jaxode_diffusion.models",
    "classifier_free_guidance": "jaxode_diffusion.models",
    "load_dataset": "jaxode_diffusion.training",
    "load_run": "jaxode_diffusion.training",
    "learn_solver": "jaxode_diffusion.tuning",
    "load_tuned": "jaxode_diffusion.tuning",
    "train": "jaxode_diffusion.training",
    "tune": "jaxode_diffusion.tuning",
}
_SUBPACKAGES = ("analysis", "cli", "models", "study", "training", "tuning", "utils")

__all__ = [
    "AbstractSolver",
    "analysis",
    "as_score_fn",
    "ButcherTableau",
    "classifier_free_guidance",
    "cli",
    "DiscreteVP",
    "EDM",
    "ForwardProcess",
    "GaussianMixture",
    "get_process",
    "get_solver",
    "learn_solver",
    "load_dataset",
    "load_run",
    "load_tuned",
    "make_times",
    "models",
    "NonFiniteSampleError",
    "processes",
    "RectifiedFlow",
    "register_solver",
    "RESULTS",
    "sample",
    "sampling",
    "Solution",
    "solve",
    "solver_names",
    "solvers",
    "study",
    "SubVP",
    "train",
    "TrainConfig",
    "training",
    "tune",
    "tuning",
    "utils",
    "VE",
    "VPCosine",
    "VPLinear",
]

if not any(isinstance(f, _moved.MovedModuleFinder) or f is _moved.MovedModuleFinder for f in _sys.meta_path):
    _sys.meta_path.insert(0, _moved.MovedModuleFinder)


def __getattr__(name: str):
    if name in _LAZY:
        value = getattr(_importlib.import_module(_LAZY[name]), name)
    elif name in _SUBPACKAGES:
        value = _importlib.import_module(f"{__name__}.{name}")
    elif name in _moved.NAMES:
        module, attr = _moved.NAMES[name].split(":")
        _moved.warn_moved(f"jaxode_diffusion.{name}", f"{module}.{attr}")
        return getattr(_importlib.import_module(module), attr)
    elif name in _moved.MODULE_ATTRS:
        _moved.warn_moved(f"jaxode_diffusion.{name}", _moved.MODULE_ATTRS[name])
        return _importlib.import_module(_moved.MODULE_ATTRS[name])
    else:
        raise AttributeError(f"module 'jaxode_diffusion' has no attribute {name!r}")
    globals()[name] = value
    return value


def __dir__():
    return sorted(set(globals()) | set(__all__))


try:
    from importlib.metadata import version as _version

    __version__ = _version("jaxode_diffusion")
except Exception:  # pragma: no cover - running from a source tree that is not installed
    __version__ = "0+unknown"
