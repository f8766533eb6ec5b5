"""Multistep exponential integrators: DPM-Solver++(2M/3M), UniPC, DEIS — one step, many schemes.

With the notation of :mod:`~jaxode_diffusion.solvers.exponential` a step from ``u_0`` to
``u_1 = u_0 + h`` is

    y_1 = L(h) y_0 + P(u_1) sum_k M_k m^(k)(u_0),      M_k = int weight(tau) tau^k / k! dtau,

and a multistep method estimates the derivatives ``m^(k)`` from the model values it has already
computed at earlier grid points ``u_{-j}`` by polynomial interpolation. With normalised offsets
``r_j = (u_{-j} - u_0) / h`` and ``c'_k = h^k m^(k)``, interpolation through ``q`` nodes reads
``V c' = m`` with ``V_jk = r_j^k / k!``; hence the update weights are ``a = V^{-T} M'`` with the
normalised moments ``M'_k = M_k / h^k = h phi_{k+1}(sign h)``. This is the exponential
Adams-Bashforth method (Hochbruck & Ostermann 2011, "Exponential multistep methods of Adams-type",
BIT 51) and, for the data prediction in ``lambda``, the Taylor form of DPM-Solver++ (Lu et al.
2022b, eq. 9); with ``q`` nodes it has order ``q``.

Schemes (:class:`MultistepScheme`) differ in their data:

* ``dpmpp_2m`` (Lu et al. 2022b, Alg. 2): data prediction; the two-node step uses
  ``M'_1 = h phi_1(-h) / 2`` (the paper's ``(1 + 1/(2 r)) x0_{i-1} - 1/(2 r) x0_{i-2}``
  combination, ``rule="bh2"``) instead of the exact ``h phi_2(-h)`` (equal to ``O(h^2)``, so
  still order 2). Equal to k-diffusion's ``sample_dpmpp_2m`` to rounding
  (``tests/solvers/test_kdiffusion_equivalence.py``).
* ``dpmpp_3m``: DPM-Solver++(3M) as the reference implementations compute it (DPM-Solver's
  ``multistep_dpm_solver_third_update``, diffusers' ``DPMSolverMultistepScheduler`` with
  ``solver_order=3``, k-diffusion's ``sample_dpmpp_3m_sde`` with ``eta=0``): three nodes, but the
  second-derivative estimate ``D2 = (D1_0 - D1_1) / (r0 + r1) ~ h^2 m'' / 2`` is paired with the
  coefficient ``phi_2/h - 1/2 = -h phi_3(-h)``, i.e. half of the Taylor term
  ``h^3 phi_3(-h) m''`` (``second_derivative_weight=0.5``). Its start-up second step uses the
  exact Taylor moment ``h phi_2(-h)`` as k-diffusion does (DPM-Solver and diffusers use the
  ``bh2`` rule there; the two differ by ``O(h^3)`` on that one step). Equal to k-diffusion's
  sampler to rounding. The half moment leaves an ``O(h^3)`` local error, so its order is 2.
* ``dpmpp_3m_exact``: the exponential Adams-Bashforth method on three nodes with the exact Taylor
  moments (``bh2`` start-up step): order 3. Its higher order pays off only with many steps: at
  the step counts people use the reference-compatible ``dpmpp_3m`` is usually the more accurate
  of the two (measurements: ``benchmarks/README.md``, "Solver notes").
* ``unipc_bhK_p`` (Zhao et al. 2023, "UniPC", Alg. 2-3 with ``B(h) = h`` (bh1) or ``e^h - 1``
  (bh2)): data prediction; predictor UniP-p on ``p`` nodes; then the model is evaluated at the
  predicted point and the corrector UniC-p re-does the step with that value as an extra node
  (``r = 1``), order ``p + 1``; the value at the predicted point is reused by the next step, so
  NFE = steps. UniPC's linear system ``R rho = b`` is square, so ``B(h)`` cancels except in the
  simplified two-node rules (order-2 predictor, order-1 corrector), which use ``M'_1 = -B h /
  (2 hh)``; that is all that distinguishes bh1 from bh2.
* ``deis_abK`` (Zhang & Chen 2023, "Fast sampling of diffusion models with exponential
  integrator", ICLR, the "tAB-DEIS" variant in ``rho``): noise prediction in the ``eps-rho``
  form, where the weight is 1: plain variable-step Adams-Bashforth in ``rho`` (``M'_k = h /
  (k+1)!``).

Start-up uses lower orders (``q = min(p, n + 1)``); as in DPM-Solver's reference sampler, when
``num_steps < 10`` the final steps also lower the order (``q <= N - n``) for stability.

History (the last ``p`` model values and their ``u``) lives in the solver state. :meth:`init`
evaluates the model once at ``t_start``; that evaluation is reported by the first step's NFE.
Each later step evaluates the model once, at its end point, except the last step (its value would
never be used), so NFE = number of steps.
"""

from __future__ import annotations

from dataclasses import dataclass

import equinox as eqx
import jax
import jax.numpy as jnp

