"""Data parallelism with JAX's own sharding: one device, many devices, many processes.

The batch axis is split over a 1-D device mesh with a ``NamedSharding``; everything else
(network parameters, the training set, optimiser state) is replicated. Sampling and training
are single ``jit`` programs, so XLA partitions them over the devices (each device integrates /
differentiates its slice of the batch) and inserts the gradient all-reduce itself.

The same code runs

* on one host with several devices (GPUs, TPU cores, or CPU devices via
  ``XLA_FLAGS=--xla_force_host_platform_device_count=8``), and
* across processes after ``jax.distributed.initialize()``: the mesh spans every process's
  devices; each process contributes its local slice of the batch
  (:func:`shard_local_batch`, ``jax.make_array_from_process_local_data``) and :func:`gather`
  brings the result back to every process.
"""

from __future__ import annotations

import equinox as eqx
import jax
import numpy as np
from jax.sharding import Mesh, NamedSharding, PartitionSpec

from jaxode_diffusion.sampling.core import sample

__all__ = [
    "batch_mesh",
    "batch_sharding",
    "shard_batch",
    "shard_local_batch",
    "replicate",
    "gather",
    "sample_sharded",
    "sample_multiprocess",
]


def batch_mesh(devices=None, axis_name: str = "batch") -> Mesh:
    """A 1-D mesh over ``devices`` (default: all devices of all processes, ``jax.devices()``).

    Example:
        >>> batch_mesh().axis_names
        ('batch',)
    """
    if isinstance(devices, str):
        raise ValueError(f"devices={devices!r} must be a list of jax devices (e.g. jax.devices()) or None; "
                         "to use only the CPU, pass jax.devices('cpu').")
    devices = jax.devices() if devices is None else list(devices)
    if not devices:
        raise ValueError("devices must be a non-empty list of jax devices (e.g. jax.devices()).")
    bad = [d for d in devices if not isinstance(d, jax.Device)]
    if bad:
        raise ValueError(f"devices holds {bad[0]!r}, which is not a jax device; pass jax devices, e.g. "
                         "jax.devices() or jax.local_devices().")
    if not isinstance(axis_name, str) or not axis_name:
        raise ValueError(f"axis_name={axis_name!r} must be a non-empty string (e.g. 'batch').")
    return Mesh(np.array(devices), (axis_name,))


def _resolve_mesh(mesh) -> Mesh:
    """``mesh`` if it is a ``jax.sharding.Mesh``, :func:`batch_mesh` for ``None``; refuses anything else."""
    if mesh is None:
        return batch_mesh()
    if not isinstance(mesh, Mesh):
        raise ValueError(
            f"mesh={mesh!r} must be a jax.sharding.Mesh (e.g. batch_mesh() or batch_mesh(jax.devices('cpu'))) "
            f"or None for all devices; got {type(mesh).__name__}."
        )
    return mesh


def _check_batch_array(x, name: str) -> None:
    if np.ndim(x) < 1:
        raise ValueError(f"{name} has shape {np.shape(x)}; it needs a leading batch axis (B, *event_shape); "
                         "for one sample use x[None].")


def batch_sharding(mesh: Mesh, ndim: int) -> NamedSharding:
    """Leading axis split over the mesh's (first) axis, the other ``ndim - 1`` axes whole.

    Example:
        >>> batch_sharding(batch_mesh(), 4).spec
        P('batch', None, None, None)
    """
    mesh = _resolve_mesh(mesh)
    if isinstance(ndim, bool) or not isinstance(ndim, int | np.integer) or ndim < 1:
        raise ValueError(f"ndim={ndim!r} must be an int >= 1 (the number of axes of the batch).")
    return NamedSharding(mesh, PartitionSpec(mesh.axis_names[0], *([None] * (int(ndim) - 1))))


def _check_divisible(n_rows: int, n_parts: int, what: str) -> None:
    if n_rows % n_parts:
        raise ValueError(
            f"the {what} {n_rows} must be a multiple of the {n_parts} devices it is split over; "
            f"use {((n_rows + n_parts - 1) // n_parts) * n_parts}."
        )


def shard_batch(x, mesh: Mesh | None = None):
    """Place the global batch ``x`` (the same array on every process) with its leading axis
    split over the mesh. Each device receives only its rows.

    Raises:
        ValueError: if the batch size is not a multiple of the number of devices.

    Example:
        >>> import jax.numpy as jnp
        >>> n = len(jax.devices())
        >>> shard_batch(jnp.zeros((2 * n, 3))).sharding.spec
        P('batch', None)
    """
    mesh = _resolve_mesh(mesh)
    x = np.asarray(x) if not isinstance(x, jax.Array) else x
    _check_batch_array(x, "x")
    _check_divisible(x.shape[0], mesh.devices.size, "batch size")
    sharding = batch_sharding(mesh, x.ndim)
    if jax.process_count() == 1:
        return jax.device_put(x, sharding)
    xh = np.asarray(x)
    return jax.make_array_from_callback(xh.shape, sharding, lambda idx: xh[idx])


