"""One command for a GPU/TPU: sampler, precision, diffrax, regularity and training costs of the
32x32x3 U-Net, written as one results table (device, date, command).

Measures, on the default JAX device:

1. sampler time / (NFE x network time) for the 32x32x3 U-Net
   (:data:`~jaxode_diffusion.models.unet.UNET_PATCHES32`, random init) at batch 256, in float32
   and with the network in bfloat16 (``ScoreModel.compute_dtype``; the solver state stays
   float32), for RK4, DPM-Solver++(2M) and UniPC (bh2) at NFE 10 and 20 (RK4: 2 and 5 steps,
   NFE 8 and 20 -- four stages a step), plus samples per second;
2. ours / diffrax on the same tableau (RK4 in the x-t form, ``diffrax.StepTo`` on the same grid);
3. the regularity profile cost at d = 3072 (32x32x3) and d = 12288 (64x64x3) for random-init
   U-Nets: one matrix-free ``||D s||_2`` (power iteration) and ``||D^2 s||_op`` (higher-order
   power method) per example, fixed iteration counts;
4. training steps per second (DSM loss, AdamW, the trainer's optimiser) at batch 256.

Times are medians of interleaved repeats after one compiling call. Budget: < 8 minutes on one
accelerator. ``--tiny`` shrinks every size (8x8x3 images, regularity at that size only, a one-level
4-channel U-Net, batch 4, NFE 10 only, one repeat) so the script runs on CPU in the test suite
(tests/benchmarks/test_device_suite.py) and never rots.

Usage::

    python -m benchmarks.device_suite                 # writes benchmarks/results/device_suite.md
    python -m benchmarks.device_suite --tiny --out /tmp/tiny.md
"""

from __future__ import annotations

import argparse
import datetime
import os
import platform
import sys
import time
from pathlib import Path

import equinox as eqx
import jax
import jax.numpy as jnp
import optax
from flax import nnx

from benchmarks.common import time_interleaved

ROOT = Path(__file__).resolve().parents[1]

FULL = dict(image=32, reg_images=(32, 64), batch=256, reg_batch=8, train_batch=256, repeats=5, nfes=(10, 20),
            reg_iters=20, train_steps=20)
# Tiny: regularity at one image size only (compiling the matrix-free second-derivative program of a
# U-Net, nested jvp and the vjp of a jvp, takes 15-20 s on one CPU core per size).
TINY = dict(image=8, reg_images=(8,), batch=4, reg_batch=1, train_batch=4, repeats=1, nfes=(10,),
            reg_iters=2, train_steps=2)
SOLVERS = ("rk4", "dpmpp_2m", "unipc_bh2")


def _unet_config(image: int, tiny: bool) -> dict:
    from jaxode_diffusion.models.unet import UNET_PATCHES32

    cfg = dict(type="unet", image_shape=[image, image, 3], **UNET_PATCHES32)
    if tiny:  # one level, 4 channels: the same code paths, a program that compiles in seconds
        cfg.update(channels=4, channel_mult=[1])
    return cfg


def _score(cfg: dict, process, compute_dtype=None):
    from jaxode_diffusion.models import ScoreModel, build_model

    net = build_model(cfg, seed=0)
    graphdef, state = nnx.split(net)
    return ScoreModel(graphdef, nnx.to_pure_dict(state), process, net.prediction, compute_dtype=compute_dtype)


@eqx.filter_jit
def _score_loop(score, x, n):
    # n sequential evaluations (each input depends on the last output): the network's cost alone.
    def body(i, acc):
        return acc + score(x + acc * 1e-6, jnp.asarray(0.5, x.dtype)).astype(x.dtype)

    return jax.lax.fori_loop(0, n, body, jnp.zeros_like(x))


