"""The train and sample subcommands end to end on a tiny model."""

from pathlib import Path

import numpy as np

from jaxode_diffusion.cli.models import main as cli_main
from jaxode_diffusion.training import latest_step


def test_cli_train_and_sample_end_to_end(tmp_path, capsys):
    out = tmp_path / "moons"
    argv = [
        "train",
        "--data",
        "two_moons",
        "--steps",
        "30",
        "--out",
        str(out),
        "--batch-size",
        "64",
        "--eval-every",
        "15",
        "--ckpt-every",
        "15",
        "--lr",
        "2e-3",
    ]
    assert cli_main(argv) == 0
    assert (out / "config.json").exists() and latest_step(out) == 30
    npy = tmp_path / "s.npy"
    assert (
        cli_main(
            [
                "sample",
                "--checkpoint",
                str(out),
                "--solver",
                "x0-lambda:rk4",
                "--steps",
                "3",
                "--num-samples",
                "50",
                "--out",
                str(npy),
                "--grid",
                "log_snr",
            ]
        )
        == 0
    )
    x = np.load(npy)
    assert x.shape == (50, 2) and np.isfinite(x).all()
    assert Path(str(npy).replace(".npy", ".png")).stat().st_size > 0
    assert (
        cli_main(
            [
                "sample",
                "--checkpoint",
                str(tmp_path / "none"),
                "--solver",
                "rk4",
                "--steps",
                "2",
                "--num-samples",
                "4",
                "--out",
                str(npy),
            ]
        )
        == 2
    )
    assert "does not exist" in capsys.readouterr().err
