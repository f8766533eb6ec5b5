"""Training loop: optax AdamW with warmup + cosine decay, gradient clipping, EMA, orbax checkpoints.

Reproducibility contract: the minibatch and the noise of step ``s`` are pure functions of
``(seed, s)`` (``fold_in(key(seed), s)``), so a run resumed from a checkpoint at step ``K``
computes exactly the same steps ``K+1..N`` as an uninterrupted run and ends with identical
parameters (same machine, same XLA program).
"""

from __future__ import annotations

import dataclasses
import math
import os
import warnings
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np
import optax
from flax import nnx
from tqdm.auto import tqdm

from ..data import Dataset, check_finite, dataset_labels, from_array, load_dataset
from ..models import ScoreModel, abstract_model, build_model
from ..parameterizations import canonical_kind
from ..processes import ForwardProcess, get_process
from . import checkpoint as ckpt
from .loss import TIME_SAMPLINGS, WEIGHTINGS, dsm_loss

__all__ = ["TrainConfig", "TrainResult", "train", "make_optimizer", "model_config_for", "load_run"]

CONFIG_VERSION = 1
# Fields that must agree between a checkpoint and the config that resumes it (they define the
# model, the data, the optimiser or the random stream; anything else may change freely).
_RESUME_KEYS = (
    "data",
    "dim",
    "n_train",
    "seed",
    "process",
    "prediction",
    "precondition",
    "model",
    "width",
    "depth",
    "channels",
    "batch_size",
    "lr",
    "warmup_steps",
    "weight_decay",
    "grad_clip",
    "ema_decay",
    "time_sampling",
    "weighting",
    "conditional",
    "p_uncond",
)


@dataclass
class TrainConfig:
    """Everything a training run needs; defaults train a user's own ``.npy`` without tuning.

    Attributes:
        data: ``gmm``, a toy name, ``digits`` or a ``.npy`` path (see :func:`load_dataset`).
        out_dir: run directory for checkpoints and ``config.json`` (``None``: no checkpoints).
        steps: total optimisation steps (also the cosine schedule's horizon).
        batch_size: minibatch size.
        lr: peak learning rate (after linear warmup; cosine decay to ``lr / 100``).
        warmup_steps: linear warmup length (``None``: ``min(1000, steps // 20)``).
        weight_decay: AdamW decoupled weight decay.
        grad_clip: global-norm gradient clipping threshold.
        ema_decay: EMA decay (with the usual ``(1+s)/(10+s)`` warm-up for short runs).
        seed: seeds initialisation, minibatches and noise.
        process: built-in process name (``vp_linear``, ``vp_cosine``, ``subvp``, ``ve``, ``edm``,
            ``rectified_flow``).
        prediction: ``eps``, ``x0``, ``v``, ``flow`` or ``score``.
        precondition: process-aware EDM preconditioning of the network.
        model: ``auto`` (MLP for vectors, U-Net for images), ``mlp`` or ``unet``.
        width, depth: MLP size (``width=None``: scaled with the dimension).
        channels: U-Net base channels.
        time_sampling: ``uniform`` or ``log_snr_uniform``.
        weighting: ``eps``, ``x0``, ``snr``, ``edm`` or ``score``.
        conditional: train a class-conditional model on the dataset's labels (``digits``, or
            ``from_array(x, labels=y)``); the network gets ``num_classes`` and a null class.
        p_uncond: label-dropout probability of conditional training (classifier-free guidance
            needs the unconditional score the null class learns; 0.1-0.2 is usual).
        eval_every: held-out loss every this many steps and at the end (0: never).
        ckpt_every: checkpoint every this many steps (and always at the end).
        log_every: refresh the progress bar's loss every this many steps.
        n_train, n_heldout, dim: sizes of generated data (``dim`` for ``gmm``).
        resume: continue from the latest checkpoint in ``out_dir``.
        progress: show a tqdm progress bar.
        max_to_keep: checkpoints kept on disk.
    """

    data: str = "checkerboard"
    out_dir: str | None = None
    steps: int = 5000
    batch_size: int = 256
    lr: float = 1e-3
    warmup_steps: int | None = None
    weight_decay: float = 1e-4
    grad_clip: float = 1.0
    ema_decay: float = 0.999
    seed: int = 0
    process: str = "vp_linear"
    prediction: str = "eps"
    precondition: bool = True
    model: str = "auto"
    width: int | None = None
    depth: int = 3
    channels: int = 32
    time_sampling: str = "uniform"
    weighting: str = "eps"
    conditional: bool = False
    p_uncond: float = 0.1
    eval_every: int = 500
    ckpt_every: int = 1000
    log_every: int = 50
    n_train: int = 20000
    n_heldout: int = 2000
    dim: int = 2
    resume: bool = False
    progress: bool = True
    max_to_keep: int = 3

    def validate(self) -> None:
        """Raise ``ValueError`` naming the first bad field."""
        for name in ("steps", "batch_size", "depth", "channels", "log_every", "max_to_keep"):
            if int(getattr(self, name)) < 1:
                raise ValueError(f"TrainConfig.{name} must be >= 1, got {getattr(self, name)!r}.")
        for name in ("eval_every", "ckpt_every"):
            if int(getattr(self, name)) < 0:
                raise ValueError(f"TrainConfig.{name} must be >= 0, got {getattr(self, name)!r}.")
        if not (self.lr > 0 and math.isfinite(self.lr)):
            raise ValueError(f"TrainConfig.lr must be a positive number, got {self.lr!r}.")
        if not 0.0 <= self.ema_decay < 1.0:
            raise ValueError(f"TrainConfig.ema_decay must lie in [0, 1), got {self.ema_decay!r}.")
        if self.model not in ("auto", "mlp", "unet"):
            raise ValueError(f"TrainConfig.model={self.model!r}; choose 'auto', 'mlp' or 'unet'.")
        if self.time_sampling not in TIME_SAMPLINGS:
            raise ValueError(
                f"TrainConfig.time_sampling={self.time_sampling!r}; choose one of {list(TIME_SAMPLINGS)}."
            )
        if self.weighting not in WEIGHTINGS:
            raise ValueError(f"TrainConfig.weighting={self.weighting!r}; choose one of {list(WEIGHTINGS)}.")
        if not (0.0 <= self.p_uncond <= 1.0):
            raise ValueError(f"TrainConfig.p_uncond must lie in [0, 1], got {self.p_uncond!r}.")
        canonical_kind(self.prediction)
        get_process(self.process)
        if self.resume and not self.out_dir:
            raise ValueError("TrainConfig.resume=True needs out_dir (the run directory to resume).")

    @property
    def warmup(self) -> int:
        return int(self.warmup_steps) if self.warmup_steps is not None else min(1000, self.steps // 20)

    def to_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self)

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> TrainConfig:
        names = {f.name for f in dataclasses.fields(cls)}
        return cls(**{k: v for k, v in d.items() if k in names})


