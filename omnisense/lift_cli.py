"""`omnisense lift ...`: store-level lift of a campaign from footfall per store and period.

Thin: reading the CSV and printing; the estimate is in `cloud_sync.lift`.
"""

from __future__ import annotations

import csv
import datetime as dt
import json
import math
from collections.abc import Callable, Hashable
from pathlib import Path
from typing import Annotated

import numpy as np
import typer
from rich.console import Console
from rich.markup import escape
from rich.progress import (
    BarColumn,
    MofNCompleteColumn,
    Progress,
    TextColumn,
    TimeElapsedColumn,
)
from rich.table import Table

from cloud_sync.lift.power import minimum_detectable_effect
from cloud_sync.lift.synthetic_control import (
    CONTRASTS,
    GeoPanel,
    LiftInputError,
    synthetic_control,
)

lift_app = typer.Typer(
    help="Store-level lift: did a campaign bring more people into the test stores?",
    no_args_is_help=True,
    add_completion=False,
    pretty_exceptions_enable=False,
)

_err = Console(stderr=True)


class CsvInputError(ValueError):
    pass


@lift_app.callback()
def _lift() -> None:
    """Store-level lift: did a campaign bring more people into the test stores?"""


def _fail(message: str) -> typer.Exit:
    _err.print(f"[bold red]error:[/] {escape(message)}", highlight=False)
    return typer.Exit(2)


def _period_parser(samples: list[str]) -> tuple[str, Callable[[str], Hashable]]:
    """Choose how to read the time column: ISO dates, else datetimes, else integers, else text."""
    def all_parse(fn: Callable[[str], Hashable]) -> bool:
        try:
            for s in samples:
                fn(s)
        except ValueError:
            return False
        return True

    parsers: tuple[tuple[str, Callable[[str], Hashable]], ...] = (
        ("date", dt.date.fromisoformat), ("datetime", dt.datetime.fromisoformat), ("integer", int))
    for kind, fn in parsers:
        if all_parse(fn):
            return kind, fn
    return "text", str


def read_long_csv(path: Path, location_col: str, time_col: str,
                  y_col: str) -> tuple[GeoPanel, str, Callable[[str], Hashable]]:
    """Read a long table (one row per location and period) into a panel.

    Returns the panel, the kind of the time column and its parser (to read --post-start alike).
    An empty outcome cell is a missing value; any other non-number is an error naming its line.
    """
    try:
        handle = path.open(newline="", encoding="utf-8-sig")
    except OSError as err:
        raise CsvInputError(f"cannot read {path}: {err.strerror or err}") from None
    with handle:
        reader = csv.DictReader(handle)
        header = reader.fieldnames or []
        missing = [c for c in (location_col, time_col, y_col) if c not in header]
        if missing:
            raise CsvInputError(
                f"{path}: no column {', '.join(repr(c) for c in missing)}; the columns are "
                f"{', '.join(repr(c) for c in header) or '(none: empty file)'}")
        locs: list[str] = []
        times: list[str] = []
        ys: list[float] = []
        for line, row in enumerate(reader, start=2):
            loc = (row.get(location_col) or "").strip()
            when = (row.get(time_col) or "").strip()
            raw = (row.get(y_col) or "").strip()
            if not loc or not when:
                raise CsvInputError(f"{path}:{line}: empty {location_col if not loc else time_col!r}")
            if raw == "":
                value = math.nan
            else:
                try:
                    value = float(raw)
                except ValueError:
                    raise CsvInputError(
                        f"{path}:{line}: {y_col} is not a number: {raw!r}") from None
                if not math.isfinite(value):
                    raise CsvInputError(f"{path}:{line}: {y_col} is not finite: {raw!r}")
            locs.append(loc)
            times.append(when)
            ys.append(value)
    if not locs:
        raise CsvInputError(f"{path}: no data rows")
    kind, parse = _period_parser(sorted(set(times)))
    periods: list[Hashable] = [parse(t) for t in times]
    return GeoPanel.from_long(locs, periods, ys), kind, parse


def _progress() -> Progress:
    return Progress(TextColumn("{task.description}"), BarColumn(), MofNCompleteColumn(),
                    TimeElapsedColumn(), console=_err, transient=True)


def _numbers(text: str, option: str, kind: type[int] | type[float]) -> list:
    values: list = []
    try:
        for raw in (v.strip() for v in text.split(",")):
            if not raw:
                continue
            if kind is float and raw.endswith("%"):
                values.append(float(raw[:-1]) / 100)
            else:
                values.append(kind(raw))
    except ValueError:
        raise _fail(f"{option} must be a comma-separated list of {kind.__name__}s, got {text!r}") from None
    if not values:
        raise _fail(f"{option} is empty")
    return values