from jaxode_diffusion.solvers.forms import AbstractForm
from jaxode_diffusion.solvers.base import AbstractSolver, StepInfo
from jaxode_diffusion.solvers.predictions import PREDICTIONS

__all__ = ["MultistepScheme", "ExponentialMultistep", "MULTISTEP_SCHEMES", "MULTISTEP_ALIASES"]

_RULES = ("taylor", "bh1", "bh2")


@dataclass(frozen=True)
class MultistepScheme:
    """Coefficient data of a multistep exponential method.

    Attributes:
        name: registered name.
        prediction: ``"data"`` (x0 in ``lambda``), ``"noise"`` (eps in ``lambda``) or ``"rho"``
            (eps in ``rho``, DEIS).
        steps: ``p``, number of model values the predictor interpolates.
        two_point: the predictor's two-node rule (``"taylor"``, ``"bh1"``, ``"bh2"``).
        corrector: ``None``, or the UniC corrector's two-node rule (then order ``p + 1``).
        lower_order_final: lower the order in the last steps when ``num_steps < 10``.
        second_derivative_weight: factor on the Taylor weight ``M'_2 = h phi_3`` of the
            second-derivative term whenever three or more nodes are used. ``1`` is the exact
            moment (order ``steps``); ``0.5`` reproduces the DPM-Solver++(3M) reference code
            (order 2, see the module docstring).

    Raises:
        ValueError: on an unknown prediction or rule, ``steps`` outside ``1..5``, or a
            ``second_derivative_weight`` outside ``[0, 1]`` (or not 1 with a corrector).

    Example:
        >>> MULTISTEP_SCHEMES["dpmpp_3m"].order, MULTISTEP_SCHEMES["unipc_bh2_3"].order
        (2, 4)
        >>> MultistepScheme("my_ab2", "rho", 2).order
        2
    """

    name: str
    prediction: str
    steps: int
    two_point: str = "taylor"
    corrector: str | None = None
    lower_order_final: bool = True
    second_derivative_weight: float = 1.0

    def __post_init__(self):
        if self.prediction not in PREDICTIONS:
            raise ValueError(f"{self.name}: prediction={self.prediction!r}; choose one of {list(PREDICTIONS)}.")
        if not (1 <= self.steps <= 5):
            raise ValueError(f"{self.name}: steps={self.steps!r} must lie in 1..5.")
        for rule in (self.two_point, self.corrector):
            if rule is not None and rule not in _RULES:
                raise ValueError(f"{self.name}: rule {rule!r} must be one of {_RULES}.")
        w = self.second_derivative_weight
        if not (isinstance(w, (int, float)) and 0.0 <= w <= 1.0):
            raise ValueError(
                f"{self.name}: second_derivative_weight={w!r} must be a number in [0, 1] "
                "(1: exact Taylor moment; 0.5: DPM-Solver++(3M) reference code)."
            )
        if self.corrector is not None and w != 1.0:
            raise ValueError(f"{self.name}: second_derivative_weight={w!r} is only defined without a corrector.")

    @property
    def order(self) -> int:
        """Design order: ``steps`` (at most 2 with a scaled second-derivative weight), plus 1
        with a corrector."""
        # A scaled second-derivative weight leaves an O(h^3) local error: order 2 at most.
        base = self.steps if self.second_derivative_weight == 1.0 else min(self.steps, 2)
        return base + (1 if self.corrector is not None else 0)


def quadrature_weights(nodes, q, moments, two_point_m1):
    """Quadrature weights ``a = V^{-T} M'`` on the first ``q`` (traced) of ``nodes``.

    Rows/columns beyond ``q`` are replaced by the identity and their moments by 0, so the
    unused weights are exactly 0 and one fixed-size solve serves every start-up order.
    ``two_point_m1`` (or ``None``) replaces ``M'_1`` when ``q == 2``.
    """
    n = nodes.shape[0]
    # V_jk = r_j^k / k! by running products (no 0**0 in the derivative).
    cols = [jnp.ones_like(nodes)]
    for k in range(1, n):
        cols.append(cols[-1] * nodes / k)
    v = jnp.stack(cols, axis=1)
    idx = jnp.arange(n)
    valid = idx < q
    v = jnp.where(valid[:, None] & valid[None, :], v, jnp.eye(n, dtype=v.dtype))
    m = jnp.where(valid, moments, 0.0)
    if two_point_m1 is not None and n > 1:
        m = jnp.where((q == 2) & (idx == 1), two_point_m1, m)
    return jnp.linalg.solve(v.T, m)


