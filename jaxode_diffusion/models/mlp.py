"""Residual MLP score network for vector data ``(B, d)``."""

from __future__ import annotations

import json

import jax
from flax import nnx

from jaxode_diffusion.processes.parameterizations import canonical_kind
from jaxode_diffusion.models.adapter import DiffusionModel
from jaxode_diffusion.models.embeddings import (
    ClassEmbedding,
    NoiseEmbedding,
    conditioning_embedding,
    kernel_init,
    ones_init,
    zeros_init,
)

__all__ = ["MLP", "default_mlp_width"]


def default_mlp_width(dim: int) -> int:
    """Width used when none is given: 256 for low dimensions, growing as ``4 d`` up to 1024.

    Example:
        >>> default_mlp_width(2), default_mlp_width(100), default_mlp_width(3072)
        (256, 400, 1024)
    """
    return int(min(1024, max(256, 4 * dim)))


class _ResBlock(nnx.Module):
    def __init__(self, width: int, *, rngs: nnx.Rngs):
        self.norm = nnx.LayerNorm(width, scale_init=ones_init, bias_init=zeros_init, rngs=rngs)
        self.lin1 = nnx.Linear(width, width, kernel_init=kernel_init, bias_init=zeros_init, rngs=rngs)
        self.emb = nnx.Linear(width, width, kernel_init=kernel_init, bias_init=zeros_init, rngs=rngs)
        self.lin2 = nnx.Linear(width, width, kernel_init=kernel_init, bias_init=zeros_init, rngs=rngs)

    def __call__(self, h, temb):
        z = self.lin1(jax.nn.silu(self.norm(h))) + self.emb(temb)
        return h + self.lin2(jax.nn.silu(z))


class MLP(DiffusionModel):
    """Residual MLP conditioned on the noise level, for data of shape ``(B, dim)``.

    ``h = W_in x``; ``depth`` pre-norm residual blocks, each adding a projection of the
    noise embedding; ``out = W_out silu(LayerNorm(h))`` with ``W_out`` initialised to zero
    (so an untrained preconditioned model outputs ``c_skip x``, the best linear guess).

    Args:
        dim: data dimension ``d``.
        width: hidden width (default :func:`default_mlp_width`).
        depth: number of residual blocks.
        emb_dim: sinusoidal embedding size.
        prediction: ``eps``, ``x0``, ``v``, ``flow`` or ``score``.
        precondition: apply process-aware EDM preconditioning (recommended).
        sigma_data: data standard deviation used by the preconditioning.
        num_classes: ``None`` (unconditional, the default) or the number of classes ``K`` of a
            class-conditional model: a learned embedding of the label (``K`` classes plus the null
            id ``K``) is added to the noise embedding; call as ``net(x, t, process, cond=labels)``.
        rngs: ``nnx.Rngs`` for initialisation.

    Example:
        >>> import jax.numpy as jnp
        >>> from flax import nnx
        >>> from jaxode_diffusion import VPLinear
        >>> net = MLP(2, width=32, depth=1, rngs=nnx.Rngs(0))
        >>> net(jnp.zeros((5, 2)), 0.5, VPLinear()).shape
        (5, 2)
        >>> cnet = MLP(2, width=32, depth=1, num_classes=3, rngs=nnx.Rngs(0))
        >>> cnet(jnp.zeros((5, 2)), 0.5, VPLinear(), jnp.arange(5) % 3).shape
        (5, 2)
    """

    def __init__(
        self,
        dim: int,
        *,
        width: int | None = None,
        depth: int = 3,
        emb_dim: int = 64,
        prediction: str = "eps",
        precondition: bool = True,
        sigma_data: float = 1.0,
        num_classes: int | None = None,
        rngs: nnx.Rngs,
    ):
        if int(dim) < 1:
            raise ValueError(f"MLP: dim must be >= 1, got {dim}.")
        width = default_mlp_width(dim) if width is None else int(width)
        self.dim = int(dim)
        self.prediction = canonical_kind(prediction)
        self.precondition = bool(precondition)
        self.sigma_data = float(sigma_data)
        self.num_classes = None if num_classes is None else int(num_classes)
        cfg = dict(
            type="mlp",
            dim=self.dim,
            width=width,
            depth=int(depth),
            emb_dim=int(emb_dim),
            prediction=self.prediction,
            precondition=self.precondition,
            sigma_data=self.sigma_data,
        )
        if self.num_classes is not None:  # only options in use are written: configs without them stay valid
            cfg["num_classes"] = self.num_classes
        self.config_json = json.dumps(cfg)
        self.temb = NoiseEmbedding(emb_dim, width, rngs=rngs)
        self.cemb = None if self.num_classes is None else ClassEmbedding(self.num_classes, width, rngs=rngs)
        self.inp = nnx.Linear(dim, width, kernel_init=kernel_init, bias_init=zeros_init, rngs=rngs)
        self.blocks = nnx.List([_ResBlock(width, rngs=rngs) for _ in range(int(depth))])
        self.norm = nnx.LayerNorm(width, scale_init=ones_init, bias_init=zeros_init, rngs=rngs)
        self.out = nnx.Linear(width, dim, kernel_init=zeros_init, bias_init=zeros_init, rngs=rngs)

    def net(self, x_in, c_noise, cond=None):
        """The raw network on preconditioned input ``(B, dim)`` (see :class:`DiffusionModel`)."""
        if x_in.ndim != 2 or x_in.shape[1] != self.dim:
            raise ValueError(f"MLP expects x of shape (B, {self.dim}), got {x_in.shape}.")
        temb = conditioning_embedding(self.temb, self.cemb, c_noise, cond, x_in.shape[0], "MLP")
        h = self.inp(x_in)
        for block in self.blocks:
            h = block(h, temb)
        return self.out(jax.nn.silu(self.norm(h)))
