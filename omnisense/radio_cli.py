"""`omnisense radio ...`: check the radio estimators against recordings with ground truth.

Thin: reading the files and printing; the parsing and the estimate are in `edge.radio`.
"""

from __future__ import annotations

import csv
import datetime as dt
import json
import math
from collections.abc import Sequence
from pathlib import Path
from typing import Annotated
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

import typer
from rich.console import Console
from rich.markup import escape
from rich.table import Table

from edge.radio.pcap import PcapError, PcapReader
from edge.radio.probe import MalformedFrame, ProbeRequest, parse_probe
from edge.radio.wifi_devices import (
    EstimatorSettings,
    ScoredWindow,
    estimate_windows,
    mean_absolute_errors,
    parse_oui,
    score_windows,
)
from omnisense.runtime import err_console

radio_app = typer.Typer(
    help="Radio estimators on recorded captures: people counted from Wi-Fi probe requests, scored against truth.",
    no_args_is_help=True,
    add_completion=False,
    pretty_exceptions_enable=False,
)



@radio_app.callback()
def radio() -> None:
    """Radio estimators on recorded captures: people counted from Wi-Fi probe requests, scored against truth."""


TRUTH_COLUMNS = ("datetime", "occupancy")
_QUARTER_HOUR = 900


class TruthError(ValueError):
    """The ground-truth CSV cannot be used; the message names the file and what is wrong."""


def read_truth(path: Path) -> list[tuple[dt.datetime, float]]:
    """(datetime, people) rows of a CSV with `datetime` and `occupancy` columns, `;` or `,` separated."""
    try:
        with open(path, newline="", encoding="utf-8") as f:
            header = f.readline()
            delimiter = ";" if header.count(";") > header.count(",") else ","
            f.seek(0)
            reader = csv.DictReader(f, delimiter=delimiter)
            missing = [c for c in TRUTH_COLUMNS if c not in (reader.fieldnames or ())]
            if missing:
                raise TruthError(f"{path}: no column {' or '.join(missing)} (need {', '.join(TRUTH_COLUMNS)}; "
                                 f"found {', '.join(reader.fieldnames or ()) or 'nothing'})")
            rows = []
            for line, row in enumerate(reader, start=2):
                try:
                    when = dt.datetime.fromisoformat(row["datetime"].strip())
                    people = float(row["occupancy"])
                except (ValueError, AttributeError, TypeError):
                    raise TruthError(f"{path}, line {line}: need an ISO date-time and a number, "
                                     f"got {row['datetime']!r} and {row['occupancy']!r}") from None
                if math.isfinite(people):
                    rows.append((when, people))
            return rows
    except FileNotFoundError:
        raise TruthError(f"{path}: no such file") from None
    except UnicodeDecodeError:
        raise TruthError(f"{path}: not a text CSV file") from None
    except OSError as err:
        raise TruthError(f"{path}: cannot read: {err.strerror or err}") from None


def truth_offset(rows: Sequence[tuple[dt.datetime, float]], first_probe: float | None, tz: str) -> dt.tzinfo:
    """The time zone of naive truth datetimes.

    'auto' infers a fixed UTC offset: the whole quarter hour between the first truth row read as
    UTC and the first capture timestamp (pcap times are UTC). The sc6-61 CSVs hold a row per
    captured probe in the lab's local time (Europe/Prague: UTC+1 in winter, UTC+2 in summer), so
    their first row and the first pcap record are the same instant and the offset comes out exact.
    Otherwise an IANA zone name such as Europe/Prague, or UTC.
    """
    if tz != "auto":
        try:
            return ZoneInfo(tz)
        except (ZoneInfoNotFoundError, ValueError):
            raise TruthError(f"--tz: unknown time zone {tz!r} (an IANA name such as Europe/Prague, or auto)") from None
    if not rows or first_probe is None:
        return dt.UTC
    naive_as_utc = rows[0][0].replace(tzinfo=dt.UTC).timestamp()
    offset = round((naive_as_utc - first_probe) / _QUARTER_HOUR) * _QUARTER_HOUR
    return dt.timezone(dt.timedelta(seconds=offset))


def to_timestamps(rows: Sequence[tuple[dt.datetime, float]], zone: dt.tzinfo) -> list[tuple[float, float]]:
    return [((when if when.tzinfo else when.replace(tzinfo=zone)).timestamp(), people) for when, people in rows]


def read_probes(path: Path) -> tuple[list[tuple[float, ProbeRequest]], dict[str, int]]:
    """The probe requests of a capture and counts of what else it held."""
    reader = PcapReader(path)
    probes: list[tuple[float, ProbeRequest]] = []
    other = malformed = 0
    for when, frame in reader:
        try:
            probe = parse_probe(frame)
        except MalformedFrame:
            malformed += 1
            continue
        if probe is None:
            other += 1
        else:
            probes.append((when, probe))
    return probes, {"records": reader.records, "probe_requests": len(probes), "other_frames": other,
                    "malformed_frames": malformed, "truncated": int(reader.truncated)}


