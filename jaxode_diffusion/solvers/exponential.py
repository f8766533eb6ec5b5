"""Exponential integrators for the probability-flow ODE: DDIM, DPM-Solver, DPM-Solver++, EDM-Heun.

All of these solve the semi-linear ODE exactly in its linear part and approximate only the model
output by a polynomial in the step variable. In the log-SNR ``lambda`` and with the scaled state
``z = x / sigma`` (the ``x0-lambda`` form) the exact solution from ``lambda_0`` to
``lambda_0 + h`` is, for the two model parameterisations (Lu et al. 2022, eq. 3.4; Lu et al.
2022b, eq. 8),

    data  (x0_hat):  z_1 = z_0 + e^{lambda_1} int_0^h e^{tau - h} x0_hat(lambda_0 + tau) dtau
    noise (eps_hat): z_1 = e^h z_0 - int_0^h e^{h - tau} eps_hat(lambda_0 + tau) dtau

and with the Taylor expansion ``m(lambda_0 + tau) = sum_k tau^k / k! m^(k)`` the integrals are
``h^{k+1} phi_{k+1}(-h)`` (data) and ``h^{k+1} phi_{k+1}(h)`` (noise) times ``m^(k)``
(:mod:`~jaxode_diffusion.solvers.phi`). Every method in this module and in
:mod:`~jaxode_diffusion.solvers.multistep` differs only in how it estimates ``m^(k)``:

* singlestep (:class:`ExponentialSinglestep`): from intermediate stages inside the step
  (DPM-Solver-2/3, DPM-Solver++(2S)); one generic step fed by :class:`SinglestepCoefficients`;
* multistep (:class:`~jaxode_diffusion.solvers.multistep.ExponentialMultistep`): from the
  history of earlier steps (DPM-Solver++(2M/3M), UniPC, DEIS).

A third "prediction" integrates the noise prediction in ``rho = sigma / alpha`` (the ``eps-rho``
form, ``d(x/alpha)/drho = eps_hat``) with plain polynomial quadrature: DEIS (Zhang & Chen 2022).

Registered names (``sample(..., solver=NAME)``): ``ddim``, ``dpm_solver_1``, ``dpm_solver_2``,
``dpm_solver_3``, ``dpmpp_1``, ``dpmpp_2s``, ``dpmpp_3s``, ``edm_heun`` here, and the multistep
family in :mod:`~jaxode_diffusion.solvers.multistep`. :func:`dpm_solver_adaptive` is DPM-Solver-12
/ 23 with adaptive steps in ``lambda`` (Lu et al. 2022, Alg. 4).

References:
    Lu, Zhou, Bao, Chen, Li, Zhu (2022), "DPM-Solver: A Fast ODE Solver for Diffusion Probabilistic
    Model Sampling in Around 10 Steps", NeurIPS (arXiv:2206.00927).
    Lu, Zhou, Bao, Chen, Li, Zhu (2022b), "DPM-Solver++: Fast Solver for Guided Sampling of Diffusion
    Probabilistic Models" (arXiv:2211.01095).
    Karras, Aittala, Aila, Laine (2022), "Elucidating the Design Space of Diffusion-Based Generative
    Models", NeurIPS (Alg. 1).
    Song, Meng, Ermon (2021), "Denoising Diffusion Implicit Models", ICLR.
"""

from __future__ import annotations

from dataclasses import dataclass

import equinox as eqx
import jax
import jax.numpy as jnp

from ..convergence import AdaptiveResult
from ..forms import AbstractForm, get_form
from ..processes import ForwardProcess
from ..sampling import register_solver
from .base import AbstractSolver, StepInfo
from .phi import phis

__all__ = [
    "Prediction",
    "PREDICTIONS",
    "SinglestepCoefficients",
    "ExponentialSinglestep",
    "EDMHeun",
    "dpm_solver_adaptive",
    "SINGLESTEP_COEFFICIENTS",
]


