"""``sample --grid auto`` on a trained 2-D model: how close its samples are to the data, per grid.

Trains a model with the CLI (``jaxode-diffusion train --data DATA --steps STEPS``; skipped when the run
directory already has a checkpoint), then samples it with ``jaxode-diffusion sample`` and every default
but ``--solver`` and ``--steps`` (``--grid auto``: :func:`~jaxode_diffusion.tuning.autogrid.choose_grid`),
with ``--grid table`` and with each named grid. Each sample set (``--num`` draws) is compared with
``--num`` fresh data draws by the energy distance
(:func:`~jaxode_diffusion.analysis.distances.energy_distance`), divided by the energy distance of a
Gaussian fit to the data (``--num`` draws of ``N(mean, cov)``) to the same fresh draws: 0 is the data's
own law, 1 is no better than a Gaussian. The goal: the default within ``--goal`` (0.10).

Run from the repository root::

    python -m benchmarks.grid_choice --run runs/grid_choice_swiss_roll

Writes ``benchmarks/results/grid_choice.md`` (machine, date, command, the table) unless ``--no-write``.
"""

from __future__ import annotations

import argparse
import datetime
import json
import os
import platform
import shlex
import sys
from pathlib import Path

import numpy as np

RESULTS = Path(__file__).resolve().parent / "results" / "grid_choice.md"
FRESH_SEED = 987_654  # fresh data draws: not the training draws


def parse_args(argv=None):
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--run", default="runs/grid_choice_swiss_roll", help="run directory (trained if empty)")
    p.add_argument("--data", default="swiss_roll", help="a 2-D toy data name of `jaxode-diffusion train`")
    p.add_argument("--train-steps", type=int, default=4000)
    p.add_argument("--solver", default="x0-lambda:rk4")
    p.add_argument("--steps", type=int, default=5)
    p.add_argument("--num", type=int, default=2000, help="samples, fresh data draws and Gaussian-fit draws")
    p.add_argument("--goal", type=float, default=0.10)
    p.add_argument("--no-write", action="store_true")
    return p.parse_args(argv)


def ensure_trained(args) -> None:
    """Train with the CLI unless ``args.run`` holds a checkpoint."""
    from jaxode_diffusion.cli.app import main as cli
    from jaxode_diffusion.training import latest_step

    run = Path(args.run)
    if run.exists() and latest_step(run) is not None:
        return
    if cli(["train", "--data", args.data, "--steps", str(args.train_steps), "--out", str(run)]) != 0:
        raise SystemExit("training failed")


def sample_with(args, grid, out_dir: Path):
    """Samples of ``jaxode-diffusion sample`` (``grid`` None: every default), and what it printed."""
    import contextlib
    import io

    from jaxode_diffusion.cli.app import main as cli

    out = out_dir / f"{grid or 'default'}.npy"
    argv = ["sample", "--checkpoint", args.run, "--solver", args.solver, "--steps", str(args.steps),
            "--num-samples", str(args.num), "--out", str(out)] + ([] if grid is None else ["--grid", grid])
    buf = io.StringIO()
    with contextlib.redirect_stdout(buf):
        rc = cli(argv)
    if rc != 0:
        raise SystemExit(f"sample failed: {shlex.join(argv)}")
    return np.load(out), buf.getvalue()


def relative_energy(samples, fresh, gauss) -> float:
    """Energy distance of ``samples`` to ``fresh``, over that of the Gaussian fit ``gauss``."""
    from jaxode_diffusion.analysis.distances import energy_distance

    return float(energy_distance(samples, fresh)) / float(energy_distance(gauss, fresh))


def data_draws(name: str, seed: int, n: int):
    """``n`` draws of the toy data ``name`` (``gmm``: the default 2-D mixture)."""
    from jaxode_diffusion.training.data import gmm_samples, make_toy

    return gmm_samples(seed, n, dim=2) if name == "gmm" else make_toy(name, seed, n)


def reference_sets(args):
    """``(fresh data draws, Gaussian-fit draws)``, ``args.num`` each."""
    data = np.asarray(data_draws(args.data, 0, 20_000), np.float64)
    fresh = data_draws(args.data, FRESH_SEED, args.num)
    rng = np.random.default_rng(FRESH_SEED)
    gauss = rng.multivariate_normal(data.mean(0), np.cov(data.T), size=args.num)
    return np.asarray(fresh, np.float64), gauss


def measure(args, out_dir: Path):
    """Rows ``(label, relative energy distance)`` and the default's printed lines."""
    fresh, gauss = reference_sets(args)
    (Path(args.run) / "grid_choices.json").unlink(missing_ok=True)  # the default measures afresh
    x, printed = sample_with(args, None, out_dir)
    rows = [("default (--grid auto)", relative_energy(x, fresh, gauss))]
    from jaxode_diffusion.sampling.grids import GRID_NAMES

    for g in ("table", *GRID_NAMES):
        rows.append((f"--grid {g}", relative_energy(sample_with(args, g, out_dir)[0], fresh, gauss)))
    return rows, printed


def report(args, rows, printed, argv) -> str:
    choice = json.loads((Path(args.run) / "grid_choices.json").read_text())
    lines = [
        "# `sample --grid auto` on a trained 2-D model: energy distance to the data",
        "",
        f"Machine: {platform.machine()}, {platform.platform()}, {os.cpu_count()} CPU cores (shared); date "
        f"{datetime.date.today().isoformat()}.",
        f"Command: `python -m benchmarks.grid_choice {shlex.join(argv)}` (model: `jaxode-diffusion train --data "
        f"{args.data} --steps {args.train_steps}`; sampling: `--solver {args.solver} --steps {args.steps} "
        f"--num-samples {args.num}`).",
        "",
        f"Relative energy distance: energy distance of {args.num} samples to {args.num} fresh data draws, over "
        f"that of {args.num} draws of the data's Gaussian fit to the same fresh draws (goal: default <= {args.goal}).",
        "",
        "| sampling | relative energy distance |",
        "|---|---|",
        *[f"| {label} | {v:.3f} |" for label, v in rows],
        "",
        "What the default printed:",
        "",
        *[f"    {line}" for line in printed.strip().splitlines()],
        "",
        "The pilot's record (`grid_choices.json`):",
        "",
        "```json",
        json.dumps(choice, indent=1, sort_keys=True),
        "```",
        "",
    ]
    return "\n".join(lines)


def main(argv=None) -> int:
    argv = sys.argv[1:] if argv is None else argv
    args = parse_args(argv)
    ensure_trained(args)
    out_dir = Path(args.run) / "grid_choice_samples"
    out_dir.mkdir(parents=True, exist_ok=True)
    rows, printed = measure(args, out_dir)
    for label, v in rows:
        print(f"{label:24s} {v:.3f}")
    ok = rows[0][1] <= args.goal
    print(f"default within {args.goal}: {ok}")
    if not args.no_write:
        RESULTS.write_text(report(args, rows, printed, argv))
        print(f"wrote {RESULTS}")
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main())
