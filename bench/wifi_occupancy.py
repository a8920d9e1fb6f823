"""People in a room from Wi-Fi probe requests: the estimate beside the naive counts, on real days.

Data: the sc6-61 recordings in ../shared/data/radio/wifi/sc6-61 (an ESP32 sniffer in a university
lab; one pcap and one truth CSV per day). The lab's fixed PCs (OUIs dc:fb:48 and 40:ec:99) are
denied, as the data set's notes say.

Scored per 5-minute window: truth = mean occupancy of the CSV rows in the window (windows without
rows are not scored); MAE per window, weighted by windows over all days. Columns:
- estimate: `edge.radio.wifi_devices` with its documented defaults (fitted once on all six days);
- leave-one-day-out: the RSSI threshold and the devices-to-people scale fitted on five days and
  scored on the sixth, so the figure says how the method does on a day it has not seen;
- naive counts: distinct source addresses and distinct non-randomized addresses per window;
- oracle: answering each window with that day's true mean (needs the truth; a yardstick only).

Usage: python bench/wifi_occupancy.py [--data DIR]
"""

from __future__ import annotations

import argparse
import json
import sys
from dataclasses import replace
from pathlib import Path

from rich.console import Console
from rich.table import Table

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from edge.radio.probe import ProbeRequest  # noqa: E402
from edge.radio.wifi_devices import (  # noqa: E402
    EstimatorSettings,
    ScoredWindow,
    estimate_windows,
    mean_absolute_errors,
    score_windows,
)
from omnisense.radio_cli import read_probes, read_truth, to_timestamps, truth_offset  # noqa: E402

DEFAULT_DATA = Path(__file__).resolve().parents[1].parent / "shared" / "data" / "radio" / "wifi" / "sc6-61"
DENY_OUI = (bytes.fromhex("dcfb48"), bytes.fromhex("40ec99"))
RSSI_GRID = (-80, -75, -72, -70, -68, -67, -66, -65, -62, -60)
SCALE_GRID = [i / 100 for i in range(301)]

Day = tuple[list[tuple[float, ProbeRequest]], list[tuple[float, float]]]


def load_days(folder: Path) -> dict[str, Day]:
    days = {}
    for pcap in sorted(folder.glob("*_anonymized.pcap")):
        probes, _ = read_probes(pcap)
        rows = read_truth(pcap.with_name(pcap.name.replace("_anonymized.pcap", "_ver-99.csv")))
        zone = truth_offset(rows, probes[0][0] if probes else None, "auto")
        days[pcap.name.split("_")[1]] = (probes, to_timestamps(rows, zone))
    return days


def scored(day: Day, settings: EstimatorSettings) -> list[ScoredWindow]:
    probes, truth = day
    return score_windows(estimate_windows(probes, settings=settings), truth, settings.window_s)


def fit_scale(rows: list[ScoredWindow]) -> tuple[float, float]:
    """The devices-to-people scale with the least total absolute error, and that error per window."""
    best = min(SCALE_GRID, key=lambda k: sum(abs(k * r.people - r.truth) for r in rows))
    return best, sum(abs(best * r.people - r.truth) for r in rows) / len(rows)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--data", type=Path, default=DEFAULT_DATA, help="folder of the sc6-61 pcaps and CSVs")
    args = parser.parse_args()
    console = Console(width=max(Console().width, 110))
    if not args.data.is_dir() or not any(args.data.glob("*.pcap")):
        console.print(f"[yellow]no sc6-61 recordings at {args.data}: nothing to measure (the shared data set "
                      f"is not on this machine)[/]")
        return 0

    days = load_days(args.data)
    defaults = EstimatorSettings(deny_oui=DENY_OUI)
    unit = replace(defaults, people_per_device=1.0)
    # devices per scored window for each RSSI threshold: the scale is then fitted on counts alone
    devices = {t: {d: scored(day, replace(unit, rssi_min_dbm=t)) for d, day in days.items()} for t in RSSI_GRID}

    table = Table(title=f"People per 5-minute window, sc6-61 ({len(days)} days), mean absolute error")
    for name in ("day", "windows", "mean truth", "estimate", "left out", "fit on the rest",
                 "addresses", "non-random", "oracle"):
        table.add_column(name, justify="left" if name == "day" else "right")
    total: dict[str, float] = {"mae_estimate": 0.0, "mae_loo": 0.0, "mae_naive": 0.0, "mae_nonrandom": 0.0,
                               "mae_oracle": 0.0}
    windows = 0
    for held_out, day in days.items():
        rows = scored(day, defaults)
        errors = mean_absolute_errors(rows)
        fits = []
        for t in RSSI_GRID:
            train = [r for d, rs in devices[t].items() if d != held_out for r in rs]
            k, err = fit_scale(train)
            fits.append((err, t, k))
        _, t, k = min(fits)
        loo = sum(abs(k * r.people - r.truth) for r in devices[t][held_out]) / len(rows)
        mean_truth = sum(r.truth for r in rows) / len(rows)
        oracle = sum(abs(mean_truth - r.truth) for r in rows) / len(rows)
        table.add_row(held_out, str(len(rows)), f"{mean_truth:.1f}", f"{errors['mae_estimate']:.2f}", f"{loo:.2f}",
                      f"{t} dBm, x{k:.2f}", f"{errors['mae_naive']:.1f}", f"{errors['mae_nonrandom']:.2f}",
                      f"{oracle:.2f}")
        n = len(rows)
        windows += n
        for key, value in (("mae_estimate", errors["mae_estimate"]), ("mae_loo", loo),
                           ("mae_naive", errors["mae_naive"]), ("mae_nonrandom", errors["mae_nonrandom"]),
                           ("mae_oracle", oracle)):
            total[key] += value * n
    result = {k: round(v / windows, 3) for k, v in total.items()}
    table.add_row("all", str(windows), "", f"{result['mae_estimate']:.2f}", f"{result['mae_loo']:.2f}",
                  "", f"{result['mae_naive']:.1f}", f"{result['mae_nonrandom']:.2f}", f"{result['mae_oracle']:.2f}",
                  style="bold")
    console.print(table)
    all_fit = min((fit_scale([r for rs in devices[t].values() for r in rs]) + (t,) for t in RSSI_GRID),
                  key=lambda f: f[1])
    console.print(f"defaults: {defaults.rssi_min_dbm} dBm, x{defaults.people_per_device}; "
                  f"best on all days: {all_fit[2]} dBm, x{all_fit[0]:.2f} (MAE {all_fit[1]:.2f})")
    print("BENCH " + json.dumps(result))
    return 0


if __name__ == "__main__":
    sys.exit(main())
