"""Noise-level embeddings for score networks.

Networks are conditioned on the process-aware noise level ``c_noise = -lambda(t) / 4 =
log(sigma/alpha) / 4`` (for EDM, ``alpha = 1``, this is the ``log(sigma)/4`` of Karras et al.
2022, Table 1), not on raw ``t``: the same network then fits any schedule, and the log-SNR range
of the usual processes ([-10, 10]) maps to roughly [-2.5, 2.5].
"""

from __future__ import annotations

import math

import jax
import jax.numpy as jnp
import numpy as np
from flax import nnx

__all__ = [
    "noise_level",
    "sinusoidal_embedding",
    "NoiseEmbedding",
    "ClassEmbedding",
    "class_labels",
    "kernel_init",
    "zeros_init",
    "ones_init",
]


def kernel_init(key, shape, dtype=jnp.float32):
    """LeCun-normal init (``N(0, 1/fan_in)``), drawn with NumPy from a seed taken from ``key``.

    Eager ``jax.random`` initialisation compiles one XLA kernel per distinct parameter shape;
    NumPy draws need none (what that saves: ``benchmarks/README.md``, "Model notes"). Still a pure
    function of ``key``. Under tracing (``nnx.eval_shape``, ``jit``) it falls back to
    ``jax.random.normal`` with the same variance.

    Example:
        >>> import jax
        >>> w = kernel_init(jax.random.PRNGKey(0), (64, 32))
        >>> w.shape, bool(abs(float(w.std()) - 1 / 8) < 0.01)  # std 1/sqrt(fan_in)
        ((64, 32), True)
    """
    std = 1.0 / math.sqrt(max(1, math.prod(shape[:-1])))
    if isinstance(key, jax.core.Tracer):
        return std * jax.random.normal(key, shape, dtype)
    seed = np.asarray(jax.random.key_data(key)).ravel().tolist()
    return jnp.asarray((np.random.default_rng(seed).standard_normal(shape) * std).astype(dtype))


def zeros_init(key, shape, dtype=jnp.float32):
    """Zeros without an XLA compilation per shape (see :func:`kernel_init`).

    Example:
        >>> import jax
        >>> float(zeros_init(jax.random.PRNGKey(0), (2, 3)).sum())
        0.0
    """
    return jnp.asarray(np.zeros(shape, dtype))


def ones_init(key, shape, dtype=jnp.float32):
    """Ones without an XLA compilation per shape (see :func:`kernel_init`).

    Example:
        >>> import jax
        >>> float(ones_init(jax.random.PRNGKey(0), (2, 3)).sum())
        6.0
    """
    return jnp.asarray(np.ones(shape, dtype))


def noise_level(process, t):
    """``c_noise(t) = -lambda(t) / 4`` (elementwise in ``t``).

    Example:
        >>> from jaxode_diffusion import EDM
        >>> round(float(noise_level(EDM(), 2.0)), 6)  # log(sigma) / 4 with sigma = t = 2
        0.173287
    """
    return -0.25 * process.lam(t)


def sinusoidal_embedding(c, dim: int, *, max_freq: float = 1000.0):
    """Transformer-style sinusoidal features of a scalar per example.

    ``[sin(w_k c), cos(w_k c)]`` with ``w_k`` geometric from 1 to ``max_freq`` (``dim/2`` of them),
    so both the coarse range of ``c`` (|c| <= 3) and fine differences (~1e-3) are resolved.

    Args:
        c: shape ``(B,)``.
        dim: even embedding size.

    Returns:
        ``(B, dim)`` features.

    Example:
        >>> import jax.numpy as jnp
        >>> sinusoidal_embedding(jnp.zeros(3), 8).shape
        (3, 8)
    """
    if dim % 2:
        raise ValueError(f"embedding dim must be even, got {dim}.")
    half = dim // 2
    freqs = jnp.exp(jnp.linspace(0.0, math.log(max_freq), half, dtype=jnp.result_type(c, jnp.float32)))
    arg = jnp.asarray(c)[:, None] * freqs[None, :]
    return jnp.concatenate([jnp.sin(arg), jnp.cos(arg)], axis=-1)


class NoiseEmbedding(nnx.Module):
    """Sinusoidal features of ``c_noise`` followed by a two-layer SiLU MLP (as in DDPM/EDM).

    Args:
        emb_dim: sinusoidal feature size (even).
        out_dim: output size.
        rngs: ``nnx.Rngs``.

    Example:
        >>> import jax.numpy as jnp
        >>> from flax import nnx
        >>> NoiseEmbedding(16, 8, rngs=nnx.Rngs(0))(jnp.zeros(3)).shape
        (3, 8)
    """

    def __init__(self, emb_dim: int, out_dim: int, *, rngs: nnx.Rngs):
        self.emb_dim = emb_dim
        self.lin1 = nnx.Linear(emb_dim, out_dim, kernel_init=kernel_init, bias_init=zeros_init, rngs=rngs)
        self.lin2 = nnx.Linear(out_dim, out_dim, kernel_init=kernel_init, bias_init=zeros_init, rngs=rngs)

    def __call__(self, c_noise):
        h = sinusoidal_embedding(c_noise, self.emb_dim)
        return self.lin2(jax.nn.silu(self.lin1(h)))


