"""Orbax checkpoints of a training run: atomic, checksummed, finite, one writer at a time.

Layout of a run directory (the CLI's ``--out``)::

    RUN/config.json                   the run's configuration (human-readable copy)
    RUN/run.lock                      present while a writer holds the run (pid, host, start time)
    RUN/checkpoints/<step>/state      params, EMA params, optimizer state, step, RNG key
    RUN/checkpoints/<step>/config     the same JSON: enough to rebuild the model and process
    RUN/checkpoints/<step>/checksum   sha256 of the state's array bytes and of the config
    RUN/corrupt/<step>-<time>/        corrupt checkpoints moved aside by a resume (kept for inspection)

Guarantees:

* **Atomic**: orbax writes each step into ``<step>.orbax-checkpoint-tmp*`` and renames it when
  complete (``orbax.checkpoint._src.path.atomicity.AtomicRenameTemporaryPath``), so a run killed
  while saving leaves a temporary folder that is never taken for a checkpoint. The checksum is an
  item of the same checkpoint, so it is renamed into place together with the arrays.
* **Verified**: every restore recomputes the checksum (:func:`content_checksum`) over the restored
  bytes and the config and raises :class:`CheckpointCorruptError` (naming the folder) on a
  mismatch, so a flipped byte never yields silently different weights. A checkpoint without a
  checksum (removed, or written before checksums existed) is refused too, unless the caller opts
  out by name: ``verify="warn"`` loads it with a warning, ``verify="off"`` skips the checksum
  (see :data:`VERIFY_MODES`; the CLI's ``--verify-checkpoint warn|off``).
* **Finite**: :func:`save_checkpoint` refuses state with NaN or inf (:class:`NonFiniteStateError`).
* **Reported at once**: saves are synchronous, so a full disk or a permission problem is raised at
  the step that saves, as an ``OSError`` naming the path (:func:`jaxode_diffusion.utils.outputs.os_error`).
* **One writer**: :class:`RunLock` holds ``RUN/run.lock`` for the duration of a run; a second
  writer gets :class:`RunLockedError`; a lock left by a dead process on this host is taken over.
* **Multi-process** (after ``jax.distributed.initialize()``): one run directory on a file system
  every process sees; every process calls the same save / restore functions in the same order
  (orbax synchronises them and its primary host, process 0, writes the files); checkpoints hold
  host arrays (the single-device format), so a run resumes with any number of processes or
  devices; process 0 alone holds the lock for the whole job (:func:`claim_collectively`).
"""

from __future__ import annotations

import datetime as _dt
import hashlib
import json
import os
import shutil
import socket
import sys
import warnings
from pathlib import Path
from typing import Any

import jax
import numpy as np
import orbax.checkpoint as ocp

from jaxode_diffusion.utils.outputs import dumps_json, ensure_output_dir, os_error, write_json_atomic

__all__ = [
    "CHECKPOINT_SUBDIR",
    "CORRUPT_SUBDIR",
    "LOCK_NAME",
    "CheckpointCorruptError",
    "NonFiniteStateError",
    "VERIFY_MODES",
    "RunLock",
    "RunLockedError",
    "checkpoint_dir",
    "claim_collectively",
    "content_checksum",
    "finalized_steps",
    "open_manager",
    "save_checkpoint",
    "latest_step",
    "prepare_run_dir",
    "quarantine_steps",
    "read_config",
    "restore_checkpoint",
    "restore_newest_intact",
    "verify_checkpoint",
    "write_json_atomic",
]

CHECKPOINT_SUBDIR = "checkpoints"
CORRUPT_SUBDIR = "corrupt"
LOCK_NAME = "run.lock"
CHECKSUM_VERSION = 1
# How a restore treats the content checksum: "strict" (the default) refuses a checkpoint whose
# checksum is missing or does not match; "warn" loads one without a checksum with a warning (a
# mismatch is still an error); "off" does not read or check the checksum at all.
VERIFY_MODES = ("strict", "warn", "off")


