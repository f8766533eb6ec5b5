"""Processes from user functions: :class:`CustomProcess`, built by :meth:`ForwardProcess.from_alpha_sigma`.

The user's ``alpha(t)`` and ``sigma(t)`` are checked densely when the process is built (positive
and finite, ``f`` and ``g^2`` finite, the log-SNR strictly decreasing, an optional closed-form
inverse of the log-SNR consistent with it); the left end ``t_min`` belongs to the valid time range
only if every coefficient is finite there.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import equinox as eqx
import jax.numpy as jnp
import numpy as np

from jaxode_diffusion.processes.base import (
    ForwardProcess,
    TimeRange,
    check_range,
    check_scalar,
    float_dtype,
    is_traced,
)

__all__ = ["CustomProcess"]


class CustomProcess(ForwardProcess):
    """A process from user functions; build it with :meth:`ForwardProcess.from_alpha_sigma`.

    The schedule is checked densely when built (see :meth:`ForwardProcess.from_alpha_sigma`);
    :meth:`valid_t_range` is ``[t_min, t_max]`` when the coefficients are finite at ``t_min``
    and ``(t_min, t_max]`` otherwise.

    Example:
        >>> import jax.numpy as jnp
        >>> p = CustomProcess(lambda t: 1 - t, lambda t: t, t_max=0.99)
        >>> str(p.valid_t_range())
        '(0.0, 0.99]'
    """

    alpha_fn: Callable = eqx.field(static=True)
    sigma_fn: Callable = eqx.field(static=True)
    t_max_: float = eqx.field(static=True)
    t_min_: float = eqx.field(static=True)
    params: Any
    t_of_lambda_fn: Callable | None = eqx.field(static=True)
    t_end_default: float | None = eqx.field(static=True)
    t_min_open: bool = eqx.field(static=True)

    #: Number of interior times at which a user schedule is checked when built (plus both ends).
    NUM_CHECK_POINTS = 4096

    def __init__(
        self,
        alpha_fn,
        sigma_fn,
        *,
        t_max=1.0,
        t_min=0.0,
        params=None,
        t_of_lambda_fn=None,
        default_t_end=None,
    ):
        if not callable(alpha_fn):
            raise ValueError(f"alpha_fn must be callable alpha(t), got {type(alpha_fn).__name__}.")
        if not callable(sigma_fn):
            raise ValueError(f"sigma_fn must be callable sigma(t), got {type(sigma_fn).__name__}.")
        if t_of_lambda_fn is not None and not callable(t_of_lambda_fn):
            raise ValueError(
                f"t_of_lambda_fn must be callable t(lam) or None, got {type(t_of_lambda_fn).__name__}."
            )
        check_range("from_alpha_sigma", t_min, t_max)
        t_max, t_min = float(t_max), float(t_min)
        self.alpha_fn = alpha_fn
        self.sigma_fn = sigma_fn
        self.t_max_ = t_max
        self.t_min_ = t_min
        self.params = params
        self.t_of_lambda_fn = t_of_lambda_fn
        if default_t_end is not None:
            default_t_end = check_scalar("from_alpha_sigma", "default_t_end", default_t_end)
        self.t_end_default = default_t_end
        # Until probed, assume the worst (sigma(t_min) = 0, as for most schedules).
        self.t_min_open = True
        if not is_traced(params):
            self.t_min_open = self._validate()
        if self.t_end_default is not None:
            rng = self.valid_t_range()
            if not (bool(rng.contains(self.t_end_default)) and self.t_end_default < t_max):
                raise ValueError(
                    f"from_alpha_sigma: default_t_end={self.t_end_default!r} must lie in {rng} and "
                    f"below t_max={t_max!r} (where the coefficients are finite); pass e.g. "
                    f"default_t_end={t_min + 1e-3 * (t_max - t_min)!r}."
                )

    def _validate(self) -> bool:
        """Dense check of the schedule on ``(t_min, t_max]``; returns whether ``t_min`` is excluded.

        Checked at NUM_CHECK_POINTS interior times plus both ends: alpha and sigma finite and
        > 0, f and g^2 finite, and the log-SNR strictly decreasing (d lambda/dt < 0 by
        autodiff, and no increase between neighbouring points beyond rounding).
        """
        n = self.NUM_CHECK_POINTS
        frac = np.linspace(0.0, 1.0, n + 2)[1:]  # n interior points and t_max
        ts = jnp.asarray(self.t_min_ + frac * (self.t_max_ - self.t_min_), float_dtype())
        ts = ts.at[-1].set(self.t_max_)
        try:
            a = jnp.asarray(self.alpha(ts))
            s = jnp.asarray(self.sigma(ts))
        except Exception as err:  # the user's function failed on an array of times
            raise ValueError(
                "alpha_fn/sigma_fn must accept an array of times and act elementwise "
                f"(use jnp functions); calling them on shape {ts.shape} raised: {err!r}"
            ) from err
        for name, v in (("alpha", a), ("sigma", s)):
            if v.shape != ts.shape:
                raise ValueError(
                    f"{name}_fn must be elementwise: on t of shape {ts.shape} it returned shape {v.shape}."
                )
            good = np.asarray(jnp.isfinite(v) & (v > 0))
            if not good.all():
                i = int(np.argmin(good))
                raise ValueError(
                    f"{name}(t) must be finite and > 0 on (t_min, t_max] = ({self.t_min_!r}, {self.t_max_!r}]; "
                    f"it is {float(v[i])!r} at t={float(ts[i])!r} (first bad time of {n + 1} checked). "
                    "Choose t_max (or t_min) inside the schedule's valid range."
                )
        f, g2, dlam = np.asarray(self.f(ts)), np.asarray(self.g2(ts)), np.asarray(self.dlam_dt(ts))
        for name, v in (("f = d log alpha/dt", f), ("g^2", g2)):
            good = np.isfinite(v)
            if not good.all():
                i = int(np.argmin(good))
                raise ValueError(
                    f"the coefficient {name} of the schedule is not finite at t={float(ts[i])!r} "
                    f"(first bad time of {n + 1} checked in (t_min, t_max]); alpha_fn and sigma_fn must "
                    "be differentiable there. Choose t_max (or t_min) inside the smooth part."
                )
        lam = np.asarray(jnp.log(a) - jnp.log(s), dtype=np.float64)
        eps = float(jnp.finfo(ts.dtype).eps)
        rises = np.diff(lam) > 8 * eps * np.maximum(1.0, np.maximum(abs(lam[1:]), abs(lam[:-1])))
        bad = ~(dlam < 0)
        bad[1:] |= rises
        if bad.any():
            i = int(np.argmax(bad))
            raise ValueError(
                "the log-SNR log(alpha/sigma) must strictly decrease in t on (t_min, t_max]; it does not "
                f"at t={float(ts[i])!r} (lambda={float(lam[i])!r}, d lambda/dt={float(dlam[i])!r}; first bad "
                f"time of {n + 1} checked). Check that sigma/alpha grows with t (noise is added as t "
                "increases)."
            )
        if self.t_of_lambda_fn is not None:  # a wrong closed-form inverse silently skews every log-SNR grid
            idx = np.linspace(0, n, 65).astype(int)
            try:
                back = np.asarray(self.t_of_lambda(jnp.asarray(lam[idx], ts.dtype)), dtype=np.float64)
            except Exception as err:
                raise ValueError(f"t_of_lambda_fn must accept an array of log-SNR values; it raised: {err!r}") from err
            tol = max(1e-6, 1e4 * eps) * (self.t_max_ - self.t_min_)
            off = ~(np.abs(back - np.asarray(ts)[idx]) <= tol)
            if back.shape != idx.shape or off.any():
                i = int(np.argmax(off)) if back.shape == idx.shape else 0
                got = float(back.reshape(-1)[i]) if back.size else float("nan")
                raise ValueError(
                    "t_of_lambda_fn must invert the log-SNR lambda(t) = log(alpha/sigma): at "
                    f"t={float(ts[idx[i]])!r}, lambda={float(lam[idx[i]])!r} it returned t={got!r} "
                    f"(tolerance {tol:.1e}). Fix its sign/convention (lambda is log alpha - log sigma, "
                    "decreasing in t) or pass t_of_lambda_fn=None to use bisection."
                )
        # The left end: excluded if anything is singular there (typically sigma(t_min) = 0).
        t0 = jnp.asarray([self.t_min_], float_dtype())
        with np.errstate(all="ignore"):
            vals = [self.alpha(t0), self.sigma(t0), self.f(t0), self.g2(t0), self.lam(t0)]
        a0, s0 = float(vals[0][0]), float(vals[1][0])
        finite = all(bool(jnp.all(jnp.isfinite(v))) for v in vals)
        return not (finite and a0 > 0 and s0 > 0)

    def valid_t_range(self) -> TimeRange:
        reason = f"the log-SNR or g^2 is not finite at t={self.t_min_!r}" if self.t_min_open else ""
        return TimeRange(self.t_min_, self.t_max_, lo_open=self.t_min_open, reason=reason)

    @property
    def t_max(self):
        return self.t_max_

    @property
    def t_min(self):
        return self.t_min_

    @property
    def default_t_end(self):
        if self.t_end_default is not None:
            return self.t_end_default
        return self.t_min_ + 1e-3 * (self.t_max_ - self.t_min_)

    def _call(self, fn, t):
        t = jnp.asarray(t, float_dtype())
        return fn(t) if self.params is None else fn(t, self.params)

    def alpha(self, t):
        return self._call(self.alpha_fn, t)

    def sigma(self, t):
        return self._call(self.sigma_fn, t)

    def t_of_lambda(self, lam):
        if self.t_of_lambda_fn is not None:
            return self._call(self.t_of_lambda_fn, lam)
        return super().t_of_lambda(lam)
