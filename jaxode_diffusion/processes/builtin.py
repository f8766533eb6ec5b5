"""The built-in continuous processes: VPLinear, VPCosine, SubVP, VE, EDM, RectifiedFlow.

Each has closed forms for ``log alpha``, ``log sigma`` and the inverse log-SNR ``t_of_lambda``;
its parameters are checked when it is built (``__check_init__``; a traced parameter is checked
only for what its shape allows).
"""

from __future__ import annotations

from typing import Any

import equinox as eqx
import jax
import jax.numpy as jnp

from jaxode_diffusion.processes.base import (
    ForwardProcess,
    TimeRange,
    VariancePreserving,
    check_range,
    check_scalar,
    float_dtype,
)

__all__ = ["EDM", "RectifiedFlow", "SubVP", "VE", "VPCosine", "VPLinear"]


def _check_t_end_default(owner: str, value: float, rng: TimeRange, t_max: float, arg: str = "t_end_default"):
    v = check_scalar(owner, arg, value)
    if not (bool(rng.contains(v)) and v < t_max):
        raise ValueError(
            f"{owner}: `{arg}`={v!r} (the default early-stopping time) must lie in {rng} and below "
            f"t_max={t_max!r}, where the coefficients are finite ({rng.reason or 'the process range'}); "
            f"pass a small positive value such as {rng.lo + 1e-3 * (rng.hi - rng.lo)!r}."
        )


def _check_betas(owner: str, beta_min, beta_max, t_max: float) -> None:
    # beta(t) = beta_min + (beta_max - beta_min) t must be > 0 on [0, t_max], else alpha grows
    # with t and sigma^2 = 1 - alpha^2 turns negative (NaN).
    bmin = check_scalar(owner, "beta_min", beta_min, positive=True,
                         fix="Use a small positive rate, e.g. beta_min=0.1 (Song et al. 2021).")
    bmax = check_scalar(owner, "beta_max", beta_max, positive=True,
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


class VPLinear(VariancePreserving):
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
        check_range("VPLinear", 0.0, self.t_max_)
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
        lam = jnp.asarray(lam, float_dtype())
        tmp = 0.5 * jnp.logaddexp(0.0, -2.0 * lam)  # = -log alpha >= 0
        db = self.beta_max - self.beta_min
        return 2.0 * tmp / (0.5 * self.beta_min + jnp.sqrt(0.25 * self.beta_min**2 + db * tmp))


class VPCosine(VariancePreserving):
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
        check_range("VPCosine", 0.0, self.t_max_)
        if self.t_max_ >= 1.0:
            raise ValueError(
                f"VPCosine: `t_max_` must be < 1 (alpha(1) = 0), got t_max_={self.t_max_!r}; "
                "use the default 0.9946 (DPM-Solver's choice)."
            )
        check_scalar("VPCosine", "s", self.s, positive=True,
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
        lam = jnp.asarray(lam, float_dtype())
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
        check_range("SubVP", 0.0, self.t_max_)
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
        lo = check_scalar("VE", "sigma_min", self.sigma_min, positive=True,
                           fix="sigma(0) = sigma_min must be positive; use e.g. sigma_min=0.01.")
        hi = check_scalar("VE", "sigma_max", self.sigma_max, positive=True,
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
        return jnp.ones_like(jnp.asarray(t, float_dtype()))

    def log_alpha(self, t):
        return jnp.zeros_like(jnp.asarray(t, float_dtype()))

    def log_sigma(self, t):
        return jnp.log(self.sigma_min) + jnp.asarray(t) * jnp.log(self.sigma_max / self.sigma_min)

    def sigma(self, t):
        return jnp.exp(self.log_sigma(t))

    def t_of_lambda(self, lam):
        lam = jnp.asarray(lam, float_dtype())
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
        check_scalar("EDM", "sigma_min", self.sigma_min, positive=True,
                      fix="sigma_min is where sampling stops (sigma = t = 0 is singular); use e.g. 0.002.")
        check_scalar("EDM", "sigma_max", self.sigma_max, positive=True, fix="Use e.g. sigma_max=80.0.")
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
        return jnp.ones_like(jnp.asarray(t, float_dtype()))

    def log_alpha(self, t):
        return jnp.zeros_like(jnp.asarray(t, float_dtype()))

    def sigma(self, t):
        return jnp.asarray(t, float_dtype())

    def log_sigma(self, t):
        return jnp.log(jnp.asarray(t, float_dtype()))

    def t_of_lambda(self, lam):
        return jnp.exp(-jnp.asarray(lam, float_dtype()))


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
        check_range("RectifiedFlow", 0.0, self.t_max_)
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
        return 1.0 - jnp.asarray(t, float_dtype())

    def sigma(self, t):
        return jnp.asarray(t, float_dtype())

    def t_of_lambda(self, lam):
        return jax.nn.sigmoid(-jnp.asarray(lam, float_dtype()))
