"""Tests for ButcherTableau, its library, the order conditions and the diffrax bridge."""

import math

import diffrax
import jax
import jax.numpy as jnp
import numpy as np
import pytest
from hypothesis import assume, given, settings
from hypothesis import strategies as st

from jaxode_diffusion.solvers import tableaux
from jaxode_diffusion.solvers.diffrax_bridge import (
    diffrax_solver,
    from_diffrax_solver,
    from_diffrax_tableau,
    to_diffrax_tableau,
)
from jaxode_diffusion.solvers.tableaux import ButcherTableau

jax.config.update("jax_enable_x64", True)

BUILTIN = sorted(tableaux.PUBLISHED_ORDER)
MULTI_STAGE = [n for n in BUILTIN if tableaux.get(n).num_stages >= 2]


# --------------------------------------------------------------------------------------
# Rooted trees and orders
# --------------------------------------------------------------------------------------


def test_rooted_tree_counts():
    # OEIS A000081.
    counts = [len(tableaux.rooted_trees(n)) for n in range(1, 11)]
    assert counts == [1, 1, 2, 4, 9, 20, 48, 115, 286, 719]
    assert tableaux.rooted_trees(1) == [()]
    assert tableaux.rooted_trees(2) == [((),)]
    for n in range(1, 8):
        trees = tableaux.rooted_trees(n)
        assert len(set(trees)) == len(trees)


def test_rooted_trees_rejects_bad_n():
    with pytest.raises(ValueError, match=r"\[1, 10\]"):
        tableaux.rooted_trees(0)
    with pytest.raises(ValueError, match=r"\[1, 10\]"):
        tableaux.rooted_trees(11)
    with pytest.raises(TypeError, match="integer"):
        tableaux.rooted_trees(2.0)


def test_builtin_names_are_registered():
    assert set(BUILTIN) <= set(tableaux.names())
    assert tableaux.names() == sorted(tableaux.names())


@pytest.mark.parametrize("name", BUILTIN)
def test_computed_order_matches_published(name):
    tab = tableaux.get(name)
    assert tab.order == tableaux.PUBLISHED_ORDER[name]
    res = tableaux.order_conditions(tab, tab.order + 1)
    assert all(res[p] < tableaux.ORDER_TOL for p in range(1, tab.order + 1))
    assert res[tab.order + 1] > tableaux.ORDER_TOL  # order is not higher


def test_sixth_order_method():
    tab = tableaux.get("butcher6")
    assert tab.num_stages == 7
    assert tab.order == 6


@pytest.mark.parametrize("name, embedded", [("heun", 1), ("bosh3", 2), ("dopri5", 4), ("tsit5", 4)])
def test_embedded_orders(name, embedded):
    tab = tableaux.get(name)
    assert tab.has_error_estimate
    assert tab.embedded_order == embedded
    res = tableaux.order_conditions(tab, embedded + 1, embedded=True)
    assert res[embedded] < tableaux.ORDER_TOL < res[embedded + 1]


def test_no_embedded_method():
    rk4 = tableaux.get("rk4")
    assert not rk4.has_error_estimate
    assert rk4.embedded_order is None
    with pytest.raises(ValueError, match="no `b_error`"):
        tableaux.order_conditions(rk4, 4, embedded=True)


def test_fsal_flags():
    fsal = {n for n in BUILTIN if tableaux.get(n).is_fsal}
    assert fsal == {"bosh3", "dopri5", "tsit5"}


def test_ralston4_matches_published_decimals():
    # Ralston (1962) tabulates the coefficients to 8 decimals. Given c2 and c3, order 4
    # fixes a and b uniquely, and the sqrt(5) closed forms satisfy every condition to
    # 1e-15; the tabulated a41, a42 are off by ~1.2e-8 (more than half a unit in the
    # 8th decimal), presumably rounding in the original computation.
    tab = tableaux.get("ralston4")
    assert tab.order == 4
    assert tab.c[2] == pytest.approx(0.45573725, abs=5e-9)
    assert tab.a[2, :2] == pytest.approx([0.29697761, 0.15875964], abs=5e-9)
    assert tab.a[3, :3] == pytest.approx([0.21810040, -3.05096516, 3.83286476], abs=2e-8)
    assert tab.b == pytest.approx([0.17476028, -0.55148066, 1.20553560, 0.17118478], abs=5e-9)


