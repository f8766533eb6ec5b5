"""Regularity of a score: norms of its first and second derivatives, exact or matrix-free.

For a score ``s(x, t) = grad log p_t(x)`` on ``R^d`` (``d = prod(event_shape)``) this module
estimates, per batch element,

* ``||Ds||``: the Jacobian ``J = Ds`` (``d x d``, not necessarily symmetric for a learned score),
  in the spectral norm ``max_{|v|=1} |J v|`` or the Frobenius norm;
* ``||D^2 s||``: the second derivative, the tensor ``T[i, j, k] = d^2 s_i / dx_j dx_k``
  (``d x d x d``), acting as ``D^2 s[u, v]_i = sum_jk T[i, j, k] u_j v_k`` (the second
  directional derivative, a nested ``jvp``), in the operator norm
  ``max_{|u|=|v|=1} |D^2 s[u, v]|`` or the Frobenius norm. ``T`` is symmetric in ``(j, k)``
  for any twice differentiable score (mixed partials commute), learned or not; it is symmetric
  in all three indices only for an exact score (a gradient field).

and, with :func:`profile`, how these behave along the sampling path: on a grid of ``t`` along
probability-flow ODE trajectories and at forward-noised data, raw and weighted by ``sigma^2``
(first derivative) and ``sigma^3`` (second derivative), the scale-free forms in which they enter
the error bounds of high-order samplers.

Methods (``method=``):

* ``"exact"``: dense derivatives by forward-mode autodiff (``jax.jacfwd``; ``jacfwd(jacfwd)`` for
  the ``d^3`` tensor), then a symmetric eigensolve of ``J^T J`` (Jacobian) or a dense
  optimisation with many restarts (second derivative). Memory ``O(d^2)`` / ``O(d^3)`` per example.
* ``"matrix_free"``: only Jacobian-vector products (``jax.jvp``), vector-Jacobian products
  (``jax.vjp``) and their nesting; memory ``O(d)`` per probe on top of the score's own.
  Iterative estimates stop on a relative-change tolerance inside ``lax.while_loop`` (or after
  ``num_iters`` iterations); stochastic ones (Hutchinson) report their standard error.
* ``"auto"``: ``"exact"`` when ``d <= AUTO_EXACT_MAX_DIM`` (64: the dense ``d^3`` tensor of one
  example is then at most 2 MiB in float64 and the dense optimisation takes milliseconds),
  ``"matrix_free"`` otherwise.

Every estimate is computed per example (a single-example function, ``score_fn`` called on a
batch of one, ``vmap``-ed over the batch), with the *same* random probes/start vectors for every
example, so a value does not depend on the batch size or on the element's position in it.

Conditioning: every estimator takes ``cond=`` (a pytree; the score is then called as
``score_fn(x, t, cond)``, e.g. class labels, or a guided score from
:func:`~jaxode_diffusion.guidance.classifier_free_guidance`). Leaves with a leading batch axis
are one condition per example (each example's derivatives use its own condition); scalar leaves
are shared. :func:`bind_cond` makes the same two-argument score explicitly.

Randomness: ``key=None`` means ``jax.random.PRNGKey(0)``, so estimates are deterministic by
default; pass a key to draw other probes or start vectors (e.g. to gauge the spread of a
stochastic estimate).

References:
    Power iteration: Golub & Van Loan, *Matrix Computations*, 4th ed., sec. 7.3 and 8.2.
    Hutchinson's trace estimator: Hutchinson (1990), Commun. Stat. Simul. Comput. 19(2).
    Higher-order power method (alternating least squares for the best rank-1 approximation):
    De Lathauwer, De Moor & Vandewalle (2000), SIAM J. Matrix Anal. Appl. 21(4).
"""

from __future__ import annotations

import dataclasses
import functools
import json
import math
from collections.abc import Callable, Sequence
from typing import Any

import equinox as eqx
import jax
import jax.numpy as jnp
import numpy as np

from .processes import ForwardProcess

__all__ = [
    "jacobian_norm",
    "second_derivative_norm",
    "directional_second_derivative",
    "profile",
    "plot_profile",
    "RegularityProfile",
    "AUTO_EXACT_MAX_DIM",
    "BoundCond",
    "bind_cond",
]

#: ``method="auto"`` uses the dense ("exact") path up to this dimension ``d`` (inclusive).
AUTO_EXACT_MAX_DIM = 64

_JAC_ORDS = ("spectral", "fro")
_D2_ORDS = ("operator", "fro")
_METHODS = ("exact", "matrix_free", "auto")
_PROBES = ("rademacher", "gaussian")
# A restart counts as having reached the maximum when within this relative distance of it.
_AT_MAX_RTOL = 1e-3
# The exact path materialises one d^3 tensor per example; lax.map over the batch in chunks of
# at most this many bytes of tensors keeps a profile at d = 64 with a large batch in memory.
_DENSE_CHUNK_BYTES = 256 * 2**20


# ------------------------------------------------------------------------------------------
# argument handling
# ------------------------------------------------------------------------------------------
def _check_choice(name: str, value, choices: Sequence[str]) -> str:
    if not isinstance(value, str) or value not in choices:
        raise ValueError(f"{name}={value!r} is not supported; choose one of {list(choices)}.")
    return value


def _check_positive_int(name: str, value, minimum: int = 1) -> int:
    if isinstance(value, bool) or not isinstance(value, (int, np.integer)) or value < minimum:
        raise ValueError(f"{name} must be an integer >= {minimum}, got {value!r}.")
    return int(value)


def _check_tol(tol) -> float:
    if not (isinstance(tol, (int, float)) and math.isfinite(tol) and tol >= 0):
        raise ValueError(f"tol must be a finite number >= 0, got {tol!r}.")
    return float(tol)


