"""Reliability of training and checkpoints: bad inputs and injected faults, and how the CLI reports them.

Every bad input must raise the stated exception type (or exit 2 with one line on stderr) with a
message that names the argument; every fault (flipped bytes, two writers, a stale lock, divergent
training, a full disk) must be reported as described, never silently produce a wrong result.
Training runs are tiny (a 16-wide MLP, a few steps) and share one compiled step.
"""

import errno
import json
import math
import os
import shutil
import socket
import subprocess
import sys
import warnings
from pathlib import Path

import jax
import numpy as np
import orbax.checkpoint as ocp
import pytest

from jaxode_diffusion.cli.app import main as cli_main
from jaxode_diffusion.training import (
    CheckpointCorruptError,
    NonFiniteStateError,
    RunLock,
    RunLockedError,
    TrainConfig,
    TrainingDivergedError,
    latest_step,
    load_run,
    train,
    verify_checkpoint,
)
from jaxode_diffusion.training import checkpoint as ckpt
from tests.helpers import one_line_cli_error, tree_equal

TINY = dict(
    data="eight_gaussians",
    batch_size=16,
    width=16,
    depth=1,
    n_train=64,
    n_heldout=16,
    progress=False,
    log_every=2,
    eval_every=0,
    ckpt_every=2,
    lr=3e-3,
)


@pytest.fixture(scope="module")
def template(tmp_path_factory):
    """A finished 4-step run with checkpoints at steps 2 and 4 (copied by each fault test)."""
    run = tmp_path_factory.mktemp("template") / "run"
    result = train(TrainConfig(steps=4, out_dir=str(run), **TINY))
    return run, result


def _copy(template, tmp_path) -> Path:
    dst = tmp_path / "run"
    shutil.copytree(template[0], dst)
    return dst


def _flip(path: Path, pos: int) -> None:
    data = bytearray(path.read_bytes())
    data[pos] ^= 0x01
    path.write_bytes(bytes(data))


def _data_files(run: Path, step: int) -> list[Path]:
    """The OCDBT array-data files of checkpoint ``step``, largest first (orbax may split the data
    over several files, and the largest is not always the one holding the parameters)."""
    files = [p for p in (run / "checkpoints" / str(step) / "state").rglob("*") if p.is_file()]
    data = [p for p in files if p.parent.name == "d" and "ocdbt.process_0" in p.parts]
    assert data, f"no OCDBT data file under {run / 'checkpoints' / str(step)}"
    return sorted(data, key=lambda p: p.stat().st_size, reverse=True)


def _corrupt(run: Path, step: int) -> None:
    """Flip one bit in the array data of checkpoint ``step`` where it changes a restored value."""
    for target in _data_files(run, step):
        original = target.read_bytes()
        for frac in (0.1, 0.3, 0.5, 0.2, 0.4, 0.6, 0.7, 0.8, 0.9):
            _flip(target, int(frac * len(original)))
            try:
                with warnings.catch_warnings():
                    warnings.simplefilter("ignore")
                    verify_checkpoint(run, step=step)
            except CheckpointCorruptError:
                return
            target.write_bytes(original)  # that byte is never read: try another
    raise AssertionError("no flipped byte changed the checkpoint")


# ----------------------------------------------------------------------------------------------
# Bad TrainConfig values: ValueError at construction, naming the field
# ----------------------------------------------------------------------------------------------

BAD_CONFIGS = [
    ("batch_size", 0),
    ("batch_size", -3),
    ("batch_size", 2.5),
    ("batch_size", True),
    ("steps", 0),
    ("steps", "10"),
    ("steps", None),
    ("lr", 0.0),
    ("lr", -1e-3),
    ("lr", float("nan")),
    ("lr", float("inf")),
    ("lr", "1e-3"),
    ("ema_decay", 1.0),
    ("ema_decay", -0.1),
    ("grad_clip", 0.0),
    ("grad_clip", float("nan")),
    ("weight_decay", -1.0),
    ("warmup_steps", -1),
    ("width", 0),
    ("depth", 0),
    ("channels", 0),
    ("n_train", 0),
    ("n_heldout", -1),
    ("dim", 0),
    ("seed", -1),
    ("eval_every", -1),
    ("ckpt_every", -5),
    ("log_every", 0),
    ("max_to_keep", 0),
    ("resume", "yes"),
    ("progress", 1),
    ("precondition", None),
    ("model", "cnn"),
    ("time_sampling", "bogus"),
    ("weighting", "bogus"),
    ("process", "vp_bogus"),
    ("data", ""),
    ("out_dir", 3),
    ("p_uncond", 1.5),
]


