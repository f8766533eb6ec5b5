"""Adaptive-step drivers of the exponential family: DPM-Solver-12 / 23 (Lu et al. 2022, Alg. 4).

Also home of :class:`AdaptiveResult`, the result type every adaptive driver returns (the diffrax
PID driver in :mod:`jaxode_diffusion.analysis.diffrax_drivers` too).
"""

from __future__ import annotations

from dataclasses import dataclass

import equinox as eqx
import jax
import jax.numpy as jnp

from jaxode_diffusion.processes import ForwardProcess
from jaxode_diffusion.solvers.exponential import (
    FIRST_ORDER,
    THIRD_ORDER,
    combine_stages,
    second_order_coefficients,
    singlestep_stages,
)
from jaxode_diffusion.solvers.predictions import PREDICTIONS

__all__ = ["AdaptiveResult", "dpm_solver_adaptive"]


@dataclass
class AdaptiveResult:
    """End points of an adaptive solve and its cost.

    Attributes:
        samples: the end points, shaped like ``x_init``.
        nfe: score evaluations, every stage of every attempted step.
        num_accepted_steps, num_rejected_steps: step counts.

    Example:
        >>> import jax.numpy as jnp
        >>> AdaptiveResult(jnp.zeros((2, 2)), nfe=9, num_accepted_steps=2, num_rejected_steps=1).nfe
        9
    """

    samples: jax.Array
    nfe: int
    num_accepted_steps: int
    num_rejected_steps: int


# ---------------------------------------------------------------------------------------------
# Adaptive DPM-Solver-12 / 23.
# ---------------------------------------------------------------------------------------------
# The lower-order method's stages are a prefix of the higher one's, so each attempt costs the
# higher method's stages only (Lu et al. 2022, Sec. 4.2 / Alg. 4: "DPM-Solver-12" uses DPM-Solver-1
# inside DPM-Solver-2 (2 NFE per attempt), "DPM-Solver-23" uses DPM-Solver-2 with r1 = 1/3 inside
# DPM-Solver-3 (3 NFE per attempt)).
_ADAPTIVE_PAIRS = {
    (1, 2): (FIRST_ORDER, second_order_coefficients(0.5)),
    (2, 3): (second_order_coefficients(1.0 / 3.0), THIRD_ORDER),
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
        :class:`AdaptiveResult` with samples, NFE (every stage of
        every attempt, accepted or rejected) and the accepted/rejected counts.

    Raises:
        ValueError: unknown ``order``/``prediction``, non-positive tolerances, or the loop hit
            ``max_steps`` before reaching ``t_end``.

    Example:
        >>> import jax
        >>> from jaxode_diffusion import GaussianMixture, VPLinear
        >>> from jaxode_diffusion.solvers.adaptive import dpm_solver_adaptive
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
        ms = singlestep_stages(high, pred, score_fn, process, y, lam_s, h, t_st)
        sig_t = jnp.asarray(process.sigma(t_next)).astype(dt)
        y_low = combine_stages(1.0, low.final, high, pred, y, lam_s, h, ms)
        y_high = combine_stages(1.0, high.final, high, pred, y, lam_s, h, ms)
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
