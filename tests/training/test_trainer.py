"""Training: DSM loss decreases, exact resume from checkpoints, clear errors.

The train and sample subcommands end to end: tests/cli/test_train_sample.py."""

import json
import shutil

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from flax import nnx

from jaxode_diffusion.analysis.score_errors import score_error
from jaxode_diffusion.models import as_score_fn, build_model
from jaxode_diffusion.models.mixture import GaussianMixture
from jaxode_diffusion.processes import VPLinear
from jaxode_diffusion.training import TrainConfig, dsm_loss, latest_step, load_run, train
from jaxode_diffusion.training.data import load_dataset, load_npy, make_toy
from tests.helpers import tree_equal

TINY = dict(
    data="eight_gaussians",
    batch_size=32,
    width=16,
    depth=1,
    n_train=256,
    n_heldout=32,
    progress=False,
    log_every=5,
    eval_every=0,
    ckpt_every=10,
    lr=3e-3,
)


@pytest.fixture(scope="module")
def reference_run():
    """An uninterrupted 20-step run (no checkpoints)."""
    return train(TrainConfig(steps=20, **TINY))


def test_loss_decreases_and_score_error_drops():
    cfg = TrainConfig(
        steps=300, **{**TINY, "width": 64, "batch_size": 128, "n_train": 4096}
    )
    res = train(cfg)
    vp, gm = VPLinear(), GaussianMixture.ring(8)
    x0 = jnp.asarray(make_toy("eight_gaussians", 1, 4096))
    init = build_model(res.model_config, seed=cfg.seed)
    key = jax.random.key(7)
    # The DSM loss has a large irreducible part; average over many draws to see the decrease.
    mean_loss = jax.jit(
        lambda p, graphdef: jnp.mean(
            jax.vmap(lambda k: dsm_loss(nnx.merge(graphdef, p), vp, x0, k))(jax.random.split(key, 8))
        ),
        static_argnums=1,
    )
    graphdef, state = nnx.split(init)
    before = float(mean_loss(nnx.to_pure_dict(state), graphdef))
    after = float(mean_loss(res.ema_params, graphdef))
    assert after < 0.9 * before, (before, after)
    assert res.history[-1]["loss"] > 0
    err0 = score_error(as_score_fn(init, vp), gm, vp, key=key, num_times=8, num_samples=256)
    err1 = score_error(res.score_fn(), gm, vp, key=key, num_times=8, num_samples=256)
    assert float(err1.value) < float(err0.value)
    assert err1.per_t.shape == (8,) and float(err1.weighted) >= 0


def test_resume_reproduces_uninterrupted_run(tmp_path, reference_run):
    cfg = TrainConfig(steps=20, out_dir=str(tmp_path / "run"), **TINY)
    train(cfg, stop_at=10)  # "killed" right after the step-10 checkpoint
    assert latest_step(tmp_path / "run") == 10
    resumed = train(TrainConfig(**{**cfg.to_dict(), "resume": True}))
    assert resumed.step == 20
    assert tree_equal(resumed.params, reference_run.params)
    assert tree_equal(resumed.ema_params, reference_run.ema_params)
    # the stored config rebuilds the model: the loaded score equals the trained one
    score_fn, run_cfg = load_run(tmp_path / "run")
    assert run_cfg["step"] == 20 and run_cfg["model"]["type"] == "mlp"
    x = jnp.ones((3, 2))
    np.testing.assert_array_equal(score_fn(x, 0.5), resumed.score_fn()(x, 0.5))
    assert json.loads((tmp_path / "run" / "config.json").read_text())["train"]["steps"] == 20
    with pytest.raises(ValueError, match="already holds checkpoints.*--resume"):
        train(cfg)
    with pytest.raises(ValueError, match="cannot resume.*batch_size"):
        train(TrainConfig(**{**cfg.to_dict(), "resume": True, "batch_size": 64}))
    # corrupt the latest checkpoint: the error names the folder and the fix
    shutil.rmtree(tmp_path / "run" / "checkpoints" / "20" / "state")
    with pytest.raises(ValueError, match=r"checkpoints/20.*corrupt or incomplete.*Delete that folder"):
        load_run(tmp_path / "run")


