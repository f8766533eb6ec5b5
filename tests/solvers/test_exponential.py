"""Exponential integrators (DDIM, DPM-Solver(++), UniPC, DEIS, EDM-Heun) and the phi functions."""

from decimal import Decimal, getcontext

import equinox as eqx
import jax
import jax.numpy as jnp
import numpy as np
import pytest

import jaxode_diffusion as jd
from jaxode_diffusion.analysis.convergence import convergence_study
from jaxode_diffusion.analysis.diffrax_drivers import reference_solve
from jaxode_diffusion.analysis.distances import rmse
from jaxode_diffusion.sampling import core as sampling
from jaxode_diffusion.solvers.adaptive import dpm_solver_adaptive
from jaxode_diffusion.solvers.phi import phi, phis
from tests.helpers import mixture_problem, order_problem, rel_err

T_END = 1e-3
ERROR_FLOOR = 1e-9


# ---------------------------------------------------------------------------------------------
# phi functions against 60-digit Decimal sums of the series sum_n z^n / (n + k)!
# ---------------------------------------------------------------------------------------------
def _phi_exact(k, z):
    getcontext().prec = 60
    z = Decimal(float(z))
    fact = Decimal(1)
    for i in range(2, k + 1):
        fact *= i
    term = 1 / fact  # z^0 / k!
    total = term
    n = 0
    while True:
        n += 1
        term = term * z / (n + k)
        total += term
        if n > 10 and abs(term) < Decimal(10) ** -45 * max(abs(total), Decimal(10) ** -30):
            return float(total)


ZS = [0.0, 1e-12, -1e-9, 3e-5, -0.3, 0.5, -0.999, 0.999, -1.0, 1.0, 1.001, -1.5, 2.0, -4.0, 7.5, -20.0, 30.0]


@pytest.mark.parametrize("k", [1, 2, 3, 4, 5])
def test_phi_matches_high_precision(k):
    got = np.asarray(phis(k, jnp.asarray(ZS, jnp.float64))[k - 1])
    want = np.array([_phi_exact(k, z) for z in ZS])
    np.testing.assert_allclose(got, want, rtol=2e-14, atol=0)
    got32 = np.asarray(phi(k, jnp.asarray(ZS, jnp.float32)))
    np.testing.assert_allclose(got32, want, rtol=3e-6)
    # Differentiable without NaN at the switch between series and recurrence.
    g = jax.grad(lambda z: phi(k, z))(jnp.asarray(1.0))
    assert np.isfinite(g)


def test_phi_rejects_bad_index():
    with pytest.raises(ValueError, match="kmax"):
        phis(0, 1.0)
    assert float(phi(0, 1.0)) == pytest.approx(np.e)


# ---------------------------------------------------------------------------------------------
# Empirical orders (protocol of tests/sampling/test_solve.py) and NFE counts.
# ---------------------------------------------------------------------------------------------
@pytest.fixture(scope="module")
def problem():
    _, sf, vp, x0 = order_problem(2)
    ref = reference_solve(sf, vp, x0, t_end=T_END)
    return sf, vp, x0, ref


# (solver, finest step pair whose errors stay above ERROR_FLOOR, expected NFE(N) per step count).
# The pairs were chosen from sweeps N = b 2^k: each is the most asymptotic pair measured there.
# unipc_*_3 (design order 4) is pre-asymptotic below N ~ 200: its start-up step (order-1
# predictor + 2-node corrector, local error O(h^3) with a tiny constant since x0_hat barely moves
# at t = 1) and the order-4 error have opposite signs; measured slopes 3.2, 3.6, 3.9, 3.95 for
# N = 48 -> 768 (d = 2), so the test uses N = 384 -> 768.
ORDER_CASES = [
    ("dpm_solver_2", (128, 256), lambda n: 2 * n),
    ("dpm_solver_3", (64, 128), lambda n: 3 * n),
    ("dpmpp_2s", (128, 256), lambda n: 2 * n),
    ("edm_heun", (128, 256), lambda n: 2 * n),
    ("dpmpp_2m", (128, 256), lambda n: n),
    ("dpmpp_3m", (128, 256), lambda n: n),  # the reference code's half third moment: order 2
    ("dpmpp_3m_exact", (128, 256), lambda n: n),
    ("unipc_bh1_2", (128, 256), lambda n: n),
    ("unipc_bh2_2", (128, 256), lambda n: n),
    ("unipc_bh2_3", (384, 768), lambda n: n),
    ("deis_ab2", (128, 256), lambda n: n),
    ("deis_ab3", (128, 256), lambda n: n),
]


@pytest.mark.parametrize("name,steps,nfe_of", ORDER_CASES, ids=[c[0] for c in ORDER_CASES])
def test_empirical_order_matches_design(problem, name, steps, nfe_of):
    sf, vp, x0, ref = problem
    solver = jd.get_solver(name)
    r = convergence_study(sf, vp, x0, name, list(steps), reference=ref, t_end=T_END)
    info = (name, [f"{e:.2e}" for e in r.errors], r.local_orders)
    assert min(r.errors) > ERROR_FLOOR, info
    assert abs(r.local_orders[-1] - solver.order) < 0.3, info
    assert r.nfe == [nfe_of(n) for n in steps], (name, r.nfe)


