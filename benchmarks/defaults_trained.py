"""The measured default grids checked on *trained* 2-D models (what users sample), not exact scores.

For each run directory given (trained with ``jaxode-diffusion train --data NAME --steps S --out DIR``),
every listed solver runs on every named grid at 5 and 10 steps from 256 draws of the prior; the
end-point RMSE is against ``reference_solve`` of the same model (rtol = atol = 1e-7, float64). Each
row prints the error on ``default_grid_for(solver)``, the best named grid and their ratio.

Run (the table in ``benchmarks/results/defaults_trained.md`` came from these)::

    jaxode-diffusion train --data two_moons --steps 400 --out /tmp/m2d
    jaxode-diffusion train --data checkerboard --steps 1500 --out /tmp/m_checkerboard   # also
    #   eight_gaussians, swiss_roll, two_moons --seed 3 (1500 steps each)
    python benchmarks/defaults_trained.py /tmp/m2d /tmp/m_checkerboard ...
"""

import sys

import jax

jax.config.update("jax_enable_x64", True)

import jax.numpy as jnp  # noqa: E402

import jaxode_diffusion as jd  # noqa: E402
from jaxode_diffusion.convergence import reference_solve  # noqa: E402
from jaxode_diffusion.defaults import default_grid_for  # noqa: E402
from jaxode_diffusion.training import load_run  # noqa: E402

SOLVERS = ["x0-lambda:rk4", "x0-lambda:heun", "eps-rho:heun", "x0-snr:heun", "ou-exp:heun", "dpm_solver_2",
           "dpm_solver_3", "dpmpp_2s", "dpmpp_2m", "dpmpp_3m", "unipc_bh1_2", "unipc_bh2_2", "unipc_bh2_3",
           "deis_ab2", "ddim", "edm_heun", "rk4"]


def main(runs, seed=1):
    for run in runs:
        score_fn, _ = load_run(run)
        proc = score_fn.process
        x = proc.prior_sample(jax.random.PRNGKey(seed), (256, 2))
        ref = reference_solve(score_fn, proc, x, t_end=proc.default_t_end, rtol=1e-7, atol=1e-7)
        print(f"== {run}", flush=True)
        for s in SOLVERS:
            for n in (5, 10):
                row = {}
                for g in jd.GRID_NAMES:
                    y = jd.sample(score_fn, proc, x, solver=s, num_steps=n, grid=g, check_finite=False)
                    row[g] = float(jnp.sqrt(jnp.mean(jnp.sum((y - ref) ** 2, 1))))
                d = default_grid_for(s)
                best = min(row, key=lambda k: row[k] if row[k] == row[k] else float("inf"))
                print(f"{s:16s} N={n:2d} default={d:9s} {row[d]:.4f} best={best:9s} {row[best]:.4f} "
                      f"ratio={row[d] / row[best]:.2f}  " + " ".join(f"{k}:{v:.3f}" for k, v in row.items()),
                      flush=True)


if __name__ == "__main__":
    main(sys.argv[1:])
