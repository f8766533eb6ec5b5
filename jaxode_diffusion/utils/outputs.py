"""Output paths checked before any work starts, OS errors that name the path, and strict JSON.

Commands write run directories (``train --out``, ``regularity --out``, ``study --out``) and files
(``sample --out``, ``convergence --json``). A path that is in the way (a file where a directory is
wanted, or the reverse), a read-only location or a full disk should be reported at once, naming the
path and the fix, not after minutes of work and not as a bare ``FileExistsError``.
"""

from __future__ import annotations

import errno as _errno
import json
import math
import os
import re
from pathlib import Path
from typing import Any

import numpy as np

__all__ = [
    "dumps_json",
    "ensure_output_dir",
    "ensure_output_file",
    "jsonable",
    "os_error",
    "save_npy_atomic",
    "write_json_atomic",
]

# Hints by errno: what the user can do about it.
_HINTS = {
    _errno.ENOSPC: "free disk space or choose another location",
    _errno.EDQUOT: "free space in your quota or choose another location",
    _errno.EACCES: "check the permissions or choose a writable location",
    _errno.EPERM: "check the permissions or choose a writable location",
    _errno.EROFS: "the file system is read-only; choose a writable location",
    _errno.ENOTDIR: "a file is in the way where a directory is needed; choose another path",
    _errno.EEXIST: "a file is in the way; choose another path",
    _errno.EISDIR: "a directory is in the way where a file is needed; choose another path",
    _errno.ENOENT: "check the path",
}
# tensorstore (under orbax) reports OS failures as ValueError("... [os_error_code='28']").
_TS_ERRNO = re.compile(r"os_error_code='?(\d+)")


def os_error(err: BaseException, path, action: str) -> OSError | None:
    """An ``OSError`` naming ``path``, ``action`` and the fix for ``err``; ``None`` if ``err`` is no OS error.

    Recognises ``OSError`` itself and the ``ValueError`` through which tensorstore (orbax's storage
    layer) reports a failed write (``... No space left on device [os_error_code='28']``). The
    result keeps the errno and the subclass (``PermissionError`` stays a ``PermissionError``).

    Example:
        >>> import errno
        >>> e = os_error(OSError(errno.ENOSPC, "No space left on device"), "/runs/a", "writing checkpoint 20")
        >>> e.errno == errno.ENOSPC, e.filename
        (True, '/runs/a')
        >>> e.strerror
        'No space left on device while writing checkpoint 20 (free disk space or choose another location)'
    """
    if isinstance(err, OSError) and err.errno is not None:
        code, reason = err.errno, err.strerror or os.strerror(err.errno)
    else:
        m = _TS_ERRNO.search(str(err))
        if m is None:
            return None
        code = int(m.group(1))
        reason = os.strerror(code)
    hint = _HINTS.get(code)
    msg = f"{reason} while {action}" + (f" ({hint})" if hint else "")
    # OSError(errno, strerror, filename) picks the subclass (PermissionError, ...) from errno.
    return OSError(code, msg, os.fspath(path))


def ensure_output_dir(path, argname: str = "--out") -> Path:
    """Create directory ``path`` (with parents) or raise a clear error before any work starts.

    Raises:
        ValueError: if ``path`` is empty or blank (it would write into the current directory),
            or it (or one of its parents) is an existing file.
        PermissionError / OSError: if the directory cannot be created or written (named, with a fix).

    Example:
        >>> import tempfile, os
        >>> d = ensure_output_dir(os.path.join(tempfile.mkdtemp(), "run"), "--out")
        >>> d.is_dir()
        True
    """
    _check_nonblank(path, argname, "runs/my_run")
    p = Path(path)
    if p.exists() and not p.is_dir():
        raise ValueError(
            f"{argname} {os.fspath(path)!r} is an existing file, not a directory; choose a directory path "
            "(or remove the file)."
        )
    _make_dir(p, path, argname)
    return p


def _check_nonblank(path, argname: str, example: str) -> None:
    # Path("") is Path("."): an empty --out would silently write into the current directory.
    text = os.fspath(path) if isinstance(path, (str, os.PathLike)) else path
    if not isinstance(text, (str, bytes)):
        raise ValueError(f"{argname} must be a path (a string), got {path!r}.")
    if not text.strip():
        raise ValueError(
            f"{argname} is empty ({path!r}); give a path, for example {argname.split()[-1].strip('()')} {example}."
        )


def _make_dir(p: Path, given, argname: str) -> None:
    for parent in (p.absolute(), *p.absolute().parents):
        if parent.exists():
            if not parent.is_dir():
                raise ValueError(
                    f"{argname} {os.fspath(given)!r}: {os.fspath(parent)!r} is a file, not a "
                    "directory; choose another path."
                )
            break
    try:
        p.mkdir(parents=True, exist_ok=True)
    except OSError as err:
        raise (os_error(err, p, f"creating the directory for {argname}") or err) from err
    if not os.access(p, os.W_OK | os.X_OK):
        raise PermissionError(
            _errno.EACCES, f"the directory for {argname} is not writable (check the permissions or choose "
            "another location)", os.fspath(p),
        )