def test_order_condition_bushy_trees():
    # The bushy tree with p nodes gives b^T c^(p-1) = 1/p: a direct check of Phi/gamma.
    tab = tableaux.get("butcher6")
    for p in range(1, 7):
        assert tab.b @ tab.c ** (p - 1) == pytest.approx(1 / p, abs=1e-14)


# --------------------------------------------------------------------------------------
# Validation
# --------------------------------------------------------------------------------------


def test_implicit_entry_refused():
    with pytest.raises(ValueError, match=r"a\[1, 1\].*on or above the diagonal"):
        ButcherTableau(a=[[0, 0], [0.5, 0.5]], b=[0, 1])
    with pytest.raises(ValueError, match=r"a\[0, 1\]"):
        ButcherTableau(a=[[0, 0.3], [0.5, 0]], b=[0, 1])


def test_wrong_c_refused():
    with pytest.raises(ValueError, match=r"row 2.*c\[2\] = 0\.6.*sum\(a\[2, :\]\) = 0\.5"):
        ButcherTableau(a=[[0, 0, 0], [0.5, 0, 0], [0, 0.5, 0]], b=[0.2, 0.3, 0.5], c=[0, 0.5, 0.6])


@pytest.mark.parametrize(
    "kwargs, match",
    [
        (dict(a=[[0, 0], [np.nan, 0]], b=[0.5, 0.5]), r"`a` must be finite.*a\[1, 0\]"),
        (dict(a=[[0, 0], [1, 0]], b=[np.inf, 0.5]), "`b` must be finite"),
        (dict(a=[[0, 0], [1, 0]], b=[0.5, 0.5], c=[0, np.nan]), "`c` must be finite"),
        (
            dict(a=[[0, 0], [1, 0]], b=[0.5, 0.5], b_error=[0, -np.inf]),
            "`b_error` must be finite",
        ),
    ],
)
def test_non_finite_refused(kwargs, match):
    with pytest.raises(ValueError, match=match):
        ButcherTableau(**kwargs)


@pytest.mark.parametrize(
    "kwargs, match",
    [
        (dict(a=[[0, 0, 0], [1, 0, 0]], b=[0.5, 0.5]), "square"),
        (dict(a=[0, 1], b=[0.5, 0.5]), "2-D"),
        (dict(a=[[0], [1, 0]], b=[0.5, 0.5]), "from_lower"),
        (dict(a=np.zeros((0, 0)), b=[]), "0 stages"),
        (dict(a=[[0, 0], [1, 0]], b=[1 / 3, 1 / 3, 1 / 3]), r"`b`.*shape \(2,\)"),
        (dict(a=[[0, 0], [1, 0]], b=[0.5, 0.5], c=[0, 1, 1]), r"`c`.*shape \(2,\)"),
        (
            dict(a=[[0, 0], [1, 0]], b=[0.5, 0.5], b_error=[0.5]),
            r"`b_error`.*shape \(2,\)",
        ),
    ],
)
def test_shape_mismatch_refused(kwargs, match):
    with pytest.raises(ValueError, match=match):
        ButcherTableau(**kwargs)


def test_from_lower_layouts():
    rk4 = tableaux.get("rk4")
    rows = [[1 / 2], [0, 1 / 2], [0, 0, 1]]
    b = [1 / 6, 1 / 3, 1 / 3, 1 / 6]
    assert ButcherTableau.from_lower(rows, b) == rk4
    assert ButcherTableau.from_lower([[], *rows], b, c=[0, 0.5, 0.5, 1]) == rk4
    assert ButcherTableau.from_lower(rows, b, c=[0.5, 0.5, 1]) == rk4  # diffrax's c
    assert ButcherTableau(a=rk4.a, b=b) == rk4
    with pytest.raises(ValueError, match=r"row lengths \[1, 2, 3\]"):
        ButcherTableau.from_lower([[0.5], [0, 0.5]], b)


def _lower(draw, s):
    return np.tril(
        np.array(draw(st.lists(st.floats(-2, 2, allow_nan=False), min_size=s * s, max_size=s * s))).reshape(
            s, s
        ),
        k=-1,
    )


