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
from typing import Any, NamedTuple

import equinox as eqx
import jax
import jax.numpy as jnp
import numpy as np

__all__ = [
    "ForwardProcess",
    "VPLinear",
    "VPCosine",
    "SubVP",
    "VE",
    "EDM",
    "RectifiedFlow",
    "CustomProcess",
    "DiscreteVP",
    "TimeRange",
    "get_process",
]


def _scalar_vectorize(fn: Callable) -> Callable:
    """Apply a scalar->scalar function elementwise to an array of any shape."""
    return jnp.vectorize(fn)


def _is_traced(tree) -> bool:
    return any(isinstance(leaf, jax.core.Tracer) for leaf in jax.tree_util.tree_leaves(tree))


class TimeRange(NamedTuple):
    """The times where a process's coefficients ``f``, ``g^2`` and ``lambda`` are finite.

    Returned by :meth:`ForwardProcess.valid_t_range`. ``lo_open`` marks an excluded left end
    (e.g. ``t = 0`` of a VP process, where ``sigma = 0`` and the log-SNR is infinite).

    Attributes:
        lo, hi: the end points (Python floats).
        lo_open, hi_open: whether the end point itself is excluded.
        reason: why an open end is excluded (used in error messages).

    Example:
        >>> from jaxode_diffusion import VPLinear
        >>> r = VPLinear().valid_t_range()
        >>> str(r), r.lo_open
        ('(0.0, 1.0]', True)
        >>> r.contains([0.0, 1e-3, 1.0]).tolist()  # NumPy in, NumPy out; jax arrays (traced too) give jax
        [False, True, True]
    """

    lo: float
    hi: float
    lo_open: bool = False
    hi_open: bool = False
    reason: str = ""

    def __str__(self) -> str:
        return f"{'(' if self.lo_open else '['}{self.lo!r}, {self.hi!r}{')' if self.hi_open else ']'}"

    def contains(self, t):
        """Elementwise membership as a boolean array; works on traced ``t`` (use it with
        ``equinox.error_if`` under jit). A tolerance of ``1e-12 * max(1, |hi|)`` absorbs rounding
        at a closed end, as :func:`~jaxode_diffusion.sampling.grids.validate_grid` does."""
        t = jnp.asarray(t) if isinstance(t, jax.Array) else np.asarray(t)
        tol = 1e-12 * max(1.0, abs(self.hi))
        lo_ok = t > self.lo if self.lo_open else t >= self.lo - tol * max(1.0, abs(self.lo))
        hi_ok = t < self.hi if self.hi_open else t <= self.hi + tol
        return lo_ok & hi_ok


def _check_scalar(owner: str, name: str, value, *, positive: bool = False, fix: str = "") -> float | None:
    """A finite real scalar parameter as a float; None if traced (checked only when concrete)."""
    if isinstance(value, jax.core.Tracer):
        return None
    arr = np.asarray(value)
    if arr.dtype == np.bool_ or not (np.issubdtype(arr.dtype, np.floating) or np.issubdtype(arr.dtype, np.integer)):
        raise ValueError(f"{owner}: `{name}` must be a real number, got {value!r} ({type(value).__name__}).")
    if arr.shape != ():
        raise ValueError(f"{owner}: `{name}` must be a scalar, got shape {arr.shape}.")
    v = float(arr)
    if not math.isfinite(v):
        raise ValueError(f"{owner}: `{name}` must be finite, got {name}={v!r}.{(' ' + fix) if fix else ''}")
    if positive and not v > 0:
        raise ValueError(f"{owner}: `{name}` must be > 0, got {name}={v!r}.{(' ' + fix) if fix else ''}")
    return v


def _check_t_end_default(owner: str, value: float, rng: TimeRange, t_max: float, arg: str = "t_end_default"):
    v = _check_scalar(owner, arg, value)
    if not (bool(rng.contains(v)) and v < t_max):
        raise ValueError(
            f"{owner}: `{arg}`={v!r} (the default early-stopping time) must lie in {rng} and below "
            f"t_max={t_max!r}, where the coefficients are finite ({rng.reason or 'the process range'}); "
            f"pass a small positive value such as {rng.lo + 1e-3 * (rng.hi - rng.lo)!r}."
        )


