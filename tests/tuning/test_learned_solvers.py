"""Learned solvers: order conditions after fitting, empirical local order, start = base, never worse than
the start on the held-back batch, jit/vmap/grad, JSON round trip, and argument errors."""

import json

import equinox as eqx
import jax
import jax.numpy as jnp
import numpy as np
import pytest

import jaxode_diffusion as jd
from jaxode_diffusion.solvers.base import StepInfo
from jaxode_diffusion.solvers.learned import (
    LearnedMultistep,
    LearnedSinglestep,
    learned_solver_from_dict,
    learned_start,
    node_matrix,
)
from jaxode_diffusion.solvers.multistep import MULTISTEP_SCHEMES
from jaxode_diffusion.solvers.phi import phis
from jaxode_diffusion.solvers.predictions import PREDICTIONS
from jaxode_diffusion.tuning.grid_optimization import grid_from_logits, process_spec
from jaxode_diffusion.tuning.learned import LearnedSolver, learn_solver, load_learned
from jaxode_diffusion.tuning.tuner import TunedSampler

F64 = jnp.float64
VP = jd.VPLinear()
MU, VAR = jnp.array([0.7, -0.4]), 0.3
# One Gaussian: smooth, with an exact score and an exact flow map (the teacher needs no ODE solve).
GAUSS = jd.GaussianMixture(jnp.ones(1), MU[None], jnp.array([VAR]))
SF = GAUSS.score_fn(VP)
# (base, order, history): every family, with free weights or fractions at every step it allows.
FAMILIES = [("dpmpp_2m", 2, 4), ("dpmpp_3m", 2, 3), ("unipc_bh2_2", 3, 3), ("deis_ab2", 2, 3),
            ("dpmpp_2s", 2, None), ("dpmpp_3s", 3, None), ("dpmpp_3s", 2, None)]


def exact_flow(x, t_from, t_to):
    """The probability-flow map of N(MU, VAR I) under VP: (x - alpha MU) / c is constant."""
    def c(t):
        return jnp.sqrt(VP.alpha(t) ** 2 * VAR + VP.sigma(t) ** 2)

    return VP.alpha(t_to) * MU + c(t_to) / c(t_from) * (x - VP.alpha(t_from) * MU)


def randomized(base, order, history, num_steps, seed):
    """The learned solver of base's family with random non-trivial free parameters (free stage
    fractions uniform in (0.2, 0.9))."""
    s = learned_start(base, num_steps, order=order, history=history, dtype=F64)
    key = jax.random.PRNGKey(seed)
    if isinstance(s, LearnedMultistep):
        return s.with_free(jax.random.normal(key, s.free_parameters().shape, F64))
    c = s.c
    for i in s.free_stages:
        c = c.at[:, i - 1].set(jax.random.uniform(jax.random.fold_in(key, i), (num_steps,), F64, 0.2, 0.9))
    return eqx.tree_at(lambda m: m.c, s, c)


@pytest.fixture(scope="module")
def fitted():
    keys = jax.random.split(jax.random.PRNGKey(0), 3)
    x_cal, x_held, x_fresh = (VP.prior_sample(k, (n, 2), dtype=F64) for k, n in zip(keys, (16, 16, 32)))
    t0, t1 = VP.default_t_start, VP.default_t_end
    ls = learn_solver(SF, VP, x_cal, nfe=5, base="dpmpp_2m", history=3, steps=6, learning_rate=0.05,
                      heldout_x_init=x_held, fresh_x_init=x_fresh, reference=exact_flow(x_cal, t0, t1),
                      heldout_reference=exact_flow(x_held, t0, t1))
    return ls, x_cal, x_held


# ---------------------------------------------------------------------------------------------
# Order conditions, by family.
# ---------------------------------------------------------------------------------------------
def base_moments(scheme, h, q_base, corrector: bool):
    """The moments the base's weights reproduce: exact h phi_{k+1}(s h), or its two-node rule."""
    pred = PREDICTIONS[scheme.prediction]
    n = scheme.steps + corrector
    m = np.array([float(h * p) for p in phis(n, pred.sign * h)])
    rule = scheme.corrector if corrector else scheme.two_point
    if rule != "taylor" and q_base + corrector == 2:
        m[1] = float(0.5 * h) if rule == "bh1" else float(0.5 * h * phis(1, pred.sign * h)[0])
    return m


