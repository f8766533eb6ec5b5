"""A small U-Net score network for images ``(B, H, W, C)`` (8x8 to 32x32), sized for CPU."""

from __future__ import annotations

import json

import jax
import jax.numpy as jnp
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

__all__ = ["UNet", "default_channel_mult", "UNET_PATCHES32"]

# The 32x32x3 configuration of the patches benchmark (benchmarks/patches32.py): 2x2 pixel blocks
# folded into channels, then 16 -> 8 -> 4 at 32/64/64 channels (1.06M parameters), so it trains
# on a CPU in minutes (4x fewer FLOPs than the same U-Net at full resolution). Use it as
# ``UNet((32, 32, 3), **UNET_PATCHES32, rngs=...)`` or ``TrainConfig(channels=32, patch_size=2)``.
UNET_PATCHES32 = dict(channels=32, channel_mult=[1, 2, 2], num_res_blocks=1, patch_size=2)


def default_channel_mult(height: int) -> tuple[int, ...]:
    """Two levels up to 8x8 (8 -> 4), three above (e.g. 32 -> 16 -> 8).

    Example:
        >>> default_channel_mult(8), default_channel_mult(32)
        ((1, 2), (1, 2, 2))
    """
    return (1, 2) if height <= 8 else (1, 2, 2)


