"""Score error of a (learned) score against the exact score of a Gaussian mixture.

    eps_score^2 = 1/(t_max - t_min) int_{t_min}^{t_max} E_{x ~ p_t} ||s_theta(x, t) - grad log p_t(x)||^2 dt

with exact samples of ``p_t`` (:meth:`GaussianMixture.sample_marginal`) and the exact score
(:meth:`GaussianMixture.score`). The time integral uses the midpoint rule on ``num_times``
equal cells of ``[t_min, t_max]``; the squared norm is summed over coordinates. The
``sigma^2``-weighted variant ``E sigma(t)^2 ||.||^2`` is the eps-prediction error
``E ||eps_theta - eps*||^2`` (score = -eps/sigma), bounded for every t.
"""

from __future__ import annotations

from typing import NamedTuple

import equinox as eqx
import jax
import jax.numpy as jnp

from jaxode_diffusion.processes import ForwardProcess
from jaxode_diffusion.models.mixture import GaussianMixture

__all__ = ["ScoreError", "score_error"]


class ScoreError(NamedTuple):
    """Result of :func:`score_error`.

    Attributes:
        value: the time-averaged ``E ||s_theta - s||^2`` (``eps_score^2``).
        weighted: the time-averaged ``E sigma(t)^2 ||s_theta - s||^2``.
        ts: ``(num_times,)`` evaluation times (cell midpoints).
        per_t: ``(num_times,)`` ``E ||s_theta - s||^2`` at each time.
        weighted_per_t: ``(num_times,)`` the ``sigma^2``-weighted values.
    """

    value: jax.Array
    weighted: jax.Array
    ts: jax.Array
    per_t: jax.Array
    weighted_per_t: jax.Array


@eqx.filter_jit
def _per_t(score_fn, mixture, process, ts, keys, num_samples: int):
    def one(args):
        t, key = args
        x = mixture.sample_marginal(key, num_samples, process, t)
        err = jnp.sum((score_fn(x, t) - mixture.score(x, process, t)) ** 2, axis=-1)
        return jnp.mean(err)

    per_t = jax.lax.map(one, (ts, keys))
    return per_t, process.sigma(ts) ** 2 * per_t


def score_error(
    score_fn,
    mixture: GaussianMixture,
    process: ForwardProcess,
    *,
    key,
    num_times: int = 32,
    num_samples: int = 2048,
    t_min: float | None = None,
    t_max: float | None = None,
) -> ScoreError:
    """Time-averaged squared score error of ``score_fn`` against the exact mixture score.

    Args:
        score_fn: ``score_fn(x, t)`` for ``x`` of shape ``(B, d)`` (a model adapter or a function).
        mixture: the :class:`~jaxode_diffusion.models.mixture.GaussianMixture` the model was trained on.
        process: the forward process.
        key: PRNG key for the samples of ``p_t``.
        num_times: number of midpoint cells in ``[t_min, t_max]``.
        num_samples: samples of ``p_t`` per time.
        t_min, t_max: time range (defaults ``process.default_t_end`` and ``process.default_t_start``,
            the range a sampler integrates over).

    Returns:
        a :class:`ScoreError`.

    Raises:
        ValueError: if ``t_min >= t_max`` or ``num_times``/``num_samples`` < 1.

    Example:
        >>> import jax
        >>> from jaxode_diffusion import GaussianMixture, VPLinear
        >>> gm, vp = GaussianMixture.ring(8), VPLinear()
        >>> res = score_error(gm.score_fn(vp), gm, vp, key=jax.random.key(0), num_times=4, num_samples=64)
        >>> float(res.value)
        0.0
    """
    t_min = float(process.default_t_end if t_min is None else t_min)
    t_max = float(process.default_t_start if t_max is None else t_max)
    if not t_min < t_max:
        raise ValueError(f"score_error: need t_min < t_max, got t_min={t_min}, t_max={t_max}.")
    if int(num_times) < 1 or int(num_samples) < 1:
        raise ValueError(
            f"score_error: num_times and num_samples must be >= 1, got {num_times}, {num_samples}."
        )
    ts = t_min + (jnp.arange(num_times) + 0.5) / num_times * (t_max - t_min)
    keys = jax.random.split(key, num_times)
    per_t, weighted_per_t = _per_t(score_fn, mixture, process, ts, keys, int(num_samples))
    return ScoreError(jnp.mean(per_t), jnp.mean(weighted_per_t), ts, per_t, weighted_per_t)