def check_verify(verify) -> str:
    """``verify`` if it is one of :data:`VERIFY_MODES`, else a ``ValueError`` naming the choices.

    Example:
        >>> check_verify("warn")
        'warn'
    """
    if not isinstance(verify, str) or verify not in VERIFY_MODES:
        raise ValueError(
            f"verify={verify!r}: choose 'strict' (the default: refuse a checkpoint whose checksum is missing "
            "or wrong), 'warn' (load one without a checksum, with a warning) or 'off' (no checksum check); "
            "on the command line --verify-checkpoint strict|warn|off."
        )
    return verify


class CheckpointCorruptError(ValueError):
    """A checkpoint folder that cannot be read or whose content checksum does not match.

    Attributes:
        path: the checkpoint folder (``RUN/checkpoints/<step>``).
        step: its step.
    """

    def __init__(self, message: str, path: str | None = None, step: int | None = None):
        super().__init__(message)
        self.path = path
        self.step = step


class NonFiniteStateError(FloatingPointError):
    """Training state with NaN or inf values that :func:`save_checkpoint` refused to write."""


class RunLockedError(RuntimeError):
    """A run directory already held by another writer (see :class:`RunLock`).

    Attributes:
        lock_path: the lock file.
        owner: its content (``pid``, ``host``, ``started``, ``argv``) or ``None`` if unreadable.
    """

    def __init__(self, message: str, lock_path: str, owner: dict[str, Any] | None):
        super().__init__(message)
        self.lock_path = lock_path
        self.owner = owner


def checkpoint_dir(run_dir: str | os.PathLike) -> Path:
    """``RUN/checkpoints`` (or ``run_dir`` itself when it already is a checkpoints folder).

    Example:
        >>> checkpoint_dir("/runs/moons").as_posix()
        '/runs/moons/checkpoints'
    """
    run_dir = Path(run_dir).absolute()
    if run_dir.name == CHECKPOINT_SUBDIR or (
        not (run_dir / CHECKPOINT_SUBDIR).exists() and any(p.name.isdigit() for p in _children(run_dir))
    ):
        return run_dir
    return run_dir / CHECKPOINT_SUBDIR


def _children(path: Path):
    return list(path.iterdir()) if path.is_dir() else []


def prepare_run_dir(run_dir: str | os.PathLike, argname: str = "out_dir (--out)") -> Path:
    """Create the run directory, or raise a clear error naming it (a file in the way, no permission).

    Example:
        >>> import tempfile, os
        >>> prepare_run_dir(os.path.join(tempfile.mkdtemp(), "run")).is_dir()
        True
    """
    return ensure_output_dir(run_dir, argname)


# ----------------------------------------------------------------------------------------------
# Content checksum
# ----------------------------------------------------------------------------------------------


def _key_name(k) -> str:
    for attr in ("key", "name", "idx"):
        if hasattr(k, attr):
            return str(getattr(k, attr))
    return str(k)


def _canonical_json(config: Any) -> bytes:
    # A JSON round trip first: what is hashed at save time is exactly what a restore returns.
    return json.dumps(json.loads(json.dumps(config)), sort_keys=True, separators=(",", ":")).encode()


def content_checksum(state: Any, config: Any) -> dict[str, Any]:
    """sha256 digests of a checkpoint's content: ``{"state": hex, "config": hex, ...}``.

    The state digest covers every leaf's path, dtype, shape and raw bytes, in an order that does
    not depend on the container types (a restored ``dict`` and a saved ``NamedTuple`` hash alike);
    the config digest covers its canonical JSON. A flipped bit anywhere in the restored values or
    the config changes the digest.

    Example:
        >>> import numpy as np
        >>> a = content_checksum({"w": np.zeros(3, np.float32)}, {"lr": 1e-3})
        >>> b = content_checksum({"w": np.array([0, 0, 1e-45], np.float32)}, {"lr": 1e-3})
        >>> a["state"] != b["state"] and a["config"] == b["config"]
        True
    """
    leaves = []
    for path, leaf in jax.tree_util.tree_flatten_with_path(state)[0]:
        leaves.append(("/".join(_key_name(k) for k in path), np.asarray(leaf)))
    leaves.sort(key=lambda item: item[0])
    h = hashlib.sha256()
    for name, arr in leaves:
        h.update(f"{name}|{arr.dtype.str}|{arr.shape}|".encode())
        h.update(np.ascontiguousarray(arr).tobytes())
    return dict(
        version=CHECKSUM_VERSION,
        algorithm="sha256",
        state=h.hexdigest(),
        config=hashlib.sha256(_canonical_json(config)).hexdigest(),
        num_leaves=len(leaves),
    )


