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
and freezes them).

What the network sees (``net_input``): ``"noisy"`` (default) is EDM's ``c_in x``. ``"wiener"``
is the Gaussian fit's posterior mean, centred and scaled, ``U diag(alpha l / (alpha^2 l +
sigma^2)) z / sigma_data`` (``= (E_G[x0 | x] - mu) / sigma_data``): the same information (an
invertible linear map of ``x`` for ``l > 0``) with the noise-dominated directions shrunk. At high
noise the signal in ``x`` is a few large-variance directions (for natural patches the mean
colour) buried under unit noise in every pixel; the Wiener estimate hands them to the network at
their own scale, so it can learn their non-Gaussian distribution quickly (results:
``benchmarks/results/patches32.md``). ``U`` has ``d^2`` entries, so this is meant for ``d`` up to
a few thousand (32x32x3 = 3072: 38 MB in float32).
"""

from __future__ import annotations

import json
import math

import jax
import jax.numpy as jnp
import numpy as np
from flax import nnx

from jaxode_diffusion.processes.parameterizations import target_coefficients
from jaxode_diffusion.processes import ForwardProcess
from jaxode_diffusion.models.adapter import DiffusionModel
from jaxode_diffusion.models.embeddings import noise_level

__all__ = ["GaussianStat", "GaussianResidual", "fit_gaussian", "GAUSSIAN_MAX_DIM", "GAUSSIAN_NET_INPUTS"]

# U is d x d: 8192^2 float32 = 268 MB, the largest we allow by default.
GAUSSIAN_MAX_DIM = 8192
# What GaussianResidual feeds its network (see the module docstring).
GAUSSIAN_NET_INPUTS = ("noisy", "wiener")


class GaussianStat(nnx.Variable):
    """A fitted data statistic of :class:`GaussianResidual` (checkpointed, not trained).

    Example:
        >>> import jax.numpy as jnp
        >>> GaussianStat(jnp.zeros(3))[...].shape
        (3,)
    """


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
            :class:`~jaxode_diffusion.models.UNet`; an MLP of ``dim = prod(event_shape)`` also
            wraps images, flattened); its ``prediction``, ``sigma_data`` and
            ``num_classes`` are used, its own ``precondition`` flag is not (this class always
            preconditions, see the module docstring).
        event_shape: the shape of one example (``(d,)`` or ``(H, W, C)``).
        mean, evals, evecs: the Gaussian fit (:func:`fit_gaussian`); default ``0``,
            ``sigma_data^2`` and ``I``, which make the model equal to EDM preconditioning.
        net_input: ``"noisy"`` (default: ``c_in x``, as EDM) or ``"wiener"`` (the fit's
            centred posterior mean over ``sigma_data``; see the module docstring).

    Raises:
        ValueError: on a net that is not a package network, statistics of the wrong shape or an
            unknown ``net_input``.

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

    def __init__(self, net: DiffusionModel, *, event_shape, mean=None, evals=None, evecs=None, net_input: str = "noisy"):
        if not isinstance(net, DiffusionModel):
            raise ValueError(f"GaussianResidual: net must be a package DiffusionModel (MLP, UNet), got {type(net).__name__}.")
        if net_input not in GAUSSIAN_NET_INPUTS:
            raise ValueError(f"GaussianResidual: net_input={net_input!r}; choose one of {list(GAUSSIAN_NET_INPUTS)}.")
        self.net_input = net_input
        self.event_shape = tuple(int(s) for s in event_shape)
        d = math.prod(self.event_shape)
        self.inner = net
        # An MLP of dim d may wrap image-shaped data: it sees (and returns) flattened examples.
        self._flat = len(self.event_shape) > 1 and getattr(net, "dim", None) == d
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
        cfg = dict(type="gaussian_residual", event_shape=list(self.event_shape), prediction=self.prediction, net=net.config)
        if net_input != "noisy":  # only options in use are written: configs without it stay valid
            cfg["net_input"] = net_input
        self.config_json = json.dumps(cfg)

    def set_statistics(self, mean, evals, evecs) -> None:
        """Replace the Gaussian fit (for example with :func:`fit_gaussian` of the training data)."""
        for var, v in ((self.gauss_mean, mean), (self.gauss_evals, evals), (self.gauss_evecs, evecs)):
            v = jnp.asarray(v, jnp.float32)
            if v.shape != var[...].shape:
                raise ValueError(f"GaussianResidual.set_statistics: expected shape {var[...].shape}, got {v.shape}.")
            var[...] = v

    def gaussian_eps_mse(self, t, process: ForwardProcess):
        """The Gaussian fit's expected eps-prediction error per coordinate at ``t`` (any shape):
        ``mean_k alpha^2 l_k / (alpha^2 l_k + sigma^2)`` (the ``gaussian`` DSM weighting divides by it).

        Example:
            >>> import jax.numpy as jnp
            >>> from flax import nnx
            >>> from jaxode_diffusion import VPLinear
            >>> from jaxode_diffusion.models import MLP
            >>> m = GaussianResidual(MLP(2, width=8, depth=1, sigma_data=1.0, rngs=nnx.Rngs(0)), event_shape=(2,))
            >>> # evals = sigma_data^2 = 1 and alpha^2 + sigma^2 = 1 (VP): the error is alpha^2
            >>> abs(float(m.gaussian_eps_mse(jnp.asarray(0.3), VPLinear())) - float(VPLinear().alpha(0.3) ** 2)) < 1e-6
            True
        """
        t = jnp.asarray(t)
        lam = jax.lax.stop_gradient(self.gauss_evals[...])
        a2 = process.alpha(t)[..., None] ** 2
        return jnp.mean(a2 * lam / (a2 * lam + process.sigma(t)[..., None] ** 2), axis=-1)

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
        shape = (-1,) + (1,) * (x.ndim - 1)
        if self.net_input == "wiener":  # (E_G[x0 | x] - mu) / sigma_data
            x_in = (((_col(alpha) * lam / denom) * z) @ U.T).reshape(x.shape) / self.sigma_data
        else:
            x_in = jax.lax.rsqrt(alpha**2 * self.sigma_data**2 + sigma**2).reshape(shape) * x
        if self._flat:  # a vector network (MLP of dim d) around image-shaped data
            x_in = x_in.reshape(x.shape[0], -1)
        f = self.inner.net(x_in, noise_level(process, t), *extra).reshape(x.shape)
        return lin.reshape(x.shape) + c_out.reshape(shape) * f
