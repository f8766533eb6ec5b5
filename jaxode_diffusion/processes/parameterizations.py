"""Network parameterizations: eps / x0 (denoiser) / v / flow velocity <-> score.

Under ``x_t = alpha(t) x_0 + sigma(t) eps`` every prediction target a network may learn is a
linear combination ``a(t) x_0 + b(t) eps`` of the clean data and the noise. Given ``x_t`` the
pair ``(x_0, eps)`` has one degree of freedom, so any target determines the others:

===========  ============================  ===========================================
kind         target ``a x0 + b eps``       reference
===========  ============================  ===========================================
``eps``      ``eps``          (a=0, b=1)   Ho et al. 2020 (DDPM)
``x0``       ``x0``           (a=1, b=0)   the denoiser ``D(x; sigma)`` of EDM (Karras 2022)
``denoiser`` alias of ``x0``
``v``        ``alpha eps - sigma x0``      Salimans & Ho 2022 (progressive distillation)
``flow``     ``alpha' x0 + sigma' eps``    flow matching / rectified flow (Lipman 2023, Liu 2023)
``score``    ``-eps / sigma``              Song et al. 2021: ``grad log p_t = -E[eps|x]/sigma``
===========  ============================  ===========================================

``v`` uses the Salimans & Ho definition ``v = alpha eps - sigma x0`` for every process (not only
variance-preserving ones). Inverting ``x = alpha x0 + sigma eps`` and ``v`` gives, exactly,
``x0 = (alpha x - sigma v) / (alpha^2 + sigma^2)`` and ``eps = (sigma x + alpha v) / (alpha^2 + sigma^2)``;
for VP processes ``alpha^2 + sigma^2 = 1``. ``flow`` is the time derivative ``d x_t / dt`` of the
noising path (``alpha' = f alpha``, ``sigma' = sigma dlog sigma/dt``); its conditional expectation
is the probability-flow ODE drift ``f x - g^2/2 score`` (for rectified flow, ``eps - x0``).

The score is ``score = -eps/sigma = (alpha x0 - x) / sigma^2``. Every conversion goes through
one generic 2x2 solve driven by the coefficients ``(a, b)`` of :func:`target_coefficients`, so a
new kind needs one table entry.

``t`` may be a scalar or a per-example array of shape ``(B,)`` (as in training); coefficients
broadcast against ``x`` of shape ``(B, *event_shape)``.

A network's own **time input** is a second, separate convention (:data:`TIME_INPUTS`,
:func:`to_model_time`), so a network gets exactly the input it was trained on:

=============  ====================================  ================================================
time input     value fed to the network              used by
=============  ====================================  ================================================
``t``          ``t``                                 continuous-time models (score SDE, flows)
``t1000``      ``1000 t``                            continuous VP models trained on ``1000 t``
``index``      ``N t - 1`` (step ``n`` at            DDPM-style networks indexed by the step of an
               ``t_n = (n + 1) / N``)                ``N``-entry table (DPM-Solver's discrete map)
``index1000``  ``1000 (t - 1/N) = 1000 n / N``       DPM-Solver ``model_wrapper`` for discrete
                                                     schedules; improved-DDPM ``rescale_timesteps``
``sigma``      ``sigma(t)``                          noise-level-conditioned networks
``rho``        ``sigma(t) / alpha(t)``               EDM / k-diffusion ``sigma`` (= ``sigma`` if
                                                     ``alpha = 1``)
``log_snr``    ``lambda(t) = log(alpha / sigma)``    VDM, log-SNR-conditioned networks
``c_noise``    ``log(rho) / 4 = -lambda / 4``        EDM (``log(sigma)/4``), this package's models
=============  ====================================  ================================================

On a discrete table ``log alpha`` is piecewise linear, so ``flow`` (which contains
``d log alpha / dt``) jumps at the table nodes: it is one-sided there; every other kind is
continuous.

``N`` (``num_train_timesteps``) is read from the process when it has one (the discrete tables of
:mod:`jaxode_diffusion.processes`) and may be given explicitly otherwise. With ``N = 1000``,
``index`` and ``index1000`` coincide. Between table nodes the index is fractional, as in
DPM-Solver.
"""

