"""A campaign's lift report: people-level lift by window and, for a store test, treated vs counterfactual.

Inputs are read from the cloud database (exposures and pseudonymous app visits of the campaign;
daily entries per store from the hourly footfall); the outputs are one self-contained HTML page
(inline SVG, no scripts, no network), the same figures as JSON, and the windows as CSV. Plots are
drawn here in a few lines of SVG rather than with a plotting library: two simple charts do not
earn a dependency the size of matplotlib.
"""

from __future__ import annotations

import csv
import datetime as dt
import html
import io
import json
import math
from collections import defaultdict
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from cloud_sync.cloud.db import CloudDB
from cloud_sync.lift.people import Exposures, Visits, WindowResult, attribute
from cloud_sync.lift.synthetic_control import GeoLiftResult, GeoPanel, synthetic_control


@dataclass
class Report:
    campaign: str
    windows: list[WindowResult]
    geo: GeoLiftResult | None
    exposures: int
    visits: int

    def as_dict(self) -> dict[str, Any]:
        return {"campaign": self.campaign, "exposures": self.exposures, "visits": self.visits,
                "windows": [w.to_dict() for w in self.windows],
                "geo": self.geo.as_dict() if self.geo is not None else None}


def people_arrays(exposure_rows: Sequence[dict[str, Any]],
                  visit_rows: Sequence[dict[str, Any]]) -> tuple[Exposures, Visits]:
    codes: dict[str, int] = {}
    for row in exposure_rows:
        codes.setdefault(row["pseudonym"], len(codes))
    exposures = Exposures(np.array([codes[r["pseudonym"]] for r in exposure_rows], dtype=np.int64),
                          np.array([float(r["exposed_at"]) for r in exposure_rows]),
                          np.array([r["arm"] == "exposed" for r in exposure_rows], dtype=bool))
    visits = Visits(np.array([codes.get(r["pseudonym"], -1) for r in visit_rows], dtype=np.int64),
                    np.array([float(r["arrival"]) for r in visit_rows]),
                    np.array([float(r["dwell_s"] or 0.0) for r in visit_rows]))
    return exposures, visits


def daily_entries_panel(db: CloudDB, stores: Sequence[str]) -> GeoPanel:
    """Entries per store and UTC day, from the hourly footfall the stores uploaded."""
    totals: dict[tuple[str, str], float] = defaultdict(float)
    for store in stores:
        for row in db.footfall(store):
            if row["entries"] is not None:
                day = dt.datetime.fromtimestamp(row["hour_start"], dt.UTC).date().isoformat()
                totals[(store, day)] += row["entries"]
    keys = sorted(totals)
    return GeoPanel.from_long([k[0] for k in keys], [k[1] for k in keys], [totals[k] for k in keys])


def build_report(db: CloudDB, campaign: str, windows: Sequence[int], min_dwell_s: float,
                 treated: Sequence[str] = (), controls: Sequence[str] = (), post_start: str | None = None,
                 permutations: int = 200) -> Report:
    exposure_rows = db.exposures(campaign)
    visit_rows = db.app_visits(campaign)
    if not exposure_rows:
        raise ValueError(f"no exposures of campaign {campaign!r} in the cloud database; import them first "
                         "(POST /v1/exposures or /v1/exposures/csv)")
    exposures, visits = people_arrays(exposure_rows, visit_rows)
    results = attribute(exposures, visits, windows, min_dwell_s)
    geo = None
    if treated and post_start:
        panel = daily_entries_panel(db, [*treated, *controls])
        geo = synthetic_control(panel, list(treated), post_start, permutations=permutations, rng=0)
    return Report(campaign, results, geo, len(exposure_rows), len(visit_rows))


def windows_csv(report: Report) -> str:
    out = io.StringIO()
    rows = [w.to_dict() for w in report.windows]
    fields = [k for k, v in rows[0].items() if not isinstance(v, list | tuple)] if rows else []
    writer = csv.DictWriter(out, fieldnames=[*fields, "lift_low", "lift_high"], extrasaction="ignore")
    writer.writeheader()
    for row in rows:
        low, high = row.get("lift_ci") or (None, None)
        writer.writerow({**row, "lift_low": low, "lift_high": high})
    return out.getvalue()


def _lift_chart(windows: list[WindowResult]) -> str:
    """Lift per window with its interval: a dot and a whisker per window, a line at zero."""
    points = [(w.window_days, w.stats.lift, *w.stats.lift_ci) for w in windows]
    values = [v for p in points for v in p[1:] if v is not None and math.isfinite(v)] + [0.0]
    lo, hi = min(values), max(values)
    pad = (hi - lo) * 0.1 or 0.1
    lo, hi = lo - pad, hi + pad
    width, height, left = 520, 240, 60

    def y(v: float) -> float:
        return 20 + (hi - v) / (hi - lo) * (height - 50)

    parts = [f'<svg xmlns="http://www.w3.org/2000/svg" width="{width}" height="{height}" role="img" '
             f'aria-label="lift by attribution window">',
             f'<line x1="{left}" x2="{width - 10}" y1="{y(0):.1f}" y2="{y(0):.1f}" stroke="#888" stroke-dasharray="4"/>',
             f'<text x="5" y="{y(0) + 4:.1f}" font-size="11">0 %</text>']
    step = (width - left - 20) / max(1, len(points))
    for i, (days, lift, low, high) in enumerate(points):
        x = left + step * (i + 0.5)
        if all(v is not None and math.isfinite(v) for v in (low, high)):
            parts.append(f'<line x1="{x:.1f}" x2="{x:.1f}" y1="{y(high):.1f}" y2="{y(low):.1f}" stroke="#1f77b4" '
                         f'stroke-width="2"/>')
        if lift is not None and math.isfinite(lift):
            parts.append(f'<circle cx="{x:.1f}" cy="{y(lift):.1f}" r="5" fill="#1f77b4"/>')
            parts.append(f'<text x="{x + 8:.1f}" y="{y(lift) + 4:.1f}" font-size="11">{lift:+.1%}</text>')
        parts.append(f'<text x="{x - 12:.1f}" y="{height - 10}" font-size="11">{days} d</text>')
    return "".join(parts) + "</svg>"


