"""The tune subcommand: tuning a trained checkpoint, sampling with the tuned file, and its flags reaching tune()."""

import jax
import numpy as np
import pytest

import jaxode_diffusion as jd
from jaxode_diffusion.tuning.tuner import load_tuned


def test_cli_tune_then_sample_tuned(tmp_path, monkeypatch, capsys):
    from jaxode_diffusion.cli.app import main
    from jaxode_diffusion.training import TrainConfig, load_run, train
    from jaxode_diffusion.training.data import unnormalize

    run = tmp_path / "run"
    train(TrainConfig(steps=10, out_dir=str(run), data="eight_gaussians", batch_size=32, width=16, depth=1,
                      n_train=256, n_heldout=32, progress=False, log_every=5, eval_every=0, ckpt_every=10))
    out = tmp_path / "tuned.json"
    assert main(["tune", "--checkpoint", str(run), "--nfe", "3", "--out", str(out), "--batch", "8",
                 "--solvers", "ddim,dpmpp_2m", "--learn-top", "0", "--no-progress"]) == 0
    t = load_tuned(out)
    assert t.solver in ("ddim", "dpmpp_2m") and t.nfe <= 3 and len(t.candidates) == 2 * len(jd.sampling.GRID_NAMES)
    assert (t.calibration_size, t.heldout_size) == (8, 8)  # the calibration batch: --batch by default
    npy = tmp_path / "s.npy"
    assert main(["sample", "--checkpoint", str(run), "--tuned", str(out), "--num-samples", "6", "--out",
                 str(npy), "--seed", "3"]) == 0
    score_fn, cfg = load_run(run)
    x_init = score_fn.process.prior_sample(jax.random.key(3), (6, 2))
    want = unnormalize(np.asarray(t.sample(score_fn, score_fn.process, x_init)), cfg["data"])
    np.testing.assert_allclose(np.load(npy), want, rtol=1e-6, atol=1e-6)
    from argparse import Namespace

    from jaxode_diffusion.cli.models import cmd_sample

    both = Namespace(checkpoint=str(run), tuned=str(out), solver="ddim", steps=3, num_samples=6, out=str(npy),
                     seed=0, grid="uniform")
    with pytest.raises(ValueError, match="--tuned"):  # --tuned fixes the solver: --solver contradicts it
        cmd_sample(both)
    # --error-grids reaches tune(..., error_grids=True) (off without the flag, as in the run above).
    import importlib

    tune_mod = importlib.import_module("jaxode_diffusion.cli.tune")  # the subcommand calls the `tune` bound there
    seen = {}

    def fake_tune(*args, **kwargs):
        seen.update(kwargs, x_cal=args[2])
        raise RuntimeError("stop")

    monkeypatch.setattr(tune_mod, "tune", fake_tune)
    for flag, want in (([], False), (["--error-grids"], True)):
        with pytest.raises(RuntimeError, match="stop"):
            main(["tune", "--checkpoint", str(run), "--nfe", "3", "--out", str(out), "--batch", "8", *flag])
        assert seen["error_grids"] is want
    for flag, want in (([], False), (["--learn-solver", "--learn-solver-steps", "7"], True)):
        with pytest.raises(RuntimeError, match="stop"):  # --learn-solver reaches tune(..., learn_solver=True)
            main(["tune", "--checkpoint", str(run), "--nfe", "3", "--out", str(out), "--batch", "8", *flag])
        assert seen["learn_solver"] is want and seen["learn_solver_steps"] == (7 if want else 200)
    with pytest.raises(RuntimeError, match="stop"):  # --calib-batch sets the calibration batch alone
        main(["tune", "--checkpoint", str(run), "--nfe", "3", "--out", str(out), "--batch", "8", "--calib-batch", "12"])
    assert (seen["x_cal"].shape[0], seen["heldout_x_init"].shape[0]) == (12, 8)
    assert main(["tune", "--checkpoint", str(run), "--nfe", "3", "--out", str(out), "--calib-batch", "2"]) == 2
    assert "--calib-batch 2" in capsys.readouterr().err  # a one-line error that names the flag
