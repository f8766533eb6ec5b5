"""Training score models by denoising score matching, with checkpoints that resume.

Files:

* ``data.py``: the data sets (2-D toys, Gaussian mixtures, scikit-learn's digits, photo patches,
  your own ``.npy``) and :func:`load_dataset`;
* ``loss.py``: the DSM loss with its time samplings and weightings;
* ``trainer.py``: :func:`train` (optax, EMA, data-parallel over devices) and :func:`load_run`;
* ``checkpoint.py``: orbax checkpoints written atomically, checksummed, and a run lock;
* ``scores.py``: :func:`load_checkpoint_score`, a trained run's score function, process and data facts.
"""

from jaxode_diffusion.training.checkpoint import (
    CheckpointCorruptError,
    NonFiniteStateError,
    RunLock,
    RunLockedError,
    latest_step,
    read_config,
    restore_checkpoint,
    verify_checkpoint,
)
from jaxode_diffusion.training.data import Dataset, load_dataset, load_npy
from jaxode_diffusion.training.loss import (
    TIME_SAMPLINGS,
    WEIGHTINGS,
    drop_labels,
    dsm_loss,
    dsm_loss_per_example,
    sample_times,
)
from jaxode_diffusion.training.scores import load_checkpoint_score
from jaxode_diffusion.training.trainer import (
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
    "Dataset",
    "drop_labels",
    "dsm_loss",
    "dsm_loss_per_example",
    "latest_step",
    "load_checkpoint_score",
    "load_dataset",
    "load_npy",
    "load_run",
    "make_optimizer",
    "model_config_for",
    "NonFiniteStateError",
    "read_config",
    "restore_checkpoint",
    "RunLock",
    "RunLockedError",
    "sample_times",
    "TIME_SAMPLINGS",
    "train",
    "TrainConfig",
    "TrainingDivergedError",
    "TrainResult",
    "verify_checkpoint",
    "WEIGHTINGS",
]