def _series_chart(geo: GeoLiftResult) -> str:
    """The average treated store against its synthetic counterfactual, the post-period shaded."""
    observed, counterfactual = geo.treated_series, geo.counterfactual_series
    n = len(observed)
    values = np.concatenate([observed, counterfactual])
    lo, hi = float(np.nanmin(values)), float(np.nanmax(values))
    width, height = 640, 260

    def x(i: int) -> float:
        return 40 + i / max(1, n - 1) * (width - 60)

    def y(v: float) -> float:
        return 15 + (hi - v) / ((hi - lo) or 1.0) * (height - 40)

    def path(series: np.ndarray) -> str:
        return " ".join(f"{'M' if i == 0 else 'L'}{x(i):.1f},{y(float(v)):.1f}" for i, v in enumerate(series))

    start = x(geo.post_start_index)
    return (f'<svg xmlns="http://www.w3.org/2000/svg" width="{width}" height="{height}" role="img" '
            f'aria-label="treated versus counterfactual">'
            f'<rect x="{start:.1f}" y="10" width="{width - 20 - start:.1f}" height="{height - 30}" fill="#f3f3f3"/>'
            f'<path d="{path(counterfactual)}" fill="none" stroke="#999" stroke-width="1.5" stroke-dasharray="5"/>'
            f'<path d="{path(observed)}" fill="none" stroke="#d62728" stroke-width="1.5"/>'
            f'<text x="{start + 5:.1f}" y="25" font-size="11">test period</text>'
            f'<text x="45" y="{height - 5}" font-size="11">red: treated stores (mean), dashed: synthetic control</text>'
            "</svg>")


def render_html(report: Report) -> str:
    def pct(v: float | None) -> str:
        return "–" if v is None or not math.isfinite(v) else f"{v:+.1%}"

    rows = []
    for w in report.windows:
        s = w.stats
        low, high = s.lift_ci
        rows.append(f"<tr><td>{w.window_days} d</td><td>{w.converted_exposed}/{w.n_exposed} ({s.p1:.1%})</td>"
                    f"<td>{w.converted_control}/{w.n_control} ({s.p2:.1%})</td><td>{pct(s.lift)}</td>"
                    f"<td>{pct(low)} … {pct(high)}</td><td>{w.incremental_visits:,.0f}</td>"
                    f"<td>{s.z:.2f}</td><td>{s.p_value:.4f}</td></tr>")
    geo_html = ""
    if report.geo is not None:
        g = report.geo
        weights = ", ".join(f"{html.escape(k)} {v:.2f}" for k, v in sorted(g.weights.items(), key=lambda kv: -kv[1]))
        geo_html = (f"<h2>Store-level lift (synthetic control)</h2>{_series_chart(g)}"
                    f"<p>Lift {pct(g.lift)}, incremental visits {g.incremental:,.0f} "
                    f"(interval {g.ci_low:,.0f} … {g.ci_high:,.0f}), ATT {g.att:,.1f} per store per day, "
                    f"conformal p = {g.p_value:.3f}. Control weights: {weights}.</p>")
    title = html.escape(f"Lift of campaign {report.campaign}")
    return (f"<!doctype html><html lang=en><meta charset=utf-8><title>{title}</title>"
            "<style>body{font:14px system-ui,sans-serif;margin:2em;max-width:60em}"
            "td,th{padding:.3em .8em;text-align:right}th{background:#eee}</style>"
            f"<h1>{title}</h1><p>{report.exposures:,} exposures, {report.visits:,} app visits.</p>"
            "<h2>People-level lift (exposed vs hold-out)</h2>"
            f"{_lift_chart(report.windows)}"
            "<table><tr><th>window</th><th>exposed visited</th><th>control visited</th><th>lift</th>"
            f"<th>interval</th><th>incremental visits</th><th>z</th><th>p</th></tr>{''.join(rows)}</table>"
            f"{geo_html}</html>")


def write_report(report: Report, out_dir: Path) -> dict[str, Path]:
    out_dir.mkdir(parents=True, exist_ok=True)
    paths = {"html": out_dir / "report.html", "json": out_dir / "report.json", "csv": out_dir / "windows.csv"}
    paths["html"].write_text(render_html(report))
    paths["json"].write_text(json.dumps(report.as_dict(), indent=2))
    paths["csv"].write_text(windows_csv(report))
    return paths
