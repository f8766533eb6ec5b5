"""Contract tests over every registered solver (``solver_names()``) and the public ``solve``.

Each named solver: output shape and dtype in float32 and float64, no retrace on a second call,
the NFE formula of its family, manual init/step equal to ``sample``. ``solve`` under jit, vmap
and grad; gradients with respect to the grid and a process parameter against finite
differences; NaNs produced inside a jitted or differentiated solve reported (element, step).
"""

import chex
import equinox as eqx
import jax
import jax.numpy as jnp
import numpy as np
import pytest

import jaxode_diffusion as jd
from jaxode_diffusion.analysis.convergence import convergence_study
from jaxode_diffusion.analysis.diffrax_drivers import reference_solve
from jaxode_diffusion.sampling import core as S
from jaxode_diffusion.solvers.exponential import EDMHeun, ExponentialSinglestep
from jaxode_diffusion.solvers.multistep import ExponentialMultistep
from jaxode_diffusion.solvers.runge_kutta import RungeKutta
from tests.helpers import mixture_problem, order_problem

NAMED = tuple(n for n in jd.solver_names() if n not in jd.solvers.tableaux.names())
# Every named method, and every tableau in one form (the whole tableau x form product is covered
# by tests/sampling/test_solve.py's order tests), the forms taken in turn.
CONTRACT = NAMED + tuple(
    f"{jd.solvers.FORM_NAMES[i % len(jd.solvers.FORM_NAMES)]}:{t}" for i, t in enumerate(jd.solvers.tableaux.names())
)
STEPS = 6


def expected_nfe(solver, n: int) -> int:
    if isinstance(solver, RungeKutta):
        return n * solver.tableau.num_stages
    if isinstance(solver, ExponentialSinglestep):
        return n * solver.coefficients.num_stages
    if isinstance(solver, EDMHeun):
        # Heun's correction is skipped on the last step only with last_step="euler".
        return 2 * n - (solver.last_step == "euler")
    if isinstance(solver, ExponentialMultistep):
        return n  # one evaluation per step: history replaces stages
    raise AssertionError(f"no NFE formula for {type(solver).__name__}")


@pytest.fixture(scope="module")
def problem():
    return mixture_problem(3, seed=5, batch=4)


# float32 for every entry; float64 for the named methods (the tableau entries run in float64 in every
# form in tests/sampling/test_solve.py's order tests; the NFE formula does not depend on the dtype).
DTYPE_CASES = [(n, jnp.float32) for n in CONTRACT] + [(n, jnp.float64) for n in NAMED]


@pytest.mark.parametrize(("name", "dtype"), DTYPE_CASES,
                         ids=[f"{jnp.dtype(d).name}-{n}" for n, d in DTYPE_CASES])
def test_shape_dtype_nfe(problem, name, dtype):
    _, sf, vp, x0 = problem
    x0 = x0.astype(dtype)
    sol = jd.sample(sf, vp, x0, solver=name, num_steps=STEPS, grid="log_snr", return_nfe=True)
    assert sol.samples.shape == x0.shape and sol.samples.dtype == dtype
    assert int(sol.result) == 0 and np.all(np.asarray(sol.first_nonfinite_step) == -1)
    assert int(sol.nfe) == expected_nfe(jd.get_solver(name), STEPS)
    assert np.all(np.isfinite(np.asarray(sol.samples)))


