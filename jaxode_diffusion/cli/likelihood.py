"""``likelihood`` subcommand: log-likelihood and bits per dimension of data under a trained model.

Usage::

    jaxode-diffusion likelihood --checkpoint runs/moons --data two_moons --num-steps 32 --out ll.json
    jaxode-diffusion likelihood --checkpoint runs/p16 --data pixels.npy --levels 256 --num-steps 32 \\
        --trace hutchinson --out ll.json

Units. The data are read in their raw units (a named dataset's held-out split is mapped back to
raw units; a ``.npy`` file is taken as raw) and mapped to the model's space with the run's own
normalisation ``x_model = (x_raw - shift) / scale``; the reported log-density is that of the raw
data, ``log p_raw = log p_model - sum_i log scale_i``. With ``--levels L`` the raw values must be
integer levels ``k = 0..L-1`` (e.g. uint8 pixels); they are dequantised uniformly,
``x_raw = k + u``, ``u ~ U[0, 1)`` (score_sde's convention in units of one level, bin width 1), and
``bpd = -log p_raw(x_raw) / (d log 2)``: an upper bound, in expectation over ``u``, on the discrete
negative log2-likelihood per dimension. For 8-bit data with a model trained on ``k / 127.5 - 1``
this equals :func:`~jaxode_diffusion.analysis.likelihood.bits_per_dim` with ``bin_width = 1/127.5``.
Without ``--levels`` the data are continuous and ``bpd = -log p_raw / (d log 2)`` is the
differential entropy rate in bits (it can be negative).
"""

from __future__ import annotations

import math
import time

from jaxode_diffusion.cli.args import positive_int

__all__ = ["register", "cmd_likelihood"]


def register(subparsers) -> None:
    """Add the ``likelihood`` subcommand to an ``argparse`` subparsers object."""
    p = subparsers.add_parser(
        "likelihood",
        help="log-likelihood (nats) and bits per dim of data under a trained model (probability-flow ODE)",
        description="Exact log-likelihood of data under a trained score model through the probability-flow ODE.",
    )
    p.add_argument("--checkpoint", required=True, help="run directory written by `train`")
    p.add_argument("--data", required=True,
                   help="a dataset name (its held-out split: gmm, two_moons, digits, patches16, ...) or PATH.npy (raw units)")
    p.add_argument("--num-steps", type=positive_int, required=True, help="ODE steps (NFE = steps x stages)")
    p.add_argument("--out", required=True, help="output JSON file")
    p.add_argument("--solver", default="rk4", help='an RK tableau, optionally in a form: "rk4", "x0-snr:rk4"')
    p.add_argument("--grid", default=None,
                   help="uniform, log_snr, edm, quadratic (default: the measured best for the solver)")
    p.add_argument("--t-end", type=float, default=None, help="data-end time (default: the process's)")
    p.add_argument("--trace", default="auto", choices=("auto", "exact", "hutchinson"),
                   help="divergence: exact (D jvps per stage), hutchinson (Rademacher probes); auto: exact if D <= 64")
    p.add_argument("--num-probes", type=positive_int, default=16, help="Hutchinson probes per sample")
    p.add_argument("--batch-size", type=positive_int, default=256)
    p.add_argument("--max-samples", type=positive_int, default=None, help="use only the first N samples")
    p.add_argument("--levels", type=positive_int, default=None,
                   help="raw data are integer levels 0..L-1: dequantise uniformly and report bpd per level")
    p.add_argument("--seed", type=int, default=0, help="seed of the probes and the dequantisation noise")
    p.set_defaults(func=cmd_likelihood)


def _raw_data(name: str, event_shape):
    import numpy as np

    from jaxode_diffusion.training.data import load_dataset, unnormalize

    if name.endswith(".npy"):
        try:
            raw = np.load(name)
        except OSError as err:
            raise ValueError(f"--data {name!r}: cannot read the file ({err}); pass an existing .npy array.") from err
    else:
        ds = load_dataset(name)
        raw = unnormalize(ds.heldout, ds.meta)
    raw = np.asarray(raw)
    if raw.ndim == len(event_shape) and tuple(raw.shape) == tuple(event_shape):
        raw = raw[None]
    if tuple(raw.shape[1:]) != tuple(event_shape):
        raise ValueError(
            f"--data {name!r}: samples have shape {tuple(raw.shape[1:])} but the model's event shape is "
            f"{tuple(event_shape)}; pass data of the kind the model was trained on."
        )
    if not np.issubdtype(raw.dtype, np.number) or np.issubdtype(raw.dtype, np.complexfloating):
        raise ValueError(f"--data {name!r} has dtype {raw.dtype}; pass an array of real numbers.")
    if raw.shape[0]:
        bad = ~np.isfinite(raw.reshape(raw.shape[0], -1).astype(np.float64)).all(axis=1)
        if bad.any():
            raise ValueError(
                f"--data {name!r}: row {int(np.argmax(bad))} holds NaN/inf ({int(bad.sum())} of {raw.shape[0]} "
                "rows); a likelihood needs finite data: drop or fix those rows (the model is not at fault)."
            )
    return raw


