"""Learned solvers that keep their order: per-step coefficients within an order-``p`` family.

A fixed-formula solver uses the same coefficients at every step. The solvers here carry one row of
coefficients per step (arrays, so they are traced under ``jit``, differentiable and can be fitted
to a model: :func:`jaxode_diffusion.tuning.learned.learn_solver`), and the order conditions hold
by construction: only the free part of each step's coefficients is stored.

**Non-stationary multistep** (:class:`LearnedMultistep`), in the exponential form of
:mod:`~jaxode_diffusion.solvers.multistep` (data prediction: ``x_{n+1} = (sigma_{n+1} / sigma_n)
x_n + alpha_{n+1} sum_j w_{n,j} x0_{n-j}``): step ``n`` weighs the last ``q`` model values. With
normalised node offsets ``r_j`` and ``C_kj = r_j^k / k!`` the order-``p`` conditions are
``(C w)_k = M_k`` for ``k < p``, where ``M`` are the moments the base scheme uses (the exact
exponential Adams moments ``h phi_{k+1}``, except the base's two-node rule for ``M_1``, which is
``O(h^2)`` away and keeps order 2). The weights are

    w = w_base + M_0 N z,

``w_base`` the base scheme's weights (zero on the extra history nodes), ``N`` a basis of the null
space of the ``p x q`` matrix ``C`` (computed in the step from the current offsets, hence from the
learned times), ``M_0 = h phi_1`` a scale that makes ``z`` dimensionless, and ``z`` the stored
free part: ``q - p`` numbers per step; ``z = 0`` is the base exactly. A UniPC corrector gets its
own ``q - p`` free weights under ``p + 1`` conditions. Start-up steps (fewer nodes) and the final
steps the base lowers keep the base's lower order.

**Non-stationary singlestep** (:class:`LearnedSinglestep`), the exponential RK of
:mod:`~jaxode_diffusion.solvers.exponential` (DPM-Solver-2/3, DPM-Solver++(2S/3S)): each step
has its own stage fractions ``c_i``; the weights follow from the first-moment conditions as in the
base (``beta H phi_k(s H) (c_i / c_j)``), so any ``c_i`` in ``(0, 1)`` keeps order 2; with three
stages at order 3 the last fraction stays ``2/3`` and the others are free.

A learned solver is tied to its number of steps (one coefficient row per step).
"""

from __future__ import annotations

import equinox as eqx
import jax
import jax.numpy as jnp
import numpy as np

from jaxode_diffusion.solvers.base import AbstractSolver, StepInfo
from jaxode_diffusion.solvers.exponential import ExponentialSinglestep
from jaxode_diffusion.solvers.forms import AbstractForm
from jaxode_diffusion.solvers.multistep import (
    MULTISTEP_ALIASES,
    MULTISTEP_SCHEMES,
    MultistepScheme,
    quadrature_weights,
)
from jaxode_diffusion.solvers.phi import phis
from jaxode_diffusion.solvers.predictions import PREDICTIONS

__all__ = [
    "LearnedMultistep",
    "LearnedSinglestep",
    "MultistepCoefficients",
    "learned_start",
    "learned_solver_from_dict",
    "learnable_bases",
    "node_matrix",
]

_SINGLESTEP_BASES = ("dpmpp_2s", "dpmpp_3s", "dpm_solver_2", "dpm_solver_3")


def learnable_bases() -> tuple[str, ...]:
    """Names of the fixed solvers a learned solver can start from.

    Example:
        >>> "dpmpp_2m" in learnable_bases() and "dpmpp_2s" in learnable_bases()
        True
    """
    return (*MULTISTEP_SCHEMES, *MULTISTEP_ALIASES, *_SINGLESTEP_BASES)


def node_matrix(nodes, rows: int):
    """``C_kj = r_j^k / k!`` for ``k < rows`` (a ``(rows, len(nodes))`` array, running products).

    Example:
        >>> import jax.numpy as jnp
        >>> node_matrix(jnp.array([0.0, -1.0, -2.0]), 2).tolist()
        [[1.0, 1.0, 1.0], [0.0, -1.0, -2.0]]
    """
    rowsv = [jnp.ones_like(nodes)]
    for k in range(1, rows):
        rowsv.append(rowsv[-1] * nodes / k)
    return jnp.stack(rowsv[:rows], axis=0)