@pytest.mark.parametrize("name", NAMED + ("x0-lambda:rk4",))
def test_no_retrace_and_manual_stepping(problem, name):
    gm, _, vp, x0 = problem
    traces = []

    class Score(eqx.Module):
        gm: object

        def __call__(self, x, t):
            traces.append(1)  # runs only while tracing
            return self.gm.score_fn(vp)(x, t)

    score = Score(gm)
    ts = jd.make_times(vp, num_steps=STEPS, grid="log_snr")
    a = jd.solve(score, vp, x0, ts, name).samples
    n_traces = len(traces)
    jd.solve(score, vp, x0 + 0.01, ts, name)  # new values, same shapes: no new trace
    assert len(traces) == n_traces

    plan = S.make_plan(vp, name, ts)
    state = S.init(plan, score, vp, x0)
    step = eqx.filter_jit(S.step)  # as a user's loop would (one program; eager steps compile op by op)
    for _ in range(plan.num_steps):
        state = step(plan, score, vp, state)
    b = S.current_x(plan, vp, state)
    np.testing.assert_allclose(np.asarray(b), np.asarray(a), rtol=1e-10, atol=1e-12)


def test_solve_under_jit_vmap_grad(problem):
    _, sf, vp, x0 = problem
    ts = jd.make_times(vp, num_steps=8, grid="log_snr")
    eager = jd.solve(sf, vp, x0, ts, "x0-lambda:rk4").samples
    jitted = jax.jit(lambda x: jd.solve(sf, vp, x, ts, "x0-lambda:rk4").samples)(x0)
    vmapped = jax.vmap(lambda x: jd.solve(sf, vp, x[None], ts, "x0-lambda:rk4").samples[0])(x0)
    np.testing.assert_allclose(np.asarray(jitted), np.asarray(eager), rtol=1e-12)
    np.testing.assert_allclose(np.asarray(vmapped), np.asarray(eager), rtol=1e-10)
    g = jax.grad(lambda x: jnp.sum(jd.solve(sf, vp, x, ts, "dpmpp_2m").samples ** 2))(x0)
    assert g.shape == x0.shape and np.all(np.isfinite(np.asarray(g)))


@pytest.mark.parametrize("name", ["x-t:rk4", "x0-lambda:heun", "dpmpp_2m", "unipc_bh2_2", "dpm_solver_2"])
def test_grad_wrt_grid_and_process_parameter_matches_finite_differences(name):
    # A process with a traced parameter: a VP schedule alpha = exp(-b t^2 / 2 ...) through
    # from_alpha_sigma's params; the loss is a smooth function of the end points.
    gm = jd.GaussianMixture.random(jax.random.PRNGKey(3), 2, 2, scale=1.0, min_var=0.3, max_var=0.6)

    def proc(beta):
        return jd.ForwardProcess.from_alpha_sigma(
            lambda t, b: jnp.exp(-0.25 * b * t**2 - 0.05 * t),
            lambda t, b: jnp.sqrt(1 - jnp.exp(-0.5 * b * t**2 - 0.1 * t)),
            params=beta,
        )

    beta0 = jnp.asarray(10.0)
    p0 = proc(beta0)
    x0 = jax.random.normal(jax.random.PRNGKey(4), (3, 2))
    ts0 = jd.make_times(p0, num_steps=5, t_end=1e-2, grid="uniform")

    @jax.jit  # one compile for the six finite-difference evaluations (eager: one each)
    def loss(ts, beta):
        p = proc(beta)
        return jnp.sum(jnp.sin(jd.solve(gm.score_fn(p), p, x0, ts, name).samples))

    g_ts, g_beta = jax.grad(loss, argnums=(0, 1))(ts0, beta0)
    eps = 1e-6
    for i in (1, 3):  # interior grid points
        e = jnp.zeros_like(ts0).at[i].set(eps)
        fd = (loss(ts0 + e, beta0) - loss(ts0 - e, beta0)) / (2 * eps)
        np.testing.assert_allclose(float(g_ts[i]), float(fd), rtol=1e-5, atol=1e-8)
    fd_beta = (loss(ts0, beta0 + eps) - loss(ts0, beta0 - eps)) / (2 * eps)
    np.testing.assert_allclose(float(g_beta), float(fd_beta), rtol=1e-5, atol=1e-8)


def _nan_below(t_bad):
    return lambda x, t: jnp.where(t < t_bad, jnp.nan, 1.0) * x


