"""The network adapter: every prediction kind x every time input, every network type, traced
parameters, mixed precision, and the errors of bad conventions."""

import itertools

import equinox as eqx
import flax.linen as linen
import jax
import jax.numpy as jnp
import numpy as np
import pytest
from flax import nnx

from jaxode_diffusion import EDM, GaussianMixture, RectifiedFlow, VPLinear
from jaxode_diffusion.models import MLP, NetworkScore, ScoreModel, as_score_fn, network_from_score
from jaxode_diffusion.processes import DiscreteVP
from jaxode_diffusion.processes.parameterizations import (
    KINDS,
    TIME_INPUTS,
    broadcast_to_batch,
    check_time_input,
    from_model_time,
    to_model_time,
)
from jaxode_diffusion.sampling import core as S

N = 1000
GM = GaussianMixture(
    jnp.array([0.3, 0.7]), jnp.array([[1.0, -0.5], [-1.0, 0.8]]), jnp.stack([0.3 * jnp.eye(2), 0.5 * jnp.eye(2)])
)
X = jnp.array([[0.3, -1.2], [1.5, 0.4], [-0.7, 0.9]])


def _exact(process):
    return GM.score_fn(process)


def _times(process):
    # An interior time of the process (the discrete conventions need t in [1/N, 1]).
    return [0.37 * process.t_max]


def _adapt(net, process, kind, time_input):
    return as_score_fn(net, process, prediction=kind, time_input=time_input, num_train_timesteps=N)


def _to_net(score_fn, process, kind, time_input):
    return network_from_score(score_fn, process, kind, time_input, num_train_timesteps=N)


# -- time conventions --------------------------------------------------------------------------
@pytest.mark.parametrize("time_input", TIME_INPUTS)
@pytest.mark.parametrize("process", [VPLinear(), EDM(sigma_max=1.0)], ids=["vp", "edm"])
def test_model_time_round_trip(process, time_input):
    t = jnp.array([0.05, 0.37, 0.81]) * process.t_max
    t_in = to_model_time(process, t, time_input, N)
    np.testing.assert_allclose(from_model_time(process, t_in, time_input, N), t, rtol=1e-12, atol=1e-13)


def test_model_time_values_by_hand():
    vp = VPLinear()
    t = jnp.asarray(0.5)
    assert float(to_model_time(vp, t, "index", 1000)) == pytest.approx(499.0)  # t_n = (n + 1)/N
    assert float(to_model_time(vp, t, "index1000", 250)) == pytest.approx(1000 * (0.5 - 1 / 250))
    assert float(to_model_time(vp, t, "t1000")) == pytest.approx(500.0)
    assert float(to_model_time(vp, t, "rho")) == pytest.approx(float(vp.sigma(t) / vp.alpha(t)))
    assert float(to_model_time(vp, t, "log_snr")) == pytest.approx(float(jnp.log(vp.alpha(t) / vp.sigma(t))))
    edm = EDM()
    assert float(to_model_time(edm, 2.0, "c_noise")) == pytest.approx(np.log(2.0) / 4)  # EDM log(sigma)/4
    assert float(to_model_time(edm, 2.0, "sigma")) == pytest.approx(2.0)


# -- round trips: exact score -> convention -> score ------------------------------------------
@pytest.mark.parametrize("time_input", TIME_INPUTS)
@pytest.mark.parametrize("kind", KINDS + ("denoiser",))
def test_every_convention_recovers_the_exact_score(kind, time_input):
    vp = VPLinear()
    exact = _exact(vp)
    sf = _adapt(_to_net(exact, vp, kind, time_input), vp, kind, time_input)
    assert isinstance(sf, NetworkScore)
    for t in _times(vp):
        np.testing.assert_allclose(sf(X, t), exact(X, t), rtol=1e-9, atol=1e-10)


_CONVENTIONS = [(k, ti) for k in KINDS for ti in TIME_INPUTS]


