import chex
import diffrax
import jax
import jax.numpy as jnp
import numpy as np
import pytest

import jaxode_diffusion as jd
from jaxode_diffusion.analysis.convergence import convergence_study, fit_order
from jaxode_diffusion.analysis.diffrax_drivers import (
    adaptive_sample,
    diffrax_fixed_step,
    reference_solve,
)
from tests.helpers import ALL_FORMS, ALL_TABLEAUX, mixture_problem, order_problem, rel_err

# Empirical orders. Each tableau runs at step counts b * 2^k (b chosen per order so the errors
# span ~1e-3 .. 1e-11); the order is the slope of the finest pair whose errors both stay above
# ERROR_FLOOR (100x the reference's tolerance), i.e. the most asymptotic reliable pair. k = 1..4:
# four step counts per case, one compilation each (the coarsest, k = 0, was the least asymptotic point;
# dropping the finest instead took dopri5's fitted slope to 4.50 at d = 8).
BASE_STEPS = {1: 128, 2: 32, 3: 32, 4: 24, 5: 16, 6: 16}
ERROR_FLOOR = 1e-9
T_END = 1e-3
# For p >= 5, float64 cannot reach the asymptotic regime on this problem: terms of order p + 1
# and above still dominate (dopri5 and tsit5 were built to have tiny principal error
# coefficients; error contributions of opposite sign make local slopes jump) when the error
# meets the floor. Measured (d = 2, 8, all forms): local slopes 4.9..8.9. For them the test fits
# one slope over all points above the floor and asks that no order is lost: slope > p - 0.3.
HIGH_ORDER = 5


@pytest.fixture(scope="module")
def problems():
    """``problems(d)``: the order problem in dimension d and its reference, built once per module."""
    cache = {}

    def get(d):
        if d not in cache:
            _, sf, vp, x0 = order_problem(d)
            cache[d] = (sf, vp, x0, reference_solve(sf, vp, x0, t_end=T_END))
        return cache[d]

    return get


# Every tableau in every form at d = 2; at d = 8 (the same code with a larger state: what changes
# is only the dimension) every tableau in the x0-lambda form and every form with RK4, instead of
# the whole product again (it cost the suite ~90 CPU-s).
ORDER_CASES = (
    [(2, form, tab) for tab in ALL_TABLEAUX for form in ALL_FORMS]
    + [(8, "x0-lambda", tab) for tab in ALL_TABLEAUX]
    + [(8, form, "rk4") for form in ALL_FORMS if form != "x0-lambda"]
)


def asymptotic_order(result):
    """Slope of the finest pair of errors above the floor."""
    pairs = [i for i in range(len(result.errors) - 1) if result.errors[i + 1] > ERROR_FLOOR]
    assert pairs, f"all errors below the floor: {result.errors}"
    return result.local_orders[pairs[-1]]


def window_order(result):
    """Least-squares slope over all points above the floor."""
    keep = [i for i, e in enumerate(result.errors) if e > ERROR_FLOOR]
    assert len(keep) >= 2, f"fewer than two errors above the floor: {result.errors}"
    return fit_order([result.h_max[i] for i in keep], [result.errors[i] for i in keep])


@pytest.mark.parametrize(("d", "form", "tab"), ORDER_CASES, ids=[f"d{d}-{t}-{f}" for d, f, t in ORDER_CASES])
def test_empirical_order_every_tableau_every_form(problems, d, form, tab):
    sf, vp, x0, ref = problems(d)
    p = jd.solvers.tableaux.get(tab).order
    b = BASE_STEPS[p]
    r = convergence_study(sf, vp, x0, f"{form}:{tab}", [b * 2**k for k in range(1, 5)], reference=ref,
                          t_end=T_END)
    info = (form, tab, [f"{e:.2e}" for e in r.errors], [f"{o:.2f}" for o in r.local_orders])
    if p >= HIGH_ORDER:
        assert window_order(r) > p - 0.3, info
    else:
        assert abs(asymptotic_order(r) - p) < 0.3, info


# Every form with RK4, and in the exponential x0-lambda form four more tableaux (orders 2, 3, 5, 6;
# explicit, incl. a 7-stage one), instead of the whole 5 x 6 product (diffrax's solve compiles in
# ~3 s each).
DIFFRAX_CASES = [(form, "rk4") for form in ALL_FORMS] + [
    ("x0-lambda", tab) for tab in ("heun", "kutta3", "dopri5", "butcher6")]


