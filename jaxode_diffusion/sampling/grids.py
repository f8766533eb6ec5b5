"""Time grids: where the steps fall.

A grid is a strictly decreasing array of ``num_steps + 1`` times from ``t_start`` to ``t_end``.
Named grids (part of the public contract):

* ``"uniform"``: uniform in ``t``;
* ``"log_snr"``: uniform in ``lambda = log(alpha/sigma)`` (DPM-Solver's choice);
* ``"edm"``: EDM's rho-power spacing in ``rho = sigma/alpha`` with exponent 7
  (Karras et al. 2022, eq. 5); ``"edm:R"`` sets the exponent to ``R``;
* ``"quadratic"``: quadratic in ``t``, denser near the data (DDIM's "quad" schedule);
* an array of ``t`` values (strictly monotone, inside the process's range).
"""

from __future__ import annotations

import math

import jax
import jax.numpy as jnp
import numpy as np

from jaxode_diffusion.processes import ForwardProcess

__all__ = ["make_grid", "GRID_NAMES", "validate_grid", "grid_is_valid", "check_num_steps"]

GRID_NAMES = ("uniform", "log_snr", "edm", "quadratic")


def _frac(num_steps, dtype):
    return jnp.linspace(0.0, 1.0, num_steps + 1, dtype=dtype)


def _parse(grid: str):
    name, _, arg = str(grid).partition(":")
    name = name.lower()
    if name not in GRID_NAMES:
        raise ValueError(
            f"grid={grid!r} is not a known grid; choose one of {list(GRID_NAMES)} "
            "('edm:R' sets the rho exponent), or pass an array of t values."
        )
    if arg and name != "edm":
        raise ValueError(f"grid={grid!r}: only 'edm' takes a parameter (e.g. 'edm:7').")
    rho = 7.0
    if arg:
        try:
            rho = float(arg)
        except ValueError:
            raise ValueError(
                f"grid={grid!r}: the EDM exponent after ':' must be a number, e.g. 'edm:7'."
            ) from None
        if not (math.isfinite(rho) and rho > 0):
            raise ValueError(f"grid={grid!r}: the EDM exponent must be finite and > 0, e.g. 'edm:7'.")
    return name, rho


def check_num_steps(num_steps, name: str = "num_steps") -> int:
    """Validate a step count: an integer (not a bool, not a float) ``>= 1``; returns it as ``int``.

    Raises:
        ValueError: naming ``name``, the value and the fix.

    Example:
        >>> check_num_steps(10)
        10
        >>> check_num_steps(True)
        Traceback (most recent call last):
        ...
        ValueError: num_steps=True is a bool, not a positive integer; pass the number of steps as an int >= 1, e.g. num_steps=10.
    """
    if isinstance(num_steps, (bool, np.bool_)):
        raise ValueError(
            f"{name}={num_steps!r} is a bool, not a positive integer; pass the number of steps as an "
            f"int >= 1, e.g. {name}=10."
        )
    if isinstance(num_steps, jax.core.Tracer):
        raise ValueError(
            f"{name} must be a static Python int (it sets the grid's shape), got a traced value; "
            "mark it static (e.g. jax.jit(..., static_argnames=...))."
        )
    if not isinstance(num_steps, (int, np.integer)):
        hint = (
            f" pass int({num_steps!r})" if isinstance(num_steps, (float, np.floating)) and float(num_steps).is_integer()
            else " pass a whole number of steps"
        )
        raise ValueError(
            f"{name} must be a positive integer (an int >= 1), got {num_steps!r} "
            f"({type(num_steps).__name__});{hint}."
        )
    if num_steps < 1:
        raise ValueError(
            f"{name} must be a positive integer (>= 1), got {name}={int(num_steps)}; take at least one step."
        )
    return int(num_steps)


def _static_float(value, name: str) -> float | None:
    if isinstance(value, jax.core.Tracer):
        return None
    arr = np.asarray(value)
    if arr.shape != () or arr.dtype == np.bool_ or not (
        np.issubdtype(arr.dtype, np.floating) or np.issubdtype(arr.dtype, np.integer)
    ):
        raise ValueError(f"{name} must be a real scalar time, got {value!r}.")
    v = float(arr)
    if not math.isfinite(v):
        raise ValueError(f"{name} must be finite, got {name}={v!r}.")
    return v