def _prepare(score_fn, x, key):
    if not callable(score_fn):
        raise ValueError(f"score_fn must be callable score_fn(x, t); got {type(score_fn).__name__}.")
    x = jnp.asarray(x)
    if x.ndim < 2:
        raise ValueError(
            f"x must be a batch of shape (B, *event_shape); got shape {x.shape}. For one example use x[None]."
        )
    if not jnp.issubdtype(x.dtype, jnp.floating):
        x = x.astype(jnp.float64 if jax.config.jax_enable_x64 else jnp.float32)
    key = jax.random.PRNGKey(0) if key is None else key
    return x, key


class BoundCond(eqx.Module):
    """``score_fn`` with a condition bound: ``BoundCond(f, cond)(x, t) = f(x, t, cond)``.

    A pytree: the array leaves of ``cond`` (and of ``score_fn``) are traced, so new labels of the
    same shape never recompile. Build it with :func:`bind_cond`.
    """

    score_fn: Any
    cond: Any

    def __call__(self, x, t):
        return self.score_fn(x, t, self.cond)


def bind_cond(score_fn: Callable, cond) -> BoundCond:
    """The two-argument score ``(x, t) -> score_fn(x, t, cond)`` of a conditional score.

    Use it to hand a conditional (or guided) score with one condition for the whole batch to
    code that calls ``score_fn(x, t)``. For one condition *per example*, pass ``cond=`` to the
    estimators of this module instead: they evaluate each example with its own condition.

    Example:
        >>> import jax.numpy as jnp
        >>> score = lambda x, t, c: -(x - c) / (1.0 + t**2)      # N(c, (1 + t^2) I)
        >>> f = bind_cond(score, jnp.asarray(2.0))
        >>> float(f(jnp.zeros((1, 1)), 1.0)[0, 0])
        1.0
        >>> [round(float(v), 4) for v in jacobian_norm(f, jnp.ones((2, 3)), 1.0)]
        [0.5, 0.5]
    """
    if not callable(score_fn):
        raise ValueError(f"score_fn must be callable score_fn(x, t, cond); got {type(score_fn).__name__}.")
    return BoundCond(score_fn, jax.tree.map(jnp.asarray, cond))


def _split_cond(cond, batch: int):
    """``(treedef, leaves, mapped)``: leaves with a leading axis of size ``batch`` are one per
    example (mapped), scalars are shared; anything else is an error naming the leaf."""
    with_path, treedef = jax.tree_util.tree_flatten_with_path(cond)
    leaves, mapped = [], []
    for path, leaf in with_path:
        leaf = jnp.asarray(leaf)
        if leaf.ndim and leaf.shape[0] != batch:
            raise ValueError(
                f"cond{jax.tree_util.keystr(path)} has shape {leaf.shape} but x has batch size {batch}; "
                f"give one condition per example (leading axis {batch}) or a scalar shared by all."
            )
        leaves.append(leaf)
        mapped.append(leaf.ndim > 0)
    return treedef, leaves, mapped


def _with_cond(compute, score_fn, x, cond, *args, mapped_args=()):
    """Run a batch ``compute(score, x, *args, *mapped_args)`` with a condition.

    All-scalar conditions are bound once (:func:`bind_cond`); otherwise ``compute`` runs on a
    batch of one per example (``vmap``), that example's condition bound (its mapped leaves keep
    a batch axis of one), and the per-example outputs (leading axis 1) are stacked.
    """
    treedef, leaves, mapped = _split_cond(cond, x.shape[0])
    if not any(mapped):
        return compute(BoundCond(score_fn, treedef.unflatten(leaves)), x, *args, *mapped_args)
    per_ex = [leaf for leaf, m in zip(leaves, mapped) if m]
    shared = [leaf for leaf, m in zip(leaves, mapped) if not m]

    def one(xi, per, *mi):
        it_per, it_sh = iter(per), iter(shared)
        ci = treedef.unflatten([next(it_per)[None] if m else next(it_sh) for m in mapped])
        out = compute(BoundCond(score_fn, ci), xi[None], *args, *(m[None] for m in mi))
        return jax.tree.map(lambda a: a[0], out)

    return jax.vmap(one)(x, per_ex, *mapped_args)


def _resolve_method(method: str, d: int) -> str:
    _check_choice("method", method, _METHODS)
    if method == "auto":
        return "exact" if d <= AUTO_EXACT_MAX_DIM else "matrix_free"
    return method


def _flat_score(score_fn, event_shape, t):
    """The single-example score as a map ``R^d -> R^d`` (score_fn sees a batch of one)."""

    def f(y):
        out = score_fn(y.reshape(event_shape)[None], t)
        return jnp.reshape(out, (-1,)).astype(y.dtype)

    return f


def _normalize(v, fallback):
    n = jnp.linalg.norm(v)
    ok = n > 0
    return jnp.where(ok, v / jnp.where(ok, n, 1.0), fallback)


def _probes(key, kind: str, shape, dtype):
    if kind == "rademacher":
        return jax.random.rademacher(key, shape, dtype=dtype)
    return jax.random.normal(key, shape, dtype)


def _mean_and_stderr(sq):
    """Estimate ``||A|| = sqrt(E[q])`` from samples ``q`` and its standard error (delta method)."""
    n = sq.shape[0]
    mean = jnp.mean(sq)
    se_sq = jnp.std(sq, ddof=1) / jnp.sqrt(n)
    norm = jnp.sqrt(mean)
    se = jnp.where(norm > 0, se_sq / (2.0 * jnp.where(norm > 0, norm, 1.0)), 0.0)
    return norm, se