from __future__ import annotations

from collections.abc import Callable

import jax
import jax.numpy as jnp

from jaxode_diffusion.processes.base import ForwardProcess

__all__ = [
    "KINDS",
    "TIME_INPUTS",
    "broadcast_to_batch",
    "check_time_input",
    "to_model_time",
    "from_model_time",
    "canonical_kind",
    "target_coefficients",
    "tweedie_x0",
    "to_x0_eps",
    "from_x0_eps",
    "convert",
    "to_score",
    "from_score",
    "to_eps",
    "to_x0",
    "eps_to_x0",
    "x0_to_eps",
    "eps_to_score",
    "score_to_eps",
    "x0_to_score",
    "score_to_x0",
    "v_to_x0",
    "v_to_eps",
    "x0_eps_to_v",
]

KINDS = ("eps", "x0", "v", "flow", "score")
_ALIASES = {"denoiser": "x0", "x_0": "x0", "epsilon": "eps", "noise": "eps", "velocity": "flow"}


TIME_INPUTS = ("t", "t1000", "index", "index1000", "sigma", "rho", "log_snr", "c_noise")
_TIME_ALIASES = {
    "time": "t",
    "continuous": "t",
    "step": "index",
    "timestep": "index",
    "discrete": "index",
    "lambda": "log_snr",
    "logsnr": "log_snr",
    "edm_sigma": "rho",
}
_DISCRETE_INPUTS = ("index", "index1000")


def _process_num_timesteps(process) -> int | None:
    n = getattr(process, "num_train_timesteps", None)
    return None if n is None else int(n)


def check_time_input(time_input, process: ForwardProcess, num_train_timesteps: int | None = None):
    """Validate a network time-input convention against a process.

    Args:
        time_input: one of :data:`TIME_INPUTS` (aliases: ``"discrete"``/``"step"`` for
            ``"index"``, ``"lambda"`` for ``"log_snr"``, ``"edm_sigma"`` for ``"rho"``) or a
            callable ``(process, t) -> model time`` (used as given).
        process: the forward process the network was trained with.
        num_train_timesteps: ``N`` of a discrete table; read from ``process.num_train_timesteps``
            when ``None``.

    Returns:
        ``(time_input, N)``: the canonical name (or the callable) and the table size (``None``
        for continuous conventions).

    Raises:
        ValueError: on an unknown name; on a discrete convention without ``N`` (neither on the
            process nor given); on an ``N`` that disagrees with the process's; on a discrete
            convention whose process does not end at ``t = 1`` (``t_n = (n + 1)/N``).

    Example:
        >>> from jaxode_diffusion import VPLinear
        >>> check_time_input("discrete", VPLinear(), 1000)
        ('index', 1000)
    """
    if callable(time_input):
        return time_input, num_train_timesteps
    name = _TIME_ALIASES.get(str(time_input).lower(), str(time_input).lower())
    if name not in TIME_INPUTS:
        raise ValueError(
            f"time_input={time_input!r} is not a known network time convention; choose one of "
            f"{list(TIME_INPUTS)} or pass a callable (process, t) -> network time."
        )
    proc_n = _process_num_timesteps(process)
    if name not in _DISCRETE_INPUTS:
        return name, (num_train_timesteps if num_train_timesteps is not None else proc_n)
    if num_train_timesteps is None:
        num_train_timesteps = proc_n
    if num_train_timesteps is None:
        raise ValueError(
            f"time_input={name!r} maps t to a step index of an N-entry table, but process "
            f"{type(process).__name__} has no num_train_timesteps; build the process from the "
            "network's table (ForwardProcess.from_alphas_cumprod / from_betas) or pass "
            "num_train_timesteps=N."
        )
    n = int(num_train_timesteps)
    if n < 2:
        raise ValueError(f"num_train_timesteps must be >= 2, got {num_train_timesteps!r}.")
    if proc_n is not None and proc_n != n:
        raise ValueError(
            f"num_train_timesteps={n} disagrees with the process's num_train_timesteps={proc_n}; "
            "drop the argument (it is read from the process) or use the process of that table."
        )
    t_max = float(process.t_max)
    if abs(t_max - 1.0) > 1e-9:
        raise ValueError(
            f"time_input={name!r} assumes the discrete-table time axis t_n = (n + 1)/N ending at t = 1, "
            f"but process {type(process).__name__} has t_max={t_max}; use a process with t in "
            "[1/N, 1] or a continuous time input ('t', 'sigma', 'log_snr', ...)."
        )
    return name, n