@dataclass
class TrainResult:
    """Outcome of :func:`train`.

    Attributes:
        params, ema_params: final parameters (pure dicts).
        graphdef: the model's ``nnx.GraphDef``.
        model_config: JSON-able model description (:func:`jaxode_diffusion.models.build_model`).
        process: the forward process.
        config: the :class:`TrainConfig`.
        meta: dataset metadata (normalisation, event shape, kind).
        history: list of dicts ``{"step", "loss"}`` and ``{"step", "heldout_loss"}``.
        step: steps completed.
        out_dir: run directory (or ``None``).
    """

    params: Any
    ema_params: Any
    graphdef: Any
    model_config: dict[str, Any]
    process: ForwardProcess
    config: TrainConfig
    meta: dict[str, Any]
    history: list[dict[str, float]]
    step: int
    out_dir: str | None

    def score_fn(self, ema: bool = True) -> ScoreModel:
        """The trained model as ``score_fn(x, t)`` (EMA parameters by default)."""
        params = self.ema_params if ema else self.params
        return ScoreModel(self.graphdef, params, self.process, self.model_config["prediction"])

    def model(self, ema: bool = True):
        return nnx.merge(self.graphdef, self.ema_params if ema else self.params)


def make_optimizer(config: TrainConfig) -> optax.GradientTransformation:
    """``clip_by_global_norm`` then AdamW on a warmup + cosine-decay schedule (to ``lr/100``)."""
    warmup = config.warmup
    schedule = optax.warmup_cosine_decay_schedule(
        init_value=0.0 if warmup > 0 else config.lr,
        peak_value=config.lr,
        warmup_steps=warmup,
        decay_steps=max(config.steps, warmup + 1),
        end_value=config.lr / 100,
    )
    return optax.chain(
        optax.clip_by_global_norm(config.grad_clip),
        optax.adamw(schedule, weight_decay=config.weight_decay),
    )


