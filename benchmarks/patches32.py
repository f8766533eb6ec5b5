"""32x32x3 natural-image patches: train the CPU-sized U-Net, measure it against held-out patches.

Two phases (both in one command by default):

* ``train``: ``TrainConfig(data="patches32", patch_size=2, ...)`` (the U-Net of
  :data:`jaxode_diffusion.models.unet.UNET_PATCHES32`) for ``--steps`` steps into ``--run``;
* ``eval``: held-out DSM loss (fixed noise, the EMA model vs the untrained network), samples
  (``dpmpp_2m``, log-SNR grid) compared with held-out patches by

  - sliced Wasserstein-2 on pixels (:func:`jaxode_diffusion.analysis.metrics.sliced_wasserstein`), and
  - the Frechet distance (:func:`jaxode_diffusion.analysis.metrics.frechet_distance`) on *local-energy
    features*: the log mean square of horizontal / vertical differences at scales 1, 2, 4 in each
    quadrant of the patch, plus the patch's mean colour and log contrast (33 numbers). A Gaussian
    matches every mean and covariance of the pixels, so pixel statistics of second order cannot
    separate it from the data; natural patches differ from a Gaussian in how their local energy
    varies (flat sky next to textured leaves), which these features measure;

  each against the floor (held-out set A vs the disjoint held-out set B) and the Gaussian
  baseline (mean and covariance of the training patches);
* the regularity profile of the trained score (``sigma^2 ||D s||_2``, ``sigma^3 ||D^2 s||_op``)
  at noised held-out patches and along sampling trajectories, matrix-free, with the estimator's
  spread over random restarts.

Usage::

    python -m benchmarks.patches32                       # train (<= 8 CPU-minutes) + eval + report
    python -m benchmarks.patches32 --phase eval          # re-evaluate an existing run
"""

from __future__ import annotations

import argparse
import datetime
import json
import os
import platform
import sys
import time
from pathlib import Path

import jax
import jax.numpy as jnp
import numpy as np

ROOT = Path(__file__).resolve().parents[1]


def train_phase(args) -> dict:
    from jaxode_diffusion.training import TrainConfig, train

    net = dict(patch_size=2, channels=32) if args.model == "unet" else dict(width=args.width, depth=args.depth)
    cfg = TrainConfig(
        data=args.data,
        out_dir=args.run,
        steps=args.steps,
        batch_size=args.batch_size,
        lr=args.lr,
        warmup_steps=args.steps // 20,
        ema_decay=args.ema,
        gaussian_skip=args.gaussian_skip or args.gaussian_input != "noisy" or args.model == "mlp",
        gaussian_input=args.gaussian_input,
        model=args.model,
        weighting=args.weighting,
        time_sampling=args.time_sampling,
        **net,
        eval_every=0,
        ckpt_every=0,
        log_every=5,
        progress=False,
        seed=0,
    )
    # Trained in chunks of --chunk steps (each resumes the last checkpoint; the compiled step is
    # reused within this process, and a resumed run equals an uninterrupted one) until --steps,
    # the CPU-time budget or the wall-clock cap is reached: bounded work on a shared CPU.
    t0, c0 = time.perf_counter(), time.process_time()
    history, done, res = [], 0, None
    while (done < cfg.steps and (time.process_time() - c0) < args.time_budget
           and (time.perf_counter() - t0) < args.wall_budget):
        cfg.resume = done > 0
        res = train(cfg, stop_at=min(done + args.chunk, cfg.steps))
        done = res.step
        history += res.history
        print(f"  step {done}: loss {res.history[-1]['loss']:.4f} ({time.perf_counter() - t0:.0f} s wall, "
              f"{time.process_time() - c0:.0f} s CPU)", flush=True)
    wall, cpu = time.perf_counter() - t0, time.process_time() - c0
    losses = [h["loss"] for h in history if "loss" in h]
    info = dict(train_seconds=wall, train_cpu_seconds=cpu, steps=done, scheduled_steps=cfg.steps, batch_size=cfg.batch_size, lr=cfg.lr,
                ema_decay=cfg.ema_decay, gaussian_skip=cfg.gaussian_skip, data=cfg.data, model=cfg.model,
                gaussian_input=cfg.gaussian_input, weighting=cfg.weighting, time_sampling=cfg.time_sampling,
                width=cfg.width, depth=cfg.depth,
                command=" ".join(sys.argv), final_train_loss=losses[-1], loss_curve=history)
    Path(args.run).mkdir(parents=True, exist_ok=True)
    (Path(args.run) / "train_info.json").write_text(json.dumps(info, indent=1))
    print(f"trained {done} steps in {wall:.0f} s; last train loss {losses[-1]:.4f}", flush=True)
    return info


