"""The likelihood subcommand on a model trained on standardised .npy data: log-likelihoods in the
raw data's units, and a one-line error for --levels on non-integer data."""

import math

import jax.numpy as jnp
import numpy as np
import pytest

from jaxode_diffusion.analysis.likelihood import log_likelihood


def test_cli_likelihood_in_raw_units(tmp_path, capsys):
    # A model trained on standardised .npy data (shift = mean, scale = std per feature): the CLI
    # reports log p of the raw data, log p_model((x - shift) / scale) - sum log scale.
    import json

    from jaxode_diffusion.cli.app import main as cli
    from jaxode_diffusion.training import TrainConfig, load_run, train

    raw = np.random.default_rng(0).normal([5.0, -2.0], [3.0, 0.5], (64, 2)).astype(np.float32)
    np.save(tmp_path / "x.npy", raw)
    run = tmp_path / "run"
    train(TrainConfig(data=str(tmp_path / "x.npy"), steps=4, out_dir=str(run), batch_size=16, width=8,
                      depth=1, progress=False, eval_every=0, ckpt_every=4))
    out = tmp_path / "ll.json"
    argv = ["likelihood", "--checkpoint", str(run), "--data", str(tmp_path / "x.npy"), "--num-steps", "2",
            "--max-samples", "5", "--out", str(out)]
    assert cli(argv) == 0
    rep = json.loads(out.read_text())
    assert rep["num_samples"] == 5 and rep["trace"] == "exact" and rep["nfe_per_sample"] == 8
    score_fn, cfg = load_run(run)
    shift, scale = np.asarray(cfg["data"]["shift"]), np.asarray(cfg["data"]["scale"])
    xm = jnp.asarray(((raw[:5] - shift) / scale).astype(np.float32))
    ref = log_likelihood(score_fn, score_fn.process, xm, num_steps=2).log_likelihood
    np.testing.assert_allclose(rep["log_likelihood_nats"], np.asarray(ref) - np.log(scale).sum(), rtol=1e-5)
    assert rep["mean_bits_per_dim"] == pytest.approx(-np.mean(rep["log_likelihood_nats"]) / (2 * math.log(2)))
    # --levels needs integer data: a clear one-line error, exit status 2.
    assert cli(argv[:-2] + ["--levels", "256", "--out", str(out)]) == 2
    assert "--levels 256" in capsys.readouterr().err


@pytest.mark.parametrize("bad", [np.nan, np.inf])
def test_cli_likelihood_names_a_nonfinite_data_row_not_the_steps(tmp_path, capsys, bad):
    # A NaN/inf data row is bad input: named (row 3) before any integration, --num-steps not blamed.
    from jaxode_diffusion.cli.app import main as cli
    from jaxode_diffusion.training import TrainConfig, train
    from tests.helpers import one_line_cli_error

    raw = np.random.default_rng(0).normal(size=(16, 2)).astype(np.float32)
    np.save(tmp_path / "x.npy", raw)
    run = tmp_path / "run"
    train(TrainConfig(data=str(tmp_path / "x.npy"), steps=2, out_dir=str(run), batch_size=8, width=8,
                      depth=1, progress=False, eval_every=0, ckpt_every=2))
    raw[3, 1] = bad
    np.save(tmp_path / "bad.npy", raw)
    argv = ["likelihood", "--checkpoint", str(run), "--data", str(tmp_path / "bad.npy"), "--num-steps", "2",
            "--out", str(tmp_path / "ll.json")]
    assert cli(argv) == 2
    err = one_line_cli_error(capsys)
    assert "row 3 holds NaN/inf" in err and "num-steps" not in err
