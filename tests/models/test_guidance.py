"""Classifier-free guidance and dynamic thresholding: the convention
s_w = s(null) + w (s(c) - s(null)), one batched network call, traced scale and class, errors."""

import equinox as eqx
import jax
import jax.numpy as jnp
import numpy as np
import pytest

from jaxode_diffusion import EDM, GaussianMixture, VPLinear
from jaxode_diffusion.models.guidance import (
    ClassifierFreeGuidance,
    classifier_free_guidance,
    dynamic_thresholding,
)
from jaxode_diffusion.processes.parameterizations import to_x0
from jaxode_diffusion.sampling import core as S

K = 3
GM = GaussianMixture(
    jnp.array([0.2, 0.3, 0.5]),
    jnp.array([[1.5, 0.0], [-1.0, 1.0], [0.0, -1.5]]),
    jnp.array([[0.2, 0.2], [0.3, 0.3], [0.25, 0.25]]),  # diagonal covariances
)
VP = VPLinear()
X = jnp.array([[0.3, -1.2], [1.5, 0.4], [-0.7, 0.9], [0.1, 0.1]])
LABELS = jnp.array([0, 2, 1, 2])
CALLS = []  # batch sizes seen by the network (appended while tracing or running eagerly)


class CondMixture(eqx.Module):
    """An exact conditional score: label k < K is component k of GM, label K (null) is all of GM."""

    gm: GaussianMixture

    def __call__(self, x, t, label):
        CALLS.append(x.shape[0])
        a, s = VP.alpha(t), VP.sigma(t)
        # component k at time t: N(a mu_k, a^2 C_k + s^2 I), C_k diagonal
        comps = -(x[None] - a * self.gm.means[:, None, :]) / (a**2 * self.gm.covs[:, None, :] + s**2)
        every = jnp.concatenate([comps, self.gm.score(x, VP, t)[None]])  # (K + 1, B, d)
        return jnp.take_along_axis(every, label[None, :, None], axis=0)[0]


class HandGuided(eqx.Module):
    """The guided score written out: two separate network calls."""

    score: CondMixture
    w: jax.Array

    def __call__(self, x, t, label):
        s_c = self.score(x, t, label)
        s_u = self.score(x, t, jnp.full_like(label, K))
        return s_u + self.w * (s_c - s_u)


SCORE = CondMixture(GM)


def test_guided_score_is_the_convention_in_one_call():
    guided = classifier_free_guidance(SCORE, 2.5, null_cond=jnp.asarray(K))
    CALLS.clear()
    out = guided(X, 0.4, LABELS)
    assert CALLS == [2 * X.shape[0]]  # one network call on the stacked batch
    s_c, s_u = SCORE(X, 0.4, LABELS), SCORE(X, 0.4, jnp.full(4, K))
    np.testing.assert_allclose(out, s_u + 2.5 * (s_c - s_u), rtol=1e-12, atol=1e-12)
    np.testing.assert_allclose(classifier_free_guidance(SCORE, 1.0, K)(X, 0.4, LABELS), s_c, rtol=1e-12, atol=1e-12)
    np.testing.assert_allclose(classifier_free_guidance(SCORE, 0, K)(X, 0.4, LABELS), s_u, rtol=1e-12, atol=1e-12)
    # per-example scales and a schedule w(t)
    w = jnp.array([0.0, 1.0, 2.0, 3.0])
    np.testing.assert_allclose(
        classifier_free_guidance(SCORE, w, K)(X, 0.4, LABELS), s_u + w[:, None] * (s_c - s_u), rtol=1e-12, atol=1e-12
    )
    sched = classifier_free_guidance(SCORE, lambda t: 1.0 + 2.0 * t, K)
    np.testing.assert_allclose(sched(X, 0.4, LABELS), s_u + 1.8 * (s_c - s_u), rtol=1e-12, atol=1e-12)
    # a scalar cond stands for the whole batch
    np.testing.assert_allclose(
        classifier_free_guidance(SCORE, 2.5, K)(X, 0.4, jnp.asarray(1)),
        classifier_free_guidance(SCORE, 2.5, K)(X, 0.4, jnp.full(4, 1)),
    )