# Lower-order start and (num_steps < 10) lower-order final steps keep NFE = steps.
@pytest.mark.parametrize("name,nfe", [("unipc_bh1", 5), ("unipc_bh1_3", 5), ("dpmpp_3m", 5)])
def test_nfe_small_step_counts(name, nfe):
    gm, sf, vp, x0 = mixture_problem(2, seed=2, batch=4)
    sol = jd.sample(sf, vp, x0, solver=name, num_steps=5, grid="log_snr", return_nfe=True)
    assert int(sol.nfe) == nfe
    assert np.all(np.isfinite(np.asarray(sol.samples)))


# ---------------------------------------------------------------------------------------------
# Identities.
# ---------------------------------------------------------------------------------------------
def test_ddim_equals_euler_in_eps_rho():
    gm, sf, vp, x0 = mixture_problem(2, seed=7, batch=8)
    kw = dict(num_steps=12, grid="log_snr", t_end=T_END)
    euler = jd.sample(sf, vp, x0, solver="eps-rho:euler", **kw)
    # DDIM in x0-lambda (noise prediction), its data-prediction twin, and DEIS-1 in rho.
    for name in ("ddim", "dpmpp_1", "deis_ab1"):
        x = jd.sample(sf, vp, x0, solver=name, **kw)
        assert rel_err(x, euler) < 1e-12, name
    assert jd.get_solver("dpm_solver_1") == jd.get_solver("ddim").__class__(
        jd.get_solver("ddim").coefficients, "noise", "dpm_solver_1")


@eqx.filter_jit
def _first_step(sf, vp, x0, ts, solver):
    plan = sampling.make_plan(vp, solver, ts)
    st = sampling.step(plan, sf, vp, sampling.init(plan, sf, vp, x0))
    return sampling.current_x(plan, vp, st), st.nfe


def test_dpmpp_2m_first_step_is_ddim():
    gm, sf, vp, x0 = mixture_problem(2, seed=8, batch=8)
    ts = jd.make_times(vp, num_steps=10, t_end=T_END, grid="log_snr")
    outs = {n: _first_step(sf, vp, x0, ts, jd.get_solver(n)) for n in ("dpmpp_2m", "ddim", "unipc_bh2_3")}
    assert rel_err(outs["dpmpp_2m"][0], outs["ddim"][0]) < 1e-12
    # The first multistep step reports init's evaluation too (2), later steps 1.
    assert int(outs["dpmpp_2m"][1]) == 2 and int(outs["ddim"][1]) == 1
    # UniPC's first step is DDIM + a corrector: different, but close.
    assert 0 < rel_err(outs["unipc_bh2_3"][0], outs["ddim"][0]) < 1e-2


def test_wrong_form_is_a_clear_error():
    with pytest.raises(ValueError, match="x0-lambda"):
        jd.get_solver("x-t:dpmpp_2m")
    with pytest.raises(ValueError, match="eps-rho"):
        jd.get_solver("x0-lambda:deis_ab2")
    assert jd.get_solver("x0-lambda:dpmpp_3m_exact").order == 3
    assert {"dpmpp_2m", "unipc_bh2_3", "deis_ab3", "edm_heun"} <= set(jd.solver_names())


def test_float32_runs():
    gm, sf, vp, x0 = mixture_problem(2, seed=9, batch=4)
    x = jd.sample(sf, vp, x0.astype(jnp.float32), solver="unipc_bh2_3", num_steps=8, grid="log_snr")
    assert x.dtype == jnp.float32 and np.all(np.isfinite(np.asarray(x)))


def test_no_retrace_multistep():
    gm, _, vp, x0 = mixture_problem(2, seed=5, batch=8)

    traces = {"n": 0}

    class Counting(jd.models.MixtureScore):
        def __call__(self, x, t):
            traces["n"] += 1
            return super().__call__(x, t)

    jd.sample(Counting(gm, vp), vp, x0, solver="unipc_bh2_3", num_steps=6)
    first = traces["n"]
    gm2 = jd.GaussianMixture(gm.weights, gm.means + 0.5, gm.covs)
    jd.sample(Counting(gm2, vp), vp, x0 * 1.1, solver="unipc_bh2_3", num_steps=6)
    assert traces["n"] == first, "new parameters / x_init must not retrace"


# ---------------------------------------------------------------------------------------------
# Adaptive DPM-Solver-12 / 23.
# ---------------------------------------------------------------------------------------------
def test_dpm_solver_adaptive_reaches_reference_within_tolerance(problem):
    sf, vp, x0, ref = problem
    errs, nfes = [], []
    for tol in (1e-3, 1e-5):
        res = dpm_solver_adaptive(sf, vp, x0, order=(2, 3), rtol=tol, atol=tol, t_end=T_END)
        err = float(rmse(res.samples, ref))
        assert res.nfe == 3 * (res.num_accepted_steps + res.num_rejected_steps)
        # Local-error control: the global error stays within a modest multiple of the tolerance
        # scale (|x| ~ 1..3 here, so rtol |x| + atol ~ 4 tol).
        assert err < 40 * tol, (tol, err, res.nfe)
        errs.append(err)
        nfes.append(res.nfe)
    assert errs[1] < errs[0] and nfes[1] > nfes[0]
    res12 = dpm_solver_adaptive(sf, vp, x0, order=(1, 2), rtol=1e-3, atol=1e-3, t_end=T_END)
    assert res12.nfe == 2 * (res12.num_accepted_steps + res12.num_rejected_steps)
    assert float(rmse(res12.samples, ref)) < 4e-2
    with pytest.raises(ValueError, match="order"):
        dpm_solver_adaptive(sf, vp, x0, order=(3, 4))