class ForwardProcess(eqx.Module):
    """Base class: a forward process given by ``alpha(t)`` and ``sigma(t)`` on ``[t_min, t_max]``.

    Subclasses implement :meth:`alpha` and :meth:`sigma` (elementwise in ``t``); they may
    override :meth:`log_alpha`, :meth:`log_sigma` and :meth:`t_of_lambda` with closed forms.

    Attributes:
        t_min: smallest valid time (usually 0; the data distribution).
        t_max: largest valid time (the prior end).
        default_t_end: early-stopping time ``delta > 0`` used when a sampler gets no ``t_end``.

    Example:
        >>> import math
        >>> import jax.numpy as jnp
        >>> p = ForwardProcess.from_alpha_sigma(jnp.cos, jnp.sin, t_max=1.5)
        >>> abs(float(p.lam(math.pi / 4))) < 1e-6  # log(cos/sin) vanishes at pi/4
        True
        >>> round(float(p.lam(0.5)), 4)  # log(cos(0.5) / sin(0.5)) = -log(tan(0.5))
        0.6046
        >>> p.valid_t_range()  # sigma(0) = 0: the log-SNR is infinite at t = 0
        TimeRange(lo=0.0, hi=1.5, lo_open=True, hi_open=False, reason='the log-SNR or g^2 is not finite at t=0.0')
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

    # -- where the coefficients are finite ------------------------------------------------
    def valid_t_range(self) -> TimeRange:
        """The times where ``f``, ``g^2`` and ``lambda`` are finite (a :class:`TimeRange`).

        Sampling times (``t_start``, ``t_end``, every grid point) must lie in it. The default
        is ``(t_min, t_max]``: most processes have ``sigma(t_min) = 0``, where the log-SNR is
        infinite and ``g^2`` is singular; processes whose coefficients are finite at
        ``t_min`` (VE, a discrete table) override it with a closed interval.

        Example:
            >>> from jaxode_diffusion import VE, VPLinear
            >>> str(VPLinear().valid_t_range()), str(VE().valid_t_range())
            ('(0.0, 1.0]', '[0.0, 1.0]')
        """
        return TimeRange(
            float(self.t_min), float(self.t_max), lo_open=True,
            reason=f"sigma(t)=0 at t={float(self.t_min)!r}, so the log-SNR and g^2 are singular there",
        )

    def check_times(self, t, name: str = "t") -> None:
        """Raise ``ValueError`` naming ``name`` if a concrete time (or array of times) lies
        outside :meth:`valid_t_range`; traced values are not checked (use
        ``valid_t_range().contains(t)`` with ``equinox.error_if`` for those).

        Example:
            >>> from jaxode_diffusion import VPLinear
            >>> VPLinear().check_times(1e-3, "t_end")  # fine
            >>> VPLinear().check_times(0.0, "t_end")
            Traceback (most recent call last):
            ...
            ValueError: t_end=0.0 is outside VPLinear's valid time range (0.0, 1.0] ...
        """
        if _is_traced(t):
            return
        arr = np.asarray(t, dtype=np.float64)
        rng = self.valid_t_range()
        ok = np.asarray(rng.contains(arr)) & np.isfinite(arr)
        if bool(np.all(ok)):
            return
        flat_ok, flat = ok.reshape(-1), arr.reshape(-1)
        i = int(np.argmin(flat_ok))
        bad = float(flat[i])
        where = "" if arr.ndim == 0 else f"[{i}]"
        low = math.isfinite(bad) and bad <= rng.lo
        if low:
            fix = (
                f"use {name} {'>' if rng.lo_open else '>='} {rng.lo!r}, e.g. the process's "
                f"default_t_end={self.default_t_end!r}"
            )
        elif math.isfinite(bad):
            fix = f"use {name} <= {rng.hi!r} (the process's t_max)"
        else:
            fix = f"pass finite times in {rng}"
        why = f" ({rng.reason})" if (low and rng.reason) else ""
        raise ValueError(
            f"{name}{where}={bad!r} is outside {type(self).__name__}'s valid time range {rng} where "
            f"f, g^2 and the log-SNR are finite{why}; {fix}."
        )

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
        # One compiled program per process and shape (called eagerly, e.g. by make_times for each
        # new step count, the loop and its ~30 operations were dispatched and compiled one by one:
        # ~0.95 s per new shape under the test session's flags, ~0.2 s as one program).
        return self._bisect_t_of_lambda(jnp.asarray(lam, _ftype()))

    @eqx.filter_jit
    def _bisect_t_of_lambda(self, lam):
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
        t0 = jax.lax.stop_gradient(0.5 * (lo + hi))
        # Bisection has no useful derivative (its output depends on lam only through
        # comparisons). One Newton step with a stop-gradient slope leaves the value at the root
        # but gives the implicit-function derivatives: dt/dlam = 1 / lam'(t) and, for traced
        # process parameters p, dt/dp = -(dlam/dp) / lam'(t).
        _, slope = jax.jvp(self.lam, (t0,), (jnp.ones_like(t0),))
        slope = jax.lax.stop_gradient(slope)
        newton = t0 - (self.lam(t0) - lam) / slope
        inside = (t0 > lo0) & (t0 < hi0) & jnp.isfinite(newton)
        return jnp.where(inside, newton, t0)

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

        The schedule is checked when built (unless ``params`` are traced) at 4096 interior
        times plus both ends of ``(t_min, t_max]``; the message names the first bad time.
        :meth:`valid_t_range` includes ``t_min`` only if every coefficient is finite there.

        Raises:
            ValueError: if ``t_max <= t_min``; if alpha or sigma is not positive and finite,
                or ``f``/``g^2`` not finite, somewhere on ``(t_min, t_max]``; if the log-SNR is
                not strictly decreasing there; or if ``default_t_end`` is outside the valid range.

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

    @staticmethod
    def from_alphas_cumprod(alphas_cumprod) -> DiscreteVP:
        """A discrete DDPM table of ``alphas_cumprod`` as a continuous process (see :class:`DiscreteVP`).

        Node ``n`` sits at ``t_n = (n + 1) / N``, ``log alpha`` is piecewise linear in ``t``
        between nodes, ``sigma = sqrt(1 - alpha^2)``, and the time range is ``[1/N, 1]``.

        Raises:
            ValueError: for tables that are not 1-D, have fewer than 2 entries, are not finite,
                not in ``(0, 1]`` or not strictly decreasing (the message names the entry).

        Example:
            >>> import numpy as np
            >>> ac = np.cumprod(1 - np.linspace(1e-4, 0.02, 1000))
            >>> p = ForwardProcess.from_alphas_cumprod(ac)
            >>> p.t_min, p.num_train_timesteps
            (0.001, 1000)
        """
        return DiscreteVP(alphas_cumprod)

    @staticmethod
    def from_betas(betas) -> DiscreteVP:
        """A discrete DDPM table of ``betas`` (``alphas_cumprod = cumprod(1 - betas)``) as a
        continuous process (see :class:`DiscreteVP`).

        Raises:
            ValueError: for tables that are not 1-D, have fewer than 2 entries, are not finite
                or not in ``(0, 1)``.

        Example:
            >>> import numpy as np
            >>> p = ForwardProcess.from_betas(np.linspace(1e-4, 0.02, 1000))
            >>> round(float(p.sigma(p.t_min)) ** 2, 8)  # sigma(1/N)^2 = betas[0]
            0.0001
        """
        return DiscreteVP(betas=betas)


def _ftype():
    return jnp.float64 if jax.config.jax_enable_x64 else jnp.float32


def _check_range(name: str, t_min: float, t_max: float) -> None:
    for arg, v in (("t_min", t_min), ("t_max", t_max)):
        if isinstance(v, bool) or not isinstance(v, (int, float, np.integer, np.floating)):
            raise ValueError(f"{name}: `{arg}` must be a real number, got {v!r} ({type(v).__name__}).")
    if not (math.isfinite(t_min) and math.isfinite(t_max)) or t_max <= t_min:
        raise ValueError(
            f"{name}: need finite t_min < t_max, got t_min={t_min!r}, t_max={t_max!r}; "
            "pass a t_max larger than t_min."
        )


def _check_betas(owner: str, beta_min, beta_max, t_max: float) -> None:
    # beta(t) = beta_min + (beta_max - beta_min) t must be > 0 on [0, t_max], else alpha grows
    # with t and sigma^2 = 1 - alpha^2 turns negative (NaN).
    bmin = _check_scalar(owner, "beta_min", beta_min, positive=True,
                         fix="Use a small positive rate, e.g. beta_min=0.1 (Song et al. 2021).")
    bmax = _check_scalar(owner, "beta_max", beta_max, positive=True,
                         fix="Use e.g. beta_max=20.0 (Song et al. 2021).")
    if bmin is not None and bmax is not None and bmax < bmin:
        raise ValueError(
            f"{owner}: need beta_min <= beta_max (the noise rate grows with t), got "
            f"beta_min={bmin!r} > beta_max={bmax!r}; swap the two values."
        )


def _linear_beta_log_alpha(beta_min, beta_max, t):
    # log alpha(t) = -int_0^t beta(s) ds / 2 with beta(s) = beta_min + (beta_max - beta_min) s
    # (VPLinear and SubVP share it).
    t = jnp.asarray(t)
    return -0.5 * beta_min * t - 0.25 * (beta_max - beta_min) * t**2


class _VariancePreserving(ForwardProcess):
    """A variance-preserving process given by its ``log_alpha``: ``alpha = exp(log alpha)`` and
    ``sigma = sqrt(1 - alpha^2)`` (VPLinear, VPCosine, DiscreteVP).

    ``sigma`` is computed as ``sqrt(-expm1(2 log alpha))``: near ``t = 0``, where ``alpha -> 1``,
    ``1 - alpha^2`` would cancel to a few (or no) digits.
    """

    @abc.abstractmethod
    def log_alpha(self, t):
        """``log alpha(t)``, elementwise in ``t`` (the one function a subclass gives)."""

    def alpha(self, t):
        return jnp.exp(self.log_alpha(t))

    def sigma(self, t):
        return jnp.sqrt(-jnp.expm1(2.0 * self.log_alpha(t)))

    def log_sigma(self, t):
        return 0.5 * jnp.log(-jnp.expm1(2.0 * self.log_alpha(t)))


class VPLinear(_VariancePreserving):
    """Variance-preserving process with linear beta (DDPM / Song et al. 2021 "VP SDE").

    ``log alpha(t) = -beta_min t / 2 - (beta_max - beta_min) t^2 / 4``, ``sigma = sqrt(1 - alpha^2)``.
    Valid times: ``(0, t_max]`` (``sigma(0) = 0``).

    Raises:
        ValueError: unless ``0 < beta_min <= beta_max`` (finite scalars), ``t_max > 0`` and
            ``0 < t_end_default < t_max``.

    Example:
        >>> vp = VPLinear()
        >>> round(float(vp.g2(0.5)), 6)  # beta(t) = beta_min + (beta_max - beta_min) t
        10.05
        >>> VPLinear(beta_min=0.0)
        Traceback (most recent call last):
        ...
        ValueError: VPLinear: `beta_min` must be > 0, got beta_min=0.0. ...
    """

    beta_min: Any = 0.1
    beta_max: Any = 20.0
    t_end_default: float = eqx.field(static=True, default=1e-3)
    t_max_: float = eqx.field(static=True, default=1.0)

    def __check_init__(self):
        _check_range("VPLinear", 0.0, self.t_max_)
        _check_betas("VPLinear", self.beta_min, self.beta_max, self.t_max_)
        _check_t_end_default("VPLinear", self.t_end_default, self.valid_t_range(), self.t_max_)

    @property
    def t_max(self):
        return self.t_max_

    @property
    def default_t_end(self):
        return self.t_end_default

    def log_alpha(self, t):
        return _linear_beta_log_alpha(self.beta_min, self.beta_max, t)

    def t_of_lambda(self, lam):
        # log alpha = -softplus(-2 lam) / 2, then solve the quadratic in t (DPM-Solver, App. B).
        lam = jnp.asarray(lam, _ftype())
        tmp = 0.5 * jnp.logaddexp(0.0, -2.0 * lam)  # = -log alpha >= 0
        db = self.beta_max - self.beta_min
        return 2.0 * tmp / (0.5 * self.beta_min + jnp.sqrt(0.25 * self.beta_min**2 + db * tmp))


class VPCosine(_VariancePreserving):
    """Cosine schedule (Nichol & Dhariwal 2021): ``alpha = cos((t+s)/(1+s) pi/2) / cos(s/(1+s) pi/2)``.

    ``t_max`` defaults to 0.9946 (as in DPM-Solver) so that alpha stays away from 0. Valid
    times: ``(0, t_max]``.

    Raises:
        ValueError: unless ``s > 0`` (finite) and ``0 < t_max < 1``.

    Example:
        >>> round(float(VPCosine().alpha(0.5)), 4)
        0.7027
    """

    s: Any = 0.008
    t_max_: float = eqx.field(static=True, default=0.9946)
    t_end_default: float = eqx.field(static=True, default=1e-3)

    def __check_init__(self):
        _check_range("VPCosine", 0.0, self.t_max_)
        if self.t_max_ >= 1.0:
            raise ValueError(
                f"VPCosine: `t_max_` must be < 1 (alpha(1) = 0), got t_max_={self.t_max_!r}; "
                "use the default 0.9946 (DPM-Solver's choice)."
            )
        _check_scalar("VPCosine", "s", self.s, positive=True,
                      fix="The offset s shifts the schedule away from t=0; use s=0.008 (Nichol & Dhariwal 2021).")
        _check_t_end_default("VPCosine", self.t_end_default, self.valid_t_range(), self.t_max_)

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
    """Sub-VP process (Song et al. 2021): VP-linear alpha, ``sigma = 1 - alpha^2``.

    Valid times ``(0, t_max]``; parameters checked as in :class:`VPLinear`.

    Example:
        >>> sp = SubVP()
        >>> a, s = float(sp.alpha(0.3)), float(sp.sigma(0.3))
        >>> abs(s - (1 - a**2)) < 1e-6
        True
    """

    beta_min: Any = 0.1
    beta_max: Any = 20.0
    t_max_: float = eqx.field(static=True, default=1.0)
    t_end_default: float = eqx.field(static=True, default=1e-3)

    def __check_init__(self):
        _check_range("SubVP", 0.0, self.t_max_)
        _check_betas("SubVP", self.beta_min, self.beta_max, self.t_max_)
        _check_t_end_default("SubVP", self.t_end_default, self.valid_t_range(), self.t_max_)

    @property
    def t_max(self):
        return self.t_max_

    @property
    def default_t_end(self):
        return self.t_end_default

    def log_alpha(self, t):
        return _linear_beta_log_alpha(self.beta_min, self.beta_max, t)

    def alpha(self, t):
        return jnp.exp(self.log_alpha(t))

    def sigma(self, t):
        return -jnp.expm1(2.0 * self.log_alpha(t))

    def log_sigma(self, t):
        return jnp.log(-jnp.expm1(2.0 * self.log_alpha(t)))


class VE(ForwardProcess):
    """Variance-exploding process (SMLD / NCSN++): ``alpha = 1``, ``sigma = sigma_min (sigma_max/sigma_min)^t``.

    ``sigma(0) = sigma_min > 0``, so every coefficient is finite on the closed range ``[0, 1]``
    and sampling may stop at ``t_end = 0``.

    Raises:
        ValueError: unless ``0 < sigma_min < sigma_max`` (finite scalars).

    Example:
        >>> ve = VE()
        >>> round(float(ve.sigma(0.0)), 6), round(float(ve.sigma(1.0)), 4)
        (0.01, 50.0)
        >>> VE(sigma_min=50.0, sigma_max=0.01)
        Traceback (most recent call last):
        ...
        ValueError: VE: need sigma_min < sigma_max, got sigma_min=50.0 >= sigma_max=0.01; swap the two values.
    """

    sigma_min: Any = 0.01
    sigma_max: Any = 50.0
    t_end_default: float = eqx.field(static=True, default=0.0)

    def __check_init__(self):
        lo = _check_scalar("VE", "sigma_min", self.sigma_min, positive=True,
                           fix="sigma(0) = sigma_min must be positive; use e.g. sigma_min=0.01.")
        hi = _check_scalar("VE", "sigma_max", self.sigma_max, positive=True,
                           fix="Use e.g. sigma_max=50.0.")
        if lo is not None and hi is not None and not lo < hi:
            raise ValueError(
                f"VE: need sigma_min < sigma_max, got sigma_min={lo!r} >= sigma_max={hi!r}; "
                "swap the two values."
            )
        _check_t_end_default("VE", self.t_end_default, self.valid_t_range(), 1.0)

    def valid_t_range(self) -> TimeRange:
        return TimeRange(0.0, 1.0)

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
    """EDM process (Karras et al. 2022): ``alpha = 1``, ``sigma = t`` on ``[0, sigma_max]``.

    ``sigma_min`` is the default early-stopping time; valid times are ``(0, sigma_max]``.

    Raises:
        ValueError: unless ``0 < sigma_min < sigma_max`` (finite).

    Example:
        >>> edm = EDM()
        >>> float(edm.sigma(2.0)), edm.default_t_end
        (2.0, 0.002)
    """

    sigma_max: float = eqx.field(static=True, default=80.0)
    sigma_min: float = eqx.field(static=True, default=0.002)

    def __check_init__(self):
        _check_scalar("EDM", "sigma_min", self.sigma_min, positive=True,
                      fix="sigma_min is where sampling stops (sigma = t = 0 is singular); use e.g. 0.002.")
        _check_scalar("EDM", "sigma_max", self.sigma_max, positive=True, fix="Use e.g. sigma_max=80.0.")
        if not self.sigma_min < self.sigma_max:
            raise ValueError(
                f"EDM: need sigma_min < sigma_max, got sigma_min={self.sigma_min!r} >= "
                f"sigma_max={self.sigma_max!r}; swap the two values."
            )

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
    Valid times: ``(0, t_max]``.

    Example:
        >>> round(float(RectifiedFlow().lam(0.25)), 6)  # log(0.75 / 0.25)
        1.098612
    """

    t_max_: float = eqx.field(static=True, default=0.999)
    t_end_default: float = eqx.field(static=True, default=1e-3)

    def __check_init__(self):
        _check_range("RectifiedFlow", 0.0, self.t_max_)
        if self.t_max_ >= 1.0:
            raise ValueError(
                f"RectifiedFlow: `t_max_` must be < 1 (alpha(1) = 0), got t_max_={self.t_max_!r}; "
                "use e.g. 0.999."
            )
        _check_t_end_default("RectifiedFlow", self.t_end_default, self.valid_t_range(), self.t_max_)

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
        _check_range("from_alpha_sigma", t_min, t_max)
        t_max, t_min = float(t_max), float(t_min)
        self.alpha_fn = alpha_fn
        self.sigma_fn = sigma_fn
        self.t_max_ = t_max
        self.t_min_ = t_min
        self.params = params
        self.t_of_lambda_fn = t_of_lambda_fn
        if default_t_end is not None:
            default_t_end = _check_scalar("from_alpha_sigma", "default_t_end", default_t_end)
        self.t_end_default = default_t_end
        # Until probed, assume the worst (sigma(t_min) = 0, as for most schedules).
        self.t_min_open = True
        if not _is_traced(params):
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
        ts = jnp.asarray(self.t_min_ + frac * (self.t_max_ - self.t_min_), _ftype())
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
        t0 = jnp.asarray([self.t_min_], _ftype())
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