@pytest.mark.parametrize(("form", "tab"), DIFFRAX_CASES)
def test_fixed_step_agrees_with_diffrax(form, tab):
    gm, sf, vp, x0 = mixture_problem(3, seed=1, batch=8)
    ours = jd.sample(sf, vp, x0, solver=f"{form}:{tab}", num_steps=7, grid="log_snr")
    theirs = diffrax_fixed_step(sf, vp, x0, solver=f"{form}:{tab}", num_steps=7, grid="log_snr")
    np.testing.assert_allclose(ours, theirs, rtol=1e-10, atol=1e-10)


def test_reference_agrees_across_forms_and_with_diffrax_builtin():
    gm, sf, vp, x0 = mixture_problem(2, seed=3, batch=8)
    a = reference_solve(sf, vp, x0, form="x0-lambda")
    b = reference_solve(sf, vp, x0, form="x-t", solver=diffrax.Tsit5(), rtol=1e-12, atol=1e-12)
    assert rel_err(a, b) < 1e-9


def test_adaptive_sample_reports_nfe_and_is_accurate():
    gm, sf, vp, x0 = mixture_problem(2, seed=4, batch=8)
    ref = reference_solve(sf, vp, x0)
    loose = adaptive_sample(sf, vp, x0, solver="x0-lambda:bosh3", rtol=1e-4, atol=1e-4)
    tight = adaptive_sample(sf, vp, x0, solver="x0-lambda:dopri5", rtol=1e-8, atol=1e-8)
    assert tight.nfe > 0 and loose.nfe > 0
    assert rel_err(tight.samples, ref) < 1e-6
    assert rel_err(tight.samples, ref) < rel_err(loose.samples, ref)
    with pytest.raises(ValueError, match="no embedded error estimate"):
        adaptive_sample(sf, vp, x0, solver="rk4")


def test_no_retrace_on_new_parameters_or_x_init():
    traces = {"n": 0}

    class Score(jd.models.MixtureScore):
        def __call__(self, x, t):
            traces["n"] += 1
            return super().__call__(x, t)

    gm, _, vp, x0 = mixture_problem(2, seed=5, batch=8)
    s1 = Score(gm, vp)
    jd.sample(s1, vp, x0, solver="x0-lambda:rk4", num_steps=5)
    n_first = traces["n"]
    gm2 = jd.GaussianMixture(gm.weights, gm.means + 0.5, gm.covs)
    jd.sample(Score(gm2, vp), vp, x0 * 1.1, solver="x0-lambda:rk4", num_steps=5)
    assert traces["n"] == n_first, "new parameters / x_init must not retrace"


def test_chex_max_traces():
    gm, sf, vp, x0 = mixture_problem(2, seed=6, batch=4)

    @jax.jit
    @chex.assert_max_traces(n=1)
    def run(x):
        return jd.sample(sf, vp, x, solver="heun", num_steps=4)

    run(x0)
    run(x0 + 1.0)


def test_return_trajectory_and_nfe():
    gm, sf, vp, x0 = mixture_problem(2, seed=7, batch=4)
    sol = jd.sample(sf, vp, x0, solver="eps-rho:rk4", num_steps=6, grid="edm", return_trajectory=True)
    assert sol.trajectory.shape == (7, 4, 2)
    assert int(sol.nfe) == 24
    np.testing.assert_allclose(sol.trajectory[0], x0)
    np.testing.assert_allclose(sol.trajectory[-1], sol.samples, rtol=1e-12)


def test_manual_init_step_matches_sample():
    gm, sf, vp, x0 = mixture_problem(2, seed=8, batch=4)
    ts = jd.sampling.make_grid("log_snr", vp, 5, vp.t_max, 1e-3)
    plan = jd.sampling.make_plan(vp, "x0-lambda:rk4", ts)
    state = jd.sampling.init(plan, sf, vp, x0)
    for _ in range(plan.num_steps):
        state = jd.sampling.step(plan, sf, vp, state)
    x = jd.sampling.current_x(plan, vp, state)
    ref = jd.sample(sf, vp, x0, solver="x0-lambda:rk4", grid=ts)
    np.testing.assert_allclose(x, ref, rtol=1e-12)
    assert int(state.nfe) == 20


def test_event_shape_images_and_float32():
    vp = jd.VPLinear()
    gm = jd.GaussianMixture(jnp.ones(2), jnp.stack([jnp.zeros(12), jnp.ones(12)]), jnp.array([0.3, 0.3]))
    x = jax.random.normal(jax.random.PRNGKey(0), (3, 2, 2, 3), dtype=jnp.float32)
    out = jd.sample(gm.score_fn(vp), vp, x, solver="x0-lambda:heun", num_steps=4)
    assert out.shape == x.shape and out.dtype == jnp.float32


def test_nonfinite_reported_with_element_and_step():
    vp = jd.VPLinear()

    def bad_score(x, t):
        return jnp.where((t < 0.5) & (jnp.arange(x.shape[0])[:, None] == 2), jnp.nan, -x)

    with pytest.raises(jd.sampling.NonFiniteSampleError, match="batch element 2"):
        jd.sample(bad_score, vp, jnp.ones((4, 2)), solver="euler", num_steps=4)