def _first_nonfinite(state: Any) -> str | None:
    for path, leaf in jax.tree_util.tree_flatten_with_path(state)[0]:
        arr = np.asarray(leaf)
        if np.issubdtype(arr.dtype, np.inexact) and not np.all(np.isfinite(arr)):
            return "/".join(_key_name(k) for k in path)
    return None


# ----------------------------------------------------------------------------------------------
# Save / restore
# ----------------------------------------------------------------------------------------------


def open_manager(
    run_dir: str | os.PathLike, *, max_to_keep: int = 3, create: bool = True
) -> ocp.CheckpointManager:
    """A ``CheckpointManager`` on ``RUN/checkpoints`` keeping the last ``max_to_keep`` steps.

    Saves are synchronous: an I/O failure surfaces at the step that saves, not steps later from a
    background thread.

    Raises:
        ValueError: with ``create=False``, if the folder does not exist.
        OSError: naming the folder if it cannot be created.
    """
    ckdir = checkpoint_dir(run_dir)
    if not create and not ckdir.is_dir():
        raise ValueError(_missing_message(run_dir, ckdir))
    options = ocp.CheckpointManagerOptions(
        max_to_keep=max_to_keep, create=create, enable_async_checkpointing=False
    )
    try:
        return ocp.CheckpointManager(ckdir, options=options)
    except OSError as err:
        raise (os_error(err, ckdir, "creating the checkpoint folder") or err) from err


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
    """Save ``state`` (a pytree of arrays), ``config`` (JSON) and their checksum as checkpoint ``step``.

    Returns when the checkpoint is complete on disk (renamed into place).

    Raises:
        NonFiniteStateError: if a floating-point leaf of ``state`` holds NaN or inf (nothing written).
        OSError: naming the checkpoint folder if the write fails (disk full, permissions).

    Example:
        >>> import tempfile, numpy as np
        >>> run = tempfile.mkdtemp()
        >>> m = open_manager(run)
        >>> save_checkpoint(m, 1, {"w": np.ones(2, np.float32)}, {"lr": 1e-3}); m.close()
        >>> latest_step(run)
        1
    """
    bad = _first_nonfinite(state)
    if bad is not None:
        raise NonFiniteStateError(
            f"refusing to write checkpoint {step}: state leaf {bad!r} holds NaN or inf (training diverged); "
            "lower the learning rate or tighten gradient clipping and retrain."
        )
    checksum = content_checksum(jax.device_get(state), config)
    target = Path(manager.directory) / str(int(step))
    try:
        manager.save(
            int(step),
            args=ocp.args.Composite(
                state=ocp.args.StandardSave(state),
                config=ocp.args.JsonSave(config),
                checksum=ocp.args.JsonSave(checksum),
            ),
            force=force,
        )
        manager.wait_until_finished()
    except Exception as err:
        converted = os_error(err, target, f"writing checkpoint {step}")
        if converted is None:
            raise
        raise converted from err


def finalized_steps(run_dir: str | os.PathLike) -> list[int]:
    """The complete (renamed into place) checkpoint steps in ``run_dir``, sorted; a file-system scan.

    Unlike :func:`latest_step` it opens no ``CheckpointManager``, so one process of a
    multi-process job may call it alone (a manager synchronises all processes).

    Example:
        >>> import tempfile
        >>> finalized_steps(tempfile.mkdtemp())
        []
    """
    ckdir = checkpoint_dir(run_dir)
    return sorted(ocp.step.checkpoint_steps(ckdir)) if ckdir.is_dir() else []


