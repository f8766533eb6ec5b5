"""With every default, ``jaxode-diffusion sample --checkpoint DIR --solver S
--steps N`` is within the accuracy of the best named grid for the solver, on a trained 2-D model.

The CLI's default grid is measured on the model (``--grid auto``: ``autogrid.choose_grid`` on 64
pilot draws). A small model is trained here (a dataset and seed that benchmarks/defaults.py did not
use); for solvers of the exponential forms and of the DPM-Solver / UniPC family the grid chosen on
the pilot draws must be within ``RATIO`` of the best named grid on *other* draws of the prior.
"""

import json

import jax
import numpy as np
import pytest

import jaxode_diffusion as jd
from jaxode_diffusion.analysis.distances import rmse
from jaxode_diffusion.sampling.core import make_times, solve
from jaxode_diffusion.training import TrainConfig, load_run, train
from jaxode_diffusion.training.data import unnormalize
from jaxode_diffusion.tuning.autogrid import choose_grid

# One per exponential form (RK in x0-lambda, eps-rho, ou-exp) and one per code path of the
# DPM-Solver / UniPC family (singlestep DPM-Solver-2, multistep DPM-Solver++ 2M, predictor-corrector
# UniPC); one compilation each. (dpmpp_3m and edm_heun were here too: they share their family's code
# path and cost the suite 20 s.)
SOLVERS = ("x0-lambda:rk4", "eps-rho:heun", "ou-exp:heun", "dpm_solver_2", "dpmpp_2m", "unipc_bh2_2")
NUM_STEPS = 10
RATIO = 1.3  # "within the accuracy of the best named grid": at most 30 % above it
PILOT_KEY = 20261201  # the CLI's pilot key


@pytest.fixture(scope="module")
def trained(tmp_path_factory):
    # Module-scoped: each xdist worker that runs tests of this module trains once. A width-64 MLP on
    # minibatches of 128 (the default for d = 2 is width 256 on 256: the fixture took 64 s under the
    # test session's -O0 compile flags); what is tested is the grid choice for this model's own ODE.
    out = tmp_path_factory.mktemp("trained2d") / "run"
    train(TrainConfig(data="rings", steps=400, seed=21, width=64, batch_size=128, n_train=4096, n_heldout=256,
                      out_dir=str(out), progress=False))
    score_fn, _ = load_run(str(out))
    proc = score_fn.process
    x_pilot = proc.prior_sample(jax.random.key(PILOT_KEY), (64, 2))
    x = proc.prior_sample(jax.random.key(5), (64, 2))  # evaluation draws, independent of the pilot
    # Reference: RK4 in the exponential x0-lambda form on 160 log-SNR steps, checked below against 80
    # steps (~16x its error). These are choose_grid's own reference pair at 10 steps, on as many draws:
    # the two programs are compiled once for both (a 320-step reference was one more compile, 4 s).
    ref = solve(score_fn, proc, x, make_times(proc, num_steps=160, grid="log_snr"), "x0-lambda:rk4").samples
    ref_half = solve(score_fn, proc, x, make_times(proc, num_steps=80, grid="log_snr"), "x0-lambda:rk4").samples
    return out, score_fn, proc, x_pilot, x, ref, ref_half


def _rmse(a, b):
    return float(rmse(a, b))


@pytest.mark.parametrize("solver", SOLVERS)
def test_measured_default_grid_is_within_the_best_named_grid(trained, solver):
    _, score_fn, proc, x_pilot, x, ref, ref_half = trained
    choice = choose_grid(score_fn, proc, x_pilot, solver, NUM_STEPS)
    assert choice.reference_error <= 0.1 * min(choice.errors.values())
    err = {}
    for g in jd.sampling.GRID_NAMES:  # one compiled program: the grids have the same length
        y = solve(score_fn, proc, x, make_times(proc, num_steps=NUM_STEPS, grid=g), solver, throw=False).samples
        err[g] = _rmse(y, ref)
    assert _rmse(ref, ref_half) < 0.1 * min(err.values())  # the evaluation reference is tight
    finite = {g: e for g, e in err.items() if np.isfinite(e)}
    best = min(finite, key=finite.get)
    assert err[choice.grid] <= RATIO * finite[best], (
        f"{solver}: chosen {choice.grid!r} RMSE {err[choice.grid]:.4g} vs best {best!r} {finite[best]:.4g} "
        f"on new draws ({err}); pilot errors {choice.errors}"
    )


