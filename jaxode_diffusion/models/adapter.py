"""From a network to a prediction to a score function.

:class:`DiffusionModel` is the base of every network here: it applies process-aware
EDM-style preconditioning around a raw network ``F`` and returns the prediction of its
``prediction`` kind (``eps``, ``x0``, ``v``, ``flow`` or ``score``, see
:mod:`jaxode_diffusion.processes.parameterizations`)::

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

:class:`NetworkScore` does the same for a network trained elsewhere ("bring your own model"):
any callable, equinox module, Flax NNX module or Flax linen module (``apply`` + variables)
called as ``net(x, t_in)`` or ``net(x, t_in, cond)``, predicting any kind of
:mod:`jaxode_diffusion.processes.parameterizations` (``eps``, ``x0``/``denoiser``, ``v``, ``flow``,
``score``) with any time input (:data:`~jaxode_diffusion.processes.parameterizations.TIME_INPUTS`:
continuous ``t``, a discrete step ``index``, ``sigma``, ``log_snr``, EDM's ``c_noise``...).
:func:`as_score_fn` builds either; :func:`network_from_score` is the inverse (a score presented
in any convention), used by the round-trip tests and to hand exact scores to other code.

:func:`as_score_fn` tells the two families apart: the package's :class:`DiffusionModel`
networks (``MLP``, ``UNet``, a ``GraphDef`` of one with ``params``, or any NNX model with a
``prediction`` attribute called as ``model(x, t, process)``) embed the noise level themselves and
become a :class:`ScoreModel`; any other network (a callable, an equinox module, a Flax NNX module,
a Flax linen module called as ``module.apply(params, x, t_in[, cond])``) needs its ``prediction``
and ``time_input`` and becomes a :class:`NetworkScore`. It runs in named steps: validate the
process and ``compute_dtype``, wrap the model (``_wrap_model``), then build the score
(``_package_score`` or ``_foreign_score``).

Mixed precision: ``compute_dtype=jnp.bfloat16`` stores the network's floating parameters in
bfloat16 and runs its layers in bfloat16 (the ``dtype`` attribute of every NNX layer is set, so
a float32 input such as a time embedding does not promote the activations); a foreign network
also gets ``x`` and the floating leaves of ``cond`` cast to it. The conversion to a score (and,
for the package's preconditioned models, the skip connection ``c_skip x``: their ``x`` is not
cast) stays in the dtype of the solver state ``x``, and so does the time input (bfloat16 cannot
represent step indices above 256); the score is returned in that dtype.
"""

from __future__ import annotations

import json
from collections.abc import Callable
from typing import Any, NamedTuple

import equinox as eqx
import jax
import jax.numpy as jnp
from flax import nnx

from jaxode_diffusion.processes.parameterizations import (
    broadcast_to_batch,
    canonical_kind,
    check_time_input,
    from_model_time,
    from_score,
    target_coefficients,
    to_model_time,
    to_score,
)
from jaxode_diffusion.processes import ForwardProcess
from jaxode_diffusion.models.embeddings import noise_level

