"""Training with ``gaussian_skip=True`` (the network learns the residual of the data's Gaussian
denoiser): the fit is frozen and resumes exactly, the ``gaussian`` DSM weighting scores the
Gaussian model one, the Wiener input on image data, and the config checks of these options."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from flax import nnx

from jaxode_diffusion import VPLinear
from jaxode_diffusion.models import MLP, GaussianResidual, fit_gaussian
from jaxode_diffusion.training import TrainConfig, dsm_loss_per_example, load_run, train
from jaxode_diffusion.training.data import load_dataset
from tests.helpers import gaussian_data_and_fit


def test_gaussian_skip_training_freezes_the_fit_and_resumes_exactly(tmp_path):
    kw = dict(data="two_moons", steps=6, batch_size=16, width=16, depth=1, n_train=128, n_heldout=16,
              progress=False, eval_every=0, ckpt_every=3, gaussian_skip=True)
    ref = train(TrainConfig(**kw))
    mu, lam, U = fit_gaussian(load_dataset("two_moons", n_train=128, n_heldout=16).train)
    # Frozen: exactly the fit (no update, no weight decay); the EMA of a constant up to rounding.
    np.testing.assert_array_equal(ref.params["gauss_mean"], mu)
    np.testing.assert_array_equal(ref.params["gauss_evecs"], U)
    np.testing.assert_allclose(ref.ema_params["gauss_evecs"], U, rtol=1e-6, atol=1e-7)
    cfg = TrainConfig(out_dir=str(tmp_path / "run"), **kw)
    train(cfg, stop_at=3)
    resumed = train(TrainConfig(**{**cfg.to_dict(), "resume": True}))
    same = jax.tree.map(lambda x, y: bool(np.array_equal(x, y)), resumed.params, ref.params)
    assert jax.tree.all(same)
    score_fn, run_cfg = load_run(tmp_path / "run")
    assert run_cfg["model"]["type"] == "gaussian_residual"
    x = np.ones((2, 2), np.float32)
    np.testing.assert_array_equal(score_fn(x, 0.5), resumed.score_fn()(x, 0.5))
    with pytest.raises(ValueError, match="gaussian_skip.*precondition"):
        TrainConfig(gaussian_skip=True, precondition=False)


def test_gaussian_weighting_scores_the_gaussian_model_one_at_every_noise_level():
    rng = np.random.default_rng(1)
    _, (mu, lam, U) = gaussian_data_and_fit(rng)
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
