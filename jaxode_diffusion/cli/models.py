"""``train`` and ``sample`` subcommands of ``jaxode-diffusion``: learn a score model, then sample it.

Usage::

    jaxode-diffusion train --data two_moons --steps 2000 --out runs/moons
    jaxode-diffusion train --data two_moons --steps 4000 --out runs/moons --resume
    jaxode-diffusion sample --checkpoint runs/moons --num-samples 2000 --out moons.npy
        # measured defaults (unipc_bh2_2, 10 steps, its grid); also writes moons.png
    jaxode-diffusion sample --checkpoint runs/moons --solver x0-lambda:rk4 \\
        --steps 5 --num-samples 2000 --out moons.npy       # grid: log_snr, the best for this solver
    jaxode-diffusion train --data digits --steps 1200 --out runs/cdigits --conditional
    jaxode-diffusion sample --checkpoint runs/cdigits --solver dpmpp_2m --steps 10 --grid log_snr \
        --num-samples 64 --class 3 --guidance 2 --out three.npy    # classifier-free guidance

Errors follow the package CLI's policy (:func:`jaxode_diffusion.cli.app.run_command`): one line
``jaxode-diffusion: error: ...`` and exit status 2 (``--debug`` for the traceback).
"""

from __future__ import annotations

import os
import sys
from pathlib import Path

from jaxode_diffusion.cli.args import (
    DATA_CHOICES,
    data_arg,
    finite_float,
    nonneg_int,
    positive_float,
    positive_int,
    probability,
)

__all__ = ["register", "main", "cmd_train", "cmd_sample"]

#: ``--grid auto``: the pilot may cost this share of the sampling asked for, or PILOT_FLOOR_SECONDS.
PILOT_SHARE = 1.0
PILOT_FLOOR_SECONDS = 3.0
#: Pilot draws come from this key (independent of ``--seed``); at most PILOT_DRAWS of them.
PILOT_KEY = 20261201
PILOT_DRAWS = 64
PILOT_MIN_DRAWS = 16

def register(subparsers) -> None:
    """Add the ``train`` and ``sample`` subcommands to an ``argparse`` subparsers object."""
    _add_train_parser(subparsers)
    _add_sample_parser(subparsers)


def _add_train_parser(subparsers) -> None:
    from jaxode_diffusion.training import TrainConfig

    d = TrainConfig()
    p = subparsers.add_parser(
        "train",
        help="train a score model (DSM) with checkpoints",
        description="Train a score model by denoising score matching.",
    )
    p.add_argument("--data", type=data_arg, required=True, help=DATA_CHOICES)
    p.add_argument("--steps", type=positive_int, required=True, help="total optimisation steps")
    p.add_argument("--out", required=True, help="run directory (checkpoints + config.json)")
    p.add_argument("--resume", action="store_true", help="continue from the latest checkpoint in --out")
    p.add_argument(
        "--verify-checkpoint", choices=["strict", "warn", "off"], default="strict",
        help="with --resume: strict (default) skips a checkpoint whose checksum is missing or wrong; warn "
        "resumes from one without a checksum (older versions) with a warning; off skips the check",
    )
    p.add_argument("--batch-size", type=positive_int, default=d.batch_size)
    p.add_argument("--lr", type=positive_float, default=d.lr, help="peak learning rate (warmup + cosine decay)")
    p.add_argument("--seed", type=nonneg_int, default=d.seed)
    p.add_argument(
        "--process", default=d.process, help="vp_linear, vp_cosine, subvp, ve, edm, rectified_flow"
    )
    p.add_argument("--prediction", default=d.prediction, help="eps, x0, v, flow or score")
    p.add_argument("--eval-every", type=nonneg_int, default=d.eval_every, help="held-out loss interval (steps)")
    p.add_argument("--ckpt-every", type=nonneg_int, default=d.ckpt_every, help="checkpoint interval (steps)")
    p.add_argument(
        "--conditional", action="store_true",
        help="class-conditional model on the data's labels (digits), for `sample --class K --guidance W`",
    )
    p.add_argument(
        "--p-uncond", type=probability, default=d.p_uncond,
        help="label-dropout probability of --conditional training (learns the null class)",
    )
    p.add_argument(
        "--gaussian-skip", action="store_true",
        help="the network learns the residual of the training data's Gaussian-fit denoiser "
        "(TrainConfig.gaussian_skip; event size d <= 8192)",
    )
    p.set_defaults(func=cmd_train)