def latest_step(run_dir: str | os.PathLike) -> int | None:
    """The newest complete checkpoint step in ``run_dir`` (``None`` when there is none).

    Complete means renamed into place; it is not verified (see :func:`verify_checkpoint`).
    """
    ckdir = checkpoint_dir(run_dir)
    if not ckdir.is_dir():
        return None
    mngr = ocp.CheckpointManager(ckdir, options=ocp.CheckpointManagerOptions(create=False))
    try:
        return mngr.latest_step()
    finally:
        mngr.close()


def _all_steps(run_dir) -> tuple[Path, list[int]]:
    ckdir = checkpoint_dir(run_dir)
    if not ckdir.is_dir():
        raise ValueError(_missing_message(run_dir, ckdir))
    mngr = ocp.CheckpointManager(ckdir, options=ocp.CheckpointManagerOptions(create=False))
    try:
        steps = sorted(mngr.all_steps())
    finally:
        mngr.close()
    if not steps:
        raise ValueError(_missing_message(run_dir, ckdir))
    return ckdir, steps


def _resolve(run_dir, step):
    ckdir, steps = _all_steps(run_dir)
    if step is None:
        step = max(steps)
    elif step not in steps:
        raise ValueError(f"step {step} is not among the checkpoints in {os.fspath(ckdir)!r}: {steps}.")
    return ckdir, step


def _corrupt(ckdir: Path, step: int, reason: str) -> CheckpointCorruptError:
    path = os.fspath(ckdir / str(step))
    # tensorstore appends its whole JSON spec to read errors: keep the cause, drop the spec.
    reason = reason.split(" [tensorstore_spec=")[0]
    if len(reason) > 400:
        reason = reason[:400] + " ..."
    return CheckpointCorruptError(
        f"checkpoint {path!r} is corrupt or incomplete ({reason}). "
        "Delete that folder to fall back to an earlier step (`train --resume` does so by itself), "
        "or retrain into a new --out directory.",
        path=path,
        step=step,
    )


def _has_checksum(stepdir: Path) -> bool:
    """Whether the checkpoint carries a checksum; a checksum that should be there but is not is corruption."""
    if (stepdir / "checksum").is_dir():
        return True
    try:
        meta = json.loads((stepdir / "_CHECKPOINT_METADATA").read_text())
        handlers = meta.get("item_handlers") or {}
    except (OSError, ValueError, AttributeError) as err:
        raise ValueError(f"its metadata is unreadable: {err}") from err
    if "checksum" in handlers:
        raise ValueError("its checksum item is missing")
    return False


def _restore(ckdir: Path, step: int, abstract_state: Any | None, *, with_state: bool, verify: str = "strict"):
    """Restore and verify one step: ``(state or None, config)``; ``CheckpointCorruptError`` if bad."""
    stepdir = ckdir / str(step)
    checked = _checksum_present(ckdir, step, verify)
    items: dict[str, Any] = dict(config=ocp.args.JsonRestore())
    if with_state:
        items["state"] = ocp.args.StandardRestore(abstract_state)
    if checked:
        items["checksum"] = ocp.args.JsonRestore()
    mngr = ocp.CheckpointManager(ckdir, options=ocp.CheckpointManagerOptions(create=False))
    try:
        out = mngr.restore(step, args=ocp.args.Composite(**items))
    except Exception as err:
        raise _corrupt(ckdir, step, f"{type(err).__name__}: {err}") from err
    finally:
        mngr.close()
    config = out.config
    if not isinstance(config, dict):
        raise _corrupt(ckdir, step, f"config is a {type(config).__name__}, not a JSON object")
    state = out.state if with_state else None
    if not checked:
        if verify == "warn":
            warnings.warn(
                f"checkpoint {os.fspath(stepdir)!r} has no checksum: its content cannot be verified "
                "(loaded because verify='warn').",
                stacklevel=3,
            )
        return state, config
    saved = out.checksum
    if not isinstance(saved, dict) or "config" not in saved or "state" not in saved:
        raise _corrupt(ckdir, step, "its checksum record is unreadable")
    now = content_checksum(state if with_state else {}, config)
    if now["config"] != saved["config"]:
        raise _corrupt(ckdir, step, "the config does not match its sha256 checksum")
    if with_state and now["state"] != saved["state"]:
        raise _corrupt(ckdir, step, "the array data does not match its sha256 checksum")
    return state, config