@pytest.mark.parametrize(
    "a, b",
    # Every pair of prediction kinds (each with a different time input) and every pair of time
    # inputs (with rotating kinds): the composition A -> score -> B -> score is the identity.
    [((ka, TIME_INPUTS[i % 8]), (kb, TIME_INPUTS[(i + 3) % 8])) for i, (ka, kb) in enumerate(itertools.product(KINDS, KINDS))]
    + [((KINDS[i % 5], ta), (KINDS[(i + 2) % 5], tb)) for i, (ta, tb) in enumerate(itertools.product(TIME_INPUTS, TIME_INPUTS))],
    ids=lambda c: f"{c[0]}@{c[1]}",
)
def test_round_trip_between_conventions(a, b):
    process = VPLinear()
    exact = _exact(process)
    s_a = _adapt(_to_net(exact, process, *a), process, *a)
    s_b = _adapt(_to_net(s_a, process, *b), process, *b)
    t = 0.43
    np.testing.assert_allclose(s_b(X, t), exact(X, t), rtol=1e-9, atol=1e-10)


@pytest.mark.parametrize("process", [EDM(), RectifiedFlow()], ids=["edm", "flow"])
@pytest.mark.parametrize("kind", KINDS)
def test_round_trip_on_other_processes(process, kind):
    exact = _exact(process)
    for time_input in ("t", "sigma", "log_snr", "c_noise"):
        sf = as_score_fn(network_from_score(exact, process, kind, time_input), process, kind, time_input=time_input)
        t = 0.4 * process.t_max
        np.testing.assert_allclose(sf(X, t), exact(X, t), rtol=1e-9, atol=1e-10)


def test_per_example_times_as_in_training():
    vp = VPLinear()
    exact = _exact(vp)
    t = jnp.array([0.2, 0.5, 0.9])
    sf = _adapt(_to_net(exact, vp, "v", "index"), vp, "v", "index")
    want = jnp.stack([exact(X[i : i + 1], t[i])[0] for i in range(3)])
    np.testing.assert_allclose(sf(X, t), want, rtol=1e-9, atol=1e-10)


def test_hand_written_conversions():
    """Independent of network_from_score: the adapter against formulas written out by hand."""
    vp, t = VPLinear(), 0.3
    a, s = vp.alpha(t), vp.sigma(t)
    eps_net = lambda x, n: jnp.sin(x) * (1 + n[:, None] / 1000)
    n = N * t - 1
    want = -jnp.sin(X) * (1 + n / 1000) / s
    np.testing.assert_allclose(_adapt(eps_net, vp, "eps", "index")(X, t), want, rtol=1e-12)
    v_net = lambda x, tt: jnp.cos(x) * tt[:, None]
    v = jnp.cos(X) * t
    eps = (s * X + a * v) / (a**2 + s**2)
    np.testing.assert_allclose(_adapt(v_net, vp, "v", "t")(X, t), -eps / s, rtol=1e-12)
    edm, sig = EDM(), 1.7
    d_net = lambda x, c: x / (1 + jnp.exp(4 * c)[:, None] ** 2)  # D(x, sigma) from c_noise = log(sigma)/4
    np.testing.assert_allclose(
        _adapt(d_net, edm, "denoiser", "c_noise")(X, sig), (X / (1 + sig**2) - X) / sig**2, rtol=1e-12
    )
    rf, tr = RectifiedFlow(), 0.6
    u_net = lambda x, tt: 0.5 * x  # flow u = eps - x0 for x = (1 - t) x0 + t eps
    eps_rf = X + (1 - tr) * 0.5 * X
    np.testing.assert_allclose(_adapt(u_net, rf, "flow", "t")(X, tr), -eps_rf / tr, rtol=1e-9)


