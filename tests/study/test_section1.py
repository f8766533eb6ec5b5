"""The study's section-1 runner: the order rule of analysis.convergence on a real sampler (one compile)."""

import jax
import jax.numpy as jnp
import numpy as np

from jaxode_diffusion.analysis.convergence import extend_until_asymptotic


def test_section1_runner_on_a_user_schedule():
    # A process the study has never seen (built from alpha, sigma): the same runner and rule give
    # Heun's order without knowing it; one compile (the grid is padded to the cap).
    from types import SimpleNamespace

    from jaxode_diffusion import ForwardProcess, GaussianMixture, get_solver
    from jaxode_diffusion.study.run import _family_runner

    jax.config.update("jax_enable_x64", True)
    proc = ForwardProcess.from_alpha_sigma(lambda t: jnp.exp(-2.0 * t**2), lambda t: jnp.sqrt(1 - jnp.exp(-4.0 * t**2)))
    gm = GaussianMixture.ring(4, radius=1.5, std=0.4)
    cfg = SimpleNamespace(t_end=1e-2, grid="log_snr")
    p_start = gm.marginal(proc, proc.default_t_start)
    x = p_start.sample(jax.random.PRNGKey(0), 200)
    rows = []
    run = _family_runner(gm.score_fn(proc), proc, gm, cfg, get_solver("x-t:heun"), x,
                         np.asarray(p_start.log_prob(x)), 128, rows, dict(form="x-t", order=2))
    est = extend_until_asymptotic(run, [4, 8, 16], max_steps=128)
    assert [r["steps"] for r in rows] == list(est.steps) and all(r["folds"] == 0 for r in rows)
    assert est.asymptotic, est.describe()
    assert est.low <= est.order <= est.high and abs(est.order - 2.0) < 0.5
