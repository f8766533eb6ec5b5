"""Grids placed by the model's *measured* local error: dynamic programming on a cost matrix (GITS).

Named grids are formulas; a learned grid (:func:`~jaxode_diffusion.tuning.grid_optimization.optimize_grid`)
needs gradients through the sampler. This module builds a grid for one solver, one model and one
step count from measurements alone, following the idea of GITS (Chen, Zhou, Gao, Zhu, Wang, Liu,
Wang & Liu, "On the Trajectory Regularity of ODE-based Diffusion Sampling", ICML 2024):

1. a teacher trajectory of a small pilot batch: ``x0-lambda:rk4`` on a fine log-SNR grid, its states
   kept at ``K + 1`` candidate nodes ``t_0 = t_start > ... > t_K = t_end`` uniform in
   ``lambda = log(alpha / sigma)``;
2. a cost matrix ``C[i, j]`` (``i < j``): the RMS over the batch of the local error of one step of
   the cost solver from the teacher's state at ``t_i`` to ``t_j``, against the teacher at ``t_j``
   (``K (K + 1) / 2`` steps, batched);
3. the ``N``-step path ``0 = i_0 < i_1 < ... < i_N = K`` that minimises ``sum_n C[i_{n-1}, i_n]``,
   found exactly by dynamic programming (``O(N K^2)``).

The sum of local errors bounds the global error up to how the flow propagates them, so the grid is
a heuristic in the same sense as adaptive step-size control (it equidistributes nothing by
assumption, and needs no order or asymptotic error constant: at 5-10 NFE the steps are far outside
the asymptotic regime, which is why a measured cost is used rather than ``h^{p+1}`` times a
derivative). Multistep solvers' single steps from the teacher are their first (start-up) step; the
cost solver can be set separately (``cost_solver``).

An error grid is a candidate, not a default: rank the error grids together with the named grids
on a pilot batch (:func:`~jaxode_diffusion.tuning.autogrid.choose_grid` with ``error_grids=True``).
A multistep solver extrapolates from its previous steps, which single-step costs do not see, so an
unconstrained least-error path (short steps, then a long one) can suit it badly; ``max_ratio``
limits that. Measurements: ``benchmarks/README.md`` (``benchmarks/error_grid.py``).

Cost: one teacher solve of ``num_pilot`` draws (``4 * K * teacher_substeps`` evaluations) and
``K (K + 1) / 2`` single steps of the cost solver on the same batch.

Example:
    >>> import jax, jaxode_diffusion as jd
    >>> from jaxode_diffusion.tuning.error_grids import error_grid
    >>> vp = jd.VPLinear()
    >>> gm = jd.GaussianMixture.random(jax.random.PRNGKey(0), 2, 2)
    >>> x = vp.prior_sample(jax.random.PRNGKey(1), (16, 2))
    >>> g = error_grid(gm.score_fn(vp), vp, x, "dpmpp_2s", 4, num_nodes=12)
    >>> g.ts.shape, bool(g.ts[0] > g.ts[-1])
    ((5,), True)
"""

from __future__ import annotations

import dataclasses
import math

import jax
import jax.numpy as jnp
import numpy as np

from jaxode_diffusion.sampling.grids import check_num_steps
from jaxode_diffusion.sampling.core import get_solver, make_times, solve

__all__ = [
    "ErrorGrid", "error_grid", "error_grid_candidates", "equidistributed_grid", "local_error_costs", "min_cost_path",
    "proxy_solver", "teacher_states",
]


@dataclasses.dataclass(frozen=True)
class ErrorGrid:
    """The result of :func:`error_grid`.

    Attributes:
        ts: the grid, ``(num_steps + 1,)`` decreasing times from ``t_start`` to ``t_end`` (NumPy,
            float64); pass it as ``sample(..., grid=ts, num_steps=None)`` or ``solve(..., ts)``.
        nodes: the chosen indices into the candidate nodes (``0`` and ``num_nodes`` included).
        node_ts: the candidate node times, ``(num_nodes + 1,)``.
        costs: the ``(num_nodes + 1, num_nodes + 1)`` cost matrix (``inf`` below the diagonal and for
            non-finite steps).
        total_cost: the path's sum of local errors (the minimised quantity).
        solver, cost_solver: names; num_steps, num_pilot.
    """

    ts: np.ndarray
    nodes: tuple
    node_ts: np.ndarray
    costs: np.ndarray
    total_cost: float
    solver: str
    cost_solver: str
    num_steps: int
    num_pilot: int


