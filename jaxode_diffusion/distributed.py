"""Sampling across devices with JAX's own sharding.

The batch axis is split over a 1-D device mesh with a ``NamedSharding``; :func:`sample` is a
single ``jit`` program, so XLA partitions it over the devices (each device integrates its
slice of the batch; the score network's parameters are replicated). Works on one host with
several devices (GPUs, TPU cores, or CPU devices via
``XLA_FLAGS=--xla_force_host_platform_device_count=8``) and across hosts after
``jax.distributed.initialize()``.
"""

from __future__ import annotations

import jax
import numpy as np
from jax.sharding import Mesh, NamedSharding, PartitionSpec

from .sampling import sample

__all__ = ["batch_mesh", "shard_batch", "sample_sharded"]


def batch_mesh(devices=None, axis_name: str = "batch") -> Mesh:
    """A 1-D mesh over ``devices`` (default: all devices)."""
    devices = jax.devices() if devices is None else list(devices)
    if not devices:
        raise ValueError("devices must be a non-empty list of jax devices.")
    return Mesh(np.array(devices), (axis_name,))


def shard_batch(x, mesh: Mesh | None = None):
    """Place ``x`` with its leading (batch) axis split over the mesh.

    Raises:
        ValueError: if the batch size is not a multiple of the number of devices.
    """
    mesh = mesh or batch_mesh()
    n = mesh.devices.size
    if x.shape[0] % n:
        raise ValueError(
            f"the batch size {x.shape[0]} must be a multiple of the {n} devices of the mesh; "
            f"use a batch of {((x.shape[0] + n - 1) // n) * n}."
        )
    spec = PartitionSpec(mesh.axis_names[0], *([None] * (x.ndim - 1)))
    return jax.device_put(x, NamedSharding(mesh, spec))


def sample_sharded(score_fn, process, x_init, *, mesh: Mesh | None = None, **kwargs):
    """:func:`~jaxode_diffusion.sample` with ``x_init`` split over the devices of ``mesh``.

    The result keeps the same sharding (one slice of the samples per device).

    Example:
        >>> import jax
        >>> from jaxode_diffusion import GaussianMixture, VPLinear
        >>> gm, vp = GaussianMixture.ring(4), VPLinear()
        >>> x0 = vp.prior_sample(jax.random.PRNGKey(0), (8 * len(jax.devices()), 2))
        >>> x = sample_sharded(gm.score_fn(vp), vp, x0, solver="x0-lambda:rk4", num_steps=5)
        >>> x.shape[0] == x0.shape[0]
        True
    """
    return sample(score_fn, process, shard_batch(x_init, mesh), **kwargs)
