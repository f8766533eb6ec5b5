"""CLI wiring of the stripes patch sets and ``train --gaussian-skip``."""

import argparse
import json

import numpy as np
import pytest

from jaxode_diffusion.cli.app import main as cli_main
from jaxode_diffusion.cli.args import data_arg as _data_arg


@pytest.mark.parametrize("name", ["patches16-stripes", "patches32-stripes", "patches16", "patches32"])
def test_data_arg_accepts_patch_sets(name):
    assert _data_arg(name) == name


def test_data_arg_rejects_unknown_patch_set_naming_the_choices():
    with pytest.raises(argparse.ArgumentTypeError, match="patches32-stripes.*'patches32-rows'"):
        _data_arg("patches32-rows")


@pytest.mark.parametrize("name", ["patches16-stripes", "patches32-stripes"])
def test_train_parser_accepts_stripes_data(name):
    from jaxode_diffusion.cli.app import build_parser

    args = build_parser().parse_args(["train", "--data", name, "--steps", "1", "--out", "x", "--gaussian-skip"])
    assert args.data == name and args.gaussian_skip is True


def test_train_gaussian_skip_flag_reaches_the_run(tmp_path):
    # Two tiny MLP steps on a user array: the flag is stored in the run config and the saved model
    # is the Gaussian residual around the MLP; without it, the plain MLP.
    data = tmp_path / "x.npy"
    np.save(data, np.random.default_rng(0).normal(size=(64, 3)).astype(np.float32))
    common = ["--data", str(data), "--steps", "2", "--batch-size", "8", "--eval-every", "0"]
    assert cli_main(["train", *common, "--gaussian-skip", "--out", str(tmp_path / "g")]) == 0
    assert cli_main(["train", *common, "--out", str(tmp_path / "p")]) == 0
    g = json.loads((tmp_path / "g" / "config.json").read_text())
    p = json.loads((tmp_path / "p" / "config.json").read_text())
    assert g["train"]["gaussian_skip"] is True and g["model"]["type"] == "gaussian_residual"
    assert g["model"]["net"]["type"] == "mlp"
    assert p["train"]["gaussian_skip"] is False and p["model"]["type"] == "mlp"


def test_cli_accepts_patches():
    from jaxode_diffusion.cli.args import data_arg as _data_arg

    assert _data_arg("patches32") == "patches32"
    assert _data_arg("patches16") == "patches16"
