"""Bad inputs to processes (built-in, user schedules, discrete tables, times out of range): each
raises ValueError whose message names the argument (and usually the value and the fix).

The same contract for tableaux is in tests/solvers/test_bad_tableaux.py, for grids in
tests/sampling/test_bad_grids.py."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from jaxode_diffusion.processes import (
    EDM,
    VE,
    DiscreteVP,
    ForwardProcess,
    RectifiedFlow,
    SubVP,
    VPCosine,
    VPLinear,
)

NAN, INF = float("nan"), float("inf")
AC = np.cumprod(1 - np.linspace(1e-4, 0.02, 10))  # a valid 10-entry alphas_cumprod table

# (id, thunk, regex the message must match: the argument's name, often the value)
CASES = [
    # -- built-in processes -----------------------------------------------------------------
    ("ve_min_gt_max", lambda: VE(sigma_min=50.0, sigma_max=0.01), r"sigma_min=50\.0 >= sigma_max=0\.01"),
    ("ve_min_zero", lambda: VE(sigma_min=0.0), r"`sigma_min` must be > 0, got sigma_min=0\.0"),
    ("ve_min_negative", lambda: VE(sigma_min=-1.0), r"sigma_min=-1\.0"),
    ("ve_max_nan", lambda: VE(sigma_max=NAN), r"`sigma_max` must be finite"),
    ("ve_min_bool", lambda: VE(sigma_min=True), r"`sigma_min` must be a real number"),
    ("ve_min_string", lambda: VE(sigma_min="0.01"), r"`sigma_min` must be a real number"),
    ("cosine_s_negative", lambda: VPCosine(s=-1.0), r"`s` must be > 0, got s=-1\.0"),
    ("cosine_s_zero", lambda: VPCosine(s=0.0), r"`s` must be > 0"),
    ("cosine_t_max_1", lambda: VPCosine(t_max_=1.0), r"t_max_.*< 1"),
    ("vp_beta_min_zero", lambda: VPLinear(beta_min=0.0), r"`beta_min` must be > 0"),
    ("vp_beta_min_negative", lambda: VPLinear(beta_min=-0.1), r"beta_min=-0\.1"),
    ("vp_betas_unordered", lambda: VPLinear(beta_min=5.0, beta_max=1.0), r"beta_min <= beta_max.*swap"),
    ("vp_beta_max_inf", lambda: VPLinear(beta_max=jnp.inf), r"`beta_max` must be finite"),
    ("vp_beta_vector", lambda: VPLinear(beta_min=jnp.array([0.1, 0.2])), r"`beta_min` must be a scalar"),
    ("vp_t_end_zero", lambda: VPLinear(t_end_default=0.0), r"`t_end_default`=0\.0"),
    ("vp_t_max_negative", lambda: VPLinear(t_max_=-1.0), r"t_max=-1\.0"),
    ("subvp_beta_max_negative", lambda: SubVP(beta_max=-1.0), r"`beta_max` must be > 0"),
    ("edm_sigma_min_zero", lambda: EDM(sigma_min=0.0), r"`sigma_min` must be > 0"),
    ("edm_min_gt_max", lambda: EDM(sigma_min=100.0), r"sigma_min=100\.0 >= sigma_max=80\.0"),
    ("rf_t_max_1", lambda: RectifiedFlow(t_max_=1.0), r"t_max_.*< 1"),
    # -- user schedules: dense checks name the first bad t ----------------------------------
    (
        "custom_alpha_negative",
        lambda: ForwardProcess.from_alpha_sigma(lambda t: 1 - t, lambda t: t, t_max=1.5),
        r"alpha\(t\) must be finite and > 0.*at t=1\.0",
    ),
    (
        # a dip of the noise level between two of the old 64 check points (width ~3e-3)
        "custom_lambda_bump",
        lambda: ForwardProcess.from_alpha_sigma(
            jnp.cos, lambda t: jnp.sin(t) * (1 - 0.5 * jnp.exp(-(((t - 0.7) / 1e-3) ** 2))), t_max=1.5
        ),
        r"log-SNR .* strictly decrease.*at t=0\.69",
    ),
    (
        "custom_default_t_end_singular",
        lambda: ForwardProcess.from_alpha_sigma(jnp.cos, jnp.sin, t_max=1.5, default_t_end=0.0),
        r"default_t_end=0\.0",
    ),
    ("custom_t_max_string", lambda: ForwardProcess.from_alpha_sigma(jnp.cos, jnp.sin, t_max="1"), r"`t_max`"),
    ("custom_t_of_lambda", lambda: ForwardProcess.from_alpha_sigma(jnp.cos, jnp.sin, t_of_lambda_fn=3), "t_of_lambda_fn"),
    # -- discrete tables ---------------------------------------------------------------------
    ("ac_nan", lambda: DiscreteVP.from_alphas_cumprod(np.where(np.arange(10) == 3, NAN, AC)), r"alphas_cumprod\[3\] = nan"),
    ("ac_increasing", lambda: DiscreteVP.from_alphas_cumprod(AC[::-1]), r"alphas_cumprod.*decreasing.*\[::-1\]"),
    ("ac_repeated", lambda: DiscreteVP.from_alphas_cumprod([0.9, 0.8, 0.8, 0.1]), r"alphas_cumprod\[1\] = 0\.8"),
    ("ac_zero", lambda: DiscreteVP.from_alphas_cumprod([0.9, 0.5, 0.0]), r"\(0, 1\].*alphas_cumprod\[2\] = 0\.0"),
    ("ac_above_one", lambda: DiscreteVP.from_alphas_cumprod([1.5, 0.5, 0.1]), r"alphas_cumprod\[0\] = 1\.5"),
    ("ac_too_short", lambda: DiscreteVP.from_alphas_cumprod([0.5]), r"alphas_cumprod.*at least 2"),
    ("ac_2d", lambda: DiscreteVP.from_alphas_cumprod(AC.reshape(2, 5)), r"alphas_cumprod.*1-D"),
    ("ac_strings", lambda: DiscreteVP.from_alphas_cumprod(["a", "b"]), r"alphas_cumprod.*real numbers"),
    ("betas_one", lambda: DiscreteVP.from_betas([0.1, 0.5, 1.0]), r"betas\[2\] = 1\.0.*clip"),
    ("betas_zero", lambda: DiscreteVP.from_betas([0.0, 0.1, 0.2]), r"betas\[0\] = 0\.0"),
    ("betas_negative", lambda: DiscreteVP.from_betas([0.1, -0.1, 0.2]), r"betas\[1\] = -0\.1"),
    ("betas_inf", lambda: ForwardProcess.from_betas([0.1, INF]), r"betas\[1\] = inf"),
    ("discrete_neither", lambda: DiscreteVP(), r"`alphas_cumprod` or `betas`"),
    ("discrete_n_bool", lambda: DiscreteVP.ddpm_linear(num_train_timesteps=True), r"num_train_timesteps.*True"),
    ("cosine_max_beta_1", lambda: DiscreteVP.cosine(max_beta=1.0), r"`max_beta` must be < 1"),
    # -- times outside the range where the coefficients are finite ---------------------------
    ("vp_t_end_zero_check", lambda: VPLinear().check_times(0.0, "t_end"), r"t_end=0\.0 .*\(0\.0, 1\.0\].*sigma"),
    ("edm_t_end_zero_check", lambda: EDM().check_times(0.0, "t_end"), r"t_end=0\.0 .*EDM"),
    ("t_nan_check", lambda: VE().check_times(jnp.array([0.5, NAN]), "ts"), r"ts\[1\]=nan"),
]


@pytest.mark.parametrize("thunk, match", [c[1:] for c in CASES], ids=[c[0] for c in CASES])
def test_bad_input_is_a_clear_value_error(thunk, match):
    with pytest.raises(ValueError, match=match):
        thunk()


def test_enough_cases():
    assert len(CASES) >= 30
    assert len({c[0] for c in CASES}) == len(CASES)


def test_parameters_traced_inside_jit_are_not_checked():
    # construction inside a trace cannot look at values; shapes still flow
    g = jax.grad(lambda s: VE(sigma_min=s).lam(0.5))(0.01)
    assert np.isfinite(g)
    g = jax.grad(lambda s: VPCosine(s=s).lam(0.5))(0.008)
    assert np.isfinite(g)