def model_config_for(
    config: TrainConfig, kind: str, event_shape, sigma_data: float, num_classes: int | None = None
) -> dict[str, Any]:
    """The model description (``type`` plus constructor arguments) for data of this shape
    (``num_classes``: class-conditional, see :attr:`TrainConfig.conditional`)."""
    model = config.model
    if model == "auto":
        model = "mlp" if kind == "vector" else "unet"
    common = dict(
        prediction=canonical_kind(config.prediction),
        precondition=bool(config.precondition),
        sigma_data=float(sigma_data),
    )
    if num_classes is not None:
        common["num_classes"] = int(num_classes)
    if model == "mlp":
        dim = int(np.prod(event_shape))
        if len(event_shape) != 1:
            raise ValueError(
                f"model='mlp' needs vector data (N, d); got event shape {tuple(event_shape)}. "
                "Use model='unet' for images or flatten the array."
            )
        return dict(type="mlp", dim=dim, width=config.width, depth=config.depth, emb_dim=64, **common)
    if len(event_shape) != 3:
        raise ValueError(f"model='unet' needs images (N, H, W, C); got event shape {tuple(event_shape)}.")
    return dict(type="unet", image_shape=list(event_shape), channels=config.channels, **common)


def _get_data(config: TrainConfig, data) -> Dataset:
    if data is None:
        return load_dataset(
            config.data, n_train=config.n_train, n_heldout=config.n_heldout, dim=config.dim, seed=config.seed
        )
    if isinstance(data, Dataset):
        return data
    return from_array(data, name="data array")


def _run_config(config, model_cfg, meta, step) -> dict[str, Any]:
    meta = {k: v for k, v in meta.items() if not k.startswith("labels")}
    return dict(version=CONFIG_VERSION, train=config.to_dict(), model=model_cfg, data=meta, step=int(step))


def _check_resume_compatible(saved: dict[str, Any], config: TrainConfig, path) -> None:
    old = saved.get("train", {})
    diffs = [
        f"{k}: checkpoint {old.get(k)!r} vs now {getattr(config, k)!r}"
        for k in _RESUME_KEYS
        if k in old and old.get(k) != getattr(config, k)
    ]
    if diffs:
        raise ValueError(
            f"cannot resume from {os.fspath(path)!r}: the configuration differs ({'; '.join(diffs)}). "
            "Resume with the original settings, or train into a new --out directory."
        )
    if old.get("steps") != config.steps:
        warnings.warn(
            f"resuming with steps={config.steps} instead of {old.get('steps')}: the cosine learning-rate "
            "schedule's horizon changes, so the run will not match an uninterrupted one.",
            stacklevel=3,
        )


# Compiled steps are cached per (architecture, process, optimiser and loss settings), so a
# resumed or repeated run in the same process reuses the XLA program (and the same program is
# what makes a resumed run bit-identical to an uninterrupted one).
_OPT_KEYS = ("lr", "warmup_steps", "weight_decay", "grad_clip", "steps")
_TX_CACHE: dict[Any, optax.GradientTransformation] = {}
_STEP_CACHE: dict[Any, tuple[Callable, Callable]] = {}


def _optimizer_cached(config: TrainConfig) -> optax.GradientTransformation:
    key = tuple(getattr(config, k) for k in _OPT_KEYS)
    if key not in _TX_CACHE:
        _TX_CACHE[key] = make_optimizer(config)
    return _TX_CACHE[key]


def _compiled_steps(graphdef, process, tx, config: TrainConfig, loss_kw: dict[str, Any]):
    batch, ema_decay = config.batch_size, config.ema_decay
    try:
        key = (graphdef, process, tx, batch, ema_decay, tuple(sorted(loss_kw.items())))
        hash(key)
    except TypeError:  # a process with array parameters is not hashable: no caching
        key = None
    if key is not None and key in _STEP_CACHE:
        return _STEP_CACHE[key]

    def loss_fn(p, x0, k, y=None):
        # y: class labels of a conditional run (label dropout settings are in loss_kw).
        return dsm_loss(nnx.merge(graphdef, p), process, x0, k, cond=y, **loss_kw)

    @jax.jit
    def train_step(p, o, e, step, base_key, xs, ys=None):
        kd, kn = jax.random.split(jax.random.fold_in(base_key, step))
        idx = jax.random.randint(kd, (batch,), 0, xs.shape[0])
        x0 = xs[idx]
        loss, grads = jax.value_and_grad(loss_fn)(p, x0, kn, None if ys is None else ys[idx])
        updates, o = tx.update(grads, o, p)
        p = optax.apply_updates(p, updates)
        # EMA warm-up (as in tf.train.ExponentialMovingAverage with num_updates) so short runs
        # are not dominated by the initial parameters.
        d = jnp.minimum(ema_decay, (1.0 + step) / (10.0 + step))
        e = jax.tree.map(lambda a, b: d * a + (1.0 - d) * b, e, p)
        return p, o, e, loss

    @jax.jit
    def eval_loss(p, k, xs, ys=None):
        # Fixed key: the held-out loss is comparable across evaluations; averaged over 4 draws.
        return jnp.mean(jax.vmap(lambda kk: loss_fn(p, xs, kk, ys))(jax.random.split(k, 4)))

    if key is not None:
        _STEP_CACHE[key] = (train_step, eval_loss)
    return train_step, eval_loss