def _solver_name(solver) -> str:
    return str(getattr(get_solver(solver), "name", solver))


def _candidate_nodes(process, num_steps, num_nodes, t_start, t_end, dtype):
    """``(K, node_ts)``: ``K`` candidate intervals uniform in log-SNR (default ``max(40, 4 N)``)."""
    k = int(num_nodes or max(40, 4 * num_steps))
    if k < num_steps:
        raise ValueError(f"num_nodes={k} < num_steps={num_steps}: need at least one candidate interval per step.")
    return k, make_times(process, num_steps=k, t_start=t_start, t_end=t_end, grid="log_snr").astype(dtype)


def teacher_states(score_fn, process, x_pilot, node_ts, *, teacher_substeps=8):
    """The teacher's states at the candidate nodes: ``x0-lambda:rk4`` from ``x_pilot`` at
    ``node_ts[0]``, ``teacher_substeps`` steps uniform in log-SNR between consecutive nodes.

    Returns:
        ``(K + 1, B, *event_shape)`` states at ``node_ts`` (``x_pilot`` first).
    """
    node_ts = jnp.asarray(node_ts, x_pilot.dtype)
    if node_ts.ndim != 1 or node_ts.shape[0] < 2 or not bool(jnp.all(jnp.diff(node_ts) < 0)):
        raise ValueError(f"node_ts: need at least 2 strictly decreasing times, got {np.asarray(node_ts)}.")
    s = int(teacher_substeps)
    if s < 1:
        raise ValueError(f"teacher_substeps={teacher_substeps!r}: need an int >= 1 (e.g. 8).")
    lam = process.lam(node_ts)
    frac = jnp.arange(s, dtype=node_ts.dtype) / s
    fine_lam = (lam[:-1, None] + frac[None, :] * (lam[1:] - lam[:-1])[:, None]).reshape(-1)
    fine = jnp.concatenate([node_ts[:1], process.t_of_lambda(fine_lam[1:]), node_ts[-1:]])
    fine = fine.at[::s].set(node_ts)  # the nodes exactly
    return solve(score_fn, process, x_pilot, fine, "x0-lambda:rk4", return_trajectory=True).trajectory[::s]


def local_error_costs(score_fn, process, x_pilot, cost_solver, node_ts, *, teacher=None, teacher_substeps=8,
                      max_span=None, chunk=256):
    """Cost matrix of one-step local errors between candidate nodes, against a teacher trajectory.

    The matrix depends on the nodes and the cost solver, not on the number of steps: compute it once
    and call :func:`min_cost_path` for every step count.

    Args:
        score_fn, process: the model and its forward process.
        x_pilot: ``(B, *event_shape)`` draws at ``node_ts[0]``.
        cost_solver: the solver (name or object) whose single steps are measured.
        node_ts: ``(K + 1,)`` decreasing candidate times.
        teacher: the teacher's states at the nodes (:func:`teacher_states`; computed when ``None``).
        teacher_substeps: as in :func:`teacher_states`.
        max_span: only steps spanning at most this many nodes are measured (others cost ``inf``).
        chunk: steps measured per batched call (memory: ``chunk * B * event_size`` numbers).

    Returns:
        ``(C, teacher)``: the ``(K + 1, K + 1)`` NumPy cost matrix (RMS over the batch of the
        one-step error, ``inf`` where not measured or not finite) and the teacher's states at the
        nodes, ``(K + 1, B, *event_shape)``.
    """
    node_ts = jnp.asarray(node_ts, x_pilot.dtype)
    traj = (teacher_states(score_fn, process, x_pilot, node_ts, teacher_substeps=teacher_substeps)
            if teacher is None else jnp.asarray(teacher, x_pilot.dtype))
    k = node_ts.shape[0] - 1
    if traj.shape != (k + 1, *x_pilot.shape):
        raise ValueError(f"teacher: expected shape {(k + 1, *x_pilot.shape)} (one state per node), got {traj.shape}.")
    solver = get_solver(cost_solver)
    span = k if max_span is None else int(max_span)
    pairs = np.array([(i, j) for i in range(k) for j in range(i + 1, min(k, i + span) + 1)], np.int32)

    def one(ij):
        i, j = ij[0], ij[1]
        y = solve(score_fn, process, traj[i], jnp.stack([node_ts[i], node_ts[j]]), solver, throw=False).samples
        e = jnp.sqrt(jnp.mean(jnp.sum((y - traj[j]).reshape(y.shape[0], -1) ** 2, axis=1)))
        return jnp.where(jnp.isfinite(e), e, jnp.inf)

    errs = jax.jit(lambda p: jax.lax.map(one, p, batch_size=chunk))(jnp.asarray(pairs))
    c = np.full((k + 1, k + 1), np.inf)
    c[pairs[:, 0], pairs[:, 1]] = np.asarray(errs, np.float64)
    return c, traj