def test_pytree_cond_and_per_example_null():
    def score(x, t, c):
        return c["shift"] - x * c["gain"][:, None]

    cond = {"shift": jnp.ones((4, 2)), "gain": jnp.array([1.0, 2.0, 3.0, 4.0])}
    null = {"shift": jnp.zeros(2), "gain": jnp.ones(4)}  # one example's shape / the batch's shape
    out = classifier_free_guidance(score, 3.0, null)(X, 0.5, cond)
    s_c = score(X, 0.5, cond)
    s_u = score(X, 0.5, {"shift": jnp.zeros((4, 2)), "gain": jnp.ones(4)})
    np.testing.assert_allclose(out, s_u + 3.0 * (s_c - s_u), rtol=1e-12)


def _solve_impl(score_fn, x, cond, solver):
    ts = jnp.linspace(1.0, 0.05, 5).astype(x.dtype)
    if hasattr(S, "solve"):
        return S.solve(score_fn, VP, x, ts, solver, cond=cond).samples
    return S.sample(S.Conditioned(score_fn, cond), VP, x, solver=solver, grid=ts, num_steps=None)


_solve = eqx.filter_jit(_solve_impl)


@pytest.mark.parametrize("solver", ["heun", "dpmpp_2m"])
def test_guided_sample_equals_hand_written_guided_score(solver):
    x = VP.prior_sample(jax.random.PRNGKey(0), (4, 2))
    guided = classifier_free_guidance(SCORE, 3.0, null_cond=jnp.asarray(K))
    a = _solve(guided, x, LABELS, solver)
    b = _solve(HandGuided(SCORE, jnp.asarray(3.0)), x, LABELS, solver)
    np.testing.assert_allclose(a, b, rtol=1e-10, atol=1e-12)
    assert not np.allclose(a, _solve(HandGuided(SCORE, jnp.asarray(1.0)), x, LABELS, solver))


def test_new_scale_or_class_does_not_recompile():
    # A batch of 5, traced by no other test: the first call must trace the network.
    x = VP.prior_sample(jax.random.PRNGKey(1), (5, 2))
    labels = jnp.array([0, 1, 2, 0, 1])
    CALLS.clear()
    out = [_solve(classifier_free_guidance(SCORE, 2.0, K), x, labels, "dpmpp_2m")]
    n_traces = len(CALLS)
    out.append(_solve(classifier_free_guidance(SCORE, 4.0, K), x, labels, "dpmpp_2m"))
    out.append(_solve(classifier_free_guidance(SCORE, 4.0, K), x, (labels + 1) % K, "dpmpp_2m"))
    out.append(_solve(classifier_free_guidance(SCORE, jnp.asarray(0.5), K), x, labels, "dpmpp_2m"))
    assert n_traces >= 1 and len(CALLS) == n_traces, "a new scale or class retraced the network"
    for i in range(1, 4):
        assert not np.allclose(out[0], out[i])


def test_sample_entry_point_with_cond():
    x = VP.prior_sample(jax.random.PRNGKey(2), (4, 2))
    guided = classifier_free_guidance(SCORE, 2.0, K)
    a = S.sample(guided, VP, x, solver="dpmpp_2m", num_steps=6, cond=LABELS)
    b = S.sample(HandGuided(SCORE, jnp.asarray(2.0)), VP, x, solver="dpmpp_2m", num_steps=6, cond=LABELS)
    np.testing.assert_allclose(a, b, rtol=1e-10, atol=1e-12)


