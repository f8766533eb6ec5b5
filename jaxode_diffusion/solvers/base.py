"""Solver base class: the explicit-state ``init`` / ``step`` interface every sampler implements.

A solver advances the state ``y`` of an ODE form (see :mod:`jaxode_diffusion.solvers.forms`) from time
``t0`` to ``t1`` (``u0 = u(t0)`` to ``u1 = u(t1)`` in the form's variable). Before sampling, the
sampler precomputes the physical times of every evaluation point a solver asks for through
:attr:`AbstractSolver.stage_fractions` (fractions of the step in the form's variable), so the
inverse ``t(u)`` never runs inside the loop.

Multistep solvers keep their history in the state returned by :meth:`init` and threaded through
:meth:`step`; the same interface drives ``lax.scan`` in :func:`jaxode_diffusion.sample` and a
user's own Python loop.
"""

from __future__ import annotations

import abc
from typing import Any, NamedTuple

import equinox as eqx
import jax

from jaxode_diffusion.solvers.forms import AbstractForm

__all__ = ["AbstractSolver", "StepInfo"]


class StepInfo(NamedTuple):
    """Everything a step needs about where it is.

    Attributes:
        index: step number ``n`` (0-based, int32 scalar).
        t0, t1: physical times of the step's ends.
        u0, u1: the same in the form's variable.
        t_stages: ``(num_stages,)`` physical times at ``u0 + c_i (u1 - u0)`` for the solver's
            ``stage_fractions`` ``c_i``.
        num_steps: total number of steps (a Python int).

    Example:
        >>> from jaxode_diffusion import VPLinear, make_times
        >>> from jaxode_diffusion.sampling import make_plan
        >>> info = make_plan(VPLinear(), "rk4", make_times(VPLinear(), num_steps=3, grid="uniform")).step_info(0)
        >>> info.num_steps, info.t_stages.shape
        (3, (4,))
    """

    index: jax.Array
    t0: jax.Array
    t1: jax.Array
    u0: jax.Array
    u1: jax.Array
    t_stages: jax.Array
    num_steps: int


class AbstractSolver(eqx.Module):
    """Base class of all samplers.

    Subclasses set ``form`` and implement :attr:`stage_fractions`, :meth:`step`, and, when
    they carry history, :meth:`init`. ``step`` returns ``(y1, state, nfe)`` where ``nfe`` is the
    number of score evaluations it made (an int or int32 scalar).

    Example:
        >>> import jax, equinox as eqx
        >>> from jaxode_diffusion import GaussianMixture, VPLinear, sample
        >>> from jaxode_diffusion.solvers.forms import AbstractForm, get_form
        >>> class Euler(AbstractSolver):                  # explicit Euler in the x-t form
        ...     form: AbstractForm = eqx.field(static=True, default_factory=lambda: get_form("x-t"))
        ...     @property
        ...     def stage_fractions(self):
        ...         return (0.0,)
        ...     def step(self, score_fn, process, y, state, info):
        ...         dy = self.form.vector_field(score_fn, process, y, info.t_stages[0])
        ...         return y + (info.u1 - info.u0) * dy, state, 1
        >>> gm, vp = GaussianMixture.ring(4), VPLinear()
        >>> x0 = vp.prior_sample(jax.random.PRNGKey(0), (4, 2))
        >>> int(sample(gm.score_fn(vp), vp, x0, solver=Euler(), num_steps=5, return_nfe=True).nfe)
        5
    """

    form: eqx.AbstractVar[AbstractForm]

    @property
    @abc.abstractmethod
    def stage_fractions(self) -> tuple[float, ...]:
        """Fractions ``c_i`` of a step (in the form's variable) where the score is evaluated."""

    @property
    def order(self) -> int:
        """Design order of convergence."""
        return 1

    @property
    def name(self) -> str:
        """The solver's name in messages and tables (default: the class name)."""
        return type(self).__name__

    def init(self, score_fn, process, y0, t0) -> Any:
        """Initial solver state (history); ``None`` for one-step methods."""
        return None

    @abc.abstractmethod
    def step(self, score_fn, process, y, state, info: StepInfo):
        """Advance ``y`` from ``info.t0`` to ``info.t1``; return ``(y1, state, nfe)``."""
