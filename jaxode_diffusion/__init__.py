"""jaxode_diffusion: fast, provably accurate high-order ODE samplers for diffusion models in JAX.

Public API (see the README):

* processes: :class:`ForwardProcess` (any ``alpha(t), sigma(t)``) and the built-ins;
* tableaux: :class:`ButcherTableau` with computed order, ``tableaux.get(name)``;
* forms and grids: ``FORM_NAMES``, ``GRID_NAMES``, :func:`make_grid`;
* sampling: :func:`solve` (the jit-able core on an explicit grid, returning a :class:`Solution`
  with result codes), :func:`sample` (names -> grid -> solve), ``make_plan`` / ``sampling.init`` /
  ``sampling.step`` for manual stepping;
* targets: :class:`GaussianMixture` with exact scores;
* convergence: reference solves, adaptive sampling, empirical orders.
"""

import os as _os
import sys as _sys

# XLA's CPU "concurrency optimized" scheduler deadlocks (no CPU use, no progress) on some
# 3-stage singlestep sampler programs at d = 64 with JAX 0.10 (seen in `tune` and in
# benchmarks/accuracy_vs_nfe.py); the default scheduler is fine. The flag only takes effect
# before JAX is first imported, so a program that imported JAX earlier keeps its own settings.
if "jax" not in _sys.modules and "concurrency_optimized_scheduler" not in _os.environ.get("XLA_FLAGS", ""):
    _os.environ["XLA_FLAGS"] = (
        _os.environ.get("XLA_FLAGS", "") + " --xla_cpu_enable_concurrency_optimized_scheduler=false"
    ).strip()

from . import (
    convergence,
    data,
    density,
    distances,
    forms,
    grids,
    metrics,
    models,
    parameterizations,
    plotting,
    regularity,
    sampling,
    tableaux,
    theory,
    training,
)
from .autogrid import GridChoice, choose_grid
from .convergence import (
    ConvergenceResult,
    OrderEstimate,
    convergence_study,
    estimate_order,
    extend_until_asymptotic,
    fit_order,
)
from .data import Dataset, load_dataset, load_digits, load_npy, load_patches, make_toy
from .defaults import clock_of, default_grid_for
from .density import TVEstimate, sampler_log_density, sampler_tv, tv_distance
from .diffrax_drivers import adaptive_sample, diffrax_fixed_step, reference_solve
from .distances import energy_distance, frechet_distance, histogram_tv, mmd, rmse, sliced_wasserstein
from .distributed import (
    gather,
    replicate,
    sample_multiprocess,
    sample_sharded,
    shard_batch,
    shard_local_batch,
)
from .error_grid import ErrorGrid, error_grid
from .forms import FORM_NAMES, get_form
from .grid_optimization import NonFiniteGridLossError, OptimizedGrid, evaluate_grid, load_grid, optimize_grid
from .grids import GRID_NAMES, grid_is_valid, make_grid
from .guidance import (
    ClassifierFreeGuidance,
    DynamicThresholding,
    classifier_free_guidance,
    dynamic_thresholding,
)
from .likelihood import LikelihoodResult, bits_per_dim, log_likelihood, uniform_dequantize
from .models import (
    MLP,
    DiffusionModel,
    GaussianResidual,
    NetworkScore,
    ScoreModel,
    UNet,
    as_score_fn,
    build_model,
    fit_gaussian,
    network_from_score,
)
from .parameterizations import convert, from_score, to_score, tweedie_x0
from .processes import (
    EDM,
    VE,
    CustomProcess,
    DiscreteVP,
    ForwardProcess,
    RectifiedFlow,
    SubVP,
    TimeRange,
    VPCosine,
    VPLinear,
    get_process,
)
from .regularity import (
    RegularityProfile,
    bind_cond,
    directional_second_derivative,
    jacobian_norm,
    plot_profile,
    second_derivative_norm,
)
from .regularity import profile as regularity_profile
from .sampling import (
    RESULTS,
    Conditioned,
    NonFiniteSampleError,
    Solution,
    get_solver,
    make_plan,
    make_times,
    register_solver,
    sample,
    solve,
    solver_names,
)
from .score_error import ScoreError, score_error
from .solvers.adaptive import AdaptiveResult, dpm_solver_adaptive
from .solvers.base import AbstractSolver, StepInfo
from .solvers.diffrax_bridge import (
    diffrax_solver,
    from_diffrax_solver,
    from_diffrax_tableau,
    to_diffrax_tableau,
)
from .solvers.exponential import EDMHeun, ExponentialSinglestep
from .solvers.multistep import ExponentialMultistep, MultistepScheme
from .solvers.runge_kutta import RungeKutta
from .tableaux import ButcherTableau
from .targets import GaussianMixture, MixtureScore
from .theory import BoundTerms, PerturbedScore, bound_terms, fit_bound_constants, make_perturbed_score
from .training import (
    CheckpointCorruptError,
    RunLockedError,
    TrainConfig,
    TrainingDivergedError,
    TrainResult,
    dsm_loss,
    load_run,
    train,
)
from .tune import TunedSampler, load_tuned, tune