def _null_directions(nodes, first: int, conditions, valid):
    """Columns spanning the free weights: column ``f`` is supported on the first ``conditions``
    nodes and node ``i = first + f`` (weight 1), and is annihilated by the first ``conditions`` rows
    of :func:`node_matrix`; columns of nodes ``i >= valid`` are zero. Shape ``(q, q - first)``."""
    q = nodes.shape[0]
    c = node_matrix(nodes, first)
    keep = jnp.arange(first) < conditions
    a = jnp.where(keep[:, None] & keep[None, :], c[:, :first], jnp.eye(first, dtype=c.dtype))
    b = jnp.where(keep[:, None], c[:, first:], 0.0)
    cols = jnp.concatenate([-jnp.linalg.solve(a, b), jnp.eye(q - first, dtype=c.dtype)], axis=0)
    col_ok = first + jnp.arange(q - first) < valid
    return jnp.where(col_ok[None, :], cols, 0.0)


def _as_array(value, cols: int, name: str, dtype=None, rows: int | None = None):
    """``value`` as a finite float ``(rows, cols)`` array (any number of rows unless ``rows`` is given)."""
    arr = jnp.asarray(value) if dtype is None else jnp.asarray(value, dtype)
    if not jnp.issubdtype(arr.dtype, jnp.floating):
        arr = arr.astype(jnp.result_type(float))
    want = f"({'num_steps' if rows is None else rows}, {cols})"
    if arr.ndim != 2 or arr.shape[1] != cols or (rows is not None and arr.shape[0] != rows):
        raise ValueError(f"{name} must have shape {want} (one row per step), got {arr.shape}.")
    if not isinstance(arr, jax.core.Tracer) and not bool(jnp.all(jnp.isfinite(arr))):
        raise ValueError(f"{name} holds NaN or inf values; every coefficient must be finite.")
    return arr


def _check_steps(rows: int, info: StepInfo, what: str):
    if rows != info.num_steps:
        raise ValueError(
            f"{what} has coefficients for {rows} steps but the grid has {info.num_steps}; a learned solver "
            "is used with the grid it was fitted on (LearnedSolver.ts)."
        )


class MultistepCoefficients(eqx.Module):
    """What one step of a :class:`LearnedMultistep` uses (for checks and plots).

    Attributes:
        nodes: ``(q,)`` normalised offsets ``r_j`` (``r_0 = 0``) of the predictor's nodes.
        weights: ``(q,)`` predictor weights ``w``.
        conditions: how many moment conditions the step imposes (``p`` or the base's lower order).
        valid: how many nodes hold model values (start-up steps have fewer).
        corrector_nodes, corrector_weights, corrector_conditions: the same for the corrector
            (node ``1`` second), or ``None`` without one.
        moments: the base's moments the weights reproduce (``(C w)_k = moments_k`` for ``k <
            conditions``); corrector_moments the same for the corrector.
    """

    nodes: jax.Array
    weights: jax.Array
    conditions: jax.Array
    valid: jax.Array
    moments: jax.Array
    corrector_nodes: jax.Array | None
    corrector_weights: jax.Array | None
    corrector_conditions: jax.Array | None
    corrector_moments: jax.Array | None


