"""Score models: Flax NNX networks, exact mixture scores, and the adapter to ``score_fn(x, t)``.

Files:

* ``mlp.py``, ``unet.py``, ``embeddings.py``: the networks and their time/class embeddings;
* ``gaussian.py``: a Gaussian fit of the data plus a learned residual (:func:`fit_gaussian`);
* ``adapter.py``: :func:`as_score_fn`, any network in any convention (eps, x0, v, flow, score;
  DDPM tables; conditioning; bfloat16) to the sampler's ``score_fn(x, t)``;
* ``guidance.py``: classifier-free guidance and dynamic thresholding as score wrappers;
* ``mixture.py``: :class:`GaussianMixture`, a target with exact ``p_t``, score and derivatives.

Every network predicts one kind (``eps``, ``x0``, ``v``, ``flow``, ``score``) with optional
process-aware EDM preconditioning (:func:`preconditioning`); :func:`as_score_fn` adapts any of
them to the sampler's ``score_fn(x, t)`` convention as a pytree whose leaves are the parameters.
"""

from __future__ import annotations

import json
from typing import Any

from flax import nnx

from jaxode_diffusion.models.adapter import (
    DiffusionModel,
    NetworkScore,
    ScoreAsNetwork,
    ScoreModel,
    as_score_fn,
    network_from_score,
    preconditioning,
)
from jaxode_diffusion.models.embeddings import (
    ClassEmbedding,
    NoiseEmbedding,
    class_labels,
    noise_level,
    sinusoidal_embedding,
)
from jaxode_diffusion.models.gaussian import GaussianResidual, GaussianStat, fit_gaussian
from jaxode_diffusion.models.guidance import (
    ClassifierFreeGuidance,
    DynamicThresholding,
    classifier_free_guidance,
    dynamic_thresholding,
)
from jaxode_diffusion.models.mixture import GaussianMixture, MixtureScore
from jaxode_diffusion.models.mlp import MLP, default_mlp_width
from jaxode_diffusion.models.unet import UNet, default_channel_mult

__all__ = [
    "abstract_model",
    "as_score_fn",
    "build_model",
    "class_labels",
    "ClassEmbedding",
    "classifier_free_guidance",
    "ClassifierFreeGuidance",
    "default_channel_mult",
    "default_mlp_width",
    "DiffusionModel",
    "dynamic_thresholding",
    "DynamicThresholding",
    "fit_gaussian",
    "GaussianMixture",
    "GaussianResidual",
    "GaussianStat",
    "MixtureScore",
    "MLP",
    "network_from_score",
    "NetworkScore",
    "noise_level",
    "NoiseEmbedding",
    "preconditioning",
    "ScoreAsNetwork",
    "ScoreModel",
    "sinusoidal_embedding",
    "UNet",
]

_TYPES = {"mlp": MLP, "unet": UNet, "gaussian_residual": GaussianResidual}


def _construct(config: dict[str, Any] | str, seed: int) -> DiffusionModel:
    cfg = dict(json.loads(config) if isinstance(config, str) else config)
    kind = cfg.pop("type", None)
    if kind not in _TYPES:
        raise ValueError(f"model config type={kind!r} unknown; expected one of {sorted(_TYPES)}.")
    if kind == "gaussian_residual":  # statistics come from the checkpoint or fit_gaussian
        return GaussianResidual(_construct(cfg["net"], seed), event_shape=cfg["event_shape"],
                                net_input=cfg.get("net_input", "noisy"))
    if kind == "mlp":
        return MLP(cfg.pop("dim"), **cfg, rngs=nnx.Rngs(seed))
    return UNet(cfg.pop("image_shape"), **cfg, rngs=nnx.Rngs(seed))


def build_model(config: dict[str, Any] | str, *, seed: int = 0) -> DiffusionModel:
    """Build a model from its ``config`` (``model.config``, a dict or its JSON string).

    Raises:
        ValueError: if ``config["type"]`` is not ``"mlp"`` or ``"unet"``.

    Example:
        >>> net = build_model({"type": "mlp", "dim": 3, "width": 16, "depth": 1})
        >>> build_model(net.config).config == net.config
        True
    """
    return _construct(config, seed)


def abstract_model(config: dict[str, Any] | str) -> tuple[nnx.GraphDef, Any]:
    """``(graphdef, abstract_params)`` of a model config without allocating parameters.

    Example:
        >>> graphdef, params = abstract_model({"type": "mlp", "dim": 3, "width": 16, "depth": 1})
        >>> params["out"]["kernel"].shape
        (16, 3)
    """
    model = nnx.eval_shape(lambda: _construct(config, 0))
    graphdef, state = nnx.split(model)
    return graphdef, nnx.to_pure_dict(state)
