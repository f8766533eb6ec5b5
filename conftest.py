"""Test configuration for the whole test command (tests, notebooks and the package's doctests).

float64 for reference checks (house style #12) and 8 host devices for the sharding tests: both
must be set before JAX initialises its backend, so they live in the root conftest that pytest
loads first.
"""

import os

os.environ.setdefault("XLA_FLAGS", "--xla_force_host_platform_device_count=8")

import jax  # noqa: E402

jax.config.update("jax_enable_x64", True)
