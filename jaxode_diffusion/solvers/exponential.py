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

Names (``sample(..., solver=NAME)``, registered in :mod:`~jaxode_diffusion.solvers.registry`): ``ddim``, ``dpm_solver_1``, ``dpm_solver_2``,
``dpm_solver_3``, ``dpmpp_1``, ``dpmpp_2s``, ``dpmpp_3s``, ``edm_heun`` here, and the multistep
family in :mod:`~jaxode_diffusion.solvers.multistep`. The adaptive DPM-Solver-12 / 23 lives in
:mod:`~jaxode_diffusion.solvers.adaptive`.

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

from jaxode_diffusion.solvers.forms import AbstractForm, get_form
from jaxode_diffusion.solvers.base import AbstractSolver, StepInfo
from jaxode_diffusion.solvers.phi import phis
from jaxode_diffusion.solvers.predictions import PREDICTIONS, Prediction

__all__ = [
    "SinglestepCoefficients",
    "ExponentialSinglestep",
    "EDMHeun",
    "SINGLESTEP_COEFFICIENTS",
    "FIRST_ORDER",
    "THIRD_ORDER",
    "second_order_coefficients",
    "singlestep_stages",
    "combine_stages",
]


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

    Raises:
        ValueError: on fractions that do not start at 0 or do not increase inside ``(0, 1)``, a
            correction that uses a later stage, or ``order < 1``.

    Example:
        >>> THIRD_ORDER.c, THIRD_ORDER.num_stages, THIRD_ORDER.kmax
        ((0.0, 0.3333333333333333, 0.6666666666666666), 3, 2)
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
        """Number of stages (model evaluations per step)."""
        return len(self.c)

    @property
    def kmax(self) -> int:
        """The highest ``phi_k`` index the method uses (at least 1)."""
        ks = [k for terms in (*self.stages, self.final) for _, _, k in terms]
        return max([1, *ks])


def second_order_coefficients(r: float) -> SinglestepCoefficients:
    """The second-order singlestep method with its middle stage at fraction ``r`` of the step.

    Lu et al. (2022) Alg. 1 (DPM-Solver-2) / Lu et al. (2022b) Alg. 1 (DPM-Solver++(2S)): the
    final value is exponential Euler plus ``(1 / (2 r)) h phi_1 (m_1 - m_0)``.

    Example:
        >>> c = second_order_coefficients(0.5)
        >>> c.c, c.order, c.num_stages
        ((0.0, 0.5), 2, 2)
    """
    return SinglestepCoefficients(f"2(r={r:g})", (0.0, r), ((),), ((1, 0.5, 1),), 2)


# Lu et al. (2022) Alg. 2 (DPM-Solver-3, r1 = 1/3, r2 = 2/3): the second stage and the final value
# carry the Taylor term (c_i/c_j) H phi_2(H) (m_j - m_0); r2 = 2/3 makes the final's
# (m_2 - m_0)/(r2 h) = m' + (r2 h / 2) m'' + O(h^2) match h^3 phi_3 m'' at leading order
# (h^2 phi_2 * h m''/3 ~ h^3 m''/6 ~ h^3 phi_3 m''), hence order 3.
THIRD_ORDER = SinglestepCoefficients("3", (0.0, 1.0 / 3.0, 2.0 / 3.0), ((), ((1, 1.0, 2),)), ((2, 1.0, 2),), 3)
FIRST_ORDER = SinglestepCoefficients("1", (0.0,), (), (), 1)

SINGLESTEP_COEFFICIENTS = {1: FIRST_ORDER, 2: second_order_coefficients(0.5), 3: THIRD_ORDER}


def singlestep_stages(coeffs: SinglestepCoefficients, pred: Prediction, score_fn, process, y,
                       u0, h, t_stages):
    """Model values ``[m_0, ..., m_{S-1}]`` at every stage of ``coeffs`` (``len(c)`` evaluations).

    ``y`` is the state in the prediction's form at ``u0``, ``h`` the step in its variable and
    ``t_stages`` the physical time of each stage. Used by :class:`ExponentialSinglestep` and the
    adaptive driver, which shares the stages of a lower- and a higher-order method.

    Example:
        >>> import jax.numpy as jnp
        >>> from jaxode_diffusion import VPLinear
        >>> from jaxode_diffusion.solvers.predictions import PREDICTIONS
        >>> vp, y = VPLinear(), jnp.ones((2, 1))
        >>> ts = vp.t_of_lambda(vp.lam(0.5) + jnp.array([0.0, 0.05]))
        >>> ms = singlestep_stages(SINGLESTEP_COEFFICIENTS[2], PREDICTIONS["data"], lambda x, t: -x,
        ...                        vp, y, vp.lam(0.5), 0.1, ts)
        >>> len(ms), ms[0].shape
        (2, (2, 1))
    """
    ms = [pred.model(score_fn, process, y, t_stages[0])]
    for i in range(1, coeffs.num_stages):
        yi = combine_stages(coeffs.c[i], coeffs.stages[i - 1], coeffs, pred, y, u0, h, ms)
        ms.append(pred.model(score_fn, process, yi, t_stages[i]))
    return ms