# ---------------------------------------------------------------------------------------------
# What the model predicts and in which variables the exact linear part is integrated.
# ---------------------------------------------------------------------------------------------
@dataclass(frozen=True)
class Prediction:
    """A model parameterisation and the closed-form pieces of its exponential integrator.

    One step of any method here is ``y_1 = L(h) y_0 + P(u_0 + h) * sum_j a_j m_j`` where ``m_j``
    are model outputs, ``L`` the exact linear propagator and ``P`` the prefactor; the weights
    ``a_j`` contract model values against the normalised moments
    ``M'_k(h) = h phi_{k+1}(sign h)`` (``= int weight * tau^k / k! / h^k``).

    ========  ==========  ================  ========  ===========  ====
    name      form        m                 L(h)      P(u)         sign
    ========  ==========  ================  ========  ===========  ====
    data      x0-lambda   x0_hat            1         e^{lambda}   -1
    noise     x0-lambda   eps_hat           e^h       -1           +1
    rho       eps-rho     eps_hat           1         1            0
    ========  ==========  ================  ========  ===========  ====

    (``phi_k(0) = 1/k!`` makes ``rho`` plain polynomial quadrature: Adams-Bashforth in ``rho``.)
    """

    name: str
    form_name: str
    sign: int

    @property
    def form(self) -> AbstractForm:
        return get_form(self.form_name)

    def model(self, score_fn, process: ForwardProcess, y, t):
        """The model output ``m`` (x0_hat or eps_hat) at state ``y`` of the form, time ``t``."""
        dt = y.dtype
        sig = jnp.asarray(process.sigma(t)).astype(dt)
        alp = jnp.asarray(process.alpha(t)).astype(dt)

        def score(x):  # the model may compute in a wider dtype than the state; keep the state's
            return score_fn(x, t).astype(dt)

        if self.name == "data":
            x = sig * y
            # Tweedie: x0_hat = (x + sigma^2 score) / alpha.
            return (x + sig**2 * score(x)) / alp
        if self.name == "noise":
            return -sig * score(sig * y)
        return -sig * score(alp * y)

    def linear(self, h):
        return jnp.exp(h) if self.name == "noise" else jnp.ones_like(h)

    def prefactor(self, u):
        if self.name == "data":
            return jnp.exp(u)
        return -jnp.ones_like(u) if self.name == "noise" else jnp.ones_like(u)

    def moments(self, h, n: int):
        """Normalised moments ``M'_k = h phi_{k+1}(sign h)``, ``k = 0..n-1`` (a ``(n,)`` array)."""
        return jnp.stack([h * p for p in phis(n, self.sign * h)])

    def two_point_moment(self, h, rule: str):
        """``M'_1`` of the two-point rules (UniPC's simplified order-2 step, Zhao et al. 2023;
        DPM-Solver++(2M), Lu et al. 2022b, Alg. 2): ``-B(hh) h / (2 hh)`` with ``hh = sign h``.

        ``bh1``: ``B(hh) = hh`` gives ``h / 2``; ``bh2``: ``B(hh) = expm1(hh)`` gives
        ``h phi_1(hh) / 2`` (DPM-Solver++(2M)'s coefficient); ``taylor``: the exact
        ``h phi_2(hh)``. All agree to ``O(h^2)``, so all keep order 2.
        """
        if rule == "taylor":
            return self.moments(h, 2)[1]
        if rule == "bh1":
            return 0.5 * h
        if rule == "bh2":
            return 0.5 * h * phis(1, self.sign * h)[0]
        raise ValueError(f"rule={rule!r}: choose 'taylor', 'bh1' or 'bh2'.")


PREDICTIONS = {
    "data": Prediction("data", "x0-lambda", -1),
    "noise": Prediction("noise", "x0-lambda", 1),
    "rho": Prediction("rho", "eps-rho", 0),
}


def _check_form(name: str, form_name: str | None, own: str) -> None:
    if form_name is not None and form_name.lower() != own:
        raise ValueError(
            f"solver {name!r} integrates in the {own!r} form; got form {form_name!r}. "
            f"Write solver={name!r} or solver='{own}:{name}'."
        )


