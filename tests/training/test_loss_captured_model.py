"""dsm_loss and a model captured in a jitted closure: XLA:CPU's YNNPACK reduce fusion miscompiles
a dot with a uniform constant operand (an untrained network's zero output layer, once the model is
a constant of the program), which made the DSM loss inf. dsm_loss refuses that case with a
ValueError naming the cause and the fix; the state-as-argument path is finite."""

import os

import jax
import numpy as np
import pytest
from flax import nnx

from jaxode_diffusion import VPLinear
from jaxode_diffusion.models import MLP, GaussianResidual
from jaxode_diffusion.training import dsm_loss_per_example

_FLAG_SET = "xla_cpu_experimental_ynn_fusion_type" in os.environ.get("XLA_FLAGS", "")
pytestmark = pytest.mark.skipif(
    jax.default_backend() != "cpu" or _FLAG_SET, reason="XLA:CPU YNNPACK fusion only"
)


@pytest.fixture
def setup():
    # 8 x (16 x 16 x 3) = 6144 >= 4096 numbers: the size at which the miscompile appears.
    model = GaussianResidual(
        MLP(768, width=16, depth=1, sigma_data=0.66, rngs=nnx.Rngs(0)),
        event_shape=(16, 16, 3),
        net_input="wiener",
    )
    x0 = 0.6 * jax.random.normal(jax.random.key(5), (8, 16, 16, 3))
    return model, VPLinear(), x0, jax.random.key(123)


def test_constant_captured_untrained_model_is_refused(setup):
    model, p, x0, key = setup
    with pytest.raises(ValueError, match="YNNPACK"):
        jax.jit(lambda x, k: dsm_loss_per_example(model, p, x, k))(x0, key)


def test_state_as_argument_matches_eager(setup):
    model, p, x0, key = setup
    eager = np.asarray(dsm_loss_per_example(model, p, x0, key))
    graphdef, state = nnx.split(model)
    fn = jax.jit(lambda s, x, k: dsm_loss_per_example(nnx.merge(graphdef, s), p, x, k))
    jitted = np.asarray(fn(state, x0, key))
    assert np.isfinite(eager).all() and np.isfinite(jitted).all()
    np.testing.assert_allclose(jitted, eager, rtol=1e-4, atol=1e-6)


def test_small_batches_and_trained_weights_are_not_refused(setup):
    model, p, x0, key = setup
    # Below the size threshold the closure form compiles correctly and is allowed.
    small = np.asarray(jax.jit(lambda x, k: dsm_loss_per_example(model, p, x, k))(x0[:4], key))
    np.testing.assert_allclose(
        small, np.asarray(dsm_loss_per_example(model, p, x0[:4], key)), rtol=1e-4, atol=1e-6
    )
    # A non-uniform output layer (as after training) is not the miscompiled pattern.
    k = model.inner.out.kernel
    k[...] = 1e-3 * jax.random.normal(jax.random.key(1), k[...].shape, k[...].dtype)
    jitted = np.asarray(jax.jit(lambda x, kk: dsm_loss_per_example(model, p, x, kk))(x0, key))
    np.testing.assert_allclose(
        jitted, np.asarray(dsm_loss_per_example(model, p, x0, key)), rtol=1e-4, atol=1e-6
    )
