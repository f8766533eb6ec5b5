"""benchmarks/device_suite.py runs end to end on CPU with --tiny and writes its table."""

import os
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]


def test_device_suite_tiny_writes_table(tmp_path):
    out = tmp_path / "suite.md"
    env = dict(os.environ, JAX_PLATFORMS="cpu")
    # One device, as on a single accelerator; the session's compile flags (conftest).
    env["XLA_FLAGS"] = os.environ.get("JAXODE_TEST_COMPILE_FLAGS", "")
    env.pop("JAX_ENABLE_X64", None)
    proc = subprocess.run(
        [sys.executable, "-m", "benchmarks.device_suite", "--tiny", "--out", str(out)],
        env=env, capture_output=True, text=True, timeout=600, cwd=ROOT,
    )
    assert proc.returncode == 0, proc.stderr[-4000:]
    text = out.read_text()
    assert "CPU tiny settings" in text and "Command: `python -m benchmarks.device_suite --tiny`" in text
    assert "Device: cpu" in text and "No GPU/TPU was available" in text
    rows = [line for line in text.splitlines() if line.startswith("| float32") or line.startswith("| bfloat16")]
    # 2 dtypes x 3 solvers (one NFE in tiny mode), each with a positive time and overhead.
    assert len(rows) == 6
    for row in rows:
        cells = [c.strip() for c in row.strip("|").split("|")]
        assert float(cells[2]) > 0 and float(cells[3].split()[0]) > 0 and float(cells[5]) > 0
    rk4 = [r for r in rows if "| rk4 |" in r]
    assert all(float(r.strip("|").split("|")[6]) > 0 for r in rk4)  # ours / diffrax measured
    assert text.count("| 192 |") == 1 and "| 768 |" not in text  # tiny: regularity at 8x8x3 only
    assert "steps/s" in text
