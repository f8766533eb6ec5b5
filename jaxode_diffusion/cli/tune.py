"""``jaxode-diffusion tune --checkpoint DIR --nfe 10 --out tuned.json``: :func:`jaxode_diffusion.tuning.tune` on a trained run."""

from __future__ import annotations

import os
from pathlib import Path

import jax

from jaxode_diffusion.cli.args import parse_names
from jaxode_diffusion.tuning.tuner import tune

__all__ = ["register", "cmd_tune"]


def register(subparsers) -> None:
    """Add the ``tune`` subcommand to an ``argparse`` subparsers object."""
    p = subparsers.add_parser(
        "tune",
        help="find the best solver and time grid for a trained model at an NFE budget",
        description="Measure every solver x grid (and learned grids for the best few) against a tight "
                    "reference of the model on a held-back batch; save the winner as JSON for "
                    "`jaxode-diffusion sample --tuned FILE`.",
    )
    p.add_argument("--checkpoint", required=True, help="run directory written by `train`")
    p.add_argument("--nfe", type=int, required=True, help="budget of score evaluations per sample")
    p.add_argument("--out", required=True, help="output JSON file")
    p.add_argument("--batch", type=int, default=256,
                   help="size of the held-back batch that scores every candidate (512 for d >= 8 where the "
                        "model allows)")
    p.add_argument("--calib-batch", type=int, default=None,
                   help="size of the calibration batch that fits the learned grids (default: --batch)")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--learn-top", type=int, default=3, help="learn grids to the end for this many best solvers")
    p.add_argument("--learn-probe", type=int, default=0,
                   help="probe learned grids (--probe-steps iterations) for this many best solvers first; "
                        "the --learn-top best probes continue (0: off)")
    p.add_argument("--probe-steps", type=int, default=20, help="Adam iterations per probe")
    p.add_argument("--learn-steps", type=int, default=100, help="Adam iterations per learned grid")
    p.add_argument("--solvers", default=None, help="comma-separated solver specs (default: all)")
    p.add_argument("--max-seconds", type=float, default=None, help="stop trying candidates after this long")
    p.add_argument("--error-grids", action="store_true",
                   help="also score grids placed by the model's measured local error (GITS-style) for the "
                        "best solvers, and start learned grids from the best of all")
    p.add_argument("--learn-solver", action="store_true",
                   help="also fit a learned solver (per-step coefficients and times within the order family of "
                        "the best learnable solver, jaxode_diffusion.tuning.learned) and keep it if it wins on "
                        "the held-back batch")
    p.add_argument("--learn-solver-steps", type=int, default=200, help="Adam iterations of the learned solver")
    p.add_argument("--no-progress", action="store_true")
    p.set_defaults(func=cmd_tune)


def cmd_tune(args) -> int:
    from jaxode_diffusion.training import load_run
    from jaxode_diffusion.utils.outputs import ensure_output_file

    ensure_output_file(args.out, "--out")  # before any work: a bad path must not cost a tuning run
    if args.max_seconds is not None and not args.max_seconds > 0:
        raise ValueError(f"--max-seconds {args.max_seconds}: the time limit must be > 0 seconds (e.g. 60), "
                         "or leave it out for no limit.")
    if args.batch < 4:
        raise ValueError(f"--batch {args.batch}: need at least 4 samples per batch (256 is a good default).")
    calib = args.batch if args.calib_batch is None else args.calib_batch
    if calib < 4:
        raise ValueError(f"--calib-batch {calib}: need at least 4 calibration samples (default: --batch).")
    score_fn, run_cfg = load_run(args.checkpoint)
    event_shape = tuple(run_cfg["data"]["event_shape"])
    process = score_fn.process
    k_cal, k_held = jax.random.split(jax.random.PRNGKey(args.seed))
    x_cal = process.prior_sample(k_cal, (calib, *event_shape))
    x_held = process.prior_sample(k_held, (args.batch, *event_shape))
    solvers = parse_names(args.solvers) if args.solvers else None
    t = tune(score_fn, process, x_cal, nfe=args.nfe, heldout_x_init=x_held, solvers=solvers,
             learn_top=args.learn_top, learn_probe=args.learn_probe, probe_steps=args.probe_steps,
             learn_steps=args.learn_steps, max_seconds=args.max_seconds,
             error_grids=args.error_grids, progress=not args.no_progress,
             learn_solver=args.learn_solver, learn_solver_steps=args.learn_solver_steps)
    t.info = {"checkpoint": os.fspath(Path(args.checkpoint).resolve()), "seed": args.seed,
              "event_shape": list(event_shape)}
    path = t.save(args.out)
    print(t.table(top=10))
    print(f"winner: {t.solver} on {t.grid} ({t.num_steps} steps, NFE {t.nfe}), held-back RMSE "
          f"{t.heldout_error:.3e}; {len(t.candidates)} candidates in {t.seconds:.0f} s -> {path}")
    return 0
