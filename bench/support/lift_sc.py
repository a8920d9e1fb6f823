"""Timing of the synthetic control on a large synthetic panel (used by bench/lift.py)."""

from __future__ import annotations

import time

import numpy as np

from cloud_sync.lift.synthetic_control import GeoPanel, synthetic_control


def synthetic_panel(stores: int = 1000, days: int = 730, seed: int = 0) -> GeoPanel:
    """Daily visits with a weekly pattern, store levels, slow store-specific drift and noise;
    store 0 is 0.6 * store 1 + 0.4 * store 2 plus noise (a known synthetic control)."""
    rng = np.random.default_rng(seed)
    level = rng.uniform(200, 2000, size=stores)
    week = 1 + 0.2 * np.sin(2 * np.pi * np.arange(days) / 7)
    drift = np.cumsum(rng.normal(0, 0.01, size=(stores, days)), axis=1)
    values = level[:, None] * week * (1 + drift) + rng.normal(0, 10, size=(stores, days))
    values[0] = 0.6 * values[1] + 0.4 * values[2] + rng.normal(0, 5, size=days)
    return GeoPanel(tuple(f"store{i:04d}" for i in range(stores)), tuple(range(days)), values)


def measure_synthetic_control(stores: int = 1000, days: int = 730, permutations: int = 200,
                              *, permutation: str = "iid", interval: bool = True,
                              repeat: int = 1) -> float:
    """Seconds (best of `repeat`) of one `synthetic_control` on a stores x days panel, with a
    `permutations`-permutation conformal p-value (iid permutations, so exactly that many) and the
    interval (test inversion, as `omnisense lift geo` runs it; `interval=False` times the p-value alone),
    the last 28 days as the post-period and store 0 treated. The panel is built before the clock
    starts."""
    panel = synthetic_panel(stores, days)
    best = float("inf")
    for _ in range(repeat):
        t0 = time.perf_counter()
        synthetic_control(panel, ["store0000"], days - 28, permutations=permutations, rng=1,
                          permutation=permutation, interval=interval)
        best = min(best, time.perf_counter() - t0)
    return best