def _add_sample_parser(subparsers) -> None:
    s = subparsers.add_parser(
        "sample",
        help="sample a trained model with an ODE solver",
        description="Sample a trained score model; writes FILE.npy and FILE.png.",
    )
    s.add_argument("--checkpoint", required=True, help="run directory written by `train`")
    s.add_argument(
        "--solver", default=None,
        help='e.g. "unipc_bh2_2", "dpmpp_2m", "x0-lambda:rk4", "rk4" (default: the measured best, '
        'jaxode_diffusion.sampling.defaults.DEFAULT_SOLVER; not with --tuned)',
    )
    s.add_argument(
        "--steps", type=positive_int, default=None,
        help="solver steps, NFE = steps x stages (default 10; not with --tuned)",
    )
    s.add_argument("--tuned", default=None, help="a JSON file from `jaxode-diffusion tune`: its solver and times")
    s.add_argument(
        "--verify-checkpoint", choices=["strict", "warn", "off"], default="strict",
        help="strict (default) refuses a checkpoint whose checksum is missing or wrong; warn loads one without a "
        "checksum (older versions) with a warning; off skips the check",
    )
    s.add_argument("--num-samples", type=positive_int, required=True)
    s.add_argument("--out", required=True, help="output .npy file (a .png is written beside it)")
    s.add_argument("--seed", type=nonneg_int, default=0)
    s.add_argument(
        "--grid", default=None,
        help="uniform, log_snr, edm, quadratic; auto (the default): the table's grid unless another named grid "
        "is better beyond the pilot's uncertainty (energy distance and RMSE to a tight solve, on up to 64 pilot "
        "draws; jaxode_diffusion.tuning.autogrid.choose_grid), cached in the run directory; the pilot is sized "
        "to cost at most the sampling asked for (or 3 s) and skipped, with a note, when even the smallest does "
        "not fit; table: the grid that measured best across benchmark models "
        "(jaxode_diffusion.sampling.defaults.default_grid_for), no pilot. Not with --tuned",
    )
    s.add_argument(
        "--error-grids", action="store_true",
        help="with --grid auto: also rank grids placed by the model's measured local error "
        "(jaxode_diffusion.tuning.error_grids, GITS-style; about a minute more per model, solver and steps on a CPU, "
        "cached like the named choice; measurements: benchmarks/README.md)",
    )
    s.add_argument(
        "--class", dest="class_label", type=nonneg_int, default=None,
        help="class K to sample from a model trained with --conditional (default: unconditional)",
    )
    s.add_argument(
        "--guidance", type=finite_float, default=None,
        help="classifier-free guidance scale w: s(null) + w (s(K) - s(null)); 1 = none (the default)",
    )
    s.set_defaults(func=cmd_sample)


def cmd_train(args) -> int:
    from jaxode_diffusion.training import TrainConfig, train

    config = TrainConfig(
        data=args.data,
        steps=args.steps,
        out_dir=args.out,
        resume=args.resume,
        batch_size=args.batch_size,
        lr=args.lr,
        seed=args.seed,
        process=args.process,
        prediction=args.prediction,
        eval_every=args.eval_every,
        ckpt_every=args.ckpt_every,
        conditional=bool(getattr(args, "conditional", False)),
        p_uncond=getattr(args, "p_uncond", TrainConfig.p_uncond),
        gaussian_skip=bool(getattr(args, "gaussian_skip", False)),
    )
    result = train(config, verify=getattr(args, "verify_checkpoint", "strict"))
    last = [h for h in result.history if "heldout_loss" in h]
    msg = f"trained {result.step} steps -> {os.fspath(Path(args.out))}"
    if last:
        msg += f" (held-out loss {last[-1]['heldout_loss']:.4f})"
    print(msg)
    return 0