def _normal_init(key, shape, dtype=jnp.float32):
    """``N(0, 1)`` entries drawn with NumPy (see :func:`kernel_init`): an embedding table's rows
    are added to the noise embedding, whose entries are O(1)."""
    if isinstance(key, jax.core.Tracer):
        return jax.random.normal(key, shape, dtype)
    seed = np.asarray(jax.random.key_data(key)).ravel().tolist()
    return jnp.asarray(np.random.default_rng(seed).standard_normal(shape).astype(dtype))


def class_labels(cond, batch: int, num_classes: int):
    """Validate class labels ``cond`` and broadcast them to shape ``(batch,)``.

    ``cond`` is an integer scalar (one class for the whole batch) or an integer array of shape
    ``(batch,)``; ``None`` means unconditional and becomes the null id ``num_classes``. Values must
    lie in ``[0, num_classes]`` (``num_classes`` is the null class): concrete values outside are a
    ``ValueError``; traced ones (under ``jit``) become an index past the table, whose embedding is
    NaN, so a sampler reports a non-finite sample instead of silently using another class.

    Raises:
        ValueError: if ``cond`` is not integer-valued, its shape is neither ``()`` nor
            ``(batch,)``, or a concrete label lies outside ``[0, num_classes]``.

    Example:
        >>> class_labels(3, 4, 10).tolist()
        [3, 3, 3, 3]
        >>> class_labels(None, 2, 10).tolist()
        [10, 10]
    """
    if cond is None:
        return jnp.full((batch,), num_classes, jnp.int32)
    cond = jnp.asarray(cond)
    if not jnp.issubdtype(cond.dtype, jnp.integer):
        raise ValueError(
            f"cond must hold integer class labels in [0, {num_classes}] ({num_classes} = null class), "
            f"got dtype {cond.dtype}; pass e.g. jnp.asarray(labels, jnp.int32)."
        )
    if cond.ndim == 0:
        cond = jnp.broadcast_to(cond, (batch,))
    elif cond.shape != (batch,):
        raise ValueError(
            f"cond has shape {cond.shape} but x has batch size {batch}; pass one label per example, "
            f"shape ({batch},), or a scalar label for the whole batch."
        )
    if not isinstance(cond, jax.core.Tracer):
        bad = np.asarray(cond)
        bad = bad[(bad < 0) | (bad > num_classes)]
        if bad.size:
            raise ValueError(
                f"cond holds label {int(bad[0])} outside [0, {num_classes}]: the model knows classes "
                f"0..{num_classes - 1} and the null class {num_classes}."
            )
    # Negative labels would index from the end (the null row): send them past the table (NaN).
    cond = cond.astype(jnp.int32)
    return jnp.where((cond < 0) | (cond > num_classes), num_classes + 1, cond)


class ClassEmbedding(nnx.Module):
    """A learned embedding of ``num_classes`` class labels plus one null (unconditional) id.

    The null id is ``num_classes``; classifier-free guidance trains the null row by label
    dropout (Ho & Salimans 2021) and samples ``s(null) + w (s(c) - s(null))``.

    Args:
        num_classes: number of real classes ``K`` (the table has ``K + 1`` rows).
        out_dim: embedding size (added to the noise embedding).
        rngs: ``nnx.Rngs``.

    Example:
        >>> from flax import nnx
        >>> emb = ClassEmbedding(10, 8, rngs=nnx.Rngs(0))
        >>> emb(None, 3).shape
        (3, 8)
    """

    def __init__(self, num_classes: int, out_dim: int, *, rngs: nnx.Rngs):
        if int(num_classes) < 1:
            raise ValueError(f"num_classes must be >= 1 (or None for an unconditional model), got {num_classes}.")
        self.num_classes = int(num_classes)
        self.table = nnx.Embed(self.num_classes + 1, out_dim, embedding_init=_normal_init, rngs=rngs)

    @property
    def null_id(self) -> int:
        """The label of the unconditional (null) class: ``num_classes``."""
        return self.num_classes

    def __call__(self, cond, batch: int):
        return self.table(class_labels(cond, batch, self.num_classes))


def conditioning_embedding(temb: NoiseEmbedding, cemb: ClassEmbedding | None, c_noise, cond, batch: int,
                           network: str):
    """``silu(temb(c_noise) + cemb(cond))``: the embedding a network's blocks are conditioned on.

    Raises:
        ValueError: naming ``network`` and the fix when an unconditional network (``cemb is
            None``) is given a ``cond``.

    Example:
        >>> import jax.numpy as jnp
        >>> from flax import nnx
        >>> temb, cemb = NoiseEmbedding(16, 8, rngs=nnx.Rngs(0)), ClassEmbedding(3, 8, rngs=nnx.Rngs(1))
        >>> conditioning_embedding(temb, cemb, jnp.zeros(2), jnp.array([0, 3]), 2, "MLP").shape
        (2, 8)
    """
    e = temb(c_noise)
    if cemb is not None:
        e = e + cemb(cond, batch)
    elif cond is not None:
        raise ValueError(
            f"cond was given but this {network} is unconditional (num_classes=None); build it with "
            "num_classes=K (train with --conditional) or call it without cond."
        )
    return jax.nn.silu(e)

