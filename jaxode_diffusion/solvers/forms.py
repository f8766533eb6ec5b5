"""ODE forms: which variables the probability-flow ODE is integrated in.

All forms are equivalent in exact arithmetic and differ after discretisation. Every form here
is a time-dependent rescaling of the state, ``y = x / scale(t)``, together with a change of the
time variable ``u = u(t)``; a Runge-Kutta tableau applied to ``dy/du`` in a form is the plain
scheme (``x-t``), an integrating-factor / Lawson scheme (``x0-lambda``, ``eps-rho``, ``ou-exp``)
or the canonical OU-frame scheme (``ou``).

=============  =================  ===============================  ==========================
name           time u             state y                          dy/du
=============  =================  ===============================  ==========================
``x-t``        t                  x                                f x - g^2/2 s(x, t)
``eps-rho``    rho = sigma/alpha  x / alpha                        eps_hat = -sigma s
``x0-lambda``  lambda             x / sigma                        e^lambda x0_hat = y + sigma s
``x0-snr``     tau = e^lambda     x / sigma                        x0_hat = (x + sigma^2 s) / alpha
``ou``         s = log(1+rho^2)/2 x / c,  c = sqrt(alpha^2+sigma^2) -y - c s
``ou-exp``     v = e^s = c/alpha  x / alpha  (= e^s Y)             -c s(x, t)
=============  =================  ===============================  ==========================

In the OU frame ``Y = x / c`` follows the canonical Ornstein-Uhlenbeck process
``dY = -Y ds + sqrt(2) dB`` whatever the schedule (``e^{-s} = alpha / c``), so its
probability-flow ODE is ``dY/ds = -Y - grad_Y log p``. ``ou-exp`` removes the linear part with
the integrating factor ``e^s`` (``W = e^s Y = x / alpha``) and steps in ``v = e^s``, so that
``dW/dv = -grad_Y log p = -c s``: Euler there is the exponential Euler step of the OU flow.

``x0-lambda`` is the Lawson (integrating-factor) scheme in log-SNR time (Hochbruck & Ostermann 2010):
its vector field carries the weight ``e^lambda``, which RK only approximates, so at few steps it
is less accurate than ``x0-snr``, which steps in ``e^lambda`` and integrates that weight exactly
(Euler in ``x0-snr`` and in ``eps-rho`` are both DDIM).

Euler in ``eps-rho`` is DDIM (Song et al. 2021); Euler in ``x0-snr`` is DPM-Solver++(1), which
equals DDIM too.
"""

from __future__ import annotations

import abc

import equinox as eqx
import jax.numpy as jnp

from jaxode_diffusion.processes import ForwardProcess

__all__ = ["AbstractForm", "XT", "EpsRho", "X0Lambda", "X0Snr", "OU", "OUExp", "get_form", "FORM_NAMES"]


class AbstractForm(eqx.Module):
    """A time variable ``u(t)`` and a state rescaling ``y = x / scale(t)``.

    Subclasses implement :meth:`u`, :meth:`t_of_u`, :meth:`scale` and :meth:`vector_field`;
    :meth:`to_state` and :meth:`from_state` convert between ``x`` and ``y``.

    Example:
        >>> import jax.numpy as jnp
        >>> from jaxode_diffusion import VPLinear
        >>> form, vp, x = X0Lambda(), VPLinear(), jnp.ones((2, 3))
        >>> bool(jnp.allclose(form.from_state(vp, form.to_state(vp, x, 0.5), 0.5), x))
        True
    """

    name: str = eqx.field(static=True, default="")

    @abc.abstractmethod
    def u(self, process: ForwardProcess, t):
        """The time variable the solver steps in (monotone in t)."""

    @abc.abstractmethod
    def t_of_u(self, process: ForwardProcess, u):
        """Inverse of :meth:`u`."""

    @abc.abstractmethod
    def scale(self, process: ForwardProcess, t):
        """``x = scale(t) * y``."""

    @abc.abstractmethod
    def vector_field(self, score_fn, process: ForwardProcess, y, t):
        """``dy/du`` at state ``y`` and time ``t``."""

    def to_state(self, process, x, t):
        """The form's state ``y = x / scale(t)`` (in ``x``'s dtype)."""
        return x / self.scale(process, t).astype(x.dtype)

    def from_state(self, process, y, t):
        """The sample ``x = scale(t) y`` (in ``y``'s dtype)."""
        return y * self.scale(process, t).astype(y.dtype)