def _table_error(name: str, msg: str) -> ValueError:
    return ValueError(f"{name}: {msg}")


def _as_table(values, name: str) -> np.ndarray:
    """A 1-D float64 NumPy copy of a concrete table, with shape/finiteness checks naming ``name``."""
    try:
        arr = np.asarray(values)
    except Exception as err:  # e.g. a ragged list
        raise _table_error(name, f"must be a 1-D array of numbers, got {values!r} ({err}).") from None
    if arr.dtype == np.bool_ or not (np.issubdtype(arr.dtype, np.floating) or np.issubdtype(arr.dtype, np.integer)):
        raise _table_error(name, f"must be a 1-D array of real numbers, got dtype {arr.dtype}.")
    arr = arr.astype(np.float64)
    if arr.ndim != 1:
        raise _table_error(name, f"must be 1-D (one entry per training step), got shape {arr.shape}.")
    if arr.shape[0] < 2:
        raise _table_error(
            name, f"needs at least 2 entries (one per training step), got {arr.shape[0]}; pass the full table."
        )
    bad = ~np.isfinite(arr)
    if bad.any():
        i = int(np.argmax(bad))
        raise _table_error(name, f"must be finite, but {name}[{i}] = {float(arr[i])!r}; replace the non-finite entry.")
    return arr


