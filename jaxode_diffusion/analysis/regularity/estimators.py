"""Batch estimators of a score's derivative norms: argument checks, jit caches, public functions.

:func:`jacobian_norm` (``||Ds||``, spectral or Frobenius), :func:`second_derivative_norm`
(``||D^2 s||``, operator or Frobenius) and :func:`directional_second_derivative`
(``D^2 s[v, v]``). Each validates its settings, resolves ``method="auto"``, and runs a compiled
program cached on the (hashable) settings; the single-example kernels live in
:mod:`jaxode_diffusion.analysis.regularity.kernels`, the handling of ``cond=`` in
:mod:`jaxode_diffusion.analysis.regularity.conditioning`. See :mod:`jaxode_diffusion.analysis.regularity` for the
definitions and methods.

The algorithms of :func:`second_derivative_norm`:

* ``"exact"``: the dense ``d x d x d`` tensor by ``jacfwd(jacfwd)``; the operator norm by batched
  block-coordinate ascent from ``num_restarts`` random starts (default 32) plus 4 HOSVD starts,
  the best one polished by eigen-steps (a dense reference).
* ``"matrix_free"``: the operator norm by the alternating higher-order power method with nested
  ``jvp`` and the ``vjp`` of a ``jvp``, from 4 sketched HOSVD starts (a randomized range finder
  with 32 probe pairs) plus ``num_restarts`` random starts (default 8), each stopped at relative
  change ``<= tol`` or after ``num_iters`` iterations (one of ``u``, ``v`` updated per iteration);
  the Frobenius norm by ``||T||_F^2 = E |D^2 s[u, v]|^2`` over ``num_probes`` independent probe
  pairs.

The operator norm of a 3-tensor is a non-convex maximisation with local maxima: each restart
finds a local maximum and the largest is returned. ``info["num_at_max"]`` counts the restarts
that reached it (within 0.1 %): 1 means "found once", consider more restarts.
"""

from __future__ import annotations

import functools
import math
from collections.abc import Callable, Sequence

import equinox as eqx
import jax
import jax.numpy as jnp
import numpy as np

from jaxode_diffusion.analysis.regularity.conditioning import with_cond
from jaxode_diffusion.analysis.regularity.kernels import (
    d2_apply,
    d2_fro_randomized,
    d2_operator_matrix_free,
    dense_d2_operator,
    dense_second_derivative,
    jac_fro_hutchinson,
    jac_spectral_matrix_free,
)
from jaxode_diffusion.processes import ForwardProcess
from jaxode_diffusion.utils.checks import check_callable, check_times_in_range

__all__ = [
    "AUTO_EXACT_MAX_DIM",
    "jacobian_norm",
    "second_derivative_norm",
    "directional_second_derivative",
]

#: ``method="auto"`` uses the dense ("exact") path up to this dimension ``d`` (inclusive).
AUTO_EXACT_MAX_DIM = 64

_JAC_ORDS = ("spectral", "fro")
_D2_ORDS = ("operator", "fro")
METHODS = ("exact", "matrix_free", "auto")
_PROBES = ("rademacher", "gaussian")
# The exact path materialises one d^3 tensor per example; lax.map over the batch in chunks of
# at most this many bytes of tensors keeps a profile at d = 64 with a large batch in memory.
_DENSE_CHUNK_BYTES = 256 * 2**20


# ------------------------------------------------------------------------------------------
# argument handling
# ------------------------------------------------------------------------------------------
def check_choice(name: str, value, choices: Sequence[str]) -> str:
    """``value`` if it is one of ``choices``; otherwise a ValueError naming ``name`` and the choices.

    Example:
        >>> check_choice("method", "exact", ("exact", "auto"))
        'exact'
    """
    if not isinstance(value, str) or value not in choices:
        raise ValueError(f"{name}={value!r} is not supported; choose one of {list(choices)}.")
    return value