class LearnedMultistep(AbstractSolver):
    """Non-stationary multistep exponential solver: per-step weights in the base scheme's order family.

    Args:
        base: a multistep scheme name (``"dpmpp_2m"``, ``"dpmpp_3m"``, ``"unipc_bh2_2"``, ``"deis_ab3"``...).
        z: ``(num_steps, history - p)`` free predictor weights, ``p = order`` (``order - 1`` with a
            corrector); zeros give the base.
        zc: ``(num_steps, history - p)`` free corrector weights (UniPC bases), else ``None``.
        order: design order (default and maximum: the base's).
        history: model values kept (default ``max(base steps, p + 1)``).

    Raises:
        ValueError: an unknown base, ``order`` outside ``1..base order``, ``history`` below the
            base's steps, or coefficient arrays of the wrong shape or not finite.

    Example:
        >>> import jax, jax.numpy as jnp
        >>> from jaxode_diffusion import GaussianMixture, VPLinear, make_times, solve
        >>> gm, vp = GaussianMixture.ring(4), VPLinear()
        >>> x = vp.prior_sample(jax.random.PRNGKey(0), (8, 2))
        >>> ts = make_times(vp, num_steps=6, grid="log_snr")
        >>> s = learned_start("dpmpp_2m", 6)            # z = 0: dpmpp_2m itself
        >>> a, b = solve(gm.score_fn(vp), vp, x, ts, s), solve(gm.score_fn(vp), vp, x, ts, "dpmpp_2m")
        >>> float(jnp.max(jnp.abs(a.samples - b.samples))) < 1e-5, s.z.shape, int(a.nfe)
        (True, (6, 1), 6)
    """

    base: str = eqx.field(static=True)
    conditions: int = eqx.field(static=True)
    history: int = eqx.field(static=True)
    form: AbstractForm = eqx.field(static=True)
    z: jax.Array
    zc: jax.Array | None

    def __init__(self, base: str, z, zc=None, *, order: int | None = None, history: int | None = None):
        scheme, p, history = _multistep_layout(base, order, history)
        self.base, self.conditions, self.history = scheme.name, p, history
        self.form = PREDICTIONS[scheme.prediction].form
        self.z = _as_array(z, self.history - p, "z")
        if scheme.corrector is not None and zc is None:
            zc = jnp.zeros_like(self.z)
        if scheme.corrector is None and zc is not None:
            raise ValueError(f"zc: {base!r} has no corrector; pass zc=None.")
        self.zc = None if zc is None else _as_array(zc, self.z.shape[1], "zc", self.z.dtype, self.z.shape[0])

    @property
    def scheme(self) -> MultistepScheme:
        return MULTISTEP_SCHEMES[self.base]

    @property
    def num_steps(self) -> int:
        return int(self.z.shape[0])

    @property
    def stage_fractions(self):
        return (1.0,)

    @property
    def order(self):
        return self.conditions + (1 if self.scheme.corrector is not None else 0)

    @property
    def name(self):
        return f"learned_multistep({self.base}, order={self.order}, history={self.history})"

    def init(self, score_fn, process, y0, t0):
        pred = PREDICTIONS[self.scheme.prediction]
        m0 = pred.model(score_fn, process, y0, t0)
        m_hist = jnp.concatenate([m0[None], jnp.zeros((self.history - 1, *m0.shape), m0.dtype)])
        u0 = jnp.asarray(self.form.u(process, t0)).astype(y0.dtype)
        return m_hist, jnp.full((self.history,), u0)

    def coefficients(self, u_hist, u1, index, num_steps: int) -> MultistepCoefficients:
        """The weights of step ``index`` from the ``u`` of the history (newest first) to ``u1``.

        Example:
            >>> import jax.numpy as jnp
            >>> s = learned_start("dpmpp_2m", 4, history=3)
            >>> c = s.coefficients(jnp.array([1.0, 0.0, -1.0]), 2.0, 3, 4)
            >>> int(c.valid), int(c.conditions)
            (3, 1)
        """
        sch, q = self.scheme, self.history
        pred = PREDICTIONS[sch.prediction]
        u_hist = jnp.asarray(u_hist)
        dt = u_hist.dtype
        u0, h = u_hist[0], jnp.asarray(u1, dt) - u_hist[0]
        n = jnp.asarray(index)
        q_base = jnp.minimum(n + 1, sch.steps)
        if sch.lower_order_final and num_steps < 10:
            q_base = jnp.minimum(q_base, num_steps - n)
        valid = jnp.minimum(n + 1, q)
        p_n = jnp.minimum(self.conditions, q_base)
        nodes = jnp.concatenate([jnp.zeros((1,), dt), (u_hist[1:] - u0) / h])
        moments = pred.moments(h, sch.steps)
        if sch.steps >= 3 and sch.second_derivative_weight != 1.0:
            moments = moments.at[2].multiply(sch.second_derivative_weight)
        two_p = None if sch.two_point == "taylor" else pred.two_point_moment(h, sch.two_point)
        base_w = quadrature_weights(nodes[: sch.steps], q_base, moments, two_p)
        zn = self.z[n].astype(dt)
        w = _pad(base_w, q) + moments[0] * (_null_directions(nodes, self.conditions, p_n, valid) @ zn)
        targets = _targets(moments, two_p, q_base)
        if sch.corrector is None:
            return MultistepCoefficients(nodes, w, p_n, valid, targets, None, None, None, None)
        nodes_c = jnp.concatenate([nodes[:1], jnp.ones((1,), dt), nodes[1:]])
        moments_c = pred.moments(h, sch.steps + 1)
        two_c = None if sch.corrector == "taylor" else pred.two_point_moment(h, sch.corrector)
        base_c = quadrature_weights(nodes_c[: sch.steps + 1], q_base + 1, moments_c, two_c)
        null_c = _null_directions(nodes_c, self.conditions + 1, p_n + 1, valid + 1)
        wc = _pad(base_c, q + 1) + moments_c[0] * (null_c @ self.zc[n].astype(dt))
        return MultistepCoefficients(nodes, w, p_n, valid, targets, nodes_c, wc, p_n + 1,
                                     _targets(moments_c, two_c, q_base + 1))

    def step(self, score_fn, process, y, state, info: StepInfo):
        _check_steps(self.num_steps, info, self.name)
        sch = self.scheme
        pred = PREDICTIONS[sch.prediction]
        m_hist, u_hist = state
        dt = y.dtype
        u0, u1 = info.u0.astype(dt), info.u1.astype(dt)
        n, big_n = info.index, info.num_steps
        # The history's newest u is this step's start: use the grid's value (same as the base's u0).
        co = self.coefficients(u_hist.astype(dt).at[0].set(u0), u1, n, big_n)
        lin, pre = pred.linear(u1 - u0), pred.prefactor(u1)
        y_pred = lin * y + pre * jnp.tensordot(co.weights, m_hist, axes=1)
        is_last = n == big_n - 1

        def evaluate(_):
            m_new = pred.model(score_fn, process, y_pred, info.t_stages[0])
            if sch.corrector is None:
                return y_pred, m_new
            m_all = jnp.concatenate([m_hist[:1], m_new[None], m_hist[1:]])
            return lin * y + pre * jnp.tensordot(co.corrector_weights, m_all, axes=1), m_new

        def skip(_):
            return y_pred, jnp.zeros_like(y_pred)

        y1, m_new = jax.lax.cond(is_last, skip, evaluate, None)
        m_hist = jnp.concatenate([m_new[None], m_hist[:-1]])
        u_hist = jnp.concatenate([u1[None], u_hist[:-1].astype(dt)])
        nfe = 1 - is_last.astype(jnp.int32) + (n == 0).astype(jnp.int32)
        return y1, (m_hist, u_hist), nfe

    def free_parameters(self):
        """The free part as one array (zeros: this solver); see :meth:`with_free`."""
        cols = self.z.shape[1] * (2 if self.zc is not None else 1)
        return jnp.zeros((self.num_steps, cols), self.z.dtype)

    def with_free(self, delta):
        """This solver moved by ``delta`` (shaped like :meth:`free_parameters`): ``z + delta``."""
        f = self.z.shape[1]
        new = eqx.tree_at(lambda s: s.z, self, self.z + delta[:, :f])
        if self.zc is not None:
            new = eqx.tree_at(lambda s: s.zc, new, self.zc + delta[:, f:])
        return new

    def to_dict(self) -> dict:
        return {"family": "multistep", "base": self.base, "order": self.order, "history": self.history,
                "num_steps": self.num_steps, "dtype": str(self.z.dtype),
                "coefficients": {"z": np.asarray(self.z, np.float64).tolist(),
                                 "zc": None if self.zc is None else np.asarray(self.zc, np.float64).tolist()}}


