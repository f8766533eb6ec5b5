"""How a time grid and a solver are chosen for a model, from cheapest to most thorough.

The ladder, each rung in one place:

1. a named grid (``uniform``, ``log_snr``, ``edm``, ``quadratic``):
   :func:`jaxode_diffusion.sampling.grids.make_grid`;
2. the measured table of the best named grid per solver and clock, the default of ``sample``:
   :func:`jaxode_diffusion.sampling.defaults.default_grid_for`;
3. ``autogrid.py``: :func:`choose_grid`, a pilot that solves a few draws on every named grid
   against a tight reference of the model and keeps the best (the CLI's ``--grid auto``);
4. ``error_grids.py``: :func:`error_grid`, grids placed by the model's measured local error;
5. ``grid_optimization.py``: :func:`optimize_grid`, a grid learned by gradient through the
   sampler;
6. ``tuner.py``: :func:`tune`, every solver on every grid (and learned grids for the best), scored on
   a held-back batch, the winner saved as JSON for ``sample --tuned``;
7. ``learned.py``: :func:`learn_solver`, the per-step coefficients and the grid of a solver's order
   family fitted to the model (``tune(..., learn_solver=True)`` adds one to the candidates).
"""


from jaxode_diffusion.tuning.autogrid import (
    choose_grid,
    GridChoice,
)
from jaxode_diffusion.tuning.error_grids import (
    equidistributed_grid,
    error_grid,
    error_grid_candidates,
    ErrorGrid,
    local_error_costs,
    min_cost_path,
    proxy_solver,
    teacher_states,
)
from jaxode_diffusion.tuning.grid_optimization import (
    evaluate_grid,
    grid_from_logits,
    load_grid,
    NonFiniteGridLossError,
    optimize_grid,
    OptimizedGrid,
)
from jaxode_diffusion.tuning.learned import (
    learn_solver,
    LearnedSolver,
    load_learned,
)
from jaxode_diffusion.tuning.tuner import (
    DEFAULT_FORM_TABLEAUX,
    load_tuned,
    SCAN_PRIORITY,
    tune,
    TunedSampler,
)

__all__ = [
    "choose_grid",
    "DEFAULT_FORM_TABLEAUX",
    "equidistributed_grid",
    "error_grid",
    "error_grid_candidates",
    "ErrorGrid",
    "evaluate_grid",
    "grid_from_logits",
    "GridChoice",
    "learn_solver",
    "LearnedSolver",
    "load_grid",
    "load_learned",
    "load_tuned",
    "local_error_costs",
    "min_cost_path",
    "NonFiniteGridLossError",
    "optimize_grid",
    "OptimizedGrid",
    "proxy_solver",
    "SCAN_PRIORITY",
    "teacher_states",
    "tune",
    "TunedSampler",
]