# ---------------------------------------------------------------------------------------------
# Singlestep: intermediate stages estimate the derivatives.
# ---------------------------------------------------------------------------------------------
@dataclass(frozen=True)
class SinglestepCoefficients:
    """Coefficients of a singlestep exponential method (one generic step reads them).

    Stage ``i`` (fraction ``c_i`` of the step, ``H_i = c_i h``) and the final value (``c = 1``)
    are

        y_i = L(H_i) y_0 + P(u_0 + H_i) [ H_i phi_1(s H_i) m_0
                                          + sum_{(j, beta, k)} beta H_i phi_k(s H_i) (c_i / c_j) (m_j - m_0) ]

    where ``(m_j - m_0) / (c_j h)`` is the divided-difference derivative estimate. ``k = 2``
    with ``beta = 1`` is the Taylor term ``H^2 phi_2 m'``; ``k = 1`` with ``beta = 1/2`` is the
    ``H phi_1 / 2`` form of Lu et al. (2022), Alg. 1 (equal to ``O(H^3)``).

    Attributes:
        name: label.
        c: stage fractions, ``c[0] = 0`` and increasing in ``(0, 1)``.
        stages: for stages ``1..S-1``, their correction terms ``(j, beta, k)`` with ``1 <= j < i``.
        final: correction terms of the final value.
        order: design order.
    """

    name: str
    c: tuple[float, ...]
    stages: tuple[tuple[tuple[int, float, int], ...], ...]
    final: tuple[tuple[int, float, int], ...]
    order: int

    def __post_init__(self):
        c = self.c
        if not c or c[0] != 0.0:
            raise ValueError(f"{self.name}: c must start with 0 (the step's start); got c={c}.")
        if any(not (0.0 < ci < 1.0) for ci in c[1:]) or list(c[1:]) != sorted(set(c[1:])):
            raise ValueError(f"{self.name}: c[1:] must be increasing inside (0, 1); got c={c}.")
        if len(self.stages) != len(c) - 1:
            raise ValueError(
                f"{self.name}: need one correction list per stage after the first "
                f"({len(c) - 1}), got {len(self.stages)}."
            )
        rows = list(enumerate(self.stages, start=1)) + [(len(c), self.final)]
        for i, terms in rows:
            for j, beta, k in terms:
                if not (1 <= j < i) or k < 1:
                    raise ValueError(
                        f"{self.name}: correction (j={j}, beta={beta}, k={k}) of stage {i} must use "
                        "an earlier stage j >= 1 and k >= 1."
                    )
        if self.order < 1:
            raise ValueError(f"{self.name}: order must be >= 1, got {self.order}.")

    @property
    def num_stages(self) -> int:
        return len(self.c)

    @property
    def kmax(self) -> int:
        ks = [k for terms in (*self.stages, self.final) for _, _, k in terms]
        return max([1, *ks])


def _second_order(r: float) -> SinglestepCoefficients:
    # Lu et al. (2022) Alg. 1 (DPM-Solver-2) / Lu et al. (2022b) Alg. 1 (DPM-Solver++(2S)):
    # final = exponential Euler + (1 / (2 r)) h phi_1 (m_1 - m_0).
    return SinglestepCoefficients(f"2(r={r:g})", (0.0, r), ((),), ((1, 0.5, 1),), 2)


# Lu et al. (2022) Alg. 2 (DPM-Solver-3, r1 = 1/3, r2 = 2/3): the second stage and the final value
# carry the Taylor term (c_i/c_j) H phi_2(H) (m_j - m_0); r2 = 2/3 makes the final's
# (m_2 - m_0)/(r2 h) = m' + (r2 h / 2) m'' + O(h^2) match h^3 phi_3 m'' at leading order
# (h^2 phi_2 * h m''/3 ~ h^3 m''/6 ~ h^3 phi_3 m''), hence order 3.
_THIRD = SinglestepCoefficients("3", (0.0, 1.0 / 3.0, 2.0 / 3.0), ((), ((1, 1.0, 2),)), ((2, 1.0, 2),), 3)
_FIRST = SinglestepCoefficients("1", (0.0,), (), (), 1)

SINGLESTEP_COEFFICIENTS = {1: _FIRST, 2: _second_order(0.5), 3: _THIRD}


def _singlestep_stages(coeffs: SinglestepCoefficients, pred: Prediction, score_fn, process, y,
                       u0, h, t_stages):
    """Model values at every stage of ``coeffs`` (``len(c)`` evaluations) and the phi table."""
    ms = [pred.model(score_fn, process, y, t_stages[0])]
    for i in range(1, coeffs.num_stages):
        yi = _combine(coeffs.c[i], coeffs.stages[i - 1], coeffs, pred, y, u0, h, ms)
        ms.append(pred.model(score_fn, process, yi, t_stages[i]))
    return ms


def _combine(ci: float, terms, coeffs: SinglestepCoefficients, pred: Prediction, y, u0, h, ms):
    big_h = ci * h
    ph = phis(coeffs.kmax, pred.sign * big_h)
    acc = (big_h * ph[0]) * ms[0]
    for j, beta, k in terms:
        acc = acc + (beta * big_h * ph[k - 1] * (ci / coeffs.c[j])) * (ms[j] - ms[0])
    return pred.linear(big_h) * y + pred.prefactor(u0 + big_h) * acc