def check_multistep(solver: LearnedMultistep, us):
    """At every step: C w = base moments for k < conditions, no weight on missing nodes, and the
    weights differ from the base's where free weights exist."""
    start = learned_start(solver.base, solver.num_steps, order=solver.order, history=solver.history, dtype=F64)
    big_n, q, moved = solver.num_steps, solver.history, 0.0
    coefficients = eqx.filter_jit(lambda s, u_hist, u1, n: s.coefficients(u_hist, u1, n, big_n))
    for n in range(big_n):
        u_hist = jnp.stack([us[max(n - j, 0)] for j in range(q)])
        co = coefficients(solver, u_hist, us[n + 1], jnp.asarray(n))
        q_base = min(n + 1, solver.scheme.steps) if big_n >= 10 else min(n + 1, solver.scheme.steps, big_n - n)
        h = us[n + 1] - us[n]
        rows = [(co.nodes, co.weights, co.conditions, co.valid, False)]
        if co.corrector_weights is not None:
            rows.append((co.corrector_nodes, co.corrector_weights, co.conditions + 1, co.valid + 1, True))
        for nodes, w, p_n, valid, corr in rows:
            p_n, valid = int(p_n), int(valid)
            assert p_n == min(solver.conditions, q_base) + corr
            target = base_moments(solver.scheme, h, q_base, corr)[:p_n]
            got = np.asarray(node_matrix(nodes, p_n)[:, :valid] @ w[:valid])
            np.testing.assert_allclose(got, target, rtol=1e-10, atol=1e-10 * float(jnp.abs(h)))
            assert np.all(np.asarray(w[valid:]) == 0.0)
        base_w = coefficients(start, u_hist, us[n + 1], jnp.asarray(n)).weights
        moved = max(moved, float(jnp.max(jnp.abs(co.weights - base_w))))
    assert moved > 1e-3  # the check is on non-trivial weights


def check_singlestep(solver: LearnedSinglestep, us):
    """At every step and row: the first-moment condition, fractions in (0, 1), fixed ones kept."""
    pred = PREDICTIONS[solver.prediction]
    c = np.asarray(solver.c)
    assert np.all((c > 0) & (c < 1))
    fixed = [i for i in range(1, solver.stages.num_stages) if i not in solver.free_stages]
    for i in fixed:
        assert np.all(c[:, i - 1] == solver.stages.c[i])
    assert solver.order == 2 or fixed  # order 3 keeps c_3 = 2/3
    cs = np.concatenate([np.zeros((c.shape[0], 1)), c], axis=1)
    for n in range(solver.num_steps):
        h = us[n + 1] - us[n]
        terms = [*solver.stages.stages, solver.stages.final]
        for (ci, weights), row in zip(solver.rows(n, h), terms):
            big_h = ci * h
            (j, beta, k), = row or [(None, 0.0, 1)]
            target = 0.0 if j is None else beta * big_h * phis(k, pred.sign * big_h)[k - 1]
            got = sum(w * cs[n, jj] / ci for jj, w in weights.items())
            np.testing.assert_allclose(float(got), float(target), rtol=1e-10, atol=1e-14)


@pytest.mark.parametrize("base,order,history", FAMILIES)
def test_order_conditions_hold_with_random_coefficients_and_times(base, order, history):
    n = 7
    solver = randomized(base, order, history, n, seed=3)
    logits = jax.random.normal(jax.random.PRNGKey(4), (n,), F64)
    ts = grid_from_logits(VP, logits, VP.default_t_start, VP.default_t_end)
    us = np.asarray(solver.form.u(VP, ts), np.float64)
    if isinstance(solver, LearnedMultistep):
        check_multistep(solver, us)
    else:
        check_singlestep(solver, us)


def test_order_conditions_hold_after_fitting(fitted):
    ls = fitted[0]
    assert ls.improved and ls.best_iteration > 0
    us = np.asarray(ls.solver.form.u(VP, jnp.asarray(ls.ts)), np.float64)
    check_multistep(ls.solver, us)


