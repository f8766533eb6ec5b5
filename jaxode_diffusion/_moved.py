"""Where the names and modules of releases up to 0.1 moved (see CHANGELOG.md).

The package's ``__getattr__`` serves the old top-level names and a finder on ``sys.meta_path`` serves
the old module paths (``import jaxode_diffusion.grids``), each with a :class:`MovedWarning`, for one
release.
"""

from __future__ import annotations

#: Old top-level name -> ``"module:attribute"`` of its home now.
NAMES = {
    "adaptive_sample": "jaxode_diffusion.analysis.diffrax_drivers:adaptive_sample",
    "AdaptiveResult": "jaxode_diffusion.solvers.adaptive:AdaptiveResult",
    "bind_cond": "jaxode_diffusion.analysis.regularity:bind_cond",
    "bits_per_dim": "jaxode_diffusion.analysis.likelihood:bits_per_dim",
    "bound_terms": "jaxode_diffusion.analysis.theory:bound_terms",
    "BoundTerms": "jaxode_diffusion.analysis.theory:BoundTerms",
    "build_model": "jaxode_diffusion.models:build_model",
    "CheckpointCorruptError": "jaxode_diffusion.training:CheckpointCorruptError",
    "choose_grid": "jaxode_diffusion.tuning.autogrid:choose_grid",
    "ClassifierFreeGuidance": "jaxode_diffusion.models.guidance:ClassifierFreeGuidance",
    "clock_of": "jaxode_diffusion.sampling.defaults:clock_of",
    "Conditioned": "jaxode_diffusion.sampling.core:Conditioned",
    "convergence_study": "jaxode_diffusion.analysis.convergence:convergence_study",
    "ConvergenceResult": "jaxode_diffusion.analysis.convergence:ConvergenceResult",
    "convert": "jaxode_diffusion.processes.parameterizations:convert",
    "CustomProcess": "jaxode_diffusion.processes:CustomProcess",
    "Dataset": "jaxode_diffusion.training.data:Dataset",
    "default_grid_for": "jaxode_diffusion.sampling.defaults:default_grid_for",
    "diffrax_fixed_step": "jaxode_diffusion.analysis.diffrax_drivers:diffrax_fixed_step",
    "diffrax_solver": "jaxode_diffusion.solvers.diffrax_bridge:diffrax_solver",
    "DiffusionModel": "jaxode_diffusion.models:DiffusionModel",
    "directional_second_derivative": "jaxode_diffusion.analysis.regularity:directional_second_derivative",
    "dpm_solver_adaptive": "jaxode_diffusion.solvers.adaptive:dpm_solver_adaptive",
    "dsm_loss": "jaxode_diffusion.training:dsm_loss",
    "dynamic_thresholding": "jaxode_diffusion.models.guidance:dynamic_thresholding",
    "DynamicThresholding": "jaxode_diffusion.models.guidance:DynamicThresholding",
    "EDMHeun": "jaxode_diffusion.solvers.exponential:EDMHeun",
    "energy_distance": "jaxode_diffusion.analysis.distances:energy_distance",
    "error_grid": "jaxode_diffusion.tuning.error_grids:error_grid",
    "ErrorGrid": "jaxode_diffusion.tuning.error_grids:ErrorGrid",
    "estimate_order": "jaxode_diffusion.analysis.convergence:estimate_order",
    "evaluate_grid": "jaxode_diffusion.tuning.grid_optimization:evaluate_grid",
    "ExponentialMultistep": "jaxode_diffusion.solvers.multistep:ExponentialMultistep",
    "ExponentialSinglestep": "jaxode_diffusion.solvers.exponential:ExponentialSinglestep",
    "extend_until_asymptotic": "jaxode_diffusion.analysis.convergence:extend_until_asymptotic",
    "fit_bound_constants": "jaxode_diffusion.analysis.theory:fit_bound_constants",
    "fit_gaussian": "jaxode_diffusion.models:fit_gaussian",
    "fit_order": "jaxode_diffusion.analysis.convergence:fit_order",
    "FORM_NAMES": "jaxode_diffusion.solvers.forms:FORM_NAMES",
    "frechet_distance": "jaxode_diffusion.analysis.distances:frechet_distance",
    "from_diffrax_solver": "jaxode_diffusion.solvers.diffrax_bridge:from_diffrax_solver",
    "from_diffrax_tableau": "jaxode_diffusion.solvers.diffrax_bridge:from_diffrax_tableau",
    "from_score": "jaxode_diffusion.processes.parameterizations:from_score",
    "gather": "jaxode_diffusion.sampling.distributed:gather",
    "GaussianResidual": "jaxode_diffusion.models:GaussianResidual",
    "get_form": "jaxode_diffusion.solvers.forms:get_form",
    "grid_is_valid": "jaxode_diffusion.sampling.grids:grid_is_valid",
    "GRID_NAMES": "jaxode_diffusion.sampling.grids:GRID_NAMES",
    "GridChoice": "jaxode_diffusion.tuning.autogrid:GridChoice",
    "histogram_tv": "jaxode_diffusion.analysis.distances:histogram_tv",
    "jacobian_norm": "jaxode_diffusion.analysis.regularity:jacobian_norm",
    "LikelihoodResult": "jaxode_diffusion.analysis.likelihood:LikelihoodResult",
    "load_digits": "jaxode_diffusion.training.data:load_digits",
    "load_grid": "jaxode_diffusion.tuning.grid_optimization:load_grid",
    "load_npy": "jaxode_diffusion.training.data:load_npy",
    "load_patches": "jaxode_diffusion.training.data:load_patches",
    "log_likelihood": "jaxode_diffusion.analysis.likelihood:log_likelihood",
    "make_grid": "jaxode_diffusion.sampling.grids:make_grid",
    "make_perturbed_score": "jaxode_diffusion.analysis.theory:make_perturbed_score",
    "make_plan": "jaxode_diffusion.sampling.core:make_plan",
    "make_toy": "jaxode_diffusion.training.data:make_toy",
    "MixtureScore": "jaxode_diffusion.models.mixture:MixtureScore",
    "MLP": "jaxode_diffusion.models:MLP",
    "mmd": "jaxode_diffusion.analysis.distances:mmd",
    "MultistepScheme": "jaxode_diffusion.solvers.multistep:MultistepScheme",
    "network_from_score": "jaxode_diffusion.models:network_from_score",
    "NetworkScore": "jaxode_diffusion.models:NetworkScore",
    "NonFiniteGridLossError": "jaxode_diffusion.tuning.grid_optimization:NonFiniteGridLossError",
    "optimize_grid": "jaxode_diffusion.tuning.grid_optimization:optimize_grid",
    "OptimizedGrid": "jaxode_diffusion.tuning.grid_optimization:OptimizedGrid",
    "OrderEstimate": "jaxode_diffusion.analysis.convergence:OrderEstimate",
    "PerturbedScore": "jaxode_diffusion.analysis.theory:PerturbedScore",
    "plot_profile": "jaxode_diffusion.analysis.regularity:plot_profile",
    "reference_solve": "jaxode_diffusion.analysis.diffrax_drivers:reference_solve",
    "regularity_profile": "jaxode_diffusion.analysis.regularity:profile",
    "RegularityProfile": "jaxode_diffusion.analysis.regularity:RegularityProfile",
    "replicate": "jaxode_diffusion.sampling.distributed:replicate",
    "rmse": "jaxode_diffusion.analysis.distances:rmse",
    "RungeKutta": "jaxode_diffusion.solvers.runge_kutta:RungeKutta",
    "RunLockedError": "jaxode_diffusion.training:RunLockedError",
    "sample_multiprocess": "jaxode_diffusion.sampling.distributed:sample_multiprocess",
    "sample_sharded": "jaxode_diffusion.sampling.distributed:sample_sharded",
    "sampler_log_density": "jaxode_diffusion.analysis.density:sampler_log_density",
    "sampler_tv": "jaxode_diffusion.analysis.density:sampler_tv",
    "score_error": "jaxode_diffusion.analysis.score_errors:score_error",
    "ScoreError": "jaxode_diffusion.analysis.score_errors:ScoreError",
    "ScoreModel": "jaxode_diffusion.models:ScoreModel",
    "second_derivative_norm": "jaxode_diffusion.analysis.regularity:second_derivative_norm",
    "shard_batch": "jaxode_diffusion.sampling.distributed:shard_batch",
    "shard_local_batch": "jaxode_diffusion.sampling.distributed:shard_local_batch",
    "sliced_wasserstein": "jaxode_diffusion.analysis.distances:sliced_wasserstein",
    "StepInfo": "jaxode_diffusion.solvers.base:StepInfo",
    "TimeRange": "jaxode_diffusion.processes:TimeRange",
    "to_diffrax_tableau": "jaxode_diffusion.solvers.diffrax_bridge:to_diffrax_tableau",
    "to_score": "jaxode_diffusion.processes.parameterizations:to_score",
    "TrainingDivergedError": "jaxode_diffusion.training:TrainingDivergedError",
    "TrainResult": "jaxode_diffusion.training:TrainResult",
    "TunedSampler": "jaxode_diffusion.tuning.tuner:TunedSampler",
    "tv_distance": "jaxode_diffusion.analysis.density:tv_distance",
    "TVEstimate": "jaxode_diffusion.analysis.density:TVEstimate",
    "tweedie_x0": "jaxode_diffusion.processes.parameterizations:tweedie_x0",
    "UNet": "jaxode_diffusion.models:UNet",
    "uniform_dequantize": "jaxode_diffusion.analysis.likelihood:uniform_dequantize",
}

