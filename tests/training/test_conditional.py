"""Class-conditional training: label dropout, labels in the data split, bit-identical resume, guided
sampling of the trained tiny model and the CLI's class flags on it (all tiny, CPU).

The conditional MLP itself: tests/models/test_networks.py; derivative norms with ``cond``:
tests/analysis/test_regularity.py."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from jaxode_diffusion.training import TrainConfig, drop_labels, load_run, train
from jaxode_diffusion.training.data import dataset_labels, from_array


def test_drop_labels_rate():
    labels = jnp.zeros(20000, jnp.int32)
    for p in (0.0, 0.3, 1.0):
        out = np.asarray(drop_labels(jax.random.key(0), labels, p, 7))
        assert set(np.unique(out)) <= {0, 7}
        # binomial std at p = 0.3: sqrt(0.21 / 20000) = 0.0032; 0.015 is > 4 std
        assert abs(np.mean(out == 7) - p) < 0.015


def _labelled(n=240, seed=0):
    rng = np.random.default_rng(seed)
    y = rng.integers(0, 3, n)
    centres = np.array([[-2.0, 0.0], [2.0, 0.0], [0.0, 2.5]])
    x = (centres[y] + 0.3 * rng.standard_normal((n, 2))).astype(np.float32)
    return from_array(x, labels=y, normalize=False)


_CFG = dict(data="labelled", steps=8, batch_size=32, width=16, depth=1, conditional=True, p_uncond=0.2,
            eval_every=4, ckpt_every=4, log_every=4, progress=False)


@pytest.fixture(scope="module")
def run(tmp_path_factory):
    out = tmp_path_factory.mktemp("cond") / "run"
    return train(TrainConfig(out_dir=str(out), **_CFG), data=_labelled()), out


def test_labels_travel_with_the_split():
    ds = _labelled()
    tr, he, k = dataset_labels(ds)
    assert k == 3 and tr.shape == (ds.train.shape[0],) and he.shape == (ds.heldout.shape[0],)
    centres = np.array([[-2.0, 0.0], [2.0, 0.0], [0.0, 2.5]])
    assert np.all(np.linalg.norm(ds.train - centres[tr], axis=1) < 2.0)  # rows kept their labels
    with pytest.raises(ValueError, match="no class labels"):
        dataset_labels(from_array(np.zeros((10, 2), np.float32)))
    with pytest.raises(ValueError, match="p_uncond"):
        TrainConfig(conditional=True, p_uncond=1.5)


def test_conditional_training_resume_is_bit_identical(run, tmp_path):
    res, run_dir = run
    assert res.model_config["num_classes"] == 3 and res.config.conditional
    out = tmp_path / "resumed"
    train(TrainConfig(out_dir=str(out), **_CFG), data=_labelled(), stop_at=4)
    res2 = train(TrainConfig(out_dir=str(out), resume=True, **_CFG), data=_labelled())
    for a, b in zip(jax.tree.leaves(res.params), jax.tree.leaves(res2.params), strict=True):
        np.testing.assert_array_equal(a, b)
    score, cfg = load_run(run_dir)
    assert cfg["train"]["conditional"] and cfg["train"]["p_uncond"] == 0.2 and cfg["model"]["num_classes"] == 3
    with pytest.raises(ValueError, match="configuration differs"):
        train(TrainConfig(out_dir=str(out), resume=True, **{**_CFG, "p_uncond": 0.5}), data=_labelled())


def test_guided_sampling_with_the_trained_model(run):
    from jaxode_diffusion.models.guidance import classifier_free_guidance
    from jaxode_diffusion.sampling.core import sample

    score, _ = load_run(run[1])
    labels = jnp.array([0, 1, 2, 0], jnp.int32)
    x_init = score.process.prior_sample(jax.random.key(0), (4, 2))
    kw = dict(solver="dpmpp_2m", num_steps=4, grid="log_snr", cond=labels)
    x2 = sample(classifier_free_guidance(score, 2.0, 3), score.process, x_init, **kw)
    x1 = sample(classifier_free_guidance(score, 1.0, 3), score.process, x_init, **kw)
    plain = sample(score, score.process, x_init, **kw)  # w = 1 is the conditional score itself
    assert x2.shape == (4, 2) and bool(jnp.isfinite(x2).all())
    np.testing.assert_allclose(x1, plain, rtol=1e-5, atol=1e-5)
    assert float(jnp.max(jnp.abs(x2 - x1))) > 0


def test_cli_flags_parse_and_sample_a_class(run, tmp_path):
    from jaxode_diffusion.cli.app import build_parser
    from jaxode_diffusion.cli.models import main

    parser = build_parser()
    a = parser.parse_args(["train", "--data", "digits", "--steps", "5", "--out", "r", "--conditional",
                           "--p-uncond", "0.2"])
    assert a.conditional and a.p_uncond == 0.2
    assert not parser.parse_args(["train", "--data", "digits", "--steps", "5", "--out", "r"]).conditional
    a = parser.parse_args(["sample", "--checkpoint", "r", "--solver", "dpmpp_2m", "--steps", "5",
                           "--num-samples", "4", "--out", "s.npy", "--class", "3", "--guidance", "2.5"])
    assert a.class_label == 3 and a.guidance == 2.5
    for bad in (["--p-uncond", "1.5"], ["--p-uncond", "x"]):
        with pytest.raises(SystemExit):
            parser.parse_args(["train", "--data", "digits", "--steps", "5", "--out", "r", *bad])
    common = ["sample", "--checkpoint", str(run[1]), "--solver", "dpmpp_2m", "--steps", "3", "--grid",
              "log_snr", "--num-samples", "8"]
    assert main([*common, "--out", str(tmp_path / "c.npy"), "--class", "1", "--guidance", "2"]) == 0
    assert np.load(tmp_path / "c.npy").shape == (8, 2) and (tmp_path / "c.png").exists()
    assert main([*common, "--out", str(tmp_path / "d.npy"), "--class", "3"]) == 2  # classes 0..2
