"""How fast lift is measured: people-level attribution and a store-level synthetic control, on one core.

Workloads, seeded:
- People: 10 million ad exposures of 4 million app users (about half held out as control, each
  person's exposures over 30 days), and 2 million app visits over 60 days from the same start, the
  exposed visiting 20 % more often than the control; a fifth of the visits are too short to count.
  `cloud_sync.lift.people.attribute` over windows of 1, 7, 14 and 30 days, beside a straightforward
  pandas implementation on the same arrays: first exposure per person by sort + drop_duplicates,
  then per window a `merge_asof(direction="forward", by=person, allow_exact_matches=False,
  tolerance=W)` of people onto qualifying visits, and person-days by a merge + drop_duplicates.
  Both must give identical counts (people converted and person-day visits, per arm and window).
- Stores: synthetic control for 1,000 stores x 730 days with a 200-permutation p-value
  (`bench.support.lift_sc.measure_synthetic_control`, when present).
- Calibration of the store-level test on real footfall (`bench.support.lift_calibration`): on the
  Auckland pedestrian counts, placebo tests (random sensors "treated", no intervention) give the
  false-positive rate at alpha 0.1, and injected +5/+10/+20% lifts give the power, for the test
  before (block shifts of the post-period sum), the former default (block shifts of the
  post-period sum minus the block before it, `contrast="previous-sum"`) and the current one (the
  same blocks, the difference of their means divided by its standard error: Welch's t,
  `contrast="previous"`) side by side with GeoLift's iid permutations; then the intervals'
  coverage and width, and the false-positive rate over other designs (pre/test days, stores).

Usage: python bench/lift.py [--exposures 10000000] [--visits 2000000] [--seeds 50]
       [--skip-speed | --skip-calibration]
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np
from rich.console import Console
from rich.table import Table

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from bench.support.timing import pin  # noqa: E402
from cloud_sync.lift.people import DAY_S, Exposures, Visits, attribute  # noqa: E402

BENCH_CPU = 0
WINDOWS = (1, 7, 14, 30)
MIN_DWELL_S = 60.0
START = 1_767_225_600.0  # 2026-01-01T00:00Z
TRUE_LIFT = 0.20


def make_data(n_exposures: int, n_visits: int, seed: int = 7) -> tuple[Exposures, Visits]:
    """Exposures over 30 days, visits over 60 days, a true lift on the exposed arm's visit rate."""
    rng = np.random.default_rng(seed)
    n_people = max(1, int(n_exposures / 2.5))
    exposed_person = rng.random(n_people) < 0.5
    person = rng.integers(0, n_people, n_exposures)
    times = START + rng.uniform(0, 30 * DAY_S, n_exposures)
    arm = exposed_person[person]
    leak = rng.random(n_exposures) < 0.001  # a few control people who were shown the ad anyway
    arm = arm | leak
    weight = np.where(exposed_person, 1 + TRUE_LIFT, 1.0)
    visitor = rng.choice(n_people, size=n_visits, p=weight / weight.sum())
    v_time = START + rng.uniform(0, 60 * DAY_S, n_visits)
    dwell = rng.lognormal(mean=6.0, sigma=1.0, size=n_visits)  # median ~7 min; ~20 % under a minute
    return Exposures(person, times, arm), Visits(visitor, v_time, dwell)


def pandas_attribution(exposures: Exposures, visits: Visits) -> dict[int, tuple[int, int, int, int]]:
    """The straightforward pandas way: {window: (converted exposed, converted control, visits e, visits c)}."""
    import pandas as pd

    ex = pd.DataFrame({"person": exposures.person, "t_e": exposures.time, "exposed": exposures.exposed})
    ex = ex.sort_values(["t_e", "exposed"], ascending=[True, False], kind="stable")
    first = ex.drop_duplicates("person", keep="first")
    vi = pd.DataFrame({"person": visits.person, "t_v": visits.time, "dwell_s": visits.dwell_s})
    vi = vi[vi["dwell_s"] >= MIN_DWELL_S].sort_values("t_v", kind="stable")
    people = first.sort_values("t_e", kind="stable")
    out: dict[int, list[int]] = {}
    for w in WINDOWS:
        m = pd.merge_asof(people, vi[["person", "t_v"]], left_on="t_e", right_on="t_v", by="person",
                          direction="forward", allow_exact_matches=False, tolerance=w * DAY_S)
        conv = m["t_v"].notna() & (m["t_v"] <= m["t_e"] + w * DAY_S)
        x_e = int((conv & m["exposed"]).sum())
        out[w] = [x_e, int(conv.sum()) - x_e]
    joined = vi.merge(first, on="person", how="inner")
    delta = joined["t_v"] - joined["t_e"]
    joined = joined[(delta > 0) & (joined["t_v"] <= joined["t_e"] + max(WINDOWS) * DAY_S)]
    joined = joined.assign(day=np.ceil((joined["t_v"] - joined["t_e"]) / DAY_S).astype("int64"))
    joined = joined.sort_values("t_v", kind="stable").drop_duplicates(["person", "day"], keep="first")
    for w in WINDOWS:
        inside = joined["t_v"] <= joined["t_e"] + w * DAY_S
        v_e = int((inside & joined["exposed"]).sum())
        out[w] += [v_e, int(inside.sum()) - v_e]
    return {w: tuple(v) for w, v in out.items()}  # type: ignore[misc]


