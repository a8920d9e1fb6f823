"""Hourly footfall per store and per zone, computed from the stored events and kept in SQLite.

Two sources, each for what it measures well. The door camera's line counts are the authoritative
footfall (entries, exits, occupancy): it sees everyone, phone or not. Radio sees only phones, and
a phone's pseudonym rotates, but it tells where people went and for how long: distinct devices,
zone visits and dwell, walk-ins versus walk-bys. The capture rate divides radio by radio (walk-ins
/ (walk-ins + walk-bys)), so the share of people carrying a phone cancels out.

Hours are UTC hours, keyed by their start in epoch seconds. Visits, and the zone stays in them,
count in the hour they began; a camera report counts its crossings in the hour of its interval's
midpoint and its occupancy in the hour it was taken. Dwell figures are in seconds.
`compute_hourly` is pure; `refresh` reads the events, calls it and upserts the rows, so recomputing
an hour (late events, new rules) replaces it.
"""

from __future__ import annotations

import json
import math
from collections import defaultdict
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from typing import Any

import numpy as np
import sqlite_utils
from pydantic import Field

from edge.settings import ConfigModel
from gateway.fusion import FusionRules, Sighting
from gateway.visits import (
    Resolver,
    Visit,
    VisitRules,
    build_visits,
    sightings_from_rows,
)

HOUR = 3600
FOOTFALL, ZONES = "hourly_footfall", "hourly_zone"
DWELL_QUANTILES = {"dwell_p25": 25, "dwell_p50": 50, "dwell_p75": 75, "dwell_p90": 90}


class AggregateSettings(ConfigModel):
    fusion: FusionRules = FusionRules()
    visits: VisitRules = VisitRules()
    context_s: float = Field(2 * HOUR, ge=0, description="Events read either side of the hours being computed, "
                             "so visits that cross the range's edges are counted whole and once.")
    counting_nodes: list[str] | None = Field(None, description="Camera nodes whose line counts and occupancy are "
                                             "the store's. Default: every node that reported a line crossing.")


@dataclass(frozen=True, slots=True)
class CountsReport:
    node_id: str
    at: float
    interval_s: float
    line_in: int
    line_out: int
    occupancy: int
    zones: dict[str, int]


def counts_from_rows(rows: Iterable[Mapping[str, Any]]) -> list[CountsReport]:
    out = []
    for row in rows:
        if row["kind"] != "counts":
            continue
        payload = row["payload"]
        p = json.loads(payload) if isinstance(payload, str) else payload
        out.append(CountsReport(row["node_id"], float(row["ts"]), float(p["interval_s"]), int(p["line_in"]),
                                int(p["line_out"]), int(p["occupancy"]), dict(p.get("zones") or {})))
    out.sort(key=lambda r: r.at)
    return out


def hour_of(t: float) -> int:
    """Start of the UTC hour holding `t`."""
    return int(math.floor(t / HOUR) * HOUR)


def hour_after(t: float) -> int:
    """Start of the first UTC hour at or after `t`."""
    return int(math.ceil(t / HOUR) * HOUR)


def _dwell_stats(values: list[float]) -> dict[str, float | None]:
    if not values:
        return {"dwell_mean": None, **{k: None for k in DWELL_QUANTILES}}
    arr = np.asarray(values)
    stats: dict[str, float | None] = {"dwell_mean": round(float(arr.mean()), 1)}
    for key, q in DWELL_QUANTILES.items():
        stats[key] = round(float(np.percentile(arr, q)), 1)
    return stats


def _hours_overlapped(a: float, b: float) -> range:
    return range(hour_of(a), hour_of(max(a, b - 1e-6)) + HOUR, HOUR)


