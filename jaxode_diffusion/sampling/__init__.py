"""The sampling core: a solver, a time grid and a score, compiled into one XLA program.

Files:

* ``core.py``: :func:`solve` (the jit-able core on an explicit grid, returning a
  :class:`Solution` with result codes), :func:`sample` (names to grid to solve),
  :func:`make_times`, and ``make_plan`` / ``init`` / ``step`` for manual stepping;
* ``grids.py``: the named time grids (``uniform``, ``log_snr``, ``edm``, ``quadratic``);
* ``defaults.py``: the measured table of the best named grid for each solver and clock, used when
  no grid is given;
* ``distributed.py``: sampling across devices and processes with JAX's sharding.

How a grid is *chosen* beyond the named grids and the measured table (a pilot, error grids,
gradient optimisation, the full ``tune``) lives one layer up, in :mod:`jaxode_diffusion.tuning`.
"""


from jaxode_diffusion.sampling.core import (
    Conditioned,
    current_x,
    get_solver,
    init,
    make_plan,
    make_times,
    NonFiniteSampleError,
    Plan,
    register_solver,
    RESULTS,
    sample,
    SamplerState,
    Solution,
    solve,
    solver_names,
    step,
)
from jaxode_diffusion.sampling.grids import (
    check_num_steps,
    grid_is_valid,
    GRID_NAMES,
    make_grid,
    validate_grid,
)
from jaxode_diffusion.sampling.defaults import (
    clock_of,
    default_grid_for,
    DEFAULT_NUM_STEPS,
    DEFAULT_SOLVER,
    FORM_GRIDS,
    NOISE_CLOCK_GRIDS,
    NOISE_FORM_GRIDS,
    NOISE_OVERALL_GRID,
    OVERALL_GRID,
    SOLVER_GRIDS,
)
from jaxode_diffusion.sampling.distributed import (
    batch_mesh,
    batch_sharding,
    gather,
    replicate,
    sample_multiprocess,
    sample_sharded,
    shard_batch,
    shard_local_batch,
)

__all__ = [
    "batch_mesh",
    "batch_sharding",
    "check_num_steps",
    "clock_of",
    "Conditioned",
    "current_x",
    "default_grid_for",
    "DEFAULT_NUM_STEPS",
    "DEFAULT_SOLVER",
    "FORM_GRIDS",
    "gather",
    "get_solver",
    "grid_is_valid",
    "GRID_NAMES",
    "init",
    "make_grid",
    "make_plan",
    "make_times",
    "NOISE_CLOCK_GRIDS",
    "NOISE_FORM_GRIDS",
    "NOISE_OVERALL_GRID",
    "NonFiniteSampleError",
    "OVERALL_GRID",
    "Plan",
    "register_solver",
    "replicate",
    "RESULTS",
    "sample",
    "sample_multiprocess",
    "sample_sharded",
    "SamplerState",
    "shard_batch",
    "shard_local_batch",
    "Solution",
    "solve",
    "SOLVER_GRIDS",
    "solver_names",
    "step",
    "validate_grid",
]
