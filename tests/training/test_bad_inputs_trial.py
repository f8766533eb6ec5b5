"""Bad inputs found by a new user's trial: checkpoints without a checksum, an empty ``--out``,
interrupted ``.npy`` writes and data files that are not ``.npy`` arrays.

Each case must end in a clear error naming the argument and the fix, or in a correct result.
"""

import errno
import json
import os
import pickle
import shutil
import warnings
from pathlib import Path

import numpy as np
import pytest

from jaxode_diffusion.cli.app import main as cli_main
from jaxode_diffusion.training import CheckpointCorruptError, TrainConfig, load_run, train, verify_checkpoint
from jaxode_diffusion.training import checkpoint as ckpt
from jaxode_diffusion.training.data import load_npy
from jaxode_diffusion.utils import outputs
from jaxode_diffusion.utils.outputs import ensure_output_dir, ensure_output_file, save_npy_atomic
from tests.helpers import one_line_cli_error, tree_equal
from tests.training.test_bad_inputs import TINY


@pytest.fixture(scope="module")
def template(tmp_path_factory):
    """A finished 4-step run with checkpoints at steps 2 and 4 (copied by each test)."""
    run = tmp_path_factory.mktemp("trial") / "run"
    return run, train(TrainConfig(steps=4, out_dir=str(run), **TINY))


def _strip_checksum(run: Path, step: int) -> None:
    """Remove the checksum item AND its entry in the checkpoint metadata: what a user (or a tool)
    that deletes the checksum thoroughly leaves, indistinguishable from a checkpoint without one."""
    stepdir = run / "checkpoints" / str(step)
    shutil.rmtree(stepdir / "checksum")
    meta_path = stepdir / "_CHECKPOINT_METADATA"
    meta = json.loads(meta_path.read_text())
    meta["item_handlers"].pop("checksum")
    meta_path.write_text(json.dumps(meta))


@pytest.fixture
def stripped(template, tmp_path):
    run = tmp_path / "run"
    shutil.copytree(template[0], run)
    _strip_checksum(run, 4)
    return run


# ----------------------------------------------------------------------------------------------
# 1. A checkpoint without a checksum is refused unless the caller opts out by name
# ----------------------------------------------------------------------------------------------

LOADERS = {
    "load_run": lambda run, **kw: load_run(run, **kw),
    "read_config": lambda run, **kw: ckpt.read_config(run, **kw),
    "restore_checkpoint": lambda run, **kw: ckpt.restore_checkpoint(run, None, **kw),
    "verify_checkpoint": lambda run, **kw: verify_checkpoint(run, **kw),
}


@pytest.mark.parametrize("loader", list(LOADERS))
def test_stripped_checksum_refused_by_default(stripped, loader):
    with pytest.raises(CheckpointCorruptError, match=r"checkpoints/4.*has no checksum.*verify='warn'"):
        LOADERS[loader](stripped)


@pytest.mark.parametrize("loader", list(LOADERS))
def test_stripped_checksum_loads_with_verify_warn(stripped, loader):
    with pytest.warns(UserWarning, match=r"checkpoints/4.*has no checksum.*verify='warn'"):
        LOADERS[loader](stripped, verify="warn")


@pytest.mark.parametrize("loader", list(LOADERS))
def test_stripped_checksum_loads_silently_with_verify_off(stripped, loader):
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        LOADERS[loader](stripped, verify="off")


BAD_VERIFY = [None, "", "STRICT", "lenient", True, 1]


@pytest.mark.parametrize("loader", ["load_run", "read_config", "verify_checkpoint"])
@pytest.mark.parametrize("verify", BAD_VERIFY, ids=[repr(v) for v in BAD_VERIFY])
def test_bad_verify_value_names_choices(template, loader, verify):
    with pytest.raises(ValueError, match=r"verify=.*choose 'strict'.*'warn'.*'off'.*--verify-checkpoint"):
        LOADERS[loader](template[0], verify=verify)


def test_bad_verify_in_train_refused_before_work(tmp_path):
    with pytest.raises(ValueError, match=r"verify='yes'.*choose 'strict'"):
        train(TrainConfig(steps=2, out_dir=str(tmp_path / "run"), **TINY), verify="yes")
    assert not (tmp_path / "run").exists()


