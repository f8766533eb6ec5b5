"""Single-example kernels of the regularity estimators: ``f: R^d -> R^d`` at one flat point ``y``.

Matrix-free power iterations (Jacobian spectral norm, the higher-order power method for the
second derivative's operator norm), Hutchinson-type Frobenius estimates, and the dense
references (``jacfwd(jacfwd)`` tensor and its batched block-coordinate ascent). Every function
here works on one example; :mod:`jaxode_diffusion.analysis.regularity.estimators` maps them over a batch,
validates arguments and caches the compiled programs.

References:
    Power iteration: Golub & Van Loan, *Matrix Computations*, 4th ed., sec. 7.3 and 8.2.
    Hutchinson's trace estimator: Hutchinson (1990), Commun. Stat. Simul. Comput. 19(2).
    Higher-order power method (alternating least squares for the best rank-1 approximation):
    De Lathauwer, De Moor & Vandewalle (2000), SIAM J. Matrix Anal. Appl. 21(4).
"""

from __future__ import annotations

import math

import jax
import jax.numpy as jnp

__all__ = [
    "normalize",
    "draw_probes",
    "mean_and_stderr",
    "jac_spectral_matrix_free",
    "jac_fro_hutchinson",
    "d2_apply",
    "d2_contract",
    "d2_operator_matrix_free",
    "restart_summary",
    "d2_fro_randomized",
    "dense_second_derivative",
    "dense_d2_operator",
]

# A restart counts as having reached the maximum when within this relative distance of it.
_AT_MAX_RTOL = 1e-3


def normalize(v, fallback):
    """``v / |v|``, or ``fallback`` where ``v`` is zero.

    Example:
        >>> import jax.numpy as jnp
        >>> [round(float(v), 6) for v in normalize(jnp.array([3.0, 4.0]), jnp.zeros(2))]
        [0.6, 0.8]
    """
    n = jnp.linalg.norm(v)
    ok = n > 0
    return jnp.where(ok, v / jnp.where(ok, n, 1.0), fallback)


def draw_probes(key, kind: str, shape, dtype):
    """Probe vectors of ``shape``: Rademacher (+-1) or standard Gaussian entries.

    Example:
        >>> import jax, jax.numpy as jnp
        >>> v = draw_probes(jax.random.PRNGKey(0), "rademacher", (4, 3), jnp.float32)
        >>> v.shape, sorted(set(abs(v).ravel().tolist()))
        ((4, 3), [1.0])
    """
    if kind == "rademacher":
        return jax.random.rademacher(key, shape, dtype=dtype)
    return jax.random.normal(key, shape, dtype)


def mean_and_stderr(sq):
    """Estimate ``||A|| = sqrt(E[q])`` from samples ``q`` and its standard error (delta method).

    Example:
        >>> import jax.numpy as jnp
        >>> [round(float(v), 6) for v in mean_and_stderr(jnp.array([4.0, 4.0, 4.0]))]
        [2.0, 0.0]
    """
    n = sq.shape[0]
    mean = jnp.mean(sq)
    se_sq = jnp.std(sq, ddof=1) / jnp.sqrt(n)
    norm = jnp.sqrt(mean)
    se = jnp.where(norm > 0, se_sq / (2.0 * jnp.where(norm > 0, norm, 1.0)), 0.0)
    return norm, se


