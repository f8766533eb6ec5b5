"""Argument checks shared by the sampling and analysis entry points: one home for each kind.

Each check raises ``ValueError`` (the package's one error type for a bad argument) whose message
names the argument, the value it got and, where there is one, the fix. Callers that prefix
their messages with the function's name (``"log_likelihood: ..."``) pass ``prefix``. The checks
only read shapes, dtypes and Python values, so they are free under ``jax.jit`` tracing, except
:func:`check_times_in_range`, :func:`nonfinite_rows` and :func:`check_finite_score`, which read
concrete values and are meant for eager calls.

This module imports nothing from the rest of the package (it is the bottom layer): a check that
needs a class (:func:`check_instance`) or a process (:func:`check_times_in_range`) is given it.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np

__all__ = [
    "check_batch",
    "check_bool",
    "check_callable",
    "check_finite_score",
    "check_float_batch",
    "check_instance",
    "check_int",
    "check_per_sample",
    "check_times_in_range",
    "nonfinite_rows",
]


def check_instance(value: Any, cls: type, name: str, *, example: str = "", prefix: str = "") -> None:
    """Refuse ``value`` unless it is an instance of ``cls``.

    Args:
        value: the argument.
        cls: the class it must be an instance of.
        name: the argument's name, for the message.
        example: text put after the class name, e.g. ``" (e.g. VPLinear())"``.
        prefix: text put before the message, e.g. ``"log_likelihood: "``.

    Raises:
        ValueError: ``"{prefix}{name} must be a {cls}{example}; got {type}."``

    Example:
        >>> check_instance(3, str, "label")
        Traceback (most recent call last):
        ...
        ValueError: label must be a str; got int.
    """
    if not isinstance(value, cls):
        raise ValueError(f"{prefix}{name} must be a {cls.__name__}{example}; got {type(value).__name__}.")


def check_callable(
    fn: Any, name: str = "score_fn", *, signature: str | None = None, prefix: str = ""
) -> None:
    """Refuse ``fn`` unless it is callable.

    Args:
        fn: the argument.
        name: its name.
        signature: how it is called, for the message (default ``"{name}(x, t)"``).
        prefix: text put before the message.

    Raises:
        ValueError: ``"{prefix}{name} must be callable {signature}; got {type}."``

    Example:
        >>> check_callable(lambda x, t: -x)  # fine
        >>> check_callable(3.0)
        Traceback (most recent call last):
        ...
        ValueError: score_fn must be callable score_fn(x, t); got float.
    """
    if not callable(fn):
        signature = f"{name}(x, t)" if signature is None else signature
        raise ValueError(f"{prefix}{name} must be callable {signature}; got {type(fn).__name__}.")


def check_bool(value: Any, name: str, *, prefix: str = "") -> bool:
    """``value`` as a ``bool`` if it is ``True`` or ``False`` (NumPy bools included).

    A truthy string or ``1`` is refused: ``throw="no"`` would otherwise mean ``True``.

    Raises:
        ValueError: ``"{prefix}{name} must be True or False; got {value!r}."``

    Example:
        >>> check_bool(True, "remat")
        True
        >>> check_bool("no", "throw")
        Traceback (most recent call last):
        ...
        ValueError: throw must be True or False; got 'no'.
    """
    if not isinstance(value, bool | np.bool_):
        raise ValueError(f"{prefix}{name} must be True or False; got {value!r}.")
    return bool(value)


def check_int(
    value: Any,
    name: str,
    *,
    minimum: int = 1,
    expected: str | None = None,
    hint: str = "",
    prefix: str = "",
    whole_numbers: bool = False,
) -> int:
    """``value`` as an ``int`` if it is an integer ``>= minimum``; bools are always refused.

    Args:
        value: the argument.
        name: its name.
        minimum: the smallest allowed value.
        expected: what the value must be, for the message (default ``"an int >= {minimum}"``).
        hint: text put after ``expected``, e.g. ``" (16 is a good start)"``.
        prefix: text put before the message.
        whole_numbers: also accept anything equal to its ``int()`` (``4.0``, a 0-d array);
            otherwise only Python and NumPy integers pass.

    Returns:
        ``int(value)``.

    Raises:
        ValueError: ``"{prefix}{name}={value!r} must be {expected}{hint}."``

    Example:
        >>> check_int(16, "num_probes")
        16
        >>> check_int(4.0, "batch_size", whole_numbers=True)
        4
        >>> check_int(1, "num_levels", minimum=2, hint=" (256 for 8-bit data)")
        Traceback (most recent call last):
        ...
        ValueError: num_levels=1 must be an int >= 2 (256 for 8-bit data).
    """
    if isinstance(value, bool):
        ok = False
    elif whole_numbers:
        try:
            ok = bool(int(value) == value) and value >= minimum
        except (TypeError, ValueError, OverflowError):
            ok = False
    else:
        ok = isinstance(value, int | np.integer) and value >= minimum
    if not ok:
        expected = f"an int >= {minimum}" if expected is None else expected
        raise ValueError(f"{prefix}{name}={value!r} must be {expected}{hint}.")
    return int(value)


def check_batch(x: Any, name: str = "x_init") -> jax.Array:
    """``x`` as a JAX array if it is a floating-point batch ``(B, *event_shape)`` with ``B >= 1``.

    Each problem has its own message: too few dimensions, an empty batch, a non-float dtype.
    :func:`check_float_batch` is the one-message variant (and lets ``B = 0`` through).

    Raises:
        ValueError: naming ``name``, the shape or dtype, and the fix.

    Example:
        >>> check_batch([[0.0, 1.0]]).shape
        (1, 2)
        >>> check_batch(jnp.ones(3))
        Traceback (most recent call last):
        ...
        ValueError: x_init must be a batch of shape (B, *event_shape) with B >= 1; got shape (3,). For one sample use x[None].
    """
    x = jnp.asarray(x)
    if x.ndim < 2:
        raise ValueError(
            f"{name} must be a batch of shape (B, *event_shape) with B >= 1; got shape {x.shape}. "
            "For one sample use x[None]."
        )
    if x.shape[0] == 0:
        raise ValueError(f"{name} has batch size 0: pass at least one initial state.")
    if not jnp.issubdtype(x.dtype, jnp.floating):
        raise ValueError(
            f"{name} must be a floating-point array, got dtype {x.dtype}; e.g. {name}.astype(jnp.float32)."
        )
    return x


def check_float_batch(x: Any, name: str, *, prefix: str = "", item: str = "sample") -> jax.Array:
    """``x`` as a JAX array if it is a floating-point batch ``(B, *event_shape)``.

    Args:
        x: the argument.
        name: its name.
        prefix: text put before the message.
        item: what one row is, for the hint (``"For one {item} use x[None]."``).

    Raises:
        ValueError: ``"{prefix}{name} must be a floating-point batch (B, *event_shape); got shape
            ... and dtype .... For one {item} use x[None]."``

    Example:
        >>> check_float_batch(jnp.zeros((4, 2)), "x").dtype.kind
        'f'
        >>> check_float_batch(jnp.zeros((2, 1), jnp.int32), "x", prefix="log_likelihood: ", item="point")
        Traceback (most recent call last):
        ...
        ValueError: log_likelihood: x must be a floating-point batch (B, *event_shape); got shape (2, 1) and dtype int32. For one point use x[None].
    """
    x = jnp.asarray(x)
    if x.ndim < 2 or not jnp.issubdtype(x.dtype, jnp.floating):
        raise ValueError(
            f"{prefix}{name} must be a floating-point batch (B, *event_shape); got shape {x.shape} and "
            f"dtype {x.dtype}. For one {item} use x[None]."
        )
    return x


def check_per_sample(values: Any, x: Any, name: str, *, prefix: str = "") -> jax.Array:
    """``values`` (what a user callable returned for the batch ``x``) if it has shape ``(B,)``.

    For callables that return one number per sample, such as a log-density of a batch.

    Raises:
        ValueError: ``"{prefix}{name} must map a batch of shape {x.shape} to shape (B,); got shape ..."``

    Example:
        >>> x = jnp.zeros((3, 2))
        >>> check_per_sample(jnp.sum(x, axis=1), x, "log_prob").shape
        (3,)
        >>> check_per_sample(x, x, "log_prob")
        Traceback (most recent call last):
        ...
        ValueError: log_prob must map a batch of shape (3, 2) to shape (3,); got shape (3, 2).
    """
    values = jnp.asarray(values)
    if values.shape != (x.shape[0],):
        raise ValueError(
            f"{prefix}{name} must map a batch of shape {x.shape} to shape ({x.shape[0]},); "
            f"got shape {values.shape}."
        )
    return values


def check_times_in_range(process: Any, times: Sequence[float], subject: str, tail: str) -> None:
    """Refuse concrete ``times`` outside ``process.valid_t_range()`` (where its coefficients are finite).

    Args:
        process: a :class:`~jaxode_diffusion.processes.ForwardProcess`.
        times: the times to check (e.g. a grid's smallest and largest).
        subject: what is checked, starting the message (``"ts"``, ``"t_start=1.0 and t_end=0.0"``).
        tail: the message's end: the values or a fix.

    Raises:
        ValueError: ``"{subject} must lie in {range}, where the process's coefficients are
            finite ({reason}); {tail}."``

    Example:
        >>> from jaxode_diffusion import VPLinear
        >>> check_times_in_range(VPLinear(), [1e-3, 1.0], "ts", "got [0.001, 1.0]")  # fine
        >>> check_times_in_range(VPLinear(), [0.0, 1.0], "ts", "got [0.0, 1.0]")  # doctest: +ELLIPSIS
        Traceback (most recent call last):
        ...
        ValueError: ts must lie in (0.0, 1.0], where the process's coefficients are finite (sigma(t)=0 at t=0.0, ...); got [0.0, 1.0].
    """
    rng = process.valid_t_range()
    if not bool(np.all(np.asarray(rng.contains(np.asarray(times))))):  # in the times' own precision
        why = f" ({rng.reason})" if rng.reason else ""
        raise ValueError(
            f"{subject} must lie in {rng}, where the process's coefficients are finite{why}; {tail}."
        )


def nonfinite_rows(*arrays: Any) -> np.ndarray:
    """``(B,)`` bool: which batch elements hold a NaN or inf in any of ``arrays`` (each ``(B, ...)``).

    Reads the values (a host transfer): for eager checks that name the first bad element, as in
    ``int(np.argmax(bad))``.

    Example:
        >>> x = np.array([[0.0, 1.0], [np.nan, 1.0], [0.0, np.inf]])
        >>> nonfinite_rows(x).tolist()
        [False, True, True]
        >>> nonfinite_rows(x[:, :1], np.array([0.0, 0.0, -np.inf])).tolist()
        [False, True, True]
    """
    bad = None
    for a in arrays:
        a = np.asarray(a, dtype=np.float64)
        rows = ~np.isfinite(a.reshape(a.shape[0], -1)).all(axis=1)
        bad = rows if bad is None else bad | rows
    return bad


def check_finite_score(score_fn: Any, x: Any, t: float, *, name: str = "x", prefix: str = "") -> None:
    """Refuse NaN/inf rows of the batch ``x``, then a score that is NaN/inf at ``(x, t)``.

    For entry points that do expensive work (reference solves, searches over steps or budgets)
    whose failure would otherwise read as "too few steps": call it first, with ``t`` the time the
    batch starts at. One score evaluation on the batch.

    Raises:
        ValueError: ``"{prefix}{name} holds NaN/inf values: row i first ..."`` (bad input), or
            ``"{prefix}score_fn returned NaN/inf at t=...: row i of {name} first ..."`` (bad score).

    Example:
        >>> x = jnp.ones((3, 2))
        >>> check_finite_score(lambda x, t: -x, x, 1.0)  # fine
        >>> check_finite_score(lambda x, t: -x, x.at[2, 0].set(jnp.nan), 1.0, name="calib_x_init")
        Traceback (most recent call last):
        ...
        ValueError: calib_x_init holds NaN/inf values: row 2 first (1 of 3 rows); this is bad input, not a score or step-count problem: drop or redraw those rows.
    """
    bad = nonfinite_rows(x)
    if bad.any():
        raise ValueError(
            f"{prefix}{name} holds NaN/inf values: row {int(np.argmax(bad))} first ({int(bad.sum())} of "
            f"{bad.shape[0]} rows); this is bad input, not a score or step-count problem: drop or redraw those rows."
        )
    x = jnp.asarray(x)
    out = score_fn(x, jnp.asarray(t, x.dtype))
    bad = nonfinite_rows(out)
    if bad.any():
        raise ValueError(
            f"{prefix}score_fn returned NaN/inf at t={float(t)!r}: row {int(np.argmax(bad))} of {name} first "
            f"({int(bad.sum())} of {bad.shape[0]} rows), although {name} is finite; fix the score (more "
            "steps or a larger budget cannot help)."
        )