def _first_problem(a: np.ndarray, lo_ok: np.ndarray | None = None) -> str | None:
    """Description of the first non-finite or non-decreasing entry of a decreasing grid, or None."""
    bad = ~np.isfinite(a)
    if bad.any():
        i = int(np.argmax(bad))
        return f"entry {i} is {float(a[i])!r} (non-finite)"
    d = np.diff(a)
    if not (d < 0).all():
        i = int(np.argmax(~(d < 0)))
        return f"entries {i} and {i + 1} are {float(a[i])!r} and {float(a[i + 1])!r} (not strictly decreasing)"
    return None


def make_grid(grid, process: ForwardProcess, num_steps: int, t_start, t_end):
    """Times ``t_0 = t_start > t_1 > ... > t_N = t_end`` for a named grid.

    When ``t_start`` and ``t_end`` are concrete (not traced), they are checked against the
    process's :meth:`~jaxode_diffusion.processes.ForwardProcess.valid_t_range` (e.g.
    ``t_end = 0`` is refused for VP processes, whose ``g^2`` and log-SNR are singular there) and
    the grid itself is computed eagerly and checked to be finite and strictly decreasing, even
    when ``make_grid`` is called inside ``jax.jit``. With traced end points use
    :func:`grid_is_valid` (with ``equinox.error_if``) on the result.

    Args:
        grid: one of :data:`GRID_NAMES` (or ``"edm:R"``).
        process: the forward process (used for lambda and rho).
        num_steps: ``N >= 1``, an ``int`` (a ``bool`` or ``float`` is refused).
        t_start, t_end: end points, ``t_start > t_end``, inside ``process.valid_t_range()``.

    Returns:
        ``(N + 1,)`` array, float64 under ``jax_enable_x64``.

    Raises:
        ValueError: naming ``grid``, ``num_steps``, ``t_start`` or ``t_end``, for an unknown
            grid, a bad step count, end points in the wrong order or outside the valid range,
            or a grid that comes out non-finite or not strictly decreasing (e.g. ``"edm:1e-9"``).

    Example:
        >>> from jaxode_diffusion import VPLinear
        >>> make_grid("log_snr", VPLinear(), 4, 1.0, 1e-3).shape
        (5,)
        >>> make_grid("uniform", VPLinear(), 4, 1.0, 0.0)
        Traceback (most recent call last):
        ...
        ValueError: t_end=0.0 is outside VPLinear's valid time range (0.0, 1.0] ...
    """
    name, rho_exp = _parse(grid)
    num_steps = check_num_steps(num_steps)
    ts_, te_ = _static_float(t_start, "t_start"), _static_float(t_end, "t_end")
    if ts_ is not None and te_ is not None and not ts_ > te_:
        raise ValueError(
            f"t_start={ts_!r} must be larger than t_end={te_!r}: sampling runs from noise "
            "(large t) to data (small t)."
        )
    if ts_ is not None:
        process.check_times(ts_, "t_start")
    if te_ is not None:
        process.check_times(te_, "t_end")
    dtype = jnp.float64 if jax.config.jax_enable_x64 else jnp.float32
    # Concrete inputs give a concrete grid even under jit, so it can be checked here.
    with jax.ensure_compile_time_eval():
        t_start = jnp.asarray(t_start, dtype)
        t_end = jnp.asarray(t_end, dtype)
        r = _frac(num_steps, dtype)
        if name == "uniform":
            ts = t_start + r * (t_end - t_start)
        elif name == "quadratic":
            ts = t_end + (t_start - t_end) * (1.0 - r) ** 2
        elif name == "log_snr":
            l0, l1 = process.lam(t_start), process.lam(t_end)
            ts = process.t_of_lambda(l0 + r * (l1 - l0))
        else:  # edm: rho^(1/R) linear, rho = sigma/alpha
            inv = 1.0 / rho_exp
            r0, r1 = process.rho(t_start) ** inv, process.rho(t_end) ** inv
            ts = process.t_of_lambda(-rho_exp * jnp.log(r0 + r * (r1 - r0)))
        # End points exactly as asked (the inverse maps may round).
        ts = ts.at[0].set(t_start).at[-1].set(t_end)
    if not isinstance(ts, jax.core.Tracer):
        a = np.asarray(ts, dtype=np.float64)
        problem = _first_problem(a)
        if problem is not None:
            hint = (
                " The EDM exponent R is too small for these end points (rho^(1/R) overflows); "
                "use a moderate exponent such as 'edm:7'."
                if name == "edm" else ""
            )
            raise ValueError(
                f"grid={grid!r} with num_steps={num_steps}, t_start={float(a[0])!r}, "
                f"t_end={float(a[-1])!r} builds an invalid grid: {problem}.{hint} Use fewer steps, "
                "another grid, or float64 (jax_enable_x64) for very fine grids."
            )
    return ts


