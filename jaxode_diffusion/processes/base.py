"""The forward process ``x_t = alpha(t) x_0 + sigma(t) eps``: the base class and its shared checks.

Every process is an :class:`equinox.Module`, hence a JAX pytree: a parameter given as a
``jnp`` array is a traced leaf, so a sampler can be differentiated with respect to it.
Only ``alpha`` and ``sigma`` are required; ``f``, ``g2``, ``lam``, ``rho`` come from
autodiff, and ``t_of_lambda`` falls back to a jit-able monotone (bisection) solve.

Conventions::

    f(t)   = d log alpha / dt
    g2(t)  = d sigma^2 / dt - 2 f(t) sigma(t)^2
    lam(t) = log(alpha / sigma)          (log-SNR, decreasing in t)
    rho(t) = sigma / alpha = exp(-lam)

The probability-flow ODE is ``dx/dt = f x - g2 / 2 * score(x, t)``.

Besides :class:`TimeRange` and :class:`ForwardProcess`, this module holds what the other process
modules share: :class:`VariancePreserving` (a process given by ``log alpha`` alone),
:func:`float_dtype`, :func:`is_traced`, :func:`check_scalar` and :func:`check_range`. They are
public so that the sibling modules may import them, but they are not part of the package's API.
"""

from __future__ import annotations

import abc
import math
from collections.abc import Callable
from typing import TYPE_CHECKING, Any, NamedTuple

import equinox as eqx
import jax
import jax.numpy as jnp
import numpy as np

if TYPE_CHECKING:
    from jaxode_diffusion.processes.custom import CustomProcess
    from jaxode_diffusion.processes.discrete import DiscreteVP

__all__ = ["ForwardProcess", "TimeRange"]


def _scalar_vectorize(fn: Callable) -> Callable:
    """Apply a scalar->scalar function elementwise to an array of any shape."""
    return jnp.vectorize(fn)


def is_traced(tree) -> bool:
    """Whether any leaf of ``tree`` is a JAX tracer (inside ``jit``/``grad``/``vmap``): its
    values cannot be checked, only its shapes.

    Example:
        >>> import jax, jax.numpy as jnp
        >>> is_traced({"a": jnp.ones(2)}), bool(jax.jit(lambda x: is_traced(x))(1.0))
        (False, True)
    """
    return any(isinstance(leaf, jax.core.Tracer) for leaf in jax.tree_util.tree_leaves(tree))