def _c(a, dtype):
    return jnp.asarray(a).astype(dtype)


def _score(score_fn, x, t):
    # The state's dtype wins: a float64 score (e.g. an exact target under x64) must not promote a
    # float32 state, or the scan carry would change type.
    return jnp.asarray(score_fn(x, t)).astype(x.dtype)


class XT(AbstractForm):
    """``dx/dt = f(t) x - g(t)^2 / 2 * score(x, t)`` (the plain scheme).

    Example:
        >>> import jax.numpy as jnp
        >>> from jaxode_diffusion import VE
        >>> float(XT().vector_field(lambda x, t: -x, VE(), jnp.ones((1, 1)), 0.5)[0, 0]) > 0
        True
    """

    name: str = eqx.field(static=True, default="x-t")

    def u(self, process, t):
        return jnp.asarray(t)

    def t_of_u(self, process, u):
        return jnp.asarray(u)

    def scale(self, process, t):
        return jnp.ones_like(jnp.asarray(t))

    def vector_field(self, score_fn, process, y, t):
        f = _c(process.f(t), y.dtype)
        g2 = _c(process.g2(t), y.dtype)
        return f * y - (0.5 * g2) * _score(score_fn, y, t)


class EpsRho(AbstractForm):
    """``d(x/alpha)/drho = eps_hat(x, t)``, ``rho = sigma/alpha`` (Euler = DDIM).

    Example:
        >>> from jaxode_diffusion import EDM
        >>> float(EpsRho().u(EDM(), 2.0))  # rho = sigma = t for EDM
        2.0
    """

    name: str = eqx.field(static=True, default="eps-rho")

    def u(self, process, t):
        return process.rho(t)

    def t_of_u(self, process, u):
        return process.t_of_lambda(-jnp.log(u))

    def scale(self, process, t):
        return process.alpha(t)

    def vector_field(self, score_fn, process, y, t):
        a = _c(process.alpha(t), y.dtype)
        s = _c(process.sigma(t), y.dtype)
        return -s * _score(score_fn, a * y, t)


class X0Lambda(AbstractForm):
    """``d(x/sigma)/dlambda = e^lambda x0_hat = x/sigma + sigma s`` (integrating factor, data prediction).

    Example:
        >>> from jaxode_diffusion import VPLinear
        >>> vp = VPLinear()
        >>> round(float(X0Lambda().t_of_u(vp, X0Lambda().u(vp, 0.3))), 6)
        0.3
    """

    name: str = eqx.field(static=True, default="x0-lambda")

    def u(self, process, t):
        return process.lam(t)

    def t_of_u(self, process, u):
        return process.t_of_lambda(u)

    def scale(self, process, t):
        return process.sigma(t)

    def vector_field(self, score_fn, process, y, t):
        s = _c(process.sigma(t), y.dtype)
        return y + s * _score(score_fn, s * y, t)


def _ou_time(process, t):
    # s = log(1 + rho^2) / 2 = softplus(-2 lambda) / 2, stable for large |lambda|.
    return 0.5 * jnp.logaddexp(0.0, -2.0 * process.lam(t))


def _ou_t_of_s(process, s):
    # rho^2 = expm1(2 s)  =>  lambda = -log(expm1(2 s)) / 2.
    return process.t_of_lambda(-0.5 * jnp.log(jnp.expm1(2.0 * jnp.asarray(s))))