#: Old top-level module attribute (``jaxode_diffusion.grids``) -> module now.
MODULE_ATTRS = {
    "autogrid": "jaxode_diffusion.tuning.autogrid",
    "cli_likelihood": "jaxode_diffusion.cli.likelihood",
    "cli_models": "jaxode_diffusion.cli.models",
    "cli_regularity": "jaxode_diffusion.cli.regularity",
    "convergence": "jaxode_diffusion.analysis.convergence",
    "data": "jaxode_diffusion.training.data",
    "defaults": "jaxode_diffusion.sampling.defaults",
    "density": "jaxode_diffusion.analysis.density",
    "diffrax_drivers": "jaxode_diffusion.analysis.diffrax_drivers",
    "distances": "jaxode_diffusion.analysis.distances",
    "distributed": "jaxode_diffusion.sampling.distributed",
    "forms": "jaxode_diffusion.solvers.forms",
    "grid_optimization": "jaxode_diffusion.tuning.grid_optimization",
    "grids": "jaxode_diffusion.sampling.grids",
    "guidance": "jaxode_diffusion.models.guidance",
    "likelihood": "jaxode_diffusion.analysis.likelihood",
    "outputs": "jaxode_diffusion.utils.outputs",
    "parameterizations": "jaxode_diffusion.processes.parameterizations",
    "plotting": "jaxode_diffusion.analysis.plotting",
    "regularity": "jaxode_diffusion.analysis.regularity",
    "report": "jaxode_diffusion.study.report",
    "tableaux": "jaxode_diffusion.solvers.tableaux",
    "targets": "jaxode_diffusion.models.mixture",
    "theory": "jaxode_diffusion.analysis.theory",
}