def _checked_shape(image_shape, channel_mult, patch_size):
    """``(image_shape, channel_mult, patch_size)`` of a :class:`UNet`, checked and normalised.

    Raises:
        ValueError: unless the image is ``(H, W, C)`` and ``H``, ``W`` are divisible by
            ``patch_size * 2^(levels - 1)``.
    """
    image_shape = tuple(int(s) for s in image_shape)
    if len(image_shape) != 3:
        raise ValueError(f"UNet: image_shape must be (H, W, C), got {image_shape}.")
    h, w, _ = image_shape
    p = int(patch_size)
    if p < 1 or h % p or w % p:
        raise ValueError(
            f"UNet: patch_size={patch_size} must be >= 1 and divide H={h} and W={w}; use 1 or 2."
        )
    mult = tuple(int(m) for m in (channel_mult or default_channel_mult(h // p)))
    factor = 2 ** (len(mult) - 1) * p
    if h % factor or w % factor:
        raise ValueError(
            f"UNet: H={h} and W={w} must be divisible by {factor} for channel_mult={mult} and "
            f"patch_size={p}; use fewer levels or pad the images."
        )
    return image_shape, mult, p


def _groups(channels: int) -> int:
    for g in (8, 4, 2, 1):
        if channels % g == 0:
            return g
    return 1  # pragma: no cover


class _ResBlock(nnx.Module):
    """GroupNorm-SiLU-Conv, add the noise embedding, GroupNorm-SiLU-Conv (zero-init), skip."""

    def __init__(self, cin: int, cout: int, temb_dim: int, *, rngs: nnx.Rngs):
        self.norm1 = nnx.GroupNorm(
            cin, num_groups=_groups(cin), scale_init=ones_init, bias_init=zeros_init, rngs=rngs
        )
        self.conv1 = nnx.Conv(cin, cout, (3, 3), kernel_init=kernel_init, bias_init=zeros_init, rngs=rngs)
        self.emb = nnx.Linear(temb_dim, cout, kernel_init=kernel_init, bias_init=zeros_init, rngs=rngs)
        self.norm2 = nnx.GroupNorm(
            cout, num_groups=_groups(cout), scale_init=ones_init, bias_init=zeros_init, rngs=rngs
        )
        self.conv2 = nnx.Conv(cout, cout, (3, 3), kernel_init=zeros_init, bias_init=zeros_init, rngs=rngs)
        self.skip = (
            nnx.Conv(cin, cout, (1, 1), kernel_init=kernel_init, bias_init=zeros_init, rngs=rngs)
            if cin != cout
            else None
        )

    def __call__(self, x, temb):
        h = self.conv1(jax.nn.silu(self.norm1(x)))
        h = h + self.emb(temb)[:, None, None, :]
        h = self.conv2(jax.nn.silu(self.norm2(h)))
        return h + (x if self.skip is None else self.skip(x))


class UNet(DiffusionModel):
    """DDPM-style U-Net: residual blocks with GroupNorm and noise-embedding injection,
    ``len(channel_mult) - 1`` down/up levels (strided conv down, nearest-neighbour up) and
    concatenated skip connections.

    Args:
        image_shape: ``(H, W, C)``; ``H`` and ``W`` divisible by ``2^(levels-1)``.
        channels: base channel count.
        channel_mult: channel multiplier per level (default :func:`default_channel_mult`).
        num_res_blocks: residual blocks per level.
        emb_dim: sinusoidal embedding size (the embedding MLP has ``4 * channels`` units).
        patch_size: fold ``p x p`` pixel blocks into channels before the first convolution
            (space-to-depth; unfolded again after the last): the network runs at ``H/p x W/p``
            with ``p^2 C`` input channels, ``~p^2`` times fewer FLOPs per layer. ``2`` is the
            CPU-sized 32x32x3 configuration (:data:`UNET_PATCHES32`); ``1`` (default) is off.
        prediction, precondition, sigma_data, num_classes: see :class:`~jaxode_diffusion.models.MLP`.
        rngs: ``nnx.Rngs``.

    Raises:
        ValueError: on an image shape the levels cannot halve.

    Example:
        >>> import jax.numpy as jnp
        >>> from flax import nnx
        >>> from jaxode_diffusion import VPLinear
        >>> net = UNet((8, 8, 1), channels=8, rngs=nnx.Rngs(0))
        >>> apply = nnx.jit(lambda net, x, t, c=None: net(x, t, VPLinear(), c))  # one program, not op by op
        >>> apply(net, jnp.zeros((2, 8, 8, 1)), 0.5).shape
        (2, 8, 8, 1)
        >>> cnet = UNet((8, 8, 1), channels=8, num_classes=10, rngs=nnx.Rngs(0))
        >>> apply(cnet, jnp.zeros((2, 8, 8, 1)), 0.5, jnp.array([3, 10])).shape  # 10: null id
        (2, 8, 8, 1)
    """

    def __init__(
        self,
        image_shape,
        *,
        channels: int = 32,
        channel_mult=None,
        num_res_blocks: int = 1,
        emb_dim: int = 64,
        prediction: str = "eps",
        precondition: bool = True,
        sigma_data: float = 0.5,
        num_classes: int | None = None,
        patch_size: int = 1,
        rngs: nnx.Rngs,
    ):
        image_shape, mult, self.patch_size = _checked_shape(image_shape, channel_mult, patch_size)
        self.image_shape = image_shape
        self._set_config(channels, mult, num_res_blocks, emb_dim, prediction, precondition, sigma_data,
                         num_classes)
        temb_dim = 4 * channels
        self.temb = NoiseEmbedding(emb_dim, temb_dim, rngs=rngs)
        self.cemb = None if self.num_classes is None else ClassEmbedding(self.num_classes, temb_dim, rngs=rngs)
        c_in = image_shape[2] * self.patch_size**2
        self.conv_in = nnx.Conv(c_in, channels, (3, 3), kernel_init=kernel_init, bias_init=zeros_init, rngs=rngs)
        self.num_res_blocks = int(num_res_blocks)
        self.num_levels = len(mult)
        # Layers are created in the order down, middle, up, output: nnx.Rngs draws one key per
        # layer, so this order fixes the initial parameters of a seed.
        cur, chans = self._build_down(channels, mult, num_res_blocks, temb_dim, rngs)
        self.mid1 = _ResBlock(cur, cur, temb_dim, rngs=rngs)
        self.mid2 = _ResBlock(cur, cur, temb_dim, rngs=rngs)
        cur = self._build_up(channels, mult, num_res_blocks, temb_dim, cur, chans, rngs)
        self.norm_out = nnx.GroupNorm(
            cur, num_groups=_groups(cur), scale_init=ones_init, bias_init=zeros_init, rngs=rngs
        )
        self.conv_out = nnx.Conv(cur, c_in, (3, 3), kernel_init=zeros_init, bias_init=zeros_init, rngs=rngs)

    def _set_config(self, channels, mult, num_res_blocks, emb_dim, prediction, precondition, sigma_data,
                    num_classes) -> None:
        """Store the model's conventions and its constructor arguments as ``config_json``."""
        self.prediction = canonical_kind(prediction)
        self.precondition = bool(precondition)
        self.sigma_data = float(sigma_data)
        self.num_classes = None if num_classes is None else int(num_classes)
        cfg = dict(
            type="unet",
            image_shape=list(self.image_shape),
            channels=int(channels),
            channel_mult=list(mult),
            num_res_blocks=int(num_res_blocks),
            emb_dim=int(emb_dim),
            prediction=self.prediction,
            precondition=self.precondition,
            sigma_data=self.sigma_data,
        )
        if self.num_classes is not None:  # only options in use are written: configs without them stay valid
            cfg["num_classes"] = self.num_classes
        if self.patch_size != 1:  # only options in use are written
            cfg["patch_size"] = self.patch_size
        self.config_json = json.dumps(cfg)

    def _build_down(self, channels, mult, num_res_blocks, temb_dim, rngs):
        """The encoder: residual blocks and strided downsampling convolutions per level.

        Returns the channel count at the bottom and the channel count of every skip connection.
        """
        down, downsample = [], []
        chans = [channels]
        cur = channels
        for i, m in enumerate(mult):
            for _ in range(num_res_blocks):
                down.append(_ResBlock(cur, channels * m, temb_dim, rngs=rngs))
                cur = channels * m
                chans.append(cur)
            if i < len(mult) - 1:
                downsample.append(
                    nnx.Conv(
                        cur,
                        cur,
                        (3, 3),
                        strides=(2, 2),
                        kernel_init=kernel_init,
                        bias_init=zeros_init,
                        rngs=rngs,
                    )
                )
                chans.append(cur)
        self.down = nnx.List(down)
        self.downsample = nnx.List(downsample)
        return cur, chans

    def _build_up(self, channels, mult, num_res_blocks, temb_dim, cur, chans, rngs):
        """The decoder: residual blocks on the concatenated skips and upsampling convolutions.

        Consumes ``chans`` (the encoder's skip channel counts); returns the output channel count.
        """
        up, upsample = [], []
        for i, m in reversed(list(enumerate(mult))):
            for _ in range(num_res_blocks + 1):
                up.append(_ResBlock(cur + chans.pop(), channels * m, temb_dim, rngs=rngs))
                cur = channels * m
            if i > 0:
                upsample.append(
                    nnx.Conv(cur, cur, (3, 3), kernel_init=kernel_init, bias_init=zeros_init, rngs=rngs)
                )
        self.up = nnx.List(up)
        self.upsample = nnx.List(upsample)
        return cur

    def net(self, x_in, c_noise, cond=None):
        """The raw network on preconditioned images ``(B, H, W, C)`` (see :class:`DiffusionModel`)."""
        if x_in.shape[1:] != self.image_shape:
            raise ValueError(
                f"UNet expects x of shape (B, {', '.join(map(str, self.image_shape))}), got {x_in.shape}."
            )
        temb = conditioning_embedding(self.temb, self.cemb, c_noise, cond, x_in.shape[0], "UNet")
        p = self.patch_size
        if p > 1:  # space-to-depth: (B, H, W, C) -> (B, H/p, W/p, p*p*C)
            b, hh, ww, cc = x_in.shape
            x_in = x_in.reshape(b, hh // p, p, ww // p, p, cc).transpose(0, 1, 3, 2, 4, 5)
            x_in = x_in.reshape(b, hh // p, ww // p, p * p * cc)
        h = self.conv_in(x_in)
        hs = [h]
        blocks = iter(self.down)
        for i in range(self.num_levels):
            for _ in range(self.num_res_blocks):
                h = next(blocks)(h, temb)
                hs.append(h)
            if i < self.num_levels - 1:
                h = self.downsample[i](h)
                hs.append(h)
        h = self.mid2(self.mid1(h, temb), temb)
        blocks = iter(self.up)
        for j, i in enumerate(reversed(range(self.num_levels))):
            for _ in range(self.num_res_blocks + 1):
                h = next(blocks)(jnp.concatenate([h, hs.pop()], axis=-1), temb)
            if i > 0:
                h = jnp.repeat(jnp.repeat(h, 2, axis=1), 2, axis=2)
                h = self.upsample[j](h)
        out = self.conv_out(jax.nn.silu(self.norm_out(h)))
        if p > 1:  # depth-to-space, the inverse of the fold above
            b, hp, wp, _ = out.shape
            out = out.reshape(b, hp, wp, p, p, -1).transpose(0, 1, 3, 2, 4, 5).reshape(b, hp * p, wp * p, -1)
        return out
