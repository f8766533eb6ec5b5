"""Sharded sampling and data-parallel training: 8 CPU devices in one process, and two processes
of 4 CPU devices each on localhost, against the one-device result.

Each configuration runs in fresh subprocesses (tests/sampling/distributed_worker.py) so that the device
count and float32 are set before JAX starts, independently of this process's conftest.
"""

import os
import socket
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

WORKER = Path(__file__).with_name("distributed_worker.py")
ROOT = WORKER.parents[2]
TIMEOUT = 240  # seconds per subprocess: a hung coordinator fails the test instead of hanging it


def _env(num_devices: int) -> dict:
    env = dict(os.environ)
    env["XLA_FLAGS"] = (
        f"--xla_force_host_platform_device_count={num_devices} "
        + os.environ.get("JAXODE_TEST_COMPILE_FLAGS", "")  # the session's compile flags (conftest)
    )
    env["JAX_PLATFORMS"] = "cpu"
    env.pop("JAX_ENABLE_X64", None)
    env["PYTHONPATH"] = os.pathsep.join([str(ROOT), env.get("PYTHONPATH", "")])
    return env


def _free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _check(proc: subprocess.CompletedProcess, what: str) -> None:
    assert proc.returncode == 0, f"{what} failed ({proc.returncode}):\n{proc.stdout[-3000:]}\n{proc.stderr[-3000:]}"


@pytest.fixture(scope="module")
def single(tmp_path_factory):
    out = tmp_path_factory.mktemp("dist") / "single.npz"
    proc = subprocess.run(
        [sys.executable, str(WORKER), str(out), "--mode", "single"],
        env=_env(8), capture_output=True, text=True, timeout=TIMEOUT, cwd=ROOT,
    )
    _check(proc, "8-device worker")
    return dict(np.load(out), _out=str(out))


def _params(d, prefix=""):
    keys = sorted((k for k in d if k.startswith(prefix + "param_")), key=lambda k: int(k.rsplit("_", 1)[1]))
    return [d[k] for k in keys]


def test_eight_devices_sampling_matches_one_device(single):
    assert int(single["num_devices"]) == 8
    np.testing.assert_allclose(single["samples"], single["ref_samples"], rtol=1e-5, atol=1e-5)


def test_eight_devices_training_matches_one_device(single):
    par, ref = _params(single), _params(single, "ref_")
    assert len(par) == len(ref) > 0
    for a, b in zip(par, ref, strict=True):
        np.testing.assert_allclose(a, b, rtol=2e-4, atol=2e-5)  # 20 AdamW steps: rounding only
    np.testing.assert_allclose(single["heldout_loss"], single["ref_heldout_loss"], rtol=1e-4)


def test_data_parallel_checkpoint_restores_on_one_device(single, tmp_path_factory):
    # Same format as a one-device run: this process restores it with the ordinary load_run.
    import jax

    from jaxode_diffusion.training import load_run

    run_dir = single["_out"] + "_run"
    score, run_cfg = load_run(run_dir, ema=False)
    assert run_cfg["train"]["data_parallel"] is True and run_cfg["step"] == 20
    restored = [np.asarray(x) for x in jax.tree.leaves(score.params)]
    for a, b in zip(restored, _params(single), strict=True):
        np.testing.assert_array_equal(a, b)


def wait_all(procs) -> list[subprocess.CompletedProcess]:
    """Wait for every worker (``TIMEOUT`` each) and collect its output; kill any still running after."""
    results = []
    try:
        for p in procs:
            stdout, stderr = p.communicate(timeout=TIMEOUT)
            results.append(subprocess.CompletedProcess(p.args, p.returncode, stdout, stderr))
    finally:
        for p in procs:
            if p.poll() is None:
                p.kill()
    return results


def test_two_processes_match_one_device(single, tmp_path):
    out = tmp_path / "multi.npz"
    port = _free_port()
    procs = [
        subprocess.Popen(
            [sys.executable, str(WORKER), str(out), "--mode", "multi", "--process-id", str(i),
             "--num-processes", "2", "--port", str(port)],
            env=_env(4), stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, cwd=ROOT,
        )
        for i in range(2)
    ]
    for i, r in enumerate(wait_all(procs)):
        _check(r, f"process {i} of 2")
    multi = dict(np.load(out))
    assert int(multi["num_processes"]) == 2 and int(multi["num_devices"]) == 8
    np.testing.assert_allclose(multi["samples"], single["ref_samples"], rtol=1e-5, atol=1e-5)
    for a, b in zip(_params(multi), _params(single, "ref_"), strict=True):
        np.testing.assert_allclose(a, b, rtol=2e-4, atol=2e-5)
