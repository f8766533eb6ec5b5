"""Discrete DDPM tables as continuous processes: DiscreteVP against DPM-Solver's
NoiseScheduleVP('discrete') formulas, the built-in tables, tracing, and solver orders."""

import math

import jax
import jax.numpy as jnp
import numpy as np
import pytest

import jaxode_diffusion as jd
from jaxode_diffusion.processes import DiscreteVP, ForwardProcess

N = 1000


# --------------------------------------------------------------------------------------
# DPM-Solver's discrete schedule, written out independently in NumPy float64
# (Lu et al. 2022, dpm_solver_pytorch.py, NoiseScheduleVP with schedule='discrete').
# --------------------------------------------------------------------------------------


class DpmDiscrete:
    def __init__(self, alphas_cumprod):
        ac = np.asarray(alphas_cumprod, np.float64)
        self.total_n = len(ac)
        self.t_array = np.linspace(0.0, 1.0, self.total_n + 1)[1:]
        self.log_alpha_array = 0.5 * np.log(ac)

    def marginal_log_mean_coeff(self, t):
        return np.interp(t, self.t_array, self.log_alpha_array)

    def marginal_alpha(self, t):
        return np.exp(self.marginal_log_mean_coeff(t))

    def marginal_std(self, t):
        return np.sqrt(1.0 - np.exp(2.0 * self.marginal_log_mean_coeff(t)))

    def marginal_lambda(self, t):
        log_mean = self.marginal_log_mean_coeff(t)
        log_std = 0.5 * np.log(1.0 - np.exp(2.0 * log_mean))
        return log_mean - log_std

    def inverse_lambda(self, lamb):
        log_alpha = -0.5 * np.logaddexp(0.0, -2.0 * lamb)
        return np.interp(log_alpha, self.log_alpha_array[::-1], self.t_array[::-1])


def _ddpm_betas():
    return np.linspace(1e-4, 0.02, N)


def _scaled_linear_betas():
    return np.linspace(0.00085**0.5, 0.012**0.5, N) ** 2


def _cosine_betas(s=0.008, max_beta=0.999):
    # Nichol & Dhariwal (2021), eq. 17, as a plain loop.
    def alpha_bar(t):
        return math.cos((t + s) / (1 + s) * math.pi / 2) ** 2

    return np.array([min(1 - alpha_bar((i + 1) / N) / alpha_bar(i / N), max_beta) for i in range(N)])


def _random_table(seed=0, n=37):
    rng = np.random.default_rng(seed)
    return np.cumprod(1 - rng.uniform(1e-3, 0.2, n))


TABLES = {
    "ddpm_linear": (DiscreteVP.ddpm_linear, _ddpm_betas),
    "scaled_linear": (DiscreteVP.scaled_linear, _scaled_linear_betas),
    "cosine": (DiscreteVP.cosine, _cosine_betas),
}


@pytest.mark.parametrize("name", sorted(TABLES))
def test_builtin_tables_match_their_definitions(name):
    build, betas_fn = TABLES[name]
    p = build()
    betas = betas_fn()
    assert p.num_train_timesteps == N
    np.testing.assert_allclose(p.betas, betas, rtol=1e-9, atol=1e-15)
    np.testing.assert_allclose(p.alphas_cumprod, np.cumprod(1 - betas), rtol=1e-9)
    # from_betas and from_alphas_cumprod build the same process
    q = ForwardProcess.from_alphas_cumprod(np.cumprod(1 - betas))
    np.testing.assert_allclose(q.log_alphas, p.log_alphas, rtol=1e-9, atol=1e-14)
    assert ForwardProcess.from_betas(betas).num_train_timesteps == N


