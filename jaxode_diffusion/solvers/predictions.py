"""Model predictions of the exponential family: what the network output is turned into (x0_hat or
eps_hat) and the closed-form linear part of the exponential integrator in each form.

Shared by :mod:`~jaxode_diffusion.solvers.exponential`, :mod:`~jaxode_diffusion.solvers.multistep`
and :mod:`~jaxode_diffusion.solvers.adaptive`; imports nothing above the solver layer.
"""

from __future__ import annotations

from dataclasses import dataclass

import jax.numpy as jnp

from jaxode_diffusion.solvers.forms import AbstractForm, get_form
from jaxode_diffusion.processes.parameterizations import tweedie_x0
from jaxode_diffusion.processes import ForwardProcess
from jaxode_diffusion.solvers.phi import phis

__all__ = ["Prediction", "PREDICTIONS", "check_form"]


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

    Example:
        >>> import jax.numpy as jnp
        >>> data = PREDICTIONS["data"]
        >>> h = jnp.asarray(0.1)
        >>> data.form.name, float(data.linear(h)), round(float(data.moments(h, 1)[0]), 6)  # h phi_1(-h)
        ('x0-lambda', 1.0, 0.095163)
    """

    name: str
    form_name: str
    sign: int

    @property
    def form(self) -> AbstractForm:
        """The ODE form this prediction is integrated in."""
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
            return tweedie_x0(x, score(x), alp, sig)
        if self.name == "noise":
            return -sig * score(sig * y)
        return -sig * score(alp * y)

    def linear(self, h):
        """The exact linear propagator ``L(h)`` (``e^h`` for ``noise``, else 1)."""
        return jnp.exp(h) if self.name == "noise" else jnp.ones_like(h)

    def prefactor(self, u):
        """The prefactor ``P(u)`` of the model term: ``e^u`` (data), ``-1`` (noise), ``1`` (rho)."""
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


def check_form(name: str, form_name: str | None, own: str) -> None:
    """Raise ``ValueError`` unless ``form_name`` is ``None`` or the solver's own form ``own``.

    Example:
        >>> check_form("dpmpp_2m", "x0-lambda", "x0-lambda")
        >>> check_form("dpmpp_2m", "x-t", "x0-lambda")
        Traceback (most recent call last):
        ...
        ValueError: solver 'dpmpp_2m' integrates in the 'x0-lambda' form; got form 'x-t'. ...
    """
    if form_name is not None and form_name.lower() != own:
        raise ValueError(
            f"solver {name!r} integrates in the {own!r} form; got form {form_name!r}. "
            f"Write solver={name!r} or solver='{own}:{name}'."
        )