def min_cost_path(costs, num_steps, *, max_ratio=None):
    """The ``num_steps``-edge path from node 0 to the last node with the least total cost.

    Args:
        costs: ``(K + 1, K + 1)`` matrix, ``costs[i, j]`` the cost of a step from node ``i`` to
            ``j > i`` (``inf`` forbids it).
        num_steps: ``N`` with ``1 <= N <= K``.
        max_ratio: if given (``>= 1``), consecutive steps may differ in length (in nodes) by at most
            this factor either way. Multistep solvers extrapolate from the previous step, with
            weights that grow with the step ratio; their single-step costs do not see that, and
            unconstrained paths that follow a few short steps with a long one can ruin them
            (``benchmarks/README.md``). Exact, by dynamic programming over
            (previous node, node) pairs: ``O(N K^3)``.

    Returns:
        ``(nodes, total)``: the ``N + 1`` node indices (``0`` first, ``K`` last) and the path's cost.

    Raises:
        ValueError: a bad matrix, ``num_steps`` or ``max_ratio``, or no finite path.

    Example:
        >>> import numpy as np
        >>> c = np.full((4, 4), np.inf); c[0, 1] = c[1, 3] = 1.0; c[0, 2] = c[2, 3] = 0.4
        >>> min_cost_path(c, 2)
        ((0, 2, 3), 0.8)
    """
    c = np.asarray(costs, np.float64)
    k = c.shape[0] - 1
    n = check_num_steps(num_steps)
    if c.ndim != 2 or c.shape != (k + 1, k + 1) or k < 1:
        raise ValueError(f"costs: need a square matrix of at least 2 x 2, got shape {c.shape}.")
    if n > k:
        raise ValueError(f"num_steps={n} is more than the {k} candidate intervals; use more nodes (num_nodes).")
    if max_ratio is not None and not (math.isfinite(max_ratio) and max_ratio >= 1.0):
        raise ValueError(f"max_ratio={max_ratio!r}: need a finite number >= 1 (e.g. 2.0), or None for no limit.")
    nodes, total = _path_any_ratio(c, n) if max_ratio is None else _path_limited_ratio(c, n, max_ratio)
    if not math.isfinite(total):
        raise ValueError(f"min_cost_path: no finite {n}-step path (every path has a non-finite step"
                         f"{' or breaks max_ratio' if max_ratio is not None else ''}); try another solver, "
                         "more steps or more nodes.")
    return tuple(nodes[::-1]), total


def _path_any_ratio(c, n):
    """``(nodes from the last back to 0, total)`` of the least-cost ``n``-step path: ``O(N K^2)``."""
    k = c.shape[0] - 1
    best = np.full(k + 1, np.inf)
    best[0] = 0.0
    back = np.zeros((n + 1, k + 1), np.int64)
    for m in range(1, n + 1):
        tot = best[:, None] + c  # tot[i, j]: reach i in m - 1 steps, then step i -> j
        back[m] = np.argmin(tot, axis=0)
        best = tot[back[m], np.arange(k + 1)]
    total = float(best[k])
    nodes = [k]
    for m in range(n, 0, -1):
        nodes.append(int(back[m, nodes[-1]]))
    return nodes, total


