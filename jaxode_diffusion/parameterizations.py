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
"""

from __future__ import annotations

import jax.numpy as jnp

from .processes import ForwardProcess

__all__ = [
    "KINDS",
    "canonical_kind",
    "target_coefficients",
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


def canonical_kind(kind: str) -> str:
    """Return the canonical name of a prediction kind (``"denoiser"`` -> ``"x0"``).

    Raises:
        ValueError: if ``kind`` is not one of :data:`KINDS` or an alias.
    """
    k = str(kind).lower()
    k = _ALIASES.get(k, k)
    if k not in KINDS:
        raise ValueError(
            f"prediction kind {kind!r} is not supported; choose one of {list(KINDS)} "
            f"(aliases: {sorted(_ALIASES)})."
        )
    return k


def _bcast(c, x):
    """Broadcast a time coefficient (scalar or ``(B,)``) against ``x`` of shape ``(B, ...)``."""
    c = jnp.asarray(c)
    if c.ndim == 0:
        return c.astype(x.dtype) if jnp.issubdtype(x.dtype, jnp.floating) else c
    assert c.ndim == 1, f"time must be a scalar or shape (B,), got {c.shape}"
    return c.reshape(c.shape + (1,) * (x.ndim - 1)).astype(x.dtype)


def _alpha_sigma(process: ForwardProcess, t, x):
    t = jnp.asarray(t, x.dtype)
    return _bcast(process.alpha(t), x), _bcast(process.sigma(t), x)


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
        a, b = _bcast(a, x), _bcast(b, x)
    return a, b


def to_x0_eps(pred, kind: str, x, t, process: ForwardProcess):
    """Recover ``(x0_hat, eps_hat)`` from a prediction of the given kind at ``(x, t)``.

    Solves ``[a b; alpha sigma] [x0; eps] = [pred; x]`` (determinant ``a sigma - b alpha``, non-zero
    for every kind because the log-SNR is strictly decreasing).
    """
    kind = canonical_kind(kind)
    alpha, sigma = _alpha_sigma(process, t, x)
    if kind == "eps":
        return (x - sigma * pred) / alpha, pred
    if kind == "x0":
        return pred, (x - alpha * pred) / sigma
    if kind == "score":
        eps = -sigma * pred
        return (x + sigma**2 * pred) / alpha, eps
    if kind == "v":
        norm = alpha**2 + sigma**2
        return (alpha * x - sigma * pred) / norm, (sigma * x + alpha * pred) / norm
    a, b = target_coefficients(kind, process, t, x)
    det = a * sigma - b * alpha
    return (sigma * pred - b * x) / det, (a * x - alpha * pred) / det


def from_x0_eps(x0, eps, kind: str, process: ForwardProcess, t):
    """The prediction of ``kind`` equal to ``a x0 + b eps`` (see :func:`target_coefficients`)."""
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
    """The prediction of ``kind`` equivalent to ``score`` at ``(x, t)`` (inverse of :func:`to_score`)."""
    kind = canonical_kind(kind)
    if kind == "score":
        return score
    alpha, sigma = _alpha_sigma(process, t, x)
    eps = -sigma * score
    if kind == "eps":
        return eps
    x0 = (x + sigma**2 * score) / alpha
    return from_x0_eps(x0, eps, kind, process, t)


def to_eps(pred, kind: str, x, t, process: ForwardProcess):
    """``eps_hat`` from a prediction of ``kind``."""
    return to_x0_eps(pred, kind, x, t, process)[1]


def to_x0(pred, kind: str, x, t, process: ForwardProcess):
    """``x0_hat`` (the denoiser output) from a prediction of ``kind``."""
    return to_x0_eps(pred, kind, x, t, process)[0]


# -- named two-way conversions (thin wrappers, kept for readability at call sites) ----------
def eps_to_x0(eps, x, t, process: ForwardProcess):
    """``x0 = (x - sigma eps) / alpha``."""
    return convert(eps, "eps", "x0", x, t, process)


def x0_to_eps(x0, x, t, process: ForwardProcess):
    """``eps = (x - alpha x0) / sigma``."""
    return convert(x0, "x0", "eps", x, t, process)


def eps_to_score(eps, x, t, process: ForwardProcess):
    """``score = -eps / sigma``."""
    return to_score(eps, "eps", x, t, process)


def score_to_eps(score, x, t, process: ForwardProcess):
    """``eps = -sigma score``."""
    return from_score(score, "eps", x, t, process)


def x0_to_score(x0, x, t, process: ForwardProcess):
    """``score = (alpha x0 - x) / sigma^2``."""
    return to_score(x0, "x0", x, t, process)


def score_to_x0(score, x, t, process: ForwardProcess):
    """``x0 = (x + sigma^2 score) / alpha`` (Tweedie's formula)."""
    return from_score(score, "x0", x, t, process)


def v_to_x0(v, x, t, process: ForwardProcess):
    """``x0 = (alpha x - sigma v) / (alpha^2 + sigma^2)``."""
    return convert(v, "v", "x0", x, t, process)


def v_to_eps(v, x, t, process: ForwardProcess):
    """``eps = (sigma x + alpha v) / (alpha^2 + sigma^2)``."""
    return convert(v, "v", "eps", x, t, process)


def x0_eps_to_v(x0, eps, t, process: ForwardProcess):
    """``v = alpha eps - sigma x0``."""
    return from_x0_eps(x0, eps, "v", process, t)
