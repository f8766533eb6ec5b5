"""Forward (noising) processes ``x_t = alpha(t) x_0 + sigma(t) eps``.

Every process is an :class:`equinox.Module`, hence a JAX pytree: a parameter given as a
``jnp`` array is a traced leaf, so a sampler can be differentiated with respect to it.
Only ``alpha`` and ``sigma`` are required; ``f``, ``g2``, ``lam``, ``rho`` come from
autodiff, and ``t_of_lambda`` falls back to a jit-able monotone (bisection) solve.

Conventions (see ``shared/design.md``)::

    f(t)   = d log alpha / dt
    g2(t)  = d sigma^2 / dt - 2 f(t) sigma(t)^2
    lam(t) = log(alpha / sigma)          (log-SNR, decreasing in t)
    rho(t) = sigma / alpha = exp(-lam)

The probability-flow ODE is ``dx/dt = f x - g2 / 2 * score(x, t)``.
"""

from __future__ import annotations

import abc
import math
from collections.abc import Callable
from typing import Any

import equinox as eqx
import jax
import jax.numpy as jnp

__all__ = [
    "ForwardProcess",
    "VPLinear",
    "VPCosine",
    "SubVP",
    "VE",
    "EDM",
    "RectifiedFlow",
    "CustomProcess",
    "get_process",
]


def _scalar_vectorize(fn: Callable) -> Callable:
    """Apply a scalar->scalar function elementwise to an array of any shape."""
    return jnp.vectorize(fn)