# ------------------------------------------------------------------------------------------
# single-example kernels (y: flat (d,) point; f: R^d -> R^d)
# ------------------------------------------------------------------------------------------
def _jac_spectral_matrix_free(f, y, key, tol, num_iters):
    """Power iteration on ``J^T J`` with one ``jvp`` and one transposed ``jvp`` per iteration.

    The estimate ``|J v_k|`` (``v_k`` unit) is the square root of the Rayleigh quotient of
    ``J^T J``: it increases monotonically to ``sigma_1`` with error ``O((sigma_2/sigma_1)^{4k})``.
    Stopping rule: relative change of the estimate ``<= tol``; when ``sigma_2`` is close to
    ``sigma_1`` the change underestimates the remaining error by about ``1/(1 - (s2/s1)^2)``.
    """
    _, jvp_fn = jax.linearize(f, y)
    vjp_fn = jax.linear_transpose(jvp_fn, y)
    v0 = _normalize(jax.random.normal(key, y.shape, y.dtype), jnp.ones_like(y) / math.sqrt(y.size))

    def cond(state):
        i, _, _, rel = state
        return (i < num_iters) & (rel > tol)

    def body(state):
        i, v, s_prev, _ = state
        jv = jvp_fn(v)
        s = jnp.linalg.norm(jv)
        (g,) = vjp_fn(jv)
        v_new = _normalize(g, v)
        rel = jnp.abs(s - s_prev) / jnp.where(s > 0, s, 1.0)
        return i + 1, v_new, s, rel

    init = (jnp.asarray(0, jnp.int32), v0, jnp.zeros((), y.dtype), jnp.asarray(jnp.inf, y.dtype))
    i, _, s, rel = jax.lax.while_loop(cond, body, init)
    return s, {"iterations": i, "rel_change": rel, "converged": rel <= tol}


def _jac_fro_hutchinson(f, y, key, num_probes, probe):
    """``||J||_F^2 = E |J v|^2`` for ``E[v v^T] = I`` (Rademacher or Gaussian ``v``)."""
    _, jvp_fn = jax.linearize(f, y)
    vs = _probes(key, probe, (num_probes, y.size), y.dtype)
    sq = jnp.sum(jax.vmap(jvp_fn)(vs) ** 2, axis=-1)
    return _mean_and_stderr(sq)


def _d2_apply(f, y, u, v):
    """``D^2 s[u, v]``: nested forward mode (jvp of the jvp)."""
    return jax.jvp(lambda z: jax.jvp(f, (z,), (u,))[1], (y,), (v,))[1]


def _d2_contract(f, y, w, v):
    """``T[w, ., v]_j = sum_ik w_i T[i, j, k] v_k``: reverse mode over the jvp ``z -> J(z) v``.

    The vjp gives ``sum_ij w_i T[i, j, k] v_j``; symmetry of ``T`` in its last two indices
    (mixed partials commute) makes it the contraction above.
    """
    _, vjp_fn = jax.vjp(lambda z: jax.jvp(f, (z,), (v,))[1], y)
    return vjp_fn(w)[0]


# Sketched starts of the matrix-free operator norm: probe pairs and starts kept. 32 probes
# recover the dense HOSVD start's basin in 5 of 6 random width-256 MLPs at d in {64, 256}.
_SKETCH_PROBES = 32
_SKETCH_STARTS = 4


def _d2_operator_matrix_free(f, y, key, tol, num_iters, num_restarts):
    """Alternating (higher-order) power method for ``max_{|u|=|v|=1} |T[u, v]|``, with restarts.

    Block-coordinate ascent on ``w . T[u, v]`` over unit ``w``, ``u``, ``v``. One iteration:
    ``w <- T[u, v]`` (nested jvp), then the best ``u`` for that ``w`` and ``v``,
    ``u <- T[w, ., v]`` (vjp of a jvp), all normalised; then ``u`` and ``v`` swap roles, so
    the two vectors are updated alternately at the price of one ``jvp``-of-``jvp`` and one
    ``vjp``-of-``jvp`` per iteration. Since ``|T[u, v]| = |T[v, u]|`` the value never decreases
    (``|T[u', v]| >= w . T[u', v] >= w . T[u, v] = |T[u, v]|``). It converges to a local
    maximum: operator norms of 3-tensors are non-convex maximisations with several local
    maxima, hence several starts (4 sketched HOSVD starts, then ``num_restarts`` random ones),
    the largest value kept. ``u`` and ``v`` are kept separate and ``w`` is free: no assumption
    that ``T`` is symmetric in its output index.
    """
    d = y.size
    ku, ka, kb = jax.random.split(key, 3)
    fallback = jnp.ones((d,), y.dtype) / math.sqrt(d)
    rand = jax.vmap(lambda z: _normalize(z, fallback))(jax.random.normal(ku, (num_restarts, d), y.dtype))
    # Sketched HOSVD starts: the columns T[a_p, ., b_p] of the mode-2 unfolding applied to
    # random rank-one test vectors span its dominant left singular space (randomized range
    # finder); the leading left singular vectors of that d x P sketch, found from its P x P
    # Gram matrix, play the role of the dense path's HOSVD starts. Random starts alone often
    # stall at a local maximum in high dimension (d = 256 MLP: 0.886 vs the global 0.962).
    a = jax.random.normal(ka, (_SKETCH_PROBES, d), y.dtype)
    b = jax.random.normal(kb, (_SKETCH_PROBES, d), y.dtype)
    sketch = jax.vmap(lambda w, v: _d2_contract(f, y, w, v))(a, b)  # (P, d)
    coef = jnp.linalg.eigh(sketch @ sketch.T)[1][:, ::-1][:, : min(d, _SKETCH_STARTS)]
    sk = jax.vmap(lambda z: _normalize(z, fallback))((sketch.T @ coef).T)
    u0 = jnp.concatenate([sk, rand], axis=0)
    v0 = u0

    def one(u, v):
        def cond(state):
            i, _, _, _, rel = state
            return (i < num_iters) & (rel > tol)

        def body(state):
            i, u, v, s_prev, _ = state
            tuv = _d2_apply(f, y, u, v)
            s = jnp.linalg.norm(tuv)
            w = _normalize(tuv, jnp.zeros_like(tuv))
            u_new = _normalize(_d2_contract(f, y, w, v), u)
            rel = jnp.abs(s - s_prev) / jnp.where(s > 0, s, 1.0)
            return i + 1, v, u_new, s, rel

        init = (jnp.asarray(0, jnp.int32), u, v, jnp.zeros((), y.dtype), jnp.asarray(jnp.inf, y.dtype))
        i, u, v, s, rel = jax.lax.while_loop(cond, body, init)
        # The last iteration improved (u, v): evaluate them once more.
        s = jnp.maximum(s, jnp.linalg.norm(_d2_apply(f, y, u, v)))
        return s, i, rel

    vals, iters, rels = jax.vmap(one)(u0, v0)
    return _restart_summary(vals, iters, rels, tol)


