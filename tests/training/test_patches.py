"""Natural-image patches from scikit-learn's bundled photographs."""

import json

import numpy as np
import pytest

from jaxode_diffusion.training.data import load_dataset, load_patches


@pytest.mark.parametrize("size", [16, 32])
def test_patch_shapes_and_range(size):
    ds = load_dataset(f"patches{size}")
    assert ds.kind == "image"
    assert ds.train.shape[1:] == (size, size, 3) and ds.heldout.shape[1:] == (size, size, 3)
    assert ds.train.dtype == np.float32
    assert ds.train.min() >= -1.0 and ds.train.max() <= 1.0
    # The photographs use most of the 0..255 range.
    assert ds.train.min() < -0.9 and ds.train.max() > 0.9
    meta = ds.meta
    assert meta["name"] == f"patches{size}" and meta["event_shape"] == [size, size, 3]
    raw = ds.unnormalize(ds.train[:4])
    assert raw.min() >= 0 and raw.max() <= 255
    np.testing.assert_allclose(raw, np.round(raw), atol=1e-3)  # back to integer pixel values
    json.dumps(meta)  # recorded in the run config as JSON


def test_patches_are_cut_from_the_photographs():
    from sklearn.datasets import load_sample_images

    img = load_sample_images().images[0]  # china.jpg: first patches, row-major
    ds = load_patches(16, stride=8)
    np.testing.assert_array_equal(ds.unnormalize(ds.train[0]).round().astype(np.uint8), img[:16, :16])
    np.testing.assert_array_equal(ds.unnormalize(ds.train[1]).round().astype(np.uint8), img[:16, 8:24])
    np.testing.assert_array_equal(ds.unnormalize(ds.heldout[0]).round().astype(np.uint8), img[:16, 320:336])


def test_split_is_disjoint_by_region():
    # Training windows tile columns [0, 320) only (count), held-out ones [320, 640).
    ds = load_patches(32, stride=16)
    n_per_row_train = (320 - 32) // 16 + 1
    n_rows = (427 - 32) // 16 + 1
    assert ds.train.shape[0] == 2 * n_rows * n_per_row_train == ds.meta["n_train"]
    # No held-out patch equals any training patch (exact-bytes hashes).
    train_h = {p.tobytes() for p in ds.train}
    assert not any(p.tobytes() in train_h for p in ds.heldout)
    assert "columns [0, 320)" in ds.meta["split"]


def test_patches_deterministic():
    a, b = load_patches(16, stride=32), load_patches(16, stride=32)
    np.testing.assert_array_equal(a.train, b.train)
    np.testing.assert_array_equal(a.heldout, b.heldout)
    assert a.meta == b.meta


@pytest.mark.parametrize("kw", [dict(size=1), dict(size=400), dict(size=16, stride=0)])
def test_patches_bad_arguments(kw):
    with pytest.raises(ValueError, match="size|stride"):
        load_patches(**kw)


def test_cli_accepts_patches():
    from jaxode_diffusion.cli.args import data_arg as _data_arg

    assert _data_arg("patches32") == "patches32"
    assert _data_arg("patches16") == "patches16"


def test_stripes_split_is_disjoint_and_named():
    # Alternating 64-pixel column stripes: windows lie inside one stripe; 5 train + 5 held-out
    # stripes per 640-pixel image.
    ds = load_patches(16, stride=16, split="stripes")
    per_stripe = ((427 - 16) // 16 + 1) * ((64 - 16) // 16 + 1)
    assert ds.train.shape[0] == ds.heldout.shape[0] == 2 * 5 * per_stripe
    train_h = {p.tobytes() for p in ds.train}
    assert not any(p.tobytes() in train_h for p in ds.heldout)
    assert "stripes" in ds.meta["split"] and ds.meta["name"] == "patches16-stripes"
    from sklearn.datasets import load_sample_images

    img = load_sample_images().images[0]
    np.testing.assert_array_equal(ds.unnormalize(ds.heldout[0]).round().astype(np.uint8), img[:16, 64:80])
    assert load_dataset("patches16-stripes").meta["name"] == "patches16-stripes"
    with pytest.raises(ValueError, match="split"):
        load_patches(16, split="rows")
    with pytest.raises(ValueError, match="stripe"):
        load_patches(32, split="stripes", stripe=16)


# ---------------------------------------------------------------------------------------------
# GaussianResidual / TrainConfig(gaussian_skip=True): the network learns the residual of the
# data's Gaussian denoiser.


def _randomise(model, seed=1):
    # Non-zero output layer, so the network's contribution is visible.
    import jax
    from flax import nnx

    graphdef, state = nnx.split(model)
    leaves, tree = jax.tree.flatten(nnx.to_pure_dict(state))
    keys = jax.random.split(jax.random.key(seed), len(leaves))
    leaves = [x + 0.3 * jax.random.normal(k, x.shape, x.dtype) for x, k in zip(leaves, keys, strict=True)]
    nnx.replace_by_pure_dict(state, jax.tree.unflatten(tree, leaves))
    return nnx.merge(graphdef, state)


@pytest.mark.parametrize("kind", ["eps", "x0", "v"])
def test_gaussian_residual_with_default_statistics_is_edm_preconditioning(kind):
    import jax.numpy as jnp
    from flax import nnx

    from jaxode_diffusion import VPLinear
    from jaxode_diffusion.models import MLP, GaussianResidual

    net = _randomise(MLP(3, width=8, depth=1, prediction=kind, sigma_data=0.7, rngs=nnx.Rngs(0)))
    wrapped = GaussianResidual(net, event_shape=(3,))
    x = jnp.asarray(np.random.default_rng(0).normal(size=(5, 3)), jnp.float32)
    t = jnp.linspace(0.05, 0.95, 5)
    np.testing.assert_allclose(wrapped(x, t, VPLinear()), net(x, t, VPLinear()), rtol=2e-5, atol=2e-6)


def test_gaussian_residual_at_init_is_the_gaussian_denoiser():
    import jax.numpy as jnp
    from flax import nnx

    from jaxode_diffusion import VPLinear
    from jaxode_diffusion.models import MLP, GaussianResidual, build_model, fit_gaussian

    rng = np.random.default_rng(0)
    data = rng.normal(size=(4000, 3)) @ np.array([[1.0, 0.5, 0.0], [0.0, 0.3, 0.2], [0.0, 0.0, 2.0]]) + [0.5, -1.0, 0.0]
    mu, lam, U = fit_gaussian(data)
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
        fit_gaussian(np.zeros((3, 10)), max_dim=4)


def test_gaussian_skip_training_freezes_the_fit_and_resumes_exactly(tmp_path):
    import jax

    from jaxode_diffusion.models import fit_gaussian
    from jaxode_diffusion.training import TrainConfig, load_run, train

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