def grid_is_valid(ts, process: ForwardProcess):
    """Whether a decreasing grid is usable, as a boolean scalar array that works on traced grids.

    True iff every time is finite, the grid is strictly decreasing and every time lies in
    ``process.valid_t_range()``. For use under jit, where :func:`validate_grid` cannot look at
    the values, e.g. ``ts = equinox.error_if(ts, ~grid_is_valid(ts, process), "bad grid")``.

    Example:
        >>> import jax.numpy as jnp
        >>> from jaxode_diffusion import VPLinear
        >>> bool(grid_is_valid(jnp.array([1.0, 0.5, 1e-3]), VPLinear()))
        True
        >>> bool(grid_is_valid(jnp.array([1.0, 0.5, 0.0]), VPLinear()))  # t = 0 is singular
        False
    """
    ts = jnp.asarray(ts)
    if ts.ndim != 1 or ts.shape[0] < 2:
        raise ValueError(f"grid must be a 1-D array of at least 2 times, got shape {ts.shape}.")
    finite = jnp.all(jnp.isfinite(ts))
    decreasing = jnp.all(jnp.diff(ts) < 0)
    inside = jnp.all(process.valid_t_range().contains(ts))
    return finite & decreasing & inside


def validate_grid(ts, process: ForwardProcess, name: str = "grid"):
    """Check a user grid: 1-D, >= 2 points, finite, strictly monotone, inside the process's
    valid range (:meth:`~jaxode_diffusion.processes.ForwardProcess.valid_t_range`).

    Returns the grid sorted in decreasing t (sampling direction). The shape is always checked;
    the values of a traced array cannot be, so it is passed through unchanged (it must already
    be decreasing): check it with :func:`grid_is_valid` and ``equinox.error_if``.

    Raises:
        ValueError: naming ``name`` and the first bad entry.

    Example:
        >>> import jax.numpy as jnp
        >>> from jaxode_diffusion import VPLinear
        >>> validate_grid(jnp.array([0.25, 0.5, 1.0]), VPLinear()).tolist()  # sorted to decreasing
        [1.0, 0.5, 0.25]
    """
    ts = jnp.asarray(ts)
    if ts.ndim != 1 or ts.shape[0] < 2:
        raise ValueError(f"{name} must be a 1-D array of at least 2 times, got shape {ts.shape}.")
    if jnp.issubdtype(ts.dtype, jnp.integer):  # e.g. EDM sigmas [80, 10, 1]
        ts = ts.astype(jnp.float64 if jax.config.jax_enable_x64 else jnp.float32)
    if not jnp.issubdtype(ts.dtype, jnp.floating):
        raise ValueError(f"{name} must hold real times, got dtype {ts.dtype}; pass e.g. ts.astype(float).")
    if isinstance(ts, jax.core.Tracer):
        return ts
    a = np.asarray(ts, dtype=np.float64)
    if not np.all(np.isfinite(a)):
        i = int(np.argmax(~np.isfinite(a)))
        raise ValueError(f"{name} contains non-finite times: {name}[{i}] = {float(a[i])!r}; pass finite times.")
    d = np.diff(a)
    if np.all(d > 0):
        ts = ts[::-1]
        a = a[::-1]
    elif not np.all(d < 0):
        i = int(np.argmax(~(d < 0)))
        raise ValueError(
            f"{name} must be strictly monotone; entries {i} and {i + 1} are {float(a[i])!r} and {float(a[i + 1])!r}. "
            "Remove repeated times and sort the array."
        )
    rng = process.valid_t_range()
    ok = np.asarray(rng.contains(a))
    if not ok.all():
        i = int(np.argmin(ok))
        reason = f" ({rng.reason})" if rng.reason and a[i] <= rng.lo else ""
        raise ValueError(
            f"{name} must lie in the process's valid range {rng} where f, g^2 and the log-SNR are "
            f"finite{reason}; got [{float(a.min())!r}, {float(a.max())!r}] (entry {float(a[i])!r}). Move the end points inside, "
            f"e.g. end at process.default_t_end={process.default_t_end!r}."
        )
    return ts
