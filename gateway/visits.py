"""Store visits from fused locations: arrival, the zones visited with their dwell, departure.

A device's visit is the run of its locations with no gap longer than `gap_s` out of every zone:
walking between zones (or a node's exit that came a little early) does not end it. A visit is a
walk-by when the device was only ever placed in the zones by the street (the entrance) and either
briefly or weakly: a passer-by's phone is heard through the shop window for a few seconds, a
shopper's for minutes and from inside. Pure: stored event rows in, visits out.
"""

from __future__ import annotations

import json
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass, field, replace
from typing import Any, NamedTuple

from pydantic import Field

from edge.settings import ConfigModel
from gateway.fusion import Fusion, FusionRules, LocationChange, Sighting

Resolver = Callable[[Sighting], str]


class VisitRules(ConfigModel):
    """When a device's locations make one visit, and when that visit was only a walk past."""

    gap_s: float = Field(300.0, gt=0, description="A device out of every zone for longer than this (s) has left; "
                         "its next location starts a new visit.")
    walk_by_zones: list[str] = Field(["entrance"], description="Zones a passer-by outside can be placed in: the "
                                     "ones by the door and the shop window.")
    walk_by_max_s: float = Field(30.0, ge=0, description="A visit only in `walk_by_zones` shorter than this (s, "
                                 "total dwell) is a walk-by: shoppers who stop at the entrance browse longer.")
    walk_by_rssi_dbm: float = Field(-75.0, description="A visit only in `walk_by_zones` never stronger than this "
                                    "(dBm) is a walk-by however long: heard through the window, not inside.")


class ZoneStay(NamedTuple):
    zone: str
    enter: float
    exit: float
    dwell_s: float


@dataclass(frozen=True, slots=True)
class Visit:
    device: str
    arrival: float
    departure: float
    zones: tuple[ZoneStay, ...]
    walk_in: bool
    max_rssi: float | None

    @property
    def duration_s(self) -> float:
        return self.departure - self.arrival


@dataclass(slots=True)
class _Open:
    arrival: float
    stays: list[ZoneStay] = field(default_factory=list)
    zone: str | None = None
    entered: float = 0.0
    left: float | None = None      # when it went out of every zone; None while in one
    max_rssi: float | None = None


class VisitBuilder:
    """Streaming: feed location changes in time order per device; finished visits come out."""

    def __init__(self, rules: VisitRules | None = None) -> None:
        self.rules = rules or VisitRules()
        self._open: dict[str, _Open] = {}

    def feed(self, change: LocationChange) -> list[Visit]:
        done: list[Visit] = []
        visit = self._open.get(change.device)
        if visit is not None and visit.left is not None and change.at - visit.left > self.rules.gap_s:
            done.append(self._finish(change.device, self._open.pop(change.device)))
            visit = None
        if visit is None:
            if change.kind != "enter":
                return done  # a dwell or exit of a visit we never saw begin
            visit = self._open[change.device] = _Open(arrival=change.at)
        if change.rssi is not None and (visit.max_rssi is None or change.rssi > visit.max_rssi):
            visit.max_rssi = change.rssi
        if change.kind == "dwell":
            return done
        if visit.zone is not None:
            visit.stays.append(ZoneStay(visit.zone, visit.entered, change.at, change.at - visit.entered))
        visit.zone, visit.entered = change.zone, change.at
        visit.left = change.at if change.zone is None else None
        return done

    def flush(self, now: float) -> list[Visit]:
        """Visits whose device has been out of every zone for longer than `gap_s` at `now`."""
        over = [d for d, v in self._open.items() if v.left is not None and now - v.left > self.rules.gap_s]
        return [self._finish(d, self._open.pop(d)) for d in over]

    def close(self, at: float) -> list[Visit]:
        """End of input: every open visit ends, one still in a zone at `at`."""
        done = []
        for device, visit in self._open.items():
            if visit.zone is not None:
                visit.stays.append(ZoneStay(visit.zone, visit.entered, at, at - visit.entered))
                visit.left = at
            done.append(self._finish(device, visit))
        self._open.clear()
        return done

    def _finish(self, device: str, visit: _Open) -> Visit:
        departure = visit.left if visit.left is not None else visit.entered
        stays = tuple(visit.stays)
        return Visit(device, visit.arrival, departure, stays, is_walk_in(stays, visit.max_rssi, self.rules),
                     visit.max_rssi)