@st.composite
def _tableau_with_bad_c(draw):
    s = draw(st.integers(2, 6))
    a = _lower(draw, s)
    c = a.sum(axis=1)
    row = draw(st.integers(0, s - 1))
    delta = draw(st.floats(1e-6, 1.0)) * draw(st.sampled_from([-1.0, 1.0]))
    c[row] += delta
    b = draw(st.lists(st.floats(-1, 1), min_size=s, max_size=s))
    return a, b, c, row


@settings(max_examples=50, deadline=None)
@given(_tableau_with_bad_c())
def test_hypothesis_wrong_c_refused(case):
    a, b, c, row = case
    with pytest.raises(ValueError, match=f"row {row}"):
        ButcherTableau(a=a, b=b, c=c)


@st.composite
def _tableau_with_upper_entry(draw):
    s = draw(st.integers(1, 6))
    a = _lower(draw, s)
    i = draw(st.integers(0, s - 1))
    j = draw(st.integers(i, s - 1))
    a[i, j] = draw(st.floats(1e-8, 5.0)) * draw(st.sampled_from([-1.0, 1.0]))
    b = draw(st.lists(st.floats(-1, 1), min_size=s, max_size=s))
    return a, b, (i, j)


@settings(max_examples=50, deadline=None)
@given(_tableau_with_upper_entry())
def test_hypothesis_implicit_refused(case):
    a, b, (i, j) = case
    with pytest.raises(ValueError, match="strictly lower triangular"):
        ButcherTableau(a=a, b=b, c=a.sum(axis=1))
    # The message names the first offending entry in row-major order.
    first = tuple(np.argwhere(np.triu(a) != 0)[0])
    assert first <= (i, j)


@st.composite
def _valid_tableau(draw):
    s = draw(st.integers(1, 6))
    a = _lower(draw, s)
    b = np.array(draw(st.lists(st.floats(-2, 2), min_size=s, max_size=s)))
    if draw(st.booleans()):
        b[-1] = 1.0 - b[:-1].sum()  # consistent: sum(b) = 1 up to rounding
    return a, b


@settings(max_examples=60, deadline=None)
@given(_valid_tableau())
def test_hypothesis_valid_tableau_accepted(case):
    a, b = case
    gap = abs(b.sum() - 1.0)
    assume(gap < 1e-13 or gap > 1e-8)  # keep clear of the tolerance boundary
    # random rows give c outside [0, 1] and sum(b) != 1: accepted only with the opt-in flag
    tab = ButcherTableau(a=a, b=b, c=a.sum(axis=1), allow_inconsistent=True)
    assert tab.num_stages == len(b)
    assert (tab.order >= 1) == (gap < 1e-13)
    assert ButcherTableau(a=a, b=b, allow_inconsistent=True) == tab  # c defaults to the row sums


# --------------------------------------------------------------------------------------
# Library and hashing
# --------------------------------------------------------------------------------------


def test_get_is_case_insensitive_and_lists_names():
    assert tableaux.get("RK4") is tableaux.get("rk4")
    assert tableaux.get(" Dopri5 ").name == "dopri5"
    with pytest.raises(ValueError, match=r"unknown tableau 'rk5'.*dopri5.*tsit5"):
        tableaux.get("rk5")


def test_register():
    tab = ButcherTableau(a=[[0, 0], [0.5, 0]], b=[0, 1])
    tableaux.register("Test_Register_Midpoint", tab)
    assert tableaux.get("test_register_midpoint") == tableaux.get("midpoint")
    assert tableaux.get("test_register_midpoint").name == "test_register_midpoint"
    assert "test_register_midpoint" in tableaux.names()
    with pytest.raises(ValueError, match="already exists"):
        tableaux.register("test_register_midpoint", tab)
    tableaux.register("test_register_midpoint", tableaux.get("rk4"), overwrite=True)
    assert tableaux.get("test_register_midpoint").order == 4
    with pytest.raises(TypeError, match="ButcherTableau"):
        tableaux.register("test_register_bad", {"a": [[0]]})
    with pytest.raises(ValueError, match="non-empty"):
        tableaux.register("  ", tab)


