"""``convergence`` subcommand: empirical orders of solvers with exact scores, printed as a table.

Usage::

    jaxode-diffusion convergence --solvers x-t:rk4,x0-lambda:heun --steps 16,32,64 --json orders.json
"""

from __future__ import annotations

import argparse
from pathlib import Path

from jaxode_diffusion.cli.args import int_list, parse_names, positive_int

__all__ = ["register", "cmd_convergence"]


def register(subparsers) -> None:
    """Add the ``convergence`` subcommand to an ``argparse`` subparsers object."""
    p = subparsers.add_parser(
        "convergence",
        help="empirical convergence orders of solvers on a Gaussian mixture with exact score",
    )
    p.add_argument("--solvers", default="x-t:euler,x-t:heun,x-t:kutta3,x-t:rk4,x0-lambda:heun,"
                   "x0-lambda:rk4,eps-rho:rk4,ou:rk4,ou-exp:rk4")
    p.add_argument("--steps", type=int_list, default="16,32,64", help="comma-separated step counts")
    p.add_argument("--scale-steps", action=argparse.BooleanOptionalAction, default=True,
                   help="multiply step counts by 2^(4-order) so low orders reach their asymptotic regime")
    p.add_argument("--dim", type=positive_int, default=2)
    p.add_argument("--components", type=positive_int, default=3)
    p.add_argument("--batch", type=positive_int, default=64)
    p.add_argument("--process", default="vp_linear")
    p.add_argument("--grid", default="log_snr")
    p.add_argument("--t-end", type=float, default=None)
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--json", default=None, help="also write the rows as JSON here")
    p.set_defaults(func=cmd_convergence)


def cmd_convergence(args) -> int:
    """Run the ``convergence`` subcommand for parsed ``args``: print the table, write ``--json``."""
    import jax

    _check_convergence_args(args)
    jax.config.update("jax_enable_x64", True)
    from jaxode_diffusion.analysis.convergence import convergence_study
    from jaxode_diffusion.analysis.diffrax_drivers import reference_solve
    from jaxode_diffusion.models.mixture import GaussianMixture
    from jaxode_diffusion.processes import get_process
    from jaxode_diffusion.sampling.core import get_solver
    from jaxode_diffusion.utils.outputs import dumps_json

    process = get_process(args.process)
    gm = GaussianMixture.random(jax.random.PRNGKey(args.seed), args.components, args.dim,
                                scale=1.0, min_var=0.2, max_var=0.6)
    score_fn = gm.score_fn(process)
    x0 = gm.sample_marginal(jax.random.PRNGKey(args.seed + 1), args.batch, process, process.default_t_start)
    t_end = args.t_end if args.t_end is not None else process.default_t_end
    ref = reference_solve(score_fn, process, x0, t_end=t_end)
    rows = []
    print(f"# Empirical orders: {args.dim}-D Gaussian mixture ({args.components} components), "
          f"process={args.process}, grid={args.grid}, float64, exact score")
    print("| solver | design order | steps | errors (RMSE vs diffrax Dopri8 rtol=1e-11) | fitted order |")
    print("|---|---|---|---|---|")
    for spec in parse_names(args.solvers):
        solver = get_solver(spec)
        mult = max(1, 2 ** (4 - solver.order)) if args.scale_steps else 1
        counts = [s * mult for s in args.steps]
        r = convergence_study(score_fn, process, x0, solver, counts, grid=args.grid, t_end=t_end, reference=ref)
        rows.append(r.to_dict())
        errs = ", ".join(f"{e:.2e}" for e in r.errors)
        print(f"| {spec} | {r.design_order} | {counts} | {errs} | {r.order:.2f} |", flush=True)
    if args.json:
        Path(args.json).write_text(dumps_json(rows, indent=2))
    return 0


def _check_convergence_args(args) -> None:
    # Before the (minutes-long) study: a --json path that cannot be written is reported now.
    if args.json:
        from jaxode_diffusion.utils.outputs import ensure_output_file

        ensure_output_file(args.json, "--json")