# ---------------------------------------------------------------------------------------------
# Empirical local order on the exact Gaussian problem.
# ---------------------------------------------------------------------------------------------
def local_errors(solver, hs, n=6, big_n=12):
    """Error of one step of ``solver`` from the exact state (and exact history) at t = 0.4."""
    form = solver.form
    pred = PREDICTIONS[solver.scheme.prediction if isinstance(solver, LearnedMultistep) else solver.prediction]
    x0 = MU + jnp.array([[1.1, -0.6], [-0.3, 0.9]], F64)
    t0 = jnp.asarray(0.4, F64)
    u0 = form.u(VP, t0)
    sign = jnp.sign(form.u(VP, 0.3) - u0)  # the direction of sampling in u
    ratios = jnp.array([0.0, 1.0, 2.3, 3.1, 4.0], F64)

    def one(h):
        h = sign * h * jnp.abs(u0)
        u1 = u0 + h
        t1 = form.t_of_u(VP, u1)
        y0 = form.to_state(VP, x0, t0)
        state = None
        if isinstance(solver, LearnedMultistep):
            u_hist = u0 - ratios[: solver.history] * h
            t_hist = form.t_of_u(VP, u_hist).at[0].set(t0)
            ys = [form.to_state(VP, exact_flow(x0, t0, t), t) for t in t_hist]
            state = (jnp.stack([pred.model(SF, VP, y, t) for y, t in zip(ys, t_hist)]), u_hist)
        # Where the plan puts each solver's first stage: the step's end for multistep, its start otherwise.
        t_stages = jnp.stack([t1] if isinstance(solver, LearnedMultistep) else [t0, t1, t1])
        info = StepInfo(jnp.asarray(n, jnp.int32), t0, t1, u0, u1, t_stages, big_n)
        y1 = solver.step(SF, VP, y0, state, info)[0]
        return jnp.sqrt(jnp.sum((form.from_state(VP, y1, t1) - exact_flow(x0, t0, t1)) ** 2))

    return np.asarray(jax.jit(jax.vmap(one))(jnp.asarray(hs, F64)))


@pytest.mark.parametrize("base,order,history", FAMILIES)
def test_local_error_falls_like_h_to_the_order_plus_one(base, order, history):
    solver = randomized(base, order, history, 12, seed=5)
    hs = [0.08, 0.04, 0.02, 0.01]
    err = local_errors(solver, hs)
    slopes = np.log2(err[:-1] / err[1:])
    assert abs(slopes[-1] - (order + 1)) < 0.3, (slopes, err)
    assert np.all(slopes > order + 0.5), (slopes, err)


# ---------------------------------------------------------------------------------------------
# Start = base; never worse than the start; jit / vmap / grad.
# ---------------------------------------------------------------------------------------------
@pytest.mark.parametrize("base", ["dpmpp_2m", "unipc_bh2_2", "dpmpp_3s"])
def test_start_equals_the_base(base):
    x = VP.prior_sample(jax.random.PRNGKey(1), (8, 2), dtype=F64)
    ts = jd.make_times(VP, num_steps=4, grid="log_snr").astype(F64)
    a = jd.solve(SF, VP, x, ts, learned_start(base, 4, dtype=F64))
    b = jd.solve(SF, VP, x, ts, base)
    np.testing.assert_allclose(a.samples, b.samples, rtol=0, atol=1e-13)
    assert int(a.nfe) == int(b.nfe)


def test_never_worse_than_the_start_on_the_held_back_batch(fitted):
    ls, x_cal, x_held = fitted
    assert ls.heldout_error <= ls.start_heldout_error
    assert ls.heldout_error == pytest.approx(min([ls.start_heldout_error, *ls.heldout_history]), rel=1e-8)
    assert ls.fresh_error < ls.start_fresh_error and ls.fresh_size == 32
    # A learning rate that wrecks every iterate: the start comes back, exactly.
    t0, t1 = VP.default_t_start, VP.default_t_end
    with pytest.warns(RuntimeWarning, match="non-finite loss or gradient"):
        bad = learn_solver(SF, VP, x_cal, nfe=5, base="dpmpp_2m", history=3, steps=2, learning_rate=300.0,
                           heldout_x_init=x_held, reference=exact_flow(x_cal, t0, t1),
                           heldout_reference=exact_flow(x_held, t0, t1))
    assert not bad.improved and bad.best_iteration == 0 and bad.heldout_error == bad.start_heldout_error
    np.testing.assert_array_equal(bad.solver.z, 0.0)
    np.testing.assert_array_equal(bad.ts, jd.make_times(VP, num_steps=5, grid="log_snr"))