def synthetic_control() -> tuple[float | None, str]:
    try:
        from bench.support.lift_sc import measure_synthetic_control
    except ImportError:
        return None, "synthetic control: not available (bench/support/lift_sc.py missing)"
    result: Any = measure_synthetic_control()
    if isinstance(result, dict):
        seconds = result.get("synthetic_control_s", result.get("seconds"))
        return (float(seconds) if seconds is not None else None), f"synthetic control: {result}"
    return float(result), "synthetic control: 1,000 stores x 730 days, 200 permutations"


def calibration(console: Console, seeds: int, windows: int, interval_seeds: int,
                robust_seeds: int) -> dict[str, Any]:
    """Placebo false-positive rate and power on real footfall, before and after; returns BENCH keys."""
    from bench.support.lift_calibration import (
        GEOLIFT,
        IID_NEW,
        OLD,
        Method,
        akl_panel,
        interval_stats,
        outage_breakdown,
        rejection_rates,
    )

    # the former default (difference of sums, not studentised), between OLD and NEW
    SUM = Method("former: block shifts, post - previous block (sums); test inversion", "block", "previous-sum",
                 "conformal")
    NEW = Method("after: block shifts, Welch t of post vs previous block; test inversion", "block", "previous",
                 "conformal")
    IID = Method("iid permutations, Welch t of post vs previous block", IID_NEW.permutation, IID_NEW.contrast,
                 IID_NEW.interval_method)
    METHODS = (GEOLIFT, OLD, SUM, IID, NEW)
    panel = akl_panel()
    effects = (0.0, 0.05, 0.10, 0.20)
    rates = {}
    for method in METHODS:
        with console.status(f"placebo tests: {method.label}"):
            rates[method] = rejection_rates(panel, method, effects, range(seeds), windows=windows)
    table = Table(title=f"store-level test on real footfall (Auckland, {len(panel.locations)} sensors, "
                        f"{panel.periods[0]}..{panel.periods[-1]}): 2 random sensors treated, 182 days "
                        f"before + 28 test days, alpha 0.1; {seeds} seeds x {windows} windows "
                        f"= {seeds * windows} tests per cell")
    table.add_column("method")
    table.add_column("false-positive rate (± s.e.) [seed min..max]", justify="right")
    for e in effects[1:]:
        table.add_column(f"power +{e:.0%}", justify="right")
    for method in METHODS:
        r = rates[method]
        table.add_row(method.label, f"{r[0.0].mean:.3f} ± {r[0.0].se:.3f} [{r[0.0].low:.3f}..{r[0.0].high:.3f}]",
                      *(f"{r[e].mean:.3f}" for e in effects[1:]))
    console.print(table)

    intervals = {}
    itable = Table(title=f"90% interval of the incremental visits: {interval_seeds} seeds x {windows} windows; "
                         "coverage of the injected truth, median width in units of a +5% effect")
    itable.add_column("method")
    for e in (0.0, 0.05, 0.10):
        itable.add_column(f"+{e:.0%}: coverage / width", justify="right")
    for method in (OLD, SUM, NEW):
        cells = []
        for e in (0.0, 0.05, 0.10):
            with console.status(f"intervals: {method.label}, +{e:.0%}"):
                st = interval_stats(panel, method, e, range(interval_seeds), windows=windows)
            intervals[(method, e)] = st
            cells.append(f"{st.coverage:.3f} / {st.median_width:.2f}" + (f" ({st.infinite} inf)" if st.infinite else ""))
        itable.add_row(method.label, *cells)
    console.print(itable)

    rtable = Table(title=f"other designs: {robust_seeds} seeds x {windows} windows each; "
                         "false-positive rate / power +10%")
    rtable.add_column("design")
    for method in (OLD, SUM, NEW):
        rtable.add_column(method.label.split(";")[0], justify="right")
    robust = {}
    for pre, post, treated in ((91, 28, 2), (364, 28, 2), (182, 14, 2), (182, 56, 2), (182, 28, 1), (182, 28, 4)):
        cells = []
        for method in (OLD, SUM, NEW):
            with console.status(f"design {pre}+{post} days, {treated} treated: {method.label}"):
                r = rejection_rates(panel, method, (0.0, 0.10), range(robust_seeds), pre=pre, post=post,
                                    treated=treated, windows=windows)
            robust[(pre, post, treated, method)] = r
            cells.append(f"{r[0.0].mean:.3f} / {r[0.10].mean:.3f}")
        rtable.add_row(f"{pre} + {post} days, {treated} treated", *cells)
    console.print(rtable)
    otable = Table(title=f"false-positive rate by whether a treated sensor had an outage in the window "
                         f"(a day below a fifth of its median); {robust_seeds} seeds x {windows} windows")
    otable.add_column("method")
    for column in ("treated outage", "no treated outage"):
        otable.add_column(column, justify="right")
    outages = {}
    for method in (OLD, SUM, NEW):
        with console.status(f"outages: {method.label}"):
            outages[method] = outage_breakdown(panel, method, range(robust_seeds), windows=windows)
        otable.add_row(method.label, *(f"{rate:.3f} ({n} tests)" for rate, n in outages[method].values()))
    console.print(otable)
    new_fprs = [robust[k][0.0].mean for k in robust if k[3] is NEW]
    sum_fprs = [robust[k][0.0].mean for k in robust if k[3] is SUM]
    return {
        "placebo_fpr_former": round(rates[SUM][0.0].mean, 4),
        "placebo_fpr_former_se": round(rates[SUM][0.0].se, 4) if seeds > 1 else None,
        "power_10pct_former": round(rates[SUM][0.10].mean, 4),
        "ci_coverage_5pct_former": round(intervals[(SUM, 0.05)].coverage, 4),
        "ci_coverage_10pct_former": round(intervals[(SUM, 0.10)].coverage, 4),
        "ci_coverage_10pct_after": round(intervals[(NEW, 0.10)].coverage, 4),
        "ci_coverage_0pct_after": round(intervals[(NEW, 0.0)].coverage, 4),
        "ci_width_5pct_former": round(intervals[(SUM, 0.05)].median_width, 3),
        "placebo_fpr_former_other_designs_max": round(max(sum_fprs), 4),
        "placebo_fpr_other_designs_after": {f"{k[0]}+{k[1]}x{k[2]}": round(robust[k][0.0].mean, 4)
                                            for k in robust if k[3] is NEW},
        "placebo_fpr_other_designs_former": {f"{k[0]}+{k[1]}x{k[2]}": round(robust[k][0.0].mean, 4)
                                             for k in robust if k[3] is SUM},
        "power_10pct_other_designs_after": {f"{k[0]}+{k[1]}x{k[2]}": round(robust[k][0.10].mean, 4)
                                            for k in robust if k[3] is NEW},
        "placebo_fpr_before": round(rates[OLD][0.0].mean, 4), "placebo_fpr_after": round(rates[NEW][0.0].mean, 4),
        "placebo_fpr_after_se": round(rates[NEW][0.0].se, 4) if seeds > 1 else None,
        "placebo_fpr_geolift_iid": round(rates[METHODS[0]][0.0].mean, 4),
        "power_5pct_before": round(rates[OLD][0.05].mean, 4), "power_5pct_after": round(rates[NEW][0.05].mean, 4),
        "power_10pct_before": round(rates[OLD][0.10].mean, 4), "power_10pct_after": round(rates[NEW][0.10].mean, 4),
        "power_20pct_before": round(rates[OLD][0.20].mean, 4), "power_20pct_after": round(rates[NEW][0.20].mean, 4),
        "ci_coverage_5pct_before": round(intervals[(OLD, 0.05)].coverage, 4),
        "ci_coverage_5pct_after": round(intervals[(NEW, 0.05)].coverage, 4),
        "ci_width_5pct_before": round(intervals[(OLD, 0.05)].median_width, 3),
        "ci_width_5pct_after": round(intervals[(NEW, 0.05)].median_width, 3),
        "placebo_fpr_after_other_designs_max": round(max(new_fprs), 4),
        "placebo_fpr_after_no_treated_outage": round(outages[NEW]["no treated outage"][0], 4),
        "calibration_tests_per_cell": seeds * windows,
    }