def _path_limited_ratio(c, n, max_ratio):
    """As :func:`_path_any_ratio` with consecutive step lengths within ``max_ratio`` of each other,
    by dynamic programming over (previous node, node) pairs: ``O(N K^3)``."""
    k = c.shape[0] - 1
    idx = np.arange(k + 1)
    span = idx[None, :] - idx[:, None]  # span[i, j] = j - i
    # ok[a, b]: a step of b nodes may follow one of a nodes.
    lens = np.arange(k + 1, dtype=np.float64)
    ok = (lens[None, :] <= max_ratio * lens[:, None] + 1e-12) & (lens[:, None] <= max_ratio * lens[None, :] + 1e-12)
    pen = np.where(ok, 0.0, np.inf)
    # best[i, j]: least cost of m steps from node 0 whose last step is i -> j.
    best = np.full((k + 1, k + 1), np.inf)
    best[0, 1:] = c[0, 1:]
    backs = []
    for _ in range(2, n + 1):
        new = np.full((k + 1, k + 1), np.inf)
        arg = np.zeros((k + 1, k + 1), np.int64)
        for j in range(1, k):
            # tot[i, l] = best[i, j] + pen[j - i, l - j] + c[j, l] over i < j < l.
            a = np.clip(span[:j, j], 0, k)
            b = np.clip(span[j, :], 0, k)
            tot = best[:j, j][:, None] + pen[a][:, b]
            arg[j] = np.argmin(tot, axis=0)
            new[j] = tot[arg[j], idx] + c[j]
        new[:, : 1] = np.inf
        backs.append(arg)
        best = new
    i_last = int(np.argmin(best[:, k]))
    total = float(best[i_last, k])
    nodes = [k, i_last]
    for arg in reversed(backs):
        nodes.append(int(arg[nodes[-1], nodes[-2]]))
    return nodes, total


def error_grid(score_fn, process, x_pilot, solver, num_steps, *, t_start=None, t_end=None, num_nodes=None,
               cost_solver=None, teacher_substeps=8, max_span=None, max_ratio=None) -> ErrorGrid:
    """A grid for ``solver`` at ``num_steps`` that minimises the measured sum of local errors (GITS).

    See the module docstring for the method. Use pilot draws independent of the ones you will
    sample from; a few dozen suffice (the costs are batch averages), float64 (``jax_enable_x64``)
    keeps the teacher's own error out of the costs.

    Args:
        score_fn: the model's score ``score_fn(x, t)``.
        process: its forward process.
        x_pilot: ``(n, *event_shape)`` draws of the prior at ``t_start``.
        solver: the solver (name or object) the grid is for (named in the result; its single steps
            are the costs unless ``cost_solver`` is given).
        num_steps: the grid's number of steps.
        t_start, t_end: as in :func:`~jaxode_diffusion.sampling.sample` (process defaults).
        num_nodes: candidate intervals ``K``, uniform in log-SNR (default ``max(40, 4 * num_steps)``).
        cost_solver: the solver whose one-step errors are the costs (default ``solver``).
        teacher_substeps: teacher steps per candidate interval.
        max_span: longest step, in candidate intervals (default: any).
        max_ratio: largest ratio of consecutive step lengths (see :func:`min_cost_path`).

    Returns:
        an :class:`ErrorGrid`.

    Raises:
        ValueError: a bad ``num_steps``, ``num_nodes < num_steps``, a pilot batch of fewer than 2
            draws, or when no path has finite cost.
    """
    n = check_num_steps(num_steps)
    if x_pilot.ndim < 2 or x_pilot.shape[0] < 2:
        raise ValueError(f"x_pilot: need a batch of at least 2 draws shaped (n, *event_shape), got {x_pilot.shape}.")
    _, node_ts = _candidate_nodes(process, n, num_nodes, t_start, t_end, x_pilot.dtype)
    cs = solver if cost_solver is None else cost_solver
    costs, _ = local_error_costs(score_fn, process, x_pilot, cs, node_ts, teacher_substeps=teacher_substeps,
                                 max_span=max_span)
    nodes, total = min_cost_path(costs, n, max_ratio=max_ratio)
    nts = np.asarray(node_ts, np.float64)
    return ErrorGrid(ts=nts[list(nodes)], nodes=nodes, node_ts=nts, costs=costs, total_cost=total,
                     solver=_solver_name(solver), cost_solver=_solver_name(cs), num_steps=n,
                     num_pilot=int(x_pilot.shape[0]))


