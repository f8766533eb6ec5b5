"""Multi-process training that checkpoints, is killed, and resumes: two processes of 4 CPU devices
on localhost (jax.distributed, gloo), one run directory, one lock held by process 0.

Each job runs in fresh subprocesses (tests/training/distributed_ckpt_worker.py); the helpers that
set the device count and start processes are those of tests/sampling/test_distributed.py.
"""

import json
import os
import shutil
import socket
import subprocess
import sys
from pathlib import Path

import numpy as np

from tests.sampling.test_distributed import ROOT, _check, _env, _free_port, wait_all

WORKER = Path(__file__).with_name("distributed_ckpt_worker.py")


def _start(out, *args, num_processes=2, devices=4):
    """Start one job's processes (not waited for)."""
    port = _free_port()
    multi = ["--num-processes", str(num_processes), "--port", str(port)] if num_processes > 1 else []
    return [
        subprocess.Popen(
            [sys.executable, str(WORKER), str(out), *args, *multi, *(["--process-id", str(i)] if multi else [])],
            env=_env(devices), stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, cwd=ROOT,
        )
        for i in range(num_processes)
    ]


def _params(path):
    d = np.load(path)
    return [d[k] for k in sorted((k for k in d if k.startswith("param_")), key=lambda k: int(k.split("_")[1]))]


def test_killed_two_process_run_resumes_to_the_uninterrupted_state(tmp_path):
    run, ref_dir = tmp_path / "run", tmp_path / "reference"
    # Job 1: an uninterrupted reference run, then the same run SIGKILLed at step 6 (checkpoint 4 written).
    killed = wait_all(_start(tmp_path / "ref.npz", "--run", str(run), "--reference", str(ref_dir), "--kill-at", "6"))
    assert [r.returncode for r in killed] == [-9, -9], [r.stderr[-2000:] for r in killed]
    assert sorted(os.listdir(run / "checkpoints")) == ["4"]
    assert json.loads((run / "run.lock").read_text())["argv"][-1] == "0"  # process 0's lock, left by the kill
    assert not list(run.rglob("ocdbt.process_1"))  # one writer: process 0 (orbax's primary host)
    shutil.copytree(run, tmp_path / "run_one_process")
    # Job 2 (2 processes x 4 devices) and job 3 (1 process x 4 devices) resume the killed run.
    jobs = [_start(tmp_path / "two.npz", "--run", str(run), "--resume"),
            _start(tmp_path / "one.npz", "--run", str(tmp_path / "run_one_process"), "--resume", num_processes=1)]
    for what, job in zip(("2-process resume", "1-process resume"), jobs):
        for i, r in enumerate(wait_all(job)):
            _check(r, f"{what}, process {i}")
            if i == 0:
                assert "taking over the stale lock" in r.stderr
    assert sorted(os.listdir(run / "checkpoints")) == ["4", "8"] and not (run / "run.lock").exists()
    ref = _params(tmp_path / "ref.npz")
    # Same processes, devices and XLA program: bit-identical to the uninterrupted run.
    for a, b in zip(_params(tmp_path / "two.npz"), ref, strict=True):
        np.testing.assert_array_equal(a, b)
    # 4 devices instead of 8: the gradient all-reduce sums in another order, so equal up to rounding.
    for a, b in zip(_params(tmp_path / "one.npz"), ref, strict=True):
        np.testing.assert_allclose(a, b, rtol=1e-5, atol=1e-6)


def test_two_process_run_refused_when_the_directory_is_locked(tmp_path):
    run = tmp_path / "run"
    run.mkdir()
    owner = dict(pid=os.getpid(), host=socket.gethostname(), started="2026-01-01T00:00:00+00:00", argv=["x"])
    (run / "run.lock").write_text(json.dumps(owner))
    results = wait_all(_start(tmp_path / "x.npz", "--run", str(run)))
    assert [r.returncode for r in results] == [1, 1]
    assert "RunLockedError" in results[0].stderr and f"pid {os.getpid()} on host" in results[0].stderr
    assert "process 0 could not claim the run directory" in results[1].stderr
    assert not (run / "checkpoints").exists() and not (tmp_path / "x.npz").exists()
