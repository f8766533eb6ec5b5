"""``regularity`` command: derivative norms of a score along the sampling path.

Usage::

    python -m jaxode_diffusion.cli.regularity regularity --target gmm --dim 2 --out /tmp/reg
    python -m jaxode_diffusion.cli.regularity regularity --checkpoint runs/moons --out /tmp/reg

writes ``OUT/regularity.json`` (a :class:`~jaxode_diffusion.analysis.regularity.RegularityProfile`) and
``OUT/regularity.png`` (:func:`~jaxode_diffusion.analysis.regularity.plot_profile`). The package CLI
mounts the same sub-command through :func:`register`.
"""

from __future__ import annotations

import argparse
import os

__all__ = ["register", "run", "main"]


def register(subparsers) -> argparse.ArgumentParser:
    """Add the ``regularity`` sub-command to an ``argparse`` sub-parser collection.

    Example:
        >>> import argparse
        >>> parser = argparse.ArgumentParser(prog="jaxode-diffusion")
        >>> _ = register(parser.add_subparsers(dest="command"))
        >>> parser.parse_args(["regularity", "--target", "gmm", "--out", "o"]).num_times
        16
    """
    p = subparsers.add_parser(
        "regularity",
        help="derivative norms of a score along ODE trajectories and at noised data",
        description=(
            "Estimate ||Ds|| (spectral, Frobenius) and ||D^2 s|| (operator, Frobenius) of a score on a "
            "grid of times uniform in log-SNR, along probability-flow ODE trajectories and/or at "
            "forward-noised data; write regularity.json and regularity.png to --out."
        ),
    )
    src = p.add_mutually_exclusive_group(required=True)
    src.add_argument("--checkpoint", metavar="DIR", help="a training run directory (its checkpoint)")
    src.add_argument("--target", choices=["gmm"], help="exact score of a closed-form target")
    p.add_argument("--dim", type=int, default=2, help="dimension of --target gmm (default 2)")
    p.add_argument("--process", default="vp_linear", help="forward process of --target (default vp_linear)")
    p.add_argument("--out", required=True, metavar="DIR", help="output directory")
    p.add_argument("--num-times", type=int, default=16, help="grid points in t (default 16)")
    p.add_argument("--batch", type=int, default=64, help="points per time (default 64)")
    p.add_argument("--source", choices=["trajectory", "data", "both"], default="both")
    p.add_argument("--method", choices=["auto", "exact", "matrix_free"], default="auto",
                   help="estimator (auto: exact for d <= 64)")
    p.add_argument("--solver", default="rk4", help="sampler for the trajectories (default rk4)")
    p.add_argument("--substeps", type=int, default=4, help="solver steps per grid interval (default 4)")
    p.add_argument("--t-min", type=float, default=None, help="smallest t (default: the process's t_end)")
    p.add_argument("--t-max", type=float, default=None, help="largest t (default: the process's t_start)")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--x64", action="store_true", help="compute in float64")
    p.set_defaults(func=run)
    return p


def _check_args(args) -> None:
    for name in ("num_times", "batch", "substeps", "dim"):
        value = getattr(args, name)
        minimum = 2 if name == "num_times" else 1
        if value < minimum:
            raise ValueError(f"--{name.replace('_', '-')} must be >= {minimum}, got {value}.")


def run(args) -> dict[str, str]:
    """Execute the ``regularity`` command for parsed ``args``; returns the written paths."""
    import jax

    if args.x64:
        jax.config.update("jax_enable_x64", True)
    import jax.numpy as jnp
    import numpy as np

    from jaxode_diffusion.sampling.grids import make_grid
    from jaxode_diffusion.utils.outputs import ensure_output_dir
    from jaxode_diffusion.analysis.plotting import plot_profile
    from jaxode_diffusion.processes import get_process
    from jaxode_diffusion.analysis.regularity import profile

    _check_args(args)
    out = ensure_output_dir(args.out, "--out")  # before the work: a bad --out is reported at once
    key = jax.random.PRNGKey(args.seed)
    k_data, k_prof = jax.random.split(key)
    dtype = jnp.float64 if jax.config.jax_enable_x64 else jnp.float32
    if args.target == "gmm":
        from jaxode_diffusion.training.data import default_gmm

        process = get_process(args.process)
        mixture = default_gmm(args.dim)
        score_fn = mixture.score_fn(process)
        x_source = mixture.sample(k_data, args.batch).astype(dtype)
        label = f"gmm (d={args.dim})"
    else:
        from jaxode_diffusion.training.scores import load_checkpoint_score

        score_fn, process, data_info = load_checkpoint_score(args.checkpoint)
        samples = data_info.get("samples")
        if samples is None:
            if args.source != "trajectory":
                raise ValueError(
                    f"--checkpoint {args.checkpoint}: its data could not be rebuilt; use --source trajectory."
                )
            shape = tuple(data_info["event_shape"])
            x_source = jnp.zeros((args.batch, *shape), dtype)
        else:
            samples = np.asarray(samples)
            idx = np.asarray(jax.random.choice(k_data, samples.shape[0], (args.batch,),
                                               replace=samples.shape[0] < args.batch))
            x_source = jnp.asarray(samples[idx], dtype)
        label = f"checkpoint {args.checkpoint}"

    t_hi = process.default_t_start if args.t_max is None else args.t_max
    t_lo = process.default_t_end if args.t_min is None else args.t_min
    if not t_hi > t_lo:
        raise ValueError(f"--t-max ({t_hi}) must be larger than --t-min ({t_lo}).")
    if t_lo <= float(process.t_min):
        # Derivatives of the score blow up at t = t_min (sigma = 0): stay strictly inside.
        raise ValueError(f"--t-min must be > {process.t_min} (sigma vanishes there); got {t_lo}.")
    t_grid = make_grid("log_snr", process, args.num_times - 1, t_hi, t_lo)

    prof = profile(score_fn, process, t_grid=t_grid, x_source=x_source, source=args.source, key=k_prof,
                   solver=args.solver, substeps=args.substeps, method=args.method)
    prof.settings.score = label
    prof.settings.command = "regularity " + " ".join(
        f"--{k.replace('_', '-')} {v}" for k, v in sorted(vars(args).items())
        if k not in ("func", "command") and v is not None and v is not False
    )
    json_path = out / "regularity.json"
    png_path = out / "regularity.png"
    prof.to_json(json_path)
    plot_profile(prof, png_path, title=f"Score regularity: {label}, {type(process).__name__}, "
                                       f"method={prof.settings.method}")
    print(f"wrote {os.fspath(json_path)} and {os.fspath(png_path)}")
    return {"json": os.fspath(json_path), "png": os.fspath(png_path)}


def main(argv=None) -> int:
    """Entry point: ``python -m jaxode_diffusion.cli.regularity regularity ...``."""
    from jaxode_diffusion.cli.app import sub_main

    return sub_main(register, argv, prog="python -m jaxode_diffusion.cli.regularity")


if __name__ == "__main__":
    raise SystemExit(main())
