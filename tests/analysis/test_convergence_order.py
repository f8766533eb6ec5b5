"""Orders that mean what they say: convergence.estimate_order / extend_until_asymptotic on synthetic
per-sample errors (no compiles; the study's runner on a real sampler: tests/study/test_section1.py)."""


import numpy as np
import pytest

from jaxode_diffusion.analysis.convergence import estimate_order, extend_until_asymptotic, fit_order

N = np.array([4, 8, 16, 32, 64, 128, 256])
C = np.random.default_rng(0).uniform(0.2, 1.8, 500)  # per-sample error constants (paired over N)


def test_power_law_is_asymptotic_with_interval_around_the_slope():
    est = estimate_order(N, 0.5 * N[:, None] ** -2.0 * C)
    assert est.asymptotic and est.window == tuple(N) and est.reason == ""
    assert est.low <= 2.0 <= est.high and est.high - est.low < 0.1
    assert est.describe().startswith("2.00 [")


def test_steady_pre_asymptotic_decay_is_not_accepted():
    # Measured VP x-t:rk4 TV (N = 4..256): N^-2.8 over 4..16, then a jump, then N^-4.
    tv = np.array([1.26e-1, 1.66e-2, 2.73e-3, 1.03e-4, 6.38e-6, 4.11e-7, 2.60e-8])
    short = estimate_order(N[:4], tv[:4, None] * C)
    assert not short.asymptotic and "still change at the largest N" in short.reason
    assert short.describe().startswith("not asymptotic (slope ")
    full = estimate_order(N, tv[:, None] * C)
    assert full.asymptotic and full.window == (32, 64, 128, 256) and abs(full.order - 3.98) < 0.05
    # The last local slope supports the fit: it lies inside the interval.
    assert full.low <= full.local_orders[-1] <= full.high


def test_statuses_saturated_noise_floor_invalid():
    tv = 0.5 * N[:, None] ** -2.0 * C
    tv[0] = 0.9  # saturated
    valid = np.ones(N.size, bool)
    valid[2] = False  # e.g. folded samples: splits the usable run
    est = estimate_order(N, tv, valid=valid, floor=5e-5)
    assert est.status == ("saturated", "ok", "invalid", "ok", "ok", "floor", "floor")
    assert est.window == (32, 64) and not est.asymptotic  # only one local slope after the break
    noisy = np.zeros((2, 500))
    noisy[:, 0] = 1.0  # one non-zero sample: mean 0.002, standard error 0.002
    assert estimate_order([4, 8], noisy).status == ("noise", "noise")
    assert "no usable step count" in estimate_order([4, 8], noisy).reason


@pytest.mark.parametrize("kwargs, match", [
    (dict(steps=[8, 4], errors=np.ones((2, 3))), "strictly increasing"),
    (dict(steps=[4, 8], errors=np.ones((3, 3))), "errors must have shape"),
    (dict(steps=[4.0, 8.0], errors=np.ones((2, 3))), "positive integers"),
    (dict(steps=[4, 8], errors=-np.ones((2, 3))), "non-negative"),
    (dict(steps=[4, 8], errors=np.ones((2, 3)), tolerance=0.0), "tolerance"),
])
def test_bad_input_names_the_argument(kwargs, match):
    with pytest.raises(ValueError, match=match):
        estimate_order(**kwargs)


def test_extension_runs_until_slopes_settle_budget_or_floor():
    calls = []

    def run(n):
        calls.append(n)
        return 0.05 * (1.0 / n + 400.0 / n**3) * C, True  # order 1, reached only beyond N ~ 40

    est = extend_until_asymptotic(run, [4, 8, 16], max_steps=1024)
    assert est.asymptotic and calls == [4, 8, 16, 32, 64, 128, 256, 512] and abs(est.order - 1.0) < 0.5
    capped = extend_until_asymptotic(run, [4, 8, 16], max_steps=32)
    assert not capped.asymptotic and "step budget max_steps = 32 reached" in capped.reason
    erratic = {4: 1e-3, 8: 1e-5, 16: 4e-6, 32: 1e-9, 64: 1e-11}  # local slopes 6.6, 1.3, then the floor
    floored = extend_until_asymptotic(lambda n: (erratic[n] * C, True), [4, 8], max_steps=1024, floor=1e-9)
    assert not floored.asymptotic and "reached its floor" in floored.reason and floored.steps[-1] == 64
    with pytest.raises(ValueError, match="max_steps"):
        extend_until_asymptotic(run, [4, 8], max_steps=4)


def test_fit_order_of_exact_power_law():
    h = np.array([0.2, 0.1, 0.05])
    err = 3.0 * h**3
    assert abs(fit_order(h, err) - 3.0) < 1e-10


def _above_then_p(n):
    """Per-sample errors whose local slopes are about 4 up to N = 32, then fall to 2 (by N ~ 512)."""
    return 0.2 * (1.0 / n**4 + 1e-4 / n**2) * C, True


def test_settled_slope_far_above_expected_is_extended_until_it_reaches_p():
    plain = extend_until_asymptotic(_above_then_p, [4, 8, 16], max_steps=4096)
    assert plain.asymptotic and plain.order > 3.5  # settles early, far above 2, without a nominal order
    est = extend_until_asymptotic(_above_then_p, [4, 8, 16], max_steps=4096, expected=2)
    assert est.asymptotic and abs(est.order - 2.0) <= 0.5 and est.steps[-1] > plain.steps[-1]


@pytest.mark.parametrize("expected, side", [(2, "above"), (6, "below")])
def test_settled_slope_outside_the_gap_at_the_budget_is_not_asymptotic(expected, side):
    est = extend_until_asymptotic(_above_then_p, [4, 8, 16], max_steps=32, expected=expected)
    assert not est.asymptotic and abs(est.order - expected) > 0.5
    assert est.reason.startswith(f"slope {est.order:.2f} is {abs(est.order - expected):.2f} {side} p={expected}")
    assert "the finest step count the budget allows (max_steps = 32)" in est.reason and "local slopes" in est.reason
    assert est.describe().startswith("not asymptotic (slope ")


def test_slope_outside_the_gap_at_the_floor_names_the_floor():
    est = extend_until_asymptotic(lambda n: (1e-2 * n**-3.0 * C, True), [4, 8, 16, 32], max_steps=1024,
                                  expected=1, floor=1e-8)
    assert not est.asymptotic and "is 2.00 above p=1" in est.reason and "reached its floor" in est.reason


def test_expected_within_the_gap_changes_nothing():
    run = lambda n: (0.5 * n**-2.0 * C, True)  # noqa: E731
    a = extend_until_asymptotic(run, [4, 8, 16, 32], max_steps=256)
    b = extend_until_asymptotic(run, [4, 8, 16, 32], max_steps=256, expected=2.4)
    assert a == b and a.asymptotic


def test_bad_max_gap_names_the_argument():
    with pytest.raises(ValueError, match="max_gap"):
        extend_until_asymptotic(lambda n: (C, True), [4, 8], max_steps=64, expected=2, max_gap=0)
