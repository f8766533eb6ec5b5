"""Training score models: DSM loss, optax trainer with EMA, orbax checkpoints."""

from .checkpoint import (
    CheckpointCorruptError,
    NonFiniteStateError,
    RunLock,
    RunLockedError,
    latest_step,
    read_config,
    restore_checkpoint,
    verify_checkpoint,
)
from .loss import TIME_SAMPLINGS, WEIGHTINGS, drop_labels, dsm_loss, dsm_loss_per_example, sample_times
from .trainer import (
    TrainConfig,
    TrainingDivergedError,
    TrainResult,
    load_run,
    make_optimizer,
    model_config_for,
    train,
)

__all__ = [
    "CheckpointCorruptError",
    "NonFiniteStateError",
    "RunLock",
    "RunLockedError",
    "TrainingDivergedError",
    "verify_checkpoint",
    "TIME_SAMPLINGS",
    "WEIGHTINGS",
    "TrainConfig",
    "TrainResult",
    "drop_labels",
    "dsm_loss",
    "dsm_loss_per_example",
    "latest_step",
    "load_run",
    "make_optimizer",
    "model_config_for",
    "read_config",
    "restore_checkpoint",
    "sample_times",
    "train",
]