def test_nan_reported_with_element_and_step_eager():
    vp = jd.VPLinear()
    x0 = jnp.ones((5, 2))
    ts = jd.make_times(vp, num_steps=10, t_end=1e-3, grid="uniform")
    bad = lambda x, t: jnp.where((t < 0.55) & (jnp.arange(5) == 2)[:, None], jnp.nan, -x)
    with pytest.raises(jd.NonFiniteSampleError, match=r"batch element 2 first at step 5"):
        jd.solve(bad, vp, x0, ts, "euler")
    sol = jd.solve(bad, vp, x0, ts, "euler", throw=False)
    assert int(sol.result) == jd.RESULTS.nonfinite_state
    assert np.asarray(sol.first_nonfinite_step).tolist() == [-1, -1, 5, -1, -1]


@pytest.mark.parametrize("wrap", ["jit", "grad", "vmap"])
def test_nan_reported_under_transformations(wrap):
    vp = jd.VPLinear()
    x0 = jnp.ones((3, 2))
    ts = jd.make_times(vp, num_steps=10, t_end=1e-3, grid="uniform")
    bad = lambda x, t: jnp.where((t < 0.55) & (jnp.arange(x.shape[0]) == x.shape[0] - 1)[:, None], jnp.nan, -x)
    f = lambda x: jd.solve(bad, vp, x, ts, "euler").samples
    run = {
        "jit": lambda: jax.jit(f)(x0),
        "grad": lambda: jax.grad(lambda x: jnp.sum(f(x)))(x0),
        "vmap": lambda: jax.vmap(lambda x: f(x))(jnp.stack([x0, x0])),
    }[wrap]
    with pytest.raises(Exception, match=r"batch element 2 \(the first affected\) first at step 5 of 10"):
        jax.block_until_ready(run())


def test_result_codes_under_jit_without_throw():
    vp = jd.VPLinear()
    x0 = jnp.ones((2, 2))
    ts = jd.make_times(vp, num_steps=4, grid="uniform")
    f = jax.jit(lambda x, ts: jd.solve(lambda x, t: -x, vp, x, ts, "rk4", throw=False))
    assert int(f(x0, ts).result) == jd.RESULTS.successful
    assert int(f(x0.at[1, 0].set(jnp.inf), ts).result) == jd.RESULTS.nonfinite_input
    assert int(f(x0, ts.at[2].set(jnp.nan)).result) == jd.RESULTS.invalid_grid
    with pytest.raises(Exception, match="time grid ts"):
        jax.block_until_ready(jax.jit(lambda ts: jd.solve(lambda x, t: -x, vp, x0, ts, "dpmpp_2m").samples)(
            ts.at[2].set(ts[1] + 0.1)))


def test_conditioning_is_traced_and_reaches_the_score():
    vp = jd.VPLinear()
    traces = []

    def score(x, t, cond):
        traces.append(1)
        return -x + cond["shift"][:, None] * jnp.ones_like(x)

    x0 = jnp.ones((3, 2))
    ts = jd.make_times(vp, num_steps=4, grid="log_snr")
    a = jd.solve(score, vp, x0, ts, "x0-lambda:heun", cond={"shift": jnp.zeros(3)}).samples
    n = len(traces)
    b = jd.solve(score, vp, x0, ts, "x0-lambda:heun", cond={"shift": jnp.ones(3)}).samples
    assert len(traces) == n
    assert not np.allclose(np.asarray(a), np.asarray(b))
    ref = jd.solve(lambda x, t: -x + 1.0, vp, x0, ts, "x0-lambda:heun").samples
    np.testing.assert_allclose(np.asarray(b), np.asarray(ref), rtol=1e-12)
    with pytest.raises(ValueError, match=r"cond\['shift'\] has leading dimension 2"):
        jd.sample(score, vp, x0, num_steps=4, cond={"shift": jnp.ones(2)})