def test_discrete_table_index_is_exactly_the_training_step():
    """On a DDPM table the step index is read from the process and is the integer n at t_n."""
    table = DiscreteVP.ddpm_linear()
    n = jnp.array([0.0, 1.0, 499.0, 998.0, 999.0])
    t = (n + 1) / table.num_train_timesteps
    np.testing.assert_allclose(to_model_time(table, t, "index"), n, atol=1e-9)
    np.testing.assert_allclose(to_model_time(table, t, "index"), table.timestep_index(t), atol=1e-12)
    seen = []
    net = lambda x, n_in: seen.append(n_in) or x
    sf = as_score_fn(net, table, prediction="eps", time_input="index")
    sf(X, t[2])
    assert sf.num_train_timesteps == 1000 and float(seen[-1][0]) == pytest.approx(499.0, abs=1e-9)


@pytest.mark.parametrize("kind", KINDS)
def test_round_trip_on_a_discrete_table(kind):
    table = DiscreteVP.ddpm_linear()
    exact = _exact(table)
    for time_input in ("index", "index1000", "sigma", "log_snr"):
        sf = as_score_fn(network_from_score(exact, table, kind, time_input), table, kind, time_input=time_input)
        # Off the table nodes: there d(log alpha)/dt jumps, so `flow` (a time derivative of the
        # path) is one-sided and a time recovered to rounding may land on the other side.
        for t in (0.03715, 0.9307):
            np.testing.assert_allclose(sf(X, t), exact(X, t), rtol=1e-8, atol=1e-9)


# -- network types ---------------------------------------------------------------------------
class _EqxEps(eqx.Module):
    w: jax.Array

    def __call__(self, x, t_in):
        return jnp.tanh(x @ self.w) * (1 + 1e-3 * t_in[:, None])


class _NNXEps(nnx.Module):
    def __init__(self, w):
        self.w = nnx.Param(w)

    def __call__(self, x, t_in):
        return jnp.tanh(x @ self.w[...]) * (1 + 1e-3 * t_in[:, None])


class _LinenEps(linen.Module):
    @linen.compact
    def __call__(self, x, t_in):
        w = self.param("w", lambda k: jnp.zeros((2, 2)))
        return jnp.tanh(x @ w) * (1 + 1e-3 * t_in[:, None])


def _networks(w):
    lin = _LinenEps()
    return {
        "function": (lambda x, t_in: jnp.tanh(x @ w) * (1 + 1e-3 * t_in[:, None]), {}),
        "equinox": (_EqxEps(w), {}),
        "nnx": (_NNXEps(w), {}),
        "linen": (lin, {"params": {"params": {"w": w}}}),
        "linen-bare-params": (lin, {"params": {"w": w}}),
        "partial": (jax.tree_util.Partial(lambda w_, x, t_in: jnp.tanh(x @ w_) * (1 + 1e-3 * t_in[:, None]), w), {}),
    }


@pytest.mark.parametrize("name", list(_networks(jnp.eye(2))))
def test_every_network_type_gives_the_same_score(name):
    w = jnp.array([[0.5, -0.2], [0.1, 0.9]])
    vp = VPLinear()
    net, kw = _networks(w)[name]
    sf = as_score_fn(net, vp, prediction="eps", time_input="index", num_train_timesteps=N, **kw)
    want = -jnp.tanh(X @ w) * (1 + 1e-3 * (N * 0.4 - 1)) / vp.sigma(0.4)
    np.testing.assert_allclose(eqx.filter_jit(lambda f, x: f(x, 0.4))(sf, X), want, rtol=1e-12)


@eqx.filter_jit
def _solve(score_fn, process, x):
    # One compiled program per structure: a second call with new array leaves must not retrace.
    ts = jnp.linspace(process.t_max, 0.05, 4).astype(x.dtype)
    if hasattr(S, "solve"):
        return S.solve(score_fn, process, x, ts, "euler").samples
    return S.sample(score_fn, process, x, solver="euler", grid=ts, num_steps=None)