def equidistributed_grid(costs, node_ts, process, order, num_steps):
    """``num_steps`` steps with equal shares of ``int c(lambda)^(1/(p+1)) dlambda``, ``c`` the measured
    local error of one node interval (``costs[i, i + 1]``, piecewise constant in log-SNR): the classical
    equidistribution of local error for an order-``p`` method (Hairer, Norsett & Wanner, Solving ODEs I,
    sec. II.4), without the dynamic programming. Returns decreasing times (NumPy, float64)."""
    c = np.asarray(costs, np.float64)
    k = c.shape[0] - 1
    dens = np.array([c[i, i + 1] for i in range(k)]) ** (1.0 / (int(order) + 1))
    ok = np.isfinite(dens)
    if not ok.any():
        raise ValueError("equidistributed_grid: no finite one-interval cost; try another solver or more nodes.")
    dens = np.where(ok, dens, dens[ok].max())
    mass = np.concatenate([[0.0], np.cumsum(dens)])
    lam = np.asarray(process.lam(jnp.asarray(node_ts)), np.float64)
    lam_n = np.interp(np.linspace(0.0, mass[-1], int(num_steps) + 1), mass, lam)
    ts = np.array(process.t_of_lambda(jnp.asarray(lam_n)), np.float64)
    ts[0], ts[-1] = float(node_ts[0]), float(node_ts[-1])
    return ts


def proxy_solver(solver):
    """The singlestep data-prediction solver of the same order as a multistep ``solver``
    (``dpmpp_2s`` for order <= 2, ``dpmpp_3s`` above), or ``None`` for a singlestep solver."""
    s = get_solver(solver)
    if not getattr(s, "scheme", None) or not hasattr(s.scheme, "two_point"):
        return None
    return "dpmpp_2s" if s.order <= 2 else "dpmpp_3s"


def error_grid_candidates(score_fn, process, x_pilot, solver, num_steps, *, t_start=None, t_end=None,
                          num_nodes=None, teacher_substeps=8, cache=None):
    """The error-grid candidates :func:`~jaxode_diffusion.tuning.autogrid.choose_grid` ranks with the named
    grids (``error_grids=True``), all built from ``x_pilot``:

    * ``"error"``: :func:`error_grid` with the solver's own single steps as costs;
    * ``"error:r2"``: the same with consecutive steps within a factor 2 (``max_ratio=2``);
    * ``"error-proxy:r2"`` (multistep solvers): costs of :func:`proxy_solver`, ``max_ratio=2``;
    * ``"equidistributed"``: :func:`equidistributed_grid` on the one-interval costs of the proxy
      (multistep) or the solver, with its order.

    Args:
        cache: a dict reused across calls with the same model, pilot batch and end points (it holds
            the teacher and the cost matrices, which do not depend on ``num_steps``).

    Returns:
        ``{name: ts}`` (NumPy float64 times).
    """
    n = check_num_steps(num_steps)
    k, node_ts = _candidate_nodes(process, n, num_nodes, t_start, t_end, x_pilot.dtype)
    cache = {} if cache is None else cache
    if ("teacher", k) not in cache:
        cache["teacher", k] = teacher_states(score_fn, process, x_pilot, node_ts, teacher_substeps=teacher_substeps)
    teacher = cache["teacher", k]

    def costs(cs):
        name = _solver_name(cs)
        if ("costs", k, name) not in cache:
            cache["costs", k, name] = local_error_costs(score_fn, process, x_pilot, cs, node_ts, teacher=teacher)[0]
        return cache["costs", k, name]

    nts = np.asarray(node_ts, np.float64)
    out = {}
    for name, cs, ratio in (("error", solver, None), ("error:r2", solver, 2.0),
                            ("error-proxy:r2", proxy_solver(solver), 2.0)):
        if cs is None:
            continue
        try:
            nodes, _ = min_cost_path(costs(cs), n, max_ratio=ratio)
        except ValueError:  # no finite path under this constraint: not a candidate
            continue
        out[name] = nts[list(nodes)]
    es = proxy_solver(solver) or solver
    out["equidistributed"] = equidistributed_grid(costs(es), nts, process, get_solver(es).order, n)
    return out