# ------------------------------------------------------------------------------------------
# single-example kernels (y: flat (d,) point; f: R^d -> R^d)
# ------------------------------------------------------------------------------------------
def jac_spectral_matrix_free(f, y, key, tol, num_iters):
    """Power iteration on ``J^T J`` with one ``jvp`` and one transposed ``jvp`` per iteration.

    The estimate ``|J v_k|`` (``v_k`` unit) is the square root of the Rayleigh quotient of
    ``J^T J``: it increases monotonically to ``sigma_1`` with error ``O((sigma_2/sigma_1)^{4k})``.
    Stopping rule: relative change of the estimate ``<= tol``; when ``sigma_2`` is close to
    ``sigma_1`` the change underestimates the remaining error by about ``1/(1 - (s2/s1)^2)``.

    Example:
        >>> import jax, jax.numpy as jnp
        >>> f = lambda y: jnp.array([2.0 * y[0], y[1]])           # J = diag(2, 1)
        >>> s, info = jac_spectral_matrix_free(f, jnp.ones(2), jax.random.PRNGKey(0), 1e-10, 100)
        >>> round(float(s), 4), bool(info["converged"])
        (2.0, True)
    """
    _, jvp_fn = jax.linearize(f, y)
    vjp_fn = jax.linear_transpose(jvp_fn, y)
    v0 = normalize(jax.random.normal(key, y.shape, y.dtype), jnp.ones_like(y) / math.sqrt(y.size))

    def cond(state):
        i, _, _, rel = state
        return (i < num_iters) & (rel > tol)

    def body(state):
        i, v, s_prev, _ = state
        jv = jvp_fn(v)
        s = jnp.linalg.norm(jv)
        (g,) = vjp_fn(jv)
        v_new = normalize(g, v)
        rel = jnp.abs(s - s_prev) / jnp.where(s > 0, s, 1.0)
        return i + 1, v_new, s, rel

    init = (jnp.asarray(0, jnp.int32), v0, jnp.zeros((), y.dtype), jnp.asarray(jnp.inf, y.dtype))
    i, _, s, rel = jax.lax.while_loop(cond, body, init)
    return s, {"iterations": i, "rel_change": rel, "converged": rel <= tol}


def jac_fro_hutchinson(f, y, key, num_probes, probe):
    """``||J||_F^2 = E |J v|^2`` for ``E[v v^T] = I`` (Rademacher or Gaussian ``v``).

    Example:
        >>> import jax, jax.numpy as jnp
        >>> key = jax.random.PRNGKey(0)
        >>> norm, se = jac_fro_hutchinson(lambda y: 2.0 * y, jnp.ones(3), key, 8, "rademacher")
        >>> round(float(norm), 4), round(float(se), 4)                 # ||2 I||_F = sqrt(12), exact here
        (3.4641, 0.0)
    """
    _, jvp_fn = jax.linearize(f, y)
    vs = draw_probes(key, probe, (num_probes, y.size), y.dtype)
    sq = jnp.sum(jax.vmap(jvp_fn)(vs) ** 2, axis=-1)
    return mean_and_stderr(sq)


def d2_apply(f, y, u, v):
    """``D^2 s[u, v]``: nested forward mode (jvp of the jvp).

    Example:
        >>> import jax.numpy as jnp
        >>> d2_apply(lambda y: y**2, jnp.ones(2), jnp.ones(2), jnp.array([1.0, 3.0])).tolist()  # 2 u_i v_i
        [2.0, 6.0]
    """
    return jax.jvp(lambda z: jax.jvp(f, (z,), (u,))[1], (y,), (v,))[1]


def d2_contract(f, y, w, v):
    """``T[w, ., v]_j = sum_ik w_i T[i, j, k] v_k``: reverse mode over the jvp ``z -> J(z) v``.

    The vjp gives ``sum_ij w_i T[i, j, k] v_j``; symmetry of ``T`` in its last two indices
    (mixed partials commute) makes it the contraction above.

    Example:
        >>> import jax.numpy as jnp
        >>> d2_contract(lambda y: y**2, jnp.ones(2), jnp.array([1.0, 2.0]), jnp.ones(2)).tolist()  # 2 w_j v_j
        [2.0, 4.0]
    """
    _, vjp_fn = jax.vjp(lambda z: jax.jvp(f, (z,), (v,))[1], y)
    return vjp_fn(w)[0]


# Sketched starts of the matrix-free operator norm: probe pairs and starts kept. 32 probes
# recover the dense HOSVD start's basin in 5 of 6 random width-256 MLPs at d in {64, 256}.
_SKETCH_PROBES = 32
_SKETCH_STARTS = 4