def test_hashable_and_equal():
    rk4 = tableaux.get("rk4")
    copy = ButcherTableau(a=rk4.a.tolist(), b=list(rk4.b), c=list(rk4.c), name="other")
    assert copy == rk4 and hash(copy) == hash(rk4)
    assert {rk4: 1}[copy] == 1
    assert rk4 != tableaux.get("rk38")
    assert len({tableaux.get(n) for n in BUILTIN}) == len(BUILTIN)
    # -0.0 and 0.0 give equal bytes, hence equal hashes.
    z = ButcherTableau(a=[[-0.0, 0], [1, -0.0]], b=[0.5, 0.5])
    assert hash(z) == hash(ButcherTableau(a=[[0.0, 0], [1, 0.0]], b=[0.5, 0.5]))
    with pytest.raises(ValueError, match="read-only"):
        rk4.a[1, 0] = 3.0
    with pytest.raises(AttributeError):
        rk4.b = np.ones(4)
    assert "rk4" in repr(rk4) and "order=4" in repr(rk4)


def test_static_under_jit_no_retrace():
    traces = []

    def step(y, tab):
        traces.append(tab.name)
        k = []
        for i in range(tab.num_stages):
            yi = y + sum(float(tab.a[i, j]) * k[j] for j in range(i))
            k.append(-yi)
        return y + sum(float(tab.b[i]) * k[i] for i in range(tab.num_stages))

    jstep = jax.jit(step, static_argnums=1)
    rk4 = tableaux.get("rk4")
    y1 = jstep(jnp.array(1.0), rk4)
    y2 = jstep(jnp.array(2.0), ButcherTableau(a=rk4.a, b=rk4.b, name="again"))
    assert len(traces) == 1
    assert float(y1) == pytest.approx(1 - 1 + 1 / 2 - 1 / 6 + 1 / 24, abs=1e-15)
    assert float(y2) == pytest.approx(2 * float(y1), abs=1e-15)


# --------------------------------------------------------------------------------------
# diffrax bridge
# --------------------------------------------------------------------------------------


@pytest.mark.parametrize("name", MULTI_STAGE)
def test_diffrax_round_trip(name):
    tab = tableaux.get(name)
    dtab = to_diffrax_tableau(tab)
    assert dtab.num_stages == tab.num_stages
    assert dtab.fsal == tab.is_fsal
    back = from_diffrax_tableau(dtab, name=name)
    assert back == tab
    assert back.order == tab.order and back.embedded_order == tab.embedded_order


@pytest.mark.parametrize("solver, name", [(diffrax.Tsit5(), "tsit5"), (diffrax.Bosh3, "bosh3")])
def test_from_diffrax_solver_matches_library(solver, name):
    assert from_diffrax_solver(solver) == tableaux.get(name)


def test_from_diffrax_solver_dopri():
    # Same method as ours; diffrax's embedded 4th-order weights differ from those of
    # Dormand & Prince (1980), see the comment in tableaux.py.
    ours, theirs = tableaux.get("dopri5"), from_diffrax_solver(diffrax.Dopri5)
    np.testing.assert_array_equal(ours.a, theirs.a)
    np.testing.assert_array_equal(ours.b, theirs.b)
    np.testing.assert_array_equal(ours.c, theirs.c)
    assert theirs.embedded_order == 4
    dopri8 = from_diffrax_solver(diffrax.Dopri8())
    assert (dopri8.order, dopri8.embedded_order) == (8, 7)


def test_bridge_refusals():
    with pytest.raises(ValueError, match="diffrax.Euler"):
        to_diffrax_tableau(tableaux.get("euler"))
    with pytest.raises(ValueError, match=r"sum\(b\)"):
        to_diffrax_tableau(ButcherTableau(a=[[0, 0], [1, 0]], b=[0.5, 0.4]))
    with pytest.raises(ValueError, match="tableau"):
        from_diffrax_solver(diffrax.Euler())
    with pytest.raises(ValueError, match="implicit"):
        from_diffrax_tableau(diffrax.Kvaerno3.tableau)


def _decay(t, y, args):
    return -y


_Y0 = jnp.array([1.0, -0.5, 2.0])