def _pad(w, size):
    return jnp.concatenate([w, jnp.zeros((size - w.shape[0],), w.dtype)])


def _targets(moments, two_point, q):
    """The moments the base's weights reproduce: ``moments`` with the two-node rule where it applies."""
    if two_point is None or moments.shape[0] < 2:
        return moments
    return moments.at[1].set(jnp.where(q == 2, two_point, moments[1]))


def _multistep_layout(base: str, order, history) -> tuple[MultistepScheme, int, int]:
    """The base's scheme, the number ``p`` of predictor conditions and the history length, checked."""
    key = str(base).lower()
    key = MULTISTEP_ALIASES.get(key, key)
    if key not in MULTISTEP_SCHEMES:
        raise ValueError(f"base={base!r} is not a multistep scheme; choose one of {sorted(MULTISTEP_SCHEMES)}.")
    scheme = MULTISTEP_SCHEMES[key]
    corr = scheme.corrector is not None
    order = scheme.order if order is None else order
    if isinstance(order, bool) or int(order) != order or not (1 + corr <= order <= scheme.order):
        raise ValueError(
            f"order={order!r}: a solver learned from {base!r} (order {scheme.order}) keeps an order in "
            f"{1 + corr}..{scheme.order}; pass one of those or a base of higher order."
        )
    p = int(order) - corr
    history = max(scheme.steps, p + 1) if history is None else history
    if isinstance(history, bool) or int(history) != history or history < scheme.steps:
        raise ValueError(
            f"history={history!r}: the weights of {base!r} need at least its {scheme.steps} model values; "
            f"pass history >= {scheme.steps} (more values leave more free weights)."
        )
    return scheme, p, int(history)


