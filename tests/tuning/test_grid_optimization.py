"""Learned time grids: the optimisation lowers held-out error; JSON save/load round trip."""

import json

import jax
import jax.numpy as jnp
import numpy as np
import pytest

import jaxode_diffusion as jd
from jaxode_diffusion.tuning.grid_optimization import (
    OptimizedGrid,
    evaluate_grid,
    grid_from_logits,
    load_grid,
    optimize_grid,
)
from tests.helpers import order_problem


@pytest.fixture(scope="module")
def optimized():
    # Small version of the benchmark's setting (d = 16, NFE 10, 200 iterations: see
    # benchmarks/results/accuracy_vs_nfe.md for its timing).
    gm, sf, vp, x_cal = order_problem(4, batch=32, x_seed=1)
    x_val = gm.sample_marginal(jax.random.PRNGKey(2), 32, vp, 1.0)
    x_sel = gm.sample_marginal(jax.random.PRNGKey(3), 32, vp, 1.0)  # held back: selects the iterate
    g = optimize_grid(sf, vp, x_cal, solver="dpmpp_2m", num_steps=8, steps=30, learning_rate=0.05,
                      selection_x_init=x_sel, validation_x_init=x_val)
    return g, sf, vp, x_val


def test_optimized_grid_beats_initial_on_held_out(optimized):
    g, sf, vp, x_val = optimized
    assert g.improved and 0 < g.best_iteration <= g.iterations <= 30
    assert g.selection_error <= g.initial_selection_error
    assert g.calibration_loss < 0.8 * g.initial_calibration_loss
    assert g.validation_error < 0.8 * g.initial_validation_error, (g.initial_validation_error,
                                                                  g.validation_error)
    assert g.ts.shape == (9,) and np.all(np.diff(g.ts) < 0)
    assert g.ts[0] == pytest.approx(vp.t_max) and g.ts[-1] == pytest.approx(vp.default_t_end)
    # evaluate_grid reproduces the recorded held-out error, and the grid is usable by sample().
    assert evaluate_grid(sf, vp, x_val, g, solver="dpmpp_2m") == pytest.approx(g.validation_error, rel=1e-6)
    x = jd.sample(sf, vp, x_val, solver=g.solver, grid=g.ts)
    assert x.shape == x_val.shape


def test_save_load_round_trip(optimized, tmp_path):
    g, sf, vp, x_val = optimized
    path = g.save(tmp_path / "grid.json")
    raw = json.loads(path.read_text())
    assert raw["process"]["class"] == "VPLinear" and raw["solver"] == "dpmpp_2m"
    back = load_grid(path, process=vp)
    assert isinstance(back, OptimizedGrid)
    np.testing.assert_array_equal(back.ts, g.ts)
    assert back.validation_error == g.validation_error and back.num_steps == 8
    with pytest.raises(ValueError, match="optimised for"):
        load_grid(path, process=jd.VPLinear(beta_max=10.0))
    raw["ts"][3] = raw["ts"][2]  # break monotonicity
    (tmp_path / "bad.json").write_text(json.dumps(raw))
    with pytest.raises(ValueError, match="strictly decreasing"):
        load_grid(tmp_path / "bad.json")
    (tmp_path / "junk.json").write_text("{}")
    with pytest.raises(ValueError, match="not an optimised-grid file"):
        load_grid(tmp_path / "junk.json")


def test_parametrisation_is_log_snr_grid_at_zero_and_monotone():
    vp = jd.VPLinear()
    ts = grid_from_logits(vp, jnp.zeros(6), 1.0, 1e-3)
    np.testing.assert_allclose(ts, jd.sampling.make_grid("log_snr", vp, 6, 1.0, 1e-3), rtol=1e-12)
    ts = grid_from_logits(vp, jax.random.normal(jax.random.PRNGKey(0), (6,)) * 3, 1.0, 1e-3)
    assert np.all(np.diff(np.asarray(ts)) < 0)
    # d t_i / d logits is finite (implicit-function derivative of t(lambda)).
    g = jax.jacobian(lambda th: grid_from_logits(vp, th, 1.0, 1e-3))(jnp.zeros(6))
    assert np.all(np.isfinite(np.asarray(g)))