def _log_alphas_from_alphas_cumprod(values) -> np.ndarray:
    ac = _as_table(values, "alphas_cumprod")
    out = ~((ac > 0) & (ac <= 1))
    if out.any():
        i = int(np.argmax(out))
        raise _table_error(
            "alphas_cumprod",
            f"entries must lie in (0, 1], but alphas_cumprod[{i}] = {float(ac[i])!r}. "
            + (
                "A zero-terminal-SNR table (alphas_cumprod[-1] = 0) has an infinite log-SNR at t = 1: "
                "clip its last entry to a small positive value."
                if ac[i] <= 0 else
                "alphas_cumprod is the product of (1 - beta) and cannot exceed 1; check that you passed "
                "alphas_cumprod and not, e.g., sqrt(1 / alphas_cumprod)."
            ),
        )
    d = np.diff(ac)
    if not (d < 0).all():
        i = int(np.argmax(~(d < 0)))
        hint = (
            " It increases: pass it in training order (data to noise), e.g. alphas_cumprod[::-1]."
            if (d > 0).all() else " Repeated entries mean a zero beta; every beta must be > 0."
        )
        raise _table_error(
            "alphas_cumprod",
            f"must be strictly decreasing, but alphas_cumprod[{i}] = {float(ac[i])!r} and "
            f"alphas_cumprod[{i + 1}] = {float(ac[i + 1])!r}.{hint}",
        )
    return 0.5 * np.log(ac)


