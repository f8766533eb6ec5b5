"""Bad inputs to the tuning layer: ``tune``, ``optimize_grid``'s references, the saved-file loaders
and the ``tune`` CLI. Each ends in a clear error naming the argument (or file and field), the
value and the fix, or in a correct result -- never in a step limit or "try more steps".

Part of the reliability suite (tests/sampling/test_bad_inputs.py has the conventions).
"""

import json
import math

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from jaxode_diffusion import GaussianMixture, VPLinear
from jaxode_diffusion.tuning.grid_optimization import (
    OptimizedGrid,
    load_grid,
    optimize_grid,
    reference_tolerance,
    tight_reference,
)
from jaxode_diffusion.tuning.tuner import TunedSampler, load_tuned, tune
from jaxode_diffusion.utils.checks import check_finite_score
from tests.helpers import one_line_cli_error

VP = VPLinear()
GM = GaussianMixture.ring(4)
SCORE = GM.score_fn(VP)
X = VP.prior_sample(jax.random.PRNGKey(5), (16, 2)).astype(jnp.float32)  # float32 whether or not x64 is on


def _tune(**kw):
    args = dict(score_fn=SCORE, process=VP, calib_x_init=X, nfe=4, solvers=["ddim"], learn_top=0, progress=False)
    args.update(kw)
    return tune(args.pop("score_fn"), args.pop("process"), args.pop("calib_x_init"), **args)


# --- tune: arguments refused before any work ---------------------------------------------------
@pytest.mark.parametrize("max_seconds", [0, 0.0, -1.0, float("nan"), float("inf"), "10", True])
def test_tune_refuses_a_time_limit_without_time(max_seconds):
    with pytest.raises(ValueError, match=r"max_seconds=.* must be a finite number of seconds > 0"):
        _tune(max_seconds=max_seconds)


@pytest.mark.parametrize("solvers, match", [
    ([], r"solvers=\[\] is empty: nothing to tune"),
    ((), r"solvers=\(\) is empty"),
    ("ddim", r"solvers='ddim' must be a list of names"),
    (3, r"solvers=3 must be a list of names"),
])
def test_tune_refuses_empty_or_string_solver_lists(solvers, match):
    with pytest.raises(ValueError, match=match):
        _tune(solvers=solvers)


@pytest.mark.parametrize("grids, match", [
    ([], r"grids=\[\] is empty"),
    ("log_snr", r"grids='log_snr' must be a list of names"),
])
def test_tune_refuses_empty_or_string_grid_lists(grids, match):
    with pytest.raises(ValueError, match=match):
        _tune(grids=grids)


@pytest.mark.parametrize("rtol, match", [
    ("a", r"rtol='a' must be a finite number > 0"),
    (-1e-6, r"rtol=-1e-06 must be a finite number > 0"),
    (0.0, r"rtol=0.0 must be a finite number > 0"),
    (float("nan"), r"rtol=nan must be a finite number > 0"),
    (1e-12, r"rtol=1e-12 is below what float32 can reach .*pass rtol >= 9.5e-07"),
])
def test_tune_refuses_a_tolerance_the_batch_cannot_reach(rtol, match):
    with pytest.raises(ValueError, match=match):
        _tune(rtol=rtol)


# --- tune: NaN inputs and NaN scores are named before steps or budgets are blamed -------------
@pytest.mark.parametrize("row, value", [(0, jnp.nan), (3, jnp.inf), (15, -jnp.inf)])
def test_tune_names_a_nonfinite_calibration_row(row, value):
    with pytest.raises(ValueError, match=rf"tune: calib_x_init holds NaN/inf values: row {row} first .*bad input"):
        _tune(calib_x_init=X.at[row, 1].set(value))


def test_tune_names_a_nonfinite_heldout_row():
    held = VP.prior_sample(jax.random.PRNGKey(6), (16, 2)).astype(jnp.float32).at[7, 0].set(jnp.nan)
    with pytest.raises(ValueError, match=r"heldout_x_init holds NaN/inf values: row 7 first"):
        _tune(heldout_x_init=held)


def test_tune_names_a_nan_score_not_the_budget():
    with pytest.raises(ValueError, match=r"score_fn returned NaN/inf at t=1.0: row 0 of calib_x_init .*fix the score"):
        _tune(score_fn=lambda x, t: x * jnp.nan)


def test_reference_of_a_score_nan_late_in_time_blames_the_score():
    late_nan = lambda x, t: jnp.where(t < 0.5, jnp.nan, -1.0) * x  # noqa: E731
    with pytest.raises(ValueError, match=r"reference solve of x .*step limit: the score most likely returns NaN"):
        tight_reference(late_nan, VP, X[:4], 1.0, 1e-3)


