"""Bad inputs to the many-device helpers (``sample_sharded``, ``shard_batch``, ``batch_mesh``, ...):
each a clear error naming the argument, the value and the fix, not an ``AttributeError``.

Part of the reliability suite (tests/sampling/test_bad_inputs.py has the conventions).
"""

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from jaxode_diffusion import VPLinear
from jaxode_diffusion.sampling.distributed import (
    batch_mesh,
    batch_sharding,
    replicate,
    sample_multiprocess,
    sample_sharded,
    shard_batch,
    shard_local_batch,
)

VP = VPLinear()
N = len(jax.devices())
X = jnp.ones((2 * N, 2))
SCORE = lambda x, t: -x  # noqa: E731

CALLS = {
    "sample_sharded": lambda mesh: sample_sharded(SCORE, VP, X, mesh=mesh, solver="ddim", num_steps=2),
    "sample_multiprocess": lambda mesh: sample_multiprocess(SCORE, VP, X, mesh=mesh, solver="ddim", num_steps=2),
    "shard_batch": lambda mesh: shard_batch(X, mesh),
    "shard_local_batch": lambda mesh: shard_local_batch(X, mesh),
    "replicate": lambda mesh: replicate({"w": jnp.ones(3)}, mesh),
    "batch_sharding": lambda mesh: batch_sharding(mesh, 2),
}


@pytest.mark.parametrize("mesh", ["cpu", 3, jax.devices()], ids=["str", "int", "device_list"])
@pytest.mark.parametrize("call", sorted(CALLS))
def test_mesh_must_be_a_mesh_or_none(call, mesh):
    with pytest.raises(ValueError, match=r"mesh=.* must be a jax.sharding.Mesh \(e.g. batch_mesh\(\).*or None for "
                                         r"all devices; got (str|int|list)"):
        CALLS[call](mesh)


@pytest.mark.parametrize("call", ["sample_sharded", "shard_batch", "batch_sharding"])
def test_mesh_none_and_a_batch_mesh_work(call):
    for mesh in (None, batch_mesh()):
        assert CALLS[call](mesh) is not None


@pytest.mark.parametrize("devices, match", [
    ("cpu", r"devices='cpu' must be a list of jax devices .*jax.devices\('cpu'\)"),
    ([], r"devices must be a non-empty list of jax devices"),
    ([0, 1], r"devices holds 0, which is not a jax device"),
])
def test_batch_mesh_refuses_bad_devices(devices, match):
    with pytest.raises(ValueError, match=match):
        batch_mesh(devices)


@pytest.mark.parametrize("axis_name", ["", 3, None])
def test_batch_mesh_refuses_a_bad_axis_name(axis_name):
    with pytest.raises(ValueError, match=r"axis_name=.* must be a non-empty string"):
        batch_mesh(axis_name=axis_name)


@pytest.mark.parametrize("ndim", [0, -1, 2.0, True, "2"])
def test_batch_sharding_refuses_a_bad_ndim(ndim):
    with pytest.raises(ValueError, match=r"ndim=.* must be an int >= 1"):
        batch_sharding(batch_mesh(), ndim)


@pytest.mark.parametrize("fn", [shard_batch, shard_local_batch], ids=["shard_batch", "shard_local_batch"])
def test_a_batch_without_a_batch_axis_is_refused(fn):
    with pytest.raises(ValueError, match=r"has shape \(\); it needs a leading batch axis"):
        fn(np.float32(1.0))


@pytest.mark.parametrize("gather_result", ["yes", 1, None])
def test_sample_multiprocess_refuses_a_non_bool_gather_result(gather_result):
    with pytest.raises(ValueError, match=r"gather_result=.* must be True or False"):
        sample_multiprocess(SCORE, VP, X, gather_result=gather_result, solver="ddim", num_steps=2)
