"""from_alpha_sigma checks a user's closed-form t_of_lambda_fn against the log-SNR it must invert."""

import jax.numpy as jnp
import pytest

import jaxode_diffusion as jd


def test_wrong_inverse_is_rejected_and_right_one_accepted():
    # alpha = 1 - t, sigma = t: lambda = log((1 - t) / t), so t = 1 / (1 + exp(lambda)).
    a, s = (lambda t: 1 - t), (lambda t: t)
    p = jd.ForwardProcess.from_alpha_sigma(a, s, t_max=0.99, t_of_lambda_fn=lambda lam: 1 / (1 + jnp.exp(lam)))
    assert abs(float(p.t_of_lambda(p.lam(0.3))) - 0.3) < 1e-6
    with pytest.raises(ValueError, match="t_of_lambda_fn must invert the log-SNR"):  # sign convention flipped
        jd.ForwardProcess.from_alpha_sigma(a, s, t_max=0.99, t_of_lambda_fn=lambda lam: 1 / (1 + jnp.exp(-lam)))
    with pytest.raises(ValueError, match="t_of_lambda_fn"):
        jd.ForwardProcess.from_alpha_sigma(a, s, t_max=0.99, t_of_lambda_fn=lambda lam: 1 / (1 + jnp.exp(lam)) + 1e-3)
