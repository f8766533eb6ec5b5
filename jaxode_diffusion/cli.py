"""The ``jaxode-diffusion`` command.

Subcommands are contributed by modules with a ``register(subparsers)`` function:

* ``convergence`` (this module): empirical orders with exact scores, printed as a table;
* ``train`` / ``sample`` (:mod:`jaxode_diffusion.cli_models`);
* ``regularity`` (:mod:`jaxode_diffusion.cli_regularity`);
* ``study`` (:mod:`jaxode_diffusion.study`): the whole study and its report.
"""

from __future__ import annotations

import argparse
import importlib
import json
import sys

_SUBCOMMAND_MODULES = (
    "jaxode_diffusion.cli",
    "jaxode_diffusion.cli_models",
    "jaxode_diffusion.cli_regularity",
    "jaxode_diffusion.study",
)


def _convergence(args) -> int:
    import jax

    jax.config.update("jax_enable_x64", True)
    from .convergence import convergence_study, reference_solve
    from .processes import get_process
    from .sampling import get_solver
    from .targets import GaussianMixture

    process = get_process(args.process)
    gm = GaussianMixture.random(jax.random.PRNGKey(args.seed), args.components, args.dim,
                                scale=1.0, min_var=0.2, max_var=0.6)
    score_fn = gm.score_fn(process)
    x0 = gm.sample_marginal(jax.random.PRNGKey(args.seed + 1), args.batch, process, process.default_t_start)
    t_end = args.t_end if args.t_end is not None else process.default_t_end
    ref = reference_solve(score_fn, process, x0, t_end=t_end)
    steps = [int(s) for s in args.steps.split(",")]
    rows = []
    print(f"# Empirical orders: {args.dim}-D Gaussian mixture ({args.components} components), "
          f"process={args.process}, grid={args.grid}, float64, exact score")
    print("| solver | design order | steps | errors (RMSE vs diffrax Dopri8 rtol=1e-11) | fitted order |")
    print("|---|---|---|---|---|")
    for spec in args.solvers.split(","):
        solver = get_solver(spec)
        mult = max(1, 2 ** (4 - solver.order)) if args.scale_steps else 1
        counts = [s * mult for s in steps]
        r = convergence_study(score_fn, process, x0, solver, counts, grid=args.grid, t_end=t_end, reference=ref)
        rows.append(r.to_dict())
        errs = ", ".join(f"{e:.2e}" for e in r.errors)
        print(f"| {spec} | {r.design_order} | {counts} | {errs} | {r.order:.2f} |", flush=True)
    if args.json:
        with open(args.json, "w") as fh:
            json.dump(rows, fh, indent=2)
    return 0


def register(subparsers) -> None:
    p = subparsers.add_parser(
        "convergence",
        help="empirical convergence orders of solvers on a Gaussian mixture with exact score",
    )
    p.add_argument("--solvers", default="x-t:euler,x-t:heun,x-t:kutta3,x-t:rk4,x0-lambda:heun,"
                   "x0-lambda:rk4,eps-rho:rk4,ou:rk4,ou-exp:rk4")
    p.add_argument("--steps", default="16,32,64", help="comma-separated step counts")
    p.add_argument("--scale-steps", action=argparse.BooleanOptionalAction, default=True,
                   help="multiply step counts by 2^(4-order) so low orders reach their asymptotic regime")
    p.add_argument("--dim", type=int, default=2)
    p.add_argument("--components", type=int, default=3)
    p.add_argument("--batch", type=int, default=64)
    p.add_argument("--process", default="vp_linear")
    p.add_argument("--grid", default="log_snr")
    p.add_argument("--t-end", type=float, default=None)
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--json", default=None, help="also write the rows as JSON here")
    p.set_defaults(func=_convergence)


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="jaxode-diffusion",
        description="High-order ODE samplers for diffusion models: study, train, sample, measure.",
    )
    sub = parser.add_subparsers(dest="command", required=True)
    for mod in _SUBCOMMAND_MODULES:
        importlib.import_module(mod).register(sub)
    return parser


def main(argv=None) -> int:
    args = build_parser().parse_args(argv)
    rc = args.func(args)
    return rc if isinstance(rc, int) else 0


if __name__ == "__main__":
    sys.exit(main())
