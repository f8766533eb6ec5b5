"""Denoising score matching (Vincent 2011; Song et al. 2021) for any prediction kind.

For ``x_t = alpha(t) x0 + sigma(t) eps`` the loss is ``E_t E_{x0, eps} w(t) ||err||^2`` (mean
over coordinates), where the error is measured in the space the weighting names:

=============  =================================================  ======================
weighting      per-example loss                                   equals, in eps space
=============  =================================================  ======================
``eps``        ``||eps_hat - eps||^2``  (DDPM "simple" loss)       ``1``
``x0``         ``||x0_hat - x0||^2``                               ``rho^2``
``snr``        ``min(SNR, 5) ||x0_hat - x0||^2`` (Min-SNR-5,       ``min(1, 5/SNR)``
               Hang et al. 2023), ``SNR = alpha^2/sigma^2``
``edm``        ``(rho^2 + sd^2)/(rho sd)^2 ||x0_hat - x0||^2``      ``1 + rho^2/sd^2``
               (Karras et al. 2022, with ``rho = sigma/alpha``)
``score``      ``sigma^2 ||s_hat - grad log p(x_t|x0)||^2``       ``1``
               (Song et al. 2021, ``lambda(t) = sigma^2``)
``gaussian``   ``||eps_hat - eps||^2 / m_G(t)``                   ``1 / m_G(t)``
=============  =================================================  ======================

``gaussian`` (for :class:`~jaxode_diffusion.models.GaussianResidual` models, i.e.
``TrainConfig(gaussian_skip=True)``): ``m_G(t) = mean_k alpha^2 l_k / (alpha^2 l_k + sigma^2)``
is the eps-error of the data's Gaussian fit (eigenvalues ``l_k``), so the Gaussian model scores
1 at every noise level and each level counts by its *relative* gain over the Gaussian. With the
``eps`` weighting the high-noise levels, where the large-variance directions (for natural
patches the mean colour) take their non-Gaussian shape, contribute errors of ~1e-4 against ~0.1
at low noise, and a network never learns them.

Class-conditional models (``cond`` = integer labels, one per example) are trained with label
dropout (Ho & Salimans 2021, classifier-free guidance): each label is replaced by the null id
with probability ``p_uncond``, so the one network learns both ``s(x, t, c)`` and the
unconditional ``s(x, t, null)``.

Time sampling: ``uniform`` (``t ~ U[t_min, t_max]``) or ``log_snr_uniform`` (``lambda ~ U`` on
``[lambda(t_max), lambda(t_min)]``, mapped back with ``process.t_of_lambda``).
"""

from __future__ import annotations

import os

import jax
import jax.numpy as jnp
import numpy as np

from jaxode_diffusion.processes.parameterizations import broadcast_to_batch, to_score, to_x0_eps
from jaxode_diffusion.processes import ForwardProcess

__all__ = ["TIME_SAMPLINGS", "WEIGHTINGS", "sample_times", "drop_labels", "dsm_loss", "dsm_loss_per_example"]

TIME_SAMPLINGS = ("uniform", "log_snr_uniform")
WEIGHTINGS = ("eps", "x0", "snr", "edm", "score", "gaussian")
_MIN_SNR_GAMMA = 5.0  # Hang et al. 2023 recommend gamma = 5


# XLA:CPU (jaxlib 0.10) miscompiles a YNNPACK reduce fusion whose dot has a uniform constant
# operand (folded to broadcast(scalar)): ``jit(lambda h: (h @ jnp.full((32, 768), 0.1)).sum(1))``
# returns garbage/NaN once the dot output has >= 4096 elements (the shapes tried are listed in
# benchmarks/README.md). A package network's zero-initialised output layer is such an
# operand when an untrained model is captured in a jitted closure (a compile-time constant).
_YNN_MIN_ELEMENTS = 4096
_YNN_FLAG = "xla_cpu_experimental_ynn_fusion_type"