def combine_stages(ci: float, terms, coeffs: SinglestepCoefficients, pred: Prediction, y, u0, h, ms):
    """The state at fraction ``ci`` of the step from the stage values ``ms`` (the formula of
    :class:`SinglestepCoefficients`): exponential Euler plus the correction ``terms``.

    ``ci = 1`` with ``coeffs.final`` gives the step's result; ``ms`` needs the stages that
    ``terms`` name.

    Example:
        >>> import jax.numpy as jnp
        >>> from jaxode_diffusion.solvers.predictions import PREDICTIONS
        >>> y, m = jnp.ones((1, 1)), [jnp.zeros((1, 1))]
        >>> round(float(combine_stages(1.0, (), FIRST_ORDER, PREDICTIONS["noise"], y, 0.0, 0.1, m)[0, 0]), 6)
        1.105171
    """
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
        ms = singlestep_stages(self.coefficients, pred, score_fn, process, y, u0, h, info.t_stages)
        y1 = combine_stages(1.0, self.coefficients.final, self.coefficients, pred, y, u0, h, ms)
        return y1, state, self.coefficients.num_stages


# ---------------------------------------------------------------------------------------------
# EDM's deterministic Heun sampler.
# ---------------------------------------------------------------------------------------------
class EDMHeun(AbstractSolver):
    """Karras et al. (2022), Alg. 1 with ``S_churn = 0``: Heun in ``rho`` on ``y = x / alpha``.

    ``dy/drho = eps_hat`` (the ``eps-rho`` form; for ``alpha = 1`` this is EDM's
    ``dx/dsigma = (x - D(x; sigma)) / sigma``).

    The last step. EDM's Alg. 1 ("if sigma_{i+1} != 0") and k-diffusion's
    ``sample_heun`` skip Heun's correction only on a step that ends at ``sigma = 0``; a grid of
    this package ends at ``t_end > 0``, so with the default ``last_step="heun"`` every step is
    Heun's (NFE ``= 2 N``) and the result equals k-diffusion's ``sample_heun`` on the same sigmas
    to rounding (``tests/solvers/test_kdiffusion_equivalence.py``). ``last_step="euler"`` takes an Euler
    last step anyway (NFE ``= 2 N - 1``): one evaluation saved for an ``O(h^2)`` local error on
    the final, usually smallest, step; still order 2 (the difference it makes:
    ``benchmarks/README.md``, "Solver notes").

    Args:
        last_step: ``"heun"`` (default, EDM / k-diffusion on a grid ending above ``sigma = 0``)
            or ``"euler"``.

    Raises:
        ValueError: any other ``last_step``.

    Example:
        >>> import jax
        >>> from jaxode_diffusion import GaussianMixture, VPLinear, sample
        >>> from jaxode_diffusion.solvers.exponential import EDMHeun
        >>> gm, vp = GaussianMixture.ring(4), VPLinear()
        >>> x0 = vp.prior_sample(jax.random.PRNGKey(0), (8, 2))
        >>> int(sample(gm.score_fn(vp), vp, x0, solver="edm_heun", num_steps=5, grid="edm",
        ...            return_nfe=True).nfe)
        10
        >>> int(sample(gm.score_fn(vp), vp, x0, solver=EDMHeun(last_step="euler"), num_steps=5,
        ...            grid="edm", return_nfe=True).nfe)
        9
    """

    form: AbstractForm = eqx.field(static=True)
    last_step: str = eqx.field(static=True)

    def __init__(self, last_step: str = "heun"):
        if last_step not in ("heun", "euler"):
            raise ValueError(
                f"last_step={last_step!r}: choose 'heun' (EDM Alg. 1 / k-diffusion on a grid that "
                "ends above sigma = 0) or 'euler' (skip the last correction, one evaluation fewer)."
            )
        self.form = get_form("eps-rho")
        self.last_step = last_step

    @property
    def stage_fractions(self):
        return (0.0, 1.0)

    @property
    def order(self):
        return 2

    @property
    def name(self):
        return "edm_heun" if self.last_step == "heun" else "edm_heun(last_step=euler)"

    def step(self, score_fn, process, y, state, info: StepInfo):
        h = (info.u1 - info.u0).astype(y.dtype)
        pred = PREDICTIONS["rho"]  # eps_hat, i.e. the eps-rho form's vector field
        d0 = pred.model(score_fn, process, y, info.t_stages[0])
        y_euler = y + h * d0

        def heun(_):
            d1 = pred.model(score_fn, process, y_euler, info.t_stages[1])
            return y + (0.5 * h) * (d0 + d1)

        if self.last_step == "heun":
            return heun(None), state, 2
        is_last = info.index == info.num_steps - 1
        y1 = jax.lax.cond(is_last, lambda _: y_euler, heun, None)
        return y1, state, 2 - is_last.astype(jnp.int32)
