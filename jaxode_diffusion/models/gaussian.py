"""A network that learns the residual of the data's Gaussian (linear) denoiser.

EDM preconditioning (:func:`~jaxode_diffusion.models.preconditioning`) skips the network with
``c_skip(t) x``: the best linear guess of the target when the data are isotropic,
``x0 ~ N(0, sigma_data^2 I)``. :class:`GaussianResidual` replaces that guess by the exact
denoiser of the data's Gaussian fit ``N(mu, C)``, ``C = U diag(l) U^T``: for the target
``T = a x0 + b eps`` of the prediction kind and ``x = alpha x0 + sigma eps``::

    z      = U^T (x - alpha mu)
    T_lin  = a mu + U diag((a alpha l + b sigma) / (alpha^2 l + sigma^2)) z
    c_out  = |a sigma - b alpha| sqrt(mean_k l_k / (alpha^2 l_k + sigma^2))
    pred   = T_lin + c_out F(c_in x, c_noise)

``T_lin`` is ``E[T | x]`` under the Gaussian fit (the Wiener filter), and ``c_out`` is the
standard deviation of ``T - T_lin`` under it, so the network ``F`` (zero output at
initialisation) starts as the Gaussian model and learns only what is not Gaussian. With
``mu = 0``, ``l = sigma_data^2`` and ``U = I`` (the statistics before :func:`fit_gaussian`) it is
exactly EDM's preconditioning. The statistics are :class:`GaussianStat` variables: saved in
checkpoints, never trained (``TrainConfig(gaussian_skip=True)`` fits them to the training data
and freezes them). ``U`` has ``d^2`` entries, so this is meant for ``d`` up to a few thousand
(32x32x3 = 3072: 38 MB in float32).
"""

from __future__ import annotations

import json
import math

import jax
import jax.numpy as jnp
import numpy as np
from flax import nnx

from ..parameterizations import target_coefficients
from ..processes import ForwardProcess
from .adapter import DiffusionModel
from .embeddings import noise_level

__all__ = ["GaussianStat", "GaussianResidual", "fit_gaussian", "GAUSSIAN_MAX_DIM"]

# U is d x d: 8192^2 float32 = 268 MB, the largest we allow by default.
GAUSSIAN_MAX_DIM = 8192


class GaussianStat(nnx.Variable):
    """A fitted data statistic of :class:`GaussianResidual` (checkpointed, not trained)."""


def fit_gaussian(x, *, max_dim: int = GAUSSIAN_MAX_DIM):
    """Mean and eigendecomposition of the covariance of ``x`` (examples along axis 0).

    Args:
        x: array ``(N, *event_shape)``, ``N >= 2``.
        max_dim: refuse event sizes above this (the eigenvector matrix has ``d^2`` entries).

    Returns:
        ``(mean (d,), evals (d,), evecs (d, d))`` as float32 NumPy arrays, ``evals >= 0``
        ascending, ``cov = evecs @ diag(evals) @ evecs.T`` (computed in float64).

    Raises:
        ValueError: on fewer than 2 examples or ``d > max_dim``.

    Example:
        >>> import numpy as np
        >>> mu, l, U = fit_gaussian(np.random.default_rng(0).normal(size=(500, 3)) * [1, 2, 3])
        >>> np.round(np.sqrt(l), 0).tolist()
        [1.0, 2.0, 3.0]
    """
    x = np.asarray(x)
    if x.ndim < 2 or x.shape[0] < 2:
        raise ValueError(f"fit_gaussian: x must have shape (N >= 2, ...), got {x.shape}.")
    x = x.reshape(x.shape[0], -1).astype(np.float64)
    d = x.shape[1]
    if d > max_dim:
        raise ValueError(
            f"fit_gaussian: event size d={d} exceeds max_dim={max_dim} (the eigenvector matrix has "
            f"d^2 = {d * d} entries); raise max_dim if memory allows, or train without gaussian_skip."
        )
    mu = x.mean(0)
    evals, evecs = np.linalg.eigh(np.cov(x, rowvar=False).reshape(d, d))
    return mu.astype(np.float32), np.clip(evals, 0.0, None).astype(np.float32), evecs.astype(np.float32)


def _col(v):
    return jnp.reshape(v, (-1, 1))


