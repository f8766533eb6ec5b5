"""The ``jaxode-diffusion`` command.

Subcommands are contributed by modules with a ``register(subparsers)`` function:

* ``convergence`` (this module): empirical orders with exact scores, printed as a table;
* ``train`` / ``sample`` (:mod:`jaxode_diffusion.cli.models`);
* ``regularity`` (:mod:`jaxode_diffusion.cli.regularity`);
* ``study`` (:mod:`jaxode_diffusion.study`): the whole study and its report;
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
import json
import os
import re
import sys
import traceback

PROG = "jaxode-diffusion"
EXIT_USER_ERROR = 2
EXIT_INTERRUPTED = 130

_SUBCOMMAND_MODULES = (
    "jaxode_diffusion.cli.app",
    "jaxode_diffusion.cli.models",
    "jaxode_diffusion.cli.regularity",
    "jaxode_diffusion.cli.study",
    "jaxode_diffusion.cli.tune",
    "jaxode_diffusion.cli.likelihood",
)


def _int_list(value: str) -> list[int]:
    """argparse type: ``"16,32,64"`` -> ``[16, 32, 64]`` (each >= 1)."""
    try:
        out = [int(v) for v in value.split(",")]
    except ValueError:
        raise argparse.ArgumentTypeError(
            f"expected comma-separated integers such as 16,32,64; got {value!r}."
        ) from None
    if not out or min(out) < 1:
        raise argparse.ArgumentTypeError(f"step counts must be integers >= 1; got {value!r}.")
    return out


def positive_int(value: str) -> int:
    """argparse type: an integer >= 1 (``--batch 0`` is refused by the parser, naming the flag).

    Example:
        >>> positive_int("3")
        3
    """
    try:
        out = int(value)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected an integer >= 1; got {value!r}.") from None
    if out < 1:
        raise argparse.ArgumentTypeError(f"must be an integer >= 1; got {value!r}.")
    return out


def _convergence(args) -> int:
    import jax

    _check_convergence_args(args)
    jax.config.update("jax_enable_x64", True)
    from jaxode_diffusion.analysis.convergence import convergence_study
    from jaxode_diffusion.analysis.diffrax_drivers import reference_solve
    from jaxode_diffusion.processes import get_process
    from jaxode_diffusion.sampling.core import get_solver
    from jaxode_diffusion.models.mixture import GaussianMixture

    process = get_process(args.process)
    gm = GaussianMixture.random(jax.random.PRNGKey(args.seed), args.components, args.dim,
                                scale=1.0, min_var=0.2, max_var=0.6)
    score_fn = gm.score_fn(process)
    x0 = gm.sample_marginal(jax.random.PRNGKey(args.seed + 1), args.batch, process, process.default_t_start)
    t_end = args.t_end if args.t_end is not None else process.default_t_end
    ref = reference_solve(score_fn, process, x0, t_end=t_end)
    steps = args.steps
    rows = []
    print(f"# Empirical orders: {args.dim}-D Gaussian mixture ({args.components} components), "
          f"process={args.process}, grid={args.grid}, float64, exact score")
    print("| solver | design order | steps | errors (RMSE vs diffrax Dopri8 rtol=1e-11) | fitted order |")
    print("|---|---|---|---|---|")
    for spec in args.solvers.split(","):
        solver = get_solver(spec)
        mult = max(1, 2 ** (4 - solver.order)) if args.scale_steps else 1
        counts = [s * mult for s in steps]
        r = convergence_study(score_fn, process, x0, solver, counts, grid=args.grid, t_end=t_end, reference=ref)
        rows.append(r.to_dict())
        errs = ", ".join(f"{e:.2e}" for e in r.errors)
        print(f"| {spec} | {r.design_order} | {counts} | {errs} | {r.order:.2f} |", flush=True)
    if args.json:
        with open(args.json, "w") as fh:
            json.dump(rows, fh, indent=2)
    return 0


def _check_convergence_args(args) -> None:
    # Before the (minutes-long) study: a --json path that cannot be written is reported now.
    if args.json:
        from jaxode_diffusion.utils.outputs import ensure_output_file

        ensure_output_file(args.json, "--json")


def register(subparsers) -> None:
    p = subparsers.add_parser(
        "convergence",
        help="empirical convergence orders of solvers on a Gaussian mixture with exact score",
    )
    p.add_argument("--solvers", default="x-t:euler,x-t:heun,x-t:kutta3,x-t:rk4,x0-lambda:heun,"
                   "x0-lambda:rk4,eps-rho:rk4,ou:rk4,ou-exp:rk4")
    p.add_argument("--steps", type=_int_list, default="16,32,64", help="comma-separated step counts")
    p.add_argument("--scale-steps", action=argparse.BooleanOptionalAction, default=True,
                   help="multiply step counts by 2^(4-order) so low orders reach their asymptotic regime")
    p.add_argument("--dim", type=positive_int, default=2)
    p.add_argument("--components", type=positive_int, default=3)
    p.add_argument("--batch", type=positive_int, default=64)
    p.add_argument("--process", default="vp_linear")
    p.add_argument("--grid", default="log_snr")
    p.add_argument("--t-end", type=float, default=None)
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--json", default=None, help="also write the rows as JSON here")
    p.set_defaults(func=_convergence)


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