def to_model_time(process: ForwardProcess, t, time_input="t", num_train_timesteps: int | None = None):
    """The network's time input at sampler time ``t`` (see the table in the module docstring).

    Args:
        process: the forward process.
        t: scalar or array of times.
        time_input: a name from :data:`TIME_INPUTS` or a callable ``(process, t) -> model time``.
        num_train_timesteps: ``N`` for the discrete conventions (default: the process's).

    Returns:
        an array shaped like ``t``.

    Example:
        >>> from jaxode_diffusion import VPLinear
        >>> float(to_model_time(VPLinear(), 0.5, "index", num_train_timesteps=1000))
        499.0
    """
    name, n = check_time_input(time_input, process, num_train_timesteps)
    t = jnp.asarray(t)
    if callable(name):
        return name(process, t)
    if name == "t":
        return t
    if name == "t1000":
        return 1000.0 * t
    if name == "index":
        return n * t - 1.0
    if name == "index1000":
        return 1000.0 * (t - 1.0 / n)
    if name == "sigma":
        return process.sigma(t)
    if name == "rho":
        return process.rho(t)
    if name == "log_snr":
        return process.lam(t)
    return -0.25 * process.lam(t)  # c_noise


def _invert_increasing(fn: Callable, y, lo: float, hi: float):
    """The ``t`` in ``[lo, hi]`` with ``fn(t) = y`` for increasing ``fn`` (jit-able bisection)."""
    y = jnp.asarray(y)
    lo0, hi0 = jnp.full(y.shape, lo, y.dtype), jnp.full(y.shape, hi, y.dtype)

    # 80 halvings shrink the bracket below float64 resolution, as in ForwardProcess.t_of_lambda.
    def body(_, lohi):
        a, b = lohi
        mid = 0.5 * (a + b)
        right = fn(mid) < y
        return jnp.where(right, mid, a), jnp.where(right, b, mid)

    a, b = jax.lax.fori_loop(0, 80, body, (lo0, hi0))
    return 0.5 * (a + b)


def from_model_time(process: ForwardProcess, t_in, time_input="t", num_train_timesteps: int | None = None):
    """Inverse of :func:`to_model_time`: the sampler time ``t`` of a network time input.

    ``sigma`` is inverted by bisection (``sigma(t)`` is increasing for every built-in process);
    ``rho``, ``log_snr`` and ``c_noise`` through ``process.t_of_lambda``. A callable
    ``time_input`` has no inverse here (``ValueError``).

    Example:
        >>> from jaxode_diffusion import VPLinear
        >>> round(float(from_model_time(VPLinear(), 499.0, "index", num_train_timesteps=1000)), 6)
        0.5
    """
    name, n = check_time_input(time_input, process, num_train_timesteps)
    if callable(name):
        raise ValueError(
            "from_model_time: a callable time_input has no known inverse; use a named convention "
            f"from {list(TIME_INPUTS)}."
        )
    t_in = jnp.asarray(t_in)
    if not jnp.issubdtype(t_in.dtype, jnp.floating):
        t_in = t_in.astype(jnp.result_type(float))
    if name == "t":
        return t_in
    if name == "t1000":
        return t_in / 1000.0
    if name == "index":
        return (t_in + 1.0) / n
    if name == "index1000":
        return t_in / 1000.0 + 1.0 / n
    if name == "sigma":
        return _invert_increasing(process.sigma, t_in, float(process.t_min), float(process.t_max))
    if name == "rho":
        return process.t_of_lambda(-jnp.log(t_in))
    if name == "log_snr":
        return process.t_of_lambda(t_in)
    return process.t_of_lambda(-4.0 * t_in)  # c_noise