def _singlestep_layout(base: str, order) -> tuple[str, ExponentialSinglestep, int]:
    """The base's key, its fixed solver and the order to keep, checked."""
    from jaxode_diffusion.solvers.registry import get_solver  # the registry imports the solver modules

    key = str(base).lower()
    if key not in _SINGLESTEP_BASES:
        raise ValueError(f"base={base!r} is not a singlestep exponential solver; choose one of "
                         f"{list(_SINGLESTEP_BASES)}.")
    ref = get_solver(key)
    top = ref.coefficients.order
    order = top if order is None else order
    if isinstance(order, bool) or int(order) != order or not (2 <= order <= top):
        raise ValueError(f"order={order!r}: a solver learned from {base!r} (order {top}) keeps an order in "
                         f"2..{top}; pass one of those or a base of higher order.")
    return key, ref, int(order)


def _t_of_u(process, u):
    """``t(lambda)`` with the implicit-function derivative ``1 / lambda'(t)``, so a bisection inverse is
    differentiable too (the parametrisation of the learned grids)."""
    t0 = jax.lax.stop_gradient(process.t_of_lambda(u))
    slope = jax.lax.stop_gradient(process.dlam_dt(t0))
    return t0 + (u - jax.lax.stop_gradient(u)) / slope


class LearnedSinglestep(AbstractSolver):
    """Non-stationary singlestep exponential RK: per-step stage fractions in the base's order family.

    Args:
        base: ``"dpmpp_2s"``, ``"dpmpp_3s"``, ``"dpm_solver_2"`` or ``"dpm_solver_3"``.
        c: ``(num_steps, stages - 1)`` stage fractions of each step in ``(0, 1)`` (the first stage is
            at 0); the base's fractions on every row give the base.
        order: 2, or 3 for a three-stage base (then the last fraction must stay the base's ``2/3``).

    Raises:
        ValueError: an unknown base, a bad order, fractions outside ``(0, 1)``, or a fixed fraction
            that differs from the base's.

    Example:
        >>> import jax
        >>> from jaxode_diffusion import GaussianMixture, VPLinear, make_times, solve
        >>> gm, vp = GaussianMixture.ring(4), VPLinear()
        >>> x = vp.prior_sample(jax.random.PRNGKey(0), (8, 2))
        >>> s = learned_start("dpmpp_2s", 3)
        >>> int(solve(gm.score_fn(vp), vp, x, make_times(vp, num_steps=3, grid="log_snr"), s).nfe)
        6
    """

    base: str = eqx.field(static=True)
    prediction: str = eqx.field(static=True)
    stages: tuple = eqx.field(static=True)  # the base's SinglestepCoefficients
    design_order: int = eqx.field(static=True)
    form: AbstractForm = eqx.field(static=True)
    c: jax.Array

    def __init__(self, base: str, c, *, order: int | None = None):
        key, ref, order = _singlestep_layout(base, order)
        self.base, self.prediction, self.stages = key, ref.prediction, ref.coefficients
        self.design_order = order
        self.form = ref.form
        self.c = _as_array(c, ref.coefficients.num_stages - 1, "c")
        if not isinstance(self.c, jax.core.Tracer):
            self._check_fractions(np.asarray(self.c, np.float64))

    def _check_fractions(self, c):
        if not np.all((c > 0) & (c < 1)):
            i, j = np.argwhere(~((c > 0) & (c < 1)))[0]
            raise ValueError(f"c[{i}, {j}] = {c[i, j]!r}: every stage fraction must lie in (0, 1).")
        for j in range(c.shape[1]):
            if j + 1 not in self.free_stages and not np.all(c[:, j] == self.stages.c[j + 1]):
                raise ValueError(f"c[:, {j}] must stay {self.stages.c[j + 1]!r} at order {self.design_order} "
                                 f"(it carries the order-{self.design_order} condition of {self.base!r}).")

    @property
    def free_stages(self) -> tuple[int, ...]:
        """Stages whose fraction is free: all at order 2, all but the last at order 3."""
        last = self.stages.num_stages - (1 if self.design_order >= 3 else 0)
        return tuple(range(1, last))

    @property
    def num_steps(self) -> int:
        return int(self.c.shape[0])

    @property
    def stage_fractions(self):
        # Nominal (the base's): make_plan's stage times are not used beyond the step's start.
        return tuple(float(v) for v in self.stages.c)

    @property
    def order(self):
        return self.design_order

    @property
    def name(self):
        return f"learned_singlestep({self.base}, order={self.order})"

    def rows(self, n, h):
        """``[(c_i, {j: weight on (m_j - m_0)})]`` for stages ``1..S-1`` and the final value (``c = 1``)
        of step ``n`` with step ``h``; each row's weights satisfy ``sum_j weight_j c_j / c_i`` = the
        base's first moment (``H phi_2(s H)``, or ``H phi_1(s H) / 2`` for the ``beta = 1/2`` form).

        Example:
            >>> s = learned_start("dpmpp_2s", 2)
            >>> [round(float(ci), 3) for ci, _ in s.rows(0, 0.5)]
            [0.5, 1.0]
        """
        pred = PREDICTIONS[self.prediction]
        cs = jnp.concatenate([jnp.zeros((1,), self.c.dtype), self.c[n]])
        out = []
        for i, terms in [*enumerate(self.stages.stages, start=1), (None, self.stages.final)]:
            ci = 1.0 if i is None else cs[i]
            big_h = ci * h
            ph = phis(self.stages.kmax, pred.sign * big_h)
            out.append((ci, {j: beta * big_h * ph[k - 1] * (ci / cs[j]) for j, beta, k in terms}))
        return out

    def step(self, score_fn, process, y, state, info: StepInfo):
        _check_steps(self.num_steps, info, self.name)
        pred = PREDICTIONS[self.prediction]
        dt = y.dtype
        h = (info.u1 - info.u0).astype(dt)
        u0 = info.u0.astype(dt)
        *stages, final = self.rows(info.index, h)

        def combine(ci, weights, ms):
            big_h = ci * h
            acc = (big_h * phis(1, pred.sign * big_h)[0]) * ms[0]
            for j, wj in weights.items():
                acc = acc + wj * (ms[j] - ms[0])
            return pred.linear(big_h) * y + pred.prefactor(u0 + big_h) * acc

        ms = [pred.model(score_fn, process, y, info.t_stages[0])]
        for ci, weights in stages:
            # The stage's time moves with its learned fraction: t(u) is evaluated here, not in the plan.
            u_i = info.u0 + jnp.asarray(ci, info.u0.dtype) * (info.u1 - info.u0)
            t_i = _t_of_u(process, u_i).astype(info.t0.dtype)
            ms.append(pred.model(score_fn, process, combine(ci, weights, ms), t_i))
        return combine(*final, ms), state, self.stages.num_stages

    def free_parameters(self):
        """Zeros of shape ``(num_steps, number of free stages)``: this solver; see :meth:`with_free`."""
        return jnp.zeros((self.num_steps, len(self.free_stages)), self.c.dtype)

    def with_free(self, delta):
        """Fractions moved by ``delta`` on the logit scale, exactly this solver at ``delta = 0``:
        ``c + sigmoid(logit(c) + delta) - sigmoid(logit(c))`` (stays in about ``(0, 1)``)."""
        c = self.c
        for f, i in enumerate(self.free_stages):
            ci = c[:, i - 1]
            logit = jnp.log(ci) - jnp.log1p(-ci)
            moved = ci + (jax.nn.sigmoid(logit + delta[:, f]) - jax.nn.sigmoid(logit))
            c = c.at[:, i - 1].set(moved)
        return eqx.tree_at(lambda s: s.c, self, c)

    def to_dict(self) -> dict:
        return {"family": "singlestep", "base": self.base, "order": self.order, "history": None,
                "num_steps": self.num_steps, "dtype": str(self.c.dtype),
                "coefficients": {"c": np.asarray(self.c, np.float64).tolist()}}