def shard_local_batch(x_local, mesh: Mesh | None = None):
    """The global batch made of every process's local slice ``x_local`` (concatenated in
    process order), split over the mesh: ``jax.make_array_from_process_local_data``.

    With one process this is :func:`shard_batch`.

    Raises:
        ValueError: if the local batch is not a multiple of this process's devices in the mesh.

    Example:
        >>> import jax.numpy as jnp
        >>> n = len(jax.devices())
        >>> shard_local_batch(jnp.ones((n, 2))).shape == (n * jax.process_count(), 2)
        True
    """
    mesh = _resolve_mesh(mesh)
    x_local = np.asarray(x_local)
    _check_batch_array(x_local, "x_local")
    n_local = sum(d.process_index == jax.process_index() for d in mesh.devices.flat)
    if n_local == 0:
        raise ValueError(f"process {jax.process_index()} has no device in the mesh; build it from jax.devices().")
    _check_divisible(x_local.shape[0], n_local, "local batch size")
    sharding = batch_sharding(mesh, x_local.ndim)
    global_shape = (x_local.shape[0] * jax.process_count(), *x_local.shape[1:])
    return jax.make_array_from_process_local_data(sharding, x_local, global_shape)


def replicate(tree, mesh: Mesh | None = None):
    """Every array leaf of ``tree`` copied to all devices of the mesh (``PartitionSpec()``):
    parameters, optimiser state, a small training set. Works across processes (each process
    passes its own, identical, copy).

    Example:
        >>> import jax.numpy as jnp
        >>> replicate({"w": jnp.ones(3)})["w"].sharding.is_fully_replicated
        True
    """
    mesh = _resolve_mesh(mesh)
    sharding = NamedSharding(mesh, PartitionSpec())

    def one(a):
        if isinstance(a, jax.Array) and jax.dtypes.issubdtype(a.dtype, jax.dtypes.prng_key):
            return jax.random.wrap_key_data(one(jax.random.key_data(a)), impl=jax.random.key_impl(a))
        if jax.process_count() == 1:
            return jax.device_put(a, sharding)
        h = np.asarray(a)
        return jax.make_array_from_callback(h.shape, sharding, lambda idx: h[idx])

    return jax.tree.map(one, tree)


def gather(x) -> np.ndarray:
    """The whole of a (possibly multi-process) sharded array as a NumPy array on every process.

    Example:
        >>> import jax.numpy as jnp
        >>> gather(shard_batch(jnp.arange(2.0 * len(jax.devices())))).shape[0] == 2 * len(jax.devices())
        True
    """
    if not isinstance(x, jax.Array) or x.is_fully_addressable:
        return np.asarray(x)
    from jax.experimental import multihost_utils

    return np.asarray(multihost_utils.process_allgather(x, tiled=True))


def sample_sharded(score_fn, process, x_init, *, mesh: Mesh | None = None, **kwargs):
    """:func:`~jaxode_diffusion.sample` with the global batch ``x_init`` split over the mesh.

    The result keeps the same sharding (one slice of the samples per device).

    Raises:
        ValueError: ``mesh`` is neither a ``jax.sharding.Mesh`` nor ``None``, ``x_init`` has no
            batch axis, or its batch size is not a multiple of the mesh's devices.

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


@eqx.filter_jit
def _sample_jit(score_fn, process, x, kwargs):
    return sample(score_fn, process, x, **dict(kwargs))


def sample_multiprocess(score_fn, process, x_local, *, mesh: Mesh | None = None, gather_result: bool = True,
                        **kwargs):
    """Sample under ``jax.distributed.initialize()``: each process passes its local slice of the
    initial noise, the solve runs as one program over every process's devices.

    Args:
        score_fn, process, kwargs: as for :func:`~jaxode_diffusion.sample` (the score's parameters
            are replicated by XLA; pass the same ones on every process).
        x_local: this process's ``(B_local, *event_shape)`` initial states; the global batch is
            the concatenation over processes in process order.
        mesh: default :func:`batch_mesh` over all devices of all processes.
        gather_result: return the whole ``(B_local * process_count, ...)`` NumPy array on every
            process (default); ``False`` returns the sharded global array.

    Example (one process; the same call runs unchanged on every process of a multi-process job):
        >>> import jax
        >>> from jaxode_diffusion import GaussianMixture, VPLinear
        >>> gm, vp = GaussianMixture.ring(4), VPLinear()
        >>> x0 = vp.prior_sample(jax.random.PRNGKey(0), (4 * len(jax.local_devices()), 2))
        >>> sample_multiprocess(gm.score_fn(vp), vp, x0, solver="rk4", num_steps=4).shape[1]
        2
    """
    if not isinstance(gather_result, bool | np.bool_):
        raise ValueError(f"gather_result={gather_result!r} must be True or False.")
    x_global = shard_local_batch(x_local, mesh)
    if x_global.is_fully_addressable:
        x = sample(score_fn, process, x_global, **kwargs)
    else:
        # Traced call: sample's eager checks would read the whole batch on this host, which a
        # multi-process array cannot do; under jit the finiteness check runs on the devices.
        x = _sample_jit(score_fn, process, x_global, tuple(sorted(kwargs.items())))
    if not gather_result:
        return x
    if hasattr(x, "samples"):  # a Solution (return_nfe / return_trajectory)
        return x._replace(samples=gather(x.samples))
    return gather(x)