def canonical_kind(kind: str) -> str:
    """Return the canonical name of a prediction kind (``"denoiser"`` -> ``"x0"``).

    Raises:
        ValueError: if ``kind`` is not one of :data:`KINDS` or an alias.

    Example:
        >>> canonical_kind("denoiser"), canonical_kind("EPS")
        ('x0', 'eps')
    """
    k = str(kind).lower()
    k = _ALIASES.get(k, k)
    if k not in KINDS:
        raise ValueError(
            f"prediction kind {kind!r} is not supported; choose one of {list(KINDS)} "
            f"(aliases: {sorted(_ALIASES)})."
        )
    return k


def broadcast_to_batch(c, x):
    """Broadcast a time coefficient (scalar or per-example ``(B,)``) against ``x`` of shape ``(B, ...)``.

    A scalar is returned as a 0-d array; a ``(B,)`` array is reshaped to ``(B, 1, ..., 1)``. Both
    are cast to ``x``'s dtype when ``x`` is floating point (the solver state's dtype decides the
    precision of every conversion).

    Args:
        c: scalar or shape ``(B,)``.
        x: array of shape ``(B, *event_shape)``.

    Returns:
        ``c`` ready to multiply ``x``.

    Raises:
        ValueError: if ``c`` has more than one axis or its length is not ``x.shape[0]``.

    Example:
        >>> import jax.numpy as jnp
        >>> broadcast_to_batch(jnp.arange(3.0), jnp.ones((3, 2, 2))).shape
        (3, 1, 1)
    """
    c = jnp.asarray(c)
    if c.ndim == 0:
        return c.astype(x.dtype) if jnp.issubdtype(x.dtype, jnp.floating) else c
    if c.ndim != 1 or c.shape[0] not in (1, x.shape[0]):
        raise ValueError(
            f"a time coefficient must be a scalar or have shape (B,) = ({x.shape[0]},) for x of shape "
            f"{x.shape}; got shape {c.shape}. Pass one time per example or a single scalar time."
        )
    c = c.reshape(c.shape + (1,) * (x.ndim - 1))
    return c.astype(x.dtype) if jnp.issubdtype(x.dtype, jnp.floating) else c


def _alpha_sigma(process: ForwardProcess, t, x):
    t = jnp.asarray(t, x.dtype)
    return broadcast_to_batch(process.alpha(t), x), broadcast_to_batch(process.sigma(t), x)


def target_coefficients(kind: str, process: ForwardProcess, t, x=None):
    """Coefficients ``(a, b)`` with ``target = a x0 + b eps`` for a prediction ``kind`` at time ``t``.

    Args:
        kind: one of :data:`KINDS` (or an alias).
        process: the forward process.
        t: scalar time or shape ``(B,)``.
        x: optional array ``(B, ...)``; when given, ``a, b`` are broadcast against it.

    Returns:
        ``(a, b)`` arrays.

    Example:
        >>> from jaxode_diffusion import VPLinear
        >>> a, b = target_coefficients("v", VPLinear(), 0.5)
        >>> bool(a < 0) and bool(b > 0)   # v = alpha eps - sigma x0
        True
    """
    kind = canonical_kind(kind)
    dtype = None if x is None else x.dtype
    t = jnp.asarray(t, dtype)
    alpha, sigma = process.alpha(t), process.sigma(t)
    one, zero = jnp.ones_like(alpha), jnp.zeros_like(alpha)
    if kind == "eps":
        a, b = zero, one
    elif kind == "x0":
        a, b = one, zero
    elif kind == "v":
        a, b = -sigma, alpha
    elif kind == "flow":
        a, b = process.f(t) * alpha, process.dlog_sigma(t) * sigma
    else:  # score = -eps / sigma
        a, b = zero, -1.0 / sigma
    if x is not None:
        a, b = broadcast_to_batch(a, x), broadcast_to_batch(b, x)
    return a, b