@pytest.mark.parametrize("field,value", BAD_CONFIGS, ids=[f"{f}={v!r}" for f, v in BAD_CONFIGS])
def test_bad_train_config_raises_naming_field(field, value):
    with pytest.raises(ValueError, match=field):
        TrainConfig(**{field: value})


def test_resume_without_out_dir():
    with pytest.raises(ValueError, match="resume=True needs out_dir"):
        TrainConfig(resume=True)


@pytest.mark.parametrize("stop_at", [-1, 2.5, True])
def test_bad_stop_at(stop_at):
    with pytest.raises(ValueError, match="stop_at"):
        train(TrainConfig(steps=2, **TINY), stop_at=stop_at)


def test_out_dir_in_the_way(tmp_path):
    (tmp_path / "file").write_text("x")
    with pytest.raises(ValueError, match=r"out_dir \(--out\) .*file.* is an existing file"):
        train(TrainConfig(steps=2, out_dir=str(tmp_path / "file"), **TINY))
    with pytest.raises(ValueError, match=r"out_dir \(--out\) .*file/sub.*is a file, not a directory"):
        train(TrainConfig(steps=2, out_dir=str(tmp_path / "file" / "sub"), **TINY))


# ----------------------------------------------------------------------------------------------
# Checkpoints: byte flips, missing checksum, newest intact on resume
# ----------------------------------------------------------------------------------------------


def test_byte_flip_in_array_data_detected(template, tmp_path):
    run = _copy(template, tmp_path)
    good = load_run(run)[0]
    clean = ckpt.content_checksum(ckpt.restore_checkpoint(run, None, 4)[0], {})["state"]
    detected_by_checksum = 0
    # Two positions in each data file (each load costs ~0.4 s and there are ~17 files), rotating
    # through four so that every position is tried in some file.
    fracs = (0.1, 0.3, 0.5, 0.7)
    for target, frac in [(t, fracs[(i + k) % 4]) for i, t in enumerate(_data_files(run, 4)) for k in (0, 2)]:
        size = target.stat().st_size
        shutil.rmtree(run)
        shutil.copytree(template[0], run)
        _flip(target, int(frac * size))
        try:
            with warnings.catch_warnings():
                warnings.simplefilter("ignore")
                score_fn = load_run(run)[0]
        except CheckpointCorruptError as err:
            assert "checkpoints/4" in str(err) and "corrupt" in str(err)
            assert err.step == 4 and err.path.endswith("checkpoints/4")
            detected_by_checksum += "sha256" in str(err)
            # orbax alone restores the flipped bytes without complaint: the checksum is what sees it
            if "sha256" in str(err):
                mngr = ocp.CheckpointManager(run / "checkpoints")
                raw = mngr.restore(4, args=ocp.args.Composite(state=ocp.args.StandardRestore()))
                mngr.close()
                assert ckpt.content_checksum(raw.state, {})["state"] != clean
        else:  # a flip in bytes that are never read: the result must be exactly the original
            assert tree_equal(score_fn.params, good.params)
    assert detected_by_checksum >= 1


def test_flipped_config_digit_detected(template, tmp_path):
    run = _copy(template, tmp_path)
    meta = run / "checkpoints" / "4" / "config" / "metadata"
    cfg = json.loads(meta.read_text())
    cfg["train"]["lr"] = 0.004  # still valid JSON, a different run
    meta.write_text(json.dumps(cfg))
    with pytest.raises(CheckpointCorruptError, match=r"checkpoints/4.*config does not match its sha256"):
        load_run(run)


def test_missing_checksum_detected(template, tmp_path):
    run = _copy(template, tmp_path)
    shutil.rmtree(run / "checkpoints" / "4" / "checksum")
    with pytest.raises(CheckpointCorruptError, match=r"checkpoints/4.*checksum item is missing"):
        verify_checkpoint(run)
    assert verify_checkpoint(run, step=2) == 2


def test_resume_uses_newest_intact_checkpoint(template, tmp_path):
    run = _copy(template, tmp_path)
    _corrupt(run, 4)
    with pytest.raises(CheckpointCorruptError, match="checkpoints/4"):
        load_run(run)
    with pytest.warns(UserWarning, match=r"checkpoints/4.*corrupt.*Resuming from step 2"):
        resumed = train(TrainConfig(steps=4, out_dir=str(run), resume=True, **TINY))
    # steps 3-4 recomputed from the intact step 2: bit-identical to the uninterrupted run
    assert tree_equal(resumed.params, template[1].params) and tree_equal(resumed.ema_params, template[1].ema_params)
    assert [p.name.split("-")[0] for p in (run / "corrupt").iterdir()] == ["4"]
    assert latest_step(run) == 4 and verify_checkpoint(run) == 4
    assert not (run / ckpt.LOCK_NAME).exists()


