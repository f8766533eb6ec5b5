"""Discrete DDPM noise tables as continuous processes: :class:`DiscreteVP` and the table checks.

A table of ``alphas_cumprod`` (or ``betas``) with ``N`` entries becomes a variance-preserving
process on ``[1/N, 1]`` whose ``log alpha`` is piecewise linear between the nodes
``t_n = (n + 1) / N`` (DPM-Solver's ``"discrete"`` schedule). The helpers below turn a concrete
table into ``log alpha`` values and name the first bad entry of a table that is not one.
"""

from __future__ import annotations

import math
from typing import Any

import equinox as eqx
import jax
import jax.numpy as jnp
import numpy as np

from jaxode_diffusion.processes.base import (
    TimeRange,
    VariancePreserving,
    check_scalar,
    float_dtype,
    is_traced,
)

__all__ = ["DiscreteVP"]


def _table_error(name: str, msg: str) -> ValueError:
    return ValueError(f"{name}: {msg}")


def _as_table(values, name: str) -> np.ndarray:
    """A 1-D float64 NumPy copy of a concrete table, with shape/finiteness checks naming ``name``."""
    try:
        arr = np.asarray(values)
    except Exception as err:  # e.g. a ragged list
        raise _table_error(name, f"must be a 1-D array of numbers, got {values!r} ({err}).") from None
    if arr.dtype == np.bool_ or not (np.issubdtype(arr.dtype, np.floating) or np.issubdtype(arr.dtype, np.integer)):
        raise _table_error(name, f"must be a 1-D array of real numbers, got dtype {arr.dtype}.")
    arr = arr.astype(np.float64)
    if arr.ndim != 1:
        raise _table_error(name, f"must be 1-D (one entry per training step), got shape {arr.shape}.")
    if arr.shape[0] < 2:
        raise _table_error(
            name, f"needs at least 2 entries (one per training step), got {arr.shape[0]}; pass the full table."
        )
    bad = ~np.isfinite(arr)
    if bad.any():
        i = int(np.argmax(bad))
        raise _table_error(name, f"must be finite, but {name}[{i}] = {float(arr[i])!r}; replace the non-finite entry.")
    return arr


def _log_alphas_from_alphas_cumprod(values) -> np.ndarray:
    ac = _as_table(values, "alphas_cumprod")
    out = ~((ac > 0) & (ac <= 1))
    if out.any():
        i = int(np.argmax(out))
        raise _table_error(
            "alphas_cumprod",
            f"entries must lie in (0, 1], but alphas_cumprod[{i}] = {float(ac[i])!r}. "
            + (
                "A zero-terminal-SNR table (alphas_cumprod[-1] = 0) has an infinite log-SNR at t = 1: "
                "clip its last entry to a small positive value."
                if ac[i] <= 0 else
                "alphas_cumprod is the product of (1 - beta) and cannot exceed 1; check that you passed "
                "alphas_cumprod and not, e.g., sqrt(1 / alphas_cumprod)."
            ),
        )
    d = np.diff(ac)
    if not (d < 0).all():
        i = int(np.argmax(~(d < 0)))
        hint = (
            " It increases: pass it in training order (data to noise), e.g. alphas_cumprod[::-1]."
            if (d > 0).all() else " Repeated entries mean a zero beta; every beta must be > 0."
        )
        raise _table_error(
            "alphas_cumprod",
            f"must be strictly decreasing, but alphas_cumprod[{i}] = {float(ac[i])!r} and "
            f"alphas_cumprod[{i + 1}] = {float(ac[i + 1])!r}.{hint}",
        )
    return 0.5 * np.log(ac)


def _log_alphas_from_betas(values) -> np.ndarray:
    betas = _as_table(values, "betas")
    out = ~((betas > 0) & (betas < 1))
    if out.any():
        i = int(np.argmax(out))
        fix = (
            "clip the betas below 1 (the cosine table clips at 0.999)" if betas[i] >= 1
            else "every step must add noise (beta > 0)"
        )
        raise _table_error("betas", f"entries must lie in (0, 1), but betas[{i}] = {float(betas[i])!r}; {fix}.")
    # log alphas_cumprod = sum log(1 - beta): a sum of logs is exact where a product of
    # numbers near 1 would lose digits.
    return 0.5 * np.cumsum(np.log1p(-betas))