def tweedie_x0(x, score, alpha, sigma):
    """Tweedie's formula: the posterior mean ``E[x0 | x_t = x] = (x + sigma^2 score) / alpha``.

    For ``x_t = alpha x0 + sigma eps``, ``score = grad log p_t(x)`` gives the denoised estimate
    ``x0_hat`` (Efron 2011, "Tweedie's formula and selection bias"). The one place this formula
    is written; ``alpha`` and ``sigma`` must broadcast against ``x`` (see
    :func:`broadcast_to_batch`).

    Example:
        >>> import jax.numpy as jnp
        >>> x = jnp.array([[2.0]])                # p_t = N(0, 4): score = -x / 4
        >>> round(float(tweedie_x0(x, -x / 4.0, 1.0, jnp.sqrt(3.0))[0, 0]), 6)  # x0 ~ N(0, 1), sigma^2 = 3
        0.5
    """
    return (x + sigma**2 * score) / alpha


def to_x0_eps(pred, kind: str, x, t, process: ForwardProcess):
    """Recover ``(x0_hat, eps_hat)`` from a prediction of the given kind at ``(x, t)``.

    Solves ``[a b; alpha sigma] [x0; eps] = [pred; x]`` (determinant ``a sigma - b alpha``, non-zero
    for every kind because the log-SNR is strictly decreasing).

    Returns:
        ``(x0_hat, eps_hat)``, each shaped like ``x``.

    Example:
        >>> import jax.numpy as jnp
        >>> from jaxode_diffusion import EDM
        >>> x0, eps = to_x0_eps(jnp.zeros((1, 1)), "eps", jnp.ones((1, 1)), 2.0, EDM())
        >>> float(x0[0, 0]), float(eps[0, 0])   # x = x0 + 2 eps with eps = 0
        (1.0, 0.0)
    """
    kind = canonical_kind(kind)
    alpha, sigma = _alpha_sigma(process, t, x)
    if kind == "eps":
        return (x - sigma * pred) / alpha, pred
    if kind == "x0":
        return pred, (x - alpha * pred) / sigma
    if kind == "score":
        return tweedie_x0(x, pred, alpha, sigma), -sigma * pred
    if kind == "v":
        norm = alpha**2 + sigma**2
        return (alpha * x - sigma * pred) / norm, (sigma * x + alpha * pred) / norm
    a, b = target_coefficients(kind, process, t, x)
    det = a * sigma - b * alpha
    return (sigma * pred - b * x) / det, (a * x - alpha * pred) / det


def from_x0_eps(x0, eps, kind: str, process: ForwardProcess, t):
    """The prediction of ``kind`` equal to ``a x0 + b eps`` (see :func:`target_coefficients`).

    Example:
        >>> import jax.numpy as jnp
        >>> from jaxode_diffusion import RectifiedFlow
        >>> float(from_x0_eps(jnp.ones((1, 1)), jnp.zeros((1, 1)), "flow", RectifiedFlow(), 0.5)[0, 0])
        -1.0
    """
    kind = canonical_kind(kind)
    if kind == "x0":
        return x0
    if kind == "eps":
        return eps
    a, b = target_coefficients(kind, process, t, eps)
    if kind == "score":
        return b * eps
    return a * x0 + b * eps


