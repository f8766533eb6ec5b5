"""Test configuration for the whole test command (tests, notebooks and the package's doctests).

float64 for reference checks (house style #12) and 8 host devices for the sharding tests: both
must be set before JAX initialises its backend, so they live in the root conftest that pytest
loads first.
"""

import os

# Appended, not setdefault: pytest imports jaxode_diffusion._moved (to resolve the filterwarnings
# category in pyproject) before this file runs, and the package's __init__ has then already put its
# scheduler flag into XLA_FLAGS. JAX reads the flags only when its backend starts, which is later.
if "xla_force_host_platform_device_count" not in os.environ.get("XLA_FLAGS", ""):
    os.environ["XLA_FLAGS"] = (os.environ.get("XLA_FLAGS", "") + " --xla_force_host_platform_device_count=8").strip()
# The CPU "concurrency optimized" scheduler of XLA (JAX 0.10) deadlocks on some sampler programs
# (see jaxode_diffusion/__init__.py); the package disables it, and so do the tests.
if "concurrency_optimized_scheduler" not in os.environ["XLA_FLAGS"]:
    os.environ["XLA_FLAGS"] += " --xla_cpu_enable_concurrency_optimized_scheduler=false"
# Test sessions only (never the package or user runs): most test time on CPU is XLA compiling
# many small programs, not running them. The legacy (non-fusion-emitter) CPU codegen at LLVM -O0
# compiles ~2.5x faster (the grad-through-solve program: 13 s -> 3.7 s CPU) and moved the
# order-test samples by <= 4e-15 relative, far inside every tolerance. Subprocesses the tests
# start (distributed workers, benchmarks, notebook kernels) get the same flags through
# JAXODE_TEST_COMPILE_FLAGS / XLA_FLAGS. JAXODE_TEST_FULL_OPT=1 compiles as users do.
TEST_COMPILE_FLAGS = (
    "" if os.environ.get("JAXODE_TEST_FULL_OPT") == "1"
    else "--xla_cpu_use_fusion_emitters=false --xla_backend_optimization_level=0"
)
os.environ["JAXODE_TEST_COMPILE_FLAGS"] = TEST_COMPILE_FLAGS
if TEST_COMPILE_FLAGS and "xla_backend_optimization_level" not in os.environ["XLA_FLAGS"]:
    os.environ["XLA_FLAGS"] += " " + TEST_COMPILE_FLAGS

# Test sessions only: a persistent XLA compilation cache in a fresh temporary directory, created by
# the first process of the test command (pytest's controller) and inherited through the environment
# by the xdist workers, notebook kernels and subprocesses, which then reuse each other's programs:
# many tests compile the same solver on the same problem. It starts empty on every run (no state
# between runs) and is removed at exit. Measured on tests/test_solver_contracts.py alone on one
# core: 222 s -> 186 s. A user's own cache setting (JAX_COMPILATION_CACHE_DIR) is left alone.
if "JAX_COMPILATION_CACHE_DIR" not in os.environ and os.environ.get("JAXODE_TEST_NO_CACHE") != "1":
    import atexit
    import shutil
    import tempfile

    _cache_dir = tempfile.mkdtemp(prefix="jaxode-test-xla-cache-")
    atexit.register(shutil.rmtree, _cache_dir, ignore_errors=True)
    os.environ["JAX_COMPILATION_CACHE_DIR"] = _cache_dir
    os.environ["JAX_PERSISTENT_CACHE_MIN_COMPILE_TIME_SECS"] = "0"
    os.environ["JAX_PERSISTENT_CACHE_MIN_ENTRY_SIZE_BYTES"] = "-1"

# Notebooks run by nbmake (kernels inherit this environment) use smaller sample sets where a cell
# says so (JAXODE_NOTEBOOK_QUICK); set it to 0 to run them as a user does.
os.environ.setdefault("JAXODE_NOTEBOOK_QUICK", "1")

import jax  # noqa: E402

jax.config.update("jax_enable_x64", True)

import pytest  # noqa: E402

_REGISTRY_MODULES = ("jaxode_diffusion.solvers.registry", "jaxode_diffusion.solvers.tableaux")


@pytest.fixture(autouse=True)
def _restore_solver_registries():
    """Every test and doctest leaves the solver and tableau registries as it found them.

    ``register_solver`` and ``tableaux.register`` add to module-level dicts; a name registered by
    one test (or doctest) would otherwise show up in ``solver_names()`` / ``tableaux.names()`` of
    every later test in the same worker (tune's default scan included), so results would depend
    on the order. Each module-level dict of the two registry modules is copied before the test
    and restored in place after it (in place: other modules hold references to the same dicts).
    """
    import importlib

    saved = []
    for name in _REGISTRY_MODULES:
        module = importlib.import_module(name)
        for attr, value in vars(module).items():
            if type(value) is dict and not attr.startswith("__"):
                saved.append((value, dict(value)))
    yield
    for live, copy in saved:
        live.clear()
        live.update(copy)