__all__ = [
    "preconditioning",
    "DiffusionModel",
    "ScoreModel",
    "NetworkScore",
    "ScoreAsNetwork",
    "as_score_fn",
    "network_from_score",
]


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

    Example:
        >>> import jax.numpy as jnp
        >>> from jaxode_diffusion import EDM
        >>> class Zero(DiffusionModel):                 # F = 0: the prediction is c_skip x
        ...     def __init__(self):
        ...         self.prediction, self.precondition, self.sigma_data = "x0", True, 0.5
        ...         self.config_json = "{}"
        ...     def net(self, x_in, c_noise):
        ...         return jnp.zeros_like(x_in)
        >>> float(Zero()(jnp.ones((1, 1)), 1.0, EDM())[0, 0])  # c_skip = 0.25 / 1.25
        0.2
    """

    prediction: str
    precondition: bool
    sigma_data: float
    config_json: str

    def net(self, x_in, c_noise):  # pragma: no cover - abstract
        """The raw network ``F(x_in, c_noise)`` (``(B, *event_shape)`` out); subclasses implement it."""
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
            f = self.net(broadcast_to_batch(c_in, x) * x, c_noise, *extra)
            return broadcast_to_batch(c_skip, x) * x + broadcast_to_batch(c_out, x) * f
        return self.net(x, noise_level(process, t), *extra)


class ScoreModel(eqx.Module):
    """``score_fn(x, t)`` of a :class:`DiffusionModel` under a process (a JAX pytree).

    Attributes:
        graphdef: the model's ``nnx.GraphDef`` (static).
        params: the model's parameters as a pure dict (traced leaves).
        process: the forward process (an equinox Module, its arrays are leaves too).
        prediction: what the network predicts (static).
        compute_dtype: ``None`` or the dtype the network's layers run in (for example
            ``jnp.bfloat16``); see :func:`as_score_fn`.

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
    compute_dtype: Any = eqx.field(static=True, default=None)

    def __call__(self, x, t, cond=None):
        """The score at ``(x, t)``; ``cond``: class labels (scalar or ``(B,)``) of a conditional
        model, ``None`` for its unconditional (null-class) score."""
        model = nnx.merge(self.graphdef, self.params)
        pred = model(x, t, self.process) if cond is None else model(x, t, self.process, cond)
        # A bfloat16 network's output is promoted back to the state's dtype before the conversion.
        pred = jnp.asarray(pred).astype(x.dtype)
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
        if self.compute_dtype is not None:
            params = _cast_floating(params, self.compute_dtype)
        return ScoreModel(self.graphdef, params, self.process, self.prediction, self.compute_dtype)


def _cast_floating(tree, dtype):
    """Cast the floating-point array leaves of a pytree to ``dtype`` (others unchanged)."""
    return jax.tree.map(lambda a: a.astype(dtype) if eqx.is_inexact_array(a) else a, tree)


def _nnx_in_dtype(graphdef, params, dtype):
    """Run every layer of an NNX model in ``dtype``: set the ``dtype`` attribute of each submodule
    that has one (Flax's Linear, Conv, LayerNorm, GroupNorm, Embed...) and cast the parameters.

    Setting the layers' ``dtype`` (not only the parameters') keeps activations in ``dtype`` even
    where an input of higher precision (a float32 time embedding) would otherwise promote them.
    """
    model = nnx.merge(graphdef, params)
    for _, node in nnx.iter_graph(model):
        if isinstance(node, nnx.Module) and hasattr(node, "dtype"):
            node.dtype = dtype
    graphdef, state = nnx.split(model)
    return graphdef, _cast_floating(nnx.to_pure_dict(state), dtype)


def _cond_args(cond):
    return () if cond is None else (cond,)


class _StaticFn(eqx.Module):
    """A plain function (no array leaves): static, hashed by identity."""

    fn: Callable = eqx.field(static=True)

    def __call__(self, x, t_in, *cond):
        return self.fn(x, t_in, *cond)


class _PytreeFn(eqx.Module):
    """An equinox module or other callable pytree: its leaves are traced, its structure static.

    Held flattened, so comparing two adapters (as ``jax.eval_shape`` and jit caches do) compares
    leaves with equinox's tree equality, never calls a user pytree's own ``__eq__`` on tracers.
    """

    treedef: Any = eqx.field(static=True)
    leaves: list

    def __init__(self, fn):
        self.leaves, self.treedef = jax.tree.flatten(fn)

    @property
    def fn(self):
        return jax.tree.unflatten(self.treedef, self.leaves)

    def __call__(self, x, t_in, *cond):
        return self.fn(x, t_in, *cond)


class _NNXNet(eqx.Module):
    """A Flax NNX module as ``GraphDef`` (static) + pure-dict state (traced)."""

    graphdef: Any = eqx.field(static=True)
    params: Any

    def __call__(self, x, t_in, *cond):
        return nnx.merge(self.graphdef, self.params)(x, t_in, *cond)