def compute_hourly(store_id: str, since: float, until: float, counts: list[CountsReport],
                   sightings: list[Sighting], visits: list[Visit],
                   counting_nodes: Iterable[str] | None = None) -> tuple[list[dict[str, Any]], list[dict[str, Any]]]:
    """Rows of `hourly_footfall` and `hourly_zone` for the whole hours in [since, until).

    `visits` may include visits from before and after the range: they count the devices present in
    an hour, while only those that arrived in it count as its visits. An hour gets rows only when
    something was reported in it, so an outage is a hole, not a zero.
    """
    h0 = hour_of(since)
    h1 = max(h0, hour_after(until))
    hours = range(h0, h1, HOUR)
    counters = set(counting_nodes) if counting_nodes is not None else {
        r.node_id for r in counts if r.line_in or r.line_out}

    entries: dict[int, int] = defaultdict(int)
    exits: dict[int, int] = defaultdict(int)
    occupancy: dict[int, list[int]] = defaultdict(list)
    people: dict[tuple[str, int], list[int]] = defaultdict(list)
    latest: dict[str, int] = {}
    for r in counts:
        h = hour_of(r.at - r.interval_s / 2)
        if r.node_id in counters:
            entries[h] += r.line_in
            exits[h] += r.line_out
            latest[r.node_id] = r.occupancy
            occupancy[hour_of(r.at)].append(sum(latest.values()))
        for zone, n in r.zones.items():
            people[(zone, hour_of(r.at))].append(n)

    in_store: dict[int, set[str]] = defaultdict(set)
    zone_devices: dict[tuple[str, int], set[str]] = defaultdict(set)
    walk_ins: dict[int, int] = defaultdict(int)
    walk_bys: dict[int, int] = defaultdict(int)
    time_in_store: dict[int, list[float]] = defaultdict(list)
    zone_dwell: dict[tuple[str, int], list[float]] = defaultdict(list)
    for v in visits:
        arrived = hour_of(v.arrival)
        if v.walk_in:
            for h in _hours_overlapped(v.arrival, v.departure):
                in_store[h].add(v.device)
            for stay in v.zones:
                for h in _hours_overlapped(stay.enter, stay.exit):
                    zone_devices[(stay.zone, h)].add(v.device)
                zone_dwell[(stay.zone, hour_of(stay.enter))].append(stay.dwell_s)
            walk_ins[arrived] += 1
            time_in_store[arrived].append(v.duration_s)
        else:
            walk_bys[arrived] += 1
    heard = {hour_of(s.at) for s in sightings} | {h for _, h in people}

    footfall, zones = [], []
    for h in hours:
        if not (h in heard or occupancy.get(h) or entries.get(h) or exits.get(h) or walk_ins.get(h)
                or walk_bys.get(h)):
            continue
        occ = occupancy.get(h, [])
        ins, bys = walk_ins.get(h, 0), walk_bys.get(h, 0)
        footfall.append({
            "store_id": store_id, "hour_start": h, "entries": entries.get(h, 0), "exits": exits.get(h, 0),
            "peak_occupancy": max(occ) if occ else None,
            "mean_occupancy": round(float(np.mean(occ)), 2) if occ else None,
            "camera_reports": len(occ), "distinct_devices": len(in_store.get(h, ())),
            "walk_ins": ins, "walk_bys": bys, "capture_rate": round(ins / (ins + bys), 4) if ins + bys else None,
            **_dwell_stats(time_in_store.get(h, [])),
        })
    zone_names = sorted({z for z, _ in people} | {z for z, _ in zone_devices} | {s.zone for s in sightings})
    for h in hours:
        for zone in zone_names:
            seen = people.get((zone, h), [])
            devices = zone_devices.get((zone, h), set())
            dwell = zone_dwell.get((zone, h), [])
            if not (seen or devices or dwell):
                continue
            zones.append({
                "store_id": store_id, "zone": zone, "hour_start": h,
                "people_mean": round(float(np.mean(seen)), 2) if seen else None,
                "people_peak": max(seen) if seen else None,
                "distinct_devices": len(devices), "visits": len(dwell), **_dwell_stats(dwell),
            })
    return footfall, zones


