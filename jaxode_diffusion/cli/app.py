"""The ``jaxode-diffusion`` command.

This module holds the entry point :func:`main`, the error handler and the list of subcommand
modules; each subcommand lives in its own module with a ``register(subparsers)`` function
(argument types: :mod:`jaxode_diffusion.cli.args`):

* ``convergence`` (:mod:`jaxode_diffusion.cli.convergence`): empirical orders with exact scores;
* ``train`` / ``sample`` (:mod:`jaxode_diffusion.cli.models`);
* ``regularity`` (:mod:`jaxode_diffusion.cli.regularity`);
* ``study`` (:mod:`jaxode_diffusion.cli.study`): the whole study and its report;
* ``tune`` (:mod:`jaxode_diffusion.cli.tune`): the best solver and grid for a trained model;
* ``likelihood`` (:mod:`jaxode_diffusion.cli.likelihood`): log-likelihood / bits per dim of data.

Errors: every subcommand runs under one handler (:func:`run_command`). A user error -- a bad value
(``ValueError``), a path problem (``OSError``: missing, in the way, no permission, disk full) or
one of the package's own errors (a corrupt checkpoint, a locked run directory, diverged training,
a non-finite sample) -- prints one line ``jaxode-diffusion: error: ...`` to stderr and exits with
status 2, without a traceback; ``--debug`` (anywhere on the command line) shows the traceback
instead. Anything else is a bug and keeps its traceback.
"""

from __future__ import annotations

import argparse
import importlib
import os
import re
import sys
import traceback

PROG = "jaxode-diffusion"
EXIT_USER_ERROR = 2
EXIT_INTERRUPTED = 130

_SUBCOMMAND_MODULES = (
    "jaxode_diffusion.cli.convergence",
    "jaxode_diffusion.cli.models",
    "jaxode_diffusion.cli.regularity",
    "jaxode_diffusion.cli.study",
    "jaxode_diffusion.cli.tune",
    "jaxode_diffusion.cli.likelihood",
)


_DEBUG_HELP = "on an error, show the full traceback instead of one line"


def build_parser() -> argparse.ArgumentParser:
    """The ``jaxode-diffusion`` argument parser with every subcommand (and ``--debug`` on each)."""
    parser = argparse.ArgumentParser(
        prog=PROG,
        description="High-order ODE samplers for diffusion models: study, train, sample, measure.",
    )
    parser.add_argument("--debug", action="store_true", help=_DEBUG_HELP)
    sub = parser.add_subparsers(dest="command", required=True)
    for mod in _SUBCOMMAND_MODULES:
        importlib.import_module(mod).register(sub)
    add_debug_flag(sub)
    return parser


def add_debug_flag(subparsers) -> None:
    """Accept ``--debug`` after the subcommand too (``jaxode-diffusion train ... --debug``)."""
    for p in subparsers.choices.values():
        if not any("--debug" in a.option_strings for a in p._actions):
            p.add_argument("--debug", action="store_true", default=argparse.SUPPRESS, help=_DEBUG_HELP)


_EQX_MESSAGE = re.compile(r"EquinoxRuntimeError: (.*?)(?:\n\s*\n|\n-{5,}|$)", re.S)


def _package_error(err: BaseException) -> bool:
    return any(c.__module__.split(".")[0] == "jaxode_diffusion" for c in type(err).__mro__)


def is_user_error(err: BaseException) -> bool:
    """Whether ``err`` is a user's mistake or an environment fault (one line, exit 2) rather than a bug.

    User errors: ``ValueError`` (bad values, corrupt checkpoints), ``OSError`` (missing paths,
    permissions, disk full), every exception class defined in this package (locked run directory,
    diverged training, non-finite samples), and checks raised inside jitted code through
    ``equinox.error_if``.

    Example:
        >>> is_user_error(ValueError("steps must be >= 1")), is_user_error(KeyError("x"))
        (True, False)
    """
    if isinstance(err, (ValueError, OSError)) or _package_error(err):
        return True
    return isinstance(err, RuntimeError) and _EQX_MESSAGE.search(str(err)) is not None


