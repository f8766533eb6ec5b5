"""Exact log-likelihood through the probability-flow ODE, and bits per dimension.

The probability-flow ODE ``dx/dt = v(x, t) = f(t) x - g(t)^2 / 2 * s(x, t)`` transports
``p_t`` exactly, and along one of its trajectories the log-density obeys the instantaneous
change of variables (Chen et al. 2018, "Neural ODEs", Thm. 1; Song et al. 2021, "Score-based
generative modeling through SDEs", App. D.2)::

    d/dt log p_t(x(t)) = -div v(x(t), t).

Integrating from the data end ``t_end`` up to ``T = t_start`` gives

    log p_{t_end}(x) = log p_T(x(T)) + int_{t_end}^{T} div v(x(t), t) dt.

:func:`log_likelihood` integrates the state and the divergence integral jointly with one
explicit Runge--Kutta tableau on the augmented state ``(x, l)``, ``dl/dt = div v``. Since ``dl/dt``
does not depend on ``l``, the augmented RK step is the ordinary RK step for ``x`` plus
``l_{n+1} = l_n + h sum_i b_i div v(X_i, t_i)`` at the stage states ``X_i`` -- so the error in
``l`` falls at the tableau's order as the steps shrink.

Other forms (:mod:`jaxode_diffusion.solvers.forms`) work the same way: the form's state ``y = x / a(t)``
(``a`` = the form's ``scale``) in its time ``u`` obeys ``dy/du = F(y, u)``, and densities of ``y`` and
``x`` differ by ``d log a(t)``, so

    log p_{t_end}(x) = log p_T(x_T) + int_{u_end}^{u_T} div_y F du + d (log a(T) - log a(t_end)).

Divergence: ``trace="exact"`` sums ``e_i^T DF e_i`` over the ``D`` basis vectors (one
linearisation of ``F`` per stage, then ``D`` Jacobian-vector products); ``trace="hutchinson"``
uses Rademacher probes ``z`` (Hutchinson 1990), ``E[z^T DF z] = tr DF``, with the probes held
fixed along the whole trajectory (as in FFJORD and score_sde), so each probe gives an unbiased
estimate of the whole integral and the spread across probes gives the standard error.

Prior: ``p_T`` is never exactly Gaussian. By default ``log p_T`` is ``N(0, c(T)^2 I)`` with
``c = sqrt(alpha^2 + sigma^2)``: the law of ``x_T = alpha x_0 + sigma eps`` for data with mean 0 and
identity covariance (and the law of :meth:`~jaxode_diffusion.processes.ForwardProcess.prior_sample`,
which the samplers start from). A target whose ``p_T`` is known (a
:class:`~jaxode_diffusion.models.mixture.GaussianMixture`: ``gm.marginal(process, T).log_prob``) passes it
as ``terminal_log_density`` and then the only error left is the solver's.

Bits per dimension: :func:`bits_per_dim` (convention of score_sde) and :func:`uniform_dequantize`.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from typing import NamedTuple

import equinox as eqx
import jax
import jax.numpy as jnp
import numpy as np

from jaxode_diffusion.solvers.forms import AbstractForm
from jaxode_diffusion.processes import ForwardProcess
from jaxode_diffusion.sampling.core import RESULTS, NonFiniteSampleError, get_solver, make_times
from jaxode_diffusion.solvers.runge_kutta import RungeKutta
from jaxode_diffusion.solvers.tableaux import ButcherTableau
from jaxode_diffusion.utils.checks import (
    check_bool,
    check_callable,
    check_float_batch,
    check_instance,
    check_int,
    check_per_sample,
    nonfinite_rows,
)

__all__ = ["LikelihoodResult", "log_likelihood", "bits_per_dim", "uniform_dequantize", "gaussian_prior_log_prob"]

_LOG_2PI = math.log(2.0 * math.pi)
_PREFIX = "log_likelihood: "

#: Basis vectors handled per vectorised batch in the exact trace (bounds memory at
#: ``_BASIS_CHUNK * B * D`` numbers per stage while keeping the jvps vectorised).
_BASIS_CHUNK = 32


class LikelihoodResult(NamedTuple):
    """What :func:`log_likelihood` returns.

    Attributes:
        log_likelihood: ``(B,)`` estimate of ``log p_{t_end}(x)`` in nats per sample.
        stderr: ``(B,)`` Monte Carlo standard error of ``log_likelihood`` (Hutchinson: std over
            probes / sqrt(num_probes), NaN for one probe); zeros for the exact trace.
        prior_log_prob: ``(B,)`` ``log p_T(x_T)`` (the Gaussian prior or ``terminal_log_density``).
        delta_log_prob: ``(B,)`` ``log_likelihood - prior_log_prob`` (the divergence integral plus
            the form's rescaling term).
        x_T: ``(B, *event_shape)`` the end of the trajectory at ``t_start``.
        nfe: score evaluations along the trajectory (``num_steps * stages``).
        num_jvps: Jacobian-vector products for the divergence (``nfe * D`` exact,
            ``nfe * num_probes`` Hutchinson).
        t_end, t_start: the time interval integrated over.
        trace: ``"exact"`` or ``"hutchinson"``.
        result: a :class:`~jaxode_diffusion.sampling.RESULTS` code (``successful`` or
            ``nonfinite_state``; ``None`` for results built by hand).
        first_nonfinite_step: ``(B,)`` int32, each sample's first step whose state or divergence
            was NaN/inf, ``-1`` where all were finite.
    """

    log_likelihood: jax.Array
    stderr: jax.Array
    prior_log_prob: jax.Array
    delta_log_prob: jax.Array
    x_T: jax.Array
    nfe: int
    num_jvps: int
    t_end: float
    t_start: float
    trace: str
    result: jax.Array | None = None
    first_nonfinite_step: jax.Array | None = None


def gaussian_prior_log_prob(process: ForwardProcess, x, t):
    """``log N(x; 0, c(t)^2 I)`` per sample, ``c = sqrt(alpha^2 + sigma^2)``: the default prior.

    Args:
        process: the forward process.
        x: ``(B, *event_shape)``.
        t: the time (usually ``T``).

    Returns:
        ``(B,)``.

    Example:
        >>> import jax.numpy as jnp
        >>> from jaxode_diffusion import VPLinear
        >>> round(float(gaussian_prior_log_prob(VPLinear(), jnp.zeros((1, 2)), 1.0)[0]), 6)  # -log(2 pi), c(1) ~ 1
        -1.837877
    """
    xf = x.reshape(x.shape[0], -1)
    dim = xf.shape[1]
    c = jnp.asarray(process.c(t)).astype(xf.dtype)
    return -0.5 * jnp.sum(xf**2, axis=1) / c**2 - dim * jnp.log(c) - 0.5 * dim * _LOG_2PI


def _rk_solver(solver) -> RungeKutta:
    if isinstance(solver, ButcherTableau):
        return RungeKutta(solver)
    s = get_solver(solver)
    if not isinstance(s, RungeKutta):
        raise ValueError(
            f"log_likelihood: solver={solver!r} is not an explicit Runge-Kutta tableau in an ODE form; "
            "the likelihood integrates the augmented state (x, log-det) with a Butcher tableau. Pass a "
            "tableau name ('rk4', 'heun', ...), 'FORM:TABLEAU' (e.g. 'x0-snr:rk4') or a ButcherTableau."
        )
    return s


def _divergence_exact(lin_fn, y):
    """``tr DF`` per sample from the linearised map ``lin_fn`` (B, *event) -> (B, *event)."""
    batch, event = y.shape[0], y.shape[1:]
    dim = int(np.prod(event))

    def one(i):
        e = jax.nn.one_hot(i, dim, dtype=y.dtype)
        tangent = jnp.broadcast_to(e, (batch, dim)).reshape(y.shape)
        return lin_fn(tangent).reshape(batch, dim)[:, i]

    if dim <= _BASIS_CHUNK:
        diag = jax.vmap(one)(jnp.arange(dim))  # (D, B)
    else:
        diag = jax.lax.map(one, jnp.arange(dim), batch_size=_BASIS_CHUNK)
    return jnp.sum(diag, axis=0)


def _divergence_probes(lin_fn, probes):
    """``z^T DF z`` per probe and sample; probes ``(P, B, *event)`` -> ``(P, B)``."""
    jz = jax.vmap(lin_fn)(probes)
    return jnp.sum((probes * jz).reshape(probes.shape[0], probes.shape[1], -1), axis=-1)


@eqx.filter_jit
def _integrate(score_fn, process, x, ts, solver: RungeKutta, probes, exact: bool):
    """Integrate ``(y, l)`` from ``ts[0] = t_end`` up to ``ts[-1] = t_start`` (increasing ``ts``)."""
    form: AbstractForm = solver.form
    tab = solver.tableau
    dtype = x.dtype
    us = form.u(process, ts).astype(dtype)
    fr = np.asarray(tab.c, dtype=np.float64)
    u_st = us[:-1, None] + jnp.asarray(fr, dtype)[None, :] * (us[1:] - us[:-1])[:, None]
    t_st = form.t_of_u(process, u_st).astype(dtype)
    # Stage fractions 0 and 1 sit on grid points: use the grid's exact times there.
    t_st = jnp.where(jnp.asarray(fr == 0.0)[None, :], ts[:-1, None].astype(dtype), t_st)
    t_st = jnp.where(jnp.asarray(fr == 1.0)[None, :], ts[1:, None].astype(dtype), t_st)

    def field_and_div(y, t):
        fn = lambda yy: form.vector_field(score_fn, process, yy, t)
        out, lin_fn = jax.linearize(fn, y)
        div = _divergence_exact(lin_fn, y) if exact else _divergence_probes(lin_fn, probes)
        return out, div

    y0 = form.to_state(process, x, ts[0])
    l0 = jnp.zeros((x.shape[0],) if exact else probes.shape[:2], dtype)

    a_mat = jnp.asarray(tab.a, dtype)
    b_vec = jnp.asarray(tab.b, dtype)
    num_stages = tab.num_stages

    def body(carry, inp):
        y, l, first = carry
        n, u0, u1, t_stage = inp
        h = u1 - u0

        # The stages run as a loop over the rows of the tableau (not unrolled): one copy of the
        # score's linearisation in the program keeps XLA's compile time independent of the
        # number of stages. Rows of `a` are zero on and above the diagonal (explicit method), so
        # the not-yet-computed stages in the buffer never contribute.
        def stage(bufs, i):
            kbuf, dbuf = bufs
            yi = y + h * jnp.tensordot(a_mat[i], kbuf, axes=1)
            k, dv = field_and_div(yi, t_stage[i])
            return (kbuf.at[i].set(k), dbuf.at[i].set(dv)), None

        kbuf0 = jnp.zeros((num_stages, *y.shape), dtype)
        dbuf0 = jnp.zeros((num_stages, *l.shape), dtype)
        (kbuf, dbuf), _ = jax.lax.scan(stage, (kbuf0, dbuf0), jnp.arange(num_stages))
        y = y + h * jnp.tensordot(b_vec, kbuf, axes=1)
        l = l + h * jnp.tensordot(b_vec, dbuf, axes=1)
        bad = ~jnp.all(jnp.isfinite(y.reshape(y.shape[0], -1)), axis=1)
        bad = bad | ~jnp.all(jnp.isfinite(l.reshape(-1, y.shape[0])), axis=0)  # l: (B,) or (P, B)
        first = jnp.where((first < 0) & bad, n, first)
        return (y, l, first), None

    first0 = jnp.full((x.shape[0],), -1, jnp.int32)
    steps = jnp.arange(us.shape[0] - 1, dtype=jnp.int32)
    (y_T, l_T, first), _ = jax.lax.scan(body, (y0, l0, first0), (steps, us[:-1], us[1:], t_st))
    x_T = form.from_state(process, y_T, ts[-1])
    dim = int(np.prod(x.shape[1:]))
    rescale = dim * (jnp.log(form.scale(process, ts[-1])) - jnp.log(form.scale(process, ts[0]))).astype(dtype)
    return x_T, l_T + rescale, first


def log_likelihood(
    score_fn: Callable, process: ForwardProcess, x, *, solver="rk4", num_steps: int, t_end=None,
    t_start=None, grid=None, trace: str = "exact", num_probes: int = 16, key=None,
    terminal_log_density: Callable | None = None, throw: bool = True,
) -> LikelihoodResult:
    """``log p_{t_end}(x)`` per sample (nats), through the probability-flow ODE.

    Integrates ``x`` from ``t_end`` up to ``t_start`` (``T``) jointly with the divergence of the
    ODE's vector field and adds ``log p_T(x_T)`` (the module docstring has the formula).

    Args:
        score_fn: ``score_fn(x, t)`` on a batch, acting on each sample independently (no batch
            statistics): the divergence is taken per sample.
        process: the forward process the score belongs to.
        x: ``(B, *event_shape)`` floating-point points at which to evaluate (the model's space).
        solver: an explicit Butcher tableau: a name (``"rk4"``), ``"FORM:TABLEAU"`` (``"x0-snr:rk4"``),
            a ``ButcherTableau`` or a ``RungeKutta``; multistep and exponential solvers are refused.
        num_steps: number of steps (``NFE = num_steps * stages``).
        t_end, t_start: the data-end time (the result is ``log p_{t_end}``) and the prior time
            ``T``; defaults ``process.default_t_end`` / ``process.default_t_start``.
        grid: a named grid or array of times as for :func:`~jaxode_diffusion.sample`.
        trace: ``"exact"`` (``D`` jvps per stage) or ``"hutchinson"`` (``num_probes`` per stage).
        num_probes, key: Hutchinson probes (an int >= 1; the standard error needs >= 2) and their
            PRNG key (required with ``trace="hutchinson"``).
        terminal_log_density: ``log p_T`` on a batch ``(B, *event) -> (B,)``; default the Gaussian
            prior :func:`gaussian_prior_log_prob` (exact only for data with mean 0, covariance I).
        throw: raise when a sample turns NaN/inf (as ``solve`` does); ``False``: NaN and ``result``.

    Returns:
        a :class:`LikelihoodResult` (``.log_likelihood``, ``.stderr``, ``.nfe``, ``.result``, ...).

    Raises:
        ValueError: a bad argument (NaN/inf rows of ``x`` named), solver, times or prior shape.
        NonFiniteSampleError: with ``throw=True``, a sample whose trajectory turned NaN/inf.

    Example:
        >>> import jax, jax.numpy as jnp
        >>> from jaxode_diffusion import GaussianMixture, VPLinear
        >>> jax.config.update("jax_enable_x64", True)
        >>> gm, vp = GaussianMixture(jnp.ones(1), jnp.zeros((1, 2)), jnp.ones(1)), VPLinear()
        >>> x = jnp.array([[0.5, -1.0]])
        >>> res = log_likelihood(gm.score_fn(vp), vp, x, num_steps=20)
        >>> bool(abs(res.log_likelihood[0] - gm.log_prob_t(x, vp, vp.default_t_end)[0]) < 1e-6)
        True
    """
    x = _check_likelihood_args(score_fn, process, x, trace)
    throw = check_bool(throw, "throw", prefix=_PREFIX)
    solver = _rk_solver(solver)
    ts = make_times(process, num_steps=num_steps, t_start=t_start, t_end=t_end, grid=grid, solver=solver)
    ts = ts[::-1].astype(x.dtype)  # increasing: t_end -> t_start
    exact = trace == "exact"
    probes, n_probe = (None, int(np.prod(x.shape[1:]))) if exact else _probes(num_probes, key, x)
    x_T, delta, first = _integrate(score_fn, process, x, ts, solver, probes, exact)
    prior = _terminal_log_prob(process, x, x_T, ts[-1], terminal_log_density)
    ll_delta, stderr = _probe_mean(delta, exact, n_probe)
    nfe = (ts.shape[0] - 1) * solver.tableau.num_stages
    result = jnp.where(jnp.any(first >= 0), RESULTS.nonfinite_state, RESULTS.successful).astype(jnp.int32)
    if throw and not isinstance(first, jax.core.Tracer):
        _raise_if_nonfinite(first, ts)
    return LikelihoodResult(
        log_likelihood=prior + ll_delta,
        stderr=stderr,
        prior_log_prob=prior,
        delta_log_prob=ll_delta,
        x_T=x_T,
        nfe=int(nfe),
        num_jvps=int(nfe * n_probe),
        t_end=float(ts[0]),
        t_start=float(ts[-1]),
        trace=trace,
        result=result,
        first_nonfinite_step=first,
    )


def _raise_if_nonfinite(first, ts) -> None:
    """Raise :class:`NonFiniteSampleError` naming the first sample (and step) that turned NaN/inf."""
    fb = np.asarray(first)
    if not np.any(fb >= 0):
        return
    i = int(np.argmax(fb >= 0))
    n = int(fb[i])
    raise NonFiniteSampleError(
        f"log_likelihood: the ODE or its divergence turned non-finite: sample {i} first at step {n} "
        f"(t = {float(ts[n]):.4g} -> {float(ts[n + 1]):.4g}); {int(np.sum(fb >= 0))} of {fb.shape[0]} "
        "samples affected. Check the score (it returned NaN/inf or blew up) near that time; if the "
        "score is finite there, use more num_steps; pass throw=False to get NaN for those samples."
    )


def _check_likelihood_args(score_fn, process, x, trace):
    """``x`` as a floating-point batch, after checking the process, the score, ``trace`` and that
    the (concrete) points are finite."""
    check_instance(process, ForwardProcess, "process", prefix=_PREFIX)
    check_callable(score_fn, prefix=_PREFIX)
    x = check_float_batch(x, "x", prefix=_PREFIX, item="point")
    if not isinstance(x, jax.core.Tracer):
        bad = nonfinite_rows(x)
        if bad.any():
            raise ValueError(
                f"{_PREFIX}x holds NaN/inf values: row {int(np.argmax(bad))} first ({int(bad.sum())} of "
                f"{bad.shape[0]} rows affected). This is bad input, not a score failure: drop or fix those rows."
            )
    if trace not in ("exact", "hutchinson"):
        raise ValueError(
            f"log_likelihood: trace={trace!r}; choose 'exact' (small d) or 'hutchinson' (large d)."
        )
    return x


def _probes(num_probes, key, x):
    """``(probes, num_probes)``: Rademacher probes ``(P, *x.shape)`` for the Hutchinson trace."""
    n_probe = check_int(num_probes, "num_probes", hint=" (16 is a good start)", prefix=_PREFIX)
    if key is None:
        raise ValueError("log_likelihood: trace='hutchinson' needs key=jax.random.key(...) for the probes.")
    return jax.random.rademacher(key, (n_probe, *x.shape), dtype=x.dtype), n_probe


def _terminal_log_prob(process, x, x_T, t_T, terminal_log_density):
    """``log p_T(x_T)``, ``(B,)``: the caller's ``terminal_log_density`` or the Gaussian prior."""
    if terminal_log_density is None:
        return gaussian_prior_log_prob(process, x_T, t_T)
    prior = check_per_sample(terminal_log_density(x_T), x_T, "terminal_log_density", prefix=_PREFIX)
    return prior.astype(x.dtype)


def _probe_mean(delta, exact: bool, n_probe: int):
    """``(delta log p, stderr)`` per sample: the exact trace as is, or the mean over probes and its error."""
    if exact:
        return delta, jnp.zeros_like(delta)
    ll_delta = jnp.mean(delta, axis=0)
    if n_probe >= 2:
        return ll_delta, jnp.std(delta, axis=0, ddof=1) / math.sqrt(n_probe)
    return ll_delta, jnp.full_like(ll_delta, jnp.nan)


def bits_per_dim(log_likelihood, dim: int, *, bin_width: float | None = None, num_levels: int = 256,
                 data_range: tuple[float, float] = (-1.0, 1.0)):
    """Bits per dimension of a continuous log-density of uniformly dequantised data.

    Convention (score_sde, Song et al. 2021, ``run_lib.evaluate``; Theis et al. 2016): data with
    ``num_levels`` levels ``k = 0..L-1`` are dequantised uniformly into bins of width
    ``w = (hi - lo) / L`` covering ``[lo, hi)``: ``x = lo + (k + u) w``, ``u ~ U[0, 1)^d``
    (:func:`uniform_dequantize`). The density of ``x`` in the units of the levels (bin width 1) is
    ``p(x) w^d``, so

        bpd = -(log p(x) + d log w) / (d log 2) = -log p(x) / (d log 2) + log2(1 / w).

    For the default ``[-1, 1]`` with 256 levels ``w = 1/128`` and the offset is exactly 7 bits,
    score_sde's ``bpd + 7 - inverse_scaler(-1)``. (Mapping ``k -> k / 127.5 - 1`` instead would
    give ``w = 1/127.5`` and an offset of ``log2(127.5) = 6.994``: pass ``bin_width=1/127.5``.)
    Averaged over dequantisation noise this is an upper bound on the discrete model's negative
    log2-likelihood per dimension (Jensen).

    Args:
        log_likelihood: ``log p(x)`` in nats (array or scalar), ``x`` in the ``data_range`` units.
        dim: number of dimensions ``d`` of one sample.
        bin_width: ``w`` (overrides ``num_levels`` / ``data_range``).
        num_levels, data_range: define ``w = (hi - lo) / num_levels``.

    Returns:
        bits per dimension, shaped like ``log_likelihood``.

    Raises:
        ValueError: on ``dim < 1``, a non-positive width or an empty range.

    Example:
        >>> import math
        >>> float(bits_per_dim(-3 * math.log(2.0), 3))  # uniform on [-1, 1]^3: 8 bits per dim
        8.0
    """
    check_int(dim, "dim", expected="a positive int", hint=" (the number of dimensions of one sample)",
              prefix="bits_per_dim: ")
    if bin_width is None:
        lo, hi = (float(v) for v in data_range)
        if not hi > lo:
            raise ValueError(f"bits_per_dim: data_range={data_range!r} must be (lo, hi) with hi > lo, e.g. (-1, 1).")
        check_int(num_levels, "num_levels", minimum=2, hint=" (256 for 8-bit data)", prefix="bits_per_dim: ")
        bin_width = (hi - lo) / int(num_levels)
    if not (bin_width > 0 and math.isfinite(bin_width)):
        raise ValueError(f"bits_per_dim: bin_width={bin_width!r} must be finite and > 0.")
    return -(jnp.asarray(log_likelihood) + dim * math.log(bin_width)) / (dim * math.log(2.0))


def uniform_dequantize(key, levels, *, num_levels: int = 256, data_range: tuple[float, float] = (-1.0, 1.0),
                       dtype=None):
    """Integer levels ``k`` -> ``x = lo + (k + u) (hi - lo) / L``, ``u ~ U[0, 1)`` (score_sde's convention).

    Args:
        key: PRNG key.
        levels: integer-valued array, entries in ``0 .. num_levels - 1``.
        num_levels: ``L``.
        data_range: ``(lo, hi)``.
        dtype: output dtype (default: float64 under x64, else float32).

    Raises:
        ValueError: on non-integer or out-of-range levels, or a bad range.

    Example:
        >>> import jax, jax.numpy as jnp
        >>> x = uniform_dequantize(jax.random.key(0), jnp.array([[0, 255]]))
        >>> bool(-1 <= x[0, 0] < -1 + 1 / 128 and 1 - 1 / 128 <= x[0, 1] < 1)
        True
    """
    lo, hi = (float(v) for v in data_range)
    if not hi > lo:
        raise ValueError(f"uniform_dequantize: data_range={data_range!r} must be (lo, hi) with hi > lo.")
    check_int(num_levels, "num_levels", minimum=2, prefix="uniform_dequantize: ")
    k = np.asarray(levels)
    if not isinstance(levels, jax.core.Tracer):
        if k.size and (np.any(k != np.round(k)) or k.min() < 0 or k.max() > num_levels - 1):
            raise ValueError(
                f"uniform_dequantize: levels must be integers in [0, {num_levels - 1}]; got values in "
                f"[{k.min()!r}, {k.max()!r}]. Map your data to integer levels first (e.g. uint8 pixels)."
            )
    dtype = dtype or (jnp.float64 if jax.config.jax_enable_x64 else jnp.float32)
    u = jax.random.uniform(key, np.shape(levels), dtype=dtype)
    width = (hi - lo) / int(num_levels)
    return lo + (jnp.asarray(levels).astype(dtype) + u) * width
