"""Bridge between :class:`~jaxode_diffusion.solvers.tableaux.ButcherTableau` and diffrax.

diffrax stores an explicit tableau of ``s`` stages as ragged rows ``a_lower`` (the rows
of stages 2..s below the diagonal), ``c`` without the leading ``c_1 = 0``, ``b_sol`` and
``b_error`` (= ``b - b_embedded``, the convention used here too), as documented for
``diffrax.ButcherTableau``. This module converts in both directions and wraps
any of our tableaux as a diffrax solver, so ``diffrax.diffeqsolve`` (adaptive steps,
``SaveAt``, events, adjoints) can run it.
"""

from __future__ import annotations

import functools
from typing import Any, ClassVar

import diffrax
import numpy as np

from jaxode_diffusion.solvers.tableaux import ButcherTableau

__all__ = [
    "diffrax_solver",
    "from_diffrax_solver",
    "from_diffrax_tableau",
    "to_diffrax_tableau",
]


def to_diffrax_tableau(tab: ButcherTableau) -> diffrax.ButcherTableau:
    """Convert a tableau to a :class:`diffrax.ButcherTableau`.

    ``a_lower = (a[1, :1], a[2, :2], ..., a[s-1, :s-1])``, ``c = c[1:]``,
    ``b_sol = b`` and ``b_error`` as stored (zeros when ``tab`` has none).

    Args:
        tab: an explicit tableau with at least 2 stages and ``sum(b) = 1``.

    Returns:
        The equivalent :class:`diffrax.ButcherTableau`.

    Raises:
        ValueError: if ``tab`` has one stage (diffrax's tableau format needs two; use
            ``diffrax.Euler()``), or its weights do not sum to 1 (diffrax requires a
            consistent method).
        TypeError: if ``tab`` is not a :class:`ButcherTableau`.

    Example:
        >>> from jaxode_diffusion.solvers import tableaux
        >>> dtab = to_diffrax_tableau(tableaux.get("rk4"))
        >>> dtab.c.tolist(), dtab.num_stages
        ([0.5, 0.5, 1.0], 4)
    """
    if not isinstance(tab, ButcherTableau):
        raise TypeError(f"to_diffrax_tableau: `tab` must be a ButcherTableau, got {type(tab)}.")
    if tab.num_stages < 2:
        raise ValueError(
            f"to_diffrax_tableau: tableau {tab.name!r} has 1 stage, but diffrax's "
            "ButcherTableau needs at least 2 (its last row of `a_lower` defines FSAL); "
            "for forward Euler use `diffrax.Euler()`."
        )
    if not np.isclose(tab.b.sum(), 1.0, rtol=0.0, atol=1e-12):
        raise ValueError(
            f"to_diffrax_tableau: tableau {tab.name!r} has sum(b) = {float(tab.b.sum())!r}, "
            "but diffrax requires a consistent method with sum(b) = 1; fix `b`."
        )
    b_error = np.zeros_like(tab.b) if tab.b_error is None else tab.b_error
    return diffrax.ButcherTableau(
        a_lower=tuple(np.array(tab.a[i, :i]) for i in range(1, tab.num_stages)),
        b_sol=np.array(tab.b),
        b_error=np.array(b_error),
        c=np.array(tab.c[1:]),
    )


def from_diffrax_tableau(dtab: diffrax.ButcherTableau, name: str | None = None) -> ButcherTableau:
    """Convert an explicit :class:`diffrax.ButcherTableau` to ours.

    An all-zero ``b_error`` (diffrax's way of saying "no error estimate") becomes
    ``None``, so ``from_diffrax_tableau(to_diffrax_tableau(t)) == t``.

    Args:
        dtab: an explicit diffrax tableau (no ``a_diagonal``).
        name: optional name for the result.

    Returns:
        The validated :class:`ButcherTableau` (its order is then computed, not assumed).

    Raises:
        ValueError: if ``dtab`` is implicit (has ``a_diagonal``) or fails validation.
        TypeError: if ``dtab`` is not a :class:`diffrax.ButcherTableau`.

    Example:
        >>> import diffrax
        >>> from_diffrax_tableau(diffrax.Bosh3.tableau, name="bosh3")
        ButcherTableau(name='bosh3', stages=4, order=3, embedded_order=2)
    """
    if not isinstance(dtab, diffrax.ButcherTableau):
        raise TypeError(
            "from_diffrax_tableau: `dtab` must be a diffrax.ButcherTableau, got "
            f"{type(dtab)}; for a solver use `from_diffrax_solver`."
        )
    if dtab.a_diagonal is not None and np.any(np.asarray(dtab.a_diagonal) != 0):
        raise ValueError(
            "from_diffrax_tableau: `dtab` is a diagonally implicit tableau (nonzero "
            "`a_diagonal`); only explicit tableaux are supported."
        )
    if dtab.c1 != 0:
        raise ValueError(
            f"from_diffrax_tableau: `dtab.c1` = {dtab.c1!r}, but an explicit tableau has c_1 = 0."
        )
    b_error = np.asarray(dtab.b_error, dtype=np.float64)
    return ButcherTableau.from_lower(
        [np.asarray(row, dtype=np.float64) for row in dtab.a_lower],
        b=np.asarray(dtab.b_sol, dtype=np.float64),
        c=np.concatenate([[0.0], np.asarray(dtab.c, dtype=np.float64)]),
        b_error=None if not np.any(b_error) else b_error,
        name=name,
    )