def learned_start(base: str, num_steps: int, *, order: int | None = None, history: int | None = None,
                  dtype=None):
    """The learned solver of ``base``'s family that equals ``base`` on ``num_steps`` steps (the start).

    Args:
        base: a name from :func:`learnable_bases`.
        num_steps: steps of the grid it will be used on.
        order: the order to keep (default: the base's).
        history: model values kept by a multistep family (default ``max(base steps, p + 1)``);
            must be ``None`` for a singlestep base.
        dtype: of the coefficients (default: JAX's default float).

    Raises:
        ValueError: an unknown base (naming the choices), ``num_steps < 1``, or a bad order/history.

    Example:
        >>> learned_start("unipc_bh2_2", 5).zc.shape, learned_start("dpmpp_3s", 5, order=2).c.shape
        ((5, 1), (5, 2))
    """
    if isinstance(num_steps, bool) or int(num_steps) != num_steps or num_steps < 1:
        raise ValueError(f"num_steps={num_steps!r} must be a positive integer.")
    dtype = dtype or jnp.result_type(float)
    n = int(num_steps)
    if str(base).lower() in _SINGLESTEP_BASES:
        if history is not None:
            raise ValueError(f"history={history!r}: {base!r} is a singlestep solver (no history); pass None.")
        key, ref, order = _singlestep_layout(base, order)
        row = np.asarray(ref.coefficients.c[1:], np.float64)
        return LearnedSinglestep(key, jnp.asarray(np.tile(row, (n, 1)), dtype), order=order)
    if str(base).lower() not in learnable_bases():
        raise ValueError(f"base={base!r} cannot be learned; choose one of {list(learnable_bases())} "
                         "(multistep schemes or singlestep exponential solvers).")
    scheme, p, hist = _multistep_layout(base, order, history)
    return LearnedMultistep(scheme.name, jnp.zeros((n, hist - p), dtype), order=order, history=hist)


