"""The study's dimension family and its exponent fit."""

import jax.numpy as jnp
import numpy as np
import pytest

from jaxode_diffusion import GaussianMixture, VPLinear
from jaxode_diffusion.study.run import _fit_exponent


@pytest.mark.parametrize("d", [2, 16, 128])
def test_dimension_family_normalised_and_spanning(d):
    gm = GaussianMixture.dimension_family(d, seed=3)
    assert gm.dim == d and gm.num_components == 4 and not gm.diagonal
    cov = np.asarray(gm.covariance())
    np.testing.assert_allclose(np.diag(cov), 1.0, atol=1e-10)  # unit per-coordinate scale
    np.testing.assert_allclose(np.asarray(gm.mean()), 0.0, atol=1e-10)
    # Every component is anisotropic in all d directions: full rank, eigenvalues spread out, and
    # its principal axes are not the coordinate axes.
    off_diagonal = []
    for c in np.asarray(gm.covs):
        ev = np.linalg.eigvalsh(c)
        assert ev.min() > 0 and ev.max() / ev.min() > 2.0
        off_diagonal.append(np.abs(c - np.diag(np.diag(c))).max())
    assert max(off_diagonal) > 1e-2
    # Means in generic directions: the K = 4 centred means span min(K - 1, d) dimensions.
    assert np.linalg.matrix_rank(np.asarray(gm.means)) == min(3, d)
    # Deterministic from the seed; another seed gives another mixture.
    again = GaussianMixture.dimension_family(d, seed=3)
    np.testing.assert_array_equal(np.asarray(again.means), np.asarray(gm.means))
    other = GaussianMixture.dimension_family(d, seed=4)
    assert not np.allclose(np.asarray(other.means), np.asarray(gm.means))
    s = gm.score(jnp.zeros((2, d)), VPLinear(), 0.01)
    assert s.shape == (2, d) and bool(jnp.all(jnp.isfinite(s)))


def test_dimension_family_bad_arguments():
    with pytest.raises(ValueError, match="dim=0"):
        GaussianMixture.dimension_family(0)
    with pytest.raises(ValueError, match="num_components"):
        GaussianMixture.dimension_family(4, num_components=0)
    with pytest.raises(ValueError, match="min_var"):
        GaussianMixture.dimension_family(4, min_var=0.5, max_var=0.1)


def test_fit_exponent_recovers_slope_with_interval():
    d = np.array([2.0, 4, 8, 16, 32])
    rng = np.random.default_rng(0)
    tv = 1e-3 * d**1.5 * np.exp(0.05 * rng.standard_normal(d.size))
    fit = _fit_exponent(d, tv, 0.02 * tv)
    assert fit["low"] < 1.5 < fit["high"] and abs(fit["slope"] - 1.5) < 0.1
    assert fit["high"] - fit["low"] < 0.5
    assert np.isnan(_fit_exponent(d[:1], tv[:1], tv[:1])["slope"])


def test_adversarial_perturbation_keeps_size_and_raises_tv():
    import jax

    from jaxode_diffusion.analysis.theory import make_perturbed_score, measure_score_error
    from jaxode_diffusion.study.run import _adversarial, make_config

    gm, vp = GaussianMixture.ring(4), VPLinear()
    cfg = make_config("quick", floor_solver="x-t:heun", floor_steps=4, adv_steps=3, adv_samples=48)
    pert, _ = make_perturbed_score(gm, vp, 0.1, jax.random.PRNGKey(0), t_min=cfg.t_end, num_samples=512,
                                   num_times=16)
    adv, history = _adversarial(pert, gm, vp, cfg, jax.random.PRNGKey(1))
    assert len(history) == 4 and history[-1] > history[0]  # ascent on the (fixed-sample) TV
    eps = measure_score_error(adv, gm, vp, key=jax.random.PRNGKey(2), num_times=16, num_samples=512,
                              t_min=cfg.t_end)
    assert abs(eps - 0.1) < 0.01  # the projection keeps the prescribed L2 size
    assert np.all(np.isfinite(adv.perturbation_bounds()))


# The section-1 order rule (estimate_order / extend_until_asymptotic) is tested in tests/analysis/test_convergence_order.py.


def test_study_only_dimension_raises_saturated_step_counts(tmp_path):
    """The dimension section alone (``only``): an order whose TV at the largest d is above
    ``dim_tv_high`` gets its step count doubled, one count (one H_max) for every d; the report
    holds that section and says which step count was raised."""
    import json

    from jaxode_diffusion.study.run import make_config, run_study

    out = tmp_path / "dim"
    cfg = make_config("quick", out=str(out), only=("dimension",), dims=(2, 8), tv_samples=160,
                      dim_orders=(2,), dim_steps_by_order=((2, 4),), dim_tv_high=0.05, dim_max_steps=16,
                      dim_solver="x-t:heun", dim_steps=4)
    run_study(cfg)
    m = json.loads((out / "metrics.json").read_text())
    assert set(m) >= {"dimension", "bound"} and "discretisation" not in m and "learned" not in m
    dm = m["dimension"]
    (f,) = dm["fits"]
    rows = [r for r in dm["all_rows"] if r["order"] == 2]
    assert sorted(r["dim"] for r in rows) == [2, 8] and {r["steps"] for r in rows} == {f["steps"]}
    assert f["steps_raised_from"] == 4 and f["steps"] in (8, 16)  # heun/4 at d = 8: TV ~ 0.1 > 0.05
    top = next(r for r in rows if r["dim"] == 8)
    assert top["tv"]["value"] <= 0.05 or f["steps"] == 16
    # (b) reuses the probes at the raised-from count instead of recomputing them
    assert "4" in next(r for r in dm["needed"] if r["dim"] == 8)["tried"]
    report = (out / "report.md").read_text()
    assert "## 3. TV vs dimension" in report and "## 1. Discretisation" not in report
    assert "(raised from 4)" in report and "Sections run: dimension" in report


@pytest.mark.parametrize("kw, match", [
    (dict(only=("dimension", "nope")), "unknown section"),
    (dict(dims=(2, 0)), "dims="),
    (dict(tv_samples=1), "tv_samples"),
])
def test_study_config_bad_sections_and_sizes(kw, match):
    from jaxode_diffusion.study.run import make_config

    with pytest.raises(ValueError, match=match):
        make_config("quick", **kw)


def test_dimension_verdict_follows_the_intervals():
    from jaxode_diffusion.study.report import _dimension_verdict

    rows = [dict(dim=d) for d in (2, 128)]
    below = dict(order=2, slope=0.5, low=0.2, high=1.0, bound_exponent=3)
    reaches = dict(order=4, slope=2.0, low=0.5, high=6.0, bound_exponent=5)
    assert "below the bound" in _dimension_verdict(dict(fits=[below], all_rows=rows))
    text = _dimension_verdict(dict(fits=[below, reaches], all_rows=rows))
    assert "p = 4" in text and "p = 2" not in text and "d = 128" in text
    nan = dict(order=1, slope=float("nan"), low=float("nan"), high=float("nan"), bound_exponent=2)
    assert "no d-exponent" in _dimension_verdict(dict(fits=[nan], all_rows=rows))
