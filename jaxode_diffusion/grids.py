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

import jax
import jax.numpy as jnp
import numpy as np

from .processes import ForwardProcess

__all__ = ["make_grid", "GRID_NAMES", "validate_grid"]

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
            raise ValueError(f"grid={grid!r}: the EDM exponent after ':' must be a number.") from None
        if rho <= 0:
            raise ValueError(f"grid={grid!r}: the EDM exponent must be > 0.")
    return name, rho


def make_grid(grid, process: ForwardProcess, num_steps: int, t_start, t_end):
    """Times ``t_0 = t_start > t_1 > ... > t_N = t_end`` for a named grid.

    Args:
        grid: one of :data:`GRID_NAMES` (or ``"edm:R"``).
        process: the forward process (used for lambda and rho).
        num_steps: ``N >= 1``.
        t_start, t_end: end points, ``t_start > t_end``.

    Returns:
        ``(N + 1,)`` array, float64 under ``jax_enable_x64``.

    Example:
        >>> from jaxode_diffusion import VPLinear
        >>> make_grid("log_snr", VPLinear(), 4, 1.0, 1e-3).shape
        (5,)
    """
    name, rho_exp = _parse(grid)
    if int(num_steps) != num_steps or num_steps < 1:
        raise ValueError(f"num_steps must be a positive integer, got {num_steps!r}.")
    dtype = jnp.float64 if jax.config.jax_enable_x64 else jnp.float32
    t_start = jnp.asarray(t_start, dtype)
    t_end = jnp.asarray(t_end, dtype)
    r = _frac(int(num_steps), dtype)
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
    return ts.at[0].set(t_start).at[-1].set(t_end)


def validate_grid(ts, process: ForwardProcess, name: str = "grid"):
    """Check a user grid: 1-D, >= 2 points, finite, strictly monotone, inside the process's range.

    Returns the grid sorted in decreasing t (sampling direction). Traced arrays are passed through
    unchecked (they come from code such as grid optimisation that keeps them valid by construction).
    """
    ts = jnp.asarray(ts)
    if ts.ndim != 1 or ts.shape[0] < 2:
        raise ValueError(f"{name} must be a 1-D array of at least 2 times, got shape {ts.shape}.")
    if isinstance(ts, jax.core.Tracer):
        return ts
    a = np.asarray(ts, dtype=np.float64)
    if not np.all(np.isfinite(a)):
        raise ValueError(f"{name} contains non-finite times: {a}.")
    d = np.diff(a)
    if np.all(d > 0):
        ts = ts[::-1]
        a = a[::-1]
    elif not np.all(d < 0):
        i = int(np.argmax(~(d < 0)))
        raise ValueError(
            f"{name} must be strictly monotone; entries {i} and {i + 1} are {a[i]!r} and {a[i + 1]!r}. "
            "Remove repeated times and sort the array."
        )
    lo, hi = float(process.t_min), float(process.t_max)
    tol = 1e-12 * max(1.0, abs(hi))
    if a.min() < lo - tol or a.max() > hi + tol:
        raise ValueError(
            f"{name} must lie in the process's range [{lo}, {hi}]; got [{a.min()!r}, {a.max()!r}]."
        )
    return ts