def _check_finite_ll(ll, first, args) -> None:
    """Raise naming the first data row whose log-likelihood is NaN/inf, and the step where it turned."""
    import numpy as np

    if np.all(np.isfinite(ll)):
        return
    bad = int(np.argmin(np.isfinite(ll)))
    where = f" (its trajectory turned NaN/inf at step {int(first[bad])})" if first[bad] >= 0 else ""
    raise ValueError(
        f"non-finite log-likelihood for data row {bad}{where}, {int(np.sum(~np.isfinite(ll)))} rows in all; "
        f"the data are finite, so check the model's score there; if it is finite, raise --num-steps "
        f"{args.num_steps}."
    )


def cmd_likelihood(args) -> int:
    import jax
    import jax.numpy as jnp
    import numpy as np

    from jaxode_diffusion.sampling.defaults import default_grid_for
    from jaxode_diffusion.analysis.likelihood import log_likelihood
    from jaxode_diffusion.utils.outputs import dumps_json, ensure_output_file
    from jaxode_diffusion.training import load_run

    out = ensure_output_file(args.out, "--out")
    score_fn, run_cfg = load_run(args.checkpoint)
    meta = run_cfg["data"]
    event_shape = tuple(meta["event_shape"])
    dim = int(np.prod(event_shape))
    process = score_fn.process
    raw = _raw_data(args.data, event_shape)
    if args.max_samples is not None:
        raw = raw[: args.max_samples]
    if raw.shape[0] == 0:
        raise ValueError(f"--data {args.data!r} holds no samples.")
    key = jax.random.key(args.seed)
    k_deq, k_probe = jax.random.split(key)
    if args.levels is not None:
        if np.any(raw != np.round(raw)) or raw.min() < 0 or raw.max() > args.levels - 1:
            raise ValueError(
                f"--levels {args.levels}: the data must be integers in [0, {args.levels - 1}]; got values in "
                f"[{raw.min()!r}, {raw.max()!r}]. Drop --levels for continuous data."
            )
        raw = raw.astype(np.float64) + np.asarray(jax.random.uniform(k_deq, raw.shape, dtype=jnp.float32))
    shift = np.broadcast_to(np.asarray(meta.get("shift", 0.0), np.float64), event_shape)
    scale = np.broadcast_to(np.asarray(meta.get("scale", 1.0), np.float64), event_shape)
    log_jac = -float(np.sum(np.log(np.abs(scale))))  # log |d x_model / d x_raw|
    x_model = ((raw - shift) / scale).astype(np.float32)
    trace = args.trace if args.trace != "auto" else ("exact" if dim <= 64 else "hutchinson")
    n = x_model.shape[0]
    bs = min(args.batch_size, n)
    lls, ses, firsts, nfe, num_jvps = [], [], [], 0, 0
    t0 = time.time()
    for i, start in enumerate(range(0, n, bs)):
        xb = x_model[start: start + bs]
        m = xb.shape[0]
        if m < bs:  # pad the last batch: one compiled program for every batch
            xb = np.concatenate([xb, np.repeat(xb[-1:], bs - m, 0)], 0)
        res = log_likelihood(score_fn, process, jnp.asarray(xb), solver=args.solver, num_steps=args.num_steps,
                             t_end=args.t_end, grid=args.grid, trace=trace, num_probes=args.num_probes,
                             key=jax.random.fold_in(k_probe, i), throw=False)
        firsts.append(np.asarray(res.first_nonfinite_step)[:m])
        lls.append(np.asarray(res.log_likelihood, np.float64)[:m])
        ses.append(np.asarray(res.stderr, np.float64)[:m])
        nfe, num_jvps = res.nfe, res.num_jvps
    ll = np.concatenate(lls) + log_jac
    se = np.concatenate(ses)
    _check_finite_ll(ll, np.concatenate(firsts), args)
    bpd = -ll / (dim * math.log(2.0))
    mean = float(ll.mean())
    # Standard error of the mean: spread over samples (includes the probes' noise) -- the number
    # to quote for a data set; the per-sample Hutchinson errors are reported beside it.
    sem = float(ll.std(ddof=1) / math.sqrt(n)) if n > 1 else float("nan")
    summary = dict(
        checkpoint=str(args.checkpoint), data=args.data, num_samples=int(n), dim=dim,
        process=type(process).__name__, solver=args.solver,
        grid=args.grid if args.grid is not None else default_grid_for(args.solver, process), num_steps=args.num_steps,
        t_end=res.t_end, t_start=res.t_start, trace=trace, num_probes=args.num_probes if trace == "hutchinson" else None,
        nfe_per_sample=nfe, jvps_per_sample=num_jvps, levels=args.levels,
        prior=f"N(0, c(T)^2 I), c(T) = {float(process.c(res.t_start)):.6g}",
        units="raw data units" + (" (dequantised levels, bin width 1)" if args.levels else ""),
        mean_log_likelihood_nats=mean, sem_nats=sem, mean_bits_per_dim=float(bpd.mean()),
        sem_bits_per_dim=sem / (dim * math.log(2.0)),
        mean_hutchinson_stderr_nats=float(np.nanmean(se)) if trace == "hutchinson" else 0.0,
        log_likelihood_nats=ll.tolist(), hutchinson_stderr_nats=se.tolist(), seconds=time.time() - t0,
    )
    out.write_text(dumps_json(summary, indent=1))
    print(f"log-likelihood {mean:.4f} +- {sem:.2g} nats/sample, {summary['mean_bits_per_dim']:.4f} bits/dim "
          f"({n} samples, d={dim}, {trace} trace, NFE {nfe}) -> {out}")
    return 0