def _check_constant_capture(model, x0):
    """Raise if ``model`` is captured as a constant in a CPU jit in the shape XLA miscompiles."""
    if not isinstance(x0, jax.core.Tracer) or x0.size < _YNN_MIN_ELEMENTS:
        return
    if _YNN_FLAG in os.environ.get("XLA_FLAGS", "") or jax.default_backend() != "cpu":
        return
    try:
        from flax import nnx

        leaves = jax.tree.leaves(nnx.state(model)) if isinstance(model, nnx.Module) else []
    except Exception:  # not an nnx model: nothing we can inspect
        return
    for leaf in leaves:
        if isinstance(leaf, jax.core.Tracer) or getattr(leaf, "ndim", 0) < 2 or leaf.size < 2:
            continue
        a = np.asarray(leaf)
        if np.all(a == a.flat[0]):
            raise ValueError(
                f"dsm_loss: the model is captured as a compile-time constant inside jax.jit and has a "
                f"uniform {a.shape} weight (value {float(a.flat[0])}, e.g. the zero-initialised output layer of "
                f"an untrained network); XLA:CPU's YNNPACK fusion miscompiles the loss in this case "
                f"(NaN/inf, an XLA bug, not the model). Fix: pass the model's state as a jit argument "
                f"(graphdef, state = nnx.split(model); jax.jit(lambda s, x, k: dsm_loss(nnx.merge(graphdef, "
                f"s), ...))(state, x, k)) or use nnx.jit, or set XLA_FLAGS=--{_YNN_FLAG}=individual_dot "
                f"before JAX starts."
            )


def _check(time_sampling, weighting):
    if time_sampling not in TIME_SAMPLINGS:
        raise ValueError(f"time_sampling={time_sampling!r}; choose one of {list(TIME_SAMPLINGS)}.")
    if weighting not in WEIGHTINGS:
        raise ValueError(f"weighting={weighting!r}; choose one of {list(WEIGHTINGS)}.")


def sample_times(
    key,
    n: int,
    process: ForwardProcess,
    method: str = "uniform",
    *,
    t_min=None,
    t_max=None,
    dtype=jnp.float32,
):
    """``n`` training times in ``[t_min, t_max]`` (default ``[process.default_t_end, process.t_max]``).

    Example:
        >>> import jax
        >>> from jaxode_diffusion import VPLinear
        >>> t = sample_times(jax.random.key(0), 4, VPLinear(), "log_snr_uniform")
        >>> bool((t >= 1e-3 - 1e-7).all() and (t <= 1.0 + 1e-6).all())
        True
    """
    _check(method, "eps")
    t_min = process.default_t_end if t_min is None else t_min
    t_max = process.t_max if t_max is None else t_max
    u = jax.random.uniform(key, (n,), dtype)
    if method == "uniform":
        return t_min + u * (t_max - t_min)
    lam_hi, lam_lo = process.lam(jnp.asarray(t_min, dtype)), process.lam(jnp.asarray(t_max, dtype))
    t = process.t_of_lambda(lam_lo + u * (lam_hi - lam_lo)).astype(dtype)
    return jnp.clip(t, t_min, t_max)


def drop_labels(key, labels, p_uncond, null_id: int):
    """Label dropout: each label becomes ``null_id`` independently with probability ``p_uncond``.

    Args:
        key: PRNG key.
        labels: integer labels ``(B,)``.
        p_uncond: dropout probability in ``[0, 1]`` (may be traced).
        null_id: the null (unconditional) class id, ``num_classes`` for this package's models.

    Example:
        >>> import jax, jax.numpy as jnp
        >>> drop_labels(jax.random.key(0), jnp.arange(4), 1.0, 10).tolist()
        [10, 10, 10, 10]
    """
    labels = jnp.asarray(labels)
    drop = jax.random.bernoulli(key, p_uncond, labels.shape)
    return jnp.where(drop, jnp.asarray(null_id, labels.dtype), labels)


