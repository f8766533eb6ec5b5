"""``sample --grid auto`` sizes its pilot to the sampling asked for: a pilot when the budget allows it,
the table's grid with a one-line note when it does not; only measured choices are cached. The cost of
a score evaluation is injected (``autogrid.seconds_per_draw_evaluation``), so nothing here is timed."""

import json

import jax
import numpy as np
import pytest

import jaxode_diffusion as jd
from jaxode_diffusion.cli.app import main
from jaxode_diffusion.training import TrainConfig, load_run, train
from jaxode_diffusion.training.data import unnormalize
from jaxode_diffusion.tuning import autogrid


@pytest.fixture(scope="module")
def run_dir(tmp_path_factory):
    out = tmp_path_factory.mktemp("pilot") / "run"
    train(TrainConfig(data="gmm", steps=5, seed=3, width=16, batch_size=32, n_train=256, n_heldout=32,
                      out_dir=str(out), progress=False))
    return out


def _args(out, tmp_path, name, n=8):
    return ["sample", "--checkpoint", str(out), "--solver", "dpmpp_2m", "--steps", "4", "--num-samples", str(n),
            "--seed", "1", "--out", str(tmp_path / name)]


def test_no_pilot_when_the_budget_does_not_allow_it(run_dir, tmp_path, capsys, monkeypatch):
    monkeypatch.setattr(autogrid, "seconds_per_draw_evaluation", lambda *a, **k: 1.0)
    monkeypatch.setattr(autogrid, "choose_grid", lambda *a, **k: pytest.fail("no pilot expected"))
    cache = run_dir / "grid_choices.json"
    cache.unlink(missing_ok=True)
    assert main(_args(run_dir, tmp_path, "a.npy")) == 0
    out = capsys.readouterr().out
    score_fn, cfg = load_run(str(run_dir))
    table = jd.sampling.default_grid_for("dpmpp_2m", score_fn.process)
    (note,) = [line for line in out.splitlines() if line.startswith("grid ")]
    assert note.startswith(f"grid {table} (the measured table's grid for dpmpp_2m; no pilot")
    assert not cache.exists()  # a fallback is not a measurement: a larger request may measure later
    x_init = score_fn.process.prior_sample(jax.random.key(1), (8, *cfg["data"]["event_shape"]))
    expect = jd.sample(score_fn, score_fn.process, x_init, solver="dpmpp_2m", num_steps=4)  # the table's grid
    np.testing.assert_allclose(np.load(tmp_path / "a.npy"), unnormalize(np.asarray(expect), cfg["data"]),
                               rtol=1e-6, atol=1e-6)


def test_pilot_sized_to_the_budget_then_cached(run_dir, tmp_path, capsys, monkeypatch):
    # 0.5 ms per draw evaluation, 8 samples x 4 evaluations: the 3 s floor allows 16 draws, a 40-step reference.
    monkeypatch.setattr(autogrid, "seconds_per_draw_evaluation", lambda *a, **k: 5e-4)
    calls = []
    real = autogrid.choose_grid

    def spy(score_fn, process, x_pilot, solver, num_steps, **kw):
        calls.append((x_pilot.shape, kw.get("reference_steps"), kw.get("max_reference_steps")))
        return real(score_fn, process, x_pilot, solver, num_steps, **kw)

    monkeypatch.setattr(autogrid, "choose_grid", spy)
    cache = run_dir / "grid_choices.json"
    cache.unlink(missing_ok=True)
    assert main(_args(run_dir, tmp_path, "a.npy")) == 0
    out = capsys.readouterr().out
    assert calls == [((16, 2), 40, 40)]
    assert "--grid auto: measuring the grid for dpmpp_2m at 4 steps on 16 pilot draws" in out
    (key,) = json.loads(cache.read_text())
    saved = json.loads(cache.read_text())[key]
    assert saved["num_pilot"] == 16 and saved["reason"] and set(saved["distances"]) == set(saved["errors"])
    assert f"grid {saved['grid']} (" in out
    assert main(_args(run_dir, tmp_path, "b.npy")) == 0  # from the cache: no second pilot
    assert len(calls) == 1 and "measured earlier" in capsys.readouterr().out
    np.testing.assert_array_equal(np.load(tmp_path / "a.npy"), np.load(tmp_path / "b.npy"))


def test_a_large_request_gets_the_full_pilot(run_dir, tmp_path, capsys, monkeypatch):
    monkeypatch.setattr(autogrid, "seconds_per_draw_evaluation", lambda *a, **k: 5e-4)
    calls = []

    def fake(score_fn, process, x_pilot, solver, num_steps, **kw):
        calls.append((x_pilot.shape[0], kw.get("reference_steps")))
        return autogrid.GridChoice(grid="edm", errors={"edm": 0.1}, reference_error=1e-4, reference_steps=160,
                                   solver=solver, num_steps=num_steps, num_pilot=x_pilot.shape[0],
                                   baseline="log_snr", reason="test")

    monkeypatch.setattr(autogrid, "choose_grid", fake)
    (run_dir / "grid_choices.json").unlink(missing_ok=True)
    assert main(_args(run_dir, tmp_path, "a.npy", n=100_000)) == 0
    assert calls == [(64, 160)]