def float_dtype():
    """The default floating dtype: float64 under ``jax_enable_x64``, else float32.

    Example:
        >>> import jax
        >>> float_dtype() == (jnp.float64 if jax.config.jax_enable_x64 else jnp.float32)
        True
    """
    return jnp.float64 if jax.config.jax_enable_x64 else jnp.float32


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
        ``equinox.error_if`` under jit). A tolerance of ``max(1e-12, eps) * max(1, |hi|)``, with
        ``eps`` the resolution of ``t``'s float type, absorbs rounding at a closed end: ``t_max=0.99``
        is ``0.9900000095`` in float32, and that is the end itself."""
        t = jnp.asarray(t) if isinstance(t, jax.Array) else np.asarray(t)
        eps = float(jnp.finfo(t.dtype).eps) if jnp.issubdtype(t.dtype, jnp.floating) else 0.0
        tol = max(1e-12, eps) * max(1.0, abs(self.hi))
        lo_ok = t > self.lo if self.lo_open else t >= self.lo - tol * max(1.0, abs(self.lo))
        hi_ok = t < self.hi if self.hi_open else t <= self.hi + tol
        return lo_ok & hi_ok


def check_scalar(owner: str, name: str, value, *, positive: bool = False, fix: str = "") -> float | None:
    """A finite real scalar parameter as a float; ``None`` if traced (checked only when concrete).

    Args:
        owner: the class or function named in the message; ``name``: the parameter's name.
        value: the value to check.
        positive: also require ``value > 0``.
        fix: a sentence appended to the finiteness/positivity messages.

    Raises:
        ValueError: naming ``owner`` and ``name`` for a non-real, non-scalar, non-finite or
            (with ``positive``) non-positive value.

    Example:
        >>> check_scalar("VE", "sigma_min", 0.01, positive=True)
        0.01
        >>> check_scalar("VE", "sigma_min", -1.0, positive=True, fix="Use 0.01.")
        Traceback (most recent call last):
        ...
        ValueError: VE: `sigma_min` must be > 0, got sigma_min=-1.0. Use 0.01.
    """
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


def check_range(name: str, t_min: float, t_max: float) -> None:
    """Check that ``t_min < t_max`` are finite real numbers (the messages name ``name``).

    Example:
        >>> check_range("VPLinear", 0.0, 1.0)
        >>> check_range("VPLinear", 1.0, 0.5)
        Traceback (most recent call last):
        ...
        ValueError: VPLinear: need finite t_min < t_max, got t_min=1.0, t_max=0.5; pass a t_max larger than t_min.
    """
    for arg, v in (("t_min", t_min), ("t_max", t_max)):
        if isinstance(v, bool) or not isinstance(v, (int, float, np.integer, np.floating)):
            raise ValueError(f"{name}: `{arg}` must be a real number, got {v!r} ({type(v).__name__}).")
    if not (math.isfinite(t_min) and math.isfinite(t_max)) or t_max <= t_min:
        raise ValueError(
            f"{name}: need finite t_min < t_max, got t_min={t_min!r}, t_max={t_max!r}; "
            "pass a t_max larger than t_min."
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
        """Smallest valid time (0 unless a subclass says otherwise)."""
        return 0.0

    @property
    @abc.abstractmethod
    def t_max(self) -> float:
        """Largest valid time."""

    @property
    def default_t_end(self) -> float:
        """Early-stopping time used when a sampler gets no ``t_end``: ``t_min + 1e-3 (t_max - t_min)``
        unless a subclass says otherwise."""
        return 1e-3 * (self.t_max - self.t_min) + self.t_min

    @property
    def default_t_start(self) -> float:
        """Time sampling starts from when a sampler gets no ``t_start``: ``t_max``."""
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
        if is_traced(t):
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
        """``log alpha(t)``; subclasses override it with a closed form where one is stabler."""
        return jnp.log(self.alpha(t))

    def log_sigma(self, t):
        """``log sigma(t)``; subclasses override it with a closed form where one is stabler."""
        return jnp.log(self.sigma(t))

    def lam(self, t):
        """log-SNR ``lambda(t) = log alpha - log sigma``."""
        return self.log_alpha(t) - self.log_sigma(t)

    def rho(self, t):
        """``rho(t) = sigma / alpha = exp(-lambda)`` (the DDIM / EDM noise level)."""
        return jnp.exp(-self.lam(t))

    def f(self, t):
        """Drift coefficient ``f(t) = d log alpha / dt`` (autodiff)."""
        return _scalar_vectorize(jax.grad(lambda s: self.log_alpha(s)))(jnp.asarray(t, float_dtype()))

    def dlog_sigma(self, t):
        """``d log sigma / dt`` (autodiff)."""
        return _scalar_vectorize(jax.grad(lambda s: self.log_sigma(s)))(jnp.asarray(t, float_dtype()))

    def g2(self, t):
        """Diffusion ``g(t)^2 = d sigma^2/dt - 2 f sigma^2 = 2 sigma^2 (dlog sigma - dlog alpha)``."""
        t = jnp.asarray(t, float_dtype())
        return 2.0 * self.sigma(t) ** 2 * (self.dlog_sigma(t) - self.f(t))

    def dlam_dt(self, t):
        """``d lambda / dt = f - d log sigma / dt`` (negative on the valid range)."""
        t = jnp.asarray(t, float_dtype())
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
        # One compiled program per process and shape: called eagerly (make_times for each new step
        # count), the loop's operations would otherwise be dispatched and compiled one by one.
        return self._bisect_t_of_lambda(jnp.asarray(lam, float_dtype()))

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
        dtype = dtype or float_dtype()
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
        from jaxode_diffusion.processes.custom import CustomProcess  # it subclasses this class

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
        from jaxode_diffusion.processes.discrete import DiscreteVP  # it subclasses this class

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
        from jaxode_diffusion.processes.discrete import DiscreteVP  # it subclasses this class

        return DiscreteVP(betas=betas)


class VariancePreserving(ForwardProcess):
    """A variance-preserving process given by its ``log_alpha``: ``alpha = exp(log alpha)`` and
    ``sigma = sqrt(1 - alpha^2)`` (VPLinear, VPCosine, DiscreteVP).

    ``sigma`` is computed as ``sqrt(-expm1(2 log alpha))``: near ``t = 0``, where ``alpha -> 1``,
    ``1 - alpha^2`` would cancel to a few (or no) digits.

    Example:
        >>> class ExpDecay(VariancePreserving):
        ...     @property
        ...     def t_max(self):
        ...         return 1.0
        ...     def log_alpha(self, t):
        ...         return -jnp.asarray(t)
        >>> p = ExpDecay()
        >>> round(float(p.alpha(0.5) ** 2 + p.sigma(0.5) ** 2), 6)
        1.0
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
