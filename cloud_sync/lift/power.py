"""Planning a store-level test: power and minimum detectable effect by simulation (GeoLift's way).

For a candidate set of treated locations and a test length, replay history: take windows of the
panel that end at different times (each with `pre_periods` periods before a simulated start and
`test_length` periods after), multiply the treated locations' outcome in the simulated test period
by (1 + effect), run the synthetic control (`synthetic_control`, no interval) and count the windows
where the effect is detected (p-value < alpha, and the estimate has the effect's sign).

    power(effect) = detected windows / windows

With effect 0 the same count is the false-positive rate of the test on this panel, which is worth
reading before trusting the power. The minimum detectable effect is the smallest effect in the grid
whose power reaches the target (0.8 by default).
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass

import numpy as np

from cloud_sync.lift.synthetic_control import (
    GeoPanel,
    LiftInputError,
    synthetic_control,
)


@dataclass(frozen=True)
class PowerPoint:
    effect: float  # relative effect injected, e.g. 0.05 for +5%
    power: float  # fraction of windows where it was detected
    windows: int
    mean_estimated_lift: float  # mean of the estimated lift over the windows
    mean_abs_error: float  # mean |estimated lift - effect|


def _window_starts(n_periods: int, span: int, windows: int) -> list[int]:
    if span > n_periods:
        raise LiftInputError(
            f"the panel has {n_periods} periods, fewer than pre-periods + test length = {span}")
    last = n_periods - span
    count = min(windows, last + 1)
    return sorted({round(float(v)) for v in np.linspace(last, 0, count)}, reverse=True)


def power_analysis(panel: GeoPanel, treated: Sequence[str] | int, effect_sizes: Sequence[float],
                   test_length: int, *, pre_periods: int | None = None, windows: int = 20,
                   alpha: float = 0.1, permutations: int = 200, permutation: str = "block",
                   stat: str = "total", contrast: str = "previous",
                   rng: np.random.Generator | int | None = None,
                   progress: Callable[[int, int], None] | None = None) -> list[PowerPoint]:
    """Power of a test on `treated` lasting `test_length` periods, for each effect size.

    `treated` names the test locations, or is a number of them: then each window draws that many
    locations at random (the same draw for every effect size), which answers "how well can a test
    on n of these stores detect an effect" before the stores are chosen, and with effect 0 is the
    placebo false-positive rate over random store sets.
    `pre_periods` defaults to all the history a window can have when the windows are spread one
    test length apart (at least 3 * test_length), so that the simulated tests do not overlap
    where the history allows. Windows are the most recent ones first, spaced evenly.
    `contrast`, `permutation`, `permutations` and `stat` are the test's (see `synthetic_control`).
    """
    if test_length < 1:
        raise LiftInputError("test_length must be at least 1")
    if not effect_sizes:
        raise LiftInputError("no effect size given")
    panel = panel.complete_locations()
    n = len(panel.periods)
    if pre_periods is None:
        # windows one test length apart (as far as the history allows), each with all the history left
        pre_periods = max(3 * test_length, n - test_length - (windows - 1) * test_length)
    if pre_periods < 3:
        raise LiftInputError("pre_periods must be at least 3")
    starts = _window_starts(n, pre_periods + test_length, windows)
    rng = np.random.default_rng(rng) if not isinstance(rng, np.random.Generator) else rng
    if isinstance(treated, (int, np.integer)):
        if not 1 <= treated < len(panel.locations):
            raise LiftInputError(
                f"cannot draw {treated} treated location(s) from {len(panel.locations)} complete "
                "locations: at least one must stay a control")
        sets = [[str(v) for v in rng.choice(panel.locations, int(treated), replace=False)]
                for _ in starts]
    else:
        missing = [t for t in treated if t not in panel.locations]
        if missing:
            raise LiftInputError(
                f"treated location(s) unknown or with missing values: {', '.join(missing)}")
        sets = [list(treated)] * len(starts)
    total = len(starts) * len(effect_sizes)
    done = 0
    out = []
    for effect in effect_sizes:
        detected = 0
        lifts = []
        for s, names in zip(starts, sets):
            win = panel.window(s, s + pre_periods + test_length)
            rows = [win.locations.index(t) for t in names]
            values = win.values.copy()
            values[np.ix_(rows, np.arange(pre_periods, pre_periods + test_length))] *= 1.0 + effect
            res = synthetic_control(
                GeoPanel(win.locations, win.periods, values), names, win.periods[pre_periods],
                permutations=permutations, alpha=alpha, rng=rng, stat=stat,
                permutation=permutation, interval=False, contrast=contrast)
            lifts.append(res.lift)
            same_sign = effect == 0 or np.sign(res.lift) == np.sign(effect)
            detected += bool(res.p_value < alpha and same_sign)
            done += 1
            if progress:
                progress(done, total)
        lifts_arr = np.asarray(lifts)
        out.append(PowerPoint(
            effect=float(effect), power=detected / len(starts), windows=len(starts),
            mean_estimated_lift=float(lifts_arr.mean()),
            mean_abs_error=float(np.mean(np.abs(lifts_arr - effect)))))
    return out


def minimum_detectable_effect(panel: GeoPanel, treated: Sequence[str] | int, test_length: int, *,
                              effect_sizes: Sequence[float] = (0.01, 0.02, 0.03, 0.05, 0.075, 0.1,
                                                               0.15, 0.2, 0.3),
                              target_power: float = 0.8, **kwargs: object) -> tuple[float | None,
                                                                                  list[PowerPoint]]:
    """The smallest effect in `effect_sizes` (ascending) with power >= `target_power`, or None.

    Also returns the power curve. Keyword arguments go to `power_analysis`.
    """
    grid = sorted(float(e) for e in effect_sizes)
    curve = power_analysis(panel, treated, grid, test_length, **kwargs)  # type: ignore[arg-type]
    for point in curve:
        if point.power >= target_power:
            return point.effect, curve
    return None, curve
