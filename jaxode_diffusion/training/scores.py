"""A trained run's score with its process and (when it can be rebuilt) its held-out data."""

from __future__ import annotations

import warnings
from typing import Any

__all__ = ["load_checkpoint_score"]


def load_checkpoint_score(checkpoint_dir) -> tuple[Any, Any, dict[str, Any]]:
    """``(score_fn, process, data_info)`` of a trained run (via :func:`jaxode_diffusion.training.load_run`).

    ``data_info`` holds ``event_shape`` and, when the training data can be rebuilt from the stored
    configuration, ``samples`` (held-out data in model coordinates). When it cannot (the data file
    moved), a warning says so and ``samples`` is absent.

    Raises:
        ValueError: if the directory holds no loadable run (``CheckpointCorruptError`` if its
            latest checkpoint fails verification).

    Example:
        >>> score_fn, process, info = load_checkpoint_score("runs/moons")  # doctest: +SKIP
        >>> info["samples"].shape  # doctest: +SKIP
        (2000, 2)
    """
    from jaxode_diffusion.training import load_run

    score_fn, run_cfg = load_run(checkpoint_dir)
    process = score_fn.process
    data_info = dict(run_cfg.get("data", {}))
    train_cfg = run_cfg.get("train", {})
    try:
        from jaxode_diffusion.training.data import load_dataset

        ds = load_dataset(train_cfg["data"], n_train=train_cfg.get("n_train", 20000),
                          n_heldout=train_cfg.get("n_heldout", 2000), dim=train_cfg.get("dim", 2),
                          seed=train_cfg.get("seed", 0))
        data_info["samples"] = ds.heldout if len(ds.heldout) else ds.train
        data_info.setdefault("event_shape", list(ds.event_shape))
    except Exception as err:  # the data may live elsewhere now: trajectories still work
        warnings.warn(f"could not rebuild the training data of {checkpoint_dir!r} ({err!r}); "
                      "only --source trajectory is available.", stacklevel=2)
    return score_fn, process, data_info
