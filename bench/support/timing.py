"""What every benchmark here needs: pinning to a core, and a best-of-N rate."""

from __future__ import annotations

import os
import time
from collections.abc import Callable


def pin(cpus: set[int]) -> None:
    """Run on these CPUs only, so 'one core' means one core (a no-op where affinity is unsupported)."""
    if hasattr(os, "sched_setaffinity") and len(os.sched_getaffinity(0)) > 1:
        os.sched_setaffinity(0, cpus)


def rate(run: Callable[[], object], items: int, repeat: int = 3) -> float:
    """Items per second of the fastest of `repeat` runs: the least disturbed by the rest of the machine."""
    best = float("inf")
    for _ in range(repeat):
        t0 = time.perf_counter()
        run()
        best = min(best, time.perf_counter() - t0)
    return items / best