def test_crash_between_checkpoints_then_resume(tmp_path, reference_run):
    cfg = TrainConfig(steps=20, out_dir=str(tmp_path / "run"), **TINY)

    def crash(step, loss):
        if step == 15:
            raise KeyboardInterrupt  # killed between the checkpoints at 10 and 20

    with pytest.raises(KeyboardInterrupt):
        train(cfg, callback=crash)
    ck = tmp_path / "run" / "checkpoints"
    assert latest_step(tmp_path / "run") == 10
    # an unfinished orbax save (temporary folder) is never taken for a checkpoint
    (ck / "15.orbax-checkpoint-tmp-1234").mkdir()
    assert latest_step(tmp_path / "run") == 10
    shutil.rmtree(ck / "15.orbax-checkpoint-tmp-1234")
    resumed = train(TrainConfig(**{**cfg.to_dict(), "resume": True}))
    assert tree_equal(resumed.params, reference_run.params)


def test_missing_checkpoint_errors(tmp_path):
    with pytest.raises(ValueError, match="does not exist; pass the --out directory"):
        load_run(tmp_path / "nope")
    (tmp_path / "empty").mkdir()
    with pytest.raises(ValueError, match="no checkpoint found in"):
        load_run(tmp_path / "empty")
    with pytest.raises(ValueError, match="resume=True but no checkpoint"):
        train(TrainConfig(steps=5, out_dir=str(tmp_path / "fresh"), resume=True, **TINY))


def test_bad_data_errors(tmp_path):
    bad = np.random.default_rng(0).standard_normal((50, 2)).astype(np.float32)
    bad[7, 1] = np.nan
    with pytest.raises(ValueError, match="non-finite values.*first at row 7"):
        train(TrainConfig(steps=5, **TINY), data=bad)
    np.save(tmp_path / "nan.npy", bad)
    with pytest.raises(ValueError, match="non-finite"):
        load_npy(tmp_path / "nan.npy")
    np.save(tmp_path / "flat.npy", np.zeros(10))
    with pytest.raises(ValueError, match=r"shape \(N, d\) for vectors or \(N, H, W\[, C\]\)"):
        load_npy(tmp_path / "flat.npy")
    np.save(tmp_path / "str.npy", np.array([["a", "b"], ["c", "d"]]))
    with pytest.raises(ValueError, match="real numeric array"):
        load_npy(tmp_path / "str.npy")
    with pytest.raises(ValueError, match="does not exist"):
        load_npy(tmp_path / "missing.npy")
    with pytest.raises(ValueError, match="model='mlp' needs vector data"):
        train(TrainConfig(steps=5, model="mlp", **{**TINY, "data": "digits"}))
    with pytest.raises(ValueError, match="unknown dataset 'mnist'"):
        load_dataset("mnist")


def test_npy_normalisation_round_trip(tmp_path):
    raw = np.random.default_rng(1).normal(5.0, 3.0, (40, 3)).astype(np.float32)
    np.save(tmp_path / "x.npy", raw)
    ds = load_npy(tmp_path / "x.npy")
    assert ds.kind == "vector" and abs(float(ds.train.mean())) < 0.5
    both = np.concatenate([ds.train, ds.heldout])
    np.testing.assert_allclose(np.sort(ds.unnormalize(both), 0), np.sort(raw, 0), rtol=1e-5, atol=1e-5)
    imgs = np.random.default_rng(2).integers(0, 256, (12, 8, 8)).astype(np.uint8)
    np.save(tmp_path / "im.npy", imgs)
    dsi = load_npy(tmp_path / "im.npy")
    assert dsi.kind == "image" and dsi.train.shape[1:] == (8, 8, 1)
    assert dsi.train.min() >= -1 and dsi.train.max() <= 1
