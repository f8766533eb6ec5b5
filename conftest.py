"""Test configuration for the whole test command (tests, notebooks and the package's doctests).

float64 for reference checks (house style #12) and 8 host devices for the sharding tests: both
must be set before JAX initialises its backend, so they live in the root conftest that pytest
loads first.
"""

import os

os.environ.setdefault("XLA_FLAGS", "--xla_force_host_platform_device_count=8")
# The CPU "concurrency optimized" scheduler of XLA (JAX 0.10) deadlocks on some sampler programs
# (see jaxode_diffusion/__init__.py); the package disables it, and so do the tests.
if "concurrency_optimized_scheduler" not in os.environ["XLA_FLAGS"]:
    os.environ["XLA_FLAGS"] += " --xla_cpu_enable_concurrency_optimized_scheduler=false"

import jax  # noqa: E402

jax.config.update("jax_enable_x64", True)