def test_bad_arguments():
    gm, vp = jd.GaussianMixture.ring(4), jd.VPLinear()
    x = vp.prior_sample(jax.random.PRNGKey(0), (4, 2))
    with pytest.raises(ValueError, match="num_steps"):
        optimize_grid(gm.score_fn(vp), vp, x, solver="dpmpp_2m", num_steps=1)
    with pytest.raises(ValueError, match="held-out"):
        optimize_grid(gm.score_fn(vp), vp, x, solver="dpmpp_2m", num_steps=3, steps=1, validation_x_init=x,
                      selection_x_init=x + 1.0)
    with pytest.raises(ValueError, match="held-back"):
        optimize_grid(gm.score_fn(vp), vp, x, solver="dpmpp_2m", num_steps=3, steps=1, selection_x_init=x)
    with pytest.raises(ValueError, match="holdout_fraction"):
        optimize_grid(gm.score_fn(vp), vp, x, solver="dpmpp_2m", num_steps=3, steps=1)  # 4 samples: too few
    with pytest.raises(ValueError, match="on_nonfinite"):
        optimize_grid(gm.score_fn(vp), vp, x, solver="dpmpp_2m", num_steps=3, on_nonfinite="zero")


def test_held_back_selection_never_worse_and_keeps_start():
    # 32 samples with the default quarter held back: on these 8 held-back samples no iterate beats
    # log_snr (the fitted 24 overfit), so the start comes back, unchanged, and says so.
    gm, sf, vp, x_cal = order_problem(4, batch=32, x_seed=1)
    g = optimize_grid(sf, vp, x_cal, solver="dpmpp_2m", num_steps=8, steps=8, learning_rate=0.05,
                      patience=4, validate=False)
    assert g.selection_error <= g.initial_selection_error
    assert not g.improved and g.best_iteration == 0 and g.iterations <= 8
    assert "no iterate beat" in g.note and g.validation_error is None
    np.testing.assert_allclose(g.ts, jd.sampling.make_grid("log_snr", vp, 8, vp.default_t_start, vp.default_t_end),
                               rtol=1e-12)


def test_nonfinite_loss_is_reported_not_zeroed():
    from jaxode_diffusion.tuning.grid_optimization import NonFiniteGridLossError

    vp = jd.VPLinear()
    x = vp.prior_sample(jax.random.PRNGKey(0), (8, 2))
    ref = jnp.zeros_like(x)

    def bad_score(x, t):  # a broken model: NaN everywhere
        return jnp.full_like(x, jnp.nan)

    with pytest.raises(NonFiniteGridLossError, match="iteration 0"):
        optimize_grid(bad_score, vp, x, solver="ddim", num_steps=3, steps=2, reference=ref,
                      selection_x_init=x + 1.0, selection_reference=ref, validate=False, on_nonfinite="raise")
    with pytest.warns(RuntimeWarning, match="non-finite"):
        g = optimize_grid(bad_score, vp, x, solver="ddim", num_steps=3, steps=2, reference=ref,
                          selection_x_init=x + 1.0, selection_reference=ref, validate=False)
    assert g.nonfinite_iteration == 0 and not g.improved


def test_time_limit_stops_after_one_iteration():
    # max_seconds=0 stops after the first iteration whatever the machine's speed (not a timing test:
    # any elapsed time exceeds 0); the result is still never worse than the start on the held-back.
    # The fixture's problem, solver and batch shapes: the same compiled programs (this process's, or
    # another worker's through the session's compilation cache), not a compile of their own (10 s).
    gm, sf, vp, x_cal = order_problem(4, batch=32, x_seed=1)
    x_sel = gm.sample_marginal(jax.random.PRNGKey(3), 32, vp, 1.0)
    kw = dict(solver="dpmpp_2m", num_steps=8, steps=6, learning_rate=0.05, selection_x_init=x_sel, validate=False)
    g = optimize_grid(sf, vp, x_cal, max_seconds=0.0, **kw)
    assert g.iterations == 1 and g.selection_error <= g.initial_selection_error
    with pytest.raises(ValueError, match="max_seconds"):
        optimize_grid(sf, vp, x_cal, max_seconds=-1.0, **kw)