def dsm_loss_per_example(
    model,
    process: ForwardProcess,
    x0,
    key,
    *,
    time_sampling: str = "uniform",
    weighting: str = "eps",
    t_min=None,
    t_max=None,
    sigma_data: float = 1.0,
    cond=None,
    p_uncond: float = 0.0,
    null_id: int | None = None,
):
    """Per-example weighted denoising loss, shape ``(B,)``.

    Args:
        model: callable ``model(x_t, t, process)`` returning a prediction of kind
            ``model.prediction`` (a :class:`jaxode_diffusion.models.DiffusionModel`).
        process: forward process.
        x0: clean batch ``(B, *event_shape)``.
        key: PRNG key (times and noise).
        time_sampling, weighting: see the module docstring.
        t_min, t_max: time range (default ``[process.default_t_end, process.t_max]``).
        sigma_data: data std used by the ``edm`` weighting.
        cond: integer class labels ``(B,)`` of a conditional model (``None``: unconditional;
            the model is then called without ``cond``).
        p_uncond: label-dropout probability (used when ``cond`` is given).
        null_id: the null class id labels are dropped to (needed when ``p_uncond > 0``).

    Raises:
        ValueError: on an unknown ``time_sampling`` / ``weighting``, ``p_uncond`` outside
            ``[0, 1]`` or ``p_uncond > 0`` without ``null_id``; and, on the CPU backend, when the
            model is captured as a constant inside ``jax.jit`` with a uniform weight matrix (an
            untrained network's zero output layer) and a batch of >= 4096 numbers: XLA:CPU's
            YNNPACK fusion miscompiles that loss to NaN/inf. Pass the model state as a jit
            argument (``nnx.split`` / ``nnx.merge``, as the trainer does) instead.
    """
    _check(time_sampling, weighting)
    _check_constant_capture(model, x0)
    kt, kn = jax.random.split(key)
    if cond is not None:
        if not 0.0 <= float(p_uncond) <= 1.0:
            raise ValueError(f"p_uncond must lie in [0, 1], got {p_uncond!r}.")
        if p_uncond > 0:
            if null_id is None:
                raise ValueError("p_uncond > 0 needs null_id (the model's null class, num_classes).")
            # fold_in, not a third split: the unconditional loss keeps its exact random stream.
            cond = drop_labels(jax.random.fold_in(key, 1), cond, p_uncond, null_id)
    t = sample_times(kt, x0.shape[0], process, time_sampling, t_min=t_min, t_max=t_max, dtype=x0.dtype)
    eps = jax.random.normal(kn, x0.shape, x0.dtype)
    alpha, sigma = broadcast_to_batch(process.alpha(t), x0), broadcast_to_batch(process.sigma(t), x0)
    xt = alpha * x0 + sigma * eps
    pred = model(xt, t, process) if cond is None else model(xt, t, process, cond)
    axes = tuple(range(1, x0.ndim))
    if weighting == "score":
        s_hat = to_score(pred, model.prediction, xt, t, process)
        return jnp.mean((sigma * s_hat + eps) ** 2, axis=axes)  # sigma^2 ||s_hat + eps/sigma||^2
    x0_hat, eps_hat = to_x0_eps(pred, model.prediction, xt, t, process)
    if weighting == "eps":
        return jnp.mean((eps_hat - eps) ** 2, axis=axes)
    if weighting == "gaussian":
        mse_fn = getattr(model, "gaussian_eps_mse", None)
        if mse_fn is None:
            raise ValueError(
                f"weighting='gaussian' divides by the Gaussian fit's error and needs a GaussianResidual model "
                f"(TrainConfig.gaussian_skip=True); got {type(model).__name__}. Use another weighting."
            )
        return jnp.mean((eps_hat - eps) ** 2, axis=axes) / mse_fn(t, process)
    x0_err = jnp.mean((x0_hat - x0) ** 2, axis=axes)
    a, s = process.alpha(t), process.sigma(t)
    if weighting == "x0":
        w = jnp.ones_like(a)
    elif weighting == "snr":
        w = jnp.minimum((a / s) ** 2, _MIN_SNR_GAMMA)
    else:  # edm
        rho2, sd2 = (s / a) ** 2, sigma_data**2
        w = (rho2 + sd2) / (rho2 * sd2)
    return w * x0_err


def dsm_loss(model, process: ForwardProcess, x0, key, **kwargs):
    """Mean of :func:`dsm_loss_per_example` over the batch (a scalar).

    Example:
        >>> import jax, jax.numpy as jnp
        >>> from flax import nnx
        >>> from jaxode_diffusion import VPLinear
        >>> from jaxode_diffusion.models import MLP
        >>> net = MLP(2, width=16, depth=1, rngs=nnx.Rngs(0))
        >>> float(dsm_loss(net, VPLinear(), jnp.zeros((8, 2)), jax.random.key(0))) >= 0
        True
    """
    return jnp.mean(dsm_loss_per_example(model, process, x0, key, **kwargs))