class ForwardProcess(eqx.Module):
    """Base class: a forward process given by ``alpha(t)`` and ``sigma(t)`` on ``[t_min, t_max]``.

    Subclasses implement :meth:`alpha` and :meth:`sigma` (elementwise in ``t``); they may
    override :meth:`log_alpha`, :meth:`log_sigma` and :meth:`t_of_lambda` with closed forms.

    Attributes:
        t_min: smallest valid time (usually 0; the data distribution).
        t_max: largest valid time (the prior end).
        default_t_end: early-stopping time ``delta > 0`` used when a sampler gets no ``t_end``.

    Example:
        >>> import jax.numpy as jnp
        >>> p = ForwardProcess.from_alpha_sigma(lambda t: jnp.cos(t), lambda t: jnp.sin(t), t_max=1.5)
        >>> float(p.lam(0.7854)) # log(alpha/sigma) at pi/4
        0.0...
    """

    # -- required -------------------------------------------------------------------------
    @abc.abstractmethod
    def alpha(self, t):
        """Signal scale ``alpha(t)``, elementwise in ``t``."""

    @abc.abstractmethod
    def sigma(self, t):
        """Noise scale ``sigma(t)``, elementwise in ``t``."""

    @property
    def t_min(self) -> float:
        return 0.0

    @property
    @abc.abstractmethod
    def t_max(self) -> float:
        """Largest valid time."""

    @property
    def default_t_end(self) -> float:
        return 1e-3 * (self.t_max - self.t_min) + self.t_min

    @property
    def default_t_start(self) -> float:
        return self.t_max

    # -- derived --------------------------------------------------------------------------
    def log_alpha(self, t):
        return jnp.log(self.alpha(t))

    def log_sigma(self, t):
        return jnp.log(self.sigma(t))

    def lam(self, t):
        """log-SNR ``lambda(t) = log alpha - log sigma``."""
        return self.log_alpha(t) - self.log_sigma(t)

    def rho(self, t):
        """``rho(t) = sigma / alpha = exp(-lambda)`` (the DDIM / EDM noise level)."""
        return jnp.exp(-self.lam(t))

    def f(self, t):
        """Drift coefficient ``f(t) = d log alpha / dt`` (autodiff)."""
        return _scalar_vectorize(jax.grad(lambda s: self.log_alpha(s)))(jnp.asarray(t, _ftype()))

    def dlog_sigma(self, t):
        return _scalar_vectorize(jax.grad(lambda s: self.log_sigma(s)))(jnp.asarray(t, _ftype()))

    def g2(self, t):
        """Diffusion ``g(t)^2 = d sigma^2/dt - 2 f sigma^2 = 2 sigma^2 (dlog sigma - dlog alpha)``."""
        t = jnp.asarray(t, _ftype())
        return 2.0 * self.sigma(t) ** 2 * (self.dlog_sigma(t) - self.f(t))

    def dlam_dt(self, t):
        t = jnp.asarray(t, _ftype())
        return self.f(t) - self.dlog_sigma(t)

    def c(self, t):
        """Canonical scale ``c(t) = sqrt(alpha^2 + sigma^2)`` of the OU frame."""
        return jnp.sqrt(self.alpha(t) ** 2 + self.sigma(t) ** 2)

    def t_of_lambda(self, lam):
        """Inverse of :meth:`lam`: the ``t`` with ``lam(t) = lam``.

        The default is a jit-able bisection on ``[t_min, t_max]`` (lambda is decreasing in t),
        accurate to the floating-point resolution of ``t``; built-in processes override it
        with closed forms. Values outside the range are clipped to the ends.
        """
        lam = jnp.asarray(lam, _ftype())
        lo0 = jnp.full(lam.shape, self.t_min, lam.dtype)
        hi0 = jnp.full(lam.shape, self.t_max, lam.dtype)
        # 80 halvings shrink any range below float64 resolution (2^-80 ~ 1e-24 relative).
        def body(_, lohi):
            lo, hi = lohi
            mid = 0.5 * (lo + hi)
            # lambda decreasing: if lam(mid) > target, the root lies to the right.
            go_right = self.lam(mid) > lam
            return jnp.where(go_right, mid, lo), jnp.where(go_right, hi, mid)

        lo, hi = jax.lax.fori_loop(0, 80, body, (lo0, hi0))
        return 0.5 * (lo + hi)

    def marginal(self, x0, t, noise):
        """Forward-noised sample ``alpha(t) x0 + sigma(t) noise``."""
        return self.alpha(t) * x0 + self.sigma(t) * noise

    def prior_sample(self, key, shape, t=None, dtype=None):
        """Draw ``x ~ N(0, (alpha(t)^2 + sigma(t)^2) I)``, the time-``t`` marginal of unit-variance data.

        Args:
            key: PRNG key.
            shape: full shape ``(batch, *event_shape)``.
            t: time (default :attr:`default_t_start`).
        """
        t = self.default_t_start if t is None else t
        dtype = dtype or _ftype()
        return self.c(jnp.asarray(t, dtype)) * jax.random.normal(key, shape, dtype)

    # -- construction ---------------------------------------------------------------------
    @staticmethod
    def from_alpha_sigma(
        alpha_fn: Callable,
        sigma_fn: Callable,
        t_max: float = 1.0,
        t_min: float = 0.0,
        *,
        params: Any = None,
        t_of_lambda_fn: Callable | None = None,
        default_t_end: float | None = None,
    ) -> CustomProcess:
        """Build a process from any differentiable schedule.

        Args:
            alpha_fn: ``alpha(t)`` (or ``alpha(t, params)`` if ``params`` is given), elementwise.
            sigma_fn: ``sigma(t)`` (or ``sigma(t, params)``), elementwise.
            t_max: largest time; ``t_min``: smallest time (default 0).
            params: optional pytree of parameters passed to both functions; it is a traced
                leaf of the process, so gradients with respect to it flow through samplers.
            t_of_lambda_fn: optional closed-form inverse of the log-SNR; bisection otherwise.
            default_t_end: early-stopping time (default ``t_min + 1e-3 (t_max - t_min)``).

        Raises:
            ValueError: if ``t_max <= t_min``, if alpha or sigma is not positive and finite on
                ``(t_min, t_max]``, or if the log-SNR is not strictly decreasing there.

        Example:
            >>> import jax.numpy as jnp
            >>> p = ForwardProcess.from_alpha_sigma(lambda t: 1 - t, lambda t: t, t_max=0.99)
            >>> round(float(p.f(0.5)), 6)
            -2.0
        """
        return CustomProcess(
            alpha_fn,
            sigma_fn,
            t_max=t_max,
            t_min=t_min,
            params=params,
            t_of_lambda_fn=t_of_lambda_fn,
            default_t_end=default_t_end,
        )


