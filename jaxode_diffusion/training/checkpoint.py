"""Orbax checkpoints of a training run.

Layout of a run directory (the CLI's ``--out``)::

    RUN/config.json                 the run's configuration (human-readable copy)
    RUN/checkpoints/<step>/state    params, EMA params, optimizer state, step, RNG key
    RUN/checkpoints/<step>/config   the same JSON: enough to rebuild the model and process

Writes are atomic: orbax writes each step into ``<step>.orbax-checkpoint-tmp-*`` and renames it
when complete (``orbax.checkpoint._src.path.atomicity.AtomicRenameTemporaryPath``), so a run
killed while saving leaves a temporary folder that is never taken for a checkpoint.
"""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Any

import orbax.checkpoint as ocp

__all__ = [
    "CHECKPOINT_SUBDIR",
    "checkpoint_dir",
    "open_manager",
    "save_checkpoint",
    "latest_step",
    "read_config",
    "restore_checkpoint",
    "write_json_atomic",
]

CHECKPOINT_SUBDIR = "checkpoints"


def checkpoint_dir(run_dir: str | os.PathLike) -> Path:
    """``RUN/checkpoints`` (or ``run_dir`` itself when it already is a checkpoints folder)."""
    run_dir = Path(run_dir).absolute()
    if run_dir.name == CHECKPOINT_SUBDIR or (
        not (run_dir / CHECKPOINT_SUBDIR).exists() and any(p.name.isdigit() for p in _children(run_dir))
    ):
        return run_dir
    return run_dir / CHECKPOINT_SUBDIR


def _children(path: Path):
    return list(path.iterdir()) if path.is_dir() else []


def write_json_atomic(path: str | os.PathLike, obj: Any) -> None:
    """Write JSON to ``path`` through a temporary file and ``os.replace`` (atomic on POSIX)."""
    path = Path(path)
    tmp = path.with_name(path.name + ".tmp")
    tmp.write_text(json.dumps(obj, indent=2, sort_keys=True))
    os.replace(tmp, path)


def open_manager(
    run_dir: str | os.PathLike, *, max_to_keep: int = 3, create: bool = True
) -> ocp.CheckpointManager:
    """A ``CheckpointManager`` on ``RUN/checkpoints`` keeping the last ``max_to_keep`` steps.

    Raises:
        ValueError: with ``create=False``, if the folder does not exist.
    """
    ckdir = checkpoint_dir(run_dir)
    if not create and not ckdir.is_dir():
        raise ValueError(_missing_message(run_dir, ckdir))
    options = ocp.CheckpointManagerOptions(max_to_keep=max_to_keep, create=create)
    return ocp.CheckpointManager(ckdir, options=options)


def _missing_message(run_dir, ckdir) -> str:
    if not Path(run_dir).exists():
        return (
            f"checkpoint directory {os.fspath(run_dir)!r} does not exist; pass the --out directory "
            "of a `train` run (it holds config.json and checkpoints/)."
        )
    return (
        f"no checkpoint found in {os.fspath(ckdir)!r} (expected step folders such as "
        f"{os.fspath(ckdir)}/1000 written by `train`); train first (without --resume) or check the path. "
        "Folders named *.orbax-checkpoint-tmp-* are unfinished saves and are ignored."
    )


def save_checkpoint(
    manager: ocp.CheckpointManager, step: int, state: Any, config: dict[str, Any], *, force: bool = True
) -> None:
    """Save ``state`` (a pytree of arrays) and ``config`` (JSON) as checkpoint ``step``."""
    manager.save(
        int(step),
        args=ocp.args.Composite(state=ocp.args.StandardSave(state), config=ocp.args.JsonSave(config)),
        force=force,
    )


def latest_step(run_dir: str | os.PathLike) -> int | None:
    """The newest complete checkpoint step in ``run_dir`` (``None`` when there is none)."""
    ckdir = checkpoint_dir(run_dir)
    if not ckdir.is_dir():
        return None
    mngr = ocp.CheckpointManager(ckdir, options=ocp.CheckpointManagerOptions(create=False))
    try:
        return mngr.latest_step()
    finally:
        mngr.close()


def _resolve(run_dir, step):
    ckdir = checkpoint_dir(run_dir)
    if not ckdir.is_dir():
        raise ValueError(_missing_message(run_dir, ckdir))
    mngr = ocp.CheckpointManager(ckdir, options=ocp.CheckpointManagerOptions(create=False))
    steps = mngr.all_steps()
    if not steps:
        mngr.close()
        raise ValueError(_missing_message(run_dir, ckdir))
    if step is None:
        step = max(steps)
    elif step not in steps:
        mngr.close()
        raise ValueError(
            f"step {step} is not among the checkpoints in {os.fspath(ckdir)!r}: {sorted(steps)}."
        )
    return mngr, ckdir, step


def _corrupt(ckdir, step, err) -> ValueError:
    return ValueError(
        f"checkpoint {os.fspath(ckdir / str(step))!r} is corrupt or incomplete "
        f"({type(err).__name__}: {err}). "
        f"Delete that folder to fall back to an earlier step, or retrain into a new --out directory."
    )


def read_config(run_dir: str | os.PathLike, step: int | None = None) -> dict[str, Any]:
    """The run configuration stored with checkpoint ``step`` (default: the latest).

    Raises:
        ValueError: if the directory is missing, holds no checkpoint, or the config is unreadable.
    """
    mngr, ckdir, step = _resolve(run_dir, step)
    try:
        out = mngr.restore(step, args=ocp.args.Composite(config=ocp.args.JsonRestore()))
        config = out.config
        if not isinstance(config, dict):
            raise TypeError(f"config is a {type(config).__name__}, not a JSON object")
        return config
    except Exception as err:
        raise _corrupt(ckdir, step, err) from err
    finally:
        mngr.close()


def restore_checkpoint(run_dir: str | os.PathLike, abstract_state: Any, step: int | None = None):
    """Restore ``(state, config, step)`` from checkpoint ``step`` (default: the latest).

    Args:
        run_dir: the run directory (or its ``checkpoints`` folder).
        abstract_state: a pytree of ``jax.ShapeDtypeStruct`` (or arrays) with the saved structure.
        step: which step; ``None`` for the latest.

    Raises:
        ValueError: if the directory is missing, holds no checkpoint, or the checkpoint does not
            match ``abstract_state`` or is corrupt.
    """
    mngr, ckdir, step = _resolve(run_dir, step)
    try:
        out = mngr.restore(
            step,
            args=ocp.args.Composite(
                state=ocp.args.StandardRestore(abstract_state), config=ocp.args.JsonRestore()
            ),
        )
        return out.state, out.config, step
    except Exception as err:
        raise _corrupt(ckdir, step, err) from err
    finally:
        mngr.close()