@pytest.mark.parametrize("name", [*sorted(TABLES), "random"])
def test_matches_dpm_solver_discrete_schedule(name):
    if name == "random":
        ac = _random_table()
        p = DiscreteVP.from_alphas_cumprod(ac)
    else:
        p = TABLES[name][0]()
        ac = np.cumprod(1 - TABLES[name][1]())
    ref = DpmDiscrete(ac)
    n = len(ac)
    rng = np.random.default_rng(1)
    ts = np.concatenate([rng.uniform(1.0 / n, 1.0, 200), ref.t_array[:: max(1, n // 50)], [1.0 / n, 1.0]])
    np.testing.assert_allclose(p.log_alpha(ts), ref.marginal_log_mean_coeff(ts), rtol=1e-12, atol=1e-15)
    np.testing.assert_allclose(p.alpha(ts), ref.marginal_alpha(ts), rtol=1e-12)
    np.testing.assert_allclose(p.sigma(ts), ref.marginal_std(ts), rtol=1e-10)
    np.testing.assert_allclose(p.lam(ts), ref.marginal_lambda(ts), rtol=1e-10, atol=1e-12)
    # the log-SNR inverse is exact on each piece
    lams = ref.marginal_lambda(ts)
    np.testing.assert_allclose(p.t_of_lambda(lams), ref.inverse_lambda(lams), rtol=1e-10, atol=1e-13)
    np.testing.assert_allclose(p.t_of_lambda(p.lam(ts)), ts, rtol=1e-10, atol=1e-13)
    # f = d log alpha / dt is the slope of the piece (away from the nodes)
    k = np.array([3, n // 2, n - 2])
    mid = (k + 1.5) / n
    slope = n * np.diff(ref.log_alpha_array)[k]
    np.testing.assert_allclose(p.f(mid), slope, rtol=1e-9)
    g2 = -2 * p.sigma(mid) ** 2 * p.dlam_dt(mid)
    np.testing.assert_allclose(p.g2(mid), g2, rtol=1e-9)


def test_get_process_names_the_tables():
    for name, build in (("ddpm_linear", DiscreteVP.ddpm_linear), ("scaled_linear", DiscreteVP.scaled_linear),
                        ("discrete_cosine", DiscreteVP.cosine)):
        p = jd.get_process(name)
        np.testing.assert_array_equal(p.log_alphas, build().log_alphas)


def test_time_range_and_network_index():
    p = DiscreteVP.ddpm_linear()
    assert (p.t_min, p.t_max, p.default_t_end, p.default_t_start) == (1 / N, 1.0, 1 / N, 1.0)
    assert str(p.valid_t_range()) == f"[{1 / N!r}, 1.0]"
    np.testing.assert_allclose(p.timesteps, (np.arange(N) + 1) / N, rtol=1e-15)
    np.testing.assert_allclose(p.timestep_index(p.timesteps), np.arange(N), atol=1e-9)
    np.testing.assert_allclose(p.t_of_timestep(np.arange(N)), p.timesteps, rtol=1e-15)
    # sigma at the first node is sqrt(beta_0): every coefficient is finite on [1/N, 1]
    assert float(p.sigma(1 / N)) == pytest.approx(1e-2, rel=1e-9)
    ends = jnp.array([1 / N, 1.0])
    for fn in (p.f, p.g2, p.lam):
        assert bool(jnp.all(jnp.isfinite(fn(ends))))
    # a table starting at exactly 1 has sigma(1/N) = 0: the first node is excluded
    q = DiscreteVP.from_alphas_cumprod([1.0, 0.9, 0.5])
    assert q.valid_t_range().lo_open
    with pytest.raises(ValueError, match="t_end"):
        jd.sampling.make_grid("uniform", q, 4, 1.0, q.t_min)
    # t_end below 1/N is refused by the grids
    with pytest.raises(ValueError, match=r"t_end=0\.0001.*\[0\.001, 1\.0\]"):
        jd.sampling.make_grid("log_snr", p, 4, 1.0, 1e-4)


def test_table_is_traced_no_retrace_and_differentiable():
    traces = []

    @jax.jit
    def sig(process, t):
        traces.append(1)
        return process.sigma(t), process.t_of_lambda(process.lam(t))

    a = sig(DiscreteVP.ddpm_linear(), 0.3)
    b = sig(DiscreteVP.scaled_linear(), 0.3)
    assert len(traces) == 1
    assert float(a[0]) != float(b[0])
    np.testing.assert_allclose([a[1], b[1]], 0.3, rtol=1e-12)

    # gradient with respect to the table, built inside the trace; t = 0.5025 lies between
    # nodes 501 and 502 (t_n = (n + 1) / N) with weight 1/2 each
    ac = np.cumprod(1 - _ddpm_betas())
    g = jax.grad(lambda table: DiscreteVP.from_alphas_cumprod(table).log_alpha(0.5025))(jnp.asarray(ac))
    expected = np.zeros(N)
    expected[[501, 502]] = 0.5 * 0.5 / ac[[501, 502]]
    np.testing.assert_allclose(g, expected, rtol=1e-6, atol=1e-12)


# --------------------------------------------------------------------------------------
# Exact Gaussian-mixture samples under a discrete table converge at each solver's order.
# In the x0-lambda form the ODE is smooth in lambda (alpha and sigma are functions of lambda
# alone for a VP table), so the piecewise-linear time map does not cost order. Measured
# (d = 2, batch 8, log-SNR grid, float64) finest-pair slopes: heun 1.92 / 1.96 / 1.87,
# kutta3 2.93 / 2.96 / 2.88, rk4 3.84 / 3.90 / 3.75 (ddpm_linear / scaled_linear / cosine).
# kutta3 is left out of the test to keep it small (each tableau is one ~12 s compile; the
# tables reuse it, since the table is a traced leaf). In the x-t form the drift f and g^2 jump
# at the nodes and the order collapses (rk4 slopes 1.6 / 0.6 / 2.6 on ddpm_linear): use a
# lambda- or rho-stepping form with discrete tables.
# --------------------------------------------------------------------------------------

STEPS = {"heun": [16, 32, 64, 128], "rk4": [8, 16, 32, 64]}


@pytest.fixture(scope="module")
def discrete_problems():
    gm = jd.GaussianMixture.random(jax.random.PRNGKey(0), 3, 2, scale=1.0, min_var=0.2, max_var=0.6)
    out = {}
    for name in sorted(TABLES):
        p = TABLES[name][0]()
        x0 = gm.sample_marginal(jax.random.PRNGKey(1), 8, p, 1.0)
        sf = gm.score_fn(p)
        ref = jd.analysis.reference_solve(sf, p, x0, t_end=p.default_t_end)
        out[name] = (sf, p, x0, ref)
    return out


@pytest.mark.parametrize("tab", sorted(STEPS))
def test_discrete_table_order_of_convergence(discrete_problems, tab):
    expected = jd.solvers.tableaux.get(tab).order
    for name, (sf, p, x0, ref) in discrete_problems.items():
        r = jd.analysis.convergence_study(sf, p, x0, f"x0-lambda:{tab}", STEPS[tab], reference=ref,
                                 t_end=p.default_t_end)
        info = (name, tab, [f"{e:.2e}" for e in r.errors], [f"{o:.2f}" for o in r.local_orders])
        assert r.errors[-1] < r.errors[0] * 2.0 ** (-2 * expected), info
        assert abs(r.local_orders[-1] - expected) < 0.3, info