# ------------------------------------------------------------------------------------------
# metrics


def local_energy_features(x) -> np.ndarray:
    """``(n, 34)`` features of ``(n, 32, 32, 3)`` patches: log mean square of horizontal and
    vertical differences of the luminance at scales 1, 2, 4 (after 1x1 / 2x2 / 4x4 average
    pooling) in each quadrant (24), log luminance std per quadrant (4), mean colour (3) and log
    std per channel (3)."""
    x = np.asarray(x, np.float64)
    n, h, w, _ = x.shape
    lum = x.mean(-1)
    eps = 1e-6
    feats = []
    for s in (1, 2, 4):
        pooled = lum.reshape(n, h // s, s, w // s, s).mean((2, 4))
        dh = np.diff(pooled, axis=2) ** 2
        dv = np.diff(pooled, axis=1) ** 2
        for d in (dh, dv):
            hh, ww = d.shape[1] // 2, d.shape[2] // 2
            for qi in (slice(0, hh), slice(hh, None)):
                for qj in (slice(0, ww), slice(ww, None)):
                    feats.append(np.log(d[:, qi, qj].mean((1, 2)) + eps))
    for qi in (slice(0, h // 2), slice(h // 2, None)):
        for qj in (slice(0, w // 2), slice(w // 2, None)):
            feats.append(np.log(lum[:, qi, qj].std((1, 2)) + eps))
    feats += [x[..., c].mean((1, 2)) for c in range(3)]
    feats += [np.log(x[..., c].std((1, 2)) + eps) for c in range(3)]
    return np.stack(feats, 1)


def distances(samples, reference, seeds=(0, 1, 2)) -> dict:
    """SW2 on pixels (mean and spread over projection seeds) and Frechet on local-energy features."""
    from jaxode_diffusion.analysis.metrics import frechet_distance, sliced_wasserstein

    a, b = jnp.asarray(samples, jnp.float32), jnp.asarray(reference, jnp.float32)
    sw = [float(sliced_wasserstein(a, b, key=jax.random.PRNGKey(s), num_projections=512)) for s in seeds]
    fd = frechet_distance(local_energy_features(samples), local_energy_features(reference))
    return dict(sw2=float(np.mean(sw)), sw2_spread=float(np.max(sw) - np.min(sw)), fd_energy=float(fd))


class GaussianDenoiser:
    """The exact eps-prediction of the Gaussian fit ``N(mu, C)`` of the training patches:
    ``eps_hat = sigma U diag(1 / (alpha^2 l + sigma^2)) U^T (x_t - alpha mu)``, ``C = U diag(l) U^T``."""

    prediction = "eps"

    def __init__(self, mu, evals, evecs):
        self.mu, self.evals, self.evecs = (jnp.asarray(a, jnp.float32) for a in (mu, evals, evecs))

    def __call__(self, xt, t, process):
        shape = xt.shape
        y = xt.reshape(shape[0], -1)
        a = process.alpha(t).reshape(-1, 1)
        s = process.sigma(t).reshape(-1, 1)
        z = (y - a * self.mu) @ self.evecs
        z = z * s / (a**2 * self.evals + s**2)
        return (z @ self.evecs.T).reshape(shape)


def heldout_dsm(model, process, x, loss_kw, *, batch=128, draws=2) -> float:
    """Held-out DSM loss with fixed keys (the same noise and times for every model)."""
    from flax import nnx

    from jaxode_diffusion.training import dsm_loss

    # The state is a jit argument, not a closure constant: XLA:CPU miscompiles the loss of a
    # constant-captured untrained network (its zero output layer) to inf; see training/loss.py.
    if isinstance(model, nnx.Module):
        graphdef, state = nnx.split(model)
        fn = jax.jit(lambda st, xb, k: dsm_loss(nnx.merge(graphdef, st), process, xb, k, **loss_kw))
    else:  # the Gaussian fit: plain arrays, no uniform weights
        state, fn = None, jax.jit(lambda st, xb, k: dsm_loss(model, process, xb, k, **loss_kw))
    vals = []
    for i in range(0, x.shape[0] - batch + 1, batch):
        for r in range(draws):
            vals.append(float(fn(state, jnp.asarray(x[i : i + batch]), jax.random.fold_in(jax.random.key(123), i * 10 + r))))
    return float(np.mean(vals))


PER_T = (0.02, 0.05, 0.1, 0.2, 0.3, 0.45, 0.6, 0.7, 0.8, 0.9, 0.97)


def per_t_dsm(model, gauss, process, x, ts=PER_T) -> dict:
    """Held-out eps-DSM at fixed times (same noise for both): the model and the Gaussian fit's
    exact denoiser, per coordinate. Where the ratio is below 1 the model has learned non-Gaussian
    structure; the eps weighting hides the high-noise levels (errors ~1e-4), this shows them."""
    x = jnp.asarray(x)
    f = jax.jit(lambda xt, t: model(xt, t, process))
    out = {}
    for t in ts:
        eps = jax.random.normal(jax.random.fold_in(jax.random.key(9), int(t * 1000)), x.shape)
        tt = jnp.full((x.shape[0],), t, x.dtype)
        xt = process.alpha(tt)[:, None, None, None] * x + process.sigma(tt)[:, None, None, None] * eps
        lm, lg = float(jnp.mean((f(xt, tt) - eps) ** 2)), float(jnp.mean((gauss(xt, tt, process) - eps) ** 2))
        out[str(t)] = dict(sigma=float(process.sigma(jnp.asarray(t))), model=lm, gaussian=lg, ratio=lm / lg)
    return out


def _fmt(v, nd=4):
    return f"{v:.{nd}g}" if isinstance(v, float) else str(v)


def _gaussian_fit(train):
    xt = train.reshape(train.shape[0], -1).astype(np.float64)
    evals, evecs = np.linalg.eigh(np.cov(xt, rowvar=False))
    return xt.mean(0), np.clip(evals, 0.0, None), evecs


def _gaussian_samples(rng, n, mu, evals, evecs, shape):
    z = rng.standard_normal((n, mu.shape[0]))
    return (mu + (z * np.sqrt(evals)) @ evecs.T).reshape(n, *shape).astype(np.float32)


def _heldout_sets(ds, n):
    # Two disjoint held-out reference sets A, B of n patches and the rest (for the DSM loss).
    perm = np.random.default_rng(0).permutation(ds.heldout.shape[0])
    return ds.heldout[perm[:n]], ds.heldout[perm[n : 2 * n]], ds.heldout[perm[2 * n :]]


def split_check_phase(args) -> dict:
    """What the best possible generator of the training split scores: the training patches
    themselves (an "oracle" sample of the training distribution) against held-out A, next to the
    floor (held-out B) and the Gaussian fit, for each split. If the oracle does not beat the
    Gaussian, no model trained on that split can (the held-out set is shifted, not harder)."""
    from jaxode_diffusion.training.data import load_patches

    n, out = args.num_samples, {}
    for split in ("halves", "stripes"):
        ds = load_patches(32, split=split)
        held_a, held_b, _ = _heldout_sets(ds, n)
        rng = np.random.default_rng(0)
        oracle = ds.train[rng.permutation(ds.train.shape[0])[:n]]
        gauss = _gaussian_samples(rng, n, *_gaussian_fit(ds.train), (32, 32, 3))
        clip = lambda x: np.clip(x, -1.0, 1.0)
        out[split] = dict(
            n_train=int(ds.train.shape[0]), n_heldout=int(ds.heldout.shape[0]),
            mean_train=float(ds.train.mean()), mean_heldout=float(ds.heldout.mean()),
            std_train=float(ds.train.std()), std_heldout=float(ds.heldout.std()),
            floor=distances(held_b, held_a), oracle=distances(oracle, held_a), gaussian=distances(clip(gauss), held_a),
        )
        print(split, json.dumps(out[split]), flush=True)
    Path(args.run).mkdir(parents=True, exist_ok=True)
    Path(args.run, "split_check.json").write_text(json.dumps(out, indent=1))
    return out


def eval_phase(args) -> dict:
    from flax import nnx

    from jaxode_diffusion import sample
    from jaxode_diffusion.models import build_model
    from jaxode_diffusion.training import load_run
    from jaxode_diffusion.training.data import load_dataset

    t_start = time.perf_counter()
    score, run_cfg = load_run(args.run)
    process = score.process
    tcfg = run_cfg["train"]
    ds = load_dataset(tcfg["data"])  # the run's own split
    shape = tuple(ds.event_shape)
    n = args.num_samples
    held_a, held_b, held_rest = _heldout_sets(ds, n)
    rng = np.random.default_rng(0)
    # Gaussian baseline: mean and covariance of all training patches, sampled exactly.
    mu, evals, evecs = _gaussian_fit(ds.train)
    gauss = _gaussian_samples(rng, n, mu, evals, evecs, shape)
    oracle = ds.train[rng.permutation(ds.train.shape[0])[:n]]

    # Model samples: DPM-Solver++(2M) on the log-SNR grid, in batches, one set per NFE.
    x_init = process.prior_sample(jax.random.key(7), (n, *shape))
    model_samples, sample_seconds = {}, {}
    for nfe in args.nfe:
        t0 = time.perf_counter()
        chunks = [np.asarray(sample(score, process, x_init[i : i + 128], solver="dpmpp_2m", num_steps=nfe,
                                    grid="log_snr")) for i in range(0, n, 128)]
        model_samples[nfe] = np.concatenate(chunks)
        sample_seconds[nfe] = time.perf_counter() - t0
    # The Gaussian fit's exact score sampled by the same solver and grid: how much of a distance
    # is the sampler's discretisation rather than the model.
    gd = GaussianDenoiser(mu, evals, evecs)
    gauss_score = lambda x, t: -gd(x, jnp.broadcast_to(t, (x.shape[0],)), process) / process.sigma(t)
    gauss_ode = {nfe: np.asarray(sample(gauss_score, process, x_init, solver="dpmpp_2m", num_steps=nfe, grid="log_snr"))
                 for nfe in args.nfe}

    clip = lambda x: np.clip(x, -1.0, 1.0)  # every generator is compared in the data's range
    gens = {"held-out B (floor)": held_b}
    gens.update({f"trained model (dpmpp_2m, NFE {nfe})": clip(x) for nfe, x in model_samples.items()})
    gens["Gaussian fit of train"] = clip(gauss)
    gens.update({f"Gaussian fit, its exact score sampled by dpmpp_2m NFE {nfe}": clip(x) for nfe, x in gauss_ode.items()})
    gens["train patches (oracle)"] = oracle
    rows = {}
    for k, x in gens.items():
        rows[k] = distances(x, held_a)
        if not k.startswith("held-out B"):  # a second, independent reference set
            rows[k]["sw2_vs_B"] = distances(x, held_b, seeds=(0,))["sw2"]
    # The held-out DSM metric is the same for every run (eps weighting, uniform t), whatever the
    # run trained with.
    loss_kw = dict(time_sampling="uniform", weighting="eps", sigma_data=float(run_cfg["data"]["sigma_data"]))
    net = nnx.merge(score.graphdef, score.params)
    init_net = build_model(run_cfg["model"], seed=0)  # GaussianResidual: statistics at their defaults
    held_eval = held_rest[:256]
    gden = GaussianDenoiser(mu, evals, evecs)
    dsm = {
        "trained model (EMA)": heldout_dsm(net, process, held_eval, loss_kw),
        "untrained network (init; isotropic statistics for gaussian_skip)": heldout_dsm(init_net, process, held_eval, loss_kw),
        "Gaussian fit (exact denoiser)": heldout_dsm(gden, process, held_eval, loss_kw),
    }
    dsm_per_t = per_t_dsm(net, gden, process, held_eval)
    eval_seconds = time.perf_counter() - t_start
    nfe0 = args.nfe[0]
    results = dict(distances=rows, dsm=dsm, dsm_per_t=dsm_per_t, sample_seconds=sample_seconds, eval_seconds=eval_seconds,
                   num_samples=n, nfe=list(args.nfe), data=tcfg["data"], split=ds.meta.get("split"),
                   gaussian_skip=bool(tcfg.get("gaussian_skip", False)),
                   out_of_range_frac_model=float(np.mean(np.abs(model_samples[nfe0]) > 1)),
                   out_of_range_frac_gauss=float(np.mean(np.abs(gauss) > 1)))
    Path(args.run, "eval.json").write_text(json.dumps(results, indent=1))
    np.save(Path(args.run, "samples.npy"), model_samples[nfe0][:64])
    print(json.dumps(results, indent=1), flush=True)
    return results


def regularity_phase(args) -> dict:
    """Weighted profiles sigma^2 ||D s||_2 and sigma^3 ||D^2 s||_op of the trained score at noised
    held-out patches and along RK4 probability-flow trajectories, matrix-free, plus the estimator's
    spread over random starts."""
    from jaxode_diffusion.analysis.regularity import jacobian_norm, second_derivative_norm
    from jaxode_diffusion.analysis.regularity import profile as regularity_profile
    from jaxode_diffusion.training import load_run
    from jaxode_diffusion.training.data import load_dataset

    t0 = time.perf_counter()
    score, run_cfg = load_run(args.run)
    process = score.process
    ds = load_dataset(run_cfg["train"]["data"])  # the run's own split
    perm = np.random.default_rng(1).permutation(ds.heldout.shape[0])
    x_src = jnp.asarray(ds.heldout[perm[: args.reg_batch]])
    t_grid = np.asarray(args.reg_times, np.float32)
    it = args.reg_iters
    kw = {
        "jacobian_spectral": dict(num_iters=it, tol=1e-3),
        "second_operator": dict(num_iters=it, tol=1e-3, num_restarts=2),
    }
    prof = regularity_profile(score, process, t_grid=t_grid, x_source=x_src, source="both",
                              quantities=("jacobian_spectral", "second_operator"), method="matrix_free",
                              estimator_kwargs=kw, quantiles=(0.5,))
    out = dict(t=list(prof.t), sigma=list(prof.sigma), curves={})
    for src in ("data", "trajectory"):
        for q in ("jacobian_spectral", "second_operator"):
            c = prof.curve(src, q)
            out["curves"][f"{src}/{q}"] = dict(weighted_max=list(c.weighted.max), weighted_mean=list(c.weighted.mean),
                                               accuracy=c.accuracy.to_dict())
    Path(args.run, "regularity.json").write_text(json.dumps(out, indent=1))  # kept if the spread fails
    print(json.dumps(out, indent=1), flush=True)
    # Estimator spread: the same points (noised held-out, middle time) with other random starts.
    t_mid = float(t_grid[len(t_grid) // 2])
    a, s_ = float(process.alpha(jnp.asarray(t_mid))), float(process.sigma(jnp.asarray(t_mid)))
    x_mid = a * x_src + s_ * jax.random.normal(jax.random.key(5), x_src.shape)
    spread = {}
    for name, fn, power in (
        ("jacobian_spectral", lambda k: jacobian_norm(score, x_mid, t_mid, method="matrix_free", key=k, **kw["jacobian_spectral"]), 2),
        ("second_operator", lambda k: second_derivative_norm(score, x_mid, t_mid, method="matrix_free", key=k, **kw["second_operator"]), 3),
    ):
        vals = np.stack([np.asarray(fn(jax.random.key(100 + r))) for r in range(args.spread_keys)]) * s_**power
        spread[name] = dict(t=t_mid, per_key=vals.tolist(),
                            rel_spread=float(np.max((vals.max(0) - vals.min(0)) / vals.max(0))))
    out["spread"] = spread
    out["seconds"] = time.perf_counter() - t0
    Path(args.run, "regularity.json").write_text(json.dumps(out, indent=1))
    print(json.dumps(out, indent=1), flush=True)
    return out


def _model_words(tr) -> str:
    if tr.get("model", "unet") == "mlp":
        net = f"MLP (width {tr.get('width')}, depth {tr.get('depth')}, on the flattened patch)"
    else:
        net = "U-Net"
    if not tr.get("gaussian_skip"):
        return f"plain {net} (EDM preconditioning)"
    inp = ("the Gaussian posterior mean (gaussian_input='wiener')" if tr.get("gaussian_input") == "wiener"
           else "c_in x (noisy)")
    return (f"{net} residual on the Gaussian fit's denoiser (TrainConfig.gaussian_skip), network input {inp}, "
            f"DSM weighting `{tr.get('weighting', 'eps')}`, time sampling `{tr.get('time_sampling', 'uniform')}`")


def _train_line(tr, ev) -> str:
    what = _model_words(tr)
    return (f"{what}: {tr['steps']} steps (of a {tr['scheduled_steps']}-step cosine schedule), batch "
            f"{tr['batch_size']}, AdamW lr {tr['lr']}, EMA {tr.get('ema_decay', 0.99)}, data `{tr.get('data', ev.get('data'))}`; "
            f"{tr['train_cpu_seconds']:.0f} CPU-seconds, {tr['train_seconds']:.0f} s wall-clock on one pinned core of "
            f"the shared CPU; last training loss {tr['final_train_loss']:.4f}. Command: `{tr.get('command', 'python -m benchmarks.patches32')}`.")


def _short(tr) -> str:
    net = "MLP" if tr.get("model", "unet") == "mlp" else "U-Net"
    if not tr.get("gaussian_skip"):
        return f"plain {net}"
    return f"Gaussian-residual {net}" + (" (Wiener input)" if tr.get("gaussian_input") == "wiener" else "")


def report_inputs(args):
    """The run's JSON files: training info, evaluation, regularity and split check (``None`` when
    missing), and the (training info, evaluation) of each ``--also`` run."""
    run = Path(args.run)
    tr = json.loads((run / "train_info.json").read_text())
    ev = json.loads((run / "eval.json").read_text())
    rg = json.loads((run / "regularity.json").read_text()) if (run / "regularity.json").exists() else None
    if rg is not None and "spread" not in rg:
        rg = None
    sc = json.loads((run / "split_check.json").read_text()) if (run / "split_check.json").exists() else None
    others = [(json.loads((Path(r) / "train_info.json").read_text()), json.loads((Path(r) / "eval.json").read_text()))
              for r in args.also]
    return tr, ev, rg, sc, others


def report_head(tr, ev):
    """Title, machine, data and the trained model's line."""
    dev = jax.devices()[0]
    return [
        "# 32x32x3 natural-image patches: a CPU-trained score network against held-out patches",
        "",
        f"Machine: {platform.machine()}, {os.cpu_count()} CPUs shared with other jobs (load average "
        f"{os.getloadavg()[0]:.0f} at the end), JAX {jax.__version__} on {dev.platform}; date "
        f"{datetime.date.today()}. Every phase ran pinned to one core: `taskset -c 1 env "
        "XLA_FLAGS=\"--xla_cpu_multi_thread_eigen=false intra_op_parallelism_threads=1\" python "
        "-m benchmarks.patches32 --phase train|eval|regularity|split-check|report ...` (the commands below).",
        "",
        f"Data: `{ev['data']}`, 32x32x3 windows (stride 4) of scikit-learn's `china.jpg` and `flower.jpg`, "
        f"pixels mapped to [-1, 1]; split: {ev['split']}. Process VP-linear, eps prediction. U-Net = `UNET_PATCHES32` "
        "(2x2 space-to-depth, 32/64/64 channels, 1.06M trained parameters).",
        "",
        "Trained model: " + _train_line(tr, ev),
        "",
    ]


def split_check_section(sc, args):
    """Why the split changed (the split check's oracle and Gaussian distances), if it was run."""
    L = []
    if sc is not None:
        L += [
            "## Why the split changed: with image halves even the training set barely beats the Gaussian",
            "",
            f"Training patches themselves used as samples (\"oracle\": a perfect model of the training "
            f"distribution), {args.num_samples} of each, SW2 to held-out A (`--phase split-check`):",
            "",
            "| split | train / held-out mean | floor (held-out B) | oracle (train patches) | Gaussian fit of train |",
            "|---|---|---|---|---|",
        ]
        for k, v in sc.items():
            L.append(f"| {k} | {v['mean_train']:.3f} / {v['mean_heldout']:.3f} | {v['floor']['sw2']:.4f} | "
                     f"{v['oracle']['sw2']:.4f} | {v['gaussian']['sw2']:.4f} |")
        h, st = sc["halves"], sc["stripes"]
        L += ["", f"With the image halves the held-out patches are a shifted distribution (other scene content, "
              f"other mean brightness): the training set itself is {h['oracle']['sw2'] / h['floor']['sw2']:.0f}x the "
              f"floor and only {100 * (1 - h['oracle']['sw2'] / h['gaussian']['sw2']):.0f}% below its Gaussian fit, "
              "so the pixel distance measured the shift between the halves, not the model (the 700-step U-Net's "
              "0.345 vs 0.301 there, at 256 samples, could not have become a clear win). The stripes split "
              "(alternating 64-pixel column stripes, no shared pixel; `--data patches32-stripes`) samples the "
              f"same scenes on both sides: the oracle is {st['oracle']['sw2'] / st['floor']['sw2']:.2f}x the floor and the "
              f"Gaussian {st['gaussian']['sw2'] / st['floor']['sw2']:.1f}x, so a model has room to beat the Gaussian.", ""]
    return L


def dsm_section(ev, others):
    """Held-out DSM loss of each model, overall and per noise level."""
    L = []
    L += [
        "## Held-out DSM loss (eps weighting; 256 held-out patches, fixed times and noise)",
        "",
        "| model | held-out DSM loss |",
        "|---|---|",
    ]
    for k, v in ev["dsm"].items():
        L.append(f"| {k} | {v:.4f} |")
    for tro, evo in others:
        L.append(f"| {_short(tro)} (EMA), {tro['steps']} steps | {evo['dsm']['trained model (EMA)']:.4f} |")
    if "dsm_per_t" in ev:
        L += ["", "Per noise level (the same 256 held-out patches and noise; eps error per coordinate; ratio < 1: "
              "the model beats the Gaussian fit's exact denoiser there):", "",
              "| t | sigma | model | Gaussian fit | ratio |", "|---|---|---|---|---|"]
        for t, r in ev["dsm_per_t"].items():
            L.append(f"| {t} | {r['sigma']:.3f} | {r['model']:.3g} | {r['gaussian']:.3g} | {r['ratio']:.4f} |")
    return L


def distances_section(ev, others):
    """Sample distances to the held-out set, the verdicts against the Gaussian and the sampling times."""
    L = []
    L += [
        "",
        f"## Sample distances to held-out set A ({ev['num_samples']} patches each)",
        "",
        f"Samples: dpmpp_2m on the log-SNR grid, clipped to [-1, 1] (also the Gaussian's; out of range before "
        f"clipping at NFE {ev['nfe'][0]}: model {ev['out_of_range_frac_model']:.3f}, Gaussian "
        f"{ev['out_of_range_frac_gauss']:.3f} of the pixels). SW2: sliced Wasserstein-2 on pixels, "
        "512 directions, mean (spread) over 3 direction seeds; \"SW2 vs B\": the same against the disjoint "
        "held-out set B (a second reference, one seed). FD-energy: Frechet distance on the 34 local-energy "
        "features (log gradient energy at 3 scales per quadrant, log contrast, colour).",
        "",
        "| samples | SW2 (pixels) | SW2 vs B | FD-energy |",
        "|---|---|---|---|",
    ]
    row = lambda k, v: f"| {k} | {v['sw2']:.4f} ({v['sw2_spread']:.4f}) | {v.get('sw2_vs_B', float('nan')):.4f} | {v['fd_energy']:.3f} |"
    for k, v in ev["distances"].items():
        L.append(row(k, v))
    for tro, evo in others:
        for k, v in evo["distances"].items():
            if k.startswith("trained model"):
                L.append(row(k.replace("trained model", f"{_short(tro)}, {tro['steps']} steps"), v))
    g = ev["distances"]["Gaussian fit of train"]
    main_key = f"trained model (dpmpp_2m, NFE {ev['nfe'][0]})"
    m = ev["distances"][main_key]
    verdict = lambda a, k: "yes" if a[k] < g[k] else "**no**"
    verdict_same = lambda a, b: ("beats it" if a["sw2"] + max(a["sw2_spread"], b["sw2_spread"]) < b["sw2"]
                                 else "**no clear difference**, within the direction-seed spread")
    L += ["", f"Trained model ({main_key}) beats the Gaussian baseline: SW2 {verdict(m, 'sw2')}, SW2 vs B "
          f"{verdict(m, 'sw2_vs_B')}, FD-energy {verdict(m, 'fd_energy')}; held-out DSM "
          f"{'yes' if ev['dsm']['trained model (EMA)'] < ev['dsm']['Gaussian fit (exact denoiser)'] else '**no**'}."]
    go = ev["distances"].get(f"Gaussian fit, its exact score sampled by dpmpp_2m NFE {ev['nfe'][0]}")
    if go is not None:  # the honest comparison: the same sampler on the Gaussian's own score
        L += ["", f"Against the Gaussian fit's exact score through the same sampler (NFE {ev['nfe'][0]}): SW2 "
              f"{m['sw2']:.4f} vs {go['sw2']:.4f} ({verdict_same(m, go)}); any SW2 gain over the exactly sampled "
              "Gaussian that this row shares comes from the sampler's discretisation, not from the learned network."]
    for tro, evo in others:
        L += ["", "Other run: " + _train_line(tro, evo)]
    L += ["", "Sampling " + ", ".join(f"NFE {k}: {v:.0f} s" for k, v in ev["sample_seconds"].items())
          + f" for {ev['num_samples']} patches; evaluation {ev['eval_seconds']:.0f} s.", ""]
    return L


def regularity_section(rg, args):
    """The trained score's regularity profile and its estimators' accuracy and spread, if it was run."""
    L = []
    if rg is not None:
        L += [
            "## Regularity of the trained score",
            "",
            "Weighted profiles, matrix-free (power iteration for sigma^2 ||D s||_2; higher-order power "
            f"method, 2 random + 4 sketched starts, for sigma^3 ||D^2 s||_op; at most {args.reg_iters} "
            f"iterations, tol 1e-3), {args.reg_batch} held-out patches noised at each t (\"data\") and "
            f"{args.reg_batch} RK4 probability-flow trajectories (\"trajectory\"). Max over the batch.",
            "",
            "| t | sigma | data: sigma^2 ‖Ds‖₂ | data: sigma^3 ‖D²s‖_op | trajectory: sigma^2 ‖Ds‖₂ | "
            "trajectory: sigma^3 ‖D²s‖_op |",
            "|---|---|---|---|---|---|",
        ]
        c = rg["curves"]
        for i, t in enumerate(rg["t"]):
            L.append(
                f"| {t:.3g} | {rg['sigma'][i]:.3g} | {c['data/jacobian_spectral']['weighted_max'][i]:.3g} | "
                f"{c['data/second_operator']['weighted_max'][i]:.3g} | "
                f"{c['trajectory/jacobian_spectral']['weighted_max'][i]:.3g} | "
                f"{c['trajectory/second_operator']['weighted_max'][i]:.3g} |"
            )
        L += ["", "Estimator accuracy (per t; converged_frac < 1 means the iteration cap was reached, "
              "min_num_at_max = 1 means the maximum was found by one start only): " + "; ".join(
            f"{k}: " + ", ".join(f"{a}={v}" for a, v in c[k]["accuracy"].items()) for k in c)]
        L += ["", f"Estimator spread ({args.spread_keys} random-start keys, same points, noised held-out at t = "
              f"{rg['spread']['jacobian_spectral']['t']:.3g}): largest relative spread over the batch "
              f"{rg['spread']['jacobian_spectral']['rel_spread']:.2g} (sigma^2 ‖Ds‖₂), "
              f"{rg['spread']['second_operator']['rel_spread']:.2g} (sigma^3 ‖D²s‖_op). "
              f"Regularity run time {rg['seconds']:.0f} s.", ""]
    return L


def report(args) -> str:
    tr, ev, rg, sc, others = report_inputs(args)
    L = report_head(tr, ev) + split_check_section(sc, args) + dsm_section(ev, others)
    L += distances_section(ev, others) + regularity_section(rg, args)
    text = "\n".join(L)
    Path(args.out).write_text(text)
    print(text)
    return text


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--phase", choices=["all", "train", "eval", "regularity", "split-check", "report"], default="all")
    p.add_argument("--also", nargs="*", default=[], help="other evaluated run directories to list in the report")
    p.add_argument("--run", default=str(ROOT / "runs" / "patches32"))
    p.add_argument("--data", default="patches32-stripes",
                   help="patches32-stripes (alternating 64-pixel column stripes, the default) or patches32 (image halves)")
    p.add_argument("--gaussian-skip", action="store_true",
                   help="TrainConfig.gaussian_skip: the U-Net learns the residual of the Gaussian fit's denoiser")
    p.add_argument("--model", choices=["unet", "mlp"], default="unet",
                   help="unet (UNET_PATCHES32) or mlp (on the flattened patch; implies --gaussian-skip)")
    p.add_argument("--width", type=int, default=512, help="MLP width")
    p.add_argument("--depth", type=int, default=2, help="MLP residual blocks")
    p.add_argument("--gaussian-input", choices=["noisy", "wiener"], default="noisy",
                   help="TrainConfig.gaussian_input (wiener implies --gaussian-skip)")
    p.add_argument("--weighting", default="eps", help="TrainConfig.weighting (gaussian: relative to the Gaussian fit)")
    p.add_argument("--time-sampling", default="uniform", help="TrainConfig.time_sampling")
    p.add_argument("--ema", type=float, default=0.995, help="EMA decay")
    p.add_argument("--steps", type=int, default=700)
    p.add_argument("--batch-size", type=int, default=24)
    p.add_argument("--lr", type=float, default=2e-3)
    p.add_argument("--time-budget", type=float, default=480.0,
                   help="training CPU-time budget in seconds (all threads; 8 core-minutes by default)")
    p.add_argument("--wall-budget", type=float, default=1800.0, help="training wall-clock cap (s)")
    p.add_argument("--chunk", type=int, default=20, help="steps between checkpoints")
    p.add_argument("--num-samples", type=int, default=1024)
    p.add_argument("--nfe", type=int, nargs="+", default=[10, 20], help="dpmpp_2m steps for the samples (one set each)")
    p.add_argument("--reg-batch", type=int, default=2)
    p.add_argument("--spread-keys", type=int, default=2, help="random-start keys for the estimator spread")
    p.add_argument("--reg-iters", type=int, default=10)
    p.add_argument("--reg-times", type=float, nargs="+", default=[0.05, 0.3, 0.9])
    p.add_argument("--out", default=str(ROOT / "benchmarks" / "results" / "patches32.md"))
    args = p.parse_args(argv)
    if args.phase in ("all", "train"):
        train_phase(args)
    if args.phase in ("all", "eval"):
        eval_phase(args)
    if args.phase in ("all", "regularity"):
        regularity_phase(args)
    if args.phase in ("all", "split-check"):
        split_check_phase(args)
    if args.phase in ("all", "report"):
        report(args)
    return 0


if __name__ == "__main__":
    sys.exit(main())