def _ftype():
    return jnp.float64 if jax.config.jax_enable_x64 else jnp.float32


def _check_range(name: str, t_min: float, t_max: float) -> None:
    if not (math.isfinite(t_min) and math.isfinite(t_max)) or t_max <= t_min:
        raise ValueError(
            f"{name}: need finite t_min < t_max, got t_min={t_min!r}, t_max={t_max!r}; "
            "pass a t_max larger than t_min."
        )


class VPLinear(ForwardProcess):
    """Variance-preserving process with linear beta (DDPM / Song et al. 2021 "VP SDE").

    ``log alpha(t) = -beta_min t / 2 - (beta_max - beta_min) t^2 / 4``, ``sigma = sqrt(1 - alpha^2)``.
    """

    beta_min: Any = 0.1
    beta_max: Any = 20.0
    t_end_default: float = eqx.field(static=True, default=1e-3)
    t_max_: float = eqx.field(static=True, default=1.0)

    def __check_init__(self):
        _check_range("VPLinear", 0.0, self.t_max_)

    @property
    def t_max(self):
        return self.t_max_

    @property
    def default_t_end(self):
        return self.t_end_default

    def log_alpha(self, t):
        t = jnp.asarray(t)
        return -0.5 * self.beta_min * t - 0.25 * (self.beta_max - self.beta_min) * t**2

    def alpha(self, t):
        return jnp.exp(self.log_alpha(t))

    def sigma(self, t):
        return jnp.sqrt(-jnp.expm1(2.0 * self.log_alpha(t)))

    def log_sigma(self, t):
        return 0.5 * jnp.log(-jnp.expm1(2.0 * self.log_alpha(t)))

    def t_of_lambda(self, lam):
        # log alpha = -softplus(-2 lam) / 2, then solve the quadratic in t (DPM-Solver, App. B).
        lam = jnp.asarray(lam, _ftype())
        tmp = 0.5 * jnp.logaddexp(0.0, -2.0 * lam)  # = -log alpha >= 0
        db = self.beta_max - self.beta_min
        return 2.0 * tmp / (0.5 * self.beta_min + jnp.sqrt(0.25 * self.beta_min**2 + db * tmp))


class VPCosine(ForwardProcess):
    """Cosine schedule (Nichol & Dhariwal 2021): ``alpha = cos((t+s)/(1+s) pi/2) / cos(s/(1+s) pi/2)``.

    ``t_max`` defaults to 0.9946 (as in DPM-Solver) so that alpha stays away from 0.
    """

    s: Any = 0.008
    t_max_: float = eqx.field(static=True, default=0.9946)
    t_end_default: float = eqx.field(static=True, default=1e-3)

    def __check_init__(self):
        _check_range("VPCosine", 0.0, self.t_max_)
        if self.t_max_ >= 1.0:
            raise ValueError(f"VPCosine: t_max must be < 1 (alpha(1) = 0), got {self.t_max_}.")

    @property
    def t_max(self):
        return self.t_max_

    @property
    def default_t_end(self):
        return self.t_end_default

    def log_alpha(self, t):
        t = jnp.asarray(t)
        half_pi = 0.5 * jnp.pi
        return jnp.log(jnp.cos((t + self.s) / (1 + self.s) * half_pi)) - jnp.log(
            jnp.cos(self.s / (1 + self.s) * half_pi)
        )

    def alpha(self, t):
        return jnp.exp(self.log_alpha(t))

    def sigma(self, t):
        return jnp.sqrt(-jnp.expm1(2.0 * self.log_alpha(t)))

    def log_sigma(self, t):
        return 0.5 * jnp.log(-jnp.expm1(2.0 * self.log_alpha(t)))

    def t_of_lambda(self, lam):
        lam = jnp.asarray(lam, _ftype())
        log_alpha = -0.5 * jnp.logaddexp(0.0, -2.0 * lam)
        half_pi = 0.5 * jnp.pi
        t = (
            jnp.arccos(jnp.exp(log_alpha + jnp.log(jnp.cos(self.s / (1 + self.s) * half_pi))))
            / half_pi
            * (1 + self.s)
            - self.s
        )
        return t