def test_strict_resume_skips_stripped_checkpoint(stripped, template):
    """The stripped step 4 is not resumed from: step 2 is, and steps 3-4 are recomputed exactly."""
    with pytest.warns(UserWarning, match=r"checkpoints/4.*no checksum.*Resuming from step 2"):
        resumed = train(TrainConfig(steps=4, out_dir=str(stripped), resume=True, **TINY))
    assert tree_equal(resumed.params, template[1].params)
    assert [p.name.split("-")[0] for p in (stripped / "corrupt").iterdir()] == ["4"]
    assert verify_checkpoint(stripped) == 4


def test_strict_resume_refuses_when_no_checkpoint_has_a_checksum(stripped):
    _strip_checksum(stripped, 2)
    with pytest.raises(CheckpointCorruptError, match=r"every checkpoint .* is corrupt.*no checksum"):
        train(TrainConfig(steps=6, out_dir=str(stripped), resume=True, **TINY))


def test_warn_resume_continues_from_stripped_checkpoint(stripped):
    with pytest.warns(UserWarning, match=r"checkpoints/4.*has no checksum"):
        resumed = train(TrainConfig(steps=4, out_dir=str(stripped), resume=True, **TINY), verify="warn")
    assert resumed.step == 4 and not (stripped / "corrupt").exists()


def test_cli_train_verify_checkpoint_flag(tmp_path, capsys, monkeypatch):
    base = ["train", "--data", "eight_gaussians", "--steps", "4", "--out", str(tmp_path / "run"), "--resume"]
    with pytest.raises(SystemExit) as info:  # argparse's own choice check
        cli_main([*base, "--verify-checkpoint", "bogus"])
    assert info.value.code == 2 and "--verify-checkpoint: invalid choice: 'bogus'" in capsys.readouterr().err
    seen = []

    def fake_train(config, verify="strict"):
        seen.append(verify)
        raise ValueError("stop here")

    monkeypatch.setattr("jaxode_diffusion.training.train", fake_train)
    assert cli_main(base) == 2 and cli_main([*base, "--verify-checkpoint", "warn"]) == 2
    assert seen == ["strict", "warn"]


# ----------------------------------------------------------------------------------------------
# 2. An empty or blank output path is an error naming the flag
# ----------------------------------------------------------------------------------------------

BLANK = ["", " ", "\t\n"]


@pytest.mark.parametrize("out", BLANK, ids=repr)
def test_train_config_blank_out_dir(out):
    with pytest.raises(ValueError, match=r"TrainConfig\.out_dir \(--out\) is empty.*runs/my_run"):
        TrainConfig(out_dir=out)


@pytest.mark.parametrize("out", BLANK, ids=repr)
def test_ensure_output_dir_blank(out):
    with pytest.raises(ValueError, match=r"--out is empty.*for example --out runs/my_run"):
        ensure_output_dir(out, "--out")


@pytest.mark.parametrize("out", BLANK, ids=repr)
def test_ensure_output_file_blank(out):
    with pytest.raises(ValueError, match=r"--json is empty.*for example --json samples.npy"):
        ensure_output_file(out, "--json")


@pytest.mark.parametrize("out", [None, 3])
def test_ensure_output_dir_not_a_path(out):
    with pytest.raises(ValueError, match=r"--out must be a path"):
        ensure_output_dir(out, "--out")


@pytest.mark.parametrize("command", ["train", "sample"])
def test_cli_empty_out_refused(command, tmp_path, monkeypatch, capsys):
    monkeypatch.chdir(tmp_path)
    argv = {
        "train": ["train", "--data", "eight_gaussians", "--steps", "2", "--out", ""],
        "sample": ["sample", "--checkpoint", "missing", "--num-samples", "4", "--out", ""],
    }[command]
    assert cli_main(argv) == 2
    err = one_line_cli_error(capsys)
    assert "--out" in err and "is empty" in err
    assert list(tmp_path.iterdir()) == []  # nothing written into the current directory


# ----------------------------------------------------------------------------------------------
# 3. Atomic .npy writes: never a partial or 0-byte file
# ----------------------------------------------------------------------------------------------


def test_save_npy_atomic_matches_np_save(tmp_path):
    x = np.arange(12, dtype=np.float32).reshape(3, 4)
    save_npy_atomic(tmp_path / "a.npy", x)
    np.save(tmp_path / "b.npy", x)
    assert (tmp_path / "a.npy").read_bytes() == (tmp_path / "b.npy").read_bytes()
    assert sorted(p.name for p in tmp_path.iterdir()) == ["a.npy", "b.npy"]


def _full_disk(monkeypatch):
    real_save = np.save

    def save(f, arr, **kw):
        f.write(b"\x93NUMPY partial")
        raise OSError(errno.ENOSPC, "No space left on device")

    monkeypatch.setattr(outputs.np, "save", save)
    return real_save


