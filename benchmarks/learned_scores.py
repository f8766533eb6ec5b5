"""Acceptance measurements for learned scores.

1. ``gmm``: an MLP trained on the 8-Gaussian ring (d=2) for a CPU time budget; reports the
   time-averaged score error eps_score^2 of the trained and the untrained model, and the sliced
   Wasserstein distance to the target of samples from "x0-lambda:rk4" at 20 NFE (5 steps) with
   the learned and with the exact score (plus the target-vs-target floor).
2. ``digits``: a U-Net trained on scikit-learn's digits (8x8); samples 1000 images, writes
   ``docs/digits_samples.png`` and reports the Frechet distance between sample and held-out
   features of a scikit-learn MLPClassifier trained on the train split, beside the train vs
   held-out distance (the floor). The checkpoint lives in ``runs/digits``.

Run::

    python -m benchmarks.learned_scores gmm [--steps 6000]
    python -m benchmarks.learned_scores digits [--train --steps 4500]
"""

from __future__ import annotations

import argparse
import datetime
import os
import platform
import time
from pathlib import Path

import jax
import numpy as np

from jaxode_diffusion.analysis.plotting import save_png
from jaxode_diffusion.analysis.score_errors import score_error
from jaxode_diffusion.models import as_score_fn, build_model
from jaxode_diffusion.models.mixture import GaussianMixture
from jaxode_diffusion.processes import VPLinear
from jaxode_diffusion.sampling.core import sample
from jaxode_diffusion.training import TrainConfig, load_run, train
from jaxode_diffusion.training.data import load_digits

ROOT = Path(__file__).resolve().parents[1]


def sliced_wasserstein(x, y, *, num_projections: int = 256, seed: int = 0) -> float:
    """Sliced 2-Wasserstein distance between equal-size samples (exact 1-D W2 per direction)."""
    x, y = np.asarray(x, np.float64), np.asarray(y, np.float64)
    n = min(len(x), len(y))
    x, y = x[:n], y[:n]
    dirs = np.random.default_rng(seed).standard_normal((num_projections, x.shape[1]))
    dirs /= np.linalg.norm(dirs, axis=1, keepdims=True)
    px, py = np.sort(x @ dirs.T, axis=0), np.sort(y @ dirs.T, axis=0)
    return float(np.sqrt(np.mean((px - py) ** 2)))


def frechet_distance(a, b) -> float:
    """``||mu_a - mu_b||^2 + Tr(C_a + C_b - 2 (C_a C_b)^{1/2})`` (as in FID)."""
    from scipy import linalg

    mu_a, mu_b = a.mean(0), b.mean(0)
    ca, cb = np.cov(a, rowvar=False), np.cov(b, rowvar=False)
    covmean = linalg.sqrtm(ca @ cb)
    covmean = np.real(covmean)
    return float(np.sum((mu_a - mu_b) ** 2) + np.trace(ca + cb - 2 * covmean))


def machine() -> str:
    dev = jax.devices()[0]
    return (
        f"{platform.platform()}, CPU count {os.cpu_count()}, JAX {jax.__version__} on {dev.platform}; "
        f"{datetime.date.today().isoformat()}"
    )


def run_gmm(args) -> None:
    vp, gm = VPLinear(), GaussianMixture.ring(8, radius=2.0, std=0.2)
    cfg = TrainConfig(
        data="gmm",
        steps=args.steps,
        batch_size=256,
        lr=2e-3,
        width=256,
        depth=3,
        eval_every=1000,
        ckpt_every=0,
        progress=not args.quiet,
        n_train=50000,
    )
    t0 = time.perf_counter()
    res = train(cfg)
    train_s = time.perf_counter() - t0
    key = jax.random.key(123)
    learned = res.score_fn()
    untrained = as_score_fn(build_model(res.model_config, seed=cfg.seed), vp)
    se_l = score_error(learned, gm, vp, key=key, num_times=32, num_samples=2048)
    se_u = score_error(untrained, gm, vp, key=key, num_times=32, num_samples=2048)
    n = 5000
    x_init = vp.prior_sample(jax.random.key(1), (n, 2))
    target = np.asarray(gm.sample(jax.random.key(2), n))
    target2 = np.asarray(gm.sample(jax.random.key(3), n))
    rows = []
    for grid in ("uniform", "log_snr"):
        xl = sample(learned, vp, x_init, solver="x0-lambda:rk4", num_steps=5, grid=grid, return_nfe=True)
        xe = sample(
            gm.score_fn(vp), vp, x_init, solver="x0-lambda:rk4", num_steps=5, grid=grid, return_nfe=True
        )
        rows.append(
            (
                grid,
                int(xl.nfe),
                sliced_wasserstein(xl.samples, target),
                sliced_wasserstein(xe.samples, target),
            )
        )
    print(f"\n## Learned score on the 8-Gaussian ring (d=2)\n\nMachine: {machine()}")
    print(f"Command: python -m benchmarks.learned_scores gmm --steps {args.steps}\n")
    print(
        f"Training: MLP width 256 depth 3, {cfg.steps} steps, batch 256, VP-linear, eps-prediction, "
        f"{train_s:.0f} s wall.\n"
    )
    print("| score | eps_score^2 (time-avg E||s-s*||^2) | sigma^2-weighted |")
    print("|---|---:|---:|")
    print(f"| untrained | {float(se_u.value):.4g} | {float(se_u.weighted):.4g} |")
    print(f"| trained (EMA) | {float(se_l.value):.4g} | {float(se_l.weighted):.4g} |")
    print(
        f"\nSliced W2 to the target ({n} samples; target-vs-target floor "
        f"{sliced_wasserstein(target2, target):.4f}):\n"
    )
    print("| solver | grid | NFE | learned score | exact score |")
    print("|---|---|---:|---:|---:|")
    for grid, nfe, swl, swe in rows:
        print(f"| x0-lambda:rk4, 5 steps | {grid} | {nfe} | {swl:.4f} | {swe:.4f} |")