class SubVP(ForwardProcess):
    """Sub-VP process (Song et al. 2021): VP-linear alpha, ``sigma = 1 - alpha^2``."""

    beta_min: Any = 0.1
    beta_max: Any = 20.0
    t_max_: float = eqx.field(static=True, default=1.0)
    t_end_default: float = eqx.field(static=True, default=1e-3)

    def __check_init__(self):
        _check_range("SubVP", 0.0, self.t_max_)

    @property
    def t_max(self):
        return self.t_max_

    @property
    def default_t_end(self):
        return self.t_end_default

    def log_alpha(self, t):
        t = jnp.asarray(t)
        return -0.5 * self.beta_min * t - 0.25 * (self.beta_max - self.beta_min) * t**2

    def alpha(self, t):
        return jnp.exp(self.log_alpha(t))

    def sigma(self, t):
        return -jnp.expm1(2.0 * self.log_alpha(t))

    def log_sigma(self, t):
        return jnp.log(-jnp.expm1(2.0 * self.log_alpha(t)))


class VE(ForwardProcess):
    """Variance-exploding process (SMLD / NCSN++): ``alpha = 1``, ``sigma = sigma_min (sigma_max/sigma_min)^t``."""

    sigma_min: Any = 0.01
    sigma_max: Any = 50.0
    t_end_default: float = eqx.field(static=True, default=0.0)

    @property
    def t_max(self):
        return 1.0

    @property
    def default_t_end(self):
        return self.t_end_default

    def alpha(self, t):
        return jnp.ones_like(jnp.asarray(t, _ftype()))

    def log_alpha(self, t):
        return jnp.zeros_like(jnp.asarray(t, _ftype()))

    def log_sigma(self, t):
        return jnp.log(self.sigma_min) + jnp.asarray(t) * jnp.log(self.sigma_max / self.sigma_min)

    def sigma(self, t):
        return jnp.exp(self.log_sigma(t))

    def t_of_lambda(self, lam):
        lam = jnp.asarray(lam, _ftype())
        return (-lam - jnp.log(self.sigma_min)) / jnp.log(self.sigma_max / self.sigma_min)


class EDM(ForwardProcess):
    """EDM process (Karras et al. 2022): ``alpha = 1``, ``sigma = t`` on ``[0, sigma_max]``."""

    sigma_max: float = eqx.field(static=True, default=80.0)
    sigma_min: float = eqx.field(static=True, default=0.002)

    def __check_init__(self):
        _check_range("EDM", self.sigma_min, self.sigma_max)

    @property
    def t_max(self):
        return self.sigma_max

    @property
    def default_t_end(self):
        return self.sigma_min

    def alpha(self, t):
        return jnp.ones_like(jnp.asarray(t, _ftype()))

    def log_alpha(self, t):
        return jnp.zeros_like(jnp.asarray(t, _ftype()))

    def sigma(self, t):
        return jnp.asarray(t, _ftype())

    def log_sigma(self, t):
        return jnp.log(jnp.asarray(t, _ftype()))

    def t_of_lambda(self, lam):
        return jnp.exp(-jnp.asarray(lam, _ftype()))


class RectifiedFlow(ForwardProcess):
    """Rectified flow / linear interpolation: ``alpha = 1 - t``, ``sigma = t``.

    ``t_max`` defaults to 0.999: at ``t = 1`` alpha vanishes and ``f = -1/(1-t)`` is singular.
    """

    t_max_: float = eqx.field(static=True, default=0.999)
    t_end_default: float = eqx.field(static=True, default=1e-3)

    def __check_init__(self):
        _check_range("RectifiedFlow", 0.0, self.t_max_)
        if self.t_max_ >= 1.0:
            raise ValueError(f"RectifiedFlow: t_max must be < 1 (alpha(1) = 0), got {self.t_max_}.")

    @property
    def t_max(self):
        return self.t_max_

    @property
    def default_t_end(self):
        return self.t_end_default

    def alpha(self, t):
        return 1.0 - jnp.asarray(t, _ftype())

    def sigma(self, t):
        return jnp.asarray(t, _ftype())

    def t_of_lambda(self, lam):
        return jax.nn.sigmoid(-jnp.asarray(lam, _ftype()))