def convert(pred, from_kind: str, to_kind: str, x, t, process: ForwardProcess):
    """Convert a prediction between any two kinds at ``(x, t)``.

    Example:
        >>> import jax.numpy as jnp
        >>> from jaxode_diffusion import VPLinear
        >>> x, eps = jnp.ones((2, 3)), jnp.full((2, 3), 0.5)
        >>> s = convert(eps, "eps", "score", x, 0.3, VPLinear())
        >>> bool(jnp.allclose(s, -eps / VPLinear().sigma(0.3)))
        True
    """
    from_kind, to_kind = canonical_kind(from_kind), canonical_kind(to_kind)
    if from_kind == to_kind:
        return pred
    if to_kind == "score":
        return to_score(pred, from_kind, x, t, process)
    x0, eps = to_x0_eps(pred, from_kind, x, t, process)
    return from_x0_eps(x0, eps, to_kind, process, t)


def to_score(pred, kind: str, x, t, process: ForwardProcess):
    """Score ``grad log p_t(x)`` from a prediction of ``kind``.

    ``score = -eps/sigma`` (eps), ``(alpha x0 - x)/sigma^2`` (x0), via ``(x0, eps)`` otherwise.

    Example:
        >>> import jax.numpy as jnp
        >>> from jaxode_diffusion import EDM
        >>> float(to_score(jnp.zeros((1, 1)), "x0", jnp.ones((1, 1)), 2.0, EDM())[0, 0])
        -0.25
    """
    kind = canonical_kind(kind)
    if kind == "score":
        return pred
    alpha, sigma = _alpha_sigma(process, t, x)
    if kind == "eps":
        return -pred / sigma
    if kind == "x0":
        return (alpha * pred - x) / sigma**2
    _, eps = to_x0_eps(pred, kind, x, t, process)
    return -eps / sigma


def from_score(score, kind: str, x, t, process: ForwardProcess):
    """The prediction of ``kind`` equivalent to ``score`` at ``(x, t)`` (inverse of :func:`to_score`).

    Example:
        >>> import jax.numpy as jnp
        >>> from jaxode_diffusion import EDM
        >>> float(from_score(jnp.full((1, 1), -0.25), "x0", jnp.ones((1, 1)), 2.0, EDM())[0, 0])
        0.0
    """
    kind = canonical_kind(kind)
    if kind == "score":
        return score
    alpha, sigma = _alpha_sigma(process, t, x)
    eps = -sigma * score
    if kind == "eps":
        return eps
    x0 = tweedie_x0(x, score, alpha, sigma)
    return from_x0_eps(x0, eps, kind, process, t)


def to_eps(pred, kind: str, x, t, process: ForwardProcess):
    """``eps_hat`` from a prediction of ``kind``.

    Example:
        >>> import jax.numpy as jnp
        >>> from jaxode_diffusion import EDM
        >>> float(to_eps(jnp.zeros((1, 1)), "x0", jnp.ones((1, 1)), 2.0, EDM())[0, 0])  # (x - x0) / sigma
        0.5
    """
    return to_x0_eps(pred, kind, x, t, process)[1]


def to_x0(pred, kind: str, x, t, process: ForwardProcess):
    """``x0_hat`` (the denoiser output) from a prediction of ``kind``.

    Example:
        >>> import jax.numpy as jnp
        >>> from jaxode_diffusion import EDM
        >>> float(to_x0(jnp.full((1, 1), 0.5), "eps", jnp.ones((1, 1)), 2.0, EDM())[0, 0])  # x - sigma eps
        0.0
    """
    return to_x0_eps(pred, kind, x, t, process)[0]


# -- named two-way conversions (thin wrappers, kept for readability at call sites) ----------
def eps_to_x0(eps, x, t, process: ForwardProcess):
    """``x0 = (x - sigma eps) / alpha``.

    Example:
        >>> import jax.numpy as jnp
        >>> from jaxode_diffusion import EDM
        >>> x = jnp.ones((1, 1))
        >>> float(eps_to_x0(jnp.full((1, 1), 0.5), x, 2.0, EDM())[0, 0])
        0.0
    """
    return convert(eps, "eps", "x0", x, t, process)