class _LinenNet(eqx.Module):
    """A Flax linen module (static, hashable) + its variables (traced)."""

    module: Any = eqx.field(static=True)
    variables: Any

    def __call__(self, x, t_in, *cond):
        return self.module.apply(self.variables, x, t_in, *cond)


class NetworkScore(eqx.Module):
    """``score_fn(x, t[, cond])`` of a network in any prediction and time convention (a pytree).

    The network is called as ``net(x, t_in)`` (or ``net(x, t_in, cond)`` when ``cond`` is given),
    with ``t_in = to_model_time(process, t, time_input)`` broadcast to shape ``(B,)``, and its
    output (shaped like ``x``) is converted from ``prediction`` to the score in the dtype of ``x``.
    Build it with :func:`as_score_fn`.

    Attributes:
        net: the wrapped network; its parameters are traced leaves (new values never recompile).
        process: the forward process the network was trained with.
        prediction: ``eps``, ``x0`` (``denoiser``), ``v``, ``flow`` or ``score`` (static).
        time_input: the network's time convention (static; see
            :data:`~jaxode_diffusion.processes.parameterizations.TIME_INPUTS`).
        num_train_timesteps: ``N`` for the discrete conventions (static).
        compute_dtype: ``None`` or the dtype the network runs in (static).

    Example:
        >>> import jax.numpy as jnp
        >>> from jaxode_diffusion import VPLinear
        >>> eps_net = lambda x, n: 0.1 * x            # a "network" taking DDPM step indices
        >>> score_fn = as_score_fn(eps_net, VPLinear(), prediction="eps", time_input="index",
        ...                        num_train_timesteps=1000)
        >>> score_fn(jnp.ones((4, 2)), 0.5).shape
        (4, 2)
    """

    net: Any
    process: ForwardProcess
    prediction: str = eqx.field(static=True)
    time_input: Any = eqx.field(static=True)
    num_train_timesteps: int | None = eqx.field(static=True, default=None)
    compute_dtype: Any = eqx.field(static=True, default=None)

    def network_time(self, t, batch: int | None = None):
        """The network's time input at sampler time ``t`` (broadcast to ``(batch,)`` if given)."""
        t = jnp.asarray(t)
        if batch is not None:
            t = jnp.broadcast_to(t, (batch,))
        return to_model_time(self.process, t, self.time_input, self.num_train_timesteps)

    def __call__(self, x, t, cond=None):
        x = jnp.asarray(x)
        dtype = x.dtype
        t = jnp.asarray(t, dtype)
        t_in = self.network_time(t, x.shape[0])
        x_in = x
        if self.compute_dtype is not None:
            # The time input stays in the state's dtype: bfloat16 cannot even represent the step
            # indices above 256 (999 rounds to 1000); networks embed time before their layers.
            x_in = x.astype(self.compute_dtype)
            cond = None if cond is None else _cast_floating(cond, self.compute_dtype)
        pred = jnp.asarray(self.net(x_in, t_in, *_cond_args(cond)))
        _check_network_output(pred, x, self.prediction)
        return to_score(pred.astype(dtype), self.prediction, x, t, self.process)


class ScoreAsNetwork(eqx.Module):
    """A score function presented as a network ``net(x, t_in[, cond])`` in a given convention.

    The inverse of :class:`NetworkScore`: ``t = from_model_time(process, t_in, time_input)``, and
    the output is ``from_score(score_fn(x, t), prediction, x, t, process)``. A per-example
    ``t_in`` of shape ``(B,)`` evaluates ``score_fn`` one example at a time (``jax.vmap``), so
    ``score_fn`` only needs scalar times. Build it with :func:`network_from_score`.

    Example:
        >>> import jax.numpy as jnp
        >>> from jaxode_diffusion import EDM
        >>> eps_net = network_from_score(lambda x, t: -x / (1 + t**2), EDM(), "eps", "sigma")
        >>> float(eps_net(jnp.ones((1, 1)), 2.0)[0, 0])   # eps = -sigma score = 2 / 5
        0.4
    """

    score_fn: Any
    process: ForwardProcess
    prediction: str = eqx.field(static=True)
    time_input: Any = eqx.field(static=True)
    num_train_timesteps: int | None = eqx.field(static=True, default=None)

    def __call__(self, x, t_in, cond=None):
        x = jnp.asarray(x)
        t = from_model_time(self.process, t_in, self.time_input, self.num_train_timesteps).astype(x.dtype)
        extra = _cond_args(cond)
        if t.ndim == 0:
            s = self.score_fn(x, t, *extra)
        else:

            def one(xi, ti, *ci):
                ci = jax.tree.map(lambda c: c[None], ci)
                return self.score_fn(xi[None], ti, *ci)[0]

            s = jax.vmap(one)(x, jnp.broadcast_to(t, x.shape[:1]), *extra)
        return from_score(s, self.prediction, x, t, self.process)