class CustomProcess(ForwardProcess):
    """A process from user functions; build it with :meth:`ForwardProcess.from_alpha_sigma`."""

    alpha_fn: Callable = eqx.field(static=True)
    sigma_fn: Callable = eqx.field(static=True)
    t_max_: float = eqx.field(static=True)
    t_min_: float = eqx.field(static=True)
    params: Any
    t_of_lambda_fn: Callable | None = eqx.field(static=True)
    t_end_default: float | None = eqx.field(static=True)

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
        t_max, t_min = float(t_max), float(t_min)
        _check_range("from_alpha_sigma", t_min, t_max)
        self.alpha_fn = alpha_fn
        self.sigma_fn = sigma_fn
        self.t_max_ = t_max
        self.t_min_ = t_min
        self.params = params
        self.t_of_lambda_fn = t_of_lambda_fn
        self.t_end_default = None if default_t_end is None else float(default_t_end)
        if self.t_end_default is not None and not (t_min <= self.t_end_default < t_max):
            raise ValueError(
                f"default_t_end={default_t_end!r} must lie in [t_min, t_max) = [{t_min}, {t_max})."
            )
        self._validate()

    def _validate(self):
        # Checked eagerly on a grid of (t_min, t_max]: positivity, finiteness, decreasing SNR.
        # Skipped when params are traced (construction inside jit/grad).
        if any(isinstance(leaf, jax.core.Tracer) for leaf in jax.tree_util.tree_leaves(self.params)):
            return
        n = 64
        frac = jnp.linspace(0.0, 1.0, n + 1)[1:]
        ts = self.t_min_ + frac * (self.t_max_ - self.t_min_)
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
            if not bool(jnp.all(jnp.isfinite(v))) or not bool(jnp.all(v > 0)):
                bad = float(ts[jnp.argmax(~(jnp.isfinite(v) & (v > 0)))])
                raise ValueError(
                    f"{name}(t) must be finite and > 0 on (t_min, t_max]; it is not at t={bad:.4g}. "
                    "Choose t_max (or t_min) inside the schedule's valid range."
                )
        lam = jnp.log(a) - jnp.log(s)
        if not bool(jnp.all(jnp.diff(lam) < 0)):
            raise ValueError(
                "the log-SNR log(alpha/sigma) must strictly decrease in t on (t_min, t_max]; "
                "check that sigma/alpha grows with t (noise is added as t increases)."
            )

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
        t = jnp.asarray(t, _ftype())
        return fn(t) if self.params is None else fn(t, self.params)

    def alpha(self, t):
        return self._call(self.alpha_fn, t)

    def sigma(self, t):
        return self._call(self.sigma_fn, t)

    def t_of_lambda(self, lam):
        if self.t_of_lambda_fn is not None:
            return self._call(self.t_of_lambda_fn, lam)
        return super().t_of_lambda(lam)


_BUILTINS = {
    "vp": VPLinear,
    "vp_linear": VPLinear,
    "vp_cosine": VPCosine,
    "cosine": VPCosine,
    "subvp": SubVP,
    "sub_vp": SubVP,
    "ve": VE,
    "edm": EDM,
    "rectified_flow": RectifiedFlow,
    "rf": RectifiedFlow,
}


def get_process(name: str | ForwardProcess) -> ForwardProcess:
    """Return a built-in process by name (``vp_linear``, ``vp_cosine``, ``subvp``, ``ve``, ``edm``,
    ``rectified_flow``) with default parameters; a process instance is returned unchanged."""
    if isinstance(name, ForwardProcess):
        return name
    key = str(name).lower().replace("-", "_")
    if key not in _BUILTINS:
        raise ValueError(
            f"process={name!r} is not a built-in process; choose one of {sorted(set(_BUILTINS))} "
            "or build one with ForwardProcess.from_alpha_sigma(alpha_fn, sigma_fn)."
        )
    return _BUILTINS[key]()