def cmd_sample(args) -> int:
    import jax
    import numpy as np

    from jaxode_diffusion.analysis.plotting import save_png
    from jaxode_diffusion.training.data import unnormalize
    from jaxode_diffusion.sampling.defaults import DEFAULT_NUM_STEPS, DEFAULT_SOLVER
    from jaxode_diffusion.utils.outputs import ensure_output_file, save_npy_atomic
    from jaxode_diffusion.sampling.core import sample
    from jaxode_diffusion.training import load_run

    if getattr(args, "tuned", None) is not None:
        given = [f for f, v in (("--solver", args.solver), ("--steps", args.steps), ("--grid", args.grid),
                                ("--error-grids", getattr(args, "error_grids", False) or None)) if v is not None]
        if given:
            raise ValueError(
                f"--tuned {args.tuned} fixes the solver, the steps and the grid; drop {', '.join(given)}."
            )
    else:
        args.solver = DEFAULT_SOLVER if args.solver is None else args.solver
        args.steps = DEFAULT_NUM_STEPS if args.steps is None else args.steps
        # args.grid None = "auto": measured on the model once it is loaded (_measured_grid).
        if getattr(args, "error_grids", False) and args.grid not in (None, "auto"):
            raise ValueError(f"--error-grids ranks error grids with the named ones for --grid auto; drop it or "
                             f"--grid {args.grid}.")
    if args.num_samples < 1 or (args.steps is not None and args.steps < 1):
        raise ValueError(f"--num-samples and --steps must be >= 1, got {args.num_samples}, {args.steps}.")
    ensure_output_file(args.out, "--out")  # before loading and sampling: a bad --out is reported at once
    out = ensure_output_file(_npy_path(args.out), "--out")
    score_fn, run_cfg = load_run(args.checkpoint, verify=getattr(args, "verify_checkpoint", "strict"))
    meta = run_cfg["data"]
    event_shape = tuple(meta["event_shape"])
    kind = "vector" if len(event_shape) == 1 else "image"
    process = score_fn.process
    score_fn, cond_kw = _class_guidance(score_fn, args)
    x_init = process.prior_sample(jax.random.key(args.seed), (args.num_samples, *event_shape))
    if getattr(args, "tuned", None) is not None:
        from jaxode_diffusion.tuning.tuner import load_tuned

        tuned = load_tuned(args.tuned, process=process)  # the same process, or a ValueError
        x = tuned.sample(score_fn, process, x_init, **cond_kw)  # its learned solver, if one won
    else:
        grid = args.grid
        if grid in (None, "auto"):
            grid = _measured_grid(score_fn, process, event_shape, args, run_cfg, cond_kw)
        elif grid == "table":
            grid = None  # sample(): default_grid_for(solver, process)
        x = sample(score_fn, process, x_init, solver=args.solver, num_steps=args.steps, grid=grid, **cond_kw)
    x = unnormalize(np.asarray(x), meta)
    save_npy_atomic(out, x)  # a full disk leaves no partial file
    png = out.with_suffix(".png")
    save_png(x, png, kind, meta)
    print(f"wrote {out} {x.shape} and {png}")
    return 0


def _measured_grid(score_fn, process, event_shape, args, run_cfg, cond_kw):
    """``--grid auto``: the cached choice, else :func:`~jaxode_diffusion.tuning.autogrid.choose_grid` on a
    pilot sized by :func:`~jaxode_diffusion.tuning.autogrid.plan_pilot` (draws from a fixed key,
    independent of ``--seed``), else the table's grid when no pilot fits the budget. A measured choice is
    cached per solver, steps, class, guidance, checkpoint step and ``--error-grids`` in
    ``CHECKPOINT/grid_choices.json`` (written atomically; a read-only run directory is not an error).
    Returns a grid name, or the times of a chosen error grid."""
    import numpy as np

    from jaxode_diffusion.utils.outputs import write_json_atomic

    with_error = bool(getattr(args, "error_grids", False))
    key = "|".join(str(v) for v in (args.solver, args.steps, getattr(args, "class_label", None),
                                     getattr(args, "guidance", None), run_cfg.get("step")))
    key += "|error_grids" if with_error else ""
    path = Path(args.checkpoint) / "grid_choices.json"
    cache, found = _cached_grid(path, key, args.steps, with_error)
    if found is not None:
        return found
    x_pilot, pilot_kw, plan = _pilot_plan(score_fn, process, event_shape, args, cond_kw, with_error)
    if plan is not None and not plan.run:
        return None  # sample(): default_grid_for(solver, process); plan_pilot's message said so
    choice = _run_pilot(score_fn, process, x_pilot, args, pilot_kw, plan, with_error)
    print(choice.summary())
    cache[key] = choice.to_json()
    try:
        write_json_atomic(path, cache)
    except OSError as e:  # a read-only run directory: measure again next time
        print(f"note: could not cache the grid choice in {path}: {e}")
    return choice.grid if choice.ts is None else np.asarray(choice.ts, np.float64)


def _cached_grid(path, key, steps, with_error):
    """``(cache dict, cached grid or None)`` from ``grid_choices.json`` (unreadable: empty)."""
    import json

    import numpy as np

    from jaxode_diffusion.sampling.grids import GRID_NAMES

    try:
        cache = json.loads(path.read_text()) if path.exists() else {}
    except (OSError, ValueError):
        cache = {}
    cache = cache if isinstance(cache, dict) else {}
    cached = cache.get(key)
    if isinstance(cached, dict) and cached.get("grid") in GRID_NAMES:
        print(f"grid {cached['grid']} (measured earlier for this model, solver and steps; {path})")
        return cache, cached["grid"]
    if with_error and isinstance(cached, dict) and isinstance(cached.get("ts"), list) \
            and len(cached["ts"]) == steps + 1:
        print(f"grid {cached.get('grid')} (an error grid measured earlier for this model, solver and steps; {path})")
        return cache, np.asarray(cached["ts"], np.float64)
    return cache, None