def test_starts_from_a_tuned_sampler(fitted):
    ls, x_cal, x_held = fitted
    ts = jd.make_times(VP, num_steps=5, grid="quadratic")
    tuned = TunedSampler(solver="dpmpp_2m", ts=np.asarray(ts), nfe=5, num_steps=5, grid="quadratic",
                         heldout_error=1.0, nfe_budget=5, process=process_spec(VP))
    t0, t1 = VP.default_t_start, VP.default_t_end
    got = learn_solver(SF, VP, x_cal, nfe=5, base=tuned, history=3, steps=1, heldout_x_init=x_held,
                       reference=exact_flow(x_cal, t0, t1), heldout_reference=exact_flow(x_held, t0, t1))
    assert got.grid == "tuned(quadratic)" and got.base == "dpmpp_2m" and got.num_steps == 5
    assert got.heldout_error <= got.start_heldout_error
    with pytest.raises(ValueError, match="grid has 5 steps, but 'dpmpp_2m' takes 6 steps at nfe=6"):
        learn_solver(SF, VP, x_cal, nfe=6, grid=ts, heldout_x_init=x_held)


def test_jit_vmap_and_grad(fitted):
    ls, x_cal, _ = fitted
    ts = jnp.asarray(ls.ts, F64)
    eager = jd.solve(SF, VP, x_cal, ts, ls.solver).samples
    jitted = jax.jit(lambda s, x: jd.solve(SF, VP, x, ts, s).samples)(ls.solver, x_cal)
    np.testing.assert_allclose(jitted, eager, rtol=0, atol=1e-13)
    vm = jax.vmap(lambda x: jd.solve(SF, VP, x, ts, ls.solver, throw=False).samples)(x_cal.reshape(2, 8, 2))
    np.testing.assert_allclose(vm.reshape(16, 2), eager, rtol=0, atol=1e-13)

    def loss(solver_and_ts):
        solver, ts = solver_and_ts
        return jnp.sum(jd.solve(SF, VP, x_cal, ts, solver, throw=False).samples ** 2)

    g_solver, g_ts = eqx.filter_grad(loss)((ls.solver, ts))
    assert np.all(np.isfinite(g_solver.z)) and float(jnp.max(jnp.abs(g_solver.z[2:]))) > 0
    assert np.all(np.isfinite(g_ts)) and float(jnp.max(jnp.abs(g_ts[1:-1]))) > 0
    single = randomized("dpmpp_2s", 2, None, 2, seed=1)
    ts2 = jd.make_times(VP, num_steps=2, grid="log_snr").astype(F64)
    g_c = eqx.filter_grad(loss)((single, ts2))[0].c
    assert np.all(np.isfinite(g_c)) and float(jnp.min(jnp.abs(g_c))) > 0


# ---------------------------------------------------------------------------------------------
# JSON, and errors that name the argument or field.
# ---------------------------------------------------------------------------------------------
def test_json_round_trip_gives_identical_samples(fitted, tmp_path):
    ls, x_cal, _ = fitted
    path = ls.save(tmp_path / "learned.json")
    back = load_learned(path, process=VP)
    assert isinstance(back, LearnedSolver) and back.solver.name == ls.solver.name
    assert back.base == "dpmpp_2m" and back.family == "multistep" and back.calibration_size == 16
    np.testing.assert_array_equal(back.sample(SF, VP, x_cal), ls.sample(SF, VP, x_cal))
    single = randomized("dpmpp_3s", 3, None, 3, seed=2)
    assert learned_solver_from_dict(json.loads(json.dumps(single.to_dict()))).c.tolist() == single.c.tolist()

    raw = json.loads(path.read_text())
    cases = [("solver.coefficients.z", lambda d: d["solver"]["coefficients"].update(z=[[0.0]])),
             ("ts", lambda d: d.update(ts=d["ts"][::-1])),
             ("'ts' is missing", lambda d: d.pop("ts")),
             ("format", lambda d: d.update(format="other")),
             ("solver.coefficients.z", lambda d: d["solver"]["coefficients"]["z"][0].__setitem__(0, None))]
    for i, (field, corrupt) in enumerate(cases):
        d = json.loads(json.dumps(raw))
        corrupt(d)
        bad = tmp_path / f"bad{i}.json"
        bad.write_text(json.dumps(d))
        with pytest.raises(ValueError, match=f"bad{i}.json") as info:
            load_learned(bad)
        assert field in str(info.value)
    with pytest.raises(ValueError, match="process"):
        load_learned(path, process=jd.VPLinear(beta_max=10.0))