def sampler_rows(cfg, s) -> list[dict]:
    from jaxode_diffusion import VPLinear, make_times, solve
    from jaxode_diffusion.analysis.diffrax_drivers import diffrax_fixed_step

    vp = VPLinear()
    x = vp.prior_sample(jax.random.key(0), (s["batch"], cfg["image_shape"][0], cfg["image_shape"][0], 3))
    rows = []
    for dtype_name, dtype in (("float32", None), ("bfloat16", jnp.bfloat16)):
        score = _score(cfg, vp, dtype)
        n_loop = 10
        (t_loop,) = time_interleaved([lambda: _score_loop(score, x, n_loop)], s["repeats"])
        t_net = t_loop / n_loop
        for solver in SOLVERS:
            for nfe in s["nfes"]:
                steps = max(1, nfe // 4) if solver == "rk4" else nfe
                ts = make_times(vp, num_steps=steps, grid="log_snr")
                run = jax.jit(lambda score, x, ts, solver=solver: solve(score, vp, x, ts, solver, throw=False).samples)
                fns = [lambda: run(score, x, ts)]
                if solver == "rk4":
                    fns.append(lambda: diffrax_fixed_step(score, vp, x, solver="rk4", num_steps=steps, grid="log_snr"))
                times = time_interleaved(fns, s["repeats"])
                real_nfe = 4 * steps if solver == "rk4" else steps
                rows.append(dict(dtype=dtype_name, solver=solver, nfe=real_nfe, t=times[0], t_net=t_net,
                                 overhead=times[0] / (real_nfe * t_net),
                                 vs_diffrax=times[0] / times[1] if len(times) > 1 else None,
                                 samples_per_s=s["batch"] / times[0]))
                print(f"  {dtype_name} {solver} NFE {real_nfe}: {times[0] * 1e3:.1f} ms", flush=True)
    return rows


def regularity_rows(s, tiny: bool) -> list[dict]:
    from jaxode_diffusion import VPLinear
    from jaxode_diffusion.analysis.regularity import jacobian_norm, second_derivative_norm

    vp = VPLinear()
    rows = []
    for image in s["reg_images"]:
        cfg = _unet_config(image, tiny)
        score = _score(cfg, vp)
        x = vp.prior_sample(jax.random.key(1), (s["reg_batch"], image, image, 3), t=0.5)
        it = s["reg_iters"]
        jac = lambda: jacobian_norm(score, x, 0.5, method="matrix_free", num_iters=it, tol=0.0)
        sec = lambda: second_derivative_norm(score, x, 0.5, method="matrix_free", num_iters=it, tol=0.0,
                                             num_restarts=2)
        t_jac, t_sec = time_interleaved([jac, sec], max(1, s["repeats"] // 2))
        rows.append(dict(d=image * image * 3, batch=s["reg_batch"], iters=it, t_jac=t_jac, t_sec=t_sec))
        print(f"  regularity d={image * image * 3}: {t_jac:.3f} s, {t_sec:.3f} s", flush=True)
    return rows


def training_row(cfg, s) -> dict:
    from jaxode_diffusion import VPLinear
    from jaxode_diffusion.models import build_model
    from jaxode_diffusion.training import TrainConfig, dsm_loss, make_optimizer

    vp = VPLinear()
    net = build_model(cfg, seed=0)
    graphdef, state = nnx.split(net)
    params = nnx.to_pure_dict(state)
    tx = make_optimizer(TrainConfig(steps=1000, warmup_steps=10))
    opt = tx.init(params)
    image = cfg["image_shape"][0]
    x = jax.random.normal(jax.random.key(2), (s["train_batch"], image, image, 3)) * 0.5

    @jax.jit
    def step(p, o, k):
        loss, g = jax.value_and_grad(lambda p: dsm_loss(nnx.merge(graphdef, p), vp, x, k))(p)
        u, o = tx.update(g, o, p)
        return optax.apply_updates(p, u), o, loss

    def run():
        p, o = params, opt
        for i in range(s["train_steps"]):
            p, o, loss = step(p, o, jax.random.key(i))
        return loss

    (t,) = time_interleaved([run], max(1, s["repeats"] // 2))
    return dict(batch=s["train_batch"], steps_per_s=s["train_steps"] / t)


def render(sampler, reg, train, *, command: str, tiny: bool, elapsed: float) -> str:
    dev = jax.devices()[0]
    s = TINY if tiny else FULL
    lines = [
        "# Device suite" + (" (CPU tiny settings: a smoke run, not a measurement)" if tiny else ""),
        "",
        f"Device: {dev.platform} ({dev.device_kind}), {len(jax.devices())} device(s); host "
        f"{platform.machine()}, {os.cpu_count()} CPUs; JAX {jax.__version__}; date "
        f"{datetime.datetime.now().isoformat(timespec='minutes')}; wall time {elapsed:.0f} s.",
        "",
        f"Command: `{command}`",
        "",
    ]
    if dev.platform == "cpu":
        lines += [
            "**No GPU/TPU was available to this run: it ran on the CPU, so the table checks that the "
            "suite works and says nothing about accelerator performance.**",
            "",
        ]
    lines += [
        f"U-Net {s['image']}x{s['image']}x3 (UNET_PATCHES32{'; tiny: one level, 4 channels' if tiny else ''}, "
        "random init), "
        f"batch {s['batch']}, VP-linear, log-SNR grid. overhead = sampler time / (NFE x one network "
        "evaluation); ours / diffrax on the same RK4 tableau and grid.",
        "",
        "| network dtype | solver | NFE | sampler time | network time | overhead | ours / diffrax | samples/s |",
        "|---|---|---|---|---|---|---|---|",
    ]
    for r in sampler:
        vs = f"{r['vs_diffrax']:.3f}" if r["vs_diffrax"] is not None else "-"
        lines.append(
            f"| {r['dtype']} | {r['solver']} | {r['nfe']} | {r['t'] * 1e3:.2f} ms | {r['t_net'] * 1e3:.3f} ms | "
            f"{r['overhead']:.3f} | {vs} | {r['samples_per_s']:.1f} |"
        )
    lines += [
        "",
        "Regularity cost (random-init U-Net, matrix-free, fixed iterations, t = 0.5):",
        "",
        "| d | batch | iterations | ‖Ds‖₂ | ‖D²s‖_op (2 restarts + 4 sketched starts) |",
        "|---|---|---|---|---|",
    ]
    for r in reg:
        lines.append(f"| {r['d']} | {r['batch']} | {r['iters']} | {r['t_jac']:.3f} s | {r['t_sec']:.3f} s |")
    lines += ["", f"Training (DSM, AdamW, batch {train['batch']}): {train['steps_per_s']:.2f} steps/s.", ""]
    return "\n".join(lines)


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--tiny", action="store_true", help="CPU smoke settings (the test suite's)")
    ap.add_argument("--out", default=str(ROOT / "benchmarks" / "results" / "device_suite.md"))
    args = ap.parse_args(argv)
    t0 = time.perf_counter()
    s = TINY if args.tiny else FULL
    cfg = _unet_config(s["image"], args.tiny)
    print(f"device: {jax.devices()[0]}", flush=True)
    sampler = sampler_rows(cfg, s)
    reg = regularity_rows(s, args.tiny)
    train = training_row(cfg, s)
    command = "python -m benchmarks.device_suite" + (" --tiny" if args.tiny else "")
    text = render(sampler, reg, train, command=command, tiny=args.tiny, elapsed=time.perf_counter() - t0)
    Path(args.out).parent.mkdir(parents=True, exist_ok=True)
    Path(args.out).write_text(text)
    print(text)
    return 0


if __name__ == "__main__":
    sys.exit(main())