def x0_to_eps(x0, x, t, process: ForwardProcess):
    """``eps = (x - alpha x0) / sigma``.

    Example:
        >>> import jax.numpy as jnp
        >>> from jaxode_diffusion import EDM
        >>> x = jnp.ones((1, 1))
        >>> float(x0_to_eps(jnp.zeros((1, 1)), x, 2.0, EDM())[0, 0])
        0.5
    """
    return convert(x0, "x0", "eps", x, t, process)


def eps_to_score(eps, x, t, process: ForwardProcess):
    """``score = -eps / sigma``.

    Example:
        >>> import jax.numpy as jnp
        >>> from jaxode_diffusion import EDM
        >>> x = jnp.ones((1, 1))
        >>> float(eps_to_score(jnp.full((1, 1), 0.5), x, 2.0, EDM())[0, 0])
        -0.25
    """
    return to_score(eps, "eps", x, t, process)


def score_to_eps(score, x, t, process: ForwardProcess):
    """``eps = -sigma score``.

    Example:
        >>> import jax.numpy as jnp
        >>> from jaxode_diffusion import EDM
        >>> x = jnp.ones((1, 1))
        >>> float(score_to_eps(jnp.full((1, 1), -0.25), x, 2.0, EDM())[0, 0])
        0.5
    """
    return from_score(score, "eps", x, t, process)


def x0_to_score(x0, x, t, process: ForwardProcess):
    """``score = (alpha x0 - x) / sigma^2``.

    Example:
        >>> import jax.numpy as jnp
        >>> from jaxode_diffusion import EDM
        >>> x = jnp.ones((1, 1))
        >>> float(x0_to_score(jnp.zeros((1, 1)), x, 2.0, EDM())[0, 0])
        -0.25
    """
    return to_score(x0, "x0", x, t, process)


def score_to_x0(score, x, t, process: ForwardProcess):
    """``x0 = (x + sigma^2 score) / alpha`` (Tweedie's formula).

    Example:
        >>> import jax.numpy as jnp
        >>> from jaxode_diffusion import EDM
        >>> x = jnp.ones((1, 1))
        >>> float(score_to_x0(jnp.full((1, 1), -0.25), x, 2.0, EDM())[0, 0])
        0.0
    """
    return from_score(score, "x0", x, t, process)


def v_to_x0(v, x, t, process: ForwardProcess):
    """``x0 = (alpha x - sigma v) / (alpha^2 + sigma^2)``.

    Example:
        >>> import jax.numpy as jnp
        >>> from jaxode_diffusion import EDM
        >>> x = jnp.ones((1, 1))
        >>> float(v_to_x0(jnp.full((1, 1), -2.0), x, 2.0, EDM())[0, 0])
        1.0
    """
    return convert(v, "v", "x0", x, t, process)


def v_to_eps(v, x, t, process: ForwardProcess):
    """``eps = (sigma x + alpha v) / (alpha^2 + sigma^2)``.

    Example:
        >>> import jax.numpy as jnp
        >>> from jaxode_diffusion import EDM
        >>> x = jnp.ones((1, 1))
        >>> float(v_to_eps(jnp.full((1, 1), -2.0), x, 2.0, EDM())[0, 0])
        0.0
    """
    return convert(v, "v", "eps", x, t, process)


def x0_eps_to_v(x0, eps, t, process: ForwardProcess):
    """``v = alpha eps - sigma x0``.

    Example:
        >>> import jax.numpy as jnp
        >>> from jaxode_diffusion import EDM
        >>> float(x0_eps_to_v(jnp.ones((1, 1)), jnp.zeros((1, 1)), 2.0, EDM())[0, 0])  # alpha eps - sigma x0
        -2.0
    """
    return from_x0_eps(x0, eps, "v", process, t)