def train(
    config: TrainConfig,
    *,
    data=None,
    stop_at: int | None = None,
    callback: Callable[[int, float], None] | None = None,
) -> TrainResult:
    """Train a score model by denoising score matching.

    Args:
        config: a :class:`TrainConfig`.
        data: optional :class:`~jaxode_diffusion.data.Dataset` or array overriding ``config.data``.
        stop_at: stop after this many total steps (as if interrupted; a checkpoint is written
            there when ``out_dir`` is set). The schedule still targets ``config.steps``.
        callback: called as ``callback(step, loss)`` after every step (``loss`` is a device
            scalar); an exception raised there aborts training (useful to simulate a crash).

    Returns:
        a :class:`TrainResult`.

    Raises:
        ValueError: on an invalid configuration, data with the wrong shape or non-finite values,
            ``out_dir`` already holding checkpoints without ``resume``, ``resume`` without a
            checkpoint, a configuration that does not match the checkpoint, or a loss that
            becomes non-finite.

    Example:
        >>> res = train(TrainConfig(data="two_moons", steps=5, batch_size=16, width=16, depth=1,
        ...                         n_train=64, n_heldout=16, progress=False))
        >>> res.step
        5
    """
    config.validate()
    ds = _get_data(config, data)
    check_finite(ds.train, "training data")
    check_finite(ds.heldout, "held-out data")
    process = get_process(config.process)
    sigma_data = float(ds.meta.get("sigma_data", 1.0))
    labels, num_classes = ((), ()), None  # extra (train, held-out) step arguments of a conditional run
    if config.conditional:
        y_train, y_held, num_classes = dataset_labels(ds)
        labels = ((jnp.asarray(y_train),), (jnp.asarray(y_held[:2048]),))
    model_cfg = model_config_for(config, ds.kind, ds.event_shape, sigma_data, num_classes)
    model = build_model(model_cfg, seed=config.seed)
    model_cfg = model.config
    graphdef, state = nnx.split(model)
    params = nnx.to_pure_dict(state)
    tx = _optimizer_cached(config)
    opt_state = tx.init(params)
    ema = jax.tree.map(jnp.copy, params)
    base_key = jax.random.key(config.seed)
    start = 0

    manager = None
    if config.out_dir:
        out = Path(config.out_dir)
        existing = ckpt.latest_step(out) if out.exists() else None
        if config.resume:
            if existing is None:
                raise ValueError(
                    f"resume=True but no checkpoint in {os.fspath(ckpt.checkpoint_dir(out))!r}; "
                    "drop --resume to start a new run there, or point --out at the interrupted run."
                )
            target = dict(
                params=params,
                ema=ema,
                opt_state=opt_state,
                step=jnp.zeros((), jnp.int32),
                key=jax.random.key_data(base_key),
            )
            abstract = jax.tree.map(lambda a: jax.ShapeDtypeStruct(a.shape, a.dtype), target)
            restored, saved_cfg, _ = ckpt.restore_checkpoint(out, abstract)
            _check_resume_compatible(saved_cfg, config, out)
            params, ema, opt_state = restored["params"], restored["ema"], restored["opt_state"]
            start = int(restored["step"])
            base_key = jax.random.wrap_key_data(restored["key"])
        elif existing is not None:
            raise ValueError(
                f"{os.fspath(out)!r} already holds checkpoints (latest step {existing}); pass --resume "
                "(resume=True) to continue that run, or choose a new --out directory."
            )
        out.mkdir(parents=True, exist_ok=True)
        ckpt.write_json_atomic(out / "config.json", _run_config(config, model_cfg, ds.meta, start))
        manager = ckpt.open_manager(out, max_to_keep=config.max_to_keep)

    train_x = jnp.asarray(ds.train)
    held_x = jnp.asarray(ds.heldout[:2048])
    loss_kw = dict(time_sampling=config.time_sampling, weighting=config.weighting, sigma_data=sigma_data)
    if config.conditional:
        loss_kw.update(p_uncond=float(config.p_uncond), null_id=int(num_classes))
    train_step, eval_loss = _compiled_steps(graphdef, process, tx, config, loss_kw)

    eval_key = jax.random.fold_in(jax.random.key(config.seed), 2**31 - 1)
    end = config.steps if stop_at is None else min(int(stop_at), config.steps)
    history: list[dict[str, float]] = []
    postfix: dict[str, str] = {}
    pbar = tqdm(
        total=config.steps, initial=start, disable=not config.progress, desc="train", dynamic_ncols=True
    )
    try:
        for s in range(start, end):
            params, opt_state, ema, loss = train_step(
                params, opt_state, ema, jnp.int32(s), base_key, train_x, *labels[0]
            )
            done = s + 1
            if callback is not None:
                callback(done, loss)
            if done % config.log_every == 0 or done == end:
                lv = float(loss)
                if not math.isfinite(lv):
                    raise ValueError(
                        f"training loss became non-finite ({lv}) at step {done}; lower --lr "
                        f"(now {config.lr}) or check the data scale."
                    )
                history.append(dict(step=done, loss=lv))
                postfix["loss"] = f"{lv:.4f}"
                pbar.set_postfix(postfix)
            pbar.update(1)
            if config.eval_every and (done % config.eval_every == 0 or done == end):
                hv = float(eval_loss(ema, eval_key, held_x, *labels[1]))
                history.append(dict(step=done, heldout_loss=hv))
                postfix["heldout"] = f"{hv:.4f}"
                pbar.set_postfix(postfix)
            if manager is not None and ((config.ckpt_every and done % config.ckpt_every == 0) or done == end):
                state_tree = dict(
                    params=params,
                    ema=ema,
                    opt_state=opt_state,
                    step=jnp.asarray(done, jnp.int32),
                    key=jax.random.key_data(base_key),
                )
                ckpt.save_checkpoint(manager, done, state_tree, _run_config(config, model_cfg, ds.meta, done))
    finally:
        pbar.close()
        if manager is not None:
            manager.wait_until_finished()
            manager.close()
    return TrainResult(
        params=params,
        ema_params=ema,
        graphdef=graphdef,
        model_config=model_cfg,
        process=process,
        config=config,
        meta=ds.meta,
        history=history,
        step=max(end, start),
        out_dir=config.out_dir,
    )