def _log_alphas_from_betas(values) -> np.ndarray:
    betas = _as_table(values, "betas")
    out = ~((betas > 0) & (betas < 1))
    if out.any():
        i = int(np.argmax(out))
        fix = (
            "clip the betas below 1 (the cosine table clips at 0.999)" if betas[i] >= 1
            else "every step must add noise (beta > 0)"
        )
        raise _table_error("betas", f"entries must lie in (0, 1), but betas[{i}] = {float(betas[i])!r}; {fix}.")
    # log alphas_cumprod = sum log(1 - beta): a sum of logs is exact where a product of
    # numbers near 1 would lose digits.
    return 0.5 * np.cumsum(np.log1p(-betas))


class DiscreteVP(_VariancePreserving):
    """A discrete DDPM noise table as a continuous VP process (DPM-Solver's ``"discrete"`` schedule).

    With ``N`` entries of ``alphas_cumprod``, node ``n = 0..N-1`` sits at ``t_n = (n + 1) / N``
    and ``log alpha(t_n) = 0.5 log alphas_cumprod[n]``; between nodes ``log alpha`` is linear in
    ``t`` (extended linearly by the end pieces outside ``[1/N, 1]``), and
    ``sigma = sqrt(1 - alpha^2)``. The log-SNR ``lambda = log alpha - 0.5 log(1 - alpha^2)`` is
    increasing in ``log alpha``, so its inverse is exact on each piece:
    ``log alpha = -0.5 log(1 + e^{-2 lambda})``, then invert the linear piece. The valid time
    range is ``[1/N, 1]`` (``sigma(1/N) = sqrt(1 - alphas_cumprod[0]) > 0``), the default
    early-stopping time ``1/N`` (Lu et al. 2022, DPM-Solver, App. D / ``NoiseScheduleVP``). A
    table with ``alphas_cumprod[0] = 1`` has ``sigma(1/N) = 0``: its range is ``(1/N, 1]`` and
    its default early-stopping time the second node ``2/N``.

    ``f`` and ``g^2`` (autodiff) are piecewise constant / piecewise smooth in ``t``: solvers
    stepping in ``lambda`` or ``rho`` (``x0-lambda``, ``eps-rho``, ``x0-snr``) see a smooth ODE
    and keep their order; ``x-t`` solvers do only on grids that contain the nodes.

    The table is a traced pytree leaf (``log_alphas``; new tables of the same length do not
    recompile); ``num_train_timesteps`` is static.

    Args:
        alphas_cumprod: ``(N,)`` table, in ``(0, 1]``, strictly decreasing, ``N >= 2``.
        betas: alternatively the ``(N,)`` betas, in ``(0, 1)`` (``alphas_cumprod = cumprod(1 - betas)``).

    Raises:
        ValueError: naming ``alphas_cumprod``/``betas`` and the first bad entry for tables that
            are not 1-D, shorter than 2, not finite, out of range or not decreasing.

    Example:
        >>> import numpy as np
        >>> vp = DiscreteVP.ddpm_linear()
        >>> vp.num_train_timesteps, vp.t_min, vp.t_max
        (1000, 0.001, 1.0)
        >>> ac = np.cumprod(1 - np.linspace(1e-4, 0.02, 1000))
        >>> bool(np.allclose(vp.alpha(0.5) ** 2, ac[499], rtol=1e-5))  # t = 0.5 is node n = 499
        True
        >>> round(float(vp.timestep_index(0.5)), 6)  # the network's step index N t - 1
        499.0
    """

    log_alphas: Any
    num_train_timesteps: int = eqx.field(static=True)

    def __init__(self, alphas_cumprod=None, *, betas=None):
        if (alphas_cumprod is None) == (betas is None):
            raise ValueError(
                "DiscreteVP: pass exactly one of `alphas_cumprod` or `betas` (got "
                f"{'both' if betas is not None else 'neither'})."
            )
        table, name = (alphas_cumprod, "alphas_cumprod") if betas is None else (betas, "betas")
        if _is_traced(table):
            # Built inside jit/grad: shapes are checked, values cannot be.
            table = jnp.asarray(table)
            if table.ndim != 1 or table.shape[0] < 2:
                raise _table_error(name, f"must be 1-D with at least 2 entries, got shape {table.shape}.")
            if betas is None:
                log_alphas = 0.5 * jnp.log(table)
            else:
                log_alphas = 0.5 * jnp.cumsum(jnp.log1p(-table))
            self.log_alphas = log_alphas
        else:
            la = _log_alphas_from_alphas_cumprod(table) if betas is None else _log_alphas_from_betas(table)
            dtype = _ftype()
            stored = jnp.asarray(la, dtype)
            if not bool(jnp.all(jnp.diff(stored) < 0)):
                i = int(jnp.argmax(~(jnp.diff(stored) < 0)))
                raise _table_error(
                    name,
                    f"entries {i} and {i + 1} are equal in {jnp.dtype(dtype).name} (log alpha "
                    f"{float(la[i])!r} vs {float(la[i + 1])!r}); enable float64 (jax_enable_x64) or use a table "
                    "whose entries differ.",
                )
            self.log_alphas = stored
        self.num_train_timesteps = int(self.log_alphas.shape[0])

    # -- construction from the usual tables ------------------------------------------------
    @classmethod
    def from_alphas_cumprod(cls, alphas_cumprod) -> DiscreteVP:
        """The process of a table of ``alphas_cumprod`` (``(N,)``, in ``(0, 1]``, decreasing).

        Example:
            >>> import numpy as np
            >>> p = DiscreteVP.from_alphas_cumprod(np.cumprod(1 - np.linspace(1e-4, 0.02, 10)))
            >>> p.num_train_timesteps
            10
        """
        return cls(alphas_cumprod)

    @classmethod
    def from_betas(cls, betas) -> DiscreteVP:
        """The process of a table of ``betas`` (``(N,)``, in ``(0, 1)``);
        ``alphas_cumprod = cumprod(1 - betas)``.

        Example:
            >>> import numpy as np
            >>> p = DiscreteVP.from_betas(np.linspace(1e-4, 0.02, 1000))
            >>> bool(np.allclose(p.alphas_cumprod, DiscreteVP.ddpm_linear().alphas_cumprod))
            True
        """
        return cls(betas=betas)

    @classmethod
    def ddpm_linear(cls, num_train_timesteps: int = 1000, beta_start: float = 1e-4,
                    beta_end: float = 0.02) -> DiscreteVP:
        """DDPM's linear table: ``betas = linspace(beta_start, beta_end, N)`` (Ho et al. 2020).

        Example:
            >>> round(float(DiscreteVP.ddpm_linear().alphas_cumprod[-1]), 8)
            4.036e-05
        """
        n = _check_num_train_timesteps(num_train_timesteps)
        return cls(betas=np.linspace(beta_start, beta_end, n, dtype=np.float64))

    @classmethod
    def scaled_linear(cls, num_train_timesteps: int = 1000, beta_start: float = 0.00085,
                      beta_end: float = 0.012) -> DiscreteVP:
        """Latent diffusion's "scaled_linear" table: ``betas = linspace(sqrt(beta_start),
        sqrt(beta_end), N) ** 2`` (Rombach et al. 2022; Stable Diffusion's defaults).

        Example:
            >>> round(float(DiscreteVP.scaled_linear().alphas_cumprod[-1]), 5)
            0.00466
        """
        n = _check_num_train_timesteps(num_train_timesteps)
        return cls(betas=np.linspace(math.sqrt(beta_start), math.sqrt(beta_end), n, dtype=np.float64) ** 2)

    @classmethod
    def cosine(cls, num_train_timesteps: int = 1000, s: float = 0.008, max_beta: float = 0.999) -> DiscreteVP:
        """The discrete cosine table (Nichol & Dhariwal 2021, eq. 17):
        ``abar(t) = cos((t + s)/(1 + s) pi/2)^2``, ``beta_n = min(1 - abar((n+1)/N) / abar(n/N), max_beta)``.

        Example:
            >>> p = DiscreteVP.cosine()
            >>> round(float(p.betas[-1]), 6)  # the last beta is clipped
            0.999
        """
        n = _check_num_train_timesteps(num_train_timesteps)
        _check_scalar("DiscreteVP.cosine", "s", s, positive=True, fix="use s=0.008 (Nichol & Dhariwal 2021).")
        mb = _check_scalar("DiscreteVP.cosine", "max_beta", max_beta, positive=True, fix="use 0.999.")
        if not mb < 1:
            raise ValueError(f"DiscreteVP.cosine: `max_beta` must be < 1, got max_beta={mb!r}; use 0.999.")

        def abar(t):
            return np.cos((t + s) / (1 + s) * np.pi / 2) ** 2

        i = np.arange(n, dtype=np.float64)
        betas = np.minimum(1 - abar((i + 1) / n) / abar(i / n), mb)
        return cls(betas=betas)

    # -- the table and the network's time input --------------------------------------------
    @property
    def alphas_cumprod(self):
        """The ``(N,)`` table ``alpha(t_n)^2``."""
        return jnp.exp(2.0 * self.log_alphas)

    @property
    def betas(self):
        """The ``(N,)`` betas ``1 - alphas_cumprod[n] / alphas_cumprod[n - 1]``
        (``alphas_cumprod[-1] = 1``)."""
        prev = jnp.concatenate([jnp.zeros((1,), self.log_alphas.dtype), self.log_alphas[:-1]])
        return -jnp.expm1(2.0 * (self.log_alphas - prev))

    @property
    def timesteps(self):
        """The node times ``t_n = (n + 1) / N``, ``n = 0..N-1``."""
        n = self.num_train_timesteps
        return (jnp.arange(n, dtype=self.log_alphas.dtype) + 1.0) / n

    def timestep_index(self, t):
        """The network's (continuous) step index ``N t - 1``: exactly ``n`` at ``t_n``
        (DPM-Solver's discrete convention, up to its fixed factor 1000 / N)."""
        return self.num_train_timesteps * jnp.asarray(t, self.log_alphas.dtype) - 1.0

    def t_of_timestep(self, n):
        """Inverse of :meth:`timestep_index`: ``t = (n + 1) / N``."""
        return (jnp.asarray(n, self.log_alphas.dtype) + 1.0) / self.num_train_timesteps

    # -- the process -----------------------------------------------------------------------
    @property
    def t_min(self):
        return 1.0 / self.num_train_timesteps

    @property
    def t_max(self):
        return 1.0

    @property
    def default_t_end(self):
        # The first node, unless the table starts at alphas_cumprod = 1 (sigma = 0 there):
        # then the second node.
        return (2.0 if self.valid_t_range().lo_open else 1.0) / self.num_train_timesteps

    def valid_t_range(self) -> TimeRange:
        # sigma(1/N)^2 = 1 - alphas_cumprod[0] > 0 unless the table starts at exactly 1.
        if not _is_traced(self.log_alphas) and float(self.log_alphas[0]) == 0.0:
            return TimeRange(self.t_min, 1.0, lo_open=True,
                             reason="alphas_cumprod[0] = 1, so sigma = 0 at t = 1/N")
        return TimeRange(self.t_min, 1.0)

    def log_alpha(self, t):
        la = self.log_alphas
        n = self.num_train_timesteps
        u = n * jnp.asarray(t, _ftype()) - 1.0  # continuous node index
        k = jax.lax.stop_gradient(jnp.clip(jnp.floor(u), 0, n - 2)).astype(jnp.int32)
        w = u - k
        lo, hi = la[k], la[k + 1]
        return lo + w * (hi - lo)

    def t_of_lambda(self, lam):
        # One program per table size and shape, as the default bisection (ForwardProcess.t_of_lambda).
        return self._table_t_of_lambda(jnp.asarray(lam, _ftype()))

    @eqx.filter_jit
    def _table_t_of_lambda(self, lam):
        la = self.log_alphas
        n = self.num_train_timesteps
        target = -0.5 * jnp.logaddexp(0.0, -2.0 * lam)  # log alpha with this log-SNR
        # -la is increasing: the piece [k, k+1] with -la[k] <= -target < -la[k+1].
        idx = jnp.searchsorted(-la, -target, side="right")
        k = jnp.clip(idx - 1, 0, n - 2)
        lo, hi = la[k], la[k + 1]
        return (k + 1.0 + (target - lo) / (hi - lo)) / n


