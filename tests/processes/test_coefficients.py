import jax
import jax.numpy as jnp
import numpy as np
import pytest

import jaxode_diffusion as jd
from tests.helpers import ALL_PROCESSES


def _fd(fn, t, h=1e-6):
    return (fn(t + h) - fn(t - h)) / (2 * h)


@pytest.mark.parametrize("process", ALL_PROCESSES, ids=lambda p: type(p).__name__)
def test_derivatives_match_finite_differences(process):
    ts = jnp.linspace(process.default_t_end + 0.05 * (process.t_max - process.t_min),
                      0.95 * process.t_max, 7)
    f_fd = _fd(lambda t: jnp.log(process.alpha(t)), ts)
    np.testing.assert_allclose(process.f(ts), f_fd, rtol=1e-6, atol=1e-8)
    s2 = lambda t: process.sigma(t) ** 2
    g2_fd = _fd(s2, ts) - 2 * f_fd * process.sigma(ts) ** 2
    np.testing.assert_allclose(process.g2(ts), g2_fd, rtol=1e-6, atol=1e-8)
    lam_fd = _fd(process.lam, ts)
    np.testing.assert_allclose(process.dlam_dt(ts), lam_fd, rtol=1e-6, atol=1e-8)
    assert bool(jnp.all(lam_fd < 0)), "log-SNR must decrease"


@pytest.mark.parametrize("process", ALL_PROCESSES, ids=lambda p: type(p).__name__)
def test_t_of_lambda_inverts_lam(process):
    key = jax.random.PRNGKey(0)
    ts = jax.random.uniform(key, (20,), minval=process.default_t_end + 1e-6, maxval=process.t_max)
    back = process.t_of_lambda(process.lam(ts))
    np.testing.assert_allclose(back, ts, rtol=1e-9, atol=1e-12)
    # the generic bisection agrees with the closed forms
    generic = jd.ForwardProcess.t_of_lambda(process, process.lam(ts))
    np.testing.assert_allclose(generic, ts, rtol=1e-9, atol=1e-12)


def test_closed_forms_of_builtins():
    vp = jd.VPLinear()
    t = jnp.asarray(0.3)
    np.testing.assert_allclose(vp.alpha(t) ** 2 + vp.sigma(t) ** 2, 1.0, rtol=1e-14)
    np.testing.assert_allclose(vp.f(t), -0.5 * (0.1 + (20 - 0.1) * t), rtol=1e-12)
    np.testing.assert_allclose(vp.g2(t), 0.1 + (20 - 0.1) * t, rtol=1e-12)  # beta(t)
    edm = jd.EDM()
    np.testing.assert_allclose(edm.g2(2.0), 2 * 2.0, rtol=1e-12)  # d sigma^2/dt = 2t
    rf = jd.RectifiedFlow()
    np.testing.assert_allclose(rf.lam(0.25), np.log(3.0), rtol=1e-12)


def test_custom_process_matches_builtin_and_params_are_differentiable():
    def alpha(t, p):
        return jnp.exp(-0.5 * p["bmin"] * t - 0.25 * (p["bmax"] - p["bmin"]) * t**2)

    def sigma(t, p):
        return jnp.sqrt(1 - alpha(t, p) ** 2)

    params = {"bmin": jnp.asarray(0.1), "bmax": jnp.asarray(20.0)}
    custom = jd.ForwardProcess.from_alpha_sigma(alpha, sigma, params=params)
    vp = jd.VPLinear()
    ts = jnp.linspace(0.01, 1.0, 9)
    for name in ("alpha", "sigma", "f", "g2", "lam"):
        np.testing.assert_allclose(getattr(custom, name)(ts), getattr(vp, name)(ts), rtol=1e-10)

    # gradient of a sampler output w.r.t. a schedule parameter, checked by finite differences
    gm = jd.GaussianMixture.ring(4)
    x0 = jnp.ones((3, 2)) * 0.3

    def out(bmax):
        p = jd.ForwardProcess.from_alpha_sigma(alpha, sigma, params={"bmin": 0.1, "bmax": bmax})
        return jnp.sum(jd.sample(gm.score_fn(p), p, x0, solver="x0-lambda:heun", num_steps=6,
                                 t_end=1e-2, check_finite=False) ** 2)

    g = jax.grad(out)(jnp.asarray(20.0))
    h = 1e-5
    fd = (out(20.0 + h) - out(20.0 - h)) / (2 * h)
    np.testing.assert_allclose(g, fd, rtol=1e-5)


def test_builtin_parameters_are_pytree_leaves():
    vp = jd.VPLinear(beta_max=jnp.asarray(20.0))
    assert any(isinstance(x, jax.Array) for x in jax.tree_util.tree_leaves(vp))
    g = jax.grad(lambda b: jd.VPLinear(beta_max=b).lam(0.5))(jnp.asarray(20.0))
    assert np.isfinite(g) and g < 0


@pytest.mark.parametrize(
    "alpha_fn, sigma_fn, kwargs, match",
    [
        (lambda t: 1 - t, lambda t: t, {"t_max": 1.5}, "alpha"),
        (lambda t: jnp.ones_like(t), lambda t: 1.0 - t, {"t_max": 0.9}, "log-SNR"),
        (lambda t: 1 - t, lambda t: t, {"t_max": 0.0}, "t_min < t_max"),
        (lambda t: 1.0, lambda t: t, {"t_max": 0.5}, "elementwise"),
        ("not callable", lambda t: t, {}, "alpha_fn must be callable"),
    ],
)
def test_bad_custom_process_rejected(alpha_fn, sigma_fn, kwargs, match):
    with pytest.raises(ValueError, match=match):
        jd.ForwardProcess.from_alpha_sigma(alpha_fn, sigma_fn, **kwargs)


def test_get_process_names():
    assert isinstance(jd.get_process("vp_linear"), jd.VPLinear)
    with pytest.raises(ValueError, match="not a built-in process"):
        jd.get_process("nope")