def load_run(run_dir: str | os.PathLike, *, ema: bool = True, step: int | None = None):
    """Rebuild the score function of a saved run.

    Args:
        run_dir: a ``train`` output directory.
        ema: use the EMA parameters (default) or the raw ones.
        step: checkpoint step (default: latest).

    Returns:
        ``(score_fn, run_config)``: a :class:`~jaxode_diffusion.models.ScoreModel` and the stored
        JSON (keys ``train``, ``model``, ``data``, ``step``).

    Raises:
        ValueError: if the directory is missing, empty or corrupt (the message names the path).
    """
    run_cfg = ckpt.read_config(run_dir, step)
    try:
        config = TrainConfig.from_dict(run_cfg["train"])
        model_cfg = run_cfg["model"]
        graphdef, abstract_params = abstract_model(model_cfg)
    except Exception as err:
        raise ValueError(
            f"the configuration stored in {os.fspath(run_dir)!r} cannot rebuild the model ({err!r}); "
            "the checkpoint is corrupt or from an incompatible version: retrain."
        ) from err
    tx = make_optimizer(config)
    abstract = dict(
        params=abstract_params,
        ema=abstract_params,
        opt_state=jax.eval_shape(tx.init, abstract_params),
        step=jax.ShapeDtypeStruct((), jnp.int32),
        key=jax.ShapeDtypeStruct((2,), jnp.uint32),
    )
    state, run_cfg, _ = ckpt.restore_checkpoint(run_dir, abstract, step)
    params = state["ema"] if ema else state["params"]
    process = get_process(config.process)
    return ScoreModel(graphdef, params, process, model_cfg["prediction"]), run_cfg
