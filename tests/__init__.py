"""The test suite, a package so that its folders can share file names and import ``tests.helpers``.

``tests/<layer>/`` tests ``jaxode_diffusion/<layer>/`` (processes, solvers, sampling, models,
training, analysis, tuning, study, cli); ``tests/benchmarks/`` tests the benchmark scripts; the
repository-wide rules are at this level (``test_architecture.py``, ``test_house.py``,
``test_moved.py``). Run from the repository root: ``python -m pytest -n 2 -q``.
"""
