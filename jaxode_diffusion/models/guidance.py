"""Guidance and thresholding as score wrappers: classifier-free guidance, dynamic thresholding.

Every wrapper is an equinox Module with the score signature ``score_fn(x, t, cond)``, so it goes
wherever a score goes (``sample(..., cond=c)``, the regularity tools) and its array fields -- the
wrapped network's parameters, the guidance scale, the null condition -- are traced: changing
them never recompiles.

**Guidance convention** (used everywhere in this package)::

    s_w(x, t, c) = s(x, t, null) + w (s(x, t, c) - s(x, t, null))

``w = 1`` is the conditional score (no guidance), ``w = 0`` the unconditional one, ``w > 1``
guides (Ho & Salimans 2022, "Classifier-free diffusion guidance"; their ``(1 + w') s_c - w' s_u``
is this with ``w = 1 + w'``). Since every prediction kind is affine in the score at fixed
``(x, t)``, guiding the score equals guiding eps, x0 or v with the same ``w``.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from typing import Any

import equinox as eqx
import jax
import jax.numpy as jnp
import numpy as np

from jaxode_diffusion.processes.parameterizations import broadcast_to_batch, to_score, to_x0
from jaxode_diffusion.processes import ForwardProcess

__all__ = [
    "ClassifierFreeGuidance",
    "classifier_free_guidance",
    "DynamicThresholding",
    "dynamic_thresholding",
]


def _leaf_name(path) -> str:
    return "cond" + jax.tree_util.keystr(path) if path else "cond"


#: Largest guidance scale accepted: beyond it ``w (s_c - s_u)`` swamps the score (typical scales are
#: 1-20) and overflows to inf in low precision, which would read as a failure of the score.
_MAX_SCALE = 1e4


def _check_scale_value(scale, shown=None) -> None:
    """Raise on a concrete non-finite or huge scale (traced values are checked where they are concrete)."""
    if isinstance(scale, jax.core.Tracer):
        return
    arr = np.asarray(scale, dtype=np.float64)
    shown = arr.tolist() if shown is None else shown
    if not np.all(np.isfinite(arr)):
        raise ValueError(
            f"scale={shown!r} is not finite; the guidance scale must be a finite number "
            "(w = 1: no guidance, w = 0: unconditional, w > 1: stronger guidance)."
        )
    if np.any(np.abs(arr) > _MAX_SCALE):
        raise ValueError(
            f"scale={shown!r} exceeds {_MAX_SCALE:g} in magnitude: w (s_cond - s_null) would swamp "
            "the score and overflow; pass a guidance scale between about 0 and 20."
        )


def _as_scale(scale):
    if callable(scale) and not isinstance(scale, (jax.Array, np.ndarray)):
        return scale
    if isinstance(scale, jax.core.Tracer):
        return scale
    if scale is None or isinstance(scale, (str, bytes, bool, np.bool_)):
        raise ValueError(
            f"scale={scale!r} is not a guidance scale; pass a real number (e.g. 2.0), an array of one "
            "value per example, or a callable schedule w(t)."
        )
    try:
        arr = jnp.asarray(scale)
    except (TypeError, ValueError):
        raise ValueError(
            f"scale={scale!r} is not a guidance scale; pass a real number (e.g. 2.0), an array of "
            "one value per example, or a callable schedule w(t)."
        ) from None
    if not (jnp.issubdtype(arr.dtype, jnp.floating) or jnp.issubdtype(arr.dtype, jnp.integer)):
        raise ValueError(
            f"scale={scale!r} has dtype {arr.dtype}; pass a real number, a real array or a callable w(t)."
        )
    if arr.ndim > 1:
        raise ValueError(
            f"scale must be a scalar or one value per example (shape (B,)); got shape {arr.shape}."
        )
    _check_scale_value(arr, scale)
    # Floating so that a Python int scale is a traced leaf of the same dtype as a float one.
    return arr.astype(jnp.result_type(float)) if not jnp.issubdtype(arr.dtype, jnp.floating) else arr


def _checked_schedule_value(w, t):
    """``w`` (a schedule's value at ``t``) after refusing NaN/inf/huge values as the schedule's fault."""
    w = jnp.asarray(w)
    if not (jnp.issubdtype(w.dtype, jnp.floating) or jnp.issubdtype(w.dtype, jnp.integer)):
        raise ValueError(f"the guidance schedule scale(t) returned dtype {w.dtype}; it must return real numbers.")
    if not isinstance(w, jax.core.Tracer) and not isinstance(t, jax.core.Tracer):
        bad = ~np.isfinite(np.asarray(w, np.float64)) | (np.abs(np.asarray(w, np.float64)) > _MAX_SCALE)
        if np.any(bad):
            raise ValueError(
                f"the guidance schedule scale(t) returned {np.asarray(w).tolist()!r} at t={np.asarray(t).tolist()!r}; "
                f"a schedule must return finite values of magnitude <= {_MAX_SCALE:g} over the whole "
                "time range: fix the schedule (the score is not at fault)."
            )
        return w
    wf = w.astype(jnp.result_type(float)) if not jnp.issubdtype(w.dtype, jnp.floating) else w
    return eqx.error_if(
        w, ~jnp.all(jnp.isfinite(wf) & (jnp.abs(wf) <= _MAX_SCALE)),
        f"the guidance schedule scale(t) returned NaN/inf or a value beyond {_MAX_SCALE:g} during sampling; "
        "a schedule must return finite values over the whole time range: fix the schedule "
        "(the score is not at fault).",
    )


def _as_leaves(tree):
    """Array leaves (Python and NumPy scalars become arrays, hence traced, not static)."""
    return jax.tree.map(jnp.asarray, tree)


class ClassifierFreeGuidance(eqx.Module):
    """The guided score ``s(x, t, null) + w (s(x, t, c) - s(x, t, null))`` in one network call.

    ``x`` is stacked with itself and ``cond`` with ``null_cond`` along the batch axis, so the
    wrapped score is evaluated once on a batch of ``2B`` (the network sees one large batch, as
    in every CFG implementation), then split. Build it with :func:`classifier_free_guidance`.

    Attributes:
        score_fn: the conditional score ``score_fn(x, t, cond)``.
        scale: ``w`` (a traced array, scalar or per-example ``(B,)``) or a schedule ``w(t)``.
        null_cond: the unconditional ("null") condition: the structure of ``cond``, each leaf
            either one example's shape (broadcast over the batch) or the full batch shape.

    Example:
        >>> import jax.numpy as jnp
        >>> cfg = classifier_free_guidance(lambda x, t, c: c[:, None] - x, 2.0, null_cond=jnp.asarray(0.0))
        >>> type(cfg).__name__, float(cfg.guidance_scale(0.5))
        ('ClassifierFreeGuidance', 2.0)
    """

    score_fn: Any
    scale: Any
    null_cond: Any

    def guidance_scale(self, t, dtype=None):
        """``w`` at time ``t`` (the schedule's value, or the stored scale)."""
        if callable(self.scale):
            return jnp.asarray(_checked_schedule_value(self.scale(t), t), dtype)
        return jnp.asarray(self.scale, dtype)

    def _stack(self, cond, batch: int):
        c_leaves, c_def = jax.tree_util.tree_flatten_with_path(cond)
        n_leaves, n_def = jax.tree.flatten(self.null_cond)
        if jax.tree.structure(cond) != n_def:
            raise ValueError(
                f"null_cond has structure {n_def} but cond has structure {jax.tree.structure(cond)}; "
                "give null_cond the structure of one condition (for class labels: the null label, "
                "e.g. num_classes; for embeddings: the empty-prompt embedding)."
            )
        out = []
        for (path, c), n in zip(c_leaves, n_leaves, strict=True):
            c, n = jnp.asarray(c), jnp.asarray(n)
            name = _leaf_name(path)
            if c.ndim == 0:
                c = jnp.broadcast_to(c, (batch,))
            elif c.shape[0] != batch:
                raise ValueError(
                    f"{name} has shape {c.shape} but x has batch size {batch}; give every cond leaf a "
                    f"leading batch axis of size {batch} (one condition per example) or pass a scalar."
                )
            if n.shape == c.shape[1:]:
                n = jnp.broadcast_to(n, c.shape)
            elif n.shape != c.shape:
                raise ValueError(
                    f"null_cond leaf for {name} has shape {n.shape}; expected one example's shape "
                    f"{c.shape[1:]} (broadcast over the batch) or the batch shape {c.shape}."
                )
            out.append(jnp.concatenate([c, n.astype(c.dtype)], axis=0))
        return jax.tree.unflatten(c_def, out)

    def __call__(self, x, t, cond):
        if cond is None:
            raise ValueError(
                "classifier-free guidance needs a condition: call score_fn(x, t, cond) (or "
                "sample(..., cond=c)); for the unconditional score use the wrapped score with null_cond."
            )
        x = jnp.asarray(x)
        batch = x.shape[0]
        both = self._stack(cond, batch)
        t_arr = jnp.asarray(t)
        t2 = jnp.concatenate([t_arr, t_arr]) if t_arr.ndim == 1 else t_arr
        s = self.score_fn(jnp.concatenate([x, x], axis=0), t2, both)
        s_c, s_u = s[:batch], s[batch:]
        w = broadcast_to_batch(self.guidance_scale(t_arr, x.dtype), s_c)
        return s_u + w * (s_c - s_u)


def classifier_free_guidance(score_fn: Callable, scale, null_cond) -> ClassifierFreeGuidance:
    """Classifier-free guidance of a conditional score, ``s_null + w (s_cond - s_null)``.

    Args:
        score_fn: conditional score ``score_fn(x, t, cond)`` trained with condition dropout
            (for example :func:`~jaxode_diffusion.models.as_score_fn` of a class-conditional model).
        scale: the guidance scale ``w`` (``1``: no guidance, ``0``: unconditional): a number or
            array (scalar or per-example ``(B,)``; stored as a traced array, so new values do not
            recompile), or a schedule ``w(t)`` (a callable; an equinox Module keeps its own
            parameters traced).
        null_cond: the null condition: the structure of ``cond``; each leaf one example's shape
            (broadcast) or the full batch shape.

    Returns:
        a :class:`ClassifierFreeGuidance` score ``(x, t, cond) -> s_w``, one network call per
        evaluation on a batch of ``2B``.

    Raises:
        ValueError: if ``score_fn`` is not callable, ``scale`` is not a real number, array or
            callable, is NaN/inf or beyond 1e4 in magnitude, or is not a scalar or ``(B,)`` array;
            when called, if a schedule returns such values (inside a compiled solve, equinox's
            runtime error with the same text), if ``cond`` is missing, its structure differs from
            ``null_cond``'s or a leaf's batch size differs from ``x``'s.

    Example:
        >>> import jax.numpy as jnp
        >>> def score(x, t, label):            # toy conditional score: pulls x to its label
        ...     return label[:, None] - x
        >>> guided = classifier_free_guidance(score, 3.0, null_cond=jnp.asarray(0.0))
        >>> guided(jnp.zeros((2, 1)), 0.5, jnp.asarray([1.0, 2.0]))[:, 0].tolist()
        [3.0, 6.0]
    """
    if not callable(score_fn):
        raise ValueError(f"score_fn must be callable score_fn(x, t, cond); got {type(score_fn).__name__}.")
    if null_cond is None:
        raise ValueError(
            "null_cond is None; pass the unconditional condition the model was trained with "
            "(for class labels the null id, e.g. num_classes)."
        )
    return ClassifierFreeGuidance(score_fn, _as_scale(scale), _as_leaves(null_cond))


class DynamicThresholding(eqx.Module):
    """Dynamic thresholding of the data prediction (Imagen; DPM-Solver++), as a score wrapper.

    With ``x0_hat`` the data prediction of the wrapped score (Tweedie,
    ``x0 = (x + sigma^2 s) / alpha``) and, per sample, ``q`` the ``percentile`` quantile of
    ``|x0_hat|``::

        s_thr  = max(q, max_threshold)
        x0_thr = clip(x0_hat, -s_thr, s_thr) * max_threshold / s_thr

    and the returned score is that of ``x0_thr``: ``(alpha x0_thr - x) / sigma^2``. With
    ``max_threshold = 1`` (data in ``[-1, 1]``) this is exactly Imagen's (Saharia et al. 2022,
    Sec. 2.3) and DPM-Solver++'s ``dynamic_thresholding_fn`` (Lu et al. 2022, Sec. 3.3); when
    ``q <= max_threshold`` it reduces to static clipping to ``[-max_threshold, max_threshold]``.
    It changes the model, so use it with data-prediction solvers (the ``x0-lambda`` /
    ``x0-snr`` forms, DPM-Solver++) on bounded data such as images. Build it with
    :func:`dynamic_thresholding`.

    Example:
        >>> import jax.numpy as jnp
        >>> from jaxode_diffusion import EDM
        >>> thr = dynamic_thresholding(lambda x, t: -x, EDM(), max_threshold=1.0)
        >>> [round(v, 3) for v in thr.threshold_x0(jnp.array([[3.0, 0.5]]))[0].tolist()]  # q ~ 2.99
        [1.0, 0.167]
    """

    score_fn: Any
    process: ForwardProcess
    percentile: float = eqx.field(static=True)
    max_threshold: float = eqx.field(static=True)

    def threshold_x0(self, x0):
        """The thresholded data prediction of a batch ``x0`` of shape ``(B, ...)``."""
        flat = jnp.abs(x0).reshape(x0.shape[0], -1)
        q = jnp.quantile(flat, self.percentile, axis=1)
        s = jnp.maximum(q, jnp.asarray(self.max_threshold, q.dtype))
        s = broadcast_to_batch(s, x0)
        return jnp.clip(x0, -s, s) * (self.max_threshold / s)

    def __call__(self, x, t, cond=None):
        x = jnp.asarray(x)
        s = self.score_fn(x, t) if cond is None else self.score_fn(x, t, cond)
        t = jnp.asarray(t, x.dtype)
        x0 = to_x0(s, "score", x, t, self.process)
        return to_score(self.threshold_x0(x0), "x0", x, t, self.process)


def dynamic_thresholding(
    score_fn: Callable, process: ForwardProcess, percentile: float = 0.995, max_threshold: float = 1.0
) -> DynamicThresholding:
    """Wrap a score with dynamic thresholding of its data prediction (see :class:`DynamicThresholding`).

    Args:
        score_fn: ``score_fn(x, t)`` or ``score_fn(x, t, cond)`` (for example a guided score).
        process: the forward process (its ``alpha``, ``sigma`` turn the score into ``x0_hat``).
        percentile: quantile ``p`` of ``|x0_hat|`` per sample (Imagen / DPM-Solver++: 0.995).
        max_threshold: the data's bound (1 for images in ``[-1, 1]``); the threshold never
            falls below it.

    Raises:
        ValueError: if ``percentile`` is not in ``(0, 1]`` or ``max_threshold`` is not a
            positive finite number.

    Example:
        >>> import jax.numpy as jnp
        >>> from jaxode_diffusion import EDM
        >>> far = lambda x, t: -(x - 5.0) / t**2          # x0_hat = 5 everywhere
        >>> dt = dynamic_thresholding(far, EDM())
        >>> x = jnp.zeros((1, 4))
        >>> float((x + 1.0**2 * dt(x, 1.0))[0, 0])        # x0 after thresholding
        1.0
    """
    if not callable(score_fn):
        raise ValueError(f"score_fn must be callable; got {type(score_fn).__name__}.")
    if not isinstance(process, ForwardProcess):
        raise ValueError(f"process must be a ForwardProcess; got {type(process).__name__}.")
    p = float(percentile)
    if not (0.0 < p <= 1.0):
        raise ValueError(f"percentile={percentile!r} must lie in (0, 1] (Imagen uses 0.995).")
    m = float(max_threshold)
    if not (math.isfinite(m) and m > 0.0):
        raise ValueError(
            f"max_threshold={max_threshold!r} must be a positive finite number (the data's bound, "
            "1 for images scaled to [-1, 1])."
        )
    return DynamicThresholding(score_fn, process, p, m)