def _fail(message: str) -> typer.Exit:
    err_console.print(f"[bold red]error:[/] {escape(message)}", highlight=False)
    return typer.Exit(2)


def _ouis(values: list[str]) -> tuple[bytes, ...]:
    try:
        return tuple(parse_oui(v) for v in values)
    except ValueError as err:
        raise typer.BadParameter(str(err), param_hint="--deny-oui") from None


def _table(rows: Sequence[ScoredWindow], zone: dt.tzinfo, title: str) -> Table:
    table = Table(title=title)
    for name in ("window start", "truth", "estimate", "distinct addresses", "non-randomized"):
        table.add_column(name, justify="left" if name == "window start" else "right")
    for r in rows:
        table.add_row(dt.datetime.fromtimestamp(r.start, zone).strftime("%Y-%m-%d %H:%M"), f"{r.truth:.1f}",
                      f"{r.people:.1f}", str(r.addresses), str(r.global_addresses))
    return table


@radio_app.command("wifi-eval")
def wifi_eval(
    pcap: Annotated[Path, typer.Argument(help="Capture of radiotap 802.11 frames (pcap, linktype 127).",
                                         show_default=False)],
    truth: Annotated[Path, typer.Option("--truth", help="CSV with datetime and occupancy (people) columns.",
                                        show_default=False)],
    window: Annotated[float, typer.Option(min=10, help="Window length, seconds.")] = 300,
    deny_oui: Annotated[list[str] | None, typer.Option(
        "--deny-oui", help="OUI prefix never counted, e.g. the site's own PCs; repeat for more. "
                           "For sc6-61: --deny-oui dc:fb:48 --deny-oui 40:ec:99.")] = None,
    rssi_min: Annotated[int, typer.Option(help="dBm: devices heard at least this strong count as in the room.")]
    = EstimatorSettings.rssi_min_dbm,
    tz: Annotated[str, typer.Option(help="Time zone of naive truth datetimes: an IANA name, or auto (infer "
                                         "the offset from the first row and the first frame).")] = "auto",
    json_output: Annotated[bool, typer.Option("--json", help="One JSON object on stdout instead of a table.")] = False,
) -> None:
    """People per window estimated from a capture's probe requests, beside the truth and the naive counts.

    Truth per window: the mean occupancy of the CSV rows inside it; windows without rows are not
    scored. Prints the mean absolute error of the estimate, of distinct source addresses and of
    distinct non-randomized addresses.
    """
    deny = _ouis(deny_oui or [])
    try:
        with err_console.status(f"reading {pcap.name}"):
            probes, counts = read_probes(pcap)
            rows = read_truth(truth)
            zone = truth_offset(rows, probes[0][0] if probes else None, tz)
    except (PcapError, TruthError) as err:
        raise _fail(str(err)) from None
    settings = EstimatorSettings(window_s=window, rssi_min_dbm=rssi_min, deny_oui=deny)
    scored = score_windows(estimate_windows(probes, settings=settings), to_timestamps(rows, zone), window)
    errors = mean_absolute_errors(scored)
    if json_output:
        print(json.dumps({
            "pcap": str(pcap), "truth": str(truth), "window_s": window, "rssi_min_dbm": rssi_min,
            "truth_utc_offset": dt.datetime.fromtimestamp(scored[0].start if scored else 0, zone).strftime("%z"),
            **counts, "scored_windows": len(scored),
            **{k: (round(v, 3) if math.isfinite(v) else None) for k, v in errors.items()},
            "windows": [{"start": dt.datetime.fromtimestamp(r.start, dt.UTC).isoformat(), "truth": round(r.truth, 3),
                         "people": r.people, "addresses": r.addresses, "global_addresses": r.global_addresses}
                        for r in scored],
        }))
        return
    console = Console()
    console.print(_table(scored, zone, f"{pcap.name}: people per {window:g} s window"))
    console.print(f"{counts['probe_requests']} probe requests, {counts['other_frames']} other frames, "
                  f"{counts['malformed_frames']} malformed; {len(scored)} windows scored")
    if scored:
        console.print(f"mean absolute error per window: estimate {errors['mae_estimate']:.2f}, "
                      f"distinct addresses {errors['mae_naive']:.2f}, "
                      f"non-randomized addresses {errors['mae_nonrandom']:.2f}")
    else:
        console.print("[yellow]no window has both truth and captured probes: nothing to score[/]")