def from_diffrax_solver(solver: Any, name: str | None = None) -> ButcherTableau:
    """Extract the tableau of a diffrax explicit Runge--Kutta solver.

    Args:
        solver: a solver instance or class with a ``tableau`` class attribute, e.g.
            ``diffrax.Tsit5()`` or ``diffrax.Dopri5``.
        name: name for the result; default: the class name, lower-cased.

    Returns:
        The :class:`ButcherTableau`.

    Raises:
        ValueError: if the solver has no single explicit ``diffrax.ButcherTableau``
            (e.g. ``diffrax.Euler``, implicit or multi-tableau solvers).

    Example:
        >>> import diffrax
        >>> from_diffrax_solver(diffrax.Tsit5())
        ButcherTableau(name='tsit5', stages=7, order=5, embedded_order=4)
    """
    cls = solver if isinstance(solver, type) else type(solver)
    dtab = getattr(cls, "tableau", None)
    if not isinstance(dtab, diffrax.ButcherTableau):
        raise ValueError(
            f"from_diffrax_solver: {cls.__name__} has no `tableau` of type "
            f"diffrax.ButcherTableau (got {type(dtab).__name__}); pass an explicit "
            "Runge--Kutta solver such as diffrax.Tsit5()."
        )
    return from_diffrax_tableau(dtab, name=cls.__name__.lower() if name is None else name)


def _linear_interpolation(*, t0, t1, y0, y1, k=None):
    # diffrax's RK step hands `k` (the stages) to `interpolation_cls`; linear
    # interpolation between step ends does not use it.
    del k
    return diffrax.LocalLinearInterpolation(t0=t0, t1=t1, y0=y0, y1=y1)


@functools.cache
def _solver_class(tab: ButcherTableau) -> type:
    dtab = to_diffrax_tableau(tab)
    order = tab.order
    # Local order of the error estimate for an ODE: min(p, q) + 1 where p, q are the
    # orders of the main and embedded methods (see diffrax AbstractSolver.error_order).
    error_order = min(order, tab.embedded_order) + 1 if tab.has_error_estimate else None

    class TableauERK(diffrax.AbstractERK):
        tableau: ClassVar[diffrax.ButcherTableau] = dtab
        interpolation_cls: ClassVar[Any] = staticmethod(_linear_interpolation)

        def order(self, terms):
            del terms
            return order

        def error_order(self, terms):
            del terms
            return error_order

    label = "".join(ch for ch in (tab.name or "custom") if ch.isalnum() or ch == "_")
    TableauERK.__name__ = TableauERK.__qualname__ = f"TableauERK_{label}"
    return TableauERK


def diffrax_solver(tab: ButcherTableau) -> diffrax.AbstractERK:
    """A diffrax explicit Runge--Kutta solver running the tableau ``tab``.

    The solver is an instance of a :class:`diffrax.AbstractERK` subclass built for
    ``tab`` (cached per tableau, so equal tableaux share one class and one compiled
    ``diffeqsolve``). It reports ``order = tab.order`` and, when ``tab`` has
    ``b_error``, ``error_order = min(order, embedded_order) + 1``, so
    :class:`diffrax.PIDController` works with it; without ``b_error`` it has no error
    estimate and must be used with :class:`diffrax.ConstantStepSize` (a PID controller
    then raises asking for ``error_order``). Dense output is linear between step ends
    (:class:`diffrax.LocalLinearInterpolation`).

    With fixed steps it computes the same result as this package's own Runge--Kutta
    step (``solvers/runge_kutta.py``) fed the same tableau, up to rounding.

    Args:
        tab: an explicit tableau with at least 2 stages and ``sum(b) = 1``.

    Returns:
        A diffrax solver instance.

    Raises:
        ValueError: as :func:`to_diffrax_tableau`.

    Example:
        >>> import diffrax, jax.numpy as jnp
        >>> from jaxode_diffusion.solvers import tableaux
        >>> sol = diffrax.diffeqsolve(
        ...     diffrax.ODETerm(lambda t, y, args: -y), diffrax_solver(tableaux.get("rk4")),
        ...     t0=0.0, t1=1.0, dt0=0.1, y0=jnp.array(1.0),
        ... )
        >>> bool(abs(sol.ys[-1] - jnp.exp(-1.0)) < 1e-5)
        True
    """
    if not isinstance(tab, ButcherTableau):
        raise TypeError(f"diffrax_solver: `tab` must be a ButcherTableau, got {type(tab)}.")
    return _solver_class(tab)()