@pytest.mark.parametrize("kwargs,words", [
    (dict(nfe=2, base="dpmpp_3m_exact"), ["nfe=2", "nfe >= 4"]),
    (dict(nfe=2, base="dpmpp_3s"), ["nfe=2", "nfe >= 3"]),
    (dict(nfe=5, base="dpmpp_2m", order=3), ["order=3", "order 2"]),
    (dict(nfe=5, base="dpmpp_3m_exact", history=2), ["history=2", "history >= 3"]),
    (dict(nfe=5, base="rk4"), ["base='rk4'", "dpmpp_2m"]),
    (dict(nfe=5, steps=0), ["steps=0"]),
    (dict(nfe=5, learning_rate=-1.0), ["learning_rate=-1.0"]),
])
def test_bad_arguments_are_named(kwargs, words):
    x = VP.prior_sample(jax.random.PRNGKey(0), (8, 2), dtype=F64)
    with pytest.raises(ValueError) as info:
        learn_solver(SF, VP, x, **kwargs)
    for w in words:
        assert w in str(info.value)


def test_nonfinite_calibration_draws_are_named():
    x = VP.prior_sample(jax.random.PRNGKey(0), (8, 2), dtype=F64).at[3, 1].set(jnp.nan)
    with pytest.raises(ValueError, match=r"calib_x_init holds NaN/inf in 1 draws \(first: draw 3\)"):
        learn_solver(SF, VP, x, nfe=5)


def test_solver_checks_its_arrays():
    with pytest.raises(ValueError, match=r"z must have shape \(num_steps, 1\)"):
        LearnedMultistep("dpmpp_2m", jnp.zeros((4, 2)))
    with pytest.raises(ValueError, match="c\\[0, 0\\]"):
        LearnedSinglestep("dpmpp_2s", jnp.full((3, 1), 1.5))
    with pytest.raises(ValueError, match="must stay"):
        LearnedSinglestep("dpmpp_3s", jnp.full((3, 2), 0.5), order=3)
    with pytest.raises(ValueError, match="4 steps but the grid has 5"):
        jd.solve(SF, VP, jnp.ones((2, 2)), jd.make_times(VP, num_steps=5, grid="log_snr"),
                 learned_start("dpmpp_2m", 4))
    assert MULTISTEP_SCHEMES["dpmpp_2m"].order == learned_start("dpmpp_2m", 3).order


def test_tune_with_a_learned_solver(fitted, tmp_path):
    _, x_cal, x_held = fitted
    t0, t1 = VP.default_t_start, VP.default_t_end
    t = jd.tune(SF, VP, x_cal, nfe=5, heldout_x_init=x_held, solvers=["dpmpp_2m"], grids=["log_snr"],
                learn_top=0, learn_solver=True, learn_solver_steps=3, progress=False)
    row = next(c for c in t.candidates if c.get("learned_solver"))
    assert row["solver"] == "learned(dpmpp_2m)" and row["heldout_error"] <= row["start_heldout_error"]
    assert (t.learned is not None) == (t.solver == "learned(dpmpp_2m)")
    back = jd.load_tuned(t.save(tmp_path / "tuned.json"), process=VP)
    np.testing.assert_array_equal(back.sample(SF, VP, x_held), t.sample(SF, VP, x_held))
    assert exact_flow(x_held, t0, t1).shape == x_held.shape
