"""Score networks and the model -> score adapter: shapes, preconditioning, kinds agree, pytree
structure, no recompilation when parameters change, and the class-conditional MLP's labels."""

import equinox as eqx
import jax
import jax.numpy as jnp
import numpy as np
import pytest
from flax import nnx

from jaxode_diffusion.models import (
    MLP,
    ScoreModel,
    UNet,
    abstract_model,
    as_score_fn,
    build_model,
    preconditioning,
)
from jaxode_diffusion.processes import EDM, VPLinear
from jaxode_diffusion.processes.parameterizations import KINDS
from jaxode_diffusion.sampling.core import sample


def test_edm_preconditioning_matches_karras():
    sd, sig = 0.5, 1.7
    c_in, c_skip, c_out, c_noise = preconditioning("x0", EDM(), sig, sd)
    np.testing.assert_allclose(c_skip, sd**2 / (sig**2 + sd**2), rtol=1e-6)
    np.testing.assert_allclose(c_out, sig * sd / np.sqrt(sig**2 + sd**2), rtol=1e-6)
    np.testing.assert_allclose(c_in, 1 / np.sqrt(sig**2 + sd**2), rtol=1e-6)
    np.testing.assert_allclose(c_noise, np.log(sig) / 4, rtol=1e-6)


@pytest.mark.parametrize("kind", KINDS)
def test_untrained_models_of_every_kind_agree(kind):
    # With the zero-initialised output layer, pred = c_skip x for every kind, i.e. the best linear
    # guess: all kinds must give the same score, that of N(0, (alpha^2 sd^2 + sigma^2) I).
    vp, sd, t = VPLinear(), 0.7, 0.3
    x = jax.random.normal(jax.random.key(1), (4, 3))
    net = MLP(3, width=16, depth=1, prediction=kind, sigma_data=sd, rngs=nnx.Rngs(0))
    s = eqx.filter_jit(lambda f, x: f(x, t))(as_score_fn(net, vp), x)
    var = vp.alpha(t) ** 2 * sd**2 + vp.sigma(t) ** 2
    np.testing.assert_allclose(s, -x / var, rtol=2e-4, atol=1e-5)


def _jit_apply(model, x, t, process):
    # One compiled program instead of hundreds of eager ops (keeps the test fast on CPU).
    graphdef, state = nnx.split(model)
    return jax.jit(lambda s, x, t: nnx.merge(graphdef, s)(x, t, process))(state, x, t)


@pytest.mark.parametrize("precondition", [True, False])
def test_shapes_mlp_and_unet(precondition):
    vp = VPLinear()
    mlp = MLP(5, width=16, depth=1, precondition=precondition, rngs=nnx.Rngs(0))
    assert _jit_apply(mlp, jnp.ones((3, 5)), jnp.array([0.1, 0.5, 0.9]), vp).shape == (3, 5)
    if not precondition:
        return
    unet = UNet((8, 8, 1), channels=8, precondition=precondition, rngs=nnx.Rngs(0))
    sf = as_score_fn(unet, vp)
    assert eqx.filter_jit(lambda f, x: f(x, 0.4))(sf, jnp.ones((2, 8, 8, 1))).shape == (2, 8, 8, 1)


def test_unet_32x32_and_errors():
    unet = UNet((32, 32, 3), channels=8, rngs=nnx.Rngs(0))
    assert unet.config["channel_mult"] == [1, 2, 2]
    assert len(unet.downsample) == 2 and len(unet.upsample) == 2  # 32 -> 16 -> 8 and back
    with pytest.raises(ValueError, match="must be divisible by 4"):
        UNet((10, 10, 1), channels=8, channel_mult=(1, 2, 2), rngs=nnx.Rngs(0))
    with pytest.raises(ValueError, match=r"MLP expects x of shape \(B, 2\)"):
        MLP(2, width=8, depth=1, rngs=nnx.Rngs(0))(jnp.ones((3, 4)), 0.5, VPLinear())