class ExponentialMultistep(AbstractSolver):
    """One multistep exponential step (predictor, optional UniC corrector) fed by a scheme.

    Args:
        scheme: a :class:`MultistepScheme`.

    Example:
        >>> import jax
        >>> from jaxode_diffusion import GaussianMixture, VPLinear, sample
        >>> gm, vp = GaussianMixture.ring(4), VPLinear()
        >>> x0 = vp.prior_sample(jax.random.PRNGKey(0), (8, 2))
        >>> sol = sample(gm.score_fn(vp), vp, x0, solver="unipc_bh2_3", num_steps=10,
        ...              grid="log_snr", return_nfe=True)
        >>> int(sol.nfe)
        10
    """

    scheme: MultistepScheme = eqx.field(static=True)
    form: AbstractForm = eqx.field(static=True)

    def __init__(self, scheme: MultistepScheme):
        if not isinstance(scheme, MultistepScheme):
            raise ValueError(f"scheme must be a MultistepScheme, got {type(scheme).__name__}.")
        self.scheme = scheme
        self.form = PREDICTIONS[scheme.prediction].form

    @property
    def stage_fractions(self):
        # The one evaluation per step happens at the step's end (u_1).
        return (1.0,)

    @property
    def order(self):
        return self.scheme.order

    @property
    def name(self):
        return self.scheme.name

    def init(self, score_fn, process, y0, t0):
        pred = PREDICTIONS[self.scheme.prediction]
        p = self.scheme.steps
        m0 = pred.model(score_fn, process, y0, t0)
        m_hist = jnp.concatenate([m0[None], jnp.zeros((p - 1, *m0.shape), m0.dtype)])
        u0 = jnp.asarray(self.form.u(process, t0)).astype(y0.dtype)
        return m_hist, jnp.full((p,), u0)

    def step(self, score_fn, process, y, state, info: StepInfo):
        sch = self.scheme
        pred = PREDICTIONS[sch.prediction]
        p = sch.steps
        m_hist, u_hist = state
        dt = y.dtype
        u0, u1 = info.u0.astype(dt), info.u1.astype(dt)
        h = u1 - u0
        n, big_n = info.index, info.num_steps
        q = jnp.minimum(n + 1, p)
        if sch.lower_order_final and big_n < 10:
            q = jnp.minimum(q, big_n - n)
        r = (u_hist[1:].astype(dt) - u0) / h
        lin, pre = pred.linear(h), pred.prefactor(u1)
        zero = jnp.zeros((1,), dt)

        two_p = None if sch.two_point == "taylor" else pred.two_point_moment(h, sch.two_point)
        moments = pred.moments(h, p)
        if p >= 3 and sch.second_derivative_weight != 1.0:
            moments = moments.at[2].multiply(sch.second_derivative_weight)
        a = quadrature_weights(jnp.concatenate([zero, r]), q, moments, two_p)
        y_pred = lin * y + pre * jnp.tensordot(a, m_hist, axes=1)
        is_last = n == big_n - 1

        def evaluate(_):
            m_new = pred.model(score_fn, process, y_pred, info.t_stages[0])
            if sch.corrector is None:
                return y_pred, m_new
            # UniC: the new value joins as node r = 1 (placed second so valid nodes are a prefix).
            nodes = jnp.concatenate([zero, jnp.ones((1,), dt), r])
            two_c = None if sch.corrector == "taylor" else pred.two_point_moment(h, sch.corrector)
            ac = quadrature_weights(nodes, q + 1, pred.moments(h, p + 1), two_c)
            m_all = jnp.concatenate([m_hist[:1], m_new[None], m_hist[1:]])
            return lin * y + pre * jnp.tensordot(ac, m_all, axes=1), m_new

        def skip(_):
            return y_pred, jnp.zeros_like(y_pred)

        y1, m_new = jax.lax.cond(is_last, skip, evaluate, None)
        m_hist = jnp.concatenate([m_new[None], m_hist[:-1]])
        u_hist = jnp.concatenate([u1[None], u_hist[:-1]])
        nfe = 1 - is_last.astype(jnp.int32) + (n == 0).astype(jnp.int32)
        return y1, (m_hist, u_hist), nfe


MULTISTEP_SCHEMES = {
    s.name: s
    for s in [
        MultistepScheme("dpmpp_2m", "data", 2, two_point="bh2"),
        # DPM-Solver++(3M) of the reference implementations (k-diffusion, DPM-Solver, diffusers).
        MultistepScheme("dpmpp_3m", "data", 3, two_point="taylor", second_derivative_weight=0.5),
        # The same three nodes with the exact third moment: order 3 (see the module docstring).
        MultistepScheme("dpmpp_3m_exact", "data", 3, two_point="bh2"),
        MultistepScheme("unipc_bh1_2", "data", 2, two_point="bh1", corrector="bh1"),
        MultistepScheme("unipc_bh1_3", "data", 3, two_point="bh1", corrector="bh1"),
        MultistepScheme("unipc_bh2_2", "data", 2, two_point="bh2", corrector="bh2"),
        MultistepScheme("unipc_bh2_3", "data", 3, two_point="bh2", corrector="bh2"),
        MultistepScheme("deis_ab1", "rho", 1),
        MultistepScheme("deis_ab2", "rho", 2),
        MultistepScheme("deis_ab3", "rho", 3),
    ]
}
# UniPC's default order in its reference code is 2 (with the corrector: order 3).
MULTISTEP_ALIASES = {"unipc_bh1": "unipc_bh1_2", "unipc_bh2": "unipc_bh2_2"}