def test_sharded_inputs_stay_sharded():
    devices = jax.devices()
    if len(devices) < 2:
        pytest.skip("needs XLA_FLAGS=--xla_force_host_platform_device_count>=2 (set in conftest)")
    mesh = jax.sharding.Mesh(np.array(devices), ("batch",))
    sharding = jax.sharding.NamedSharding(mesh, jax.sharding.PartitionSpec("batch"))
    gm, sf, vp, x0 = mixture_problem(2, seed=9, batch=8 * len(devices))
    xs = jax.device_put(x0, sharding)
    out = jd.sample(sf, vp, xs, solver="x0-lambda:rk4", num_steps=4)
    assert out.sharding.is_equivalent_to(sharding, out.ndim)
    np.testing.assert_allclose(out, jd.sample(sf, vp, x0, solver="x0-lambda:rk4", num_steps=4), rtol=1e-12)


@pytest.mark.parametrize(
    "kwargs, match",
    [
        ({"solver": "nope"}, "unknown method"),
        ({"solver": "x-y:rk4"}, "unknown form"),
        ({"num_steps": 0}, "positive integer"),
        ({"t_start": 0.1, "t_end": 0.5}, "larger than t_end"),
        ({"t_start": 2.0}, "range"),
        ({"num_steps": None}, "num_steps is required"),
    ],
)
def test_bad_arguments(kwargs, match):
    gm, sf, vp, x0 = mixture_problem(2, batch=2)
    kw = {"num_steps": 4, **kwargs}
    with pytest.raises(ValueError, match=match):
        jd.sample(sf, vp, x0, **kw)


def test_bad_x_init():
    gm, sf, vp, _ = mixture_problem(2, batch=2)
    with pytest.raises(ValueError, match="batch"):
        jd.sample(sf, vp, jnp.zeros(2), num_steps=2)
    with pytest.raises(ValueError, match="floating"):
        jd.sample(sf, vp, jnp.zeros((2, 2), jnp.int32), num_steps=2)


def test_sample_sharded_matches_single_device():
    from jaxode_diffusion.sampling.distributed import batch_mesh, sample_sharded, shard_batch

    gm, sf, vp, x0 = mixture_problem(2, seed=10, batch=8 * len(jax.devices()))
    out = sample_sharded(sf, vp, x0, solver="x0-lambda:heun", num_steps=4)
    assert len(out.sharding.device_set) == len(jax.devices())
    np.testing.assert_allclose(out, jd.sample(sf, vp, x0, solver="x0-lambda:heun", num_steps=4), rtol=1e-12)
    if len(jax.devices()) > 1:
        with pytest.raises(ValueError, match="multiple"):
            shard_batch(x0[:-1], batch_mesh())


def test_first_order_exponential_forms_are_ddim():
    """Euler in eps-rho and in x0-snr is DDIM; Euler in ou-exp is exponential Euler in the OU frame."""
    gm, sf, vp, x0 = mixture_problem(2, seed=11, batch=6)
    ts = jd.sampling.make_grid("log_snr", vp, 6, vp.t_max, 1e-3)
    y = x0
    for t0, t1 in zip(ts[:-1], ts[1:], strict=True):
        x0_hat = (y + vp.sigma(t0) ** 2 * sf(y, t0)) / vp.alpha(t0)
        eps_hat = -vp.sigma(t0) * sf(y, t0)
        y = vp.alpha(t1) * x0_hat + vp.sigma(t1) * eps_hat  # DDIM (Song et al. 2021, eq. 12, eta = 0)
    for spec in ("eps-rho:euler", "x0-snr:euler"):
        np.testing.assert_allclose(jd.sample(sf, vp, x0, solver=spec, grid=ts), y, rtol=1e-11, atol=1e-12)
    # OU frame: Y1 = e^{-h} Y0 + (1 - e^{-h}) N(Y0), N = -c score, s = log(1 + rho^2) / 2
    c = vp.c
    s_of = lambda t: 0.5 * jnp.log1p(vp.rho(t) ** 2)
    x = x0
    for t0, t1 in zip(ts[:-1], ts[1:], strict=True):
        h = s_of(t1) - s_of(t0)
        big_y = x / c(t0)
        big_y = jnp.exp(-h) * big_y + (1 - jnp.exp(-h)) * (-c(t0) * sf(x, t0))
        x = big_y * c(t1)
    np.testing.assert_allclose(jd.sample(sf, vp, x0, solver="ou-exp:euler", grid=ts), x, rtol=1e-10, atol=1e-11)