def test_build_model_round_trip_and_abstract():
    net = UNet((8, 8, 1), channels=8, prediction="v", rngs=nnx.Rngs(3))
    again = build_model(net.config, seed=3)
    assert again.config == net.config and again.prediction == "v"
    graphdef, abstract = abstract_model(net.config)
    real = nnx.to_pure_dict(nnx.state(net))
    assert jax.tree.structure(abstract) == jax.tree.structure(real)
    with pytest.raises(ValueError, match="type='cnn' unknown"):
        build_model({"type": "cnn"})


def test_score_model_is_a_pytree_of_parameters():
    net = MLP(2, width=8, depth=1, rngs=nnx.Rngs(0))
    sf = as_score_fn(net, VPLinear())
    params = nnx.to_pure_dict(nnx.state(net))
    n_param = len(jax.tree.leaves(params))
    leaves = jax.tree.leaves(eqx.filter(sf, eqx.is_array))
    assert len(leaves) == n_param + len(jax.tree.leaves(eqx.filter(VPLinear(), eqx.is_array)))
    assert sf.prediction == "eps"


TRACES = []


class CountingScore(ScoreModel):
    def __call__(self, x, t):
        TRACES.append(1)  # runs only while tracing
        return super().__call__(x, t)


def test_sample_compiles_model_once_for_new_parameters():
    vp = VPLinear()
    net = MLP(2, width=8, depth=1, rngs=nnx.Rngs(0))
    graphdef, state = nnx.split(net)
    params = nnx.to_pure_dict(state)
    params = jax.tree.map(lambda p: p + 0.01, params)  # non-zero output layer
    x_init = vp.prior_sample(jax.random.key(0), (16, 2))
    TRACES.clear()
    a = sample(CountingScore(graphdef, params, vp, "eps"), vp, x_init, solver="x0-lambda:rk4", num_steps=3)
    n_first = len(TRACES)
    assert n_first > 0
    params2 = jax.tree.map(lambda p: 1.5 * p, params)
    b = sample(CountingScore(graphdef, params2, vp, "eps"), vp, x_init, solver="x0-lambda:rk4", num_steps=3)
    assert len(TRACES) == n_first, "new parameter values must not retrace the sampler"
    assert not np.allclose(a, b)


def _randomised(net):
    # The output layer is zero-initialised (pred = c_skip x for every label): draw it at random
    # so that the class embedding reaches the output.
    net.out.kernel[...] = 0.5 * jax.random.normal(jax.random.key(3), net.out.kernel[...].shape, jnp.float32)
    return net


def test_conditional_mlp_shapes_and_cond_changes_output():
    net = _randomised(MLP(2, width=16, depth=1, num_classes=3, rngs=nnx.Rngs(0)))
    assert net.config["num_classes"] == 3 and build_model(net.config).num_classes == 3
    assert "num_classes" not in MLP(2, width=16, depth=1, rngs=nnx.Rngs(0)).config
    score = as_score_fn(net, VPLinear())
    assert score.num_classes == 3
    x = jax.random.normal(jax.random.key(1), (4, 2))
    f = jax.jit(lambda s, x, c: s(x, 0.5, c))
    s0, s1 = f(score, x, jnp.zeros(4, jnp.int32)), f(score, x, jnp.ones(4, jnp.int32))
    assert s0.shape == (4, 2) and float(jnp.max(jnp.abs(s0 - s1))) > 1e-3
    np.testing.assert_array_equal(f(score, x, jnp.int32(1)), s1)  # scalar label = one per example
    np.testing.assert_array_equal(score(x, 0.5), score(x, 0.5, jnp.full(4, 3)))  # None = null id 3
    with pytest.raises(ValueError, match="integer class labels"):
        score(x, 0.5, jnp.ones(4))
    with pytest.raises(ValueError, match="batch size 4"):
        score(x, 0.5, jnp.ones(3, jnp.int32))
    with pytest.raises(ValueError, match="label 4 outside"):
        score(x, 0.5, jnp.array([0, 1, 2, 4]))
    assert bool(jnp.isnan(f(score, x, jnp.array([0, 1, -1, 2]))[2]).all())  # traced: NaN, not a class
    with pytest.raises(ValueError, match="unconditional"):
        as_score_fn(MLP(2, width=16, depth=1, rngs=nnx.Rngs(0)), VPLinear())(x, 0.5, jnp.int32(0))