def _checksum_present(ckdir: Path, step: int, verify: str) -> bool:
    """Whether to check a checksum; under ``verify="strict"`` a checkpoint without one is corrupt."""
    if verify == "off":
        return False
    try:
        checked = _has_checksum(ckdir / str(step))
    except ValueError as err:
        raise _corrupt(ckdir, step, str(err)) from err
    if not checked and verify == "strict":
        raise _corrupt(
            ckdir, step,
            "it has no checksum, so its content cannot be verified; if you trust it (written by an older "
            "version), load it with verify='warn' (CLI: --verify-checkpoint warn)",
        )
    return checked


def read_config(run_dir: str | os.PathLike, step: int | None = None, *, verify: str = "strict") -> dict[str, Any]:
    """The run configuration stored with checkpoint ``step`` (default: the latest), checksum-verified.

    ``verify``: one of :data:`VERIFY_MODES` (``"strict"``: a missing checksum is an error).

    Raises:
        ValueError: if the directory is missing or holds no checkpoint.
        CheckpointCorruptError: (a ``ValueError``) naming the folder if the config is unreadable or
            does not match its checksum.
    """
    verify = check_verify(verify)
    ckdir, step = _resolve(run_dir, step)
    return _restore(ckdir, step, None, with_state=False, verify=verify)[1]


def restore_checkpoint(
    run_dir: str | os.PathLike, abstract_state: Any, step: int | None = None, *, verify: str = "strict"
):
    """Restore and verify ``(state, config, step)`` from checkpoint ``step`` (default: the latest).

    Args:
        run_dir: the run directory (or its ``checkpoints`` folder).
        abstract_state: a pytree of ``jax.ShapeDtypeStruct`` (or arrays) with the saved structure.
        step: which step; ``None`` for the latest.
        verify: ``"strict"`` (default), ``"warn"`` or ``"off"`` (see :data:`VERIFY_MODES`).

    Raises:
        ValueError: if the directory is missing or holds no checkpoint, or ``verify`` is unknown.
        CheckpointCorruptError: (a ``ValueError``) naming the folder if the checkpoint does not
            match ``abstract_state``, is unreadable, does not match its sha256 checksum, or (under
            ``verify="strict"``) has no checksum.
    """
    verify = check_verify(verify)
    ckdir, step = _resolve(run_dir, step)
    state, config = _restore(ckdir, step, abstract_state, with_state=True, verify=verify)
    return state, config, step


def verify_checkpoint(
    run_dir: str | os.PathLike, abstract_state: Any = None, step: int | None = None, *, verify: str = "strict"
) -> int:
    """Check that checkpoint ``step`` (default: the latest) is intact; returns the step.

    Args:
        abstract_state: the saved structure (``None``: restore as saved).
        verify: ``"strict"`` (default: a missing checksum fails) or ``"warn"`` (see :data:`VERIFY_MODES`).

    Raises:
        CheckpointCorruptError: naming the folder if it is unreadable, fails its checksum or (strict)
            has none.
    """
    return restore_checkpoint(run_dir, abstract_state, step, verify=verify)[2]


