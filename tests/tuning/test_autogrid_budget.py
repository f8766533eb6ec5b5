"""``autogrid``: the pilot's budget (plan_pilot), its ranking on energy distance with uncertainty, and the
rule that keeps the table's grid unless a candidate is better beyond that uncertainty."""

import math

import jax
import numpy as np
import pytest

import jaxode_diffusion as jd
from jaxode_diffusion.analysis.distances import energy_distance
from jaxode_diffusion.tuning import autogrid
from jaxode_diffusion.tuning.autogrid import choose_grid, evaluations_per_draw, plan_pilot


def test_plan_pilot_runs_the_full_pilot_when_it_is_cheap():
    plan = plan_pilot(1e-9, num_samples=4, solver="dpmpp_2m", num_steps=5)
    assert plan.run and plan.num_pilot == 64 and plan.reference_steps == 160
    assert plan.evaluations == 4 * 5 + 6 * 160
    assert plan.budget_seconds == 3.0  # the floor: the sampling asked for is cheaper
    assert "measuring the grid" in plan.message("dpmpp_2m", 5, 4, "log_snr")


def test_plan_pilot_falls_back_to_the_table_when_no_pilot_fits():
    # 4 samples x 5 evaluations at 10 ms each: 0.2 s of sampling; the smallest pilot is 16 draws x 260 evaluations.
    plan = plan_pilot(1e-2, num_samples=4, solver="dpmpp_2m", num_steps=5)
    assert not plan.run and plan.num_pilot == 16 and plan.reference_steps == 40
    assert math.isclose(plan.pilot_seconds, 16 * (4 * 5 + 6 * 40) * 1e-2)
    assert math.isclose(plan.sample_seconds, 0.2) and plan.budget_seconds == 3.0
    msg = plan.message("dpmpp_2m", 5, 4, "log_snr")
    assert msg.startswith("grid log_snr (the measured table's grid for dpmpp_2m; no pilot")


def test_plan_pilot_scales_the_pilot_with_the_sampling_asked_for():
    sec = 1e-2
    small = plan_pilot(sec, num_samples=1000, solver="dpmpp_2m", num_steps=5)  # 50 s of sampling
    assert small.run and small.pilot_seconds <= small.budget_seconds == pytest.approx(50.0)
    assert (small.num_pilot, small.reference_steps) < (64, 160)
    big = plan_pilot(sec, num_samples=100_000, solver="dpmpp_2m", num_steps=5)
    assert big.run and (big.num_pilot, big.reference_steps) == (64, 160)
    assert not plan_pilot(sec, num_samples=1000, solver="dpmpp_2m", num_steps=5, share=0.5).run


@pytest.mark.parametrize("bad", [-1.0, float("nan"), float("inf")])
def test_plan_pilot_rejects_a_bad_cost(bad):
    with pytest.raises(ValueError, match="seconds_per_evaluation"):
        plan_pilot(bad, num_samples=4, solver="dpmpp_2m", num_steps=5)


def test_evaluations_per_draw_counts_stages():
    assert evaluations_per_draw("x0-lambda:rk4", 3) == 12 and evaluations_per_draw("unipc_bh2_2", 7) == 7
    assert evaluations_per_draw("dpm_solver_2", 4) == 8


def _measures(dist, err, se=0.01, b=200, seed=0):
    """Synthetic bootstrap rows: row 0 the point value, rows 1.. spread by ``se`` (paired: shared noise)."""
    rng = np.random.default_rng(seed)
    shared = rng.normal(size=b)
    out = {}
    for g in dist:
        own = rng.normal(size=b)
        out[g] = (np.concatenate([[dist[g]], dist[g] + se * (shared + own)]),
                  np.concatenate([[err[g]], err[g] + se * (shared + own)]))
    return out


def test_select_keeps_the_baseline_within_the_uncertainty():
    m = _measures({"log_snr": 0.10, "quadratic": 0.09}, {"log_snr": 0.14, "quadratic": 0.13}, se=0.02)
    grid, reason = autogrid._select(m, "log_snr", 2.0)
    assert grid == "log_snr" and "table's grid" in reason and "quadratic" in reason


def test_select_takes_a_candidate_better_beyond_the_uncertainty():
    m = _measures({"log_snr": 0.30, "quadratic": 0.05, "edm": 0.10}, {"log_snr": 0.2, "quadratic": 0.1, "edm": 0.1},
                  se=0.005)
    grid, reason = autogrid._select(m, "log_snr", 2.0)
    assert grid == "quadratic" and "lower than the table's log_snr" in reason


def test_select_does_not_take_a_candidate_with_a_clearly_worse_rmse():
    m = _measures({"log_snr": 0.30, "quadratic": 0.05}, {"log_snr": 0.1, "quadratic": 0.5}, se=0.005)
    assert autogrid._select(m, "log_snr", 2.0)[0] == "log_snr"


def test_select_replaces_an_unusable_baseline():
    m = _measures({"log_snr": 0.3, "edm": 0.2}, {"log_snr": 0.1, "edm": 0.1})
    m["uniform"] = (np.full(201, np.inf), np.full(201, np.inf))
    assert autogrid._select(m, "uniform", 2.0)[0] == "edm"


@pytest.fixture(scope="module")
def mixture():
    vp = jd.VPLinear()
    gm = jd.GaussianMixture.random(jax.random.PRNGKey(0), 2, 2)
    return vp, gm.score_fn(vp), vp.prior_sample(jax.random.PRNGKey(1), (32, 2))


def test_choose_grid_reports_distances_errors_uncertainty_and_reason(mixture):
    vp, sf, x = mixture
    seen = []
    c = choose_grid(sf, vp, x, "dpmpp_2m", 4, progress=seen.append)
    assert c.baseline == jd.sampling.default_grid_for("dpmpp_2m", vp) and c.reason
    assert set(c.distances) == set(c.errors) == set(c.distance_se) == set(c.error_se) == set(jd.sampling.GRID_NAMES)
    assert all(s > 0 for s in c.distance_se.values()) and all(s > 0 for s in c.error_se.values())
    assert seen[:4] == [4, 4, 4, 4] and sum(seen[4:]) == 6 * c.reference_steps  # grids, then the RK4 pair
    js = c.to_json()
    assert js["reason"] == c.reason and js["distances"] == c.distances
    assert c.grid in c.summary() and "energy" in c.summary()
    assert choose_grid(sf, vp, x, "dpmpp_2m", 4, margin=1e9).grid == c.baseline  # a margin nobody beats


def test_choose_grid_distance_is_the_energy_distance_to_the_reference(mixture):
    vp, sf, x = mixture
    c = choose_grid(sf, vp, x, "dpmpp_2m", 4, grids=("log_snr", "uniform"), reference_steps=64,
                    max_reference_steps=64)
    ts = jd.sampling.make_times(vp, num_steps=64, grid="log_snr")
    ref = jd.sampling.solve(sf, vp, x, ts, "x0-lambda:rk4").samples
    y = jd.sampling.solve(sf, vp, x, jd.sampling.make_times(vp, num_steps=4, grid="uniform"), "dpmpp_2m").samples
    assert c.reference_steps == 64
    assert c.distances["uniform"] == pytest.approx(float(energy_distance(y, ref)), rel=1e-4, abs=1e-7)
