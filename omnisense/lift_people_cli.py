"""`omnisense lift people`: ad-to-visit lift of app users, exposed versus control, per attribution window.

Thin: reading the files and printing; the attribution and the statistics are in `cloud_sync.lift.people`.
"""

from __future__ import annotations

import json
import math
from pathlib import Path
from typing import Annotated

import typer
from rich.console import Console
from rich.markup import escape
from rich.table import Table

from cloud_sync.lift.people import (
    DEFAULT_MIN_DWELL_S,
    LiftInputError,
    RowError,
    WindowResult,
    assign_arms,
    attribute,
    campaigns_of,
    load_exposures_csv,
    load_visits_csv,
    to_arrays,
)
from omnisense.runtime import err_console

SHOWN_ERRORS = 5


def _fail(message: str) -> typer.Exit:
    err_console.print(f"[bold red]error:[/] {escape(message)}", highlight=False)
    return typer.Exit(2)


def parse_windows(text: str) -> tuple[int, ...]:
    try:
        windows = tuple(int(part) for part in text.split(",") if part.strip())
    except ValueError:
        raise typer.BadParameter(f"{text!r}: need whole days separated by commas, e.g. 1,7,14,30",
                                 param_hint="--windows") from None
    if not windows or any(w <= 0 for w in windows):
        raise typer.BadParameter(f"{text!r}: need whole days > 0, e.g. 1,7,14,30", param_hint="--windows")
    return tuple(sorted(set(windows)))


def _pct(v: float) -> str:
    return f"{v:+.1%}" if math.isfinite(v) else ("+inf" if v == math.inf else "n/a")


def _p(v: float) -> str:
    if not math.isfinite(v):
        return "n/a"
    return f"{v:.3g}" if v >= 1e-300 else "<1e-300"


def _table(results: list[WindowResult], title: str) -> Table:
    table = Table(title=title)
    for name in ("window", "exposed: converted / people", "control: converted / people", "lift", "lift CI",
                 "difference CI (Newcombe)", "incremental visits", "z", "p"):
        table.add_column(name, justify="right")
    for r in results:
        s = r.stats
        table.add_row(
            f"{r.window_days} d",
            f"{r.converted_exposed:,} / {r.n_exposed:,} = {s.p1:.2%}" if r.n_exposed else "0 / 0",
            f"{r.converted_control:,} / {r.n_control:,} = {s.p2:.2%}" if r.n_control else "0 / 0",
            _pct(s.lift), f"{_pct(s.lift_ci[0])} .. {_pct(s.lift_ci[1])}",
            f"{s.newcombe[0]:+.4f} .. {s.newcombe[1]:+.4f}" if math.isfinite(s.diff) else "n/a",
            f"{r.incremental_visits:,.1f}" if math.isfinite(r.incremental_visits) else "n/a",
            f"{s.z:.3f}" if math.isfinite(s.z) else "n/a", _p(s.p_value),
        )
    return table


def _report_errors(name: str, path: Path, errors: list[RowError]) -> None:
    if not errors:
        return
    err_console.print(f"[yellow]{len(errors)} bad {name} row{'s' if len(errors) != 1 else ''} left out[/] "
                      f"({escape(str(path))}):", highlight=False)
    for e in errors[:SHOWN_ERRORS]:
        err_console.print(f"  {escape(str(e))}", highlight=False)
    if len(errors) > SHOWN_ERRORS:
        err_console.print(f"  ... and {len(errors) - SHOWN_ERRORS} more", highlight=False)


def _errors_json(errors: list[RowError]) -> dict[str, object]:
    return {"count": len(errors), "first": [{"line": e.line, "reason": e.reason} for e in errors[:SHOWN_ERRORS]]}


def people(
    exposures: Annotated[Path, typer.Argument(help="CSV of ad exposures: pseudonym, campaign, time, arm "
                                                   "(exposed or control).", show_default=False)],
    visits: Annotated[Path, typer.Argument(help="CSV of app visits: pseudonym, arrival, dwell_s "
                                                "(optionally campaign).", show_default=False)],
    campaign: Annotated[str | None, typer.Option(help="The campaign to analyse; needed when the exposures "
                                                      "hold more than one.", show_default=False)] = None,
    windows: Annotated[str, typer.Option(help="Attribution windows, whole days after the exposure.")] = "1,7,14,30",
    min_dwell_s: Annotated[float, typer.Option("--min-dwell-s", min=0,
                                               help="Seconds in the store for a visit to count.")]
    = DEFAULT_MIN_DWELL_S,
    json_out: Annotated[bool, typer.Option("--json", help="One JSON object on stdout instead of tables.")] = False,
) -> None:
    """Visit rates of exposed and control app users within each window after their first exposure.

    A person is in the arm of their first exposure in the campaign. Converted: at least one visit of
    at least --min-dwell-s seconds in (exposure, exposure + window]. Lift = rate exposed / rate
    control - 1 (MOVER-R Wilson interval); the difference has Newcombe's interval and a pooled
    two-proportion z-test. Incremental visits count each person at most once a day. Times are epoch
    seconds or ISO 8601 with a UTC offset; bad rows are reported with their line and left out.
    """
    days = parse_windows(windows)
    try:
        exposure_rows, exposure_errors = load_exposures_csv(exposures)
        visit_rows, visit_errors = load_visits_csv(visits)
    except LiftInputError as err:
        raise _fail(str(err)) from None
    found = campaigns_of(exposure_rows)
    if campaign is None and len(found) > 1:
        raise _fail(f"{exposures}: {len(found)} campaigns ({', '.join(found)}); pick one with --campaign")
    if campaign is not None and campaign not in found:
        raise _fail(f"{exposures}: no exposures of campaign {campaign!r} (found {', '.join(found) or 'none'})")
    chosen = campaign if campaign is not None else (found[0] if found else None)
    exp_arrays, visit_arrays = to_arrays(exposure_rows, visit_rows, chosen)
    arms = assign_arms(exp_arrays)
    results = attribute(exp_arrays, visit_arrays, days, min_dwell_s)
    unmatched = int((visit_arrays.person < 0).sum())
    if json_out:
        print(json.dumps({
            "exposures": str(exposures), "visits": str(visits), "campaign": chosen, "min_dwell_s": min_dwell_s,
            "people": {"exposed": arms.n_exposed, "control": arms.n_control, "both_arms": arms.both_arms},
            "visits_without_exposure": unmatched,
            "windows": [r.to_dict() for r in results],
            "bad_rows": {"exposures": _errors_json(exposure_errors), "visits": _errors_json(visit_errors)},
        }))
        return
    _report_errors("exposure", exposures, exposure_errors)
    _report_errors("visit", visits, visit_errors)
    console = Console()
    console.print(_table(results, f"campaign {chosen or '(none)'}: people-level lift, visits of at least "
                                  f"{min_dwell_s:g} s"))
    console.print(f"{arms.n_exposed:,} exposed and {arms.n_control:,} control people; {arms.both_arms:,} seen in "
                  f"both arms (counted in the arm of their first exposure); {unmatched:,} visits of people "
                  f"never exposed ignored", highlight=False)


def register(app: typer.Typer) -> None:
    """Add the `people` command to the `lift` typer app."""
    app.command("people")(people)
