"""GaussianResidual's Wiener input, the ``gaussian`` DSM weighting and an MLP around image data."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from flax import nnx

from jaxode_diffusion import VPLinear
from jaxode_diffusion.models import MLP, GaussianResidual, build_model, fit_gaussian
from jaxode_diffusion.training import TrainConfig, dsm_loss_per_example, load_run, train

_MIX = np.array([[1.0, 0.5, 0.0], [0.0, 0.3, 0.2], [0.0, 0.0, 2.0]])


def _fit(rng, n=4000):
    data = rng.normal(size=(n, 3)) @ _MIX + [0.5, -1.0, 0.0]
    return data, fit_gaussian(data)


def _nonzero_mlp(dim, seed=0):
    net = MLP(dim, width=8, depth=1, sigma_data=0.7, rngs=nnx.Rngs(seed))
    k = net.out.kernel[...]
    net.out.kernel[...] = 0.3 * jax.random.normal(jax.random.key(seed), k.shape, k.dtype)
    return net


def test_wiener_input_is_the_gaussian_posterior_mean():
    rng = np.random.default_rng(0)
    data, (mu, lam, U) = _fit(rng)
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


def test_gaussian_weighting_scores_the_gaussian_model_one_at_every_noise_level():
    rng = np.random.default_rng(1)
    _, (mu, lam, U) = _fit(rng)
    model = GaussianResidual(MLP(3, width=8, depth=1, rngs=nnx.Rngs(0)), event_shape=(3,), mean=mu, evals=lam, evecs=U)
    # Samples of exactly the fitted Gaussian: the model is the exact denoiser, relative error 1.
    x0 = jnp.asarray(mu + (rng.normal(size=(20000, 3)) * np.sqrt(lam)) @ U.T, jnp.float32)
    for t in (0.05, 0.5, 0.95):
        loss = dsm_loss_per_example(model, VPLinear(), x0, jax.random.key(0), weighting="gaussian", t_min=t, t_max=t)
        assert abs(float(loss.mean()) - 1.0) < 0.03, (t, float(loss.mean()))
    with pytest.raises(ValueError, match="weighting='gaussian'.*GaussianResidual"):
        dsm_loss_per_example(MLP(3, width=8, depth=1, rngs=nnx.Rngs(0)), VPLinear(), x0[:4], jax.random.key(0),
                             weighting="gaussian")


def test_train_config_refuses_wiener_or_gaussian_weighting_without_gaussian_skip():
    with pytest.raises(ValueError, match="gaussian_input='wiener'.*gaussian_skip=True"):
        TrainConfig(gaussian_input="wiener")
    with pytest.raises(ValueError, match="weighting='gaussian'.*gaussian_skip=True"):
        TrainConfig(weighting="gaussian")
    with pytest.raises(ValueError, match="gaussian_input='x'"):
        TrainConfig(gaussian_skip=True, gaussian_input="x")


def test_mlp_residual_on_images_trains_saves_and_reloads(tmp_path):
    from jaxode_diffusion.training.data import from_array

    x = (np.random.default_rng(2).normal(size=(96, 4, 4, 3)) * 0.5).astype(np.float32)
    cfg = TrainConfig(data="x", model="mlp", width=16, depth=1, gaussian_skip=True, gaussian_input="wiener",
                      weighting="gaussian", steps=3, batch_size=8, progress=False, eval_every=0,
                      out_dir=str(tmp_path / "run"))
    res = train(cfg, data=from_array(x, name="x"))
    assert res.model_config["net"]["type"] == "mlp" and res.model_config["net"]["dim"] == 48
    assert res.model_config["net_input"] == "wiener"
    score_fn, run_cfg = load_run(tmp_path / "run")
    probe = np.ones((2, 4, 4, 3), np.float32)
    np.testing.assert_array_equal(score_fn(probe, 0.5), res.score_fn()(probe, 0.5))
    assert run_cfg["train"]["gaussian_input"] == "wiener" and run_cfg["train"]["weighting"] == "gaussian"