def learned_solver_from_dict(d: dict, where: str = "the learned solver"):
    """Rebuild a solver from :meth:`LearnedMultistep.to_dict` / :meth:`LearnedSinglestep.to_dict`.

    Args:
        d: the dict (from JSON).
        where: names the source in error messages (e.g. the file).

    Raises:
        ValueError: naming ``where`` and the bad field.

    Example:
        >>> s = learned_start("dpmpp_2m", 4)
        >>> learned_solver_from_dict(s.to_dict()).name == s.name
        True
    """
    if not isinstance(d, dict):
        raise ValueError(f"{where}: field 'solver' must be an object, got {type(d).__name__}.")
    for k in ("family", "base", "order", "num_steps", "dtype", "coefficients"):
        if k not in d:
            raise ValueError(f"{where}: field 'solver.{k}' is missing.")
    fam, coefs = d["family"], d["coefficients"]
    if fam not in ("multistep", "singlestep"):
        raise ValueError(f"{where}: field 'solver.family' is {fam!r}; expected 'multistep' or 'singlestep'.")
    if not isinstance(coefs, dict):
        raise ValueError(f"{where}: field 'solver.coefficients' must be an object.")
    try:
        dtype = jnp.dtype(d["dtype"])
    except TypeError as err:
        raise ValueError(f"{where}: field 'solver.dtype' = {d['dtype']!r} is not a dtype.") from err
    names = ("z", "zc") if fam == "multistep" else ("c",)
    arrays = {}
    for name in names:
        v = coefs.get(name)
        if v is None and name == "zc":
            arrays[name] = None
            continue
        a = _float_array(v, f"{where}: field 'solver.coefficients.{name}'")
        if a.ndim != 2 or a.shape[0] != d["num_steps"]:
            raise ValueError(f"{where}: field 'solver.coefficients.{name}' must have {d['num_steps']} rows "
                             f"(solver.num_steps), got shape {a.shape}.")
        arrays[name] = jnp.asarray(a, dtype)
    try:
        if fam == "multistep":
            return LearnedMultistep(d["base"], arrays["z"], arrays["zc"], order=d["order"], history=d.get("history"))
        return LearnedSinglestep(d["base"], arrays["c"], order=d["order"])
    except ValueError as err:
        raise ValueError(f"{where}: field 'solver': {err}") from err


def _float_array(v, what):
    try:
        a = np.asarray(v, dtype=np.float64)
    except (TypeError, ValueError) as err:
        raise ValueError(f"{what} must be a table of numbers: {err}") from err
    if not np.all(np.isfinite(a)):
        raise ValueError(f"{what} holds null/NaN/inf values; every coefficient must be finite.")
    return a