def test_save_npy_atomic_full_disk_leaves_no_file(tmp_path, monkeypatch):
    _full_disk(monkeypatch)
    with pytest.raises(OSError, match=r"No space left on device while writing out.npy.*free disk space") as info:
        save_npy_atomic(tmp_path / "out.npy", np.ones(3))
    assert info.value.errno == errno.ENOSPC and info.value.filename == os.fspath(tmp_path / "out.npy")
    assert list(tmp_path.iterdir()) == []


def test_save_npy_atomic_failure_keeps_previous_file(tmp_path, monkeypatch):
    np.save(tmp_path / "out.npy", np.zeros(2))
    _full_disk(monkeypatch)
    with pytest.raises(OSError):
        save_npy_atomic(tmp_path / "out.npy", np.ones(3))
    monkeypatch.undo()
    assert np.load(tmp_path / "out.npy").tolist() == [0.0, 0.0]
    assert [p.name for p in tmp_path.iterdir()] == ["out.npy"]


def test_save_npy_atomic_interrupt_leaves_no_file(tmp_path, monkeypatch):
    def save(f, arr, **kw):
        f.write(b"\x93NUMPY")
        raise KeyboardInterrupt

    monkeypatch.setattr(outputs.np, "save", save)
    with pytest.raises(KeyboardInterrupt):
        save_npy_atomic(tmp_path / "out.npy", np.ones(3))
    assert list(tmp_path.iterdir()) == []


def test_save_npy_atomic_missing_parent_and_directory_in_the_way(tmp_path):
    with pytest.raises(OSError, match="while writing x.npy") as info:
        save_npy_atomic(tmp_path / "missing" / "x.npy", np.ones(2))
    assert info.value.errno == errno.ENOENT
    (tmp_path / "d.npy").mkdir()
    with pytest.raises(OSError, match="while writing d.npy.*directory is in the way"):
        save_npy_atomic(tmp_path / "d.npy", np.ones(2))
    assert [p.name for p in tmp_path.iterdir()] == ["d.npy"] and not any((tmp_path / "d.npy").iterdir())


def test_save_npy_atomic_refuses_object_arrays(tmp_path):
    with pytest.raises(ValueError, match="allow_pickle"):
        save_npy_atomic(tmp_path / "o.npy", np.array([{"a": 1}], dtype=object))
    assert list(tmp_path.iterdir()) == []


# ----------------------------------------------------------------------------------------------
# 4. Data files that are not .npy arrays are named as what they are
# ----------------------------------------------------------------------------------------------


def _write(kind: str, path: Path) -> None:
    x = np.ones((8, 2), np.float32)
    if kind == "npz":
        with open(path, "wb") as f:
            np.savez(f, x=x)
    elif kind == "npz_compressed":
        with open(path, "wb") as f:
            np.savez_compressed(f, data=x, labels=np.zeros(8))
    elif kind == "pickle":
        path.write_bytes(pickle.dumps(x))
    elif kind == "pickle_proto0":
        path.write_bytes(pickle.dumps([[1.0, 2.0]] * 4, protocol=0))
    elif kind == "csv":
        path.write_text("1,2\n3,4\n")
    elif kind == "empty":
        path.write_bytes(b"")


NOT_NPY = {
    "npz": r"zip archive \(an np.savez.*holding 'x'\).*np.save\(path, array\).*np.load\(path\)\[key\]",
    "npz_compressed": r"zip archive.*holding 'data', 'labels'",
    "pickle": r"Python pickle, not a .npy array.*np.save\(path, array\)",
    "pickle_proto0": r"Python pickle",
    "csv": r"not a .npy array \(it does not start with the .npy magic bytes.*np.save",
    "empty": r"is empty \(0 bytes",
}


@pytest.mark.parametrize("kind", list(NOT_NPY))
def test_load_npy_names_the_format(kind, tmp_path):
    path = tmp_path / "data.npy"
    _write(kind, path)
    with pytest.raises(ValueError, match="data file '.*data.npy' .*" + NOT_NPY[kind]):
        load_npy(path)


def test_cli_train_on_renamed_npz(tmp_path, capsys):
    path = tmp_path / "x.npy"
    _write("npz", path)
    argv = ["train", "--data", str(path), "--steps", "2", "--out", str(tmp_path / "run")]
    assert cli_main(argv) == 2
    err = one_line_cli_error(capsys)
    assert "x.npy" in err and "zip archive" in err and "dtype" not in err