@pytest.mark.parametrize("bad, match", [
    ("nan_row", r"calib_x_init holds NaN/inf values: row 2 first"),
    ("nan_score", r"score_fn returned NaN/inf at t=0.5: row 0 of calib_x_init"),
])
def test_check_finite_score_names_input_before_score(bad, match):
    x = X[:4].at[2, 0].set(jnp.nan) if bad == "nan_row" else X[:4]
    score = (lambda x, t: x * jnp.nan) if bad == "nan_score" else (lambda x, t: -x)
    with pytest.raises(ValueError, match=match):
        check_finite_score(score, x, 0.5, name="calib_x_init")


# --- references in the input's precision --------------------------------------------------------
@pytest.mark.parametrize("dtype, expected", [
    (jnp.float64, 1e-11),
    (jnp.float32, 8 * float(np.finfo(np.float32).eps)),
    (jnp.float16, 8 * float(np.finfo(np.float16).eps)),
])
def test_reference_tolerance_is_scaled_to_the_dtype(dtype, expected):
    assert reference_tolerance(dtype) == pytest.approx(expected)


@pytest.mark.parametrize("rtol", [True, None])
def test_reference_tolerance_bool_is_refused_none_is_default(rtol):
    if rtol is None:
        assert reference_tolerance(jnp.float32, None, default=1e-6) == 1e-6
    else:
        with pytest.raises(ValueError, match=r"rtol=True must be a finite number > 0"):
            reference_tolerance(jnp.float32, rtol)


def test_optimize_grid_on_float32_input_reaches_its_reference():
    x = VP.prior_sample(jax.random.PRNGKey(1), (16, 2)).astype(jnp.float32)
    g = optimize_grid(SCORE, VP, x, solver="dpmpp_2m", num_steps=4, steps=2, validate=False)
    assert g.ts.shape == (5,) and math.isfinite(g.selection_error)


# --- saved files: every loader error names the file and the field ------------------------------
def _grid_file(tmp_path, **changes):
    g = OptimizedGrid(ts=np.array([1.0, 0.5, 0.001]), solver="ddim", num_steps=2, process={"class": "VPLinear",
                      "params": {}}, init_grid="log_snr", calibration_loss=0.1, initial_calibration_loss=0.2)
    path = g.save(tmp_path / "grid.json")
    d = json.loads(path.read_text())
    d.update(changes)
    path.write_text(json.dumps(d))
    return path


@pytest.mark.parametrize("field, value, match", [
    ("ts", ["a", "b", "c"], r"field ts=\['a', 'b', 'c'\] must be a list of numbers"),
    ("ts", "1.0, 0.5", r"field ts='1.0, 0.5' must be a list of numbers"),
    ("ts", [[1.0, 0.5, 0.001]], r"field ts=.* must be a list of numbers"),
    ("num_steps", "two", r"field num_steps='two' must be an integer >= 1"),
    ("num_steps", 0, r"field num_steps=0 must be an integer >= 1"),
    ("num_steps", True, r"field num_steps=True must be an integer >= 1"),
    ("solver", 3, r"field solver=3 must be a string"),
    ("process", "VPLinear", r"field process='VPLinear' must be an object"),
    ("calibration_loss", "small", r"field calibration_loss='small' must be a number or null"),
    ("history", "none", r"field history='none' must be a list of numbers or nulls"),
])
def test_load_grid_names_the_file_and_the_bad_field(tmp_path, field, value, match):
    path = _grid_file(tmp_path, **{field: value})
    with pytest.raises(ValueError, match=r"grid.json'?: " + match + r".*re-save it"):
        load_grid(path)


def test_load_grid_refuses_a_file_that_is_not_an_object(tmp_path):
    path = tmp_path / "grid.json"
    path.write_text("[1, 2]")
    with pytest.raises(ValueError, match=r"is not an optimised-grid file \(format=None"):
        load_grid(path)


def _tuned_file(tmp_path, **changes):
    t = TunedSampler(solver="ddim", ts=np.array([1.0, 0.5, 0.001]), nfe=2, num_steps=2, grid="log_snr",
                     heldout_error=0.1, nfe_budget=2, process={"class": "VPLinear", "params": {}})
    path = t.save(tmp_path / "tuned.json")
    d = json.loads(path.read_text())
    d.update(changes)
    path.write_text(json.dumps(d))
    return path