def _restart_summary(vals, iters, rels, tol):
    best = jnp.argmax(vals)
    top = vals[best]
    at_max = jnp.sum(vals >= top * (1.0 - _AT_MAX_RTOL)).astype(jnp.int32)
    return top, {
        "iterations": iters[best],
        "rel_change": rels[best],
        "converged": rels[best] <= tol,
        "restart_values": vals,
        "num_at_max": at_max,
    }


def _d2_fro_randomized(f, y, key, num_probes, probe):
    """``||T||_F^2 = E |T[u, v]|^2`` for independent ``u, v`` with ``E[u u^T] = E[v v^T] = I``."""
    ku, kv = jax.random.split(key)
    us = _probes(ku, probe, (num_probes, y.size), y.dtype)
    vs = _probes(kv, probe, (num_probes, y.size), y.dtype)
    sq = jnp.sum(jax.vmap(lambda u, v: _d2_apply(f, y, u, v))(us, vs) ** 2, axis=-1)
    return _mean_and_stderr(sq)


def _dense_second_derivative(f, y):
    """Full ``T[i, j, k] = d^2 s_i / dx_j dx_k`` (forward over forward), shape ``(d, d, d)``."""
    return jax.jacfwd(jax.jacfwd(f))(y)


# Eigen-steps that polish the best restart of the dense ascent (each one solves its block
# exactly, so a handful turns linear convergence near the optimum into a few digits more).
_DENSE_POLISH_STEPS = 8


def _dense_d2_operator(tensor, key, tol, num_iters, num_restarts):
    """``max_{|u|=|v|=1} |T[u, v]|`` of a dense tensor symmetric in its last two indices.

    All starts run together as one batched block-coordinate ascent (the alternating scheme of
    :func:`_d2_operator_matrix_free` with dense contractions: one ``(R, d) x (d, d^2)`` matrix
    product per iteration), stopped when every start's relative change is ``<= tol``.
    Starts: the 4 leading left singular vectors of the mode-2 unfolding (HOSVD
    initialisation) and ``num_restarts`` random unit vectors. The best start is then polished
    with eigen-steps, using that for each unit ``w`` the matrix ``M_w = sum_i w_i T[i]`` is
    symmetric, so ``max_{u,v} u^T M_w v = ||M_w||_2 = max_u |u^T M_w u|`` and the norm equals
    ``max_u |T[u, u]|``: ``w <- T[u, u] / |T[u, u]|``, ``u <-`` the eigenvector of ``M_w``
    with the largest ``|eigenvalue|`` (monotone as well).
    """
    d = tensor.shape[0]
    tensor = 0.5 * (tensor + jnp.swapaxes(tensor, 1, 2))
    unfolded = jnp.swapaxes(tensor, 0, 1).reshape(d, d * d)
    # Leading left singular vectors via the d x d Gram matrix (an SVD of the d x d^2 unfolding
    # costs ~1 s at d = 64 on CPU; this eigh costs ~1 ms).
    hosvd = jnp.linalg.eigh(unfolded @ unfolded.T)[1][:, ::-1][:, : min(d, 4)].T
    draws = jax.random.normal(key, (num_restarts, d), tensor.dtype)
    fallback = jnp.ones((d,), tensor.dtype) / math.sqrt(d)
    starts = jax.vmap(lambda z: _normalize(z, fallback))(jnp.concatenate([hosvd, draws], axis=0))
    normalize_rows = jax.vmap(_normalize)

    def cond(state):
        i, _, _, _, rel = state
        return (i < num_iters) & (jnp.max(rel) > tol)

    def body(state):
        i, u, v, s_prev, _ = state
        a = jnp.einsum("ijk,rk->rij", tensor, v)  # T[., ., v] for every start
        tuv = jnp.einsum("rij,rj->ri", a, u)
        s = jnp.linalg.norm(tuv, axis=-1)
        w = normalize_rows(tuv, jnp.zeros_like(tuv))
        u_new = normalize_rows(jnp.einsum("ri,rij->rj", w, a), u)
        rel = jnp.abs(s - s_prev) / jnp.where(s > 0, s, 1.0)
        return i + 1, v, u_new, s, rel

    r = starts.shape[0]
    init = (jnp.asarray(0, jnp.int32), starts, starts, jnp.zeros((r,), tensor.dtype),
            jnp.full((r,), jnp.inf, tensor.dtype))
    iters, u, v, s, rel = jax.lax.while_loop(cond, body, init)
    vals = jnp.maximum(s, jnp.linalg.norm(jnp.einsum("ijk,rj,rk->ri", tensor, u, v), axis=-1))
    best = jnp.argmax(vals)

    def polish(_, uu):
        tuu = jnp.einsum("ijk,j,k->i", tensor, uu, uu)
        w = _normalize(tuu, jnp.zeros_like(tuu))
        evals, evecs = jnp.linalg.eigh(jnp.einsum("i,ijk->jk", w, tensor))
        return evecs[:, jnp.argmax(jnp.abs(evals))]

    start = _normalize(u[best] + jnp.sign(jnp.dot(u[best], v[best])) * v[best], u[best])
    polished = jax.lax.fori_loop(0, _DENSE_POLISH_STEPS, polish, start)
    vals = vals.at[best].max(jnp.linalg.norm(jnp.einsum("ijk,j,k->i", tensor, polished, polished)))
    return _restart_summary(vals, jnp.full((r,), iters), rel, tol)


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
            vals, info = _per_example(lambda y: _jac_spectral_matrix_free(f, y, key, tol, num_iters), x)
        else:
            vals, se = _per_example(lambda y: _jac_fro_hutchinson(f, y, key, num_probes, probe), x)
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
                tensor = _dense_second_derivative(f, y)
                if ord == "fro":
                    return jnp.linalg.norm(tensor.reshape(-1)), {"stderr": jnp.zeros((), y.dtype)}
                return _dense_d2_operator(tensor, key, tol, num_iters, num_restarts)

            vals, info = _per_example(kernel, x, chunk_bytes_per_example=2 * d**3 * itemsize)
            return vals, {"exact": jnp.ones(vals.shape, bool), **info}
        if ord == "operator":
            vals, info = _per_example(
                lambda y: _d2_operator_matrix_free(f, y, key, tol, num_iters, num_restarts), x
            )
        else:
            vals, se = _per_example(lambda y: _d2_fro_randomized(f, y, key, num_probes, probe), x)
            info = {"stderr": se}
        return vals, {"exact": jnp.zeros(vals.shape, bool), **info}

    return eqx.filter_jit(compute)