__all__ = [
    "AbstractSolver",
    "AdaptiveResult",
    "BoundTerms",
    "ButcherTableau",
    "CheckpointCorruptError",
    "ClassifierFreeGuidance",
    "Conditioned",
    "ConvergenceResult",
    "CustomProcess",
    "Dataset",
    "DiffusionModel",
    "DiscreteVP",
    "DynamicThresholding",
    "EDM",
    "EDMHeun",
    "ExponentialMultistep",
    "ExponentialSinglestep",
    "FORM_NAMES",
    "ForwardProcess",
    "GaussianMixture",
    "GRID_NAMES",
    "LikelihoodResult",
    "MixtureScore",
    "MLP",
    "MultistepScheme",
    "NetworkScore",
    "NonFiniteGridLossError",
    "NonFiniteSampleError",
    "OptimizedGrid",
    "PerturbedScore",
    "RectifiedFlow",
    "RegularityProfile",
    "RESULTS",
    "RungeKutta",
    "RunLockedError",
    "ScoreError",
    "ScoreModel",
    "Solution",
    "StepInfo",
    "SubVP",
    "TimeRange",
    "TrainConfig",
    "TrainingDivergedError",
    "TrainResult",
    "TunedSampler",
    "TVEstimate",
    "UNet",
    "GaussianResidual",
    "fit_gaussian",
    "VE",
    "VPCosine",
    "VPLinear",
    "adaptive_sample",
    "as_score_fn",
    "bind_cond",
    "bits_per_dim",
    "bound_terms",
    "build_model",
    "classifier_free_guidance",
    "convergence",
    "convergence_study",
    "estimate_order",
    "extend_until_asymptotic",
    "OrderEstimate",
    "convert",
    "data",
    "default_grid_for",
    "clock_of",
    "choose_grid",
    "GridChoice",
    "error_grid",
    "ErrorGrid",
    "density",
    "diffrax_fixed_step",
    "diffrax_solver",
    "directional_second_derivative",
    "distances",
    "dpm_solver_adaptive",
    "dsm_loss",
    "dynamic_thresholding",
    "energy_distance",
    "evaluate_grid",
    "fit_bound_constants",
    "fit_order",
    "forms",
    "frechet_distance",
    "from_diffrax_solver",
    "from_diffrax_tableau",
    "from_score",
    "gather",
    "get_form",
    "get_process",
    "get_solver",
    "grid_is_valid",
    "grids",
    "histogram_tv",
    "jacobian_norm",
    "load_dataset",
    "load_digits",
    "load_grid",
    "load_npy",
    "load_patches",
    "load_run",
    "load_tuned",
    "log_likelihood",
    "make_grid",
    "make_perturbed_score",
    "make_plan",
    "make_times",
    "make_toy",
    "metrics",
    "mmd",
    "models",
    "network_from_score",
    "optimize_grid",
    "parameterizations",
    "plot_profile",
    "plotting",
    "reference_solve",
    "register_solver",
    "regularity",
    "regularity_profile",
    "replicate",
    "rmse",
    "sample",
    "sample_multiprocess",
    "sample_sharded",
    "sampler_log_density",
    "sampler_tv",
    "sampling",
    "score_error",
    "second_derivative_norm",
    "shard_batch",
    "shard_local_batch",
    "sliced_wasserstein",
    "solve",
    "solver_names",
    "tableaux",
    "theory",
    "to_diffrax_tableau",
    "to_score",
    "train",
    "training",
    "tune",
    "tv_distance",
    "tweedie_x0",
    "uniform_dequantize",
    "__version__",
]

try:
    from importlib.metadata import version as _version

    __version__ = _version("jaxode_diffusion")
except Exception:  # pragma: no cover - running from a source tree that is not installed
    __version__ = "0+unknown"
