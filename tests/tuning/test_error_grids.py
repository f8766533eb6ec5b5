"""Error grids (GITS-style dynamic programming on measured local errors)."""

import itertools

import jax
import numpy as np
import pytest

import jaxode_diffusion as jd
from jaxode_diffusion.analysis.distances import rmse
from jaxode_diffusion.sampling.core import make_times, solve
from jaxode_diffusion.tuning.error_grids import error_grid, local_error_costs, min_cost_path


@pytest.mark.parametrize("max_ratio", [None, 1.0, 1.5, 2.0])
def test_min_cost_path_is_the_brute_force_optimum(max_ratio):
    rng = np.random.default_rng(0)
    k = 7
    c = np.triu(rng.uniform(0.1, 2.0, (k + 1, k + 1)), 1)
    c[c == 0] = np.inf
    c[1, 4] = np.inf  # a forbidden step

    def allowed(path):
        lens = np.diff(path)
        return max_ratio is None or all(max(a, b) <= max_ratio * min(a, b) for a, b in itertools.pairwise(lens))

    for n in (1, 2, 3, 4, 5, 7):
        paths = [p for mid in itertools.combinations(range(1, k), n - 1) if allowed(p := (0, *mid, k))]
        if not paths:  # e.g. 3 equal steps cannot cover 7 nodes
            with pytest.raises(ValueError, match="no finite"):
                min_cost_path(c, n, max_ratio=max_ratio)
            continue
        brute = min((sum(c[a, b] for a, b in itertools.pairwise(p)), p) for p in paths)
        nodes, total = min_cost_path(c, n, max_ratio=max_ratio)
        assert nodes == brute[1] and total == pytest.approx(brute[0], rel=1e-12)
    with pytest.raises(ValueError, match="num_steps=8"):
        min_cost_path(c, 8)
    with pytest.raises(ValueError, match="max_ratio=0.5"):
        min_cost_path(c, 2, max_ratio=0.5)


def test_min_cost_path_equidistributes_a_power_law_cost():
    # Cost of a step = its length^3 in node units: the optimum spreads the steps evenly.
    k = 12
    i = np.arange(k + 1)
    c = np.where(i[None, :] > i[:, None], (i[None, :] - i[:, None]).astype(float) ** 3, np.inf)
    assert min_cost_path(c, 4)[0] == (0, 3, 6, 9, 12)
    # Density w(i) = weight of the node interval; cost = (sum of w over the step)^3: the steps fall
    # where the weight is small (w = 4 on the first 4 intervals, 1 elsewhere) equal in sum w.
    w = np.array([4.0] * 4 + [1.0] * 8)
    cw = np.concatenate([[0.0], np.cumsum(w)])
    c = np.where(i[None, :] > i[:, None], (cw[None, :] - cw[:, None]) ** 3, np.inf)
    assert min_cost_path(c, 3)[0] == (0, 2, 4, 12)


@pytest.fixture(scope="module")
def mixture():
    vp = jd.VPLinear()
    gm = jd.GaussianMixture.random(jax.random.PRNGKey(0), 4, 2, scale=2.0, min_var=0.05, max_var=0.5)
    sf = gm.score_fn(vp)
    x_pilot = vp.prior_sample(jax.random.PRNGKey(1), (32, 2))
    x = vp.prior_sample(jax.random.PRNGKey(2), (128, 2))
    ref = solve(sf, vp, x, make_times(vp, num_steps=400, grid="log_snr"), "x0-lambda:rk4").samples
    return vp, sf, x_pilot, x, ref


def test_costs_match_single_solves(mixture):
    vp, sf, x_pilot, _, _ = mixture
    nodes = make_times(vp, num_steps=6, grid="log_snr")
    c, teacher = local_error_costs(sf, vp, x_pilot, "dpmpp_2s", nodes, teacher_substeps=20, max_span=3)
    assert np.isinf(c[0, 4]) and np.isinf(c[3, 1]) and np.all(np.isfinite(c[0, 1:4]))
    # One cost by hand: a single step from the teacher's state, against the teacher.
    y = solve(sf, vp, teacher[2], nodes[2:5:2], "dpmpp_2s").samples
    assert c[2, 4] == pytest.approx(float(rmse(y, teacher[4])), rel=1e-10)
    end = solve(sf, vp, x_pilot, make_times(vp, num_steps=400, grid="log_snr"), "x0-lambda:rk4").samples
    assert float(rmse(teacher[-1], end)) < 1e-4


def test_error_grid_beats_uniform_log_snr_on_a_mixture(mixture):
    vp, sf, x_pilot, x, ref = mixture
    g = error_grid(sf, vp, x_pilot, "unipc_bh2_2", 8, num_nodes=32)
    assert g.ts.shape == (9,) and np.all(np.diff(g.ts) < 0)
    assert g.ts[0] == pytest.approx(vp.default_t_start) and g.ts[-1] == pytest.approx(vp.default_t_end)
    assert g.total_cost == pytest.approx(sum(g.costs[a, b] for a, b in itertools.pairwise(g.nodes)))
    # Uniform log-SNR (every 4th node) is a feasible path: the optimum costs no more.
    assert g.total_cost <= sum(g.costs[4 * m, 4 * m + 4] for m in range(8))
    e_grid = float(rmse(solve(sf, vp, x, g.ts, "unipc_bh2_2").samples, ref))
    e_lam = float(rmse(solve(sf, vp, x, make_times(vp, num_steps=8, grid="log_snr"), "unipc_bh2_2").samples, ref))
    assert e_grid < 0.6 * e_lam, (e_grid, e_lam)


def test_choose_grid_ranks_error_grids_with_the_named_ones(mixture):
    vp, sf, x_pilot, x, ref = mixture
    solver, n = "x0-lambda:heun", 4
    named = jd.tuning.choose_grid(sf, vp, x_pilot, solver, n)
    both = jd.tuning.choose_grid(sf, vp, x_pilot, solver, n, error_grids=True)
    assert named.ts is None and set(named.errors) == set(jd.sampling.GRID_NAMES)
    assert {"error", "error:r2", "equidistributed"} <= set(both.errors)  # no proxy: a singlestep solver
    assert both.errors[both.grid] == min(both.errors.values())
    assert both.grid not in jd.sampling.GRID_NAMES and both.ts.shape == (n + 1,) and both.to_json()["ts"][0] == both.ts[0]

    def fresh(choice):
        ts = choice.ts if choice.ts is not None else make_times(vp, num_steps=n, grid=choice.grid)
        return float(rmse(solve(sf, vp, x, ts, solver).samples, ref))

    # On new draws too, the error grid beats the best named grid the pilot picked (1.33 vs 1.86 when
    # written).
    assert fresh(both) < 0.85 * fresh(named), (fresh(both), fresh(named), both.errors)