class ExponentialSinglestep(AbstractSolver):
    """Singlestep exponential integrator: DDIM, DPM-Solver-1/2/3, DPM-Solver++(1/2S/3S).

    Args:
        coefficients: a :class:`SinglestepCoefficients` (static).
        prediction: ``"noise"`` (DPM-Solver, DDIM) or ``"data"`` (DPM-Solver++).
        label: the registered name.

    NFE per step = number of stages.

    Example:
        >>> import jax
        >>> from jaxode_diffusion import GaussianMixture, VPLinear, sample
        >>> gm, vp = GaussianMixture.ring(4), VPLinear()
        >>> x0 = vp.prior_sample(jax.random.PRNGKey(0), (8, 2))
        >>> sol = sample(gm.score_fn(vp), vp, x0, solver="dpm_solver_3", num_steps=4,
        ...              grid="log_snr", return_nfe=True)
        >>> int(sol.nfe)
        12
    """

    coefficients: SinglestepCoefficients = eqx.field(static=True)
    prediction: str = eqx.field(static=True)
    label: str = eqx.field(static=True)
    form: AbstractForm = eqx.field(static=True)

    def __init__(self, coefficients: SinglestepCoefficients, prediction: str = "noise", label: str = ""):
        if prediction not in ("data", "noise"):
            raise ValueError(f"prediction={prediction!r}: choose 'data' (x0) or 'noise' (eps).")
        self.coefficients = coefficients
        self.prediction = prediction
        self.label = label or f"{prediction}-singlestep-{coefficients.name}"
        self.form = PREDICTIONS[prediction].form

    @property
    def stage_fractions(self):
        return tuple(float(c) for c in self.coefficients.c)

    @property
    def order(self):
        return self.coefficients.order

    @property
    def name(self):
        return self.label

    def step(self, score_fn, process, y, state, info: StepInfo):
        pred = PREDICTIONS[self.prediction]
        h = (info.u1 - info.u0).astype(y.dtype)
        u0 = info.u0.astype(y.dtype)
        ms = _singlestep_stages(self.coefficients, pred, score_fn, process, y, u0, h, info.t_stages)
        y1 = _combine(1.0, self.coefficients.final, self.coefficients, pred, y, u0, h, ms)
        return y1, state, self.coefficients.num_stages


# ---------------------------------------------------------------------------------------------
# EDM's deterministic Heun sampler.
# ---------------------------------------------------------------------------------------------
class EDMHeun(AbstractSolver):
    """Karras et al. (2022), Alg. 1 with ``S_churn = 0``: Heun in ``rho`` on ``y = x / alpha``.

    ``dy/drho = eps_hat`` (the ``eps-rho`` form; for ``alpha = 1`` this is EDM's
    ``dx/dsigma = (x - D(x; sigma)) / sigma``). Every step is Heun's method except the last,
    which is Euler (EDM steps to ``sigma = 0`` there), so NFE ``= 2 N - 1``. The last Euler step
    adds an ``O(h^2)`` local error once, so the method is still of order 2.

    Example:
        >>> import jax
        >>> from jaxode_diffusion import GaussianMixture, VPLinear, sample
        >>> gm, vp = GaussianMixture.ring(4), VPLinear()
        >>> x0 = vp.prior_sample(jax.random.PRNGKey(0), (8, 2))
        >>> int(sample(gm.score_fn(vp), vp, x0, solver="edm_heun", num_steps=5, grid="edm",
        ...            return_nfe=True).nfe)
        9
    """

    form: AbstractForm = eqx.field(static=True)

    def __init__(self):
        self.form = get_form("eps-rho")

    @property
    def stage_fractions(self):
        return (0.0, 1.0)

    @property
    def order(self):
        return 2

    @property
    def name(self):
        return "edm_heun"

    def step(self, score_fn, process, y, state, info: StepInfo):
        h = (info.u1 - info.u0).astype(y.dtype)
        pred = PREDICTIONS["rho"]  # eps_hat, i.e. the eps-rho form's vector field
        d0 = pred.model(score_fn, process, y, info.t_stages[0])
        y_euler = y + h * d0
        is_last = info.index == info.num_steps - 1

        def heun(_):
            d1 = pred.model(score_fn, process, y_euler, info.t_stages[1])
            return y + (0.5 * h) * (d0 + d1)

        y1 = jax.lax.cond(is_last, lambda _: y_euler, heun, None)
        return y1, state, 2 - is_last.astype(jnp.int32)


