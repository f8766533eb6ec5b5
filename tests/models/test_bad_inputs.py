"""Bad inputs to the model wrappers: guidance scales and schedules, ``as_score_fn``'s compute dtype
and network outputs. Each ends in a clear error naming the argument and value (and, for a
schedule, blaming the schedule rather than the score), or in a correct result.

Part of the reliability suite (tests/sampling/test_bad_inputs.py has the conventions).
"""

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from jaxode_diffusion import VPLinear, sample
from jaxode_diffusion.models.adapter import as_score_fn
from jaxode_diffusion.models.guidance import classifier_free_guidance

VP = VPLinear()
COND_SCORE = lambda x, t, c: c[:, None] - x  # noqa: E731
NULL = jnp.asarray(0.0)


# --- guidance scales ----------------------------------------------------------------------------
@pytest.mark.parametrize("scale, match", [
    ("2", r"scale='2' is not a guidance scale; pass a real number"),
    (b"2", r"scale=b'2' is not a guidance scale"),
    (None, r"scale=None is not a guidance scale"),
    (True, r"scale=True is not a guidance scale"),
    (np.bool_(True), r"scale=.*True_? is not a guidance scale"),
    (1 + 2j, r"scale=\(1\+2j\) has dtype complex"),
    (np.array(["a"]), r"scale=array\(\['a'\].* is not a guidance scale"),
    ({"w": 2.0}, r"scale=\{'w': 2.0\} is not a guidance scale"),
    ([[1.0]], r"scale must be a scalar or one value per example \(shape \(B,\)\); got shape \(1, 1\)"),
    (1e30, r"scale=1e\+30 exceeds 10000 in magnitude: .*pass a guidance scale between about 0 and 20"),
    (-1e30, r"scale=-1e\+30 exceeds 10000"),
    ([2.0, 1e6], r"scale=\[2.0, 1000000.0\] exceeds 10000"),
    (float("nan"), r"scale=nan is not finite"),
    (float("inf"), r"scale=inf is not finite"),
    ([1.0, float("nan")], r"scale=\[1.0, nan\] is not finite"),
])
def test_guidance_scale_is_checked_up_front(scale, match):
    with pytest.raises(ValueError, match=match):
        classifier_free_guidance(COND_SCORE, scale, NULL)


@pytest.mark.parametrize("scale", [2, np.float32(2.0), [1.0, 0.0]])
def test_guidance_accepts_ints_numpy_scalars_and_per_example_scales(scale):
    guided = classifier_free_guidance(lambda x, t, c: c[:, None] * 1.5 - x, scale, NULL)
    # s_null = -x = 0, s_cond = 1.5 c: guided = w * 1.5 c.
    out = guided(jnp.zeros((2, 1)), 0.5, jnp.asarray([1.0, 2.0]))[:, 0]
    w = np.broadcast_to(np.asarray(scale, np.float64), (2,))
    np.testing.assert_allclose(out, w * 1.5 * np.array([1.0, 2.0]))


@pytest.mark.parametrize("schedule, shown", [
    (lambda t: jnp.nan * t, "nan"),
    (lambda t: jnp.inf + t, "inf"),
    (lambda t: 1e30 + t, "1e+30"),
])
def test_a_bad_schedule_is_named_as_the_schedule_s_fault(schedule, shown):
    guided = classifier_free_guidance(COND_SCORE, schedule, NULL)
    with pytest.raises(ValueError, match=r"the guidance schedule scale\(t\) returned .* at t=0.5; .*fix the schedule"):
        guided(jnp.zeros((2, 1)), 0.5, jnp.asarray([1.0, 2.0]))


def test_a_schedule_nan_inside_a_solve_blames_the_schedule_not_the_score():
    guided = classifier_free_guidance(COND_SCORE, lambda t: jnp.where(t < 0.5, jnp.nan, 2.0), NULL)
    x0 = VP.prior_sample(jax.random.PRNGKey(0), (4, 1))
    with pytest.raises(Exception, match=r"guidance schedule scale\(t\) returned NaN/inf.*fix the schedule") as err:
        sample(guided, VP, x0, solver="ddim", num_steps=4, cond=jnp.ones(4))
    assert "NonFiniteSample" not in type(err.value).__name__


def test_a_finite_schedule_samples():
    guided = classifier_free_guidance(COND_SCORE, lambda t: 1.0 + t, NULL)
    x0 = VP.prior_sample(jax.random.PRNGKey(0), (4, 1))
    assert bool(jnp.all(jnp.isfinite(sample(guided, VP, x0, solver="ddim", num_steps=4, cond=jnp.ones(4)))))


# --- as_score_fn: compute dtypes and network outputs ---------------------------------------------
def _adapt(net=lambda x, t: 0.1 * x, **kw):
    return as_score_fn(net, VP, prediction="eps", time_input="t", **kw)


@pytest.mark.parametrize("dtype", [jnp.float8_e4m3fn, jnp.float8_e5m2, "float8_e4m3fn", jnp.int32, jnp.uint8,
                                   jnp.bool_, jnp.complex64, "bogus", 3.5])
def test_as_score_fn_refuses_unsupported_compute_dtypes(dtype):
    with pytest.raises(ValueError, match=r"compute_dtype=.* is not a supported compute dtype; use one of "
                                         r"\['float16', 'bfloat16', 'float32', 'float64'\]"):
        _adapt(compute_dtype=dtype)


@pytest.mark.parametrize("dtype", [jnp.float16, jnp.bfloat16, jnp.float32, "float64", None])
def test_as_score_fn_accepts_the_listed_compute_dtypes(dtype):
    out = _adapt(compute_dtype=dtype)(jnp.ones((2, 3)), 0.5)
    assert out.shape == (2, 3) and bool(jnp.all(jnp.isfinite(out)))


@pytest.mark.parametrize("out_dtype", [jnp.int32, jnp.int8, jnp.bool_, jnp.uint8])
def test_as_score_fn_refuses_a_non_floating_network_output(out_dtype):
    score = _adapt(net=lambda x, t: jnp.zeros(x.shape, out_dtype))
    with pytest.raises(ValueError, match=rf"the network returned dtype {jnp.dtype(out_dtype).name} .*must be "
                                         r"floating-point.*out.astype\(x.dtype\)"):
        score(jnp.ones((2, 3)), 0.5)


def test_as_score_fn_int_output_is_refused_by_sample_with_the_same_message():
    score = _adapt(net=lambda x, t: jnp.zeros(x.shape, jnp.int32))
    x0 = VP.prior_sample(jax.random.PRNGKey(0), (4, 3))
    with pytest.raises(ValueError, match=r"the network returned dtype int32"):
        sample(score, VP, x0, solver="ddim", num_steps=3)
