"""Saved tuned samplers and learned grids: strict JSON on writing (non-finite -> null), and files of
earlier releases (non-finite numbers as the string "nan" in tuned samplers, bare NaN in grids) still load."""

import json
import math

import numpy as np

from jaxode_diffusion.processes import VPLinear
from jaxode_diffusion.tuning.grid_optimization import OptimizedGrid, load_grid, process_spec
from jaxode_diffusion.tuning.tuner import TunedSampler, load_tuned

TS = [1.0, 0.3, 0.05, 1e-3]


def _tuned() -> TunedSampler:
    rows = [dict(solver="dpmpp_2m", grid="log_snr", num_steps=3, nfe=3, heldout_error=0.1, status="ok"),
            dict(solver="rk4", grid="learned(edm)", num_steps=1, nfe=4, heldout_error=float("nan"),
                 start_heldout_error=float("inf"), status="non-finite samples", ts=[1.0, 1e-3]),
            dict(solver="heun", grid="uniform", num_steps=None, nfe=None, heldout_error=float("nan"),
                 status="skipped: out of time")]
    return TunedSampler(solver="dpmpp_2m", ts=np.asarray(TS), nfe=3, num_steps=3, grid="log_snr",
                        heldout_error=0.1, nfe_budget=3, process=process_spec(VPLinear()), candidates=rows)


def _strict(text: str):
    def refuse(token):
        raise AssertionError(f"non-strict JSON token {token}")

    return json.loads(text, parse_constant=refuse)


def test_tuned_sampler_writes_null_and_reads_it_back_as_nan(tmp_path):
    path = _tuned().save(tmp_path / "tuned.json")
    raw = _strict(path.read_text())
    assert raw["candidates"][1]["heldout_error"] is None and raw["candidates"][1]["start_heldout_error"] is None
    t = load_tuned(path, process=VPLinear())
    assert t.heldout_error == 0.1 and np.allclose(t.ts, TS)
    c = t.candidates[1]
    assert math.isnan(c["heldout_error"]) and math.isnan(c["start_heldout_error"])  # inf -> null -> nan
    assert "| rk4 | learned(edm) | 1 | 4 | nan |" in t.table()


def test_tuned_sampler_of_an_earlier_release_loads(tmp_path):
    """Earlier releases wrote non-finite errors as the strings "nan" / "inf"."""
    d = _tuned().to_dict()
    d["candidates"][1].update(heldout_error="nan", start_heldout_error="inf")
    d["candidates"][2]["heldout_error"] = "nan"
    (tmp_path / "old.json").write_text(json.dumps(d))
    t = load_tuned(tmp_path / "old.json", process=VPLinear())
    assert math.isnan(t.candidates[1]["heldout_error"]) and t.candidates[1]["start_heldout_error"] == math.inf
    assert math.isnan(t.candidates[2]["heldout_error"]) and t.solver == "dpmpp_2m"
    assert t.table() == load_tuned(_tuned().save(tmp_path / "new.json")).table()


def _grid() -> OptimizedGrid:
    return OptimizedGrid(ts=np.asarray(TS), solver="dpmpp_2m", num_steps=3, process=process_spec(VPLinear()),
                         init_grid="log_snr", calibration_loss=float("nan"), initial_calibration_loss=0.5,
                         history=[0.4, float("nan")], selection_error=0.3, initial_selection_error=0.3,
                         selection_history=[float("inf")], improved=False, best_iteration=0, iterations=2,
                         nonfinite_iteration=1)


def test_grid_writes_null_and_reads_it_back_as_nan(tmp_path):
    path = _grid().save(tmp_path / "grid.json")
    raw = _strict(path.read_text())
    assert raw["calibration_loss"] is None and raw["history"] == [0.4, None]
    g = load_grid(path, process=VPLinear())
    assert math.isnan(g.calibration_loss) and g.history[0] == 0.4 and math.isnan(g.history[1])
    assert math.isnan(g.selection_history[0]) and g.initial_calibration_loss == 0.5


def test_grid_of_an_earlier_release_loads(tmp_path):
    """Earlier releases wrote non-finite numbers as bare NaN / Infinity tokens."""
    d = _grid().to_dict()
    (tmp_path / "old.json").write_text(json.dumps(d))  # json's default: NaN, Infinity
    assert "NaN" in (tmp_path / "old.json").read_text()
    g = load_grid(tmp_path / "old.json")
    assert math.isnan(g.calibration_loss) and math.isnan(g.history[1]) and g.selection_history == [math.inf]
    assert np.allclose(g.ts, TS) and g.solver == "dpmpp_2m"