def check_positive_int(name: str, value, minimum: int = 1) -> int:
    """``int(value)`` if it is an integer ``>= minimum`` (bools refused); else a ValueError.

    Example:
        >>> check_positive_int("num_iters", 3)
        3
    """
    if isinstance(value, bool) or not isinstance(value, (int, np.integer)) or value < minimum:
        raise ValueError(f"{name} must be an integer >= {minimum}, got {value!r}.")
    return int(value)


def _check_tol(tol) -> float:
    if not (isinstance(tol, (int, float)) and math.isfinite(tol) and tol >= 0):
        raise ValueError(f"tol must be a finite number >= 0, got {tol!r}.")
    return float(tol)


def _prepare(score_fn, x, key):
    check_callable(score_fn)
    x = jnp.asarray(x)
    if x.ndim < 2:
        raise ValueError(
            f"x must be a batch of shape (B, *event_shape); got shape {x.shape}. For one example use x[None]."
        )
    if not jnp.issubdtype(x.dtype, jnp.floating):
        x = x.astype(jnp.float64 if jax.config.jax_enable_x64 else jnp.float32)
    key = jax.random.PRNGKey(0) if key is None else key
    return x, key



def check_time(score_fn, t, name: str = "t"):
    """``t`` as an array after refusing a concrete non-scalar or non-finite time, or one outside the
    valid range of ``score_fn.process`` when the score carries its process (package models do).

    Traced times pass unchecked (their values are unknown while tracing).

    Example:
        >>> float(check_time(lambda x, t: -x, 0.5))
        0.5
        >>> check_time(lambda x, t: -x, float("nan"))
        Traceback (most recent call last):
        ...
        ValueError: t=nan must be a finite scalar time (inside the process's valid range, e.g. (0, 1] for VPLinear).
    """
    if isinstance(t, jax.core.Tracer):
        return t
    if isinstance(t, (str, bytes, bool)) or t is None:
        raise ValueError(f"{name}={t!r} must be a finite scalar time (a number, e.g. 0.5).")
    try:
        arr = np.asarray(t, dtype=np.float64)
    except (TypeError, ValueError):
        raise ValueError(f"{name}={t!r} must be a finite scalar time (a number, e.g. 0.5).") from None
    if arr.ndim != 0:
        raise ValueError(f"{name} must be a scalar time; got shape {arr.shape}. Call once per time "
                         "(or use regularity.profile for a grid of times).")
    if not np.isfinite(arr):
        raise ValueError(f"{name}={t!r} must be a finite scalar time (inside the process's valid range, "
                         "e.g. (0, 1] for VPLinear).")
    process = getattr(score_fn, "process", None)
    if isinstance(process, ForwardProcess):
        check_times_in_range(process, [float(arr)], f"{name}={t!r}",
                             f"pass a time inside it (score_fn belongs to {type(process).__name__}())")
    return jnp.asarray(t)


def resolve_method(method: str, d: int) -> str:
    """``"exact"`` or ``"matrix_free"``: ``method`` validated, ``"auto"`` resolved for dimension ``d``.

    Example:
        >>> resolve_method("auto", 2), resolve_method("auto", 10_000)
        ('exact', 'matrix_free')
    """
    check_choice("method", method, METHODS)
    if method == "auto":
        return "exact" if d <= AUTO_EXACT_MAX_DIM else "matrix_free"
    return method


def _flat_score(score_fn, event_shape, t):
    """The single-example score as a map ``R^d -> R^d`` (score_fn sees a batch of one)."""

    def f(y):
        out = score_fn(y.reshape(event_shape)[None], t)
        return jnp.reshape(out, (-1,)).astype(y.dtype)

    return f