def test_resume_when_every_checkpoint_is_corrupt(template, tmp_path):
    run = _copy(template, tmp_path)
    for step in (2, 4):
        shutil.rmtree(run / "checkpoints" / str(step) / "checksum")
    with pytest.raises(CheckpointCorruptError, match=r"every checkpoint .* is corrupt \(steps \[2, 4\]\)"):
        train(TrainConfig(steps=4, out_dir=str(run), resume=True, **TINY))


def test_checkpoint_api_errors(tmp_path):
    with pytest.raises(ValueError, match="does not exist; pass the --out directory"):
        verify_checkpoint(tmp_path / "missing")
    (tmp_path / "empty").mkdir()
    with pytest.raises(ValueError, match="no checkpoint found in"):
        ckpt.read_config(tmp_path / "empty")


def test_step_not_among_checkpoints(template):
    with pytest.raises(ValueError, match=r"step 3 is not among the checkpoints.*\[2, 4\]"):
        load_run(template[0], step=3)


def test_save_refuses_nonfinite_state(tmp_path):
    mngr = ckpt.open_manager(tmp_path / "run")
    state = {"w": np.array([1.0, np.nan], np.float32), "k": np.zeros(2, np.uint32)}
    with pytest.raises(NonFiniteStateError, match=r"checkpoint 3: state leaf 'w' holds NaN.*learning rate"):
        ckpt.save_checkpoint(mngr, 3, state, {"a": 1})
    mngr.close()
    assert latest_step(tmp_path / "run") is None


# ----------------------------------------------------------------------------------------------
# One writer per run directory
# ----------------------------------------------------------------------------------------------


def test_second_writer_refused_in_process(tmp_path):
    run = tmp_path / "run"
    run.mkdir()
    with RunLock(run):
        with pytest.raises(RunLockedError, match=r"in use by another writer.*run\.lock.*rm ") as info:
            train(TrainConfig(steps=4, out_dir=str(run), **TINY))
        assert info.value.owner["pid"] == os.getpid()
    assert not (run / ckpt.LOCK_NAME).exists()
    assert latest_step(run) is None  # the refused writer wrote no checkpoint


def _write_lock(run: Path, pid: int, host: str | None = None) -> None:
    run.mkdir(parents=True, exist_ok=True)
    rec = dict(pid=pid, host=host or socket.gethostname(), started="2026-01-01T00:00:00+00:00", argv=["x"])
    (run / ckpt.LOCK_NAME).write_text(json.dumps(rec))


def test_second_writer_refused_live_process(tmp_path):
    run = tmp_path / "run"
    proc = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(60)"])
    try:
        _write_lock(run, proc.pid)
        with pytest.raises(RunLockedError, match=rf"pid {proc.pid} on host"):
            RunLock(run).acquire()
    finally:
        proc.kill()
        proc.wait()


def test_lock_from_another_host_refused(tmp_path):
    run = tmp_path / "run"
    _write_lock(run, 1, host="some-other-host")
    with pytest.raises(RunLockedError, match=r"another host.*delete the lock file"):
        RunLock(run).acquire()


def test_stale_lock_taken_over(tmp_path):
    run = tmp_path / "run"
    done = subprocess.run([sys.executable, "-c", "import os; print(os.getpid())"], capture_output=True, text=True)
    dead = int(done.stdout)
    _write_lock(run, dead)
    with pytest.warns(UserWarning, match=rf"taking over the stale lock .*pid {dead}"):
        res = train(TrainConfig(steps=4, out_dir=str(run), **TINY))
    assert res.step == 4 and latest_step(run) == 4
    assert not (run / ckpt.LOCK_NAME).exists()


def test_lock_released_after_crash(tmp_path):
    run = tmp_path / "run"

    def crash(step, loss):
        if step == 3:
            raise KeyboardInterrupt

    with pytest.raises(KeyboardInterrupt):
        train(TrainConfig(steps=4, out_dir=str(run), **TINY), callback=crash)
    assert not (run / ckpt.LOCK_NAME).exists() and latest_step(run) == 2


# ----------------------------------------------------------------------------------------------
# Divergence and I/O faults
# ----------------------------------------------------------------------------------------------