def _require_process(process, where: str):
    if not isinstance(process, ForwardProcess):
        raise ValueError(
            f"{where}: process must be a ForwardProcess (e.g. VPLinear() or "
            f"ForwardProcess.from_alphas_cumprod(table)); got {type(process).__name__}."
        )


def _require_kind(prediction, what: str) -> str:
    if prediction is None:
        raise ValueError(
            f"as_score_fn: say what {what} predicts: prediction='eps', 'x0' (or 'denoiser', EDM's "
            "D(x, sigma)), 'v', 'flow' or 'score'."
        )
    return canonical_kind(prediction)


#: The dtypes a network may run in: float8 and other exotic floats overflow in ordinary layers.
_COMPUTE_DTYPES = ("float16", "bfloat16", "float32", "float64")


def _floating_dtype(compute_dtype):
    if compute_dtype is None:
        return None
    try:
        dt = jnp.dtype(compute_dtype)
    except TypeError:
        dt = None
    if dt is None or dt.name not in _COMPUTE_DTYPES:
        raise ValueError(
            f"compute_dtype={compute_dtype!r} is not a supported compute dtype; use one of "
            f"{list(_COMPUTE_DTYPES)} (e.g. jnp.bfloat16), or None for the parameters' own dtype."
        )
    return dt


def _check_network_output(pred, x, prediction: str) -> None:
    """Refuse a network output whose shape is not ``x``'s or whose dtype is not floating."""
    if pred.shape != x.shape:
        raise ValueError(
            f"the network returned shape {pred.shape} for x of shape {x.shape}; a network "
            f"predicting {prediction!r} must return an array shaped like x (reshape its "
            "output, or wrap it in a function that does)."
        )
    if not jnp.issubdtype(pred.dtype, jnp.floating):
        raise ValueError(
            f"the network returned dtype {pred.dtype} (a {prediction!r} prediction must be floating-point); "
            f"return a float array, e.g. out.astype(x.dtype), from the network."
        )


class _PackageModel(NamedTuple):
    """A package model split for :class:`ScoreModel`: its ``GraphDef``, parameters and kind."""

    graphdef: Any
    params: Any
    prediction: str | None


def _follows_package_convention(model, time_input) -> bool:
    # Package models, and any NNX model following their call convention model(x, t, process).
    return isinstance(model, DiffusionModel) or (time_input is None and hasattr(model, "prediction"))


