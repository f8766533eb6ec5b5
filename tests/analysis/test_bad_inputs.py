"""Bad inputs to the analysis layer: ``log_likelihood`` (NaN data, NaN scores: the same result codes
and errors as ``solve``) and the regularity estimators (times outside the process's range or not
finite). Each a clear error naming the argument and value, or a correct result.

Part of the reliability suite (tests/sampling/test_bad_inputs.py has the conventions).
"""

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from jaxode_diffusion import GaussianMixture, VPLinear
from jaxode_diffusion.analysis.likelihood import log_likelihood
from jaxode_diffusion.analysis.regularity import (
    directional_second_derivative,
    jacobian_norm,
    second_derivative_norm,
)
from jaxode_diffusion.sampling import RESULTS, NonFiniteSampleError

VP = VPLinear()
GM = GaussianMixture.ring(4)
SCORE = GM.score_fn(VP)
X = jnp.ones((3, 2))
NAN_SCORE = lambda x, t: x * jnp.nan  # noqa: E731


# --- log_likelihood ---------------------------------------------------------------------------
@pytest.mark.parametrize("row, value", [(0, jnp.nan), (1, jnp.inf), (2, -jnp.inf)])
def test_likelihood_names_a_nonfinite_data_row_first(row, value):
    with pytest.raises(ValueError, match=rf"log_likelihood: x holds NaN/inf values: row {row} first .*bad input"):
        log_likelihood(SCORE, VP, X.at[row, 0].set(value), num_steps=2)


@pytest.mark.parametrize("trace", ["exact", "hutchinson"])
def test_likelihood_of_a_nan_score_raises_like_solve(trace):
    with pytest.raises(NonFiniteSampleError, match=r"log_likelihood: .*turned non-finite: sample 0 first at step 0 "
                                                   r"\(t = .*3 of 3 samples affected.*Check the score"):
        log_likelihood(NAN_SCORE, VP, X, num_steps=2, trace=trace, key=jax.random.key(0))


def test_likelihood_nan_score_late_names_the_step():
    late = lambda x, t: jnp.where(t > 0.6, jnp.nan, -1.0) * x  # noqa: E731
    with pytest.raises(NonFiniteSampleError, match=r"sample 0 first at step 2 \(t = 0.5005 -> 0.7502\)"):
        log_likelihood(late, VP, X, num_steps=4, grid="uniform")


def test_likelihood_throw_false_returns_nan_with_the_result_code():
    res = log_likelihood(NAN_SCORE, VP, X, num_steps=2, throw=False)
    assert int(res.result) == RESULTS.nonfinite_state
    assert np.asarray(res.first_nonfinite_step).tolist() == [0, 0, 0]
    assert bool(jnp.all(jnp.isnan(res.log_likelihood)))


def test_likelihood_success_has_the_success_code():
    res = log_likelihood(SCORE, VP, X, num_steps=2)
    assert int(res.result) == RESULTS.successful
    assert np.asarray(res.first_nonfinite_step).tolist() == [-1, -1, -1]


@pytest.mark.parametrize("throw", ["no", 0, None])
def test_likelihood_throw_must_be_a_bool(throw):
    with pytest.raises(ValueError, match=r"log_likelihood: throw must be True or False; got "):
        log_likelihood(SCORE, VP, X, num_steps=2, throw=throw)


# --- regularity estimators: the time ----------------------------------------------------------
ESTIMATORS = {
    "jacobian_norm": lambda f, t: jacobian_norm(f, X, t),
    "second_derivative_norm": lambda f, t: second_derivative_norm(f, X, t),
    "directional_second_derivative": lambda f, t: directional_second_derivative(f, X, t, jnp.ones(2)),
}


@pytest.mark.parametrize("t", [5.0, 1.5, 0.0, -1.0], ids=["5", "1.5", "0", "-1"])
@pytest.mark.parametrize("name", sorted(ESTIMATORS))
def test_regularity_refuses_t_outside_the_score_s_process_range(name, t):
    with pytest.raises(ValueError, match=rf"t={t!r} must lie in \(0.0, 1.0\], where the process's coefficients are "
                                         r"finite.*pass a time inside it \(score_fn belongs to VPLinear\(\)\)"):
        ESTIMATORS[name](SCORE, t)


@pytest.mark.parametrize("t, match", [
    (float("nan"), r"t=nan must be a finite scalar time"),
    (float("inf"), r"t=inf must be a finite scalar time"),
    ("0.5", r"t='0.5' must be a finite scalar time \(a number"),
    (None, r"t=None must be a finite scalar time"),
    (jnp.array([0.2, 0.4]), r"t must be a scalar time; got shape \(2,\)"),
])
@pytest.mark.parametrize("name", sorted(ESTIMATORS))
def test_regularity_refuses_non_finite_or_non_scalar_t(name, t, match):
    with pytest.raises(ValueError, match=match):
        ESTIMATORS[name](lambda x, t: -x, t)


def test_regularity_without_a_process_takes_any_finite_t():
    # A bare score carries no process: any finite time is the caller's business.
    vals = jacobian_norm(lambda x, t: -x / (1.0 + t**2), X, 5.0, method="exact")
    np.testing.assert_allclose(vals, 1.0 / 26.0, rtol=1e-5)