def _solve(solver, controller=None, dt0=0.1, vf=_decay, t1=1.0):
    sol = diffrax.diffeqsolve(
        diffrax.ODETerm(vf),
        solver,
        t0=0.0,
        t1=t1,
        dt0=dt0,
        y0=_Y0,
        stepsize_controller=controller or diffrax.ConstantStepSize(),
        max_steps=4096,
    )
    return np.asarray(sol.ys[-1]), int(sol.stats["num_steps"])


@pytest.mark.parametrize("name, reference", [("dopri5", diffrax.Dopri5()), ("tsit5", diffrax.Tsit5())])
def test_fixed_step_matches_diffrax(name, reference):
    ours, n_ours = _solve(diffrax_solver(tableaux.get(name)))
    ref, n_ref = _solve(reference)
    assert n_ours == n_ref == 10
    np.testing.assert_allclose(ours, ref, rtol=0, atol=1e-12)
    np.testing.assert_allclose(ours, np.exp(-1.0) * _Y0, rtol=0, atol=1e-8)


def _forced(t, y, args):
    return -y + jnp.sin(3.0 * t)


def test_rk4_matches_numpy_formula():
    # Non-autonomous, so the nodes c enter.
    h, n = 0.05, 20
    ours, steps = _solve(diffrax_solver(tableaux.get("rk4")), dt0=h, vf=_forced)
    assert steps == n

    def f(t, y):
        return -y + np.sin(3.0 * t)

    y, t = np.asarray(_Y0), 0.0
    for _ in range(n):
        k1 = f(t, y)
        k2 = f(t + h / 2, y + h / 2 * k1)
        k3 = f(t + h / 2, y + h / 2 * k2)
        k4 = f(t + h, y + h * k3)
        y, t = y + h / 6 * (k1 + 2 * k2 + 2 * k3 + k4), t + h
    np.testing.assert_allclose(ours, y, rtol=0, atol=1e-13)


def test_sixth_order_convergence_in_diffrax():
    # Empirical order of butcher6 on y' = -y + sin(3t): halving h divides the error by
    # about 2^6. Exact solution by variation of constants.
    def exact(t):
        part = (np.sin(3 * t) - 3 * np.cos(3 * t)) / 10
        return (np.asarray(_Y0) + 0.3) * np.exp(-t) + part

    solver = diffrax_solver(tableaux.get("butcher6"))
    errs = [np.abs(_solve(solver, dt0=2.0 / n, vf=_forced, t1=2.0)[0] - exact(2.0)).max() for n in (8, 16)]
    slope = math.log2(errs[0] / errs[1])
    assert 5.5 < slope < 6.8, (errs, slope)


def test_adaptive_with_pid_controller():
    pid = diffrax.PIDController(rtol=1e-8, atol=1e-10)
    ours, n_ours = _solve(diffrax_solver(tableaux.get("tsit5")), pid)
    ref, n_ref = _solve(diffrax.Tsit5(), pid)
    assert n_ours == n_ref
    np.testing.assert_allclose(ours, ref, rtol=0, atol=1e-12)
    np.testing.assert_allclose(ours, np.exp(-1.0) * _Y0, rtol=0, atol=1e-7)

    ours, n_ours = _solve(diffrax_solver(tableaux.get("bosh3")), pid)
    np.testing.assert_allclose(ours, np.exp(-1.0) * _Y0, rtol=0, atol=1e-7)

    # No b_error: no error estimate, so diffrax's PID controller asks for error_order.
    with pytest.raises(ValueError, match="error_order"):
        _solve(diffrax_solver(tableaux.get("rk4")), pid)


def test_solver_class_cached_and_orders():
    s1 = diffrax_solver(tableaux.get("dopri5"))
    tab = tableaux.get("dopri5")
    s2 = diffrax_solver(ButcherTableau(a=tab.a, b=tab.b, c=tab.c, b_error=tab.b_error))
    assert type(s1) is type(s2)
    assert isinstance(s1, diffrax.AbstractERK)
    term = diffrax.ODETerm(_decay)
    assert s1.order(term) == 5 and s1.error_order(term) == 5
    heun = diffrax_solver(tableaux.get("heun"))
    assert heun.order(term) == 2 and heun.error_order(term) == 2
    assert diffrax_solver(tableaux.get("rk4")).error_order(term) is None