def _wrap_model(model, prediction, params, time_input):
    """Step 1 of :func:`as_score_fn`: classify ``model`` and wrap it.

    Returns ``(package, foreign)``, exactly one of them not ``None``: a :class:`_PackageModel`
    for the package's own networks, else the foreign network as a traced-leaf module.
    """
    if isinstance(model, nnx.GraphDef):
        if params is None:
            raise ValueError("as_score_fn: a GraphDef needs params=... (the parameter dict).")
        merged = nnx.merge(model, params)
        if _follows_package_convention(merged, time_input):
            kind = prediction if prediction is not None else merged.prediction
            return _PackageModel(model, params, kind), None
        return None, _NNXNet(model, params)
    if isinstance(model, nnx.Module):
        graphdef, state = nnx.split(model)
        own_params = nnx.to_pure_dict(state) if params is None else params
        if _follows_package_convention(model, time_input):
            kind = prediction if prediction is not None else model.prediction
            return _PackageModel(graphdef, own_params, kind), None
        return None, _NNXNet(graphdef, own_params)
    if _is_linen(model):
        if params is None:
            raise ValueError(
                f"as_score_fn: the linen module {type(model).__name__} needs its variables: "
                "params=variables (as returned by module.init) or params=variables['params']."
            )
        variables = params if isinstance(params, dict) and "params" in params else {"params": params}
        return None, _LinenNet(model, variables)
    if callable(model):
        if params is not None:
            raise ValueError(
                "as_score_fn: params= is for NNX GraphDefs and linen modules; a callable or equinox "
                "module carries its own parameters (pass it with them, e.g. eqx.combine(params, static))."
            )
        is_pytree = not jax.tree_util.treedef_is_leaf(jax.tree.structure(model))
        return None, (_PytreeFn(model) if is_pytree else _StaticFn(model))
    raise ValueError(
        f"as_score_fn: model must be a network (callable, equinox module, Flax NNX or linen "
        f"module); got {type(model).__name__}."
    )


def _package_score(model, package: _PackageModel, process, time_input, num_train_timesteps,
                   compute_dtype) -> ScoreModel:
    """Step 2a of :func:`as_score_fn`: the :class:`ScoreModel` of a package model."""
    if time_input is not None or num_train_timesteps is not None:
        raise ValueError(
            f"as_score_fn: {type(model).__name__} is a package model: it computes its own noise "
            f"level (c_noise = -lambda(t)/4) from the process, so time_input={time_input!r} / "
            f"num_train_timesteps={num_train_timesteps!r} do not apply; drop them."
        )
    graphdef, params, kind = package
    if kind is None:
        raise ValueError(
            f"as_score_fn: {type(model).__name__} has no `prediction` attribute; "
            "pass prediction='eps' (or 'x0', 'v', 'flow', 'score')."
        )
    if compute_dtype is not None:
        graphdef, params = _nnx_in_dtype(graphdef, params, compute_dtype)
    return ScoreModel(graphdef, params, process, canonical_kind(kind), compute_dtype)


def _foreign_score(model, foreign, process, prediction, time_input, num_train_timesteps,
                   compute_dtype) -> NetworkScore:
    """Step 2b of :func:`as_score_fn`: the :class:`NetworkScore` of a foreign network."""
    kind = _require_kind(prediction, f"the network {type(model).__name__}")
    if time_input is None:
        raise ValueError(
            f"as_score_fn: say which time input the network {type(model).__name__} takes: "
            "time_input='t' (continuous), 'index' (discrete step of an N-entry table), 'index1000', "
            "'t1000', 'sigma', 'rho' (EDM sigma), 'log_snr' or 'c_noise' (EDM log(sigma)/4), or a "
            "callable (process, t) -> network time."
        )
    time_input, n = check_time_input(time_input, process, num_train_timesteps)
    if compute_dtype is not None:
        if isinstance(foreign, _NNXNet):
            foreign = _NNXNet(*_nnx_in_dtype(foreign.graphdef, foreign.params, compute_dtype))
        else:
            foreign = _cast_floating(foreign, compute_dtype)
    return NetworkScore(foreign, process, kind, time_input, n, compute_dtype)