def ensure_aggregate_schema(db: sqlite_utils.Database) -> None:
    dwell = {"dwell_mean": float, **{k: float for k in DWELL_QUANTILES}}
    db[FOOTFALL].create(
        {"store_id": str, "hour_start": int, "entries": int, "exits": int, "peak_occupancy": int,
         "mean_occupancy": float, "camera_reports": int, "distinct_devices": int, "walk_ins": int, "walk_bys": int,
         "capture_rate": float, **dwell},
        pk=("store_id", "hour_start"), if_not_exists=True,
    )
    db[ZONES].create(
        {"store_id": str, "zone": str, "hour_start": int, "people_mean": float, "people_peak": int,
         "distinct_devices": int, "visits": int, **dwell},
        pk=("store_id", "zone", "hour_start"), if_not_exists=True,
    )
    db[ZONES].create_index(["hour_start"], if_not_exists=True)


def read_events(db: sqlite_utils.Database, since: float, until: float) -> list[dict[str, Any]]:
    """Presence and counts events produced in [since, until), in time order."""
    return list(db.query("SELECT node_id, kind, ts, payload FROM events WHERE kind IN ('presence', 'counts')"
                         " AND ts >= ? AND ts < ? ORDER BY ts, id", [since, until]))


def load_visits(db: sqlite_utils.Database, since: float, until: float,
                settings: AggregateSettings | None = None, zone_of: Mapping[str, str | None] | None = None,
                resolve: Resolver | None = None) -> list[Visit]:
    """Visits that arrived in [since, until), from the stored events (read with `context_s` either side)."""
    settings = settings or AggregateSettings()
    rows = read_events(db, since - settings.context_s, until + settings.context_s)
    visits = build_visits(sightings_from_rows(rows, zone_of, resolve), settings.fusion, settings.visits)
    return [v for v in visits if since <= v.arrival < until]


@dataclass(frozen=True, slots=True)
class Refreshed:
    hours: int
    zone_rows: int


def refresh(db: sqlite_utils.Database, store_id: str, since: float, until: float,
            settings: AggregateSettings | None = None, zone_of: Mapping[str, str | None] | None = None,
            resolve: Resolver | None = None) -> Refreshed:
    """Recompute the whole UTC hours overlapping [since, until) and replace their rows.

    Needs a writable connection; SQLite serialises it with the ingest writer. Rows of hours in
    the range that no longer have data are deleted, so a refresh never leaves stale figures.
    """
    settings = settings or AggregateSettings()
    ensure_aggregate_schema(db)
    h0 = hour_of(since)
    h1 = max(h0, hour_after(until))
    rows = read_events(db, h0 - settings.context_s, h1 + settings.context_s)
    counts = [r for r in counts_from_rows(rows) if h0 <= r.at < h1 + r.interval_s]
    sightings = sightings_from_rows(rows, zone_of, resolve)
    visits = build_visits(sightings, settings.fusion, settings.visits)
    inside = [s for s in sightings if h0 <= s.at < h1]
    footfall, zones = compute_hourly(store_id, h0, h1, counts, inside, visits, settings.counting_nodes)
    if footfall:
        db[FOOTFALL].upsert_all(footfall, pk=("store_id", "hour_start"))
    if zones:
        db[ZONES].upsert_all(zones, pk=("store_id", "zone", "hour_start"))
    kept = {r["hour_start"] for r in footfall}
    kept_zones = {(r["zone"], r["hour_start"]) for r in zones}
    for row in list(db.query(f"SELECT hour_start FROM {FOOTFALL} WHERE store_id = ? AND hour_start >= ?"
                             " AND hour_start < ?", [store_id, h0, h1])):
        if row["hour_start"] not in kept:
            db[FOOTFALL].delete((store_id, row["hour_start"]))
    for row in list(db.query(f"SELECT zone, hour_start FROM {ZONES} WHERE store_id = ? AND hour_start >= ?"
                             " AND hour_start < ?", [store_id, h0, h1])):
        if (row["zone"], row["hour_start"]) not in kept_zones:
            db[ZONES].delete((store_id, row["zone"], row["hour_start"]))
    return Refreshed(len(footfall), len(zones))
