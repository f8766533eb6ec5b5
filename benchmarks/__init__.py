"""Benchmark scripts, run from the repository root as ``python -m benchmarks.NAME`` (see README.md).

A package so that the scripts and the tests share code through :mod:`benchmarks.common` without
editing ``sys.path``. Nothing is imported here: some scripts set ``XLA_FLAGS`` before jax loads.
"""