def d2_operator_matrix_free(f, y, key, tol, num_iters, num_restarts):
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

    Example:
        >>> import jax, jax.numpy as jnp
        >>> s, info = d2_operator_matrix_free(lambda y: -y**3, jnp.array([1.0, 0.0]), jax.random.PRNGKey(0),
        ...                                   1e-10, 200, 2)
        >>> round(float(s), 4)                                      # T[0, 0, 0] = -6, the rest 0
        6.0
    """
    d = y.size
    ku, ka, kb = jax.random.split(key, 3)
    fallback = jnp.ones((d,), y.dtype) / math.sqrt(d)
    rand = jax.vmap(lambda z: normalize(z, fallback))(jax.random.normal(ku, (num_restarts, d), y.dtype))
    # Sketched HOSVD starts: the columns T[a_p, ., b_p] of the mode-2 unfolding applied to
    # random rank-one test vectors span its dominant left singular space (randomized range
    # finder); the leading left singular vectors of that d x P sketch, found from its P x P
    # Gram matrix, play the role of the dense path's HOSVD starts. Random starts alone often
    # stall at a local maximum in high dimension (d = 256 MLP: 0.886 vs the global 0.962).
    a = jax.random.normal(ka, (_SKETCH_PROBES, d), y.dtype)
    b = jax.random.normal(kb, (_SKETCH_PROBES, d), y.dtype)
    sketch = jax.vmap(lambda w, v: d2_contract(f, y, w, v))(a, b)  # (P, d)
    coef = jnp.linalg.eigh(sketch @ sketch.T)[1][:, ::-1][:, : min(d, _SKETCH_STARTS)]
    sk = jax.vmap(lambda z: normalize(z, fallback))((sketch.T @ coef).T)
    u0 = jnp.concatenate([sk, rand], axis=0)
    v0 = u0

    def one(u, v):
        def cond(state):
            i, _, _, _, rel = state
            return (i < num_iters) & (rel > tol)

        def body(state):
            i, u, v, s_prev, _ = state
            tuv = d2_apply(f, y, u, v)
            s = jnp.linalg.norm(tuv)
            w = normalize(tuv, jnp.zeros_like(tuv))
            u_new = normalize(d2_contract(f, y, w, v), u)
            rel = jnp.abs(s - s_prev) / jnp.where(s > 0, s, 1.0)
            return i + 1, v, u_new, s, rel

        init = (jnp.asarray(0, jnp.int32), u, v, jnp.zeros((), y.dtype), jnp.asarray(jnp.inf, y.dtype))
        i, u, v, s, rel = jax.lax.while_loop(cond, body, init)
        # The last iteration improved (u, v): evaluate them once more.
        s = jnp.maximum(s, jnp.linalg.norm(d2_apply(f, y, u, v)))
        return s, i, rel

    vals, iters, rels = jax.vmap(one)(u0, v0)
    return restart_summary(vals, iters, rels, tol)


def restart_summary(vals, iters, rels, tol):
    """The best of several restarts and its accuracy info (``num_at_max``: restarts within 0.1 % of it).

    Example:
        >>> import jax.numpy as jnp
        >>> top, info = restart_summary(jnp.array([1.0, 3.0, 2.9999]), jnp.array([5, 7, 9]),
        ...                             jnp.array([0.0, 1e-9, 1e-9]), 1e-6)
        >>> float(top), int(info["iterations"]), int(info["num_at_max"])
        (3.0, 7, 2)
    """
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


def d2_fro_randomized(f, y, key, num_probes, probe):
    """``||T||_F^2 = E |T[u, v]|^2`` for independent ``u, v`` with ``E[u u^T] = E[v v^T] = I``.

    Example:
        >>> import jax, jax.numpy as jnp
        >>> norm, se = d2_fro_randomized(lambda y: y**2, jnp.ones(2), jax.random.PRNGKey(0), 8, "rademacher")
        >>> round(float(norm), 4), round(float(se), 4)                 # T = 2 delta_ijk: sqrt(8), exact here
        (2.8284, 0.0)
    """
    ku, kv = jax.random.split(key)
    us = draw_probes(ku, probe, (num_probes, y.size), y.dtype)
    vs = draw_probes(kv, probe, (num_probes, y.size), y.dtype)
    sq = jnp.sum(jax.vmap(lambda u, v: d2_apply(f, y, u, v))(us, vs) ** 2, axis=-1)
    return mean_and_stderr(sq)


def dense_second_derivative(f, y):
    """Full ``T[i, j, k] = d^2 s_i / dx_j dx_k`` (forward over forward), shape ``(d, d, d)``.

    Example:
        >>> import jax.numpy as jnp
        >>> t = dense_second_derivative(lambda y: y**2, jnp.ones(2))
        >>> t.shape, float(t[1, 1, 1]), float(t[0, 1, 1])
        ((2, 2, 2), 2.0, 0.0)
    """
    return jax.jacfwd(jax.jacfwd(f))(y)


# Eigen-steps that polish the best restart of the dense ascent (each one solves its block
# exactly, so a handful turns linear convergence near the optimum into a few digits more).
_DENSE_POLISH_STEPS = 8


def dense_d2_operator(tensor, key, tol, num_iters, num_restarts):
    """``max_{|u|=|v|=1} |T[u, v]|`` of a dense tensor symmetric in its last two indices.

    All starts run together as one batched block-coordinate ascent (the alternating scheme of
    :func:`d2_operator_matrix_free` with dense contractions: one ``(R, d) x (d, d^2)`` matrix
    product per iteration), stopped when every start's relative change is ``<= tol``.
    Starts: the 4 leading left singular vectors of the mode-2 unfolding (HOSVD
    initialisation) and ``num_restarts`` random unit vectors. The best start is then polished
    with eigen-steps, using that for each unit ``w`` the matrix ``M_w = sum_i w_i T[i]`` is
    symmetric, so ``max_{u,v} u^T M_w v = ||M_w||_2 = max_u |u^T M_w u|`` and the norm equals
    ``max_u |T[u, u]|``: ``w <- T[u, u] / |T[u, u]|``, ``u <-`` the eigenvector of ``M_w``
    with the largest ``|eigenvalue|`` (monotone as well).

    Example:
        >>> import jax, jax.numpy as jnp
        >>> t = dense_second_derivative(lambda y: -y**3, jnp.array([1.0, 0.0]))
        >>> top, info = dense_d2_operator(t, jax.random.PRNGKey(0), 1e-10, 200, 4)
        >>> round(float(top), 4)
        6.0
    """
    d = tensor.shape[0]
    tensor = 0.5 * (tensor + jnp.swapaxes(tensor, 1, 2))
    unfolded = jnp.swapaxes(tensor, 0, 1).reshape(d, d * d)
    # Leading left singular vectors via the d x d Gram matrix: far cheaper than an SVD of the
    # d x d^2 unfolding (timings in benchmarks/README.md).
    hosvd = jnp.linalg.eigh(unfolded @ unfolded.T)[1][:, ::-1][:, : min(d, 4)].T
    draws = jax.random.normal(key, (num_restarts, d), tensor.dtype)
    fallback = jnp.ones((d,), tensor.dtype) / math.sqrt(d)
    starts = jax.vmap(lambda z: normalize(z, fallback))(jnp.concatenate([hosvd, draws], axis=0))
    normalize_rows = jax.vmap(normalize)

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
        w = normalize(tuu, jnp.zeros_like(tuu))
        evals, evecs = jnp.linalg.eigh(jnp.einsum("i,ijk->jk", w, tensor))
        return evecs[:, jnp.argmax(jnp.abs(evals))]

    start = normalize(u[best] + jnp.sign(jnp.dot(u[best], v[best])) * v[best], u[best])
    polished = jax.lax.fori_loop(0, _DENSE_POLISH_STEPS, polish, start)
    vals = vals.at[best].max(jnp.linalg.norm(jnp.einsum("ijk,j,k->i", tensor, polished, polished)))
    return restart_summary(vals, jnp.full((r,), iters), rel, tol)