def test_guidance_errors_are_named():
    with pytest.raises(ValueError, match="scale=nan"):
        classifier_free_guidance(SCORE, float("nan"), K)
    with pytest.raises(ValueError, match="not finite"):
        classifier_free_guidance(SCORE, jnp.array([1.0, jnp.nan]), K)
    with pytest.raises(ValueError, match="scalar or one value per example"):
        classifier_free_guidance(SCORE, jnp.ones((2, 2)), K)
    with pytest.raises(ValueError, match="null_cond is None"):
        classifier_free_guidance(SCORE, 2.0, None)
    with pytest.raises(ValueError, match="callable"):
        classifier_free_guidance("net", 2.0, K)
    g = classifier_free_guidance(SCORE, 2.0, K)
    with pytest.raises(ValueError, match="batch size 4"):
        g(X, 0.5, jnp.array([0, 1]))
    with pytest.raises(ValueError, match="structure"):
        classifier_free_guidance(SCORE, 2.0, {"label": K})(X, 0.5, LABELS)
    with pytest.raises(ValueError, match="null_cond leaf"):
        classifier_free_guidance(SCORE, 2.0, jnp.array([K, K]))(X, 0.5, LABELS)
    with pytest.raises(ValueError, match="needs a condition"):
        g(X, 0.5, None)
    assert isinstance(g, ClassifierFreeGuidance) and g.scale.dtype == jnp.float64


# -- dynamic thresholding -------------------------------------------------------------------------
def test_dynamic_thresholding_matches_numpy():
    edm = EDM()
    big = jnp.array([[3.0, -0.5, 0.2, 1.5], [0.1, -0.2, 0.3, 0.4], [-8.0, 2.0, 1.0, 0.0]])
    far = lambda x, t: (big - x) / t**2  # x0_hat = big for EDM (alpha = 1, sigma = t)
    x, t = jnp.zeros((3, 4)), 0.7
    dt = dynamic_thresholding(far, edm, percentile=0.9, max_threshold=1.0)
    x0 = np.asarray(to_x0(dt(x, t), "score", x, t, edm))
    q = np.quantile(np.abs(np.asarray(big)), 0.9, axis=1)
    s = np.maximum(q, 1.0)[:, None]
    np.testing.assert_allclose(x0, np.clip(np.asarray(big), -s, s) / s, rtol=1e-12)
    assert np.all(np.abs(x0) <= 1.0 + 1e-12)
    np.testing.assert_allclose(x0[1], np.asarray(big[1]))  # inside [-1, 1]: unchanged
    # max_threshold = data bound m: output in [-m, m]
    x0m = to_x0(dynamic_thresholding(far, edm, 0.9, 2.0)(x, t), "score", x, t, edm)
    assert float(jnp.max(jnp.abs(x0m))) <= 2.0 + 1e-12


def test_dynamic_thresholding_composes_with_guidance_in_the_sampler():
    x = VP.prior_sample(jax.random.PRNGKey(3), (4, 2))
    guided = classifier_free_guidance(SCORE, 3.0, K)
    thr = dynamic_thresholding(guided, VP, percentile=0.95, max_threshold=1.0)
    s1, s2 = thr(X, 0.3, LABELS), guided(X, 0.3, LABELS)
    x0 = to_x0(s1, "score", X, 0.3, VP)
    assert float(jnp.max(jnp.abs(x0))) <= 1.0 + 1e-12 and not np.allclose(s1, s2)
    out = _solve(thr, x, LABELS, "dpmpp_2m")
    assert np.all(np.isfinite(out))


def test_dynamic_thresholding_errors():
    for p in (0.0, 1.5):
        with pytest.raises(ValueError, match="percentile"):
            dynamic_thresholding(SCORE, VP, percentile=p)
    for m in (0.0, float("inf")):
        with pytest.raises(ValueError, match="max_threshold"):
            dynamic_thresholding(SCORE, VP, max_threshold=m)
    with pytest.raises(ValueError, match="ForwardProcess"):
        dynamic_thresholding(SCORE, "vp")
