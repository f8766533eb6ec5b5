"""jaxode_diffusion: fast, provably accurate high-order ODE samplers for diffusion models in JAX.

Public API (see the README):

* processes: :class:`ForwardProcess` (any ``alpha(t), sigma(t)``) and the built-ins;
* tableaux: :class:`ButcherTableau` with computed order, ``tableaux.get(name)``;
* forms and grids: ``FORM_NAMES``, ``GRID_NAMES``, :func:`make_grid`;
* sampling: :func:`sample` (one jit), ``make_plan`` / ``sampling.init`` / ``sampling.step``;
* targets: :class:`GaussianMixture` with exact scores;
* convergence: reference solves, adaptive sampling, empirical orders.
"""

from . import (
    convergence,
    data,
    forms,
    grids,
    metrics,
    models,
    parameterizations,
    regularity,
    sampling,
    tableaux,
    theory,
    training,
)
from .convergence import (
    AdaptiveResult,
    ConvergenceResult,
    adaptive_sample,
    convergence_study,
    diffrax_fixed_step,
    fit_order,
    reference_solve,
)
from .data import Dataset, load_dataset, load_digits, load_npy, make_toy
from .forms import FORM_NAMES, get_form
from .grid_optimization import OptimizedGrid, evaluate_grid, load_grid, optimize_grid
from .grids import GRID_NAMES, make_grid
from .guidance import ClassifierFreeGuidance, DynamicThresholding, classifier_free_guidance, dynamic_thresholding
from .metrics import (
    TVEstimate,
    energy_distance,
    frechet_distance,
    histogram_tv,
    mmd,
    sampler_log_density,
    sampler_tv,
    sliced_wasserstein,
    tv_distance,
)
from .models import MLP, DiffusionModel, NetworkScore, ScoreModel, UNet, as_score_fn, build_model, network_from_score
from .parameterizations import convert, from_score, to_score
from .processes import (
    EDM,
    VE,
    CustomProcess,
    ForwardProcess,
    RectifiedFlow,
    SubVP,
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
    NonFiniteSampleError,
    Solution,
    get_solver,
    make_plan,
    make_times,
    register_solver,
    sample,
    solver_names,
)
from .score_error import ScoreError, score_error
from .solvers.base import AbstractSolver, StepInfo
from .solvers.diffrax_bridge import (
    diffrax_solver,
    from_diffrax_solver,
    from_diffrax_tableau,
    to_diffrax_tableau,
)

# Importing the exponential family registers its solvers ("ddim", "dpmpp_2m", "unipc_bh2_3", ...).
from .solvers.exponential import EDMHeun, ExponentialSinglestep, dpm_solver_adaptive
from .solvers.multistep import ExponentialMultistep, MultistepScheme
from .solvers.runge_kutta import RungeKutta
from .tableaux import ButcherTableau
from .targets import GaussianMixture, MixtureScore
from .theory import BoundTerms, PerturbedScore, bound_terms, fit_bound_constants, make_perturbed_score
from .training import TrainConfig, TrainResult, dsm_loss, load_run, train

__version__ = "0.1.0"