def restore_newest_intact(run_dir: str | os.PathLike, abstract_state: Any, *, verify: str = "strict"):
    """Restore the newest checkpoint that passes verification: ``(state, config, step, skipped)``.

    ``skipped`` lists the newer steps that were corrupt; each is reported with a ``UserWarning``
    naming its folder and the step used instead. ``verify`` as in :func:`restore_checkpoint`
    (under ``"strict"`` a step without a checksum counts as corrupt).

    Raises:
        ValueError: if there is no checkpoint.
        CheckpointCorruptError: if every checkpoint is corrupt (all are named).
    """
    verify = check_verify(verify)
    ckdir, steps = _all_steps(run_dir)
    skipped: list[int] = []
    reasons: list[str] = []
    for step in sorted(steps, reverse=True):
        try:
            state, config = _restore(ckdir, step, abstract_state, with_state=True, verify=verify)
        except CheckpointCorruptError as err:
            skipped.append(step)
            reasons.append(str(err))
            continue
        for why in reasons:  # one per step in `skipped`
            warnings.warn(
                f"{why.split(' Delete that folder')[0]} Resuming from step {step} instead, the newest "
                f"intact checkpoint ({os.fspath(ckdir / str(step))!r}).",
                stacklevel=2,
            )
        return state, config, step, skipped
    raise CheckpointCorruptError(
        f"every checkpoint in {os.fspath(ckdir)!r} is corrupt (steps {sorted(steps)}): "
        + " | ".join(reasons)
        + " Retrain into a new --out directory.",
        path=os.fspath(ckdir),
    )


def quarantine_steps(run_dir: str | os.PathLike, steps) -> list[Path]:
    """Move checkpoint folders ``steps`` to ``RUN/corrupt/<step>-<UTC time>`` (kept, never loaded again).

    Returns the new paths.
    """
    ckdir = checkpoint_dir(run_dir)
    dest_root = ckdir.parent / CORRUPT_SUBDIR
    moved = []
    stamp = _dt.datetime.now(_dt.timezone.utc).strftime("%Y%m%dT%H%M%S%f")
    for step in steps:
        src = ckdir / str(step)
        if not src.exists():
            continue
        dest_root.mkdir(parents=True, exist_ok=True)
        dest = dest_root / f"{step}-{stamp}"
        shutil.move(os.fspath(src), os.fspath(dest))
        moved.append(dest)
    return moved


# ----------------------------------------------------------------------------------------------
# One writer per run directory
# ----------------------------------------------------------------------------------------------


def _pid_alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:  # exists, owned by another user
        return True
    except (OverflowError, ValueError):
        return False
    return True


