"""Training loop: optax AdamW with warmup + cosine decay, gradient clipping, EMA, orbax checkpoints.

Reproducibility contract: the minibatch and the noise of step ``s`` are pure functions of
``(seed, s)`` (``fold_in(key(seed), s)``), so a run resumed from a checkpoint at step ``K``
computes exactly the same steps ``K+1..N`` as an uninterrupted run and ends with identical
parameters (same machine, same XLA program).

Data parallelism (``TrainConfig.data_parallel``): every minibatch is split over all devices
(``jax.devices()``, across processes after ``jax.distributed.initialize()``) on a 1-D mesh,
parameters and data replicated, gradients reduced by XLA: the same result as one device up to
rounding, and the same checkpoint format. With several processes every process calls
:func:`train` with the same config and ``out_dir`` (a directory all of them see): process 0 holds
the run's lock and writes, and the job resumes with the same or another number of processes
(bit-identical with the same layout; see :mod:`jaxode_diffusion.training.checkpoint`).

Gaussian skip (``TrainConfig.gaussian_skip``): :class:`~jaxode_diffusion.models.GaussianResidual`
wraps the MLP / U-Net, with the training data's mean and covariance eigendecomposition fitted
once (:func:`~jaxode_diffusion.models.fit_gaussian`, float64, a ``d x d`` fit) and frozen (saved in
checkpoints, excluded from the optimiser); at initialisation the model *is* the Gaussian fit.
With ``gaussian_input="wiener"`` the residual network sees the fit's posterior mean and learns the
non-Gaussian structure of high-variance directions (such as natural patches' mean colour).

:func:`train` runs in named steps: prepare the run (data, model, optimiser), find the state to
start from (fresh or the newest intact checkpoint), compile the steps (replicated when
data-parallel), then loop under the run directory's lock.
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

from jaxode_diffusion.training.data import (
    Dataset,
    check_finite,
    dataset_labels,
    from_array,
    load_dataset,
)
from jaxode_diffusion.sampling.distributed import batch_mesh, batch_sharding, replicate
from jaxode_diffusion.models import ScoreModel, abstract_model, build_model
from jaxode_diffusion.models.gaussian import GAUSSIAN_NET_INPUTS
from jaxode_diffusion.processes.parameterizations import canonical_kind
from jaxode_diffusion.processes import ForwardProcess, get_process
from jaxode_diffusion.training import checkpoint as ckpt
from jaxode_diffusion.training.loss import TIME_SAMPLINGS, WEIGHTINGS, dsm_loss

__all__ = [
    "TrainConfig",
    "TrainResult",
    "TrainingDivergedError",
    "train",
    "make_optimizer",
    "model_config_for",
    "load_run",
]

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
    "patch_size",
    "gaussian_skip",
    "gaussian_input",
)


# (field, minimum) of the integer fields of TrainConfig.
_INT_FIELDS = (
    ("steps", 1),
    ("batch_size", 1),
    ("depth", 1),
    ("channels", 1),
    ("patch_size", 1),
    ("log_every", 1),
    ("max_to_keep", 1),
    ("eval_every", 0),
    ("ckpt_every", 0),
    ("n_train", 1),
    ("n_heldout", 0),
    ("dim", 1),
    ("seed", 0),
)


def _check_int(name: str, value, minimum: int, what: str = "an integer") -> None:
    # bool is an int subclass: TrainConfig(steps=True) is a mistake, not one step.
    if isinstance(value, (bool, np.bool_)) or not isinstance(value, (int, np.integer)) or value < minimum:
        raise ValueError(f"TrainConfig.{name} must be {what} >= {minimum}, got {value!r}.")


def _check_real(name: str, value, what: str, ok, finite: bool = True) -> None:
    if (
        isinstance(value, (bool, np.bool_))
        or not isinstance(value, (int, float, np.integer, np.floating))
        or math.isnan(value)
        or (finite and not math.isfinite(value))
        or not ok(value)
    ):
        raise ValueError(f"TrainConfig.{name} must be {what}, got {value!r}.")


@dataclass
class TrainConfig:
    """Everything a training run needs; defaults train a user's own ``.npy`` without tuning.

    Attributes:
        data: ``gmm``, a toy name, ``digits`` or a ``.npy`` path (see :func:`load_dataset`).
        out_dir: run directory for checkpoints and ``config.json`` (``None``: no checkpoints).
        steps: total optimisation steps (also the cosine schedule's horizon).
        batch_size, lr: minibatch size; peak learning rate (after linear warmup; cosine decay
            to ``lr / 100``).
        warmup_steps: linear warmup length (``None``: ``min(1000, steps // 20)``).
        weight_decay, grad_clip: AdamW decoupled weight decay; global-norm clipping threshold.
        ema_decay: EMA decay (with the usual ``(1+s)/(10+s)`` warm-up for short runs).
        seed: seeds initialisation, minibatches and noise.
        process: built-in process name (``vp_linear``, ``vp_cosine``, ``subvp``, ``ve``, ``edm``,
            ``rectified_flow``).
        prediction: ``eps``, ``x0``, ``v``, ``flow`` or ``score``.
        precondition: process-aware EDM preconditioning of the network.
        model: ``auto`` (MLP for vectors, U-Net for images), ``mlp`` or ``unet``.
        width, depth: MLP size (``width=None``: scaled with the dimension).
        channels: U-Net base channels.
        patch_size: U-Net space-to-depth block (``2``: the CPU-sized 32x32x3 configuration,
            :data:`~jaxode_diffusion.models.unet.UNET_PATCHES32`); ``1`` is off.
        data_parallel: split every minibatch over all devices (see the module docstring);
            ``batch_size`` must be a multiple of the device count.
        gaussian_skip: the network learns the residual of the training data's Gaussian (linear)
            denoiser (see the module docstring). Needs ``precondition=True``; ``d <= 8192``.
        gaussian_input: what the residual network of ``gaussian_skip`` sees: ``"noisy"``
            (``c_in x``, the default) or ``"wiener"`` (the Gaussian fit's posterior mean).
        time_sampling, weighting: ``uniform`` or ``log_snr_uniform``; ``eps``, ``x0``, ``snr``, ``edm``,
            ``score`` or ``gaussian`` (relative to the Gaussian fit's error; needs ``gaussian_skip``).
        conditional: train a class-conditional model on the dataset's labels (``digits``, or
            ``from_array(x, labels=y)``); the network gets ``num_classes`` and a null class.
        p_uncond: label-dropout probability of conditional training (classifier-free guidance
            needs the unconditional score the null class learns; 0.1-0.2 is usual).
        eval_every: held-out loss every this many steps and at the end (0: never).
        ckpt_every: checkpoint every this many steps (and always at the end).
        log_every: refresh the progress bar's loss every this many steps.
        n_train, n_heldout, dim: sizes of generated data (``dim`` for ``gmm``).
        resume: continue from the latest checkpoint in ``out_dir``.
        progress, max_to_keep: show a tqdm progress bar; checkpoints kept on disk.
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
    patch_size: int = 1
    data_parallel: bool = False
    gaussian_skip: bool = False
    gaussian_input: str = "noisy"
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

    def __post_init__(self) -> None:
        # Validated at construction: a bad value is reported where it is written, not steps later.
        self.validate()

    def validate(self) -> None:
        """Raise ``ValueError`` naming the first bad field, its value and the fix.

        Called at construction; call it again after mutating a config in place.

        Example:
            >>> TrainConfig(batch_size=0)
            Traceback (most recent call last):
            ...
            ValueError: TrainConfig.batch_size must be an integer >= 1, got 0.
        """
        for name, minimum in _INT_FIELDS:
            _check_int(name, getattr(self, name), minimum)
        for name, minimum in (("width", 1), ("warmup_steps", 0)):
            if getattr(self, name) is not None:
                _check_int(name, getattr(self, name), minimum, "None or an integer")
        for name in ("resume", "progress", "precondition", "conditional", "data_parallel", "gaussian_skip"):
            value = getattr(self, name, False)
            if not isinstance(value, (bool, np.bool_)):
                raise ValueError(f"TrainConfig.{name} must be True or False, got {value!r}.")
        for name in ("data", "process", "prediction", "model", "time_sampling", "weighting"):
            value = getattr(self, name)
            if not isinstance(value, str) or not value:
                raise ValueError(f"TrainConfig.{name} must be a non-empty string, got {value!r}.")
        if self.out_dir is not None and not isinstance(self.out_dir, (str, os.PathLike)):
            raise ValueError(f"TrainConfig.out_dir must be a path or None, got {self.out_dir!r}.")
        if self.out_dir is not None and not os.fspath(self.out_dir).strip():
            # Path("") is the current directory: an empty --out must not train (or write) there.
            raise ValueError(
                f"TrainConfig.out_dir (--out) is empty ({self.out_dir!r}); give a run directory such as "
                "--out runs/my_run, or out_dir=None for no checkpoints."
            )
        _check_real("lr", self.lr, "a finite number > 0 (try 1e-3)", lambda v: v > 0)
        _check_real("weight_decay", self.weight_decay, "a finite number >= 0", lambda v: v >= 0)
        _check_real(
            "grad_clip", self.grad_clip, "a number > 0 (the global-norm threshold, e.g. 1.0)",
            lambda v: v > 0, finite=False,
        )
        _check_real("ema_decay", self.ema_decay, "a number in [0, 1) (e.g. 0.999)", lambda v: 0.0 <= v < 1.0)
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
        if self.gaussian_input not in GAUSSIAN_NET_INPUTS:
            raise ValueError(
                f"TrainConfig.gaussian_input={self.gaussian_input!r}; choose one of {list(GAUSSIAN_NET_INPUTS)}."
            )
        if self.gaussian_input != "noisy" and not self.gaussian_skip:
            raise ValueError(
                f"TrainConfig.gaussian_input={self.gaussian_input!r} sets the input of the Gaussian-residual "
                "network and needs gaussian_skip=True; set gaussian_skip=True or leave gaussian_input='noisy'."
            )
        if self.weighting == "gaussian" and not self.gaussian_skip:
            raise ValueError(
                "TrainConfig.weighting='gaussian' divides by the Gaussian fit's error and needs "
                "gaussian_skip=True; set gaussian_skip=True or choose another weighting."
            )
        if self.gaussian_skip and not self.precondition:
            raise ValueError(
                "TrainConfig.gaussian_skip=True replaces the preconditioning's skip c_skip x by the Gaussian "
                "fit's denoiser and needs precondition=True; got precondition=False."
            )
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
    adamw = optax.adamw(schedule, weight_decay=config.weight_decay)
    if getattr(config, "gaussian_skip", False):
        # GaussianResidual's fitted statistics (top-level gauss_* entries) are frozen: zero updates,
        # no optimiser state, no weight decay.
        labels = lambda p: {k: jax.tree.map(lambda _: "frozen" if k.startswith("gauss_") else "train", v)
                            for k, v in p.items()}
        adamw = optax.multi_transform({"train": adamw, "frozen": optax.set_to_zero()}, labels)
    return optax.chain(optax.clip_by_global_norm(config.grad_clip), adamw)


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
        if len(event_shape) != 1 and not config.gaussian_skip:  # GaussianResidual flattens images
            raise ValueError(
                f"model='mlp' needs vector data (N, d); got event shape {tuple(event_shape)}. "
                "Use model='unet' for images, flatten the array, or set gaussian_skip=True (the "
                "Gaussian-residual wrapper flattens images for an MLP)."
            )
        net = dict(type="mlp", dim=dim, width=config.width, depth=config.depth, emb_dim=64, **common)
        return _gaussian_wrap(config, net, event_shape)
    if len(event_shape) != 3:
        raise ValueError(f"model='unet' needs images (N, H, W, C); got event shape {tuple(event_shape)}.")
    if config.patch_size != 1:
        common["patch_size"] = int(config.patch_size)
    net = dict(type="unet", image_shape=list(event_shape), channels=config.channels, **common)
    return _gaussian_wrap(config, net, event_shape)


def _gaussian_wrap(config: TrainConfig, net: dict[str, Any], event_shape) -> dict[str, Any]:
    if not config.gaussian_skip:
        return net
    out = dict(type="gaussian_residual", event_shape=[int(s) for s in event_shape],
               prediction=net["prediction"], net=net)
    if config.gaussian_input != "noisy":  # absent at the default: old configs unchanged
        out["net_input"] = config.gaussian_input
    return out


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


def _all_finite(tree) -> jax.Array:
    leaves = [jnp.all(jnp.isfinite(x)) for x in jax.tree.leaves(tree) if jnp.issubdtype(x.dtype, jnp.inexact)]
    return jnp.all(jnp.stack(leaves)) if leaves else jnp.asarray(True)


def _compiled_steps(graphdef, process, tx, config: TrainConfig, loss_kw: dict[str, Any], mesh=None):
    batch, ema_decay = config.batch_size, config.ema_decay
    try:
        key = (graphdef, process, tx, batch, ema_decay, tuple(sorted(loss_kw.items())), mesh)
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
        if mesh is not None:  # data parallel: each device gathers and differentiates its rows
            idx = jax.lax.with_sharding_constraint(idx, batch_sharding(mesh, 1))
        x0 = xs[idx]
        loss, grads = jax.value_and_grad(loss_fn)(p, x0, kn, None if ys is None else ys[idx])
        updates, o = tx.update(grads, o, p)
        p = optax.apply_updates(p, updates)
        # EMA warm-up (as in tf.train.ExponentialMovingAverage with num_updates) so short runs
        # are not dominated by the initial parameters.
        d = jnp.minimum(ema_decay, (1.0 + step) / (10.0 + step))
        e = jax.tree.map(lambda a, b: d * a + (1.0 - d) * b, e, p)
        # Divergence flag computed in the step (one reduction per leaf, fused by XLA) so the host
        # can check it without pulling parameters back; see _raise_if_diverged.
        finite = jnp.isfinite(loss) & _all_finite(p)
        return p, o, e, loss, finite

    @jax.jit
    def eval_loss(p, k, xs, ys=None):
        # Fixed key: the held-out loss is comparable across evaluations; averaged over 4 draws.
        return jnp.mean(jax.vmap(lambda kk: loss_fn(p, xs, kk, ys))(jax.random.split(k, 4)))

    if key is not None:
        _STEP_CACHE[key] = (train_step, eval_loss)
    return train_step, eval_loss


class TrainingDivergedError(FloatingPointError):
    """Training produced a non-finite loss or parameters (NaN or inf); nothing non-finite was saved.

    Attributes:
        step: the first step whose loss or parameters were non-finite.
        last_checkpoint: the newest checkpoint written by the run (finite), or ``None``.
    """

    def __init__(self, message: str, step: int, last_checkpoint: int | None):
        super().__init__(message)
        self.step = step
        self.last_checkpoint = last_checkpoint


def _raise_if_diverged(unchecked: list, config: TrainConfig, last_saved: int | None) -> None:
    """Check the pending per-step finiteness flags (one device-to-host transfer); clear them if all hold."""
    if not unchecked:
        return
    flags = np.asarray(jax.device_get(jnp.stack([f for _, f in unchecked])))
    if flags.all():
        unchecked.clear()
        return
    step = unchecked[int(np.argmin(flags))][0]
    where = (
        f"the last checkpoint (step {last_saved} in {os.fspath(ckpt.checkpoint_dir(config.out_dir))!r}) is "
        "finite and intact"
        if last_saved is not None
        else "no checkpoint was written"
    )
    raise TrainingDivergedError(
        f"training diverged at step {step}: the loss or the parameters became NaN/inf, so training "
        f"stopped and nothing non-finite was saved ({where}). Likely fix: lower the learning rate "
        f"(lr / --lr, now {config.lr}) or clip gradients harder (grad_clip, now {config.grad_clip}); "
        "also check the data scale. Start a new run (a new --out) with the new settings.",
        step,
        last_saved,
    )


def _claim_run_dir(out: Path, seen: int | None, corrupt_steps, config: TrainConfig, run_cfg):
    """Take the run's writer lock, then write: move corrupt steps aside, config.json; open the manager.

    ``seen`` is the latest step found before the lock was taken; if another writer changed the
    directory in between, refuse rather than mix two runs. Releases the lock on any failure.
    With several processes, process 0 takes the lock and writes (:func:`ckpt.claim_collectively`),
    then every process opens the manager (orbax synchronises them); the others hold ``None``.
    """
    lock = ckpt.claim_collectively(out, lambda: _claim_as_writer(out, seen, corrupt_steps, run_cfg))
    try:
        manager = ckpt.open_manager(out, max_to_keep=config.max_to_keep)
    except BaseException:
        if lock is not None:
            lock.release()
        raise
    return lock, manager


def _claim_as_writer(out: Path, seen: int | None, corrupt_steps, run_cfg) -> ckpt.RunLock:
    """The writer's part of :func:`_claim_run_dir` (process 0 only): the lock, then the writes."""
    lock = ckpt.RunLock(out).acquire()
    try:
        steps = ckpt.finalized_steps(out)
        now = max(steps) if steps else None
        if now != seen:
            raise ckpt.RunLockedError(
                f"run directory {os.fspath(out)!r} changed while this run was starting (latest checkpoint "
                f"{seen} -> {now}): another writer was using it. Rerun with --resume, or choose another --out.",
                os.fspath(lock.path),
                None,
            )
        if corrupt_steps:
            moved = ckpt.quarantine_steps(out, corrupt_steps)
            tqdm.write(f"moved corrupt checkpoints aside: {', '.join(os.fspath(m) for m in moved)}")
        ckpt.write_json_atomic(out / "config.json", run_cfg)
    except BaseException:
        lock.release()
        raise
    return lock


def train(
    config: TrainConfig,
    *,
    data=None,
    stop_at: int | None = None,
    callback: Callable[[int, float], None] | None = None,
    verify: str = "strict",
) -> TrainResult:
    """Train a score model by denoising score matching.

    Args:
        config: a :class:`TrainConfig`.
        data: optional :class:`~jaxode_diffusion.training.data.Dataset` or array overriding ``config.data``.
        stop_at: stop after this many total steps (as if interrupted; a checkpoint is written
            there when ``out_dir`` is set). The schedule still targets ``config.steps``.
        callback: called as ``callback(step, loss)`` after every step (``loss`` is a device
            scalar); an exception raised there aborts training (useful to simulate a crash).
        verify: how ``resume`` checks checkpoint checksums: ``"strict"`` (default; a checkpoint
            without a checksum counts as corrupt), ``"warn"`` or ``"off"``
            (:data:`~jaxode_diffusion.training.checkpoint.VERIFY_MODES`; CLI ``--verify-checkpoint``).

    Returns:
        a :class:`TrainResult`.

    Raises:
        ValueError: on an invalid configuration, data with the wrong shape or non-finite values,
            ``out_dir`` already holding checkpoints without ``resume``, ``resume`` without a
            checkpoint, a configuration that does not match the checkpoint, or an ``out_dir``
            that is an existing file.
        TrainingDivergedError: (a ``FloatingPointError``) when the loss or the parameters become
            NaN/inf; names the first such step and the fix; no non-finite checkpoint is written.
        RunLockedError: if another live process holds ``out_dir`` (its ``run.lock``).
        CheckpointCorruptError: on ``resume`` when every checkpoint fails its checksum (when only
            newer ones do, the newest intact one is used and a warning names the others).
        OSError: naming the path, when the run directory cannot be written (disk full,
            permissions), at the step that writes.

    Example:
        >>> res = train(TrainConfig(data="two_moons", steps=5, batch_size=16, width=16, depth=1,
        ...                         n_train=64, n_heldout=16, progress=False))
        >>> res.step
        5
    """
    config.validate()
    verify = ckpt.check_verify(verify)
    if stop_at is not None and (isinstance(stop_at, bool) or not isinstance(stop_at, (int, np.integer)) or stop_at < 0):
        raise ValueError(f"stop_at must be None or an integer >= 0 (a step count), got {stop_at!r}.")
    # Checked before any work: a file in the way or an unwritable location is reported at once.
    run_dir = ckpt.prepare_run_dir(config.out_dir) if config.out_dir else None
    run, state = _prepare_run(config, data)
    existing, corrupt_steps = None, []
    if run_dir is not None:
        existing, corrupt_steps, state = _start_state(run_dir, config, state, verify)
    program, state = _compile_program(config, run, state)
    end = config.steps if stop_at is None else min(int(stop_at), config.steps)
    final, history = _train_with_run_dir(config, run, program, state, end, run_dir, existing, corrupt_steps,
                                         callback)
    return TrainResult(
        params=final.params,
        ema_params=final.ema,
        graphdef=run.graphdef,
        model_config=run.model_cfg,
        process=run.process,
        config=config,
        meta=run.ds.meta,
        history=history,
        step=final.step,
        out_dir=config.out_dir,
    )


@dataclass
class _Run:
    """What a run trains: the data, the process, the model (description and graph) and the optimiser.

    ``labels`` holds the extra (train, held-out) step arguments of a conditional run (empty otherwise).
    """

    ds: Dataset
    process: ForwardProcess
    sigma_data: float
    labels: tuple
    num_classes: int | None
    model_cfg: dict[str, Any]
    graphdef: Any
    tx: optax.GradientTransformation


@dataclass
class _State:
    """The training state a checkpoint holds: parameters, EMA, optimiser state, key and step."""

    params: Any
    ema: Any
    opt_state: Any
    base_key: Any
    step: int

    def checkpoint_tree(self, step) -> dict[str, Any]:
        return dict(
            params=self.params,
            ema=self.ema,
            opt_state=self.opt_state,
            step=jnp.asarray(step, jnp.int32),
            key=jax.random.key_data(self.base_key),
        )


@dataclass
class _Program:
    """The compiled steps and their device inputs (replicated over ``mesh`` when data-parallel)."""

    train_step: Callable
    eval_loss: Callable
    train_x: Any
    held_x: Any
    labels: tuple
    mesh: Any


@dataclass
class _Progress:
    """Loop bookkeeping: the history, the progress bar and its postfix, the steps whose finiteness
    has not been checked yet (step, device flag), and the last checkpoint written."""

    last_saved: int | None
    pbar: Any = None
    history: list[dict[str, float]] = dataclasses.field(default_factory=list)
    postfix: dict[str, str] = dataclasses.field(default_factory=dict)
    unchecked: list[tuple[int, jax.Array]] = dataclasses.field(default_factory=list)

    def record(self, step: int, name: str, label: str, value: float) -> None:
        self.history.append({"step": step, name: value})
        self.postfix[label] = f"{value:.4f}"
        self.pbar.set_postfix(self.postfix)


def _prepare_run(config: TrainConfig, data) -> tuple[_Run, _State]:
    """Load and check the data, build the model (Gaussian fit included) and the optimiser."""
    ds = _get_data(config, data)
    check_finite(ds.train, "training data")
    check_finite(ds.heldout, "held-out data")
    process = get_process(config.process)
    sigma_data = float(ds.meta.get("sigma_data", 1.0))
    labels, num_classes = ((), ()), None
    if config.conditional:
        y_train, y_held, num_classes = dataset_labels(ds)
        labels = ((jnp.asarray(y_train),), (jnp.asarray(y_held[:2048]),))
    model_cfg = model_config_for(config, ds.kind, ds.event_shape, sigma_data, num_classes)
    model = build_model(model_cfg, seed=config.seed)
    if config.gaussian_skip and not config.resume:  # on resume the checkpoint holds the fit
        from jaxode_diffusion.models import fit_gaussian

        model.set_statistics(*fit_gaussian(ds.train))
    graphdef, state = nnx.split(model)
    params = nnx.to_pure_dict(state)
    tx = _optimizer_cached(config)
    opt_state = tx.init(params)
    ema = jax.tree.map(jnp.copy, params)
    run = _Run(ds, process, sigma_data, labels, num_classes, model.config, graphdef, tx)
    return run, _State(params, ema, opt_state, jax.random.key(config.seed), 0)


def _start_state(run_dir: Path, config: TrainConfig, fresh: _State, verify: str = "strict"
                 ) -> tuple[int | None, list[int], _State]:
    """``(latest step found, corrupt newer steps, the state to start from)``: the newest intact
    checkpoint on ``resume``, else ``fresh`` (refusing a directory that already holds checkpoints)."""
    existing = ckpt.latest_step(run_dir)
    if not config.resume:
        if existing is not None:
            raise ValueError(
                f"{os.fspath(run_dir)!r} already holds checkpoints (latest step {existing}); pass --resume "
                "(resume=True) to continue that run, or choose a new --out directory."
            )
        return existing, [], fresh
    if existing is None:
        raise ValueError(
            f"resume=True but no checkpoint in {os.fspath(ckpt.checkpoint_dir(run_dir))!r}; "
            "drop --resume to start a new run there, or point --out at the interrupted run."
        )
    abstract = jax.tree.map(lambda a: jax.ShapeDtypeStruct(a.shape, a.dtype), fresh.checkpoint_tree(0))
    # The newest checkpoint that passes its checksum (a warning names any corrupt newer one).
    restored, saved_cfg, _, corrupt_steps = ckpt.restore_newest_intact(run_dir, abstract, verify=verify)
    _check_resume_compatible(saved_cfg, config, run_dir)
    state = _State(restored["params"], restored["ema"], restored["opt_state"],
                   jax.random.wrap_key_data(restored["key"]), int(restored["step"]))
    return existing, corrupt_steps, state


def _compile_program(config: TrainConfig, run: _Run, state: _State) -> tuple[_Program, _State]:
    """The compiled train/eval steps and the device arrays (replicated with the state when data-parallel)."""
    train_x = jnp.asarray(run.ds.train)
    held_x = jnp.asarray(run.ds.heldout[:2048])
    labels = run.labels
    loss_kw = dict(time_sampling=config.time_sampling, weighting=config.weighting, sigma_data=run.sigma_data)
    if config.conditional:
        loss_kw.update(p_uncond=float(config.p_uncond), null_id=int(run.num_classes))
    mesh = None
    if config.data_parallel:
        mesh = batch_mesh()
        if config.batch_size % mesh.devices.size:
            raise ValueError(
                f"TrainConfig.batch_size={config.batch_size} must be a multiple of the {mesh.devices.size} "
                "devices with data_parallel=True; change batch_size or set data_parallel=False."
            )
        params, opt_state, ema, train_x, held_x, labels = replicate(
            (state.params, state.opt_state, state.ema, train_x, held_x, labels), mesh
        )
        state = dataclasses.replace(state, params=params, opt_state=opt_state, ema=ema)
    train_step, eval_loss = _compiled_steps(run.graphdef, run.process, run.tx, config, loss_kw, mesh)
    return _Program(train_step, eval_loss, train_x, held_x, labels, mesh), state


def _train_with_run_dir(config, run: _Run, program: _Program, state: _State, end: int, run_dir, existing,
                        corrupt_steps, callback) -> tuple[_State, list[dict[str, float]]]:
    """Run the loop under the run directory's lock (when there is one); always close the progress
    bar, finish the checkpoint writes and release the lock."""
    progress = _Progress(last_saved=state.step if run_dir is not None and state.step > 0 else None)
    manager = lock = None
    try:
        if run_dir is not None:
            # Everything that writes to the run directory happens under its lock (one writer);
            # claimed before the progress bar so a refusal is the only thing printed.
            run_cfg = _run_config(config, run.model_cfg, run.ds.meta, state.step)
            lock, manager = _claim_run_dir(run_dir, existing, corrupt_steps, config, run_cfg)
        progress.pbar = tqdm(total=config.steps, initial=state.step, disable=not config.progress,
                             desc="train", dynamic_ncols=True)
        return _loop(config, run, program, state, end, manager, callback, progress), progress.history
    finally:
        if progress.pbar is not None:
            progress.pbar.close()
        if manager is not None:
            try:
                manager.wait_until_finished()
                manager.close()
            finally:
                if lock is not None:
                    lock.release()
        elif lock is not None:
            lock.release()


def _loop(config, run: _Run, program: _Program, state: _State, end: int, manager, callback,
          progress: _Progress) -> _State:
    """Steps ``state.step + 1 .. end``: log, evaluate and checkpoint on schedule; the final state."""
    eval_key = jax.random.fold_in(jax.random.key(config.seed), 2**31 - 1)
    params, opt_state, ema, base_key = state.params, state.opt_state, state.ema, state.base_key
    for s in range(state.step, end):
        params, opt_state, ema, loss, finite = program.train_step(
            params, opt_state, ema, jnp.int32(s), base_key, program.train_x, *program.labels[0]
        )
        done = s + 1
        progress.unchecked.append((done, finite))
        if callback is not None:
            callback(done, loss)
        if done % config.log_every == 0 or done == end:
            # One host sync per log interval.
            _raise_if_diverged(progress.unchecked, config, progress.last_saved)
            progress.record(done, "loss", "loss", float(loss))
        progress.pbar.update(1)
        if config.eval_every and (done % config.eval_every == 0 or done == end):
            hv = float(program.eval_loss(ema, eval_key, program.held_x, *program.labels[1]))
            progress.record(done, "heldout_loss", "heldout", hv)
        if manager is not None and ((config.ckpt_every and done % config.ckpt_every == 0) or done == end):
            state_tree = _State(params, ema, opt_state, base_key, done).checkpoint_tree(done)
            # Never checkpoint a non-finite state.
            _raise_if_diverged(progress.unchecked, config, progress.last_saved)
            if program.mesh is not None or jax.process_count() > 1:
                # replicated -> host arrays: the single-device format, restorable on any layout
                state_tree = jax.device_get(state_tree)
            run_cfg = _run_config(config, run.model_cfg, run.ds.meta, done)
            ckpt.save_checkpoint(manager, done, state_tree, run_cfg)
            progress.last_saved = done
    _raise_if_diverged(progress.unchecked, config, progress.last_saved)
    return _State(params, ema, opt_state, base_key, max(end, state.step))


def load_run(run_dir: str | os.PathLike, *, ema: bool = True, step: int | None = None, verify: str = "strict"):
    """Rebuild the score function of a saved run.

    Args:
        run_dir: a ``train`` output directory.
        ema: use the EMA parameters (default) or the raw ones.
        step: checkpoint step (default: latest).
        verify: ``"strict"`` (default: a checkpoint whose checksum is missing or wrong is refused),
            ``"warn"`` (load one without a checksum, with a warning) or ``"off"``.

    Returns:
        ``(score_fn, run_config)``: a :class:`~jaxode_diffusion.models.ScoreModel` and the stored
        JSON (keys ``train``, ``model``, ``data``, ``step``).

    Raises:
        ValueError: if the directory is missing, empty or corrupt (the message names the path),
            or ``verify`` is unknown.
    """
    run_cfg = ckpt.read_config(run_dir, step, verify=verify)
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
    state, run_cfg, _ = ckpt.restore_checkpoint(run_dir, abstract, step, verify=verify)
    params = state["ema"] if ema else state["params"]
    process = get_process(config.process)
    return ScoreModel(graphdef, params, process, model_cfg["prediction"]), run_cfg
