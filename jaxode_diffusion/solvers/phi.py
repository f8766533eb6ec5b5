"""The phi functions of exponential integrators, evaluated stably.

``phi_0(z) = e^z`` and ``phi_{k+1}(z) = (phi_k(z) - 1/k!) / z``, equivalently

    phi_k(z) = int_0^1 e^{(1 - theta) z} theta^{k-1} / (k-1)! dtheta = sum_{n >= 0} z^n / (n + k)!

(Hochbruck & Ostermann 2010, "Exponential integrators", Acta Numerica, eq. 2.10). The recurrence
cancels catastrophically for small ``|z|`` (``phi_k(z) - 1/k!`` is ``O(z)``, so one level
amplifies relative errors by about ``(k + 1) / |z|``). For ``|z| < 2`` we therefore sum the series
(Horner); for ``|z| >= 2`` the recurrence starts from ``expm1(z) / z`` and loses at most a factor
``(k + 1) / 2`` per level, a few ulps for the ``k <= 5`` the samplers use.
"""

from __future__ import annotations

import math

import jax.numpy as jnp

__all__ = ["phi", "phis"]

# Series cut-off: for |z| < 2 the first omitted term of phi_k is below 2^N / (N + k)! < 2^32 / 33!
# ~ 5e-28, far under float64 resolution relative to phi_k(z) >= phi_k(-2) > 1 / (k + 2)!.
_SERIES_TERMS = 32
_SERIES_RADIUS = 2.0


def _series(k: int, z):
    # Horner on sum_n z^n / (n + k)! = (1/k!) (1 + z/(k+1) (1 + z/(k+2) (1 + ...))).
    acc = jnp.ones_like(z)
    for n in range(_SERIES_TERMS, 0, -1):
        acc = 1.0 + acc * z / (n + k)
    return acc / math.factorial(k)


def phis(kmax: int, z):
    """``[phi_1(z), ..., phi_kmax(z)]`` (elementwise, any shape, float32 or float64).

    Args:
        kmax: highest index (``>= 1``).
        z: array-like argument.

    Returns:
        A list of ``kmax`` arrays shaped like ``z``.

    Raises:
        ValueError: if ``kmax < 1``.

    Example:
        >>> import jax.numpy as jnp
        >>> p1, p2 = phis(2, jnp.array([0.0, 1.0]))
        >>> [round(float(v), 6) for v in p1], [round(float(v), 6) for v in p2]
        ([1.0, 1.718282], [0.5, 0.718282])
    """
    if int(kmax) != kmax or kmax < 1:
        raise ValueError(f"kmax must be an integer >= 1, got {kmax!r}.")
    z = jnp.asarray(z)
    if not jnp.issubdtype(z.dtype, jnp.floating):
        z = z.astype(jnp.result_type(float))
    small = jnp.abs(z) < _SERIES_RADIUS
    # Keep the untaken branch finite (no 0/0) so gradients through jnp.where stay clean.
    z_big = jnp.where(small, 1.0, z)
    out = []
    rec = jnp.expm1(z_big) / z_big  # phi_1 by the recurrence
    for k in range(1, kmax + 1):
        if k > 1:
            rec = (rec - 1.0 / math.factorial(k - 1)) / z_big
        out.append(jnp.where(small, _series(k, jnp.where(small, z, 0.0)), rec))
    return out


def phi(k: int, z):
    """``phi_k(z)`` for ``k >= 0`` (``phi_0 = exp``); see :func:`phis`.

    Example:
        >>> round(float(phi(1, 1e-12)), 9)   # expm1(z)/z without cancellation
        1.0
    """
    if int(k) != k or k < 0:
        raise ValueError(f"k must be an integer >= 0, got {k!r}.")
    if k == 0:
        return jnp.exp(jnp.asarray(z))
    return phis(k, z)[-1]