@pytest.mark.parametrize("name", ["equinox", "nnx", "linen", "partial"])
def test_new_parameters_do_not_recompile(name):
    """The adapter is a pytree: sampling with new parameter values reuses the compiled program."""
    traces = []

    def body(x, t_in, w):
        traces.append(1)  # runs only while tracing
        return jnp.tanh(x @ w) * (1 + 1e-3 * t_in[:, None])

    class E(eqx.Module):
        w: jax.Array

        def __call__(self, x, t_in):
            return body(x, t_in, self.w)

    class M(nnx.Module):
        def __init__(self, w):
            self.w = nnx.Param(w)

        def __call__(self, x, t_in):
            return body(x, t_in, self.w[...])

    class L(linen.Module):
        @linen.compact
        def __call__(self, x, t_in):
            return body(x, t_in, self.param("w", lambda k: jnp.zeros((2, 2))))

    def partial_body(w, x, t_in):
        return body(x, t_in, w)

    vp = VPLinear()

    def build(w):
        kw = dict(prediction="eps", time_input="index", num_train_timesteps=N)
        if name == "equinox":
            return as_score_fn(E(w), vp, **kw)
        if name == "nnx":
            return as_score_fn(M(w), vp, **kw)
        if name == "linen":
            return as_score_fn(L(), vp, params={"params": {"w": w}}, **kw)
        return as_score_fn(jax.tree_util.Partial(partial_body, w), vp, **kw)

    x = jnp.ones((3, 2))
    out1 = _solve(build(jnp.eye(2)), vp, x)
    n1 = len(traces)
    out2 = _solve(build(2.0 * jnp.eye(2)), vp, x)
    assert n1 >= 1 and len(traces) == n1, "new parameter values retraced the network"
    assert not np.allclose(out1, out2)


def test_cond_is_passed_to_the_network():
    vp = VPLinear()
    net = lambda x, t_in, c: x * c["scale"][:, None]
    sf = as_score_fn(net, vp, prediction="eps", time_input="t")
    c = {"scale": jnp.array([1.0, 2.0, 3.0])}
    np.testing.assert_allclose(sf(X, 0.5, c), -X * c["scale"][:, None] / vp.sigma(0.5), rtol=1e-12)


def test_package_models_keep_their_path():
    net = MLP(2, width=16, depth=1, rngs=nnx.Rngs(0))
    sf = as_score_fn(net, VPLinear())
    assert isinstance(sf, ScoreModel) and sf.compute_dtype is None
    g, st = nnx.split(net)
    sf2 = as_score_fn(g, VPLinear(), params=nnx.to_pure_dict(st))
    np.testing.assert_allclose(sf2(X, 0.3), sf(X, 0.3))


# -- bad conventions ---------------------------------------------------------------------------
class _Table(VPLinear):
    """A process carrying a table size, as the discrete-table processes do."""

    num_train_timesteps: int = eqx.field(static=True, default=100)


def test_bad_conventions_are_named():
    vp = VPLinear()
    f = lambda x, t: x
    with pytest.raises(ValueError, match="time_input"):
        as_score_fn(f, vp, prediction="eps")
    with pytest.raises(ValueError, match="prediction="):
        as_score_fn(f, vp, time_input="t")
    with pytest.raises(ValueError, match="time_input='seconds'"):
        as_score_fn(f, vp, prediction="eps", time_input="seconds")
    with pytest.raises(ValueError, match="num_train_timesteps"):
        as_score_fn(f, vp, prediction="eps", time_input="index")
    with pytest.raises(ValueError, match="disagrees"):
        as_score_fn(f, _Table(), prediction="eps", time_input="index", num_train_timesteps=1000)
    with pytest.raises(ValueError, match="t_max=80"):
        as_score_fn(f, EDM(), prediction="eps", time_input="index", num_train_timesteps=1000)
    with pytest.raises(ValueError, match="compute_dtype"):
        as_score_fn(f, vp, prediction="eps", time_input="t", compute_dtype=jnp.int32)
    with pytest.raises(ValueError, match="package model"):
        as_score_fn(MLP(2, width=8, depth=1, rngs=nnx.Rngs(0)), vp, time_input="index")
    with pytest.raises(ValueError, match="process must be"):
        as_score_fn(f, "vp", prediction="eps", time_input="t")
    with pytest.raises(ValueError, match="returned shape"):
        as_score_fn(lambda x, t: x[:, :1], vp, prediction="eps", time_input="t")(X, 0.5)
    with pytest.raises(ValueError, match="shape"):
        broadcast_to_batch(jnp.ones(2), X)
    # The table size is read from the process.
    assert check_time_input("index", _Table()) == ("index", 100)
    sf = as_score_fn(f, _Table(), prediction="eps", time_input="index")
    assert sf.num_train_timesteps == 100