@pytest.mark.parametrize("field, value, match", [
    ("ts", ["x", 0.5, 0.001], r"field ts=\['x', 0.5, 0.001\] must be a list of numbers"),
    ("ts", "bad", r"field ts='bad' must be a list of numbers"),
    ("num_steps", "2", r"field num_steps='2' must be an integer >= 1"),
    ("num_steps", 2.5, r"field num_steps=2.5 must be an integer >= 1"),
    ("nfe", -1, r"field nfe=-1 must be an integer >= 1"),
    ("nfe_budget", None, r"field nfe_budget=None must be an integer >= 1"),
    ("solver", None, r"field solver=None must be a string"),
    ("grid", 1, r"field grid=1 must be a string"),
    ("process", [], r"field process=\[\] must be an object"),
    ("heldout_error", "low", r"field heldout_error='low' must be a number or null"),
    ("candidates", "many", r"field candidates='many' must be a list"),
])
def test_load_tuned_names_the_file_and_the_bad_field(tmp_path, field, value, match):
    path = _tuned_file(tmp_path, **{field: value})
    with pytest.raises(ValueError, match=r"tuned.json'?: " + match + r".*re-run the tuning"):
        load_tuned(path)


def test_load_tuned_reads_null_errors_as_nan(tmp_path):
    t = load_tuned(_tuned_file(tmp_path, heldout_error=None))
    assert math.isnan(t.heldout_error) and t.ts.shape == (3,)


# --- the tune CLI checks its output path and time limit before any work -------------------------
@pytest.mark.parametrize("case", ["out_is_dir", "out_parent_is_file", "max_seconds_zero"])
def test_cli_tune_refuses_before_loading_anything(tmp_path, capsys, case):
    from jaxode_diffusion.cli.app import main as cli

    (tmp_path / "file").write_text("x")
    out = {"out_is_dir": tmp_path, "out_parent_is_file": tmp_path / "file" / "t.json"}.get(case, tmp_path / "t.json")
    argv = ["tune", "--checkpoint", str(tmp_path / "no_such_run"), "--nfe", "4", "--out", str(out)]
    if case == "max_seconds_zero":
        argv += ["--max-seconds", "0"]
    assert cli(argv) == 2
    err = one_line_cli_error(capsys)
    assert ("--max-seconds 0.0: the time limit must be > 0" in err) if case == "max_seconds_zero" else ("--out" in err)
    assert "no_such_run" not in err


# --- NaN gradients through the sampler are reported, not silent -------------------------------
@jax.custom_jvp
def _nan_tangent(t):
    return t


_nan_tangent.defjvp(lambda primals, tangents: (primals[0], tangents[0] * jnp.nan))


def test_tune_reports_a_learned_grid_stopped_by_a_nan_gradient():
    # Finite values, NaN derivative in t: the fixed grids are fine, the grid gradient is NaN.
    score = lambda x, t: -x * (1.0 + 0.0 * _nan_tangent(t))  # noqa: E731
    held = VP.prior_sample(jax.random.PRNGKey(6), (16, 2)).astype(jnp.float32)
    with pytest.warns(RuntimeWarning, match=r"non-finite loss or gradient at iteration 0"):
        t = _tune(score_fn=score, heldout_x_init=held, solvers=["dpmpp_2m"], grids=["log_snr"], learn_top=1,
                  learn_steps=3)
    learned = [c for c in t.candidates if c["grid"].startswith("learned")]
    assert learned and "stopped at iteration 0: NaN/inf loss or gradient" in learned[0]["status"]


def test_optimize_grid_raises_naming_the_iteration_of_a_nan_gradient():
    from jaxode_diffusion.tuning.grid_optimization import NonFiniteGridLossError

    score = lambda x, t: -x * (1.0 + 0.0 * _nan_tangent(t))  # noqa: E731
    with pytest.raises(NonFiniteGridLossError, match=r"non-finite loss or gradient at iteration 0 .*on_nonfinite='stop'"):
        optimize_grid(score, VP, X, solver="dpmpp_2m", num_steps=3, steps=3, validate=False, on_nonfinite="raise")


@pytest.mark.parametrize("where", ["draws", "score"])
def test_choose_grid_names_nan_draws_and_a_nan_score_before_any_solve(where):
    from jaxode_diffusion.tuning.autogrid import choose_grid

    x = VP.prior_sample(jax.random.PRNGKey(3), (8, 2))
    score = SCORE
    if where == "draws":
        x = x.at[5, 1].set(jnp.nan)
        match = "x_pilot holds NaN/inf values: row 5 first"
    else:
        score = lambda x, t: SCORE(x, t) * jnp.nan  # noqa: E731
        match = "score_fn returned NaN/inf"
    with pytest.raises(ValueError, match=match):
        choose_grid(score, VP, x, "dpmpp_2m", 4)


def test_sample_cli_takes_verify_checkpoint():
    from jaxode_diffusion.cli.app import build_parser

    args = build_parser().parse_args(["sample", "--checkpoint", "r", "--num-samples", "2", "--out", "s.npy",
                                      "--verify-checkpoint", "warn"])
    assert args.verify_checkpoint == "warn"
    with pytest.raises(SystemExit):
        build_parser().parse_args(["sample", "--checkpoint", "r", "--num-samples", "2", "--out", "s.npy",
                                   "--verify-checkpoint", "maybe"])
