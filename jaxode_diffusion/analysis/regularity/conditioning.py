"""Conditional scores in the regularity tools: bind a condition, or evaluate per example.

Every estimator takes ``cond=`` (a pytree; the score is then called as ``score_fn(x, t, cond)``,
e.g. class labels, or a guided score from
:func:`~jaxode_diffusion.models.guidance.classifier_free_guidance`). Leaves with a leading batch axis
are one condition per example (each example's derivatives use its own condition); scalar leaves
are shared. :func:`bind_cond` makes the same two-argument score explicitly.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import equinox as eqx
import jax
import jax.numpy as jnp

from jaxode_diffusion.utils.checks import check_callable

__all__ = ["BoundCond", "bind_cond"]


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
    regularity estimators instead: they evaluate each example with its own condition.

    Example:
        >>> import jax.numpy as jnp
        >>> score = lambda x, t, c: -(x - c) / (1.0 + t**2)      # N(c, (1 + t^2) I)
        >>> f = bind_cond(score, jnp.asarray(2.0))
        >>> float(f(jnp.zeros((1, 1)), 1.0)[0, 0])
        1.0
        >>> from jaxode_diffusion.analysis.regularity import jacobian_norm
        >>> [round(float(v), 4) for v in jacobian_norm(f, jnp.ones((2, 3)), 1.0)]
        [0.5, 0.5]
    """
    check_callable(score_fn, signature="score_fn(x, t, cond)")
    return BoundCond(score_fn, jax.tree.map(jnp.asarray, cond))


def split_cond(cond, batch: int):
    """``(treedef, leaves, mapped)``: leaves with a leading axis of size ``batch`` are one per
    example (mapped), scalars are shared; anything else is an error naming the leaf.

    Example:
        >>> import jax.numpy as jnp
        >>> treedef, leaves, mapped = split_cond({"label": jnp.array([0, 1]), "scale": 2.0}, batch=2)
        >>> mapped
        [True, False]
    """
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


def with_cond(compute, score_fn, x, cond, *args, mapped_args=()):
    """Run a batch ``compute(score, x, *args, *mapped_args)`` with a condition.

    All-scalar conditions are bound once (:func:`bind_cond`); otherwise ``compute`` runs on a
    batch of one per example (``vmap``), that example's condition bound (its mapped leaves keep
    a batch axis of one), and the per-example outputs (leading axis 1) are stacked.

    Example:
        >>> import jax.numpy as jnp
        >>> score = lambda x, t, c: x * c
        >>> with_cond(lambda f, x, t: f(x, t), score, jnp.ones((2, 1)), jnp.array([1.0, 2.0]), 0.0).tolist()
        [[1.0], [2.0]]
    """
    treedef, leaves, mapped = split_cond(cond, x.shape[0])
    if not any(mapped):
        return compute(BoundCond(score_fn, treedef.unflatten(leaves)), x, *args, *mapped_args)
    per_ex = [leaf for leaf, m in zip(leaves, mapped, strict=True) if m]
    shared = [leaf for leaf, m in zip(leaves, mapped, strict=True) if not m]

    def one(xi, per, *mi):
        it_per, it_sh = iter(per), iter(shared)
        ci = treedef.unflatten([next(it_per)[None] if m else next(it_sh) for m in mapped])
        out = compute(BoundCond(score_fn, ci), xi[None], *args, *(m[None] for m in mi))
        return jax.tree.map(lambda a: a[0], out)

    return jax.vmap(one)(x, per_ex, *mapped_args)