class OU(AbstractForm):
    """Canonical OU frame: ``Y = x/c``, ``s = log(1+rho^2)/2``, ``dY/ds = -Y - c score(cY, t)``.

    Example:
        >>> from jaxode_diffusion import VPLinear
        >>> round(float(OU().scale(VPLinear(), 0.5)), 6)  # c = sqrt(alpha^2 + sigma^2) = 1 for VP
        1.0
    """

    name: str = eqx.field(static=True, default="ou")

    def u(self, process, t):
        return _ou_time(process, t)

    def t_of_u(self, process, u):
        return _ou_t_of_s(process, u)

    def scale(self, process, t):
        return process.c(t)

    def vector_field(self, score_fn, process, y, t):
        c = _c(process.c(t), y.dtype)
        return -y - c * _score(score_fn, c * y, t)


class X0Snr(AbstractForm):
    """Data prediction with the exponential weight integrated exactly: ``z = x/sigma`` stepped in
    ``tau = e^lambda = alpha/sigma``, ``dz/dtau = x0_hat``. Euler here is DPM-Solver++(1) = DDIM.

    Example:
        >>> from jaxode_diffusion import RectifiedFlow
        >>> round(float(X0Snr().u(RectifiedFlow(), 0.25)), 6)  # alpha / sigma = 0.75 / 0.25
        3.0
    """

    name: str = eqx.field(static=True, default="x0-snr")

    def u(self, process, t):
        return jnp.exp(process.lam(t))

    def t_of_u(self, process, u):
        return process.t_of_lambda(jnp.log(u))

    def scale(self, process, t):
        return process.sigma(t)

    def vector_field(self, score_fn, process, y, t):
        s = _c(process.sigma(t), y.dtype)
        a = _c(process.alpha(t), y.dtype)
        x = s * y
        return (x + s * s * _score(score_fn, x, t)) / a


class OUExp(AbstractForm):
    """OU frame with the linear part integrated exactly: ``W = e^s Y = x/alpha`` stepped in
    ``v = e^s = c/alpha``; ``dW/dv = -c score(alpha W, t)``. Euler here is the exponential Euler
    step ``Y1 = e^{-h} Y0 + (1 - e^{-h}) (-grad log p)`` of the canonical OU flow.

    Example:
        >>> from jaxode_diffusion import EDM
        >>> round(float(OUExp().u(EDM(), 1.0)), 6)  # v = c / alpha = sqrt(1 + sigma^2)
        1.414214
    """

    name: str = eqx.field(static=True, default="ou-exp")

    def u(self, process, t):
        return process.c(t) / process.alpha(t)

    def t_of_u(self, process, u):
        # v^2 = 1 + rho^2  =>  lambda = -log(v^2 - 1) / 2
        u = jnp.asarray(u)
        return process.t_of_lambda(-0.5 * jnp.log((u - 1.0) * (u + 1.0)))

    def scale(self, process, t):
        return process.alpha(t)

    def vector_field(self, score_fn, process, y, t):
        a = _c(process.alpha(t), y.dtype)
        c = _c(process.c(t), y.dtype)
        return -c * _score(score_fn, a * y, t)


_FORMS = {"x-t": XT, "eps-rho": EpsRho, "x0-lambda": X0Lambda, "x0-snr": X0Snr, "ou": OU, "ou-exp": OUExp}
FORM_NAMES = tuple(_FORMS)


def get_form(name: str | AbstractForm) -> AbstractForm:
    """Return the form called ``name`` (one of ``FORM_NAMES``); a form instance is returned as is.

    Raises:
        ValueError: for an unknown name; the message lists :data:`FORM_NAMES`.

    Example:
        >>> type(get_form("x0-lambda")).__name__, get_form("eps-rho").name
        ('X0Lambda', 'eps-rho')
    """
    if isinstance(name, AbstractForm):
        return name
    key = str(name).lower()
    if key not in _FORMS:
        raise ValueError(f"form={name!r} is not an ODE form; choose one of {list(FORM_NAMES)}.")
    return _FORMS[key]()