# -- mixed precision ----------------------------------------------------------------------------
def _dot_dtypes(fn, *args):
    jaxpr = jax.make_jaxpr(fn)(*args)
    out = set()

    def walk(jx):
        for eqn in jx.eqns:
            if eqn.primitive.name == "dot_general":
                out.add(str(eqn.invars[0].aval.dtype))
            for sub in jax.core.subjaxprs(eqn) if hasattr(jax.core, "subjaxprs") else []:
                walk(sub)
            for p in eqn.params.values():
                if hasattr(p, "jaxpr"):
                    walk(p.jaxpr if hasattr(p.jaxpr, "eqns") else p.jaxpr.jaxpr)

    walk(jaxpr.jaxpr)
    return out


def test_bfloat16_package_model_with_float32_and_float64_states():
    vp = VPLinear()
    net = MLP(2, width=16, depth=1, rngs=nnx.Rngs(0))
    # A random output layer (the MLP's is zero at initialisation, which would hide the network).
    net.out.kernel[...] = 0.3 * jax.random.normal(jax.random.PRNGKey(1), net.out.kernel.shape, jnp.float32)
    full = as_score_fn(net, vp)
    half = as_score_fn(net, vp, compute_dtype=jnp.bfloat16)
    assert {str(a.dtype) for a in jax.tree.leaves(half.params)} == {"bfloat16"}
    x32 = X.astype(jnp.float32)
    assert _dot_dtypes(lambda x: half(x, 0.5), x32) == {"bfloat16"}  # activations in bfloat16
    call = eqx.filter_jit(lambda sf, x: sf(x, 0.5))  # eager bfloat16 ops compile one by one
    for x in (x32, X.astype(jnp.float64)):
        s_half, s_full = call(half, x), call(full, x)
        assert s_half.dtype == x.dtype  # the score comes back in the state's dtype
        err = float(jnp.max(jnp.abs(s_half - s_full)) / jnp.max(jnp.abs(s_full)))
        assert 0 < err < 5e-2  # bfloat16 has an 8-bit mantissa
    out = _solve(half, vp, x32)
    assert out.dtype == jnp.float32


def test_bfloat16_foreign_network():
    vp = VPLinear()
    w = jnp.array([[0.5, -0.2], [0.1, 0.9]])
    seen = []

    def net(x, t_in):
        seen.append((x.dtype, t_in.dtype))
        return jnp.tanh(x @ w.astype(x.dtype))

    sf = as_score_fn(net, vp, prediction="eps", time_input="index", num_train_timesteps=N, compute_dtype="bfloat16")
    s = sf(X.astype(jnp.float32), 0.5)
    assert s.dtype == jnp.float32
    assert seen[-1] == (jnp.bfloat16, jnp.float32)  # the step index is not rounded to bfloat16
    eq = as_score_fn(_EqxEps(w), vp, prediction="eps", time_input="t", compute_dtype=jnp.bfloat16)
    assert eq.net.fn.w.dtype == jnp.bfloat16
