"""Compatibility module: the metrics now live in two focused modules.

* :mod:`jaxode_diffusion.density`: the exact output density of a fixed-step sampler and the
  total variation computed from it (:func:`sampler_log_density`, :func:`tv_distance`,
  :func:`sampler_tv`, :class:`TVEstimate`);
* :mod:`jaxode_diffusion.distances`: distances between sample sets (:func:`sliced_wasserstein`,
  :func:`mmd`, :func:`energy_distance`, :func:`frechet_distance`,
  :func:`gaussian_frechet_distance`, :func:`histogram_tv`) and the end-point :func:`rmse`.

Order fitting is :func:`jaxode_diffusion.convergence.fit_order` (``empirical_order`` here is a
deprecated alias). Every name below is re-exported unchanged, so ``from jaxode_diffusion.metrics
import mmd`` keeps working.
"""

from __future__ import annotations

import warnings

from .convergence import fit_order
from .density import TVEstimate, sampler_log_density, sampler_tv, tv_distance
from .distances import (
    energy_distance,
    frechet_distance,
    gaussian_frechet_distance,
    histogram_tv,
    mmd,
    rmse,
    sliced_wasserstein,
)

__all__ = [
    "sampler_log_density",
    "TVEstimate",
    "tv_distance",
    "sampler_tv",
    "histogram_tv",
    "sliced_wasserstein",
    "mmd",
    "energy_distance",
    "frechet_distance",
    "gaussian_frechet_distance",
    "rmse",
    "empirical_order",
]


def empirical_order(h, err) -> float:
    """Deprecated alias of :func:`jaxode_diffusion.convergence.fit_order` (warns).

    Example:
        >>> import warnings
        >>> with warnings.catch_warnings():
        ...     warnings.simplefilter("ignore", DeprecationWarning)
        ...     round(empirical_order([0.1, 0.05, 0.025], [1e-4, 6.25e-6, 3.90625e-7]), 6)
        4.0
    """
    warnings.warn("metrics.empirical_order is deprecated: use jaxode_diffusion.convergence.fit_order "
                  "(the same least-squares slope of log err against log h).",
                  DeprecationWarning, stacklevel=2)
    return fit_order(h, err)
