"""GaussianResidual: with default statistics it is EDM preconditioning, at initialisation the data's
Gaussian denoiser, and its Wiener input is the Gaussian posterior mean.

Training with it (``gaussian_skip``, the ``gaussian`` weighting): tests/training/test_gaussian_skip.py."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from flax import nnx

import jaxode_diffusion as jd
from jaxode_diffusion import VPLinear
from jaxode_diffusion.models import MLP, GaussianResidual, build_model
from tests.helpers import gaussian_data_and_fit


def _nonzero_mlp(dim, seed=0):
    net = MLP(dim, width=8, depth=1, sigma_data=0.7, rngs=nnx.Rngs(seed))
    k = net.out.kernel[...]
    net.out.kernel[...] = 0.3 * jax.random.normal(jax.random.key(seed), k.shape, k.dtype)
    return net


def test_wiener_input_is_the_gaussian_posterior_mean():
    rng = np.random.default_rng(0)
    data, (mu, lam, U) = gaussian_data_and_fit(rng)
    net = _nonzero_mlp(3)
    model = GaussianResidual(net, event_shape=(3,), mean=mu, evals=lam, evecs=U, net_input="wiener")
    noisy = GaussianResidual(net, event_shape=(3,), mean=mu, evals=lam, evecs=U)
    p, t = VPLinear(), 0.6
    a, s = float(p.alpha(t)), float(p.sigma(t))
    x = rng.normal(size=(4, 3)).astype(np.float32)
    cov = np.cov(data, rowvar=False)
    m = data.mean(0)
    # E[x0 | x] - mu = alpha C (alpha^2 C + sigma^2 I)^{-1} (x - alpha mu); the network sees it / sigma_data.
    post = (a * cov @ np.linalg.solve(a * a * cov + s * s * np.eye(3), (x - a * m).T)).T
    tt = jnp.full((4,), t)
    f = net.net(jnp.asarray(post / 0.7, jnp.float32), -0.25 * p.lam(tt))
    # Same Gaussian part and c_out as the noisy-input model; only the network's input differs.
    c_in = 1.0 / np.sqrt(a * a * 0.49 + s * s)
    f_noisy = net.net(jnp.asarray(c_in * x), -0.25 * p.lam(tt))
    want = np.asarray(noisy(jnp.asarray(x), t, p)) + (np.asarray(f) - np.asarray(f_noisy)) * _c_out(lam, a, s)
    np.testing.assert_allclose(model(jnp.asarray(x), t, p), want, rtol=2e-4, atol=2e-5)
    assert model.config["net_input"] == "wiener" and "net_input" not in noisy.config
    assert build_model(model.config).config == model.config
    with pytest.raises(ValueError, match="net_input='bogus'"):
        GaussianResidual(net, event_shape=(3,), net_input="bogus")


def _c_out(lam, a, s):  # eps prediction: |a sigma - b alpha| = alpha
    return a * np.sqrt(np.mean(lam / (a * a * lam + s * s)))


def _randomise(model, seed=1):
    # Non-zero output layer, so the network's contribution is visible.
    graphdef, state = nnx.split(model)
    leaves, tree = jax.tree.flatten(nnx.to_pure_dict(state))
    keys = jax.random.split(jax.random.key(seed), len(leaves))
    leaves = [x + 0.3 * jax.random.normal(k, x.shape, x.dtype) for x, k in zip(leaves, keys, strict=True)]
    nnx.replace_by_pure_dict(state, jax.tree.unflatten(tree, leaves))
    return nnx.merge(graphdef, state)


@pytest.mark.parametrize("kind", ["eps", "x0", "v"])
def test_gaussian_residual_with_default_statistics_is_edm_preconditioning(kind):
    net = _randomise(MLP(3, width=8, depth=1, prediction=kind, sigma_data=0.7, rngs=nnx.Rngs(0)))
    wrapped = GaussianResidual(net, event_shape=(3,))
    x = jnp.asarray(np.random.default_rng(0).normal(size=(5, 3)), jnp.float32)
    t = jnp.linspace(0.05, 0.95, 5)
    np.testing.assert_allclose(wrapped(x, t, VPLinear()), net(x, t, VPLinear()), rtol=2e-5, atol=2e-6)


def test_gaussian_residual_at_init_is_the_gaussian_denoiser():
    rng = np.random.default_rng(0)
    data, (mu, lam, U) = gaussian_data_and_fit(rng)
    model = GaussianResidual(MLP(3, width=8, depth=1, rngs=nnx.Rngs(0)), event_shape=(3,), mean=mu, evals=lam, evecs=U)
    p, t = VPLinear(), 0.4
    a, s = float(p.alpha(t)), float(p.sigma(t))
    x = rng.normal(size=(4, 3)).astype(np.float32)
    cov = np.cov(data, rowvar=False)
    # E[eps | x] = sigma (alpha^2 C + sigma^2 I)^{-1} (x - alpha mu), with the zero-initialised network.
    want = (s * np.linalg.solve(a * a * cov + s * s * np.eye(3), (x - a * data.mean(0)).T)).T
    np.testing.assert_allclose(model(jnp.asarray(x), t, p), want, rtol=1e-4, atol=1e-5)
    assert build_model(model.config).config == model.config  # rebuilds (statistics from checkpoints)
    with pytest.raises(ValueError, match="max_dim"):
        jd.models.fit_gaussian(np.zeros((3, 10)), max_dim=4)