# ---------------------------------------------------------------------------------------------
# Registration.
# ---------------------------------------------------------------------------------------------
def _singlestep_factory(name: str, order: int, prediction: str):
    def factory(form_name):
        _check_form(name, form_name, "x0-lambda")
        return ExponentialSinglestep(SINGLESTEP_COEFFICIENTS[order], prediction, name)

    return factory


for _name, _order, _pred in [
    ("ddim", 1, "noise"),  # DDIM = DPM-Solver-1 (Lu et al. 2022, Sec. 4.1)
    ("dpm_solver_1", 1, "noise"),
    ("dpm_solver_2", 2, "noise"),
    ("dpm_solver_3", 3, "noise"),
    ("dpmpp_1", 1, "data"),
    ("dpmpp_2s", 2, "data"),
    ("dpmpp_3s", 3, "data"),
]:
    register_solver(_name, _singlestep_factory(_name, _order, _pred))


def _edm_factory(form_name):
    _check_form("edm_heun", form_name, "eps-rho")
    return EDMHeun()


register_solver("edm_heun", _edm_factory)


# ---------------------------------------------------------------------------------------------
# Adaptive DPM-Solver-12 / 23.
# ---------------------------------------------------------------------------------------------
# The lower-order method's stages are a prefix of the higher one's, so each attempt costs the
# higher method's stages only (Lu et al. 2022, Sec. 4.2 / Alg. 4: "DPM-Solver-12" uses DPM-Solver-1
# inside DPM-Solver-2 (2 NFE per attempt), "DPM-Solver-23" uses DPM-Solver-2 with r1 = 1/3 inside
# DPM-Solver-3 (3 NFE per attempt)).
_ADAPTIVE_PAIRS = {
    (1, 2): (_FIRST, _second_order(0.5)),
    (2, 3): (_second_order(1.0 / 3.0), _THIRD),
}


def dpm_solver_adaptive(
    score_fn,
    process: ForwardProcess,
    x_init,
    *,
    order=(2, 3),
    rtol: float = 0.05,
    atol: float = 0.0078,
    t_start=None,
    t_end=None,
    h_init: float = 0.05,
    theta: float = 0.9,
    prediction: str = "noise",
    max_steps: int = 1000,
) -> AdaptiveResult:
    """DPM-Solver-12 / DPM-Solver-23 with adaptive steps in ``lambda`` (Lu et al. 2022, Alg. 4).

    Each attempt from ``lambda_s`` with step ``h`` computes the lower- and higher-order results
    ``x_low``, ``x_high`` (sharing stages), the error

        E = max_batch RMS_features( (x_high - x_low) / max(atol, rtol max(|x_low|, |x_prev|)) ),

    accepts when ``E <= 1`` (keeping ``x_high``), and sets
    ``h <- min(theta h E^{-1/order_high}, lambda_end - lambda_s)``. The loop is one
    ``lax.while_loop`` inside ``equinox.filter_jit``.

    Args:
        score_fn, process, x_init: as for :func:`~jaxode_diffusion.sample`.
        order: ``(1, 2)`` (2 NFE per attempt) or ``(2, 3)`` (3 NFE per attempt).
        rtol, atol: tolerances (defaults from the paper: ``0.05`` and ``0.0078``, for data in
            ``[-1, 1]``).
        t_start, t_end: defaults from the process.
        h_init: first step in ``lambda``; ``theta``: safety factor.
        prediction: ``"noise"`` (DPM-Solver, as in the paper) or ``"data"`` (DPM-Solver++).
        max_steps: cap on attempts (the result is flagged by ``nfe`` reaching it).

    Returns:
        :class:`~jaxode_diffusion.convergence.AdaptiveResult` with samples, NFE (every stage of
        every attempt, accepted or rejected) and the accepted/rejected counts.

    Raises:
        ValueError: unknown ``order``/``prediction``, non-positive tolerances, or the loop hit
            ``max_steps`` before reaching ``t_end``.

    Example:
        >>> import jax
        >>> from jaxode_diffusion import GaussianMixture, VPLinear
        >>> gm, vp = GaussianMixture.ring(4), VPLinear()
        >>> res = dpm_solver_adaptive(gm.score_fn(vp), vp, vp.prior_sample(jax.random.PRNGKey(0), (8, 2)))
        >>> res.nfe % 3 == 0
        True
    """
    key = tuple(order)
    if key not in _ADAPTIVE_PAIRS:
        raise ValueError(f"order={order!r}: choose (1, 2) or (2, 3).")
    if prediction not in ("data", "noise"):
        raise ValueError(f"prediction={prediction!r}: choose 'noise' or 'data'.")
    if not (rtol > 0 and atol > 0):
        raise ValueError(f"rtol={rtol!r} and atol={atol!r} must both be > 0.")
    x_init = jnp.asarray(x_init)
    t_start = process.default_t_start if t_start is None else t_start
    t_end = process.default_t_end if t_end is None else t_end
    dt = x_init.dtype
    x, nfe, acc, rej, done = _adaptive_jit(
        score_fn, process, x_init, jnp.asarray(t_start, dt), jnp.asarray(t_end, dt), key, prediction,
        jnp.asarray(rtol, dt), jnp.asarray(atol, dt), jnp.asarray(h_init, dt), float(theta), int(max_steps),
    )
    if not bool(done):
        raise ValueError(
            f"dpm_solver_adaptive stopped after max_steps={max_steps} attempts before reaching "
            f"t_end={float(t_end)!r}; raise max_steps or loosen rtol/atol."
        )
    return AdaptiveResult(x, int(nfe), int(acc), int(rej))


