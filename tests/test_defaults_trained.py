"""Issue 14, "done when": with every default, ``jaxode-diffusion sample --checkpoint DIR --solver S
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
from jaxode_diffusion.autogrid import choose_grid
from jaxode_diffusion.data import unnormalize
from jaxode_diffusion.distances import rmse
from jaxode_diffusion.sampling import make_times, solve
from jaxode_diffusion.training import TrainConfig, load_run, train

# One per exponential form (RK in x0-lambda, eps-rho, ou-exp) and the DPM-Solver / UniPC family
# (DPM-Solver-2, DPM-Solver++ 2M and 3M, UniPC, EDM Heun); one compilation each.
SOLVERS = ("x0-lambda:rk4", "eps-rho:heun", "ou-exp:heun", "dpm_solver_2", "dpmpp_2m", "dpmpp_3m", "unipc_bh2_2",
           "edm_heun")
NUM_STEPS = 10
RATIO = 1.3  # "within the accuracy of the best named grid": at most 30 % above it
PILOT_KEY = 20261201  # the CLI's pilot key


pytestmark = pytest.mark.xdist_group("trained2d")  # one worker trains the model once (--dist loadgroup)


@pytest.fixture(scope="module")
def trained(tmp_path_factory):
    out = tmp_path_factory.mktemp("trained2d") / "run"
    train(TrainConfig(data="rings", steps=400, seed=21, out_dir=str(out), progress=False))
    score_fn, _ = load_run(str(out))
    proc = score_fn.process
    x_pilot = proc.prior_sample(jax.random.key(PILOT_KEY), (64, 2))
    x = proc.prior_sample(jax.random.key(5), (64, 2))  # evaluation draws, independent of the pilot
    # Reference: RK4 in the exponential x0-lambda form on 320 log-SNR steps (choose_grid's own
    # reference at 10 steps uses 160; 320 is checked against it below).
    ref = solve(score_fn, proc, x, make_times(proc, num_steps=320, grid="log_snr"), "x0-lambda:rk4").samples
    ref_half = solve(score_fn, proc, x, make_times(proc, num_steps=160, grid="log_snr"), "x0-lambda:rk4").samples
    return out, score_fn, proc, x_pilot, x, ref, ref_half


def _rmse(a, b):
    return float(rmse(a, b))


@pytest.mark.parametrize("solver", SOLVERS)
def test_measured_default_grid_is_within_the_best_named_grid(trained, solver):
    _, score_fn, proc, x_pilot, x, ref, ref_half = trained
    choice = choose_grid(score_fn, proc, x_pilot, solver, NUM_STEPS)
    assert choice.reference_error <= 0.1 * min(choice.errors.values())
    err = {}
    for g in jd.GRID_NAMES:  # one compiled program: the grids have the same length
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
    from jaxode_diffusion.cli import main

    out, score_fn, proc, x_pilot, _, _, _ = trained
    meta = load_run(str(out))[1]["data"]
    x_init = proc.prior_sample(jax.random.key(3), (16, 2))
    args = ["sample", "--checkpoint", str(out), "--solver", "dpmpp_2m", "--steps", "10", "--num-samples", "16",
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