def best_of(run: Callable[[], Any], repeat: int) -> tuple[float, Any]:
    best, value = float("inf"), None
    for _ in range(repeat):
        t0 = time.perf_counter()
        value = run()
        best = min(best, time.perf_counter() - t0)
    return best, value


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--exposures", type=int, default=10_000_000)
    parser.add_argument("--visits", type=int, default=2_000_000)
    parser.add_argument("--repeat", type=int, default=2)
    parser.add_argument("--seeds", type=int, default=50, help="seeds of the placebo/power tests (main design)")
    parser.add_argument("--windows", type=int, default=40, help="placebo windows per seed")
    parser.add_argument("--interval-seeds", type=int, default=5)
    parser.add_argument("--robust-seeds", type=int, default=20, help="seeds per other design")
    group = parser.add_mutually_exclusive_group()
    group.add_argument("--skip-speed", action="store_true", help="only the calibration on real footfall")
    group.add_argument("--skip-calibration", action="store_true", help="only the speed measurements")
    args = parser.parse_args()
    pin({BENCH_CPU})
    console = Console(width=150)
    bench: dict[str, Any] = {}
    if not args.skip_speed:
        bench.update(speed(console, args))
    if not args.skip_calibration:
        bench.update(calibration(console, args.seeds, args.windows, args.interval_seeds, args.robust_seeds))
    print("BENCH " + json.dumps(bench))