def _check_num_train_timesteps(n) -> int:
    if isinstance(n, bool) or not isinstance(n, (int, np.integer)) or n < 2:
        raise ValueError(
            f"num_train_timesteps must be an integer >= 2, got {n!r}; the usual value is 1000."
        )
    return int(n)


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
    # discrete tables (N = 1000), as continuous processes on [1/N, 1]
    "ddpm": DiscreteVP.ddpm_linear,
    "ddpm_linear": DiscreteVP.ddpm_linear,
    "scaled_linear": DiscreteVP.scaled_linear,
    "discrete_cosine": DiscreteVP.cosine,
}


def get_process(name: str | ForwardProcess) -> ForwardProcess:
    """Return a built-in process by name with default parameters; a process instance is returned unchanged.

    Names: ``vp_linear``, ``vp_cosine``, ``subvp``, ``ve``, ``edm``, ``rectified_flow``, and the
    discrete tables ``ddpm_linear``, ``scaled_linear``, ``discrete_cosine`` (:class:`DiscreteVP`).

    Raises:
        ValueError: for an unknown name; the message lists the names.

    Example:
        >>> type(get_process("vp-linear")).__name__, get_process("scaled_linear").num_train_timesteps
        ('VPLinear', 1000)
    """
    if isinstance(name, ForwardProcess):
        return name
    key = str(name).lower().replace("-", "_")
    if key not in _BUILTINS:
        raise ValueError(
            f"process={name!r} is not a built-in process; choose one of {sorted(set(_BUILTINS))} "
            "or build one with ForwardProcess.from_alpha_sigma(alpha_fn, sigma_fn)."
        )
    return _BUILTINS[key]()