def ensure_output_file(path, argname: str = "--out") -> Path:
    """Check that file ``path`` can be written (creating its parent directory) before any work starts.

    Raises:
        ValueError: if ``path`` is empty or blank, an existing directory, or a parent is a file.
        PermissionError / OSError: if the parent cannot be created or written.

    Example:
        >>> import tempfile, os
        >>> ensure_output_file(os.path.join(tempfile.mkdtemp(), "sub", "x.npy")).parent.is_dir()
        True
    """
    _check_nonblank(path, argname, "samples.npy")
    p = Path(path)
    if p.is_dir():
        raise ValueError(
            f"{argname} {os.fspath(path)!r} is a directory; give a file name (for example "
            f"{os.fspath(p / 'out.npy')!r})."
        )
    _make_dir(p.parent, path, argname)
    return p


def jsonable(obj: Any) -> Any:
    """``obj`` as plain JSON values: the one place the package decides how numbers reach JSON.

    Dicts (keys made strings), lists and tuples are converted recursively; NumPy and JAX scalars
    and arrays become Python numbers and (nested) lists; **a non-finite float (NaN, +-inf) becomes
    ``None``**, written ``null``, because JSON has no such numbers and strict parsers reject the bare
    ``NaN`` token. Dataclasses are converted through ``dataclasses.asdict``; other objects are left
    for ``json`` to accept or refuse.

    Example:
        >>> import numpy as np
        >>> jsonable({"a": np.float32(0.5), "b": [float("nan"), np.arange(2)], 3: np.bool_(True)})
        {'a': 0.5, 'b': [None, [0, 1]], '3': True}
    """
    import dataclasses

    if isinstance(obj, dict):
        return {str(k): jsonable(v) for k, v in obj.items()}
    if isinstance(obj, (list, tuple)):
        return [jsonable(v) for v in obj]
    if isinstance(obj, (bool, np.bool_)):
        return bool(obj)
    if isinstance(obj, (int, np.integer)):
        return int(obj)
    if isinstance(obj, (float, np.floating)):
        v = float(obj)
        return v if math.isfinite(v) else None
    if isinstance(obj, np.ndarray) or type(obj).__module__.startswith("jax"):
        arr = np.asarray(obj)
        return jsonable(arr.item() if arr.ndim == 0 else arr.tolist())
    if dataclasses.is_dataclass(obj) and not isinstance(obj, type):
        return jsonable(dataclasses.asdict(obj))
    return obj


def dumps_json(obj: Any, *, indent: int | None = 2, sort_keys: bool = False) -> str:
    """Strict JSON text of ``obj`` after :func:`jsonable` (``allow_nan=False``: never a bare ``NaN``).

    Example:
        >>> dumps_json({"x": float("inf")}, indent=None)
        '{"x": null}'
    """
    return json.dumps(jsonable(obj), indent=indent, sort_keys=sort_keys, allow_nan=False)


def write_json_atomic(path: str | os.PathLike, obj: Any, *, sort_keys: bool = True, parents: bool = False) -> Path:
    """Write JSON to ``path`` through a temporary file and ``os.replace`` (atomic on POSIX); returns the path.

    A reader never sees a half-written file: it finds either the old content or the new. The text is
    strict JSON from :func:`dumps_json` (non-finite numbers as ``null``).
    ``sort_keys=False`` keeps the dict's own key order (a saved grid keeps its field order);
    ``parents=True`` creates missing parent directories (the ``save`` methods of saved samplers).

    Raises:
        OSError: naming ``path`` if it cannot be written (disk full, permissions).

    Example:
        >>> import tempfile, os, json
        >>> p = os.path.join(tempfile.mkdtemp(), "sub", "c.json")
        >>> _ = write_json_atomic(p, {"a": 1}, parents=True); json.load(open(p))
        {'a': 1}
    """
    path = Path(path)
    if parents:
        path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(path.name + ".tmp")
    try:
        tmp.write_text(dumps_json(obj, indent=2, sort_keys=sort_keys))
        os.replace(tmp, path)
    except OSError as err:
        tmp.unlink(missing_ok=True) if tmp.parent.is_dir() else None
        raise (os_error(err, path, f"writing {path.name}") or err) from err
    return path


def save_npy_atomic(path: str | os.PathLike, array) -> Path:
    """Write ``array`` to ``path`` with ``np.save`` through a temporary file and ``os.replace``.

    Guarantees: ``path`` holds either its previous content or the complete new array, never a
    partial or 0-byte file; on any failure (disk full, permissions) the temporary file is removed.
    The bytes are those of ``np.save(path, array)`` (``path`` is used as given: no ``.npy`` is added).

    Returns:
        ``path`` as a ``Path``.

    Raises:
        OSError: naming ``path``, the cause and the fix when it cannot be written.

    Example:
        >>> import tempfile, os, numpy as np
        >>> p = save_npy_atomic(os.path.join(tempfile.mkdtemp(), "x.npy"), np.arange(3))
        >>> np.load(p).tolist(), sorted(os.listdir(p.parent))
        ([0, 1, 2], ['x.npy'])
    """
    path = Path(path)
    tmp = path.with_name(f".{path.name}.tmp-{os.getpid()}")
    try:
        with open(tmp, "wb") as f:
            np.save(f, np.asarray(array), allow_pickle=False)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except BaseException as err:
        try:
            tmp.unlink(missing_ok=True)
        except OSError:
            pass
        if isinstance(err, OSError):
            raise (os_error(err, path, f"writing {path.name}") or err) from err
        raise
    return path