class DiscreteVP(VariancePreserving):
    """A discrete DDPM noise table as a continuous VP process (DPM-Solver's ``"discrete"`` schedule).

    With ``N`` entries of ``alphas_cumprod``, node ``n = 0..N-1`` sits at ``t_n = (n + 1) / N``
    and ``log alpha(t_n) = 0.5 log alphas_cumprod[n]``; between nodes ``log alpha`` is linear in
    ``t`` (extended linearly by the end pieces outside ``[1/N, 1]``), and
    ``sigma = sqrt(1 - alpha^2)``. The log-SNR ``lambda = log alpha - 0.5 log(1 - alpha^2)`` is
    increasing in ``log alpha``, so its inverse is exact on each piece:
    ``log alpha = -0.5 log(1 + e^{-2 lambda})``, then invert the linear piece. The valid time
    range is ``[1/N, 1]`` (``sigma(1/N) = sqrt(1 - alphas_cumprod[0]) > 0``), the default
    early-stopping time ``1/N`` (Lu et al. 2022, DPM-Solver, App. D / ``NoiseScheduleVP``). A
    table with ``alphas_cumprod[0] = 1`` has ``sigma(1/N) = 0``: its range is ``(1/N, 1]`` and
    its default early-stopping time the second node ``2/N``.

    ``f`` and ``g^2`` (autodiff) are piecewise constant / piecewise smooth in ``t``: solvers
    stepping in ``lambda`` or ``rho`` (``x0-lambda``, ``eps-rho``, ``x0-snr``) see a smooth ODE
    and keep their order; ``x-t`` solvers do only on grids that contain the nodes.

    The table is a traced pytree leaf (``log_alphas``; new tables of the same length do not
    recompile); ``num_train_timesteps`` is static.

    Args:
        alphas_cumprod: ``(N,)`` table, in ``(0, 1]``, strictly decreasing, ``N >= 2``.
        betas: alternatively the ``(N,)`` betas, in ``(0, 1)`` (``alphas_cumprod = cumprod(1 - betas)``).

    Raises:
        ValueError: naming ``alphas_cumprod``/``betas`` and the first bad entry for tables that
            are not 1-D, shorter than 2, not finite, out of range or not decreasing.

    Example:
        >>> import numpy as np
        >>> vp = DiscreteVP.ddpm_linear()
        >>> vp.num_train_timesteps, vp.t_min, vp.t_max
        (1000, 0.001, 1.0)
        >>> ac = np.cumprod(1 - np.linspace(1e-4, 0.02, 1000))
        >>> bool(np.allclose(vp.alpha(0.5) ** 2, ac[499], rtol=1e-5))  # t = 0.5 is node n = 499
        True
        >>> round(float(vp.timestep_index(0.5)), 6)  # the network's step index N t - 1
        499.0
    """

    log_alphas: Any
    num_train_timesteps: int = eqx.field(static=True)

    def __init__(self, alphas_cumprod=None, *, betas=None):
        if (alphas_cumprod is None) == (betas is None):
            raise ValueError(
                "DiscreteVP: pass exactly one of `alphas_cumprod` or `betas` (got "
                f"{'both' if betas is not None else 'neither'})."
            )
        table, name = (alphas_cumprod, "alphas_cumprod") if betas is None else (betas, "betas")
        if is_traced(table):
            # Built inside jit/grad: shapes are checked, values cannot be.
            table = jnp.asarray(table)
            if table.ndim != 1 or table.shape[0] < 2:
                raise _table_error(name, f"must be 1-D with at least 2 entries, got shape {table.shape}.")
            if betas is None:
                log_alphas = 0.5 * jnp.log(table)
            else:
                log_alphas = 0.5 * jnp.cumsum(jnp.log1p(-table))
            self.log_alphas = log_alphas
        else:
            la = _log_alphas_from_alphas_cumprod(table) if betas is None else _log_alphas_from_betas(table)
            dtype = float_dtype()
            stored = jnp.asarray(la, dtype)
            if not bool(jnp.all(jnp.diff(stored) < 0)):
                i = int(jnp.argmax(~(jnp.diff(stored) < 0)))
                raise _table_error(
                    name,
                    f"entries {i} and {i + 1} are equal in {jnp.dtype(dtype).name} (log alpha "
                    f"{float(la[i])!r} vs {float(la[i + 1])!r}); enable float64 (jax_enable_x64) or use a table "
                    "whose entries differ.",
                )
            self.log_alphas = stored
        self.num_train_timesteps = int(self.log_alphas.shape[0])

    # -- construction from the usual tables ------------------------------------------------
    @classmethod
    def from_alphas_cumprod(cls, alphas_cumprod) -> DiscreteVP:
        """The process of a table of ``alphas_cumprod`` (``(N,)``, in ``(0, 1]``, decreasing).

        Example:
            >>> import numpy as np
            >>> p = DiscreteVP.from_alphas_cumprod(np.cumprod(1 - np.linspace(1e-4, 0.02, 10)))
            >>> p.num_train_timesteps
            10
        """
        return cls(alphas_cumprod)

    @classmethod
    def from_betas(cls, betas) -> DiscreteVP:
        """The process of a table of ``betas`` (``(N,)``, in ``(0, 1)``);
        ``alphas_cumprod = cumprod(1 - betas)``.

        Example:
            >>> import numpy as np
            >>> p = DiscreteVP.from_betas(np.linspace(1e-4, 0.02, 1000))
            >>> bool(np.allclose(p.alphas_cumprod, DiscreteVP.ddpm_linear().alphas_cumprod))
            True
        """
        return cls(betas=betas)

    @classmethod
    def ddpm_linear(cls, num_train_timesteps: int = 1000, beta_start: float = 1e-4,
                    beta_end: float = 0.02) -> DiscreteVP:
        """DDPM's linear table: ``betas = linspace(beta_start, beta_end, N)`` (Ho et al. 2020).

        Example:
            >>> round(float(DiscreteVP.ddpm_linear().alphas_cumprod[-1]), 8)
            4.036e-05
        """
        n = _check_num_train_timesteps(num_train_timesteps)
        return cls(betas=np.linspace(beta_start, beta_end, n, dtype=np.float64))

    @classmethod
    def scaled_linear(cls, num_train_timesteps: int = 1000, beta_start: float = 0.00085,
                      beta_end: float = 0.012) -> DiscreteVP:
        """Latent diffusion's "scaled_linear" table: ``betas = linspace(sqrt(beta_start),
        sqrt(beta_end), N) ** 2`` (Rombach et al. 2022; Stable Diffusion's defaults).

        Example:
            >>> round(float(DiscreteVP.scaled_linear().alphas_cumprod[-1]), 5)
            0.00466
        """
        n = _check_num_train_timesteps(num_train_timesteps)
        return cls(betas=np.linspace(math.sqrt(beta_start), math.sqrt(beta_end), n, dtype=np.float64) ** 2)

    @classmethod
    def cosine(cls, num_train_timesteps: int = 1000, s: float = 0.008, max_beta: float = 0.999) -> DiscreteVP:
        """The discrete cosine table (Nichol & Dhariwal 2021, eq. 17):
        ``abar(t) = cos((t + s)/(1 + s) pi/2)^2``, ``beta_n = min(1 - abar((n+1)/N) / abar(n/N), max_beta)``.

        Example:
            >>> p = DiscreteVP.cosine()
            >>> round(float(p.betas[-1]), 6)  # the last beta is clipped
            0.999
        """
        n = _check_num_train_timesteps(num_train_timesteps)
        check_scalar("DiscreteVP.cosine", "s", s, positive=True, fix="use s=0.008 (Nichol & Dhariwal 2021).")
        mb = check_scalar("DiscreteVP.cosine", "max_beta", max_beta, positive=True, fix="use 0.999.")
        if not mb < 1:
            raise ValueError(f"DiscreteVP.cosine: `max_beta` must be < 1, got max_beta={mb!r}; use 0.999.")

        def abar(t):
            return np.cos((t + s) / (1 + s) * np.pi / 2) ** 2

        i = np.arange(n, dtype=np.float64)
        betas = np.minimum(1 - abar((i + 1) / n) / abar(i / n), mb)
        return cls(betas=betas)

    # -- the table and the network's time input --------------------------------------------
    @property
    def alphas_cumprod(self):
        """The ``(N,)`` table ``alpha(t_n)^2``."""
        return jnp.exp(2.0 * self.log_alphas)

    @property
    def betas(self):
        """The ``(N,)`` betas ``1 - alphas_cumprod[n] / alphas_cumprod[n - 1]``
        (``alphas_cumprod[-1] = 1``)."""
        prev = jnp.concatenate([jnp.zeros((1,), self.log_alphas.dtype), self.log_alphas[:-1]])
        return -jnp.expm1(2.0 * (self.log_alphas - prev))

    @property
    def timesteps(self):
        """The node times ``t_n = (n + 1) / N``, ``n = 0..N-1``."""
        n = self.num_train_timesteps
        return (jnp.arange(n, dtype=self.log_alphas.dtype) + 1.0) / n

    def timestep_index(self, t):
        """The network's (continuous) step index ``N t - 1``: exactly ``n`` at ``t_n``
        (DPM-Solver's discrete convention, up to its fixed factor 1000 / N)."""
        return self.num_train_timesteps * jnp.asarray(t, self.log_alphas.dtype) - 1.0

    def t_of_timestep(self, n):
        """Inverse of :meth:`timestep_index`: ``t = (n + 1) / N``."""
        return (jnp.asarray(n, self.log_alphas.dtype) + 1.0) / self.num_train_timesteps

    # -- the process -----------------------------------------------------------------------
    @property
    def t_min(self):
        return 1.0 / self.num_train_timesteps

    @property
    def t_max(self):
        return 1.0

    @property
    def default_t_end(self):
        # The first node, unless the table starts at alphas_cumprod = 1 (sigma = 0 there):
        # then the second node.
        return (2.0 if self.valid_t_range().lo_open else 1.0) / self.num_train_timesteps

    def valid_t_range(self) -> TimeRange:
        # sigma(1/N)^2 = 1 - alphas_cumprod[0] > 0 unless the table starts at exactly 1.
        if not is_traced(self.log_alphas) and float(self.log_alphas[0]) == 0.0:
            return TimeRange(self.t_min, 1.0, lo_open=True,
                             reason="alphas_cumprod[0] = 1, so sigma = 0 at t = 1/N")
        return TimeRange(self.t_min, 1.0)

    def log_alpha(self, t):
        la = self.log_alphas
        n = self.num_train_timesteps
        u = n * jnp.asarray(t, float_dtype()) - 1.0  # continuous node index
        k = jax.lax.stop_gradient(jnp.clip(jnp.floor(u), 0, n - 2)).astype(jnp.int32)
        w = u - k
        lo, hi = la[k], la[k + 1]
        return lo + w * (hi - lo)

    def t_of_lambda(self, lam):
        # One program per table size and shape, as the default bisection (ForwardProcess.t_of_lambda).
        return self._table_t_of_lambda(jnp.asarray(lam, float_dtype()))

    @eqx.filter_jit
    def _table_t_of_lambda(self, lam):
        la = self.log_alphas
        n = self.num_train_timesteps
        target = -0.5 * jnp.logaddexp(0.0, -2.0 * lam)  # log alpha with this log-SNR
        # -la is increasing: the piece [k, k+1] with -la[k] <= -target < -la[k+1].
        idx = jnp.searchsorted(-la, -target, side="right")
        k = jnp.clip(idx - 1, 0, n - 2)
        lo, hi = la[k], la[k + 1]
        return (k + 1.0 + (target - lo) / (hi - lo)) / n


def _check_num_train_timesteps(n) -> int:
    if isinstance(n, bool) or not isinstance(n, (int, np.integer)) or n < 2:
        raise ValueError(
            f"num_train_timesteps must be an integer >= 2, got {n!r}; the usual value is 1000."
        )
    return int(n)