def speed(console: Console, args: argparse.Namespace) -> dict[str, Any]:
    with console.status("generating data"):
        exposures, visits = make_data(args.exposures, args.visits)
    with console.status("numpy attribution"):
        attribution_s, results = best_of(lambda: attribute(exposures, visits, WINDOWS, MIN_DWELL_S), args.repeat)
    with console.status("pandas merge_asof attribution"):
        pandas_s, reference = best_of(lambda: pandas_attribution(exposures, visits), 1)
    ours = {r.window_days: (r.converted_exposed, r.converted_control, r.visits_exposed, r.visits_control)
            for r in results}
    if ours != reference:
        console.print(f"[bold red]MISMATCH[/] numpy {ours} vs pandas {reference}")
        raise SystemExit(1)
    with console.status("synthetic control"):
        sc_s, sc_note = synthetic_control()

    table = Table(title=f"people-level attribution, {args.exposures:,} exposures x {args.visits:,} visits, "
                        f"windows {', '.join(map(str, WINDOWS))} d, one core (CPU {BENCH_CPU})")
    for column in ("window", "exposed", "control", "conv. exposed", "conv. control", "lift", "95 % CI",
                   "incr. visits", "z", "p"):
        table.add_column(column, justify="right")
    for r in results:
        lo, hi = r.stats.lift_ci
        table.add_row(f"{r.window_days} d", f"{r.n_exposed:,}", f"{r.n_control:,}", f"{r.converted_exposed:,}",
                      f"{r.converted_control:,}", f"{r.lift:+.1%}", f"{lo:+.1%} .. {hi:+.1%}",
                      f"{r.incremental_visits:,.0f}", f"{r.stats.z:.2f}",
                      f"{r.stats.p_value:.2g}" if r.stats.p_value > 0 else "<1e-300")
    console.print(table)
    timing = Table(title="time on one core")
    for column in ("what", "seconds"):
        timing.add_column(column, justify="left" if column == "what" else "right")
    timing.add_row("omnisense attribute (numpy searchsorted), four windows", f"{attribution_s:.2f}")
    timing.add_row("pandas merge_asof per window + person-days merge", f"{pandas_s:.2f}")
    timing.add_row("synthetic control, 1,000 stores x 730 days, 200 permutations",
                   f"{sc_s:.2f}" if sc_s is not None else "n/a")
    console.print(timing)
    console.print("counts identical in numpy and pandas (people converted and person-day visits, per arm "
                  f"and window); {sc_note}")
    return {"attribution_s": round(attribution_s, 3), "pandas_attribution_s": round(pandas_s, 3),
            "synthetic_control_s": round(sc_s, 3) if sc_s is not None else None}


if __name__ == "__main__":
    main()
