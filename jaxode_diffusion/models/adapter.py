"""From a network to a prediction to a score function.

:class:`DiffusionModel` is the base of every network here: it applies process-aware
EDM-style preconditioning around a raw network ``F`` and returns the prediction of its
``prediction`` kind (``eps``, ``x0``, ``v``, ``flow`` or ``score``, see
:mod:`jaxode_diffusion.parameterizations`)::

    pred(x, t) = c_skip(t) x + c_out(t) F(c_in(t) x, c_noise(t)).

Preconditioning, generalised from Karras et al. 2022 (EDM, App. B.6) to any target
``T = a x0 + b eps`` and any process ``x = alpha x0 + sigma eps`` with ``Var(x0) = sigma_data^2``:
``c_in`` gives the network unit-variance input, ``c_skip`` is the best linear guess of ``T``
from ``x`` and ``c_out`` scales ``F``'s target to unit variance::

    D      = alpha^2 sigma_data^2 + sigma^2
    c_in   = 1 / sqrt(D)
    c_skip = (a alpha sigma_data^2 + b sigma) / D
    c_out  = |a sigma - b alpha| sigma_data / sqrt(D)
    c_noise = -lambda(t) / 4

For ``x0`` with ``alpha = 1`` these are exactly EDM's coefficients.

:class:`ScoreModel` turns a model into ``score_fn(x, t)``. It is an equinox Module holding the
model's ``GraphDef`` as a static field and its parameters (a pure dict) as leaves, so
``jaxode_diffusion.sampling.sample`` compiles model and solver into one program with the
parameters traced: new parameter values never cause a recompilation.
"""

from __future__ import annotations

import json
from typing import Any

import equinox as eqx
import jax
import jax.numpy as jnp
from flax import nnx

from ..parameterizations import _bcast, canonical_kind, target_coefficients, to_score
from ..processes import ForwardProcess
from .embeddings import noise_level

__all__ = ["preconditioning", "DiffusionModel", "ScoreModel", "as_score_fn"]


def preconditioning(kind: str, process: ForwardProcess, t, sigma_data: float = 1.0):
    """Coefficients ``(c_in, c_skip, c_out, c_noise)`` for a prediction ``kind`` at ``t``.

    Args:
        kind: prediction kind (``eps``, ``x0``, ``v``, ``flow``, ``score``).
        process: forward process.
        t: scalar or ``(B,)`` times.
        sigma_data: standard deviation of the data (per coordinate).

    Example:
        >>> from jaxode_diffusion import EDM
        >>> c_in, c_skip, c_out, c_noise = preconditioning("x0", EDM(), 1.0, sigma_data=0.5)
        >>> round(float(c_skip), 6), round(float(c_out), 6)   # EDM: 0.25/1.25, 0.5/sqrt(1.25)
        (0.2, 0.447214)
    """
    t = jnp.asarray(t)
    alpha, sigma = process.alpha(t), process.sigma(t)
    a, b = target_coefficients(kind, process, t)
    sd2 = sigma_data**2
    denom = alpha**2 * sd2 + sigma**2
    c_in = jax.lax.rsqrt(denom)
    c_skip = (a * alpha * sd2 + b * sigma) / denom
    c_out = jnp.abs(a * sigma - b * alpha) * sigma_data * c_in
    return c_in, c_skip, c_out, noise_level(process, t)


class DiffusionModel(nnx.Module):
    """Base class: preconditioning around a raw network ``net(x_in, c_noise)``.

    Subclasses set ``self.prediction``, ``self.precondition``, ``self.sigma_data`` and
    ``self.config_json`` (a JSON string of their constructor arguments, so a checkpoint can
    rebuild them; a string keeps the ``GraphDef`` hashable) and implement :meth:`net`.
    """

    prediction: str
    precondition: bool
    sigma_data: float
    config_json: str

    def net(self, x_in, c_noise):  # pragma: no cover - abstract
        raise NotImplementedError(
            f"{type(self).__name__} must implement net(x_in, c_noise) -> raw network output "
            "(see MLP and UNet)."
        )

    @property
    def config(self) -> dict[str, Any]:
        """Constructor arguments plus ``"type"`` (see :func:`jaxode_diffusion.models.build_model`)."""
        return json.loads(self.config_json)

    def __call__(self, x, t, process: ForwardProcess, cond=None):
        """The prediction of kind ``self.prediction`` at ``(x, t)``; ``t`` scalar or ``(B,)``.

        ``cond`` (class labels for a model built with ``num_classes``) is passed on to
        ``net(x_in, c_noise, cond)``; without it ``net`` is called with two arguments, so
        unconditional subclasses need not accept ``cond``.
        """
        t = jnp.broadcast_to(jnp.asarray(t, x.dtype), (x.shape[0],))
        extra = () if cond is None else (cond,)
        if self.precondition:
            c_in, c_skip, c_out, c_noise = preconditioning(self.prediction, process, t, self.sigma_data)
            f = self.net(_bcast(c_in, x) * x, c_noise, *extra)
            return _bcast(c_skip, x) * x + _bcast(c_out, x) * f
        return self.net(x, noise_level(process, t), *extra)


