"""Regularity of a score: norms of its first and second derivatives, exact or matrix-free.

For a score ``s(x, t) = grad log p_t(x)`` on ``R^d`` (``d = prod(event_shape)``) this module
estimates, per batch element,

* ``||Ds||``: the Jacobian ``J = Ds`` (``d x d``, not necessarily symmetric for a learned score),
  in the spectral norm ``max_{|v|=1} |J v|`` or the Frobenius norm;
* ``||D^2 s||``: the second derivative, the tensor ``T[i, j, k] = d^2 s_i / dx_j dx_k``
  (``d x d x d``), acting as ``D^2 s[u, v]_i = sum_jk T[i, j, k] u_j v_k`` (the second
  directional derivative, a nested ``jvp``), in the operator norm
  ``max_{|u|=|v|=1} |D^2 s[u, v]|`` or the Frobenius norm. ``T`` is symmetric in ``(j, k)``
  for any twice differentiable score (mixed partials commute), learned or not; it is symmetric
  in all three indices only for an exact score (a gradient field).

and, with :func:`profile`, how these behave along the sampling path: on a grid of ``t`` along
probability-flow ODE trajectories and at forward-noised data, raw and weighted by ``sigma^2``
(first derivative) and ``sigma^3`` (second derivative), the scale-free forms in which they enter
the error bounds of high-order samplers.

Methods (``method=``):

* ``"exact"``: dense derivatives by forward-mode autodiff (``jax.jacfwd``; ``jacfwd(jacfwd)`` for
  the ``d^3`` tensor), then a symmetric eigensolve of ``J^T J`` (Jacobian) or a dense
  optimisation with many restarts (second derivative). Memory ``O(d^2)`` / ``O(d^3)`` per example.
* ``"matrix_free"``: only Jacobian-vector products (``jax.jvp``), vector-Jacobian products
  (``jax.vjp``) and their nesting; memory ``O(d)`` per probe on top of the score's own.
  Iterative estimates stop on a relative-change tolerance inside ``lax.while_loop`` (or after
  ``num_iters`` iterations); stochastic ones (Hutchinson) report their standard error.
* ``"auto"``: ``"exact"`` when ``d <= AUTO_EXACT_MAX_DIM`` (64: the dense ``d^3`` tensor of one
  example is then at most 2 MiB in float64 and the dense optimisation takes milliseconds),
  ``"matrix_free"`` otherwise.

Every estimate is computed per example (a single-example function, ``score_fn`` called on a
batch of one, ``vmap``-ed over the batch), with the *same* random probes/start vectors for every
example, so a value does not depend on the batch size or on the element's position in it.

Conditioning: every estimator takes ``cond=`` (a pytree; the score is then called as
``score_fn(x, t, cond)``, e.g. class labels, or a guided score from
:func:`~jaxode_diffusion.models.guidance.classifier_free_guidance`). Leaves with a leading batch axis
are one condition per example (each example's derivatives use its own condition); scalar leaves
are shared. :func:`bind_cond` makes the same two-argument score explicitly.

Randomness: ``key=None`` means ``jax.random.PRNGKey(0)``, so estimates are deterministic by
default; pass a key to draw other probes or start vectors (e.g. to gauge the spread of a
stochastic estimate).

Modules (one job each; every public name is re-exported here):

* :mod:`~jaxode_diffusion.analysis.regularity.kernels`: single-example kernels (power iterations,
  Hutchinson estimates, the dense references);
* :mod:`~jaxode_diffusion.analysis.regularity.estimators`: batch estimators (argument checks, jit caches):
  :func:`jacobian_norm`, :func:`second_derivative_norm`, :func:`directional_second_derivative`;
* :mod:`~jaxode_diffusion.analysis.regularity.conditioning`: ``cond=`` handling, :func:`bind_cond`;
* :mod:`~jaxode_diffusion.analysis.regularity.profiles`: :func:`profile` and its typed result
  :class:`RegularityProfile`; the figure is :func:`jaxode_diffusion.analysis.plotting.plot_profile`.

References:
    Power iteration: Golub & Van Loan, *Matrix Computations*, 4th ed., sec. 7.3 and 8.2.
    Hutchinson's trace estimator: Hutchinson (1990), Commun. Stat. Simul. Comput. 19(2).
    Higher-order power method (alternating least squares for the best rank-1 approximation):
    De Lathauwer, De Moor & Vandewalle (2000), SIAM J. Matrix Anal. Appl. 21(4).
"""

from __future__ import annotations

from jaxode_diffusion.analysis.plotting import plot_profile
from jaxode_diffusion.analysis.regularity.conditioning import BoundCond, bind_cond
from jaxode_diffusion.analysis.regularity.estimators import (
    AUTO_EXACT_MAX_DIM,
    directional_second_derivative,
    jacobian_norm,
    second_derivative_norm,
)
from jaxode_diffusion.analysis.regularity.profiles import (
    QUANTITIES,
    SIGMA_POWER,
    BatchStats,
    EstimateAccuracy,
    ProfileCurve,
    ProfileSettings,
    RegularityProfile,
    profile,
)

__all__ = [
    "AUTO_EXACT_MAX_DIM",
    "BatchStats",
    "bind_cond",
    "BoundCond",
    "directional_second_derivative",
    "EstimateAccuracy",
    "jacobian_norm",
    "plot_profile",
    "profile",
    "ProfileCurve",
    "ProfileSettings",
    "QUANTITIES",
    "RegularityProfile",
    "second_derivative_norm",
    "SIGMA_POWER",
]