def _per_example(kernel, x, chunk_bytes_per_example=None):
    """Map a single-example kernel ``(y_flat) -> pytree`` over the batch.

    ``vmap`` by default; ``lax.map`` in chunks when each example materialises a big dense
    tensor. Either way each example is computed by the same single-example program.
    """
    xf = x.reshape(x.shape[0], -1)
    if chunk_bytes_per_example is None:
        return jax.vmap(kernel)(xf)
    batch = max(1, min(x.shape[0], _DENSE_CHUNK_BYTES // max(1, chunk_bytes_per_example)))
    return jax.lax.map(kernel, xf, batch_size=batch)


@functools.lru_cache(maxsize=64)
def _jacobian_norm_fn(event_shape, ord, method, num_iters, tol, num_probes, probe):
    """A jitted ``(score_fn, x, t, key) -> (values, info)`` for validated, resolved settings.

    ``score_fn`` is an argument of the compiled function (``equinox.filter_jit``): the array
    leaves of a pytree score (a model's parameters, a mixture) are traced, not baked in.
    Cached on the (hashable) settings, so repeated calls with the same settings and shapes
    (e.g. a profile over many ``t``) compile once.
    """

    def compute(score_fn, x, t, key):
        f = _flat_score(score_fn, event_shape, t)
        if method == "exact":
            def kernel(y):
                jac = jax.jacfwd(f)(y)
                if ord == "spectral":
                    # sigma_1 = sqrt(lambda_max(J^T J)): a symmetric eigensolve is several times
                    # cheaper than XLA's CPU SVD, and the top singular value keeps full
                    # relative accuracy (only small singular values suffer from squaring).
                    top = jnp.linalg.eigvalsh(jac.T @ jac)[-1]
                    return jnp.sqrt(jnp.maximum(top, 0.0))
                return jnp.linalg.norm(jac)

            vals = _per_example(kernel, x)
            zero = jnp.zeros_like(vals)
            if ord == "spectral":
                info = {"iterations": jnp.zeros(vals.shape, jnp.int32), "rel_change": zero,
                        "converged": jnp.ones(vals.shape, bool)}
            else:
                info = {"stderr": zero}
            return vals, {"exact": jnp.ones(vals.shape, bool), **info}
        if ord == "spectral":
            vals, info = _per_example(lambda y: jac_spectral_matrix_free(f, y, key, tol, num_iters), x)
        else:
            vals, se = _per_example(lambda y: jac_fro_hutchinson(f, y, key, num_probes, probe), x)
            info = {"stderr": se}
        return vals, {"exact": jnp.zeros(vals.shape, bool), **info}

    return eqx.filter_jit(compute)


@functools.lru_cache(maxsize=64)
def _second_norm_fn(event_shape, dtype, ord, method, num_iters, tol, num_restarts, num_probes, probe):
    """A jitted ``(score_fn, x, t, key) -> (values, info)``, as :func:`_jacobian_norm_fn`."""
    d = int(np.prod(event_shape))
    itemsize = jnp.dtype(dtype).itemsize

    def compute(score_fn, x, t, key):
        f = _flat_score(score_fn, event_shape, t)
        if method == "exact":
            def kernel(y):
                tensor = dense_second_derivative(f, y)
                if ord == "fro":
                    return jnp.linalg.norm(tensor.reshape(-1)), {"stderr": jnp.zeros((), y.dtype)}
                return dense_d2_operator(tensor, key, tol, num_iters, num_restarts)

            vals, info = _per_example(kernel, x, chunk_bytes_per_example=2 * d**3 * itemsize)
            return vals, {"exact": jnp.ones(vals.shape, bool), **info}
        if ord == "operator":
            vals, info = _per_example(
                lambda y: d2_operator_matrix_free(f, y, key, tol, num_iters, num_restarts), x
            )
        else:
            vals, se = _per_example(lambda y: d2_fro_randomized(f, y, key, num_probes, probe), x)
            info = {"stderr": se}
        return vals, {"exact": jnp.zeros(vals.shape, bool), **info}

    return eqx.filter_jit(compute)


def jacobian_estimator(score_fn, x, key, *, ord="spectral", method="auto", num_iters=200, tol=1e-5,
                       num_probes=64, probe="rademacher"):
    """Validate the arguments of :func:`jacobian_norm`; return ``(x, key, jitted compute)``.

    Example:
        >>> import jax.numpy as jnp
        >>> score = lambda x, t: -2.0 * x
        >>> x, key, compute = jacobian_estimator(score, jnp.ones((2, 3)), None, method="exact")
        >>> vals, info = compute(score, x, jnp.asarray(0.0), key)
        >>> [round(float(v), 4) for v in vals]
        [2.0, 2.0]
    """
    check_choice("ord", ord, _JAC_ORDS)
    check_choice("method", method, METHODS)
    check_choice("probe", probe, _PROBES)
    num_iters = check_positive_int("num_iters", num_iters)
    num_probes = check_positive_int("num_probes", num_probes, 2)
    tol = _check_tol(tol)
    x, key = _prepare(score_fn, x, key)
    method = resolve_method(method, int(np.prod(x.shape[1:])))
    return x, key, _jacobian_norm_fn(x.shape[1:], ord, method, num_iters, tol, num_probes, probe)


def second_derivative_estimator(score_fn, x, key, *, ord="operator", method="auto", num_iters=200,
                                tol=1e-5, num_restarts=None, num_probes=64, probe="rademacher"):
    """Validate the arguments of :func:`second_derivative_norm`; return ``(x, key, jitted compute)``.

    Example:
        >>> import jax.numpy as jnp
        >>> score = lambda x, t: -(x**3)
        >>> x, key, compute = second_derivative_estimator(score, jnp.array([[1.0, 0.0]]), None, ord="fro")
        >>> vals, info = compute(score, x, jnp.asarray(0.0), key)
        >>> [round(float(v), 4) for v in vals]
        [6.0]
    """
    check_choice("ord", ord, _D2_ORDS)
    check_choice("method", method, METHODS)
    check_choice("probe", probe, _PROBES)
    num_iters = check_positive_int("num_iters", num_iters)
    num_probes = check_positive_int("num_probes", num_probes, 2)
    tol = _check_tol(tol)
    x, key = _prepare(score_fn, x, key)
    method = resolve_method(method, int(np.prod(x.shape[1:])))
    if num_restarts is None:
        num_restarts = 32 if method == "exact" else 8
    num_restarts = check_positive_int("num_restarts", num_restarts)
    return x, key, _second_norm_fn(x.shape[1:], jnp.dtype(x.dtype), ord, method, num_iters, tol, num_restarts,
                                   num_probes, probe)


# ------------------------------------------------------------------------------------------
# public estimators
# ------------------------------------------------------------------------------------------
def jacobian_norm(
    score_fn: Callable,
    x,
    t,
    *,
    ord: str = "spectral",
    method: str = "auto",
    key=None,
    num_iters: int = 200,
    tol: float = 1e-5,
    num_probes: int = 64,
    probe: str = "rademacher",
    return_info: bool = False,
    cond=None,
):
    """Norm of the score's Jacobian ``Ds(x, t)`` for each example of a batch.

    Args:
        score_fn: ``score_fn(x, t) -> array shaped like x`` for a batch ``x``.
        x: ``(B, *event_shape)`` points; ``d = prod(event_shape)``.
        t: scalar time.
        ord: ``"spectral"`` (largest singular value ``max_{|v|=1} |J v|``) or ``"fro"``
            (``sqrt(sum_ij J_ij^2)``).
        method: ``"exact"`` (dense ``jax.jacfwd``, then the largest eigenvalue of ``J^T J`` /
            the Frobenius norm; ``O(d^2)`` memory),
            ``"matrix_free"`` (spectral: power iteration on ``J^T J`` with ``jvp`` and its
            transpose, stopped when the relative change is ``<= tol`` or after ``num_iters``
            iterations; fro: Hutchinson ``||J||_F^2 = E |J v|^2`` with ``num_probes`` probes),
            or ``"auto"`` (exact for ``d <= 64``, matrix-free above).
        key: PRNG key for the start vector / probes; ``None`` means ``PRNGKey(0)``. The same
            draws serve every example.
        num_iters, tol: maximum power iterations and their relative-change tolerance.
        num_probes: Hutchinson probes (>= 2, for a standard error).
        probe: ``"rademacher"`` (lower variance) or ``"gaussian"`` probe vectors.
        return_info: also return a dict of per-example accuracy information.
        cond: optional condition; the score is then ``score_fn(x, t, cond)`` (see the module
            docstring: leaves with a leading batch axis are per example, scalars shared).

    Returns:
        ``(B,)`` norms; with ``return_info=True`` a pair ``(norms, info)`` where ``info`` holds
        ``(B,)`` arrays: ``"exact"`` (bool); for ``ord="spectral"`` ``"iterations"``,
        ``"rel_change"`` (last relative change) and ``"converged"``; for ``ord="fro"``
        ``"stderr"`` (standard error of the Hutchinson estimate of the norm, delta method;
        0 when exact).

    Raises:
        ValueError: unknown ``ord``/``method``/``probe``, a non-batch ``x``, bad counts, a bad ``t``.

    Example:
        >>> import jax.numpy as jnp
        >>> score = lambda x, t: -x / (1.0 + t**2)            # N(0, (1 + t^2) I)
        >>> vals = jacobian_norm(score, jnp.ones((2, 3)), 1.0, method="matrix_free")
        >>> [round(float(v), 4) for v in vals]
        [0.5, 0.5]
    """
    x, key, compute = jacobian_estimator(score_fn, x, key, ord=ord, method=method, num_iters=num_iters,
                                         tol=tol, num_probes=num_probes, probe=probe)
    t = check_time(score_fn, t)
    if cond is None:
        vals, info = compute(score_fn, x, jnp.asarray(t), key)
    else:
        vals, info = with_cond(compute, score_fn, x, cond, jnp.asarray(t), key)
    return (vals, info) if return_info else vals


def second_derivative_norm(
    score_fn: Callable,
    x,
    t,
    *,
    ord: str = "operator",
    method: str = "auto",
    key=None,
    num_iters: int = 200,
    tol: float = 1e-5,
    num_restarts: int | None = None,
    num_probes: int = 64,
    probe: str = "rademacher",
    return_info: bool = False,
    cond=None,
):
    """Norm of the score's second derivative ``D^2 s(x, t)`` for each example of a batch.

    ``D^2 s[u, v] = sum_jk d^2 s / dx_j dx_k u_j v_k`` is the second directional derivative
    (see :func:`directional_second_derivative`); the tensor is symmetric in ``(u, v)``, not
    necessarily in the output index (a learned score is not a gradient).

    Args:
        score_fn: ``score_fn(x, t) -> array shaped like x`` for a batch ``x``.
        x: ``(B, *event_shape)`` points; ``d = prod(event_shape)``.
        t: scalar time.
        ord: ``"operator"`` (``max_{|u|=|v|=1} |D^2 s[u, v]|``) or ``"fro"``
            (``sqrt(sum_ijk T_ijk^2)``).
        method: ``"exact"`` (the dense ``d x d x d`` tensor by ``jacfwd(jacfwd)``: a dense
            reference), ``"matrix_free"`` (nested ``jvp`` and the ``vjp`` of a ``jvp`` only) or
            ``"auto"`` (exact for ``d <= 64``); the algorithms are in the module docstring.
        key: PRNG key for start vectors / probes; ``None`` means ``PRNGKey(0)``. The same
            draws serve every example.
        num_iters: maximum iterations per restart (one of ``u``, ``v`` updated per iteration).
        tol: relative-change tolerance per restart.
        num_restarts: random restarts of the operator-norm ascent (default 32 exact, 8
            matrix-free); ``info["num_at_max"]`` counts those reaching the maximum (1: use more).
        num_probes: probe pairs of the randomized Frobenius estimate (>= 2).
        probe: ``"rademacher"`` or ``"gaussian"`` probes.
        return_info: also return a dict of per-example accuracy information.

    Returns:
        ``(B,)`` norms; with ``return_info=True`` a pair ``(norms, info)``: ``"exact"`` (bool);
        operator norm: ``"iterations"``, ``"rel_change"``, ``"converged"`` of the best restart,
        ``"restart_values"`` ``(B, R)`` and ``"num_at_max"``; Frobenius: ``"stderr"``.

    Raises:
        ValueError: unknown ``ord``/``method``/``probe``, a non-batch ``x``, bad counts, a
            non-finite or non-scalar ``t``, or a ``t`` outside ``score_fn.process``'s range.

    Example:
        >>> import jax.numpy as jnp
        >>> score = lambda x, t: -x**3                          # T[i,i,i] = -6 x_i
        >>> second_derivative_norm(score, jnp.array([[1.0, 0.0]]), 0.0, method="exact").tolist()
        [6.0]
    """
    x, key, compute = second_derivative_estimator(score_fn, x, key, ord=ord, method=method,
                                                  num_iters=num_iters, tol=tol, num_restarts=num_restarts,
                                                  num_probes=num_probes, probe=probe)
    t = check_time(score_fn, t)
    if cond is None:
        vals, info = compute(score_fn, x, jnp.asarray(t), key)
    else:
        vals, info = with_cond(compute, score_fn, x, cond, jnp.asarray(t), key)
    return (vals, info) if return_info else vals


def directional_second_derivative(score_fn: Callable, x, t, v, *, cond=None):
    """``D^2 s(x, t)[v, v]`` for each example: the second derivative of ``s`` along ``v``.

    ``D^2 s[v, v] = d^2/de^2 s(x + e v, t) at e = 0``, by a nested ``jax.jvp`` (no tensor).

    Args:
        score_fn: ``score_fn(x, t) -> array shaped like x``.
        x: ``(B, *event_shape)`` points.
        t: scalar time.
        v: direction, ``(B, *event_shape)`` (one per example) or ``event_shape`` (shared).
        cond: optional condition, as in :func:`jacobian_norm`.

    Returns:
        Array shaped like ``x``.

    Raises:
        ValueError: if ``v`` has neither shape.

    Example:
        >>> import jax.numpy as jnp
        >>> score = lambda x, t: -x**3
        >>> d2 = directional_second_derivative(score, jnp.array([[2.0]]), 0.0, jnp.array([1.0]))
        >>> d2.tolist()
        [[-12.0]]
    """
    x, _ = _prepare(score_fn, x, None)
    t = check_time(score_fn, t)
    v = jnp.asarray(v, x.dtype)
    event_shape = x.shape[1:]
    if v.shape == event_shape:
        v = jnp.broadcast_to(v, x.shape)
    elif v.shape != x.shape:
        raise ValueError(
            f"v must have shape {x.shape} (one direction per example) or {event_shape} (shared); "
            f"got {v.shape}."
        )

    if cond is None:
        return _directional_fn(event_shape)(score_fn, x, jnp.asarray(t), v)
    return with_cond(_directional_fn(event_shape), score_fn, x, cond, jnp.asarray(t), mapped_args=(v,))


@functools.lru_cache(maxsize=64)
def _directional_fn(event_shape):
    def compute(score_fn, x, t, v):
        f = _flat_score(score_fn, event_shape, t)
        flat = (x.reshape(x.shape[0], -1), v.reshape(x.shape[0], -1))
        out = jax.vmap(lambda y, w: d2_apply(f, y, w, w))(*flat)
        return out.reshape(x.shape)

    return eqx.filter_jit(compute)