@lift_app.command()
def geo(
    csv_path: Annotated[Path, typer.Argument(metavar="CSV", help="Long table: one row per location and period.")],
    treated: Annotated[str, typer.Option(help="Treated (test) locations, comma-separated.")],
    post_start: Annotated[str, typer.Option(help="First period of the campaign (same format as the time column).")],
    post_end: Annotated[str | None, typer.Option(help="Last period of the campaign [default: the last period].")] = None,
    location_col: Annotated[str, typer.Option(help="Column naming the location (store).")] = "location",
    time_col: Annotated[str, typer.Option(help="Column of the period (ISO date, datetime or integer).")] = "date",
    y_col: Annotated[str, typer.Option(help="Column of the outcome (visits, footfall).")] = "Y",
    alpha: Annotated[float, typer.Option(help="Significance level; the interval is 1 - alpha.")] = 0.1,
    permutations: Annotated[int, typer.Option(help="Random permutations for --permutation iid.")] = 200,
    permutation: Annotated[str, typer.Option(help="block (cyclic shifts; robust to serial correlation) or iid (GeoLift's).")] = "block",
    stat: Annotated[str, typer.Option(help="total (two-sided), positive or negative (one-sided), or absolute (GeoLift's two-sided: sum of |residuals|; use with --contrast none --permutation iid --permutations 1000 to reproduce GeoLift).")] = "total",
    contrast: Annotated[str, typer.Option(help="previous (Welch t of the post-period against the block just before it; calibrated on real footfall), previous-sum (the difference of the two blocks' sums) or none (GeoLift's post-period sum).")] = "previous",
    interval: Annotated[bool, typer.Option("--interval/--no-interval", help="Compute the interval.")] = True,
    interval_method: Annotated[str, typer.Option(help="conformal (inverts the test) or jackknife+ (GeoLift's).")] = "conformal",
    drop_incomplete: Annotated[bool, typer.Option(help="Drop control locations with missing values instead of failing.")] = False,
    seed: Annotated[int | None, typer.Option(help="Seed of the random permutations.")] = None,
    as_json: Annotated[bool, typer.Option("--json", help="Print one JSON object on stdout.")] = False,
) -> None:
    """Synthetic-control lift (GeoLift's default model) of TREATED locations from POST-START.

    Every other location is a control. Prints the lift, the effect per location per period (ATT),
    the incremental total with its interval, the p-value and the control weights.
    """
    if permutation not in ("block", "iid"):
        raise _fail(f"--permutation must be 'block' or 'iid', got {permutation!r}")
    if stat not in ("total", "positive", "negative", "absolute"):
        raise _fail(f"--stat must be total, positive, negative or absolute, got {stat!r}")
    if not 0 < alpha < 1:
        raise _fail(f"--alpha must be between 0 and 1, got {alpha}")
    if permutations < 1:
        raise _fail("--permutations must be at least 1")
    if contrast not in CONTRASTS:
        raise _fail(f"--contrast must be {' or '.join(CONTRASTS)}, got {contrast!r}")
    if interval_method not in ("conformal", "jackknife+"):
        raise _fail(f"--interval-method must be conformal or jackknife+, got {interval_method!r}")
    try:
        panel, kind, parse = read_long_csv(csv_path, location_col, time_col, y_col)
    except (CsvInputError, LiftInputError) as err:
        raise _fail(str(err)) from None

    names = [t.strip() for t in treated.split(",") if t.strip()]
    if not names:
        raise _fail("--treated names no location")
    unknown = [t for t in names if t not in panel.locations]
    if unknown:
        shown = ", ".join(panel.locations[:10]) + (" ..." if len(panel.locations) > 10 else "")
        raise _fail(f"unknown treated location(s) {', '.join(unknown)}; the locations are: {shown}")

    def period(label: str, option: str) -> Hashable:
        try:
            value = parse(label)
        except ValueError:
            raise _fail(f"{option} {label!r} is not a {kind} like the time column "
                        f"(e.g. {panel.periods[0]})") from None
        if not panel.periods[0] <= value <= panel.periods[-1]:  # type: ignore[operator]
            raise _fail(f"{option} {label} is outside the data, which runs from "
                        f"{panel.periods[0]} to {panel.periods[-1]}")
        return value

    start = period(post_start, "--post-start")
    end = period(post_end, "--post-end") if post_end is not None else None

    if drop_incomplete:
        complete = panel.complete_locations()
        incomplete_treated = [t for t in names if t not in complete.locations]
        if incomplete_treated:
            raise _fail(f"treated location(s) with missing values: {', '.join(incomplete_treated)}")
        dropped = len(panel.locations) - len(complete.locations)
        if dropped:
            _err.print(f"dropped {dropped} control location(s) with missing values", highlight=False)
        panel = complete

    progress = _progress()
    tasks: dict[str, int] = {}

    def report(stage: str, done: int, total: int) -> None:
        if stage not in tasks:
            tasks[stage] = progress.add_task(stage, total=total)
        progress.update(tasks[stage], completed=done, total=total)

    try:
        with progress:
            result = synthetic_control(panel, names, start, end, permutations=permutations,
                                       alpha=alpha, rng=np.random.default_rng(seed), progress=report,
                                       stat=stat, permutation=permutation, interval=interval,
                                       contrast=contrast, interval_method=interval_method)
    except LiftInputError as err:
        hint = ("; --drop-incomplete drops such control locations"
                if "missing" in str(err) and not drop_incomplete else "")
        raise _fail(f"{err}{hint}") from None

    summary = result.as_dict()
    if as_json:
        typer.echo(json.dumps(summary, allow_nan=False))
        return
    out = Console()
    level = round(100 * (1 - alpha))
    table = Table(title=f"Synthetic-control lift of {', '.join(names)}", show_header=False)
    table.add_column("what")
    table.add_column("value", justify="right")
    table.add_row("post-period", f"{summary['post_start']} .. {summary['post_end']} "
                                 f"({summary['post_periods']} periods, {summary['pre_periods']} before)")
    table.add_row("lift", f"{100 * result.lift:+.2f}%")
    table.add_row("ATT (per location per period)", f"{result.att:,.2f}")
    table.add_row("incremental", f"{result.incremental:,.1f}")
    if interval:
        table.add_row(f"{level}% interval ({interval_method})", f"[{result.ci_low:,.1f}, {result.ci_high:,.1f}]")
    table.add_row(f"p-value ({permutation}, {stat}, contrast {contrast})", f"{result.p_value:.4f}")
    table.add_row("pre-period RMSE", f"{result.pre_rmse:,.2f}")
    out.print(table)
    weights = Table(title="Control weights")
    weights.add_column("location")
    weights.add_column("weight", justify="right")
    for name, w in result.weights.items():
        weights.add_row(escape(name), f"{w:.4f}")
    out.print(weights)


