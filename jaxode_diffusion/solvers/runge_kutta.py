"""Generic explicit Runge-Kutta step, fed by any :class:`~jaxode_diffusion.solvers.tableaux.ButcherTableau`.

In the ``x-t`` form this is the plain RK scheme; in ``x0-lambda``, ``eps-rho`` and
``ou-exp`` it is the integrating-factor (Lawson) exponential RK scheme, since those forms have
removed the linear part of the drift by a change of variables (see :mod:`jaxode_diffusion.solvers.forms`).
The stages are unrolled at trace time (the tableau is static); zero coefficients are skipped.
"""

from __future__ import annotations

import equinox as eqx

from jaxode_diffusion.solvers.forms import AbstractForm, get_form
from jaxode_diffusion.solvers.tableaux import ButcherTableau
from jaxode_diffusion.solvers.base import AbstractSolver, StepInfo

__all__ = ["RungeKutta"]


class RungeKutta(AbstractSolver):
    """Explicit RK tableau applied in an ODE form.

    Args:
        tableau: the Butcher tableau (static).
        form: the ODE form (default ``x-t``).

    Example:
        >>> from jaxode_diffusion.solvers import tableaux, forms
        >>> solver = RungeKutta(tableaux.get("rk4"), forms.get_form("x0-lambda"))
        >>> solver.order, solver.stage_fractions
        (4, (0.0, 0.5, 0.5, 1.0))
    """

    tableau: ButcherTableau = eqx.field(static=True)
    form: AbstractForm = eqx.field(static=True)

    def __init__(self, tableau: ButcherTableau, form: AbstractForm | str = "x-t"):
        if not isinstance(tableau, ButcherTableau):
            raise ValueError(f"tableau must be a ButcherTableau, got {type(tableau).__name__}.")
        self.tableau = tableau
        self.form = get_form(form)

    @property
    def stage_fractions(self):
        return tuple(float(c) for c in self.tableau.c)

    @property
    def order(self):
        return self.tableau.order

    @property
    def name(self):
        return f"{self.form.name}:{self.tableau.name or 'custom'}"

    def step(self, score_fn, process, y, state, info: StepInfo):
        tab = self.tableau
        h = (info.u1 - info.u0).astype(y.dtype)
        ks = []
        for i in range(tab.num_stages):
            yi = y
            for j in range(i):
                aij = float(tab.a[i, j])
                if aij != 0.0:
                    yi = yi + (h * aij) * ks[j]
            ks.append(self.form.vector_field(score_fn, process, yi, info.t_stages[i]))
        y1 = y
        for i in range(tab.num_stages):
            bi = float(tab.b[i])
            if bi != 0.0:
                y1 = y1 + (h * bi) * ks[i]
        return y1, state, tab.num_stages