def format_error(err: BaseException) -> str:
    """The one-line message printed for a user error (no traceback, whitespace collapsed).

    ``OSError`` is shown as ``<reason>: '<path>'`` (plus the second path of a rename); checks
    raised under jit show the check's own message.

    Example:
        >>> import errno
        >>> format_error(PermissionError(errno.EACCES, "Permission denied", "/root/x"))
        "Permission denied: '/root/x'"
    """
    if isinstance(err, OSError) and err.strerror:
        msg = err.strerror
        if err.filename is not None:
            msg += f": {os.fspath(err.filename)!r}"
        if getattr(err, "filename2", None) is not None:
            msg += f" -> {os.fspath(err.filename2)!r}"
    else:
        m = _EQX_MESSAGE.search(str(err)) if isinstance(err, RuntimeError) else None
        msg = m.group(1) if m else str(err)
        if isinstance(err, KeyError) and len(err.args) == 1:
            msg = str(err.args[0])
    msg = " ".join(msg.split()) or type(err).__name__
    return msg


def run_command(func, args, *, debug: bool = False) -> int:
    """Run a subcommand's ``func(args)`` under the CLI's error policy; returns the exit status.

    User errors (:func:`is_user_error`) print ``jaxode-diffusion: error: <one line>`` to stderr
    and return 2; Ctrl-C returns 130; with ``debug=True`` errors propagate with their traceback;
    any other exception (a bug) propagates too.

    Example:
        >>> import argparse
        >>> def bad(args):
        ...     raise ValueError("--steps must be >= 1, got 0.")
        >>> run_command(bad, argparse.Namespace())
        2
    """
    try:
        rc = func(args)
    except KeyboardInterrupt:
        if debug:
            raise
        print(f"{PROG}: interrupted", file=sys.stderr)
        return EXIT_INTERRUPTED
    except Exception as err:
        if debug or not is_user_error(err):
            raise
        line = format_error(err)
        if not _package_error(err) and not _raised_in_package(err) and not isinstance(err, OSError):
            line += " (rerun with --debug for the traceback)"
        print(f"{PROG}: error: {line}", file=sys.stderr)
        return EXIT_USER_ERROR
    return rc if isinstance(rc, int) else 0


def sub_main(register, argv=None, *, prog: str = PROG, description: str | None = None) -> int:
    """Entry point of a module that registers its own subcommands (``python -m
    jaxode_diffusion.cli.models train ...``): parse with just those, run with the same error
    handling and ``--debug`` flag as :func:`main`; returns the exit status."""
    parser = argparse.ArgumentParser(prog=prog, description=description)
    parser.add_argument("--debug", action="store_true", help="show the traceback of an error")
    sub = parser.add_subparsers(dest="command", required=True)
    register(sub)
    add_debug_flag(sub)
    args = parser.parse_args(argv)
    return run_command(args.func, args, debug=bool(getattr(args, "debug", False)))


def _raised_in_package(err: BaseException) -> bool:
    # Messages raised by this package's own checks are written for users; an error raised deep in
    # a dependency may need its traceback, so the one line says how to get it.
    frames = traceback.extract_tb(err.__traceback__)
    return bool(frames) and f"{os.sep}jaxode_diffusion{os.sep}" in frames[-1].filename


def main(argv=None) -> int:
    """``jaxode-diffusion [--debug] <command> ...``; returns the exit status (2 on a user error).

    Example:
        >>> main(["sample", "--checkpoint", "/no/such/run", "--solver", "rk4", "--steps", "2",
        ...       "--num-samples", "2", "--out", "/tmp/samples.npy"])  # one line on stderr
        2
    """
    args = build_parser().parse_args(argv)
    debug = bool(getattr(args, "debug", False))
    if not debug:
        _quiet_background_loggers()
    return run_command(args.func, args, debug=debug)


def _quiet_background_loggers() -> None:
    # orbax logs a failed background write (absl ERROR, with a traceback) and asyncio logs its
    # never-retrieved future, both repeating the error the handler reports in one line.
    import logging

    for name in ("absl", "asyncio"):
        logging.getLogger(name).setLevel(logging.CRITICAL)


if __name__ == "__main__":
    sys.exit(main())