def run_digits(args) -> None:
    run_dir = ROOT / "runs" / "digits"
    if args.train:
        cfg = TrainConfig(
            data="digits",
            steps=args.steps,
            batch_size=64,
            lr=1e-3,
            out_dir=str(run_dir),
            eval_every=500,
            ckpt_every=500,
            log_every=100,
            channels=32,
            resume=(run_dir / "checkpoints").exists(),
            progress=not args.quiet,
        )
        t0 = time.perf_counter()
        train(cfg)
        print(f"training wall time {time.perf_counter() - t0:.0f} s")
    score_fn, run_cfg = load_run(run_dir)
    vp = score_fn.process
    ds = load_digits()
    n = 1000
    x_init = vp.prior_sample(jax.random.key(0), (n, 8, 8, 1))
    t0 = time.perf_counter()
    sol = sample(score_fn, vp, x_init, solver="x0-lambda:rk4", num_steps=10, grid="log_snr", return_nfe=True)
    sample_s = time.perf_counter() - t0
    x = np.clip(np.asarray(sol.samples), -1, 1)
    (ROOT / "docs").mkdir(exist_ok=True)
    save_png(x, ROOT / "docs" / "digits_samples.png", "image", run_cfg["data"])

    from sklearn.neural_network import MLPClassifier

    flat = lambda a: np.asarray(a).reshape(len(a), -1)  # noqa: E731
    clf = MLPClassifier(hidden_layer_sizes=(128,), max_iter=500, random_state=0)
    clf.fit(flat(ds.train), np.asarray(ds.meta["labels_train"]))
    acc = clf.score(flat(ds.heldout), np.asarray(ds.meta["labels_heldout"]))

    def feats(a):
        return np.maximum(flat(a) @ clf.coefs_[0] + clf.intercepts_[0], 0.0)

    fd_samples = frechet_distance(feats(x), feats(ds.heldout))
    fd_floor = frechet_distance(feats(ds.train), feats(ds.heldout))
    fd_noise = frechet_distance(feats(np.clip(np.asarray(x_init), -1, 1)), feats(ds.heldout))
    pred = clf.predict(flat(x))
    print(f"\n## Digits (8x8) U-Net\n\nMachine: {machine()}")
    print(
        "Command: python -m benchmarks.learned_scores digits"
        + (f" --train --steps {args.steps}" if args.train else "")
    )
    print(
        f"Checkpoint: {run_dir} (step {run_cfg['step']}); samples: x0-lambda:rk4, 10 steps, log_snr grid, "
        f"NFE {int(sol.nfe)}, {sample_s:.1f} s for {n}.\n"
    )
    print(
        f"Feature classifier: sklearn MLPClassifier(128) on the train split, held-out accuracy {acc:.3f}; "
        "features = its hidden layer.\n"
    )
    print("| compared with held-out digits | Frechet distance |")
    print("|---|---:|")
    print(f"| 1000 model samples | {fd_samples:.2f} |")
    print(f"| train split (floor) | {fd_floor:.2f} |")
    print(f"| clipped prior noise (ceiling reference) | {fd_noise:.2f} |")
    print(f"\nClass histogram of samples (classifier): {np.bincount(pred, minlength=10).tolist()}")
    print(f"PNG: {ROOT / 'docs' / 'digits_samples.png'}")


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("part", choices=["gmm", "digits"])
    ap.add_argument("--steps", type=int, default=None)
    ap.add_argument("--train", action="store_true", help="digits: (re)train / resume into runs/digits")
    ap.add_argument("--quiet", action="store_true")
    args = ap.parse_args(argv)
    if args.steps is None:
        args.steps = 6000 if args.part == "gmm" else 4500
    (run_gmm if args.part == "gmm" else run_digits)(args)


if __name__ == "__main__":
    main()