class GaussianResidual(DiffusionModel):
    """``pred = (Gaussian-fit denoiser's prediction) + c_out F`` around any package network.

    Args:
        net: the residual network (an :class:`~jaxode_diffusion.models.MLP` or
            :class:`~jaxode_diffusion.models.UNet`); its ``prediction``, ``sigma_data`` and
            ``num_classes`` are used, its own ``precondition`` flag is not (this class always
            preconditions, see the module docstring).
        event_shape: the shape of one example (``(d,)`` or ``(H, W, C)``).
        mean, evals, evecs: the Gaussian fit (:func:`fit_gaussian`); default ``0``,
            ``sigma_data^2`` and ``I``, which make the model equal to EDM preconditioning.

    Example:
        >>> import jax.numpy as jnp, numpy as np
        >>> from flax import nnx
        >>> from jaxode_diffusion import VPLinear
        >>> from jaxode_diffusion.models import MLP
        >>> x = np.random.default_rng(0).normal(size=(256, 2)) * [0.5, 2.0]
        >>> model = GaussianResidual(MLP(2, width=16, depth=1, rngs=nnx.Rngs(0)), event_shape=(2,),
        ...                          **dict(zip(("mean", "evals", "evecs"), fit_gaussian(x))))
        >>> model(jnp.zeros((4, 2)), 0.5, VPLinear()).shape
        (4, 2)
    """

    def __init__(self, net: DiffusionModel, *, event_shape, mean=None, evals=None, evecs=None):
        if not isinstance(net, DiffusionModel):
            raise ValueError(f"GaussianResidual: net must be a package DiffusionModel (MLP, UNet), got {type(net).__name__}.")
        self.event_shape = tuple(int(s) for s in event_shape)
        d = math.prod(self.event_shape)
        self.inner = net
        self.prediction = net.prediction
        self.precondition = True
        self.sigma_data = float(net.sigma_data)
        self.num_classes = getattr(net, "num_classes", None)
        mean = jnp.zeros((d,), jnp.float32) if mean is None else jnp.asarray(mean, jnp.float32)
        evals = jnp.full((d,), self.sigma_data**2, jnp.float32) if evals is None else jnp.asarray(evals, jnp.float32)
        evecs = jnp.eye(d, dtype=jnp.float32) if evecs is None else jnp.asarray(evecs, jnp.float32)
        if mean.shape != (d,) or evals.shape != (d,) or evecs.shape != (d, d):
            raise ValueError(
                f"GaussianResidual: for event_shape={self.event_shape} (d={d}) mean, evals, evecs must have "
                f"shapes ({d},), ({d},), ({d}, {d}); got {mean.shape}, {evals.shape}, {evecs.shape}."
            )
        self.gauss_mean, self.gauss_evals, self.gauss_evecs = GaussianStat(mean), GaussianStat(evals), GaussianStat(evecs)
        self.config_json = json.dumps(
            dict(type="gaussian_residual", event_shape=list(self.event_shape), prediction=self.prediction, net=net.config)
        )

    def set_statistics(self, mean, evals, evecs) -> None:
        """Replace the Gaussian fit (for example with :func:`fit_gaussian` of the training data)."""
        for var, v in ((self.gauss_mean, mean), (self.gauss_evals, evals), (self.gauss_evecs, evecs)):
            v = jnp.asarray(v, jnp.float32)
            if v.shape != var[...].shape:
                raise ValueError(f"GaussianResidual.set_statistics: expected shape {var[...].shape}, got {v.shape}.")
            var[...] = v

    def __call__(self, x, t, process: ForwardProcess, cond=None):
        """The prediction of kind ``self.prediction`` at ``(x, t)``; ``t`` scalar or ``(B,)``."""
        t = jnp.broadcast_to(jnp.asarray(t, x.dtype), (x.shape[0],))
        extra = () if cond is None else (cond,)
        alpha, sigma = process.alpha(t), process.sigma(t)
        a, b = target_coefficients(self.prediction, process, t)
        # Frozen statistics: no gradient (and no gradient work) flows into them.
        mu, lam, U = (jax.lax.stop_gradient(v[...]).astype(x.dtype)
                      for v in (self.gauss_mean, self.gauss_evals, self.gauss_evecs))
        y = x.reshape(x.shape[0], -1)
        denom = _col(alpha) ** 2 * lam + _col(sigma) ** 2
        z = (y - _col(alpha) * mu) @ U
        lin = _col(a) * mu + ((_col(a) * _col(alpha) * lam + _col(b) * sigma[:, None]) / denom * z) @ U.T
        c_out = jnp.abs(a * sigma - b * alpha) * jnp.sqrt(jnp.mean(lam / denom, axis=1))
        c_in = jax.lax.rsqrt(alpha**2 * self.sigma_data**2 + sigma**2)
        shape = (-1,) + (1,) * (x.ndim - 1)
        f = self.inner.net(c_in.reshape(shape) * x, noise_level(process, t), *extra)
        return lin.reshape(x.shape) + c_out.reshape(shape) * f
