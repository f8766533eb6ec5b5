"""Timing shared by the benchmark scripts (imported from the script's own folder)."""

from __future__ import annotations

import time

import jax
import numpy as np


def time_interleaved(fns, repeats: int) -> list[float]:
    """Median wall time of each function, after one compiling / warm-up call each, timed
    round-robin so that drift in the machine's load affects all of them alike (the benchmarks
    report ratios of these times)."""
    for fn in fns:
        jax.block_until_ready(fn())
    times = [[] for _ in fns]
    for _ in range(int(repeats)):
        for i, fn in enumerate(fns):
            t0 = time.perf_counter()
            jax.block_until_ready(fn())
            times[i].append(time.perf_counter() - t0)
    return [float(np.median(t)) for t in times]