@eqx.filter_jit
def _adaptive_jit(score_fn, process, x_init, t_start, t_end, order, prediction, rtol, atol, h_init,
                  theta, max_steps):
    low, high = _ADAPTIVE_PAIRS[order]
    pred = PREDICTIONS[prediction]
    dt = x_init.dtype
    lam_start = process.lam(t_start).astype(dt)
    lam_end = process.lam(t_end).astype(dt)
    b = x_init.shape[0]

    def attempt(x, lam_s, t_s, h, t_next):
        sig_s = jnp.asarray(process.sigma(t_s)).astype(dt)
        y = x / sig_s
        u_st = lam_s + jnp.asarray(high.c, dt) * h
        t_st = process.t_of_lambda(u_st).astype(dt)
        t_st = t_st.at[0].set(t_s)
        ms = _singlestep_stages(high, pred, score_fn, process, y, lam_s, h, t_st)
        sig_t = jnp.asarray(process.sigma(t_next)).astype(dt)
        y_low = _combine(1.0, low.final, high, pred, y, lam_s, h, ms)
        y_high = _combine(1.0, high.final, high, pred, y, lam_s, h, ms)
        return sig_t * y_low, sig_t * y_high

    def cond(c):
        x, x_prev, lam_s, t_s, h, nfe, acc, rej, it = c
        return (lam_s < lam_end) & (it < max_steps)

    def body(c):
        x, x_prev, lam_s, t_s, h, nfe, acc, rej, it = c
        remaining = lam_end - lam_s
        last = h >= remaining
        h = jnp.minimum(h, remaining)
        t_next = jnp.where(last, t_end, process.t_of_lambda(lam_s + h).astype(dt))
        x_low, x_high = attempt(x, lam_s, t_s, h, t_next)
        delta = jnp.maximum(atol, rtol * jnp.maximum(jnp.abs(x_low), jnp.abs(x_prev)))
        err = jnp.sqrt(jnp.mean(((x_high - x_low) / delta).reshape(b, -1) ** 2, axis=1))
        e = jnp.max(err)
        ok = e <= 1.0
        x = jnp.where(ok, x_high, x)
        x_prev = jnp.where(ok, x_low, x_prev)
        lam_s = jnp.where(ok, jnp.where(last, lam_end, lam_s + h), lam_s)
        t_s = jnp.where(ok, t_next, t_s)
        # E = 0 (exact agreement) gives an infinite proposal, capped by the remaining range.
        h_new = theta * h * jnp.power(jnp.maximum(e, 1e-30), -1.0 / order[1])
        h = jnp.minimum(h_new, jnp.maximum(lam_end - lam_s, 0.0))
        return (x, x_prev, lam_s, t_s, h, nfe + high.num_stages, acc + ok, rej + (~ok), it + 1)

    zero = jnp.asarray(0, jnp.int32)
    init = (x_init, x_init, lam_start, t_start, h_init, zero, zero, zero, zero)
    x, _, lam_s, _, _, nfe, acc, rej, _ = jax.lax.while_loop(cond, body, init)
    return x, nfe, acc, rej, lam_s >= lam_end


# Importing this module registers the multistep family too (one import enables every name).
from . import multistep as _multistep  # noqa: E402, F401