def as_score_fn(
    model,
    process: ForwardProcess,
    prediction: str | None = None,
    params=None,
    *,
    time_input=None,
    num_train_timesteps: int | None = None,
    compute_dtype=None,
):
    """Adapt a model to the package's ``score_fn(x, t[, cond])`` (see the module docstring).

    Args:
        model: a package :class:`DiffusionModel` (or its ``GraphDef`` with ``params``), or any
            other network: a callable ``net(x, t_in[, cond])``, an equinox module, a Flax NNX
            module, or a Flax linen module with its variables as ``params``.
        process: the forward process the network was trained with (for a DDPM table,
            ``ForwardProcess.from_alphas_cumprod(table)``).
        prediction: ``eps``, ``x0`` (alias ``denoiser``), ``v``, ``flow`` or ``score``; package
            models default to their own ``prediction``.
        params: a pure dict for NNX (e.g. EMA parameters); the variables (or bare params) for linen.
        time_input: the network's time convention, one of
            :data:`~jaxode_diffusion.processes.parameterizations.TIME_INPUTS` or a callable
            ``(process, t) -> network time``. Required for foreign networks; refused for package
            models (they compute their own ``c_noise``).
        num_train_timesteps: ``N`` for ``index``/``index1000`` (default: the process's).
        compute_dtype: run the network in this dtype (``jnp.bfloat16``); the time input and the
            score keep the dtype of the solver state ``x``.

    Returns:
        A :class:`ScoreModel` (package models) or a :class:`NetworkScore`; either is an equinox
        Module whose parameters are traced leaves, so new parameter values do not recompile.

    Raises:
        ValueError: on an unknown prediction kind or time input, a missing ``prediction``,
            ``time_input`` or ``params``, a discrete time input without ``N`` or with an ``N``
            that disagrees with the process, a ``compute_dtype`` other than float16, bfloat16,
            float32 or float64, or a model that is not callable; at the first call, a network
            output that is not a floating-point array shaped like ``x``.

    Example:
        >>> import jax.numpy as jnp
        >>> from jaxode_diffusion import VPLinear
        >>> eps_net = lambda x, n: 0.1 * x                 # takes DDPM step indices
        >>> score_fn = as_score_fn(eps_net, VPLinear(), prediction="eps", time_input="index",
        ...                        num_train_timesteps=1000)
        >>> score_fn(jnp.ones((3, 2)), 0.5).shape
        (3, 2)
    """
    _require_process(process, "as_score_fn")
    compute_dtype = _floating_dtype(compute_dtype)
    package, foreign = _wrap_model(model, prediction, params, time_input)
    if package is not None:
        return _package_score(model, package, process, time_input, num_train_timesteps, compute_dtype)
    return _foreign_score(model, foreign, process, prediction, time_input, num_train_timesteps, compute_dtype)


def _is_linen(model) -> bool:
    from flax import linen

    return isinstance(model, linen.Module)


def network_from_score(
    score_fn,
    process: ForwardProcess,
    prediction: str,
    time_input="t",
    *,
    num_train_timesteps: int | None = None,
) -> ScoreAsNetwork:
    """Present a score function as a network ``net(x, t_in[, cond])`` of another convention.

    The inverse of :func:`as_score_fn`: ``as_score_fn(network_from_score(s, p, k, ti), p,
    prediction=k, time_input=ti)`` equals ``s`` (to rounding). Use it to hand an exact score
    (:meth:`GaussianMixture.score_fn`) to code that expects an eps-network on step indices, or to
    compare conventions.

    Args:
        score_fn: ``score_fn(x, t[, cond])``.
        process: the forward process.
        prediction: the kind the network returns (``eps``, ``x0``, ``v``, ``flow``, ``score``).
        time_input: the time input it takes (a named convention; callables have no inverse).
        num_train_timesteps: ``N`` for the discrete conventions (default: the process's).

    Example:
        >>> import jax.numpy as jnp
        >>> from jaxode_diffusion import GaussianMixture, VPLinear
        >>> vp = VPLinear()
        >>> eps_net = network_from_score(GaussianMixture.ring(4).score_fn(vp), vp, "eps", "log_snr")
        >>> eps_net(jnp.zeros((2, 2)), vp.lam(0.5)).shape
        (2, 2)
    """
    _require_process(process, "network_from_score")
    if not callable(score_fn):
        raise ValueError(f"network_from_score: score_fn must be callable, got {type(score_fn).__name__}.")
    kind = canonical_kind(prediction)
    time_input, n = check_time_input(time_input, process, num_train_timesteps)
    if callable(time_input):
        raise ValueError(
            "network_from_score: a callable time_input has no known inverse; use a named convention."
        )
    return ScoreAsNetwork(score_fn, process, kind, time_input, n)