#: Old module path -> module now (``None``: removed, the message says what replaces it).
MODULES = {
    "jaxode_diffusion.autogrid": "jaxode_diffusion.tuning.autogrid",
    "jaxode_diffusion.cli_likelihood": "jaxode_diffusion.cli.likelihood",
    "jaxode_diffusion.cli_models": "jaxode_diffusion.cli.models",
    "jaxode_diffusion.cli_regularity": "jaxode_diffusion.cli.regularity",
    "jaxode_diffusion.convergence": "jaxode_diffusion.analysis.convergence",
    "jaxode_diffusion.data": "jaxode_diffusion.training.data",
    "jaxode_diffusion.defaults": "jaxode_diffusion.sampling.defaults",
    "jaxode_diffusion.density": "jaxode_diffusion.analysis.density",
    "jaxode_diffusion.diffrax_drivers": "jaxode_diffusion.analysis.diffrax_drivers",
    "jaxode_diffusion.distances": "jaxode_diffusion.analysis.distances",
    "jaxode_diffusion.distributed": "jaxode_diffusion.sampling.distributed",
    "jaxode_diffusion.error_grid": "jaxode_diffusion.tuning.error_grids",
    "jaxode_diffusion.forms": "jaxode_diffusion.solvers.forms",
    "jaxode_diffusion.grid_optimization": "jaxode_diffusion.tuning.grid_optimization",
    "jaxode_diffusion.grids": "jaxode_diffusion.sampling.grids",
    "jaxode_diffusion.guidance": "jaxode_diffusion.models.guidance",
    "jaxode_diffusion.likelihood": "jaxode_diffusion.analysis.likelihood",
    "jaxode_diffusion.metrics": None,
    "jaxode_diffusion.outputs": "jaxode_diffusion.utils.outputs",
    "jaxode_diffusion.parameterizations": "jaxode_diffusion.processes.parameterizations",
    "jaxode_diffusion.plotting": "jaxode_diffusion.analysis.plotting",
    "jaxode_diffusion.regularity": "jaxode_diffusion.analysis.regularity",
    "jaxode_diffusion.regularity.conditioning": "jaxode_diffusion.analysis.regularity.conditioning",
    "jaxode_diffusion.regularity.estimators": "jaxode_diffusion.analysis.regularity.estimators",
    "jaxode_diffusion.regularity.kernels": "jaxode_diffusion.analysis.regularity.kernels",
    "jaxode_diffusion.regularity.profiles": "jaxode_diffusion.analysis.regularity.profiles",
    "jaxode_diffusion.report": "jaxode_diffusion.study.report",
    "jaxode_diffusion.score_error": "jaxode_diffusion.analysis.score_errors",
    "jaxode_diffusion.tableaux": "jaxode_diffusion.solvers.tableaux",
    "jaxode_diffusion.targets": "jaxode_diffusion.models.mixture",
    "jaxode_diffusion.theory": "jaxode_diffusion.analysis.theory",
    "jaxode_diffusion.tune": "jaxode_diffusion.tuning.tuner",
}


class MovedWarning(DeprecationWarning):
    """A name or module was used at the place it had before the package was layered."""


def warn_moved(old: str, new: str, *, stacklevel: int = 3) -> None:
    """Warn that ``old`` is now ``new`` (a :class:`MovedWarning`)."""
    import warnings

    warnings.warn(f"{old} moved to {new}; the old path works until the next release.", MovedWarning,
                  stacklevel=stacklevel)


class MovedModuleFinder:
    """A ``sys.meta_path`` finder that serves each old module path as its new module, with a warning."""

    @classmethod
    def find_spec(cls, fullname, path=None, target=None):
        if fullname not in MODULES:
            return None
        import importlib.util

        return importlib.util.spec_from_loader(fullname, cls())

    def create_module(self, spec):
        import importlib

        new = MODULES[spec.name]
        if new is None:
            raise ImportError(f"{spec.name} was removed: its distances are in jaxode_diffusion.analysis.distances, "
                              "its densities in jaxode_diffusion.analysis.density and fit_order in "
                              "jaxode_diffusion.analysis.convergence.")
        warn_moved(spec.name, new, stacklevel=4)
        return importlib.import_module(new)

    def exec_module(self, module):
        pass
