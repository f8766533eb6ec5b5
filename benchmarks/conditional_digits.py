"""Class-conditional digits: classifier-free guidance measured by a digits classifier.

Trains a small class-conditional U-Net on scikit-learn's 8x8 digits (label dropout
``p_uncond``), samples it at a fixed class per row with a fast solver at 10-20 NFE and
guidance scales ``w`` (``s_w = s(null) + w (s(c) - s(null))``; ``w = 1`` no guidance,
``w = 0`` the unconditional model), and reports the rate at which a scikit-learn classifier
(trained on the training split, the same ``[-1, 1]`` scaling) assigns each sample to the
requested class, next to the classifier's own held-out accuracy. Also profiles the regularity
of the guided score, ``sigma^2 ||D s_w||`` and ``sigma^3 ||D^2 s_w||``, against ``w``.

Usage::

    python -m benchmarks.conditional_digits                     # train (runs/cond_digits) + measure
    python -m benchmarks.conditional_digits --out benchmarks/results/conditional_digits.md \\
        --figure docs/digits_guidance.png

A run directory that already holds a finished checkpoint is reused (delete it to retrain).
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import sys
import time
from pathlib import Path

import jax
import jax.numpy as jnp
import numpy as np


def train_model(args):
    from jaxode_diffusion.training import TrainConfig, latest_step, train

    out = Path(args.run)
    if out.exists() and latest_step(out) == args.steps:
        print(f"reusing {out} (step {args.steps})", flush=True)
        return None
    cfg = TrainConfig(
        data="digits",
        out_dir=str(out),
        steps=args.steps,
        batch_size=args.batch_size,
        lr=args.lr,
        channels=args.channels,
        conditional=True,
        p_uncond=args.p_uncond,
        eval_every=args.steps // 4,
        ckpt_every=args.steps // 4,
        log_every=50,
        resume=out.exists() and latest_step(out) is not None,
        progress=args.progress,
    )
    t0 = time.time()
    res = train(cfg)
    held = [h["heldout_loss"] for h in res.history if "heldout_loss" in h]
    secs = time.time() - t0
    print(f"trained {res.step} steps in {secs:.0f} s, held-out loss {held[-1]:.4f}", flush=True)
    return secs


def classifier():
    """LogisticRegression on the digits training split (same split and scaling as the model)."""
    from sklearn.linear_model import LogisticRegression

    from jaxode_diffusion.training.data import dataset_labels, load_digits

    ds = load_digits()
    y_tr, y_he, _ = dataset_labels(ds)
    clf = LogisticRegression(max_iter=5000, C=1.0)
    clf.fit(ds.train.reshape(len(ds.train), -1), y_tr)
    acc = float(clf.score(ds.heldout.reshape(len(ds.heldout), -1), y_he))
    return clf, acc


def guided_samples(score_fn, labels, w, key, solver, steps, grid):
    from jaxode_diffusion.models.guidance import classifier_free_guidance
    from jaxode_diffusion.sampling.core import sample

    process = score_fn.process
    guided = classifier_free_guidance(score_fn, jnp.asarray(w, jnp.float32), score_fn.num_classes)
    x_init = process.prior_sample(key, (labels.shape[0], 8, 8, 1))
    sol = sample(guided, process, x_init, solver=solver, num_steps=steps, grid=grid, cond=labels,
                 return_nfe=True)
    return np.asarray(sol.samples), int(sol.nfe)


def regularity_rows(score_fn, scales, ts, batch, key, iters):
    """Median over noised held-out digits of sigma^2 ||D s_w|| and sigma^3 ||D^2 s_w||."""
    from jaxode_diffusion.analysis.regularity import jacobian_norm, second_derivative_norm
    from jaxode_diffusion.models.guidance import classifier_free_guidance
    from jaxode_diffusion.training.data import dataset_labels, load_digits

    ds = load_digits()
    _, y_he, _ = dataset_labels(ds)
    x0 = jnp.asarray(ds.heldout[:batch])
    labels = jnp.asarray(y_he[:batch])
    eps = jax.random.normal(key, x0.shape)
    process = score_fn.process
    rows = []
    for w in scales:
        guided = classifier_free_guidance(score_fn, jnp.asarray(w, jnp.float32), score_fn.num_classes)
        for t in ts:
            t = jnp.asarray(t, jnp.float32)
            xt = process.marginal(x0, t, eps)
            sig = float(process.sigma(t))
            # Matrix-free: the exact d = 64 second-derivative tensor of a U-Net costs minutes per
            # point on a CPU; power iterations (two restarts for D^2 s) are lower bounds that
            # converge from below.
            j = np.asarray(jacobian_norm(guided, xt, t, cond=labels, method="matrix_free", num_iters=iters))
            h = np.asarray(second_derivative_norm(guided, xt, t, cond=labels, method="matrix_free",
                                                  num_restarts=2, num_iters=iters))
            rows.append(dict(w=float(w), t=float(t), sigma=sig,
                             jac=float(np.median(sig**2 * j)), jac_max=float(np.max(sig**2 * j)),
                             d2=float(np.median(sig**3 * h)), d2_max=float(np.max(sig**3 * h))))
            print(f"  w={w} t={float(t):.3f}: sigma^2|Ds| {rows[-1]['jac']:.3f}, "
                  f"sigma^3|D2s| {rows[-1]['d2']:.3f}", flush=True)
    return rows


def save_figure(samples_by_w, path, n_per_class):
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    scales = list(samples_by_w)
    fig, axes = plt.subplots(10, n_per_class * len(scales), figsize=(n_per_class * len(scales) * 0.6 + 0.5, 6.4))
    for j, w in enumerate(scales):
        x = samples_by_w[w].reshape(10, -1, 8, 8)
        for k in range(10):
            for i in range(n_per_class):
                ax = axes[k, j * n_per_class + i]
                ax.imshow(np.clip((x[k, i] + 1) / 2, 0, 1), cmap="gray", vmin=0, vmax=1)
                ax.set_xticks([])
                ax.set_yticks([])
                if k == 0 and i == 0:
                    ax.set_title(f"w = {w:g}", loc="left", fontsize=9)
                if j == 0 and i == 0:
                    ax.set_ylabel(str(k), rotation=0, labelpad=8, fontsize=9)
    fig.subplots_adjust(wspace=0.05, hspace=0.05)
    Path(path).parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=110, bbox_inches="tight")
    plt.close(fig)


def parse_args(argv):
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--run", default="runs/cond_digits", help="run directory (trained if missing)")
    p.add_argument("--steps", type=int, default=1200)
    p.add_argument("--batch-size", type=int, default=128)
    p.add_argument("--channels", type=int, default=16)
    p.add_argument("--lr", type=float, default=2e-3)
    p.add_argument("--p-uncond", type=float, default=0.1)
    p.add_argument("--solvers", default="dpmpp_2m:10,x0-lambda:rk4:5",
                   help="comma-separated SOLVER:STEPS, sampled on the log_snr grid")
    p.add_argument("--scales", default="0,1,2,3", help="guidance scales w")
    p.add_argument("--per-class", type=int, default=100, help="samples per class")
    p.add_argument("--reg-scales", default="0,1,2,3,5")
    p.add_argument("--reg-times", default="0.05,0.2,0.5")
    p.add_argument("--reg-batch", type=int, default=16)
    p.add_argument("--reg-iters", type=int, default=30, help="power iterations of the matrix-free norms")
    p.add_argument("--reuse-regularity", default=None, help="take the regularity rows from this --json file")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--only-train", action="store_true")
    p.add_argument("--progress", action="store_true")
    p.add_argument("--out", default=None, help="write the markdown tables here")
    p.add_argument("--json", default=None, help="write the raw numbers here")
    p.add_argument("--figure", default=None, help="one row per class at the first two solvers' scales")
    return p.parse_args(argv)


def guidance_rows(score_fn, clf, labels, scales, args):
    """Per solver and guidance scale: how often the classifier assigns the requested class (overall and
    the worst class), and the samples (for the figure)."""
    rows, keep = [], {}
    for spec in args.solvers.split(","):
        solver, steps = spec.rsplit(":", 1)
        for w in scales:
            t0 = time.time()
            x, nfe = guided_samples(score_fn, labels, w, jax.random.key(args.seed), solver, int(steps), "log_snr")
            pred = clf.predict(x.reshape(len(x), -1))
            lab = np.asarray(labels)
            per_class = [float(np.mean(pred[lab == k] == k)) for k in range(10)]
            rows.append(dict(solver=solver, steps=int(steps), nfe=nfe, w=w, rate=float(np.mean(pred == lab)),
                             worst=min(per_class), per_class=per_class,
                             finite=bool(np.isfinite(x).all()), secs=time.time() - t0))
            keep[(spec, w)] = x
            print(f"{solver} steps={steps} NFE={nfe} w={w:g}: rate {rows[-1]['rate']:.3f} "
                  f"(worst class {rows[-1]['worst']:.2f})", flush=True)
    return rows, keep


def report_lines(args, argv, run_cfg, rows, reg, clf_acc, train_secs, t_all):
    """The markdown report: machine and command, model and classifier, the guidance table and the
    regularity table."""
    cmd = "python -m benchmarks.conditional_digits " + " ".join(argv if argv is not None else sys.argv[1:])
    tc = run_cfg["train"]
    head = [
        f"Machine: {platform.machine()} {platform.system()}, {os.cpu_count()} CPUs, JAX {jax.__version__} "
        f"on {jax.devices()[0].platform}; date {time.strftime('%Y-%m-%d')}; total {time.time() - t_all:.0f} s"
        + (f" (training {train_secs:.0f} s)" if train_secs else "") + ".",
        f"Command: `{cmd.strip()}`",
        "",
        f"Model: class-conditional U-Net (channels {tc['channels']}, {tc['steps']} steps, batch "
        f"{tc['batch_size']}, lr {tc['lr']}, p_uncond {tc['p_uncond']}, {tc['process']}, {tc['prediction']} "
        "prediction), EMA parameters. Guidance `s_w = s(null) + w (s(c) - s(null))` (w = 1: none, "
        "w = 0: the unconditional model). Classifier: scikit-learn `LogisticRegression` on the "
        f"digits training split (1438 images, pixels in [-1, 1]); held-out accuracy **{clf_acc:.3f}** "
        "(359 images). Samples: "
        f"{args.per_class} per class, log_snr grid, seed {args.seed}.",
        "",
        "| solver | steps | NFE | w | assigned the requested class | worst class |",
        "|---|---:|---:|---:|---:|---:|",
    ]
    for r in rows:
        head.append(f"| {r['solver']} | {r['steps']} | {r['nfe']} | {r['w']:g} | {r['rate']:.3f} | {r['worst']:.2f} |")
    head += [] if not reg else [
        "",
        "Regularity of the guided score at noised held-out digits x_t = alpha x0 + sigma eps "
        f"({args.reg_batch} digits, their own labels; matrix-free estimators): median (max) over the batch.",
        "",
        "| w | t | sigma | sigma^2 ‖D s_w‖₂ | sigma^3 ‖D² s_w‖ |",
        "|---:|---:|---:|---:|---:|",
    ]
    for r in reg:
        head.append(f"| {r['w']:g} | {r['t']:g} | {r['sigma']:.3f} | {r['jac']:.3f} ({r['jac_max']:.3f}) | "
                    f"{r['d2']:.3f} ({r['d2_max']:.3f}) |")
    return head


def main(argv=None) -> int:
    args = parse_args(argv)

    t_all = time.time()
    train_secs = train_model(args)
    if args.only_train:
        return 0
    from jaxode_diffusion.training import load_run

    score_fn, run_cfg = load_run(args.run)
    clf, clf_acc = classifier()
    print(f"classifier held-out accuracy {clf_acc:.4f}", flush=True)
    scales = [float(s) for s in args.scales.split(",")]
    labels = jnp.repeat(jnp.arange(10, dtype=jnp.int32), args.per_class)
    rows, keep = guidance_rows(score_fn, clf, labels, scales, args)
    if args.figure:
        spec = args.solvers.split(",")[0]
        fig_scales = [w for w in (1.0, 3.0) if w in scales] or scales[:2]
        save_figure({w: keep[(spec, w)].reshape(10, args.per_class, 8, 8)[:, :6] for w in fig_scales},
                    args.figure, 6)
    reg = []
    if args.reg_scales:
        reg = regularity_rows(score_fn, [float(s) for s in args.reg_scales.split(",")],
                              [float(t) for t in args.reg_times.split(",")], args.reg_batch,
                              jax.random.key(args.seed + 1), args.reg_iters)
    if args.reuse_regularity:
        reg = json.loads(Path(args.reuse_regularity).read_text())["regularity"]

    head = report_lines(args, argv, run_cfg, rows, reg, clf_acc, train_secs, t_all)
    text = "\n".join(head) + "\n"
    print(text)
    if args.out:
        Path(args.out).parent.mkdir(parents=True, exist_ok=True)
        Path(args.out).write_text("# Conditional digits: guidance vs class accuracy and regularity\n\n" + text)
    if args.json:
        Path(args.json).write_text(json.dumps(dict(classifier_accuracy=clf_acc, sampling=rows, regularity=reg),
                                              indent=1))
    return 0


if __name__ == "__main__":
    sys.exit(main())
