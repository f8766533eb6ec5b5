"""``jaxode-diffusion study``: run the whole study and write its report (see :mod:`jaxode_diffusion.study`)."""

from __future__ import annotations

from pathlib import Path

from jaxode_diffusion.cli.args import parse_int_tuple, parse_names
from jaxode_diffusion.study.run import SECTIONS, make_config, run_study

__all__ = ["register"]


def register(subparsers) -> None:
    """Add the ``study`` subcommand to an ``argparse`` subparsers object."""
    p = subparsers.add_parser("study", help="run the whole study and write report.md, figures and metrics.json")
    p.add_argument("--out", default="study_out", help="output directory")
    g = p.add_mutually_exclusive_group()
    g.add_argument("--quick", action="store_true", help="about 2.5 minutes on 2 idle CPU cores")
    g.add_argument("--full", action="store_true", help="sized for a GPU")
    p.add_argument("--seed", type=int, default=None)
    p.add_argument("--process", default=None, help="built-in process name (default vp_linear)")
    p.add_argument("--dim", type=int, default=None, help="dimension of the convergence/score-floor target")
    p.add_argument("--no-learned", action="store_true", help="skip training a model")
    p.add_argument("--no-regularity", action="store_true", help="skip regularity profiles")
    p.add_argument("--only", default=None, metavar="SECTION[,SECTION]",
                   help="run only these sections (comma-separated): " + ", ".join(SECTIONS))
    p.add_argument("--dims", default=None, metavar="D[,D]",
                   help="dimensions of the dimension section (comma-separated), e.g. 2,4,8,16,32,64,128")
    p.add_argument("--tv-samples", type=int, default=None, help="samples per exact-density TV")
    p.set_defaults(func=_cli)


def _cli(args) -> int:
    from jaxode_diffusion.utils.outputs import ensure_output_dir

    ensure_output_dir(args.out, "--out")  # a file in the way is reported before the study starts
    preset = "quick" if args.quick else "full" if args.full else "default"
    only = tuple(parse_names(args.only)) if args.only else None
    dims = parse_int_tuple(args.dims, "--dims") if args.dims else None
    cfg = make_config(preset, out=args.out, seed=args.seed, process=args.process, dim=args.dim, only=only,
                      dims=dims, tv_samples=args.tv_samples)
    if args.no_learned:
        cfg.learned = False
    if args.no_regularity:
        cfg.regularity = False
    cmd = "jaxode-diffusion study --out " + args.out + (" --quick" if args.quick else " --full" if args.full else "")
    for flag, val in (("--process", args.process), ("--seed", args.seed), ("--dim", args.dim), ("--only", args.only),
                      ("--dims", args.dims), ("--tv-samples", args.tv_samples)):
        if val is not None:
            cmd += f" {flag} {val}"
    cmd += " --no-learned" * bool(args.no_learned) + " --no-regularity" * bool(args.no_regularity)
    cfg.extras["command"] = cmd
    metrics = run_study(cfg)
    print(f"report: {Path(args.out) / 'report.md'}  (total {metrics['timings']['total']:.0f} s)")
    return 0
