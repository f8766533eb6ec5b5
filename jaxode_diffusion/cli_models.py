"""``train`` and ``sample`` subcommands: learn a score model, then sample it with any solver.

Usage (until these are wired into ``jaxode-diffusion``)::

    python -m jaxode_diffusion.cli_models train --data two_moons --steps 2000 --out runs/moons
    python -m jaxode_diffusion.cli_models train --data two_moons --steps 4000 --out runs/moons --resume
    python -m jaxode_diffusion.cli_models sample --checkpoint runs/moons --solver x0-lambda:rk4 \\
        --steps 5 --num-samples 2000 --out moons.npy       # also writes moons.png
"""

from __future__ import annotations

import argparse
import os
import sys
from pathlib import Path

__all__ = ["register", "main", "cmd_train", "cmd_sample"]

_DATA_CHOICES = (
    "gmm, checkerboard, two_moons, rings, swiss_roll, eight_gaussians, digits, patches16, patches32 "
    "or PATH.npy"
)


def _data_arg(value: str) -> str:
    from .data import toy_names

    if value in ("gmm", "digits", "patches16", "patches32", *toy_names()) or value.endswith(".npy"):
        return value
    raise argparse.ArgumentTypeError(f"--data must be one of {_DATA_CHOICES}; got {value!r}.")


def register(subparsers) -> None:
    """Add the ``train`` and ``sample`` subcommands to an ``argparse`` subparsers object."""
    from .training import TrainConfig

    d = TrainConfig()
    p = subparsers.add_parser(
        "train",
        help="train a score model (DSM) with checkpoints",
        description="Train a score model by denoising score matching.",
    )
    p.add_argument("--data", type=_data_arg, required=True, help=_DATA_CHOICES)
    p.add_argument("--steps", type=int, required=True, help="total optimisation steps")
    p.add_argument("--out", required=True, help="run directory (checkpoints + config.json)")
    p.add_argument("--resume", action="store_true", help="continue from the latest checkpoint in --out")
    p.add_argument("--batch-size", type=int, default=d.batch_size)
    p.add_argument("--lr", type=float, default=d.lr, help="peak learning rate (warmup + cosine decay)")
    p.add_argument("--seed", type=int, default=d.seed)
    p.add_argument(
        "--process", default=d.process, help="vp_linear, vp_cosine, subvp, ve, edm, rectified_flow"
    )
    p.add_argument("--prediction", default=d.prediction, help="eps, x0, v, flow or score")
    p.add_argument("--eval-every", type=int, default=d.eval_every, help="held-out loss interval (steps)")
    p.add_argument("--ckpt-every", type=int, default=d.ckpt_every, help="checkpoint interval (steps)")
    p.set_defaults(func=cmd_train)

    s = subparsers.add_parser(
        "sample",
        help="sample a trained model with an ODE solver",
        description="Sample a trained score model; writes FILE.npy and FILE.png.",
    )
    s.add_argument("--checkpoint", required=True, help="run directory written by `train`")
    s.add_argument("--solver", required=True, help='e.g. "rk4", "x0-lambda:rk4", "eps-rho:heun"')
    s.add_argument("--steps", type=int, required=True, help="solver steps (NFE = steps x stages)")
    s.add_argument("--num-samples", type=int, required=True)
    s.add_argument("--out", required=True, help="output .npy file (a .png is written beside it)")
    s.add_argument("--seed", type=int, default=0)
    s.add_argument("--grid", default="uniform", help="uniform, log_snr, edm, quadratic")
    s.set_defaults(func=cmd_sample)


def cmd_train(args) -> int:
    from .training import TrainConfig, train

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
    )
    result = train(config)
    last = [h for h in result.history if "heldout_loss" in h]
    msg = f"trained {result.step} steps -> {os.fspath(Path(args.out))}"
    if last:
        msg += f" (held-out loss {last[-1]['heldout_loss']:.4f})"
    print(msg)
    return 0


def save_png(samples, path, kind: str, meta: dict) -> None:
    """Scatter plot (2-D), image grid (images) or first-two-coordinates scatter (other vectors)."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    import numpy as np

    x = np.asarray(samples)
    if kind == "image":
        n = min(64, x.shape[0])
        cols = int(np.ceil(np.sqrt(n)))
        rows = int(np.ceil(n / cols))
        fig, axes = plt.subplots(rows, cols, figsize=(cols, rows))
        lo, hi = np.percentile(x, 0.5), np.percentile(x, 99.5)
        lo, hi = meta.get("raw_range", [lo, hi])
        for i, ax in enumerate(np.atleast_1d(axes).ravel()):
            ax.axis("off")
            if i < n:
                img = np.clip((x[i] - lo) / max(hi - lo, 1e-12), 0, 1)
                ax.imshow(
                    img[..., 0] if img.shape[-1] == 1 else img, cmap="gray" if img.shape[-1] == 1 else None
                )
        fig.subplots_adjust(wspace=0.05, hspace=0.05)
    else:
        fig, ax = plt.subplots(figsize=(5, 5))
        ax.scatter(x[:, 0], x[:, 1] if x.shape[1] > 1 else np.zeros(len(x)), s=2, alpha=0.5)
        ax.set_aspect("equal")
        ax.set_title(f"{x.shape[0]} samples" + ("" if x.shape[1] == 2 else " (first two coordinates)"))
    fig.savefig(path, dpi=100, bbox_inches="tight")
    plt.close(fig)


def cmd_sample(args) -> int:
    import jax
    import numpy as np

    from .data import unnormalize
    from .sampling import sample
    from .training import load_run

    if args.num_samples < 1 or args.steps < 1:
        raise ValueError(f"--num-samples and --steps must be >= 1, got {args.num_samples}, {args.steps}.")
    score_fn, run_cfg = load_run(args.checkpoint)
    meta = run_cfg["data"]
    event_shape = tuple(meta["event_shape"])
    kind = "vector" if len(event_shape) == 1 else "image"
    process = score_fn.process
    x_init = process.prior_sample(jax.random.key(args.seed), (args.num_samples, *event_shape))
    x = sample(score_fn, process, x_init, solver=args.solver, num_steps=args.steps, grid=args.grid)
    x = unnormalize(np.asarray(x), meta)
    out = Path(args.out)
    if out.suffix != ".npy":
        out = out.with_suffix(out.suffix + ".npy") if out.suffix else out.with_suffix(".npy")
    out.parent.mkdir(parents=True, exist_ok=True)
    np.save(out, x)
    png = out.with_suffix(".png")
    save_png(x, png, kind, meta)
    print(f"wrote {out} {x.shape} and {png}")
    return 0


def main(argv=None) -> int:
    """Entry point: ``python -m jaxode_diffusion.cli_models {train,sample} ...``."""
    parser = argparse.ArgumentParser(prog="jaxode-diffusion", description="Train and sample score models.")
    sub = parser.add_subparsers(dest="command", required=True)
    register(sub)
    args = parser.parse_args(argv)
    try:
        return args.func(args)
    except ValueError as err:
        print(f"error: {err}", file=sys.stderr)
        return 2


if __name__ == "__main__":
    sys.exit(main())
