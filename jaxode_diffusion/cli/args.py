"""Argument types and comma-list parsers shared by the subcommands: the one home of them.

The ``type=`` functions raise :class:`argparse.ArgumentTypeError`, so argparse refuses a bad value
and names the flag; the ``parse_*`` functions run after parsing and raise ``ValueError`` (one line
through the CLI's error handler).
"""

from __future__ import annotations

import argparse
import math

__all__ = [
    "DATA_CHOICES",
    "data_arg",
    "finite_float",
    "int_list",
    "nonneg_int",
    "parse_int_tuple",
    "parse_names",
    "positive_float",
    "positive_int",
    "probability",
]

DATA_CHOICES = (
    "gmm, checkerboard, two_moons, rings, swiss_roll, eight_gaussians, digits, patches16, patches32, "
    "patches16-stripes, patches32-stripes or PATH.npy"
)


def int_list(value: str) -> list[int]:
    """argparse type: step counts ``"16,32,64"`` -> ``[16, 32, 64]`` (each >= 1).

    Example:
        >>> int_list("16,32,64")
        [16, 32, 64]
    """
    try:
        out = [int(v) for v in value.split(",")]
    except ValueError:
        raise argparse.ArgumentTypeError(
            f"expected comma-separated integers such as 16,32,64; got {value!r}."
        ) from None
    if not out or min(out) < 1:
        raise argparse.ArgumentTypeError(f"step counts must be integers >= 1; got {value!r}.")
    return out


def _checked(value: str, convert, ok, expected: str, must: str):
    """``convert(value)``, refused with an argparse error when it fails or ``ok`` rejects it."""
    try:
        out = convert(value)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected {expected}; got {value!r}.") from None
    if not ok(out):
        raise argparse.ArgumentTypeError(f"must be {must}; got {value!r}.")
    return out


def positive_int(value: str) -> int:
    """argparse type: an integer >= 1 (``--batch 0`` is refused by the parser, naming the flag).

    Example:
        >>> positive_int("3")
        3
    """
    return _checked(value, int, lambda v: v >= 1, "an integer >= 1", "an integer >= 1")


def nonneg_int(value: str) -> int:
    """argparse type: an integer >= 0 (for intervals, 0 means never).

    Example:
        >>> nonneg_int("0")
        0
    """
    return _checked(value, int, lambda v: v >= 0, "an integer >= 0", "an integer >= 0 (0: never)")


def positive_float(value: str) -> float:
    """argparse type: a finite number > 0.

    Example:
        >>> positive_float("1e-3")
        0.001
    """
    return _checked(value, float, lambda v: v > 0 and math.isfinite(v), "a number > 0", "a finite number > 0 (e.g. 1e-3)")


def probability(value: str) -> float:
    """argparse type: a number in ``[0, 1]``.

    Example:
        >>> probability("0.1")
        0.1
    """
    return _checked(value, float, lambda v: 0.0 <= v <= 1.0, "a probability in [0, 1]", "a probability in [0, 1] (e.g. 0.1)")


def finite_float(value: str) -> float:
    """argparse type: any finite number.

    Example:
        >>> finite_float("-2")
        -2.0
    """
    return _checked(value, float, math.isfinite, "a number", "a finite number (e.g. 2.0)")


def data_arg(value: str) -> str:
    """argparse type: a training data set name (:data:`DATA_CHOICES`) or a ``.npy`` path.

    Example:
        >>> data_arg("two_moons"), data_arg("mine.npy")
        ('two_moons', 'mine.npy')
    """
    from jaxode_diffusion.training.data import toy_names

    patches = ("patches16", "patches32", "patches16-stripes", "patches32-stripes")
    if value in ("gmm", "digits", *patches, *toy_names()) or value.endswith(".npy"):
        return value
    raise argparse.ArgumentTypeError(f"--data must be one of {DATA_CHOICES}; got {value!r}.")


def parse_int_tuple(text: str, flag: str) -> tuple:
    """``"2,4,8"`` -> ``(2, 4, 8)`` (empty items skipped).

    Raises:
        ValueError: naming ``flag``, for a non-integer item or no item at all.

    Example:
        >>> parse_int_tuple("2,4,8", "--dims")
        (2, 4, 8)
    """
    try:
        vals = tuple(int(v) for v in text.split(",") if v.strip())
    except ValueError:
        raise ValueError(f"{flag}={text!r}: give comma-separated integers, e.g. {flag} 2,4,8,16.") from None
    if not vals:
        raise ValueError(f"{flag}={text!r}: give at least one value, e.g. {flag} 2,4,8,16.")
    return vals


def parse_names(text: str) -> list[str]:
    """Comma-separated names, stripped, empty items skipped (``"rk4, heun,"`` -> ``["rk4", "heun"]``).

    Example:
        >>> parse_names("rk4, heun,")
        ['rk4', 'heun']
    """
    return [v.strip() for v in text.split(",") if v.strip()]
