"""Measuring samplers and scores: distances, exact densities, orders, regularity, the bound.

Files:

* ``distances.py``: distances between sample sets (sliced Wasserstein, MMD, energy, Frechet,
  histogram TV) and the end-point :func:`rmse`;
* ``density.py``: the exact output density of a fixed-step sampler (change of variables through
  it) and the total variation from it (:func:`sampler_tv`);
* ``likelihood.py``: log-likelihood and bits per dimension through the probability-flow ODE;
* ``convergence.py``: empirical orders of convergence against a tight reference;
* ``diffrax_drivers.py``: diffrax reference solves, adaptive solves, fixed-step cross-checks;
* ``score_errors.py``: the time-averaged L2 score error ``eps_score``;
* ``theory.py``: the theorem's two terms, fitted constants and score perturbations of given size;
* ``regularity/``: first and second derivatives of a score, exact or matrix-free, and their
  profiles along the sampling path;
* ``plotting.py``: the figures of profiles, samples and TV curves (imports matplotlib when called).
"""


from jaxode_diffusion.analysis.distances import (
    energy_distance,
    frechet_distance,
    gaussian_frechet_distance,
    histogram_tv,
    mmd,
    rmse,
    sliced_wasserstein,
)
from jaxode_diffusion.analysis.density import (
    flow_and_jacobian,
    sampler_log_density,
    sampler_tv,
    tv_distance,
    TVEstimate,
)
from jaxode_diffusion.analysis.likelihood import (
    bits_per_dim,
    gaussian_prior_log_prob,
    LikelihoodResult,
    log_likelihood,
    uniform_dequantize,
)
from jaxode_diffusion.analysis.convergence import (
    convergence_study,
    ConvergenceResult,
    estimate_order,
    extend_until_asymptotic,
    fit_order,
    OrderEstimate,
)
from jaxode_diffusion.analysis.diffrax_drivers import (
    adaptive_sample,
    diffrax_fixed_step,
    reference_solve,
)
from jaxode_diffusion.analysis.score_errors import (
    score_error,
    ScoreError,
)
from jaxode_diffusion.analysis.theory import (
    bound_terms,
    BoundFit,
    BoundTerms,
    fit_bound_constants,
    make_perturbed_score,
    measure_score_error,
    PerturbedScore,
)
from jaxode_diffusion.analysis import plotting, regularity
from jaxode_diffusion.analysis.regularity import profile as regularity_profile

__all__ = [
    "adaptive_sample",
    "bits_per_dim",
    "bound_terms",
    "BoundFit",
    "BoundTerms",
    "convergence_study",
    "ConvergenceResult",
    "diffrax_fixed_step",
    "energy_distance",
    "estimate_order",
    "extend_until_asymptotic",
    "fit_bound_constants",
    "fit_order",
    "flow_and_jacobian",
    "frechet_distance",
    "gaussian_frechet_distance",
    "gaussian_prior_log_prob",
    "histogram_tv",
    "LikelihoodResult",
    "log_likelihood",
    "make_perturbed_score",
    "measure_score_error",
    "mmd",
    "OrderEstimate",
    "PerturbedScore",
    "plotting",
    "reference_solve",
    "regularity",
    "regularity_profile",
    "rmse",
    "sampler_log_density",
    "sampler_tv",
    "score_error",
    "ScoreError",
    "sliced_wasserstein",
    "tv_distance",
    "TVEstimate",
    "uniform_dequantize",
]