class ScoreModel(eqx.Module):
    """``score_fn(x, t)`` of a :class:`DiffusionModel` under a process (a JAX pytree).

    Attributes:
        graphdef: the model's ``nnx.GraphDef`` (static).
        params: the model's parameters as a pure dict (traced leaves).
        process: the forward process (an equinox Module, its arrays are leaves too).
        prediction: what the network predicts (static).

    Example:
        >>> import jax, jax.numpy as jnp
        >>> from flax import nnx
        >>> from jaxode_diffusion import VPLinear
        >>> from jaxode_diffusion.models import MLP
        >>> score_fn = as_score_fn(MLP(2, rngs=nnx.Rngs(0)), VPLinear())
        >>> score_fn(jnp.zeros((4, 2)), 0.5).shape
        (4, 2)
    """

    graphdef: Any = eqx.field(static=True)
    params: Any
    process: ForwardProcess
    prediction: str = eqx.field(static=True)

    def __call__(self, x, t, cond=None):
        """The score at ``(x, t)``; ``cond``: class labels (scalar or ``(B,)``) of a conditional
        model, ``None`` for its unconditional (null-class) score."""
        model = nnx.merge(self.graphdef, self.params)
        pred = model(x, t, self.process) if cond is None else model(x, t, self.process, cond)
        return to_score(pred, self.prediction, x, jnp.asarray(t, x.dtype), self.process)

    @property
    def num_classes(self) -> int | None:
        """Number of classes of a class-conditional model (its null id), ``None`` if unconditional."""
        return getattr(self.model(), "num_classes", None)

    def model(self) -> DiffusionModel:
        """A fresh ``nnx`` model holding these parameters."""
        return nnx.merge(self.graphdef, self.params)

    def replace_params(self, params) -> ScoreModel:
        """The same score function with other parameter values (a pure dict of the same structure)."""
        return ScoreModel(self.graphdef, params, self.process, self.prediction)


def as_score_fn(model, process: ForwardProcess, prediction: str | None = None, params=None) -> ScoreModel:
    """Adapt a model to ``score_fn(x, t)``.

    Args:
        model: a :class:`DiffusionModel` (its ``prediction`` is used), or a ``GraphDef`` when
            ``params`` is given.
        process: the forward process the model was trained on.
        prediction: override of the model's prediction kind (normally ``None``).
        params: optional pure-dict parameters (for example EMA parameters) to use instead of
            the model's own.

    Returns:
        a :class:`ScoreModel`.

    Raises:
        ValueError: on an unknown prediction kind or a model of the wrong type.
    """
    if isinstance(model, nnx.GraphDef):
        if params is None:
            raise ValueError("as_score_fn: a GraphDef needs params=... (the parameter dict).")
        graphdef = model
        if prediction is None:
            prediction = nnx.merge(graphdef, params).prediction
    elif isinstance(model, nnx.Module):
        graphdef, state = nnx.split(model)
        if params is None:
            params = nnx.to_pure_dict(state)
        if prediction is None:
            prediction = getattr(model, "prediction", None)
            if prediction is None:
                raise ValueError(
                    f"as_score_fn: {type(model).__name__} has no `prediction` attribute; "
                    "pass prediction='eps' (or 'x0', 'v', 'flow', 'score')."
                )
    else:
        raise ValueError(f"as_score_fn: expected an nnx.Module, got {type(model).__name__}.")
    return ScoreModel(graphdef, params, process, canonical_kind(prediction))