def test_remat_gives_the_same_values_and_gradients():
    _, sf, vp, x0 = mixture_problem(2, seed=1, batch=3)
    ts = jd.make_times(vp, num_steps=6, grid="log_snr")
    loss = lambda x, remat: jnp.sum(jd.solve(sf, vp, x, ts, "dpmpp_2m", remat=remat).samples ** 2)
    np.testing.assert_allclose(float(loss(x0, True)), float(loss(x0, False)), rtol=1e-12)
    np.testing.assert_allclose(np.asarray(jax.grad(loss)(x0, True)), np.asarray(jax.grad(loss)(x0, False)),
                               rtol=1e-10)


def _grad_temp_bytes(num_steps, remat):
    d, b = 16, 256
    w = jax.random.normal(jax.random.PRNGKey(0), (d, d)) / d
    vp = jd.VPLinear()
    x0 = jax.random.normal(jax.random.PRNGKey(1), (b, d), jnp.float32)
    ts = jd.make_times(vp, num_steps=num_steps, grid="uniform").astype(jnp.float32)

    def loss(w):
        score = lambda x, t: -x + jnp.tanh(x @ w.astype(x.dtype))
        return jnp.sum(jd.solve(score, vp, x0, ts, "rk4", remat=remat, throw=False).samples ** 2)

    compiled = jax.jit(jax.grad(loss)).lower(w.astype(jnp.float32)).compile()
    return compiled.memory_analysis().temp_size_in_bytes


def test_remat_gradient_memory_does_not_grow_with_steps():
    plain = _grad_temp_bytes(10, False), _grad_temp_bytes(100, False)
    remat = _grad_temp_bytes(10, True), _grad_temp_bytes(100, True)
    assert plain[1] > 4 * plain[0], plain  # the plain scan stores every step
    assert remat[1] <= 1.5 * remat[0], remat


# Solvers never order-tested elsewhere (tests/solvers/test_exponential.py covers the rest); the step
# pairs are the most asymptotic measured for each (errors above the float64 floor).
EXTRA_ORDER_CASES = [
    ("ddim", (64, 128)),
    ("dpm_solver_1", (64, 128)),
    ("dpmpp_1", (64, 128)),
    ("dpmpp_3s", (64, 128)),
    ("unipc_bh1_3", (384, 768)),
    ("deis_ab1", (64, 128)),
]


@pytest.fixture(scope="module")
def order_ref():
    _, sf, vp, x0 = order_problem(2)
    return sf, vp, x0, reference_solve(sf, vp, x0, t_end=1e-3)


@pytest.mark.parametrize("name,steps", EXTRA_ORDER_CASES, ids=[c[0] for c in EXTRA_ORDER_CASES])
def test_empirical_order_of_remaining_solvers(order_ref, name, steps):
    sf, vp, x0, ref = order_ref
    r = convergence_study(sf, vp, x0, name, list(steps), reference=ref, t_end=1e-3, grid="log_snr")
    assert min(r.errors) > 1e-9, (name, r.errors)
    assert abs(r.local_orders[-1] - jd.get_solver(name).order) < 0.3, (name, r.errors, r.local_orders)


def test_every_named_solver_is_order_tested():
    from tests.solvers import test_exponential

    tested = {c[0] for c in test_exponential.ORDER_CASES} | {c[0] for c in EXTRA_ORDER_CASES}
    aliases = set(jd.solvers.multistep.MULTISTEP_ALIASES)
    assert set(NAMED) - aliases - tested == set()


def test_chex_max_traces_on_a_jitted_pipeline(problem):
    _, sf, vp, x0 = problem
    ts = jd.make_times(vp, num_steps=4, grid="log_snr")

    @jax.jit
    @chex.assert_max_traces(n=1)
    def run(x):
        return jd.solve(sf, vp, x, ts, "dpmpp_2m").samples

    run(x0)
    run(x0 * 2)