def test_cli_sample_defaults_measure_cache_and_reuse_the_grid(trained, tmp_path):
    from jaxode_diffusion.cli.app import main

    out, score_fn, proc, x_pilot, _, _, _ = trained
    meta = load_run(str(out))[1]["data"]
    # 64 draws, as many as the pilot: the dpmpp_2m program at 10 steps that choose_grid compiled serves.
    x_init = proc.prior_sample(jax.random.key(3), (64, 2))
    args = ["sample", "--checkpoint", str(out), "--solver", "dpmpp_2m", "--steps", "10", "--num-samples", "64",
            "--seed", "3"]
    assert main(args + ["--out", str(tmp_path / "a.npy")]) == 0  # default --grid: auto
    cache = json.loads((out / "grid_choices.json").read_text())
    (key,) = [k for k in cache if k.startswith("dpmpp_2m|10|")]
    grid = cache[key]["grid"]
    assert grid == choose_grid(score_fn, proc, x_pilot, "dpmpp_2m", 10).grid
    expect = jd.sample(score_fn, proc, x_init, solver="dpmpp_2m", num_steps=10, grid=grid)
    np.testing.assert_allclose(np.load(tmp_path / "a.npy"), unnormalize(np.asarray(expect), meta), rtol=1e-6,
                               atol=1e-6)
    # A second call reads the cache (same output); --grid table is sample()'s table default.
    assert main(args + ["--out", str(tmp_path / "b.npy")]) == 0
    np.testing.assert_array_equal(np.load(tmp_path / "a.npy"), np.load(tmp_path / "b.npy"))
    assert main(args + ["--grid", "table", "--out", str(tmp_path / "c.npy")]) == 0
    table = jd.sample(score_fn, proc, x_init, solver="dpmpp_2m", num_steps=10)  # grid=None: the table
    np.testing.assert_allclose(np.load(tmp_path / "c.npy"), unnormalize(np.asarray(table), meta), rtol=1e-6,
                               atol=1e-6)


def test_cli_sample_error_grids_passes_the_option_caches_and_reuses_the_times(trained, tmp_path, capsys,
                                                                             monkeypatch):
    """``sample --error-grids``: the CLI asks choose_grid for error grids, caches the chosen error grid's
    times under its own key and samples on them (choose_grid itself: tests/tuning/test_error_grids.py)."""
    import jaxode_diffusion.tuning.autogrid as autogrid
    from jaxode_diffusion.cli.app import main

    out, score_fn, proc, _, _, _, _ = trained
    meta = load_run(str(out))[1]["data"]
    ts = np.asarray(make_times(proc, num_steps=6, grid="log_snr")) ** 1.1  # not a named grid
    calls = []

    def fake_choose_grid(score_fn, process, x_pilot, solver, num_steps, *, error_grids=False, **kw):
        calls.append((solver, num_steps, error_grids, x_pilot.shape))
        errors = {g: 1.0 for g in jd.sampling.GRID_NAMES} | {"error:r2": 0.5}
        return autogrid.GridChoice(grid="error:r2", errors=errors, reference_error=1e-3, reference_steps=160,
                                   solver=solver, num_steps=num_steps, num_pilot=x_pilot.shape[0], ts=ts)

    monkeypatch.setattr(autogrid, "choose_grid", fake_choose_grid)
    x_init = proc.prior_sample(jax.random.key(4), (16, 2))
    args = ["sample", "--checkpoint", str(out), "--solver", "unipc_bh2_2", "--steps", "6", "--num-samples", "16",
            "--seed", "4", "--error-grids"]
    assert main(args + ["--out", str(tmp_path / "a.npy")]) == 0
    assert calls == [("unipc_bh2_2", 6, True, (64, 2))]
    cache = json.loads((out / "grid_choices.json").read_text())
    (key,) = [k for k in cache if k.startswith("unipc_bh2_2|6|") and k.endswith("|error_grids")]
    assert cache[key]["grid"] == "error:r2" and np.allclose(cache[key]["ts"], ts, rtol=0, atol=0)
    expect = jd.sample(score_fn, proc, x_init, solver="unipc_bh2_2", grid=ts, num_steps=None)
    np.testing.assert_allclose(np.load(tmp_path / "a.npy"), unnormalize(np.asarray(expect), meta), rtol=1e-6,
                               atol=1e-6)
    assert main(args + ["--out", str(tmp_path / "b.npy")]) == 0  # read from the cache, not measured again
    assert len(calls) == 1
    np.testing.assert_array_equal(np.load(tmp_path / "a.npy"), np.load(tmp_path / "b.npy"))
    # Without --error-grids the same solver and steps are measured again (another cache key).
    assert main(args[:-1] + ["--out", str(tmp_path / "d.npy")]) == 0
    assert calls[-1] == ("unipc_bh2_2", 6, False, (64, 2))
    capsys.readouterr()
    assert main(args + ["--grid", "log_snr", "--out", str(tmp_path / "c.npy")]) == 2
    assert "--error-grids" in capsys.readouterr().err and not (tmp_path / "c.npy").exists()