def test_divergent_training_stops_without_nonfinite_checkpoint(tmp_path):
    run = tmp_path / "run"
    cfg = TrainConfig(
        steps=8, out_dir=str(run), **{**TINY, "lr": 1e30, "ckpt_every": 1, "log_every": 4},
        warmup_steps=0, grad_clip=math.inf,
    )
    with pytest.raises(TrainingDivergedError, match=r"diverged at step \d+.*lower the learning rate") as info:
        train(cfg)
    err = info.value
    assert isinstance(err, FloatingPointError) and 1 <= err.step <= 8
    assert err.last_checkpoint == err.step - 1 or err.last_checkpoint is None
    # every checkpoint on disk is from before the divergence, intact and finite
    ckdir = run / "checkpoints"
    steps = sorted(int(p.name) for p in ckdir.iterdir() if p.name.isdigit()) if ckdir.exists() else []
    assert all(s < err.step for s in steps)
    for s in steps:
        state, _, _ = ckpt.restore_checkpoint(run, None, step=s)
        assert all(np.isfinite(np.asarray(x)).all() for x in jax.tree.leaves(state) if np.asarray(x).dtype.kind == "f")
    assert not (run / ckpt.LOCK_NAME).exists()


DISK_FULL = [
    OSError(errno.ENOSPC, "No space left on device"),
    # what tensorstore (under orbax) raises on a real full disk
    ValueError("RESOURCE_EXHAUSTED: Error writing ...: No space left on device [os_error_code='28']"),
]


@pytest.mark.parametrize("fault", DISK_FULL, ids=["OSError", "tensorstore"])
def test_disk_full_reported_at_the_failing_save(tmp_path, monkeypatch, fault):
    run = tmp_path / "run"
    seen = []

    def full(self, step, *a, **k):
        raise fault

    monkeypatch.setattr(ocp.CheckpointManager, "save", full)
    with pytest.raises(OSError) as info:
        train(TrainConfig(steps=4, out_dir=str(run), **TINY), callback=lambda s, loss: seen.append(s))
    err = info.value
    assert err.errno == errno.ENOSPC and err.filename.endswith(os.path.join("checkpoints", "2"))
    assert "No space left on device while writing checkpoint 2" in err.strerror and "free disk space" in err.strerror
    assert max(seen) == 2  # reported at the step that saves, not later
    assert not (run / ckpt.LOCK_NAME).exists()


def test_permission_error_writing_config_named(tmp_path, monkeypatch):
    run = tmp_path / "run"
    real = Path.write_text

    def denied(self, *a, **k):
        if self.name.startswith("config.json"):
            raise PermissionError(errno.EACCES, "Permission denied", str(self))
        return real(self, *a, **k)

    monkeypatch.setattr(Path, "write_text", denied)
    with pytest.raises(PermissionError, match=r"Permission denied while writing config.json") as info:
        train(TrainConfig(steps=4, out_dir=str(run), **TINY))
    assert info.value.filename.endswith("config.json")
    assert not (run / ckpt.LOCK_NAME).exists()


# ----------------------------------------------------------------------------------------------
# The faults above through the CLI: one line on stderr, exit 2; --debug shows the traceback
# (the CLI's own argument and user errors: tests/cli/test_errors.py)
# ----------------------------------------------------------------------------------------------


def test_cli_package_errors_one_line(template, tmp_path, capsys, monkeypatch):
    run = _copy(template, tmp_path)
    _corrupt(run, 4)
    argv = ["sample", "--checkpoint", str(run), "--solver", "rk4", "--steps", "2", "--num-samples", "4",
            "--out", str(tmp_path / "s.npy")]
    assert cli_main(argv) == 2
    assert "checkpoints/4" in one_line_cli_error(capsys)
    with pytest.raises(CheckpointCorruptError):  # --debug: the exception and its traceback
        cli_main(["--debug", *argv])
    with pytest.raises(CheckpointCorruptError):  # --debug after the subcommand works too
        cli_main([*argv, "--debug"])
    # a second writer, through the CLI
    locked = tmp_path / "locked"
    locked.mkdir()
    with RunLock(locked):
        assert cli_main(["train", "--data", "eight_gaussians", "--steps", "2", "--out", str(locked)]) == 2
    assert "run.lock" in one_line_cli_error(capsys)
    # a full disk, through the CLI: one line naming the path (config.json is the first write)
    real = Path.write_text

    def full(self, *a, **k):
        if self.name.startswith("config.json"):
            raise OSError(errno.ENOSPC, "No space left on device")
        return real(self, *a, **k)

    monkeypatch.setattr(Path, "write_text", full)
    argv = ["train", "--data", "eight_gaussians", "--steps", "2", "--out", str(tmp_path / "full")]
    assert cli_main(argv) == 2
    line = one_line_cli_error(capsys)
    assert "No space left on device while writing config.json" in line and "full/config.json" in line