def is_walk_in(stays: tuple[ZoneStay, ...], max_rssi: float | None, rules: VisitRules) -> bool:
    if any(stay.zone not in rules.walk_by_zones for stay in stays):
        return True
    brief = sum(stay.dwell_s for stay in stays) < rules.walk_by_max_s
    weak = max_rssi is not None and max_rssi < rules.walk_by_rssi_dbm
    return not (brief or weak)


def resolving_app_ids(resolve_eid: Callable[[bytes, float], str | None]) -> Resolver:
    """A Resolver from an app-ID lookup (e.g. `InstallRegistry.resolve`): an app's rotating IDs become its
    install, so its visit is one visit; other devices, and IDs of installs not opted in, stay as they are."""

    def resolve(s: Sighting) -> str:
        if s.source != "app":
            return s.device
        try:
            return resolve_eid(bytes.fromhex(s.device), s.at) or s.device
        except ValueError:
            return s.device

    return resolve


def sightings_from_rows(rows: Iterable[Mapping[str, Any]], zone_of: Mapping[str, str | None] | None = None,
                        resolve: Resolver | None = None) -> list[Sighting]:
    """Stored `events` rows (any kind, payload as JSON text or dict) to presence sightings, in time order.

    `zone_of` (node -> zone from the gateway's config) overrides the zone a node reported, and drops
    the sightings of a node placed in no zone; `resolve` maps a device to a stable identity (an app's
    rotating IDs to its install), so one phone's visit is not cut where its ID changes.
    """
    out = []
    for row in rows:
        if row["kind"] != "presence":
            continue
        payload = row["payload"]
        p = json.loads(payload) if isinstance(payload, str) else payload
        zone = p["zone"]
        if zone_of is not None and row["node_id"] in zone_of:
            zone = zone_of[row["node_id"]]
            if zone is None:
                continue
        sighting = Sighting(p["device"], row["node_id"], zone, p["action"], float(row["ts"]),
                            float(p.get("dwell_s", 0.0)), p.get("rssi"), p.get("source", "ble"))
        if resolve is not None:
            sighting = replace(sighting, device=resolve(sighting))
        out.append(sighting)
    out.sort(key=lambda s: s.at)
    return out


def build_visits(sightings: Iterable[Sighting], fusion: FusionRules | None = None,
                 rules: VisitRules | None = None, tick_s: float = 10.0) -> list[Visit]:
    """Replay time-ordered sightings through fusion and the visit builder, as the live gateway would."""
    fuse, builder = Fusion(fusion), VisitBuilder(rules)
    visits: list[Visit] = []
    next_tick = None
    last = None
    for s in sightings:
        if next_tick is None:
            next_tick = s.at + tick_s
        while s.at >= next_tick:
            for change in fuse.tick(next_tick):
                visits.extend(builder.feed(change))
            visits.extend(builder.flush(next_tick))
            next_tick += tick_s
        for change in fuse.update(s):
            visits.extend(builder.feed(change))
        last = s.at
    for change in fuse.close():
        visits.extend(builder.feed(change))
    if last is not None:
        visits.extend(builder.close(last))
    visits.sort(key=lambda v: (v.arrival, v.device))
    return visits


def visits_from_rows(rows: Iterable[Mapping[str, Any]], since: float, until: float,
                     fusion: FusionRules | None = None, rules: VisitRules | None = None,
                     zone_of: Mapping[str, str | None] | None = None,
                     resolve: Resolver | None = None) -> list[Visit]:
    """The visits that arrived in [since, until), from stored events.

    Pass rows from before `since` and after `until` too (an hour or more either side), so a visit
    that began earlier is not mistaken for one arriving at `since`, and one still going at `until`
    gets its real departure.
    """
    visits = build_visits(sightings_from_rows(rows, zone_of, resolve), fusion, rules)
    return [v for v in visits if since <= v.arrival < until]