@lift_app.command()
def power(
    csv_path: Annotated[Path, typer.Argument(metavar="CSV", help="Long table of history: one row per location and period.")],
    treated: Annotated[str | None, typer.Option(help="Candidate test locations, comma-separated.")] = None,
    stores: Annotated[int | None, typer.Option(help="Instead of --treated: this many test locations, drawn at random in each window.")] = None,
    test_days: Annotated[str, typer.Option(help="Test lengths in periods (days for daily data), comma-separated.")] = "14,28,42",
    pre_days: Annotated[int | None, typer.Option(help="Periods of history before each simulated test [default: as many as the windows allow].")] = None,
    alpha: Annotated[float, typer.Option(help="Significance level of the test.")] = 0.1,
    target_power: Annotated[float, typer.Option("--power", help="Power the minimum detectable effect must reach.")] = 0.8,
    effects: Annotated[str, typer.Option(help="Relative effects to simulate, comma-separated (0.05 or 5%).")] = "0,0.01,0.02,0.03,0.05,0.075,0.1,0.15,0.2,0.3",
    windows: Annotated[int, typer.Option(help="Historical windows simulated per effect and test length.")] = 20,
    location_col: Annotated[str, typer.Option(help="Column naming the location (store).")] = "location",
    time_col: Annotated[str, typer.Option(help="Column of the period (ISO date, datetime or integer).")] = "date",
    y_col: Annotated[str, typer.Option(help="Column of the outcome (visits, footfall).")] = "Y",
    permutation: Annotated[str, typer.Option(help="block or iid, as for `lift geo`.")] = "block",
    contrast: Annotated[str, typer.Option(help="previous, previous-sum or none, as for `lift geo`.")] = "previous",
    seed: Annotated[int | None, typer.Option(help="Seed of the random store draws and permutations.")] = None,
    as_json: Annotated[bool, typer.Option("--json", help="Print one JSON object on stdout.")] = False,
) -> None:
    """Power and minimum detectable effect (MDE) of a store test, by replaying history.

    For each test length, windows of the past (pre-period + test) are taken; the test stores'
    outcome in the simulated test period is multiplied by 1 + effect and the synthetic-control test
    of `lift geo` is run. Power = share of windows where the effect is detected (p < alpha, right
    sign); the row for effect 0 is the false-positive rate. The MDE is the smallest effect whose
    power reaches --power. Locations with missing values are left out of the donor pool.
    """
    if (treated is None) == (stores is None):
        raise _fail("give either --treated (the test locations) or --stores (how many, drawn at random)")
    if not 0 < alpha < 1:
        raise _fail(f"--alpha must be between 0 and 1, got {alpha}")
    if not 0 < target_power <= 1:
        raise _fail(f"--power must be in (0, 1], got {target_power}")
    if permutation not in ("block", "iid"):
        raise _fail(f"--permutation must be 'block' or 'iid', got {permutation!r}")
    if contrast not in CONTRASTS:
        raise _fail(f"--contrast must be {' or '.join(CONTRASTS)}, got {contrast!r}")
    if windows < 1:
        raise _fail("--windows must be at least 1")
    lengths = _numbers(test_days, "--test-days", int)
    if min(lengths) < 1:
        raise _fail("--test-days must be at least 1")
    grid = sorted(set(_numbers(effects, "--effects", float)))
    if min(grid) <= -1:
        raise _fail("--effects must be above -1 (-100%)")
    try:
        panel, _, _ = read_long_csv(csv_path, location_col, time_col, y_col)
    except (CsvInputError, LiftInputError) as err:
        raise _fail(str(err)) from None
    complete = panel.complete_locations()
    which: list[str] | int
    if treated is not None:
        which = [t.strip() for t in treated.split(",") if t.strip()]
        if not which:
            raise _fail("--treated names no location")
        unknown = [t for t in which if t not in panel.locations]
        if unknown:
            raise _fail(f"unknown treated location(s) {', '.join(unknown)}")
        gappy = [t for t in which if t not in complete.locations]
        if gappy:
            raise _fail(f"treated location(s) with missing values: {', '.join(gappy)}")
    else:
        assert stores is not None
        if not 1 <= stores < len(complete.locations):
            raise _fail(f"--stores must be between 1 and {len(complete.locations) - 1} "
                        f"(the {len(complete.locations)} complete locations less one control)")
        which = stores
    dropped = len(panel.locations) - len(complete.locations)
    if dropped and not as_json:
        _err.print(f"left out {dropped} location(s) with missing values", highlight=False)

    rng = np.random.default_rng(seed)
    curves: dict[int, list] = {}
    mdes: dict[int, float | None] = {}
    progress = _progress()
    try:
        with progress:
            for length in lengths:
                task = progress.add_task(f"test of {length} periods", total=windows * len(grid))
                mde, curve = minimum_detectable_effect(
                    complete, which, length, effect_sizes=grid, target_power=target_power,
                    pre_periods=pre_days, windows=windows, alpha=alpha, permutation=permutation,
                    contrast=contrast, rng=rng,
                    progress=lambda done, total, task=task: progress.update(task, completed=done, total=total))
                curves[length], mdes[length] = curve, mde
    except LiftInputError as err:
        raise _fail(str(err)) from None

    if as_json:
        typer.echo(json.dumps({
            "alpha": alpha, "target_power": target_power, "windows": windows,
            "treated": which if isinstance(which, list) else None,
            "stores": which if isinstance(which, int) else len(which),
            "pre_periods": pre_days,
            "tests": [{"test_periods": length, "mde": mdes[length],
                       "power": [{"effect": pt.effect, "power": pt.power, "windows": pt.windows,
                                  "mean_estimated_lift": pt.mean_estimated_lift,
                                  "mean_abs_error": pt.mean_abs_error} for pt in curves[length]]}
                      for length in lengths]}, allow_nan=False))
        return
    who = ", ".join(which) if isinstance(which, list) else f"{which} random store(s) per window"
    table = Table(title=f"Power of a test on {who} (alpha {alpha}, {windows} windows of history)")
    table.add_column("effect", justify="right")
    for length in lengths:
        table.add_column(f"{length} periods", justify="right")
    for i, effect in enumerate(grid):
        label = f"{effect:+.1%}" + (" (false positives)" if effect == 0 else "")
        table.add_row(label, *(f"{curves[length][i].power:.2f}" for length in lengths))
    table.add_row(f"MDE at power {target_power:g}",
                  *((f"{mdes[length]:+.1%}" if mdes[length] is not None else f"> {max(grid):+.0%}")
                    for length in lengths), style="bold")
    Console().print(table)
