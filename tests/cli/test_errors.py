"""The CLI's error policy: argparse errors exit 2 naming the flag; user errors print one line on
stderr (exit 2, no traceback); bugs keep their traceback; the installed entry point does the same.

Faults of training and checkpoints as the CLI reports them (and ``--debug``):
tests/training/test_bad_inputs.py::test_cli_package_errors_one_line.
"""

import os
import shutil
import subprocess
import sys

import pytest

from jaxode_diffusion.cli.app import main as cli_main
from tests.helpers import one_line_cli_error

ARGPARSE_ERRORS = [
    (["convergence", "--steps", "a,b"], "--steps"),
    (["convergence", "--steps", "0,16"], "--steps"),
    (["convergence", "--batch", "0"], "--batch"),
    (["convergence", "--dim", "-1"], "--dim"),
    (["train", "--data", "two_moons", "--steps", "0", "--out", "o"], "--steps"),
    (["train", "--data", "two_moons", "--steps", "5", "--out", "o", "--batch-size", "0"], "--batch-size"),
    (["train", "--data", "two_moons", "--steps", "5", "--out", "o", "--lr", "nan"], "--lr"),
    (["train", "--data", "two_moons", "--steps", "5", "--out", "o", "--lr", "fast"], "--lr"),
    (["train", "--data", "mnist", "--steps", "5", "--out", "o"], "--data"),
    (["train", "--data", "two_moons", "--steps", "5", "--out", "o", "--ckpt-every", "-1"], "--ckpt-every"),
    (["sample", "--checkpoint", "c", "--solver", "rk4", "--steps", "2", "--num-samples", "0", "--out", "x"],
     "--num-samples"),
    (["sample", "--checkpoint", "c", "--solver", "rk4", "--steps", "x", "--num-samples", "2", "--out", "x"],
     "--steps"),
]


@pytest.mark.parametrize("argv,flag", ARGPARSE_ERRORS, ids=[" ".join(a[:1] + [f]) for a, f in ARGPARSE_ERRORS])
def test_cli_argparse_errors(argv, flag, capsys):
    with pytest.raises(SystemExit) as info:
        cli_main(argv)
    assert info.value.code == 2
    err = capsys.readouterr().err
    assert f"argument {flag}" in err and "Traceback" not in err


@pytest.mark.parametrize(
    "make_argv,words",
    [
        (lambda d: ["train", "--data", "two_moons", "--steps", "2", "--out", str(d / "f")], "--out"),
        (lambda d: ["train", "--data", "two_moons", "--steps", "2", "--out", str(d / "f" / "r")], "is a file"),
        (lambda d: ["sample", "--checkpoint", str(d / "none"), "--solver", "rk4", "--steps", "2",
                    "--num-samples", "2", "--out", str(d)], "--out"),
        (lambda d: ["sample", "--checkpoint", str(d / "none"), "--solver", "rk4", "--steps", "2",
                    "--num-samples", "2", "--out", str(d / "f" / "x.npy")], "is a file"),
        (lambda d: ["sample", "--checkpoint", str(d / "none"), "--solver", "rk4", "--steps", "2",
                    "--num-samples", "2", "--out", str(d / "x.npy")], "does not exist"),
        (lambda d: ["regularity", "--target", "gmm", "--out", str(d / "f")], "--out"),
        (lambda d: ["regularity", "--target", "gmm", "--out", str(d / "r"), "--num-times", "1"], "--num-times"),
        (lambda d: ["convergence", "--json", str(d / "f" / "rows.json")], "--json"),
        (lambda d: ["train", "--data", str(d / "missing.npy"), "--steps", "2", "--out", str(d / "r")],
         "missing.npy"),
    ],
    ids=["train-out-file", "train-out-under-file", "sample-out-dir", "sample-out-under-file",
         "sample-missing-checkpoint", "regularity-out-file", "regularity-num-times", "convergence-json",
         "train-missing-npy"],
)
def test_cli_user_errors_one_line(tmp_path, capsys, make_argv, words):
    (tmp_path / "f").write_text("a file in the way")
    assert cli_main(make_argv(tmp_path)) == 2
    assert words in one_line_cli_error(capsys)


def test_installed_entry_point_prints_one_line(tmp_path):
    exe = shutil.which("jaxode-diffusion") or os.path.join(os.path.dirname(sys.executable), "jaxode-diffusion")
    if not os.path.exists(exe):
        pytest.skip("the jaxode-diffusion entry point is not installed")
    (tmp_path / "f").write_text("x")
    proc = subprocess.run(
        [exe, "train", "--data", "two_moons", "--steps", "2", "--out", str(tmp_path / "f")],
        capture_output=True, text=True, timeout=300,
    )
    assert proc.returncode == 2, proc.stderr
    lines = [ln for ln in proc.stderr.splitlines() if ln.startswith("jaxode-diffusion: error:")]
    assert len(lines) == 1 and "is an existing file" in lines[0] and "Traceback" not in proc.stderr


def test_error_policy_units(capsys):
    from jaxode_diffusion.cli.app import format_error, is_user_error, run_command

    # a check raised inside jit through equinox.error_if: its own message, on one line
    jit_err = RuntimeError(
        "INTERNAL: CpuCallback error ...\n_EquinoxRuntimeError: non-finite sample at step 3, element 2\n\n\n"
        "--------------------\nAn error occurred during the runtime of your JAX program! ..."
    )
    assert is_user_error(jit_err) and format_error(jit_err) == "non-finite sample at step 3, element 2"
    assert not is_user_error(KeyError("x")) and not is_user_error(TypeError("bug"))

    def bug(args):
        raise KeyError("a bug keeps its traceback")

    with pytest.raises(KeyError):
        run_command(bug, None)

    def interrupted(args):
        raise KeyboardInterrupt

    assert run_command(interrupted, None) == 130
    assert "interrupted" in capsys.readouterr().err