def _pilot_plan(score_fn, process, event_shape, args, cond_kw, with_error):
    """``(pilot draws, their kwargs, plan)``: the pilot sized to the sampling asked for by one measured
    score evaluation; ``--error-grids`` (asked for explicitly) keeps the full 64-draw pilot, plan ``None``.
    Prints what will be done, or why the table's grid is used instead."""
    import jax

    from jaxode_diffusion.sampling.defaults import default_grid_for
    from jaxode_diffusion.sampling.grids import GRID_NAMES
    from jaxode_diffusion.tuning import autogrid

    x_pilot = process.prior_sample(jax.random.key(PILOT_KEY), (PILOT_DRAWS, *event_shape))
    pilot_kw = {}
    if "cond" in cond_kw:  # the same class for every pilot draw
        pilot_kw["cond"] = jax.numpy.full((x_pilot.shape[0],), cond_kw["cond"][0], cond_kw["cond"].dtype)
    if with_error:
        return x_pilot, pilot_kw, None
    # Measured on the smallest pilot's draws: the per-draw cost at a fraction of the full batch's.
    m = PILOT_MIN_DRAWS
    sec = autogrid.seconds_per_draw_evaluation(score_fn, x_pilot[:m], repeats=1,
                                               **{k: v[:m] for k, v in pilot_kw.items()})
    plan = autogrid.plan_pilot(sec, num_samples=args.num_samples, solver=args.solver, num_steps=args.steps,
                               share=PILOT_SHARE, floor_seconds=PILOT_FLOOR_SECONDS,
                               pilot_sizes=(PILOT_DRAWS, PILOT_DRAWS // 2, PILOT_MIN_DRAWS))
    print(plan.message(args.solver, args.steps, len(GRID_NAMES), default_grid_for(args.solver, process)),
          flush=True)
    n = plan.num_pilot
    return x_pilot[:n], {k: v[:n] for k, v in pilot_kw.items()}, plan


def _run_pilot(score_fn, process, x_pilot, args, pilot_kw, plan, with_error):
    """:func:`~jaxode_diffusion.tuning.autogrid.choose_grid` under a tqdm bar (score evaluations per draw)."""
    from tqdm.auto import tqdm

    from jaxode_diffusion.tuning import autogrid

    total = None
    sizes = {}
    if plan is not None:
        total = plan.evaluations
        sizes = dict(reference_steps=plan.reference_steps, max_reference_steps=plan.reference_steps)
    with tqdm(total=total, desc="grid pilot", unit="eval", leave=False, file=sys.stderr) as bar:
        return autogrid.choose_grid(score_fn, process, x_pilot, args.solver, args.steps, error_grids=with_error,
                                    progress=bar.update, **sizes, **pilot_kw)


def _class_guidance(score_fn, args):
    """``(score, sample kwargs)`` for ``--class K [--guidance W]``: the classifier-free guided
    score with ``cond`` = K for every sample, or the model's own score without ``--class``."""
    label, w = getattr(args, "class_label", None), getattr(args, "guidance", None)
    if label is None:
        if w is not None:
            raise ValueError(f"--guidance {w} needs --class K (the class to guide towards).")
        return score_fn, {}
    num_classes = score_fn.num_classes
    if num_classes is None:
        raise ValueError(
            f"--class {label}: the model in {args.checkpoint!r} is unconditional; train it with "
            "`jaxode-diffusion train ... --conditional` or drop --class."
        )
    if not 0 <= label < num_classes:
        raise ValueError(f"--class {label} is out of range: the model knows classes 0..{num_classes - 1}.")
    import jax.numpy as jnp

    from jaxode_diffusion.models.guidance import classifier_free_guidance

    guided = classifier_free_guidance(score_fn, 1.0 if w is None else float(w), num_classes)
    return guided, {"cond": jnp.full((args.num_samples,), label, jnp.int32)}


def _npy_path(out: str) -> Path:
    """``--out`` with a ``.npy`` suffix (``moons`` -> ``moons.npy``, ``a.b`` -> ``a.b.npy``)."""
    p = Path(out)
    if p.suffix == ".npy":
        return p
    return p.with_suffix(p.suffix + ".npy") if p.suffix else p.with_suffix(".npy")


def main(argv=None) -> int:
    """Entry point: ``python -m jaxode_diffusion.cli.models {train,sample} ...`` (same as ``jaxode-diffusion``).

    Returns the exit status: 0, or 2 with one line on stderr for a user error.
    """
    from jaxode_diffusion.cli.app import sub_main

    return sub_main(register, argv, description="Train and sample score models.")


if __name__ == "__main__":
    sys.exit(main())