def _jacobian_setup(score_fn, x, key, *, ord="spectral", method="auto", num_iters=200, tol=1e-5,
                    num_probes=64, probe="rademacher"):
    """Validate the arguments of :func:`jacobian_norm`; return ``(x, key, jitted compute)``."""
    _check_choice("ord", ord, _JAC_ORDS)
    _check_choice("method", method, _METHODS)
    _check_choice("probe", probe, _PROBES)
    num_iters = _check_positive_int("num_iters", num_iters)
    num_probes = _check_positive_int("num_probes", num_probes, 2)
    tol = _check_tol(tol)
    x, key = _prepare(score_fn, x, key)
    method = _resolve_method(method, int(np.prod(x.shape[1:])))
    return x, key, _jacobian_norm_fn(x.shape[1:], ord, method, num_iters, tol, num_probes, probe)


def _second_setup(score_fn, x, key, *, ord="operator", method="auto", num_iters=200, tol=1e-5,
                  num_restarts=None, num_probes=64, probe="rademacher"):
    """Validate the arguments of :func:`second_derivative_norm`; return ``(x, key, jitted compute)``."""
    _check_choice("ord", ord, _D2_ORDS)
    _check_choice("method", method, _METHODS)
    _check_choice("probe", probe, _PROBES)
    num_iters = _check_positive_int("num_iters", num_iters)
    num_probes = _check_positive_int("num_probes", num_probes, 2)
    tol = _check_tol(tol)
    x, key = _prepare(score_fn, x, key)
    method = _resolve_method(method, int(np.prod(x.shape[1:])))
    if num_restarts is None:
        num_restarts = 32 if method == "exact" else 8
    num_restarts = _check_positive_int("num_restarts", num_restarts)
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
        num_iters: maximum power iterations (matrix-free spectral).
        tol: relative-change tolerance of the power iteration.
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
        ValueError: unknown ``ord``/``method``/``probe``, a non-batch ``x``, bad counts.

    Example:
        >>> import jax.numpy as jnp
        >>> score = lambda x, t: -x / (1.0 + t**2)            # N(0, (1 + t^2) I)
        >>> vals = jacobian_norm(score, jnp.ones((2, 3)), 1.0, method="matrix_free")
        >>> [round(float(v), 4) for v in vals]
        [0.5, 0.5]
    """
    x, key, compute = _jacobian_setup(score_fn, x, key, ord=ord, method=method, num_iters=num_iters,
                                      tol=tol, num_probes=num_probes, probe=probe)
    if cond is None:
        vals, info = compute(score_fn, x, jnp.asarray(t), key)
    else:
        vals, info = _with_cond(compute, score_fn, x, cond, jnp.asarray(t), key)
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
        method: ``"exact"``: the dense ``d x d x d`` tensor by ``jacfwd(jacfwd)``; operator norm
            by batched block-coordinate ascent from ``num_restarts`` random starts (default 32)
            plus 4 HOSVD starts, the best one polished by eigen-steps (a dense reference).
            ``"matrix_free"``: operator norm by the alternating higher-order power method with
            nested ``jvp`` and the ``vjp`` of a ``jvp``, from 4 sketched HOSVD starts (a
            randomized range finder with 32 probe pairs) plus ``num_restarts`` random starts
            (default 8), each stopped at relative change ``<= tol`` or after ``num_iters``
            iterations; Frobenius by ``||T||_F^2 = E |D^2 s[u, v]|^2`` over ``num_probes``
            independent probe pairs.
            ``"auto"``: exact for ``d <= 64``, matrix-free above.
        key: PRNG key for start vectors / probes; ``None`` means ``PRNGKey(0)``. The same
            draws serve every example.
        num_iters: maximum iterations per restart (one of ``u``, ``v`` updated per iteration).
        tol: relative-change tolerance per restart.
        num_restarts: random restarts of the operator-norm ascent (see ``method``). The operator
            norm of a 3-tensor is a non-convex maximisation with local maxima; each restart
            finds a local maximum, the largest is returned. ``info["num_at_max"]`` counts the
            restarts that reached it (within 0.1 %): 1 means "found once", consider more.
        num_probes: probe pairs of the randomized Frobenius estimate (>= 2).
        probe: ``"rademacher"`` or ``"gaussian"`` probes.
        return_info: also return a dict of per-example accuracy information.

    Returns:
        ``(B,)`` norms; with ``return_info=True`` a pair ``(norms, info)``: ``"exact"`` (bool);
        operator norm: ``"iterations"``, ``"rel_change"``, ``"converged"`` of the best restart,
        ``"restart_values"`` ``(B, R)`` and ``"num_at_max"``; Frobenius: ``"stderr"``.

    Raises:
        ValueError: unknown ``ord``/``method``/``probe``, a non-batch ``x``, bad counts.

    Example:
        >>> import jax.numpy as jnp
        >>> score = lambda x, t: -x**3                          # T[i,i,i] = -6 x_i
        >>> second_derivative_norm(score, jnp.array([[1.0, 0.0]]), 0.0, method="exact")
        Array([6.], dtype=float32)
    """
    x, key, compute = _second_setup(score_fn, x, key, ord=ord, method=method, num_iters=num_iters,
                                    tol=tol, num_restarts=num_restarts, num_probes=num_probes,
                                    probe=probe)
    if cond is None:
        vals, info = compute(score_fn, x, jnp.asarray(t), key)
    else:
        vals, info = _with_cond(compute, score_fn, x, cond, jnp.asarray(t), key)
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
        >>> directional_second_derivative(score, jnp.array([[2.0]]), 0.0, jnp.array([1.0]))
        Array([[-12.]], dtype=float32)
    """
    x, _ = _prepare(score_fn, x, None)
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
    return _with_cond(_directional_fn(event_shape), score_fn, x, cond, jnp.asarray(t), mapped_args=(v,))


@functools.lru_cache(maxsize=64)
def _directional_fn(event_shape):
    def compute(score_fn, x, t, v):
        f = _flat_score(score_fn, event_shape, t)
        flat = (x.reshape(x.shape[0], -1), v.reshape(x.shape[0], -1))
        out = jax.vmap(lambda y, w: _d2_apply(f, y, w, w))(*flat)
        return out.reshape(x.shape)

    return eqx.filter_jit(compute)


# ------------------------------------------------------------------------------------------
# profiles along the sampling path
# ------------------------------------------------------------------------------------------
QUANTITIES = ("jacobian_spectral", "jacobian_fro", "second_operator", "second_fro")
# sigma power that makes each quantity scale-free: s ~ 1/sigma, Ds ~ 1/sigma^2, D^2 s ~ 1/sigma^3.
_SIGMA_POWER = {"jacobian_spectral": 2, "jacobian_fro": 2, "second_operator": 3, "second_fro": 3}
_SOURCES = ("trajectory", "data", "both")


@dataclasses.dataclass
class RegularityProfile:
    """Summaries of derivative norms of a score on a grid of times (plain, JSON-serialisable).

    Attributes:
        t, lam, alpha, sigma: the grid (increasing ``t``) and the schedule on it.
        results: ``results[source][quantity][weighting][stat]`` is a list over ``t``, with
            ``source`` in ``{"trajectory", "data"}``, ``quantity`` in :data:`QUANTITIES`,
            ``weighting`` ``"raw"`` or ``"weighted"`` (times ``sigma^2`` for first, ``sigma^3``
            for second derivatives) and ``stat`` in ``{"max", "mean", "q50", "q90", "q99"}``
            (statistics over the batch).
        accuracy: ``accuracy[source][quantity][name]``, lists over ``t``: ``"converged_frac"``
            (iterative estimates), ``"min_num_at_max"`` (operator norm restarts reaching the
            maximum), ``"max_rel_stderr"`` (stochastic estimates), ``"exact_frac"``.
        meta: settings (process, d, batch, method, solver, ...).
    """

    t: list
    lam: list
    alpha: list
    sigma: list
    results: dict
    accuracy: dict
    meta: dict

    def to_dict(self) -> dict:
        return dataclasses.asdict(self)

    def to_json(self, path=None, **kwargs) -> str:
        """The profile as JSON text; written to ``path`` too when given."""
        text = json.dumps(self.to_dict(), indent=kwargs.pop("indent", 1), **kwargs)
        if path is not None:
            with open(path, "w") as fh:
                fh.write(text)
        return text

    @classmethod
    def from_dict(cls, data: dict) -> RegularityProfile:
        return cls(**{f.name: data[f.name] for f in dataclasses.fields(cls)})


def _stat_name(q: float) -> str:
    return f"q{100 * q:g}".replace(".", "_")


def _summarise(values: np.ndarray, quantiles) -> dict:
    out = {"max": float(np.max(values)), "mean": float(np.mean(values))}
    for q in quantiles:
        out[_stat_name(q)] = float(np.quantile(values, q))
    return out


def _default_t_grid(process: ForwardProcess, num_times: int):
    from .grids import make_grid

    ts = make_grid("log_snr", process, num_times - 1, process.default_t_start, process.default_t_end)
    return np.asarray(ts)[::-1]


def profile(
    score_fn: Callable,
    process: ForwardProcess,
    *,
    t_grid,
    x_source,
    source: str = "both",
    key=None,
    x_init=None,
    solver="rk4",
    substeps: int = 1,
    quantities: Sequence[str] = QUANTITIES,
    method: str = "auto",
    quantiles: Sequence[float] = (0.5, 0.9, 0.99),
    estimator_kwargs: dict | None = None,
    cond=None,
) -> RegularityProfile:
    """Derivative norms of ``score_fn`` on a grid of times, along ODE trajectories and at noised data.

    Two sources of points ``x`` at each grid time ``t``:

    * ``"trajectory"``: the states of probability-flow ODE trajectories, from
      :func:`jaxode_diffusion.sampling.sample` with ``return_trajectory=True`` run on the grid
      itself (refined ``substeps`` times, linearly in ``t`` between grid points, for accuracy),
      started at ``max(t_grid)`` from ``x_init`` (default: ``process.prior_sample`` with the
      batch shape of ``x_source``);
    * ``"data"``: forward-noised data ``alpha(t) x0 + sigma(t) eps`` with ``x0 = x_source`` and
      one fixed draw of ``eps`` for all ``t`` (common random numbers: smoother curves).

    Args:
        score_fn: ``score_fn(x, t)``.
        process: the forward process.
        t_grid: 1-D array of times (any order; strictly monotone, inside the process's range).
        x_source: ``(B, *event_shape)`` data samples (source ``"data"``); for
            ``source="trajectory"`` only its shape and dtype are used.
        source: ``"trajectory"``, ``"data"`` or ``"both"``.
        key: PRNG key (prior draw, noise, estimator probes); ``None`` means ``PRNGKey(0)``.
        x_init: optional ``(B, *event_shape)`` start of the trajectories at ``max(t_grid)``.
        solver: sampler for the trajectories (see :func:`~jaxode_diffusion.sampling.sample`).
        substeps: solver steps per grid interval.
        quantities: subset of :data:`QUANTITIES`.
        method: ``"exact"``, ``"matrix_free"`` or ``"auto"`` (as in :func:`jacobian_norm`).
        quantiles: batch quantiles to report (besides max and mean).
        estimator_kwargs: extra keyword arguments per quantity, e.g.
            ``{"second_operator": {"num_restarts": 16}}``.
        cond: optional condition of a conditional (or guided) score ``score_fn(x, t, cond)``,
            per example (leading axis ``B``) or shared (scalars); the trajectories are sampled
            with it and every derivative is taken at it.

    Returns:
        A :class:`RegularityProfile` (``json.dumps(p.to_dict())`` works).

    Raises:
        ValueError: unknown ``source``/``quantities``/``method``, bad grid or shapes.

    Example:
        >>> import jax
        >>> from jaxode_diffusion import GaussianMixture, VPLinear
        >>> gm, vp = GaussianMixture.ring(4), VPLinear()
        >>> p = profile(gm.score_fn(vp), vp, t_grid=[0.01, 0.1, 1.0],
        ...             x_source=gm.sample(jax.random.PRNGKey(1), 8), source="data")
        >>> len(p.results["data"]["jacobian_spectral"]["weighted"]["q50"])
        3
    """
    from .grids import validate_grid

    _check_choice("source", source, _SOURCES)
    _check_choice("method", method, _METHODS)
    quantities = tuple(quantities)
    for q in quantities:
        _check_choice("quantities", q, QUANTITIES)
    if not quantities:
        raise ValueError("quantities must name at least one of " f"{list(QUANTITIES)}.")
    substeps = _check_positive_int("substeps", substeps)
    for q in quantiles:
        if not 0.0 <= float(q) <= 1.0:
            raise ValueError(f"quantiles must lie in [0, 1], got {q!r}.")
    estimator_kwargs = dict(estimator_kwargs or {})
    for q in estimator_kwargs:
        _check_choice("estimator_kwargs key", q, QUANTITIES)
    x_source = jnp.asarray(x_source)
    if x_source.ndim < 2:
        raise ValueError(f"x_source must have shape (B, *event_shape); got {x_source.shape}.")
    if not jnp.issubdtype(x_source.dtype, jnp.floating):
        x_source = x_source.astype(jnp.float64 if jax.config.jax_enable_x64 else jnp.float32)
    key = jax.random.PRNGKey(0) if key is None else key
    k_prior, k_noise, k_est = jax.random.split(key, 3)

    ts_desc = validate_grid(jnp.asarray(t_grid, x_source.dtype), process, name="t_grid")
    ts_asc = np.asarray(ts_desc)[::-1]
    n_t = ts_asc.shape[0]
    d = int(np.prod(x_source.shape[1:]))
    resolved = _resolve_method(method, d)

    # Points per source, each (n_t, B, *event) in increasing t.
    points: dict[str, Any] = {}
    if source in ("data", "both"):
        eps = jax.random.normal(k_noise, x_source.shape, x_source.dtype)
        points["data"] = [process.marginal(x_source, jnp.asarray(t, x_source.dtype), eps) for t in ts_asc]
    if source in ("trajectory", "both"):
        from .sampling import sample

        if x_init is None:
            x_init = process.prior_sample(k_prior, x_source.shape, t=ts_desc[0], dtype=x_source.dtype)
        x_init = jnp.asarray(x_init, x_source.dtype)
        if x_init.shape != x_source.shape:
            raise ValueError(f"x_init must have shape {x_source.shape} like x_source; got {x_init.shape}.")
        frac = jnp.linspace(0.0, 1.0, substeps + 1, dtype=ts_desc.dtype)[:-1]
        fine = (ts_desc[:-1, None] + frac[None, :] * (ts_desc[1:] - ts_desc[:-1])[:, None]).reshape(-1)
        fine = jnp.concatenate([fine, ts_desc[-1:]])
        cond_kw = {} if cond is None else {"cond": cond}
        sol = sample(score_fn, process, x_init, solver=solver, grid=fine, return_trajectory=True, **cond_kw)
        traj = sol.trajectory[::substeps]
        assert traj.shape[0] == n_t
        points["trajectory"] = [traj[n_t - 1 - i] for i in range(n_t)]

    # One compiled estimator per quantity, reused at every t (t is a traced argument).
    estimators = {}
    for q in quantities:
        setup = _jacobian_setup if q.startswith("jacobian") else _second_setup
        try:
            _, _, estimators[q] = setup(score_fn, x_source, k_est, ord=q.split("_", 1)[1],
                                        method=resolved, **estimator_kwargs.get(q, {}))
        except TypeError as err:
            raise ValueError(f"estimator_kwargs[{q!r}] = {estimator_kwargs.get(q)!r}: {err}") from None

    sig = np.asarray([float(process.sigma(jnp.asarray(t))) for t in ts_asc])
    results: dict = {}
    accuracy: dict = {}
    for src, xs in points.items():
        results[src] = {q: {"raw": {}, "weighted": {}} for q in quantities}
        accuracy[src] = {q: {} for q in quantities}
        per_t = {q: [] for q in quantities}
        acc_t = {q: [] for q in quantities}
        for i, t in enumerate(ts_asc):
            for q in quantities:
                args = (jnp.asarray(t, x_source.dtype), k_est)
                if cond is None:
                    vals, info = estimators[q](score_fn, xs[i], *args)
                else:
                    vals, info = _with_cond(estimators[q], score_fn, xs[i], cond, *args)
                vals = np.asarray(vals, np.float64)
                per_t[q].append((_summarise(vals, quantiles),
                                 _summarise(vals * sig[i] ** _SIGMA_POWER[q], quantiles)))
                acc = {"exact_frac": float(np.mean(np.asarray(info["exact"])))}
                if "converged" in info:
                    acc["converged_frac"] = float(np.mean(np.asarray(info["converged"])))
                if "num_at_max" in info:
                    acc["min_num_at_max"] = int(np.min(np.asarray(info["num_at_max"])))
                if "stderr" in info:
                    rel = np.asarray(info["stderr"], np.float64) / np.maximum(vals, np.finfo(np.float64).tiny)
                    acc["max_rel_stderr"] = float(np.max(rel))
                acc_t[q].append(acc)
        for q in quantities:
            for w, idx in (("raw", 0), ("weighted", 1)):
                for stat in per_t[q][0][idx]:
                    results[src][q][w][stat] = [row[idx][stat] for row in per_t[q]]
            for name in acc_t[q][0]:
                accuracy[src][q][name] = [row[name] for row in acc_t[q]]

    meta = {
        "process": type(process).__name__,
        "dim": d,
        "event_shape": list(x_source.shape[1:]),
        "batch": int(x_source.shape[0]),
        "method": resolved,
        "source": source,
        "solver": str(solver),
        "substeps": substeps,
        "quantities": list(quantities),
        "quantiles": [float(q) for q in quantiles],
        "dtype": str(x_source.dtype),
        "sigma_power": {q: _SIGMA_POWER[q] for q in quantities},
    }
    return RegularityProfile(
        t=[float(t) for t in ts_asc],
        lam=[float(process.lam(jnp.asarray(t))) for t in ts_asc],
        alpha=[float(process.alpha(jnp.asarray(t))) for t in ts_asc],
        sigma=[float(s) for s in sig],
        results=results,
        accuracy=accuracy,
        meta=meta,
    )


_LABELS = {
    "jacobian_spectral": ("$\\|Ds\\|_2$", "$\\sigma^2\\|Ds\\|_2$"),
    "jacobian_fro": ("$\\|Ds\\|_F$", "$\\sigma^2\\|Ds\\|_F$"),
    "second_operator": ("$\\|D^2s\\|_{op}$", "$\\sigma^3\\|D^2s\\|_{op}$"),
    "second_fro": ("$\\|D^2s\\|_F$", "$\\sigma^3\\|D^2s\\|_F$"),
}


def plot_profile(profile, path, *, stat: str = "q50", band: str = "max", title: str | None = None):
    """Plot a :class:`RegularityProfile` to a PNG: raw and sigma-weighted norms vs ``t`` and ``lambda``.

    A 2 x 4 grid, log ``y`` axes: rows raw / weighted (``sigma^2 ||Ds||``, ``sigma^3 ||D^2 s||``);
    columns first derivative against ``t`` (log axis) and against ``lambda = log(alpha/sigma)``,
    then the same for the second derivative. Colours tell the norm, solid lines trajectory
    points and dashed lines noised data; a line is the batch statistic ``stat``, the shaded
    band reaches up to ``band``. Drawn on a bare :class:`matplotlib.figure.Figure` (Agg
    canvas), so the global backend is left alone.

    Args:
        profile: a :class:`RegularityProfile` or its ``to_dict()``.
        path: output file (``.png``).
        stat, band: statistics to draw (keys of the results, e.g. ``"q50"``, ``"q90"``, ``"max"``;
            ``band=None`` draws no band).
        title: figure title (default: from the profile's metadata).

    Returns:
        The path written.

    Raises:
        ValueError: if ``stat`` or ``band`` is not a statistic of the profile.
    """
    from matplotlib.figure import Figure

    data = profile.to_dict() if isinstance(profile, RegularityProfile) else dict(profile)
    t = np.asarray(data["t"])
    lam = np.asarray(data["lam"])
    fig = Figure(figsize=(20, 8.5), constrained_layout=True)
    axes = fig.subplots(2, 4)
    colors = {"jacobian_spectral": "C0", "jacobian_fro": "C1", "second_operator": "C2", "second_fro": "C3"}
    styles = {"trajectory": "-", "data": "--"}
    xaxes = ((t, "t (log scale)", True), (lam, "$\\lambda = \\log(\\alpha/\\sigma)$", False))
    for row, weighting in enumerate(("raw", "weighted")):
        for group, prefix in enumerate(("jacobian", "second")):
            for k, (xvals, xlabel, logx) in enumerate(xaxes):
                ax = axes[row, 2 * group + k]
                drawn = False
                for src, by_q in data["results"].items():
                    for q, by_w in by_q.items():
                        if not q.startswith(prefix):
                            continue
                        stats = by_w[weighting]
                        for name in (stat, band):
                            if name is not None and name not in stats:
                                raise ValueError(
                                    f"{name!r} is not a statistic of the profile; "
                                    f"choose from {sorted(stats)}."
                                )
                        y = np.asarray(stats[stat], dtype=float)
                        ax.plot(xvals, y, styles.get(src, ":"), color=colors[q], marker=".",
                                label=f"{_LABELS[q][row]} {src}")
                        if band is not None:
                            ax.fill_between(xvals, y, np.asarray(stats[band], dtype=float),
                                            color=colors[q], alpha=0.08, linewidth=0)
                        drawn = True
                if not drawn:
                    ax.set_visible(False)
                    continue
                ax.set_yscale("log")
                if logx:
                    ax.set_xscale("log")
                ax.set_xlabel(xlabel)
                what = "first derivative" if prefix == "jacobian" else "second derivative"
                scale = "" if row == 0 else (" x sigma^2" if prefix == "jacobian" else " x sigma^3")
                ax.set_ylabel(f"{what} norm{scale}")
                ax.set_title(f"batch {stat} (band to {band})" if band else f"batch {stat}", fontsize=9)
                ax.grid(True, which="major", alpha=0.3)
                ax.legend(fontsize=8)
    meta = data.get("meta", {})
    fig.suptitle(title or f"Score regularity: {meta.get('process', '')}, d={meta.get('dim', '?')}, "
                 f"batch={meta.get('batch', '?')}, method={meta.get('method', '?')}")
    fig.savefig(path, dpi=100)
    return path