class RunLock:
    """Exclusive writer lock on a run directory: the file ``RUN/run.lock``.

    The file holds the owner's ``pid``, ``host``, ``started`` (UTC, ISO 8601) and ``argv``; it is
    created atomically (``O_CREAT | O_EXCL``) so two writers can never both hold it. A lock whose
    owner is a process of this host that no longer runs (killed, crashed) is stale and is taken
    over with a warning; a lock held by a live process, or by another host (whose processes cannot
    be checked), is refused with :class:`RunLockedError`.

    Example:
        >>> import tempfile
        >>> run = tempfile.mkdtemp()
        >>> with RunLock(run) as lock:
        ...     try:
        ...         RunLock(run).acquire()
        ...     except RunLockedError:
        ...         print("second writer refused")
        second writer refused
    """

    def __init__(self, run_dir: str | os.PathLike):
        self.path = Path(run_dir) / LOCK_NAME
        self._held = False

    def _owner_record(self) -> dict[str, Any]:
        return dict(
            pid=os.getpid(),
            host=socket.gethostname(),
            started=_dt.datetime.now(_dt.timezone.utc).isoformat(timespec="seconds"),
            argv=list(sys.argv),
        )

    def _read(self) -> dict[str, Any] | None:
        try:
            info = json.loads(self.path.read_text())
            return info if isinstance(info, dict) and "pid" in info and "host" in info else None
        except (OSError, ValueError):
            return None

    def _create(self) -> None:
        data = dumps_json(self._owner_record(), indent=2).encode()
        fd = os.open(self.path, os.O_CREAT | os.O_EXCL | os.O_WRONLY, 0o644)
        try:
            os.write(fd, data)
            os.fsync(fd)
        finally:
            os.close(fd)

    def acquire(self) -> RunLock:
        """Take the lock (or raise :class:`RunLockedError`); returns ``self``."""
        for _ in range(3):
            try:
                self._create()
                self._held = True
                return self
            except FileExistsError:
                pass
            except OSError as err:
                raise (os_error(err, self.path, "creating the run lock") or err) from err
            owner = self._read()
            if owner is None or owner.get("host") != socket.gethostname() or _pid_alive(int(owner["pid"])):
                if owner is None and not self.path.exists():
                    continue  # released between our attempt and the read
                raise RunLockedError(self._refusal(owner), os.fspath(self.path), owner)
            self._take_over(owner)
        owner = self._read()
        raise RunLockedError(self._refusal(owner), os.fspath(self.path), owner)

    def _take_over(self, stale: dict[str, Any]) -> None:
        # Rename first: of several processes taking over the same stale lock, only one moves it;
        # if what we moved is not the stale record (someone took over in between), put it back.
        aside = self.path.with_name(f"{LOCK_NAME}.stale-{os.getpid()}")
        try:
            os.rename(self.path, aside)
        except FileNotFoundError:
            return
        try:
            moved = json.loads(aside.read_text())
        except (OSError, ValueError):
            moved = None
        if moved != stale:
            try:
                os.link(aside, self.path)
            except OSError:
                pass
            aside.unlink(missing_ok=True)
            return
        aside.unlink(missing_ok=True)
        warnings.warn(
            f"taking over the stale lock {os.fspath(self.path)!r}: its owner (pid {stale.get('pid')} on "
            f"{stale.get('host')}, started {stale.get('started')}) is no longer running.",
            stacklevel=3,
        )

    def _refusal(self, owner: dict[str, Any] | None) -> str:
        where = os.fspath(self.path.parent)
        if owner is None:
            who = "an unreadable lock file"
        else:
            who = f"pid {owner.get('pid')} on host {owner.get('host')!r}, started {owner.get('started')}"
            if owner.get("host") != socket.gethostname():
                who += " (another host: its process cannot be checked from here)"
        return (
            f"run directory {where!r} is in use by another writer ({who}); lock file "
            f"{os.fspath(self.path)!r}. Wait for that run to finish or choose another --out; if you are "
            f"sure no run is writing there, delete the lock file (rm {os.fspath(self.path)})."
        )

    def release(self) -> None:
        """Remove the lock file if this object holds it."""
        if self._held:
            self._held = False
            try:
                if (self._read() or {}).get("pid") == os.getpid():
                    self.path.unlink()
            except OSError:
                pass

    def __enter__(self) -> RunLock:
        return self.acquire()

    def __exit__(self, *exc) -> None:
        self.release()


def _barrier(name: str) -> None:
    if jax.process_count() > 1:
        from jax.experimental import multihost_utils

        multihost_utils.sync_global_devices(f"jaxode_diffusion:{name}")


def claim_collectively(run_dir: str | os.PathLike, claim) -> Any:
    """Run ``claim()`` (take the run's lock, then write) on process 0 only, and agree on the outcome.

    With one process this is ``claim()``. With several, every process must call it at the same
    point: a barrier first (no process is still reading checkpoints that ``claim`` may move), then
    process 0 runs ``claim`` and broadcasts whether it succeeded; the others wait for that. On
    failure process 0 re-raises its own error and the others raise :class:`RunLockedError`
    pointing at process 0's, so no process trains or waits forever on a run it does not hold.

    Returns:
        ``claim()``'s result on process 0; ``None`` on the others.

    Example:
        >>> claim_collectively("/unused", lambda: "claimed")
        'claimed'
    """
    if jax.process_count() == 1:
        return claim()
    from jax.experimental import multihost_utils

    _barrier("claim-start")
    result, error = None, None
    if jax.process_index() == 0:
        try:
            result = claim()
        except BaseException as err:  # reported to the other processes, then re-raised
            error = err
    ok = int(multihost_utils.broadcast_one_to_all(np.int32(error is None)))
    if error is not None:
        raise error
    if not ok:
        path = os.fspath(Path(run_dir) / LOCK_NAME)
        raise RunLockedError(
            f"process 0 could not claim the run directory {os.fspath(run_dir)!r} (its error says why: another "
            "writer, a changed directory or an OS error); this process stops with it.",
            path,
            None,
        )
    return result
