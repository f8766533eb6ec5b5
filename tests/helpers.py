"""Shared test helpers: the lists every contract test is parametrised over, and problems."""

import jax
import jax.numpy as jnp
import numpy as np

import jaxode_diffusion as jd

ALL_TABLEAUX = tuple(jd.solvers.tableaux.names())
ALL_FORMS = tuple(jd.solvers.FORM_NAMES)
ALL_PROCESSES = (
    jd.VPLinear(),
    jd.VPCosine(),
    jd.SubVP(),
    jd.VE(),
    jd.EDM(),
    jd.RectifiedFlow(),
    jd.ForwardProcess.from_alpha_sigma(lambda t: jnp.cos(0.5 * jnp.pi * t), lambda t: jnp.sin(0.5 * jnp.pi * t), t_max=0.99),
)


def mixture_problem(d, *, seed=0, batch=16, process=None, t_start=None):
    """A random Gaussian mixture (bounded derivatives) with exact score and exact p_T samples."""
    process = process or jd.VPLinear()
    gm = jd.GaussianMixture.random(jax.random.PRNGKey(seed), 3, d, scale=1.0, min_var=0.2, max_var=0.6)
    t_start = process.default_t_start if t_start is None else t_start
    x0 = gm.sample_marginal(jax.random.PRNGKey(seed + 100), batch, process, t_start)
    return gm, gm.score_fn(process), process, x0


def tree_equal(a, b):
    """True if two pytrees hold bit-identical arrays, leaf by leaf (resume and restore checks)."""
    return jax.tree.all(jax.tree.map(lambda x, y: bool(np.array_equal(np.asarray(x), np.asarray(y))), a, b))


def rel_err(a, b):
    return float(jnp.linalg.norm(jnp.ravel(a - b)) / jnp.maximum(jnp.linalg.norm(jnp.ravel(b)), 1e-300))


def order_problem(d, *, batch=16, x_seed=1, process=None):
    """The order-test problem: a 4-component mixture with sharp-ish modes (scale 2, variances
    0.05..0.5), exact score, and exact draws of p_1. Shared by every empirical-order test."""
    process = process or jd.VPLinear()
    gm = jd.GaussianMixture.random(jax.random.PRNGKey(d), 4, d, scale=2.0, min_var=0.05, max_var=0.5)
    x0 = gm.sample_marginal(jax.random.PRNGKey(x_seed), batch, process, 1.0)
    return gm, gm.score_fn(process), process, x0


def one_line_cli_error(capsys) -> str:
    """The CLI's error as printed: one ``jaxode-diffusion: error: ...`` line on stderr, no traceback."""
    err = capsys.readouterr().err.strip()
    assert err.startswith("jaxode-diffusion: error: ") and "\n" not in err and "Traceback" not in err, err
    return err


def gaussian_data_and_fit(rng, n=4000):
    """``n`` draws of a correlated 3-D Gaussian (mean (0.5, -1, 0)) and their ``fit_gaussian``
    ``(mean, evals, evecs)``: the data of the Gaussian-residual model and weighting tests."""
    mix = np.array([[1.0, 0.5, 0.0], [0.0, 0.3, 0.2], [0.0, 0.0, 2.0]])
    data = rng.normal(size=(n, 3)) @ mix + [0.5, -1.0, 0.0]
    return data, jd.models.fit_gaussian(data)
