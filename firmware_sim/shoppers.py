"""Shoppers as agents: arrivals, parties, paths through the store, and what really happened.

Arrivals are a non-homogeneous Poisson process whose rate is piecewise constant per local hour
(`hourly_visitors` x `weekday_factor`, raised by any active campaign for its segment), which is
sampled exactly hour by hour. Parties of one, two or three walk together; passers-by walk the
storefront without coming in. Every path is a list of timed waypoints, so positions at any moment
and the ground truth (line crossings, zone stays) come from the same data.
"""

from __future__ import annotations

import datetime as dt
from dataclasses import dataclass, field
from typing import Literal

import numpy as np

from firmware_sim import geometry
from firmware_sim.plan import StorePlan

HOUR = 3600.0
MIN_STAY_S = 15.0  # shorter passes through a zone are walking past it, not visiting it


@dataclass
class Track:
    """Timed waypoints; a person is at (x, y) linearly between them, and nowhere outside [t0, t1]."""

    t: np.ndarray
    x: np.ndarray
    y: np.ndarray

    @property
    def t0(self) -> float:
        return float(self.t[0])

    @property
    def t1(self) -> float:
        return float(self.t[-1])

    def at(self, when: float | np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        return np.interp(when, self.t, self.x), np.interp(when, self.t, self.y)


@dataclass
class ZoneStay:
    zone: str
    enter: float
    exit: float

    @property
    def dwell_s(self) -> float:
        return self.exit - self.enter


@dataclass
class Visitor:
    visitor_id: int
    party_id: int
    party_size: int
    kind: Literal["walk_in", "walk_by"]
    segment: Literal["app", "other"]
    has_phone: bool
    has_app: bool
    track: Track
    entered: float | None = None
    exited: float | None = None
    stays: list[ZoneStay] = field(default_factory=list)


def hourly_rate(plan: StorePlan, hour_start: float, segment: Literal["app", "other"]) -> float:
    """Expected walk-in visitors of a segment in the local hour beginning at `hour_start` (UTC epoch s)."""
    local = dt.datetime.fromtimestamp(hour_start, dt.UTC) + dt.timedelta(hours=plan.timezone_offset_h)
    traffic = plan.traffic
    base = traffic.hourly_visitors[local.hour] * traffic.weekday_factor[local.weekday()]
    app = plan.phones.phone_share * plan.phones.app_share
    share = app if segment == "app" else 1.0 - app
    factor = 1.0
    for campaign in plan.campaigns:
        if campaign.active(local.date()) and campaign.segment in (segment, "all"):
            factor *= campaign.factor
    return base * share * factor


def _mean_party_size(plan: StorePlan) -> float:
    weights = plan.traffic.group_size_weights
    mean_group = sum(k * w for k, w in weights.items()) / sum(weights.values())
    return (1 - plan.traffic.group_share) + plan.traffic.group_share * mean_group


class ShopperModel:
    """Draws the shoppers and passers-by of a period, deterministically for a seed."""

    def __init__(self, plan: StorePlan, seed: int) -> None:
        self.plan = plan
        self.rng = np.random.default_rng(seed)
        (x1, y1), (x2, y2) = plan.entrance.line
        self._door = np.array([(x1 + x2) / 2, (y1 + y2) / 2])
        self._along = np.array([x2 - x1, y2 - y1]) / np.hypot(x2 - x1, y2 - y1)
        self._door_half = np.hypot(x2 - x1, y2 - y1) / 2
        self._inward = np.array(plan.inward_normal)
        (ax, ay), (bx, by) = plan.storefront.path
        self._front = np.array([[ax, ay], [bx, by]], dtype=float)
        self._zones = plan.zones
        attract = np.array([z.attractiveness for z in plan.zones])
        self._zone_p = attract / attract.sum()
        self._next_visitor = 0
        self._next_party = 0

    def simulate(self, start: float, end: float) -> list[Visitor]:
        """Everyone whose party arrives (crosses the door, or passes it) in [start, end)."""
        visitors: list[Visitor] = []
        mean_size = _mean_party_size(self.plan)
        walk_by_ratio = (1 - self.plan.traffic.capture_rate) / self.plan.traffic.capture_rate
        hour = np.floor(start / HOUR) * HOUR
        while hour < end:
            lo, hi = max(hour, start), min(hour + HOUR, end)
            frac = (hi - lo) / HOUR
            for segment in ("app", "other"):
                rate = hourly_rate(self.plan, hour, segment)  # type: ignore[arg-type]
                for kind, persons in (("walk_in", rate), ("walk_by", rate * walk_by_ratio)):
                    n = self.rng.poisson(persons / mean_size * frac)
                    for when in np.sort(self.rng.uniform(lo, hi, n)):
                        visitors.extend(self._party(float(when), kind, segment))  # type: ignore[arg-type]
            hour += HOUR
        visitors.sort(key=lambda v: v.track.t0)
        return visitors

    def _party_size(self) -> int:
        traffic = self.plan.traffic
        if self.rng.random() >= traffic.group_share:
            return 1
        sizes = sorted(traffic.group_size_weights)
        weights = np.array([traffic.group_size_weights[s] for s in sizes], dtype=float)
        return int(self.rng.choice(sizes, p=weights / weights.sum()))

    def _party(self, when: float, kind: Literal["walk_in", "walk_by"],
               segment: Literal["app", "other"]) -> list[Visitor]:
        rng = self.rng
        size = self._party_size()
        party_id = self._next_party
        self._next_party += 1
        speed = rng.uniform(*self.plan.traffic.walk_speed_mps)
        leftwards = rng.random() < 0.5
        start, finish = (self._front[1], self._front[0]) if leftwards else (self._front[0], self._front[1])
        if kind == "walk_by":
            normal = self._inward * rng.uniform(-0.7, 0.7)
            points, pause = [start + normal, finish + normal], [0.0, 0.0]
            t, base = _timed(points, pause, speed)
            # `when` is the moment the party passes the door.
            t = t - np.linalg.norm(self._door_projection() - points[0]) / speed + when
        else:
            points, pause = self._visit_points(start, finish)
            t, base = _timed(points, pause, speed)
            # `when` is the moment the party crosses the counting line (midway between waypoints 2 and 3).
            t = t - (t[2] + t[3]) / 2 + when
        members = []
        phones = self.plan.phones
        for member in range(size):
            offset = np.zeros(2) if member == 0 else (
                self._along * (0.45 * (1 if member == 1 else -1)) - self._inward * 0.3 * member)
            lag = 0.4 * member
            has_phone = bool(rng.random() < phones.phone_share)
            if member == 0:
                has_app = segment == "app"
                has_phone = has_phone or has_app
            else:
                has_app = has_phone and bool(rng.random() < phones.app_share)
            xy = base + offset
            track = Track(t + lag, xy[:, 0].copy(), xy[:, 1].copy())
            visitor = Visitor(self._next_visitor, party_id, size, kind, segment if member == 0 else
                              ("app" if has_app else "other"), has_phone, has_app, track)
            self._next_visitor += 1
            if kind == "walk_in":
                visitor.entered = float((track.t[2] + track.t[3]) / 2)
                visitor.exited = float((track.t[-4] + track.t[-3]) / 2)
                visitor.stays = zone_stays(self.plan, track)
            members.append(visitor)
        return members

    def _door_projection(self) -> np.ndarray:
        a, b = self._front
        ab = b - a
        s = np.clip(np.dot(self._door - a, ab) / np.dot(ab, ab), 0, 1)
        return a + s * ab

    def _visit_points(self, start: np.ndarray, finish: np.ndarray) -> tuple[list[np.ndarray], list[float]]:
        rng = self.rng
        jitter = self._along * rng.uniform(-0.6, 0.6) * self._door_half
        outside = self._door - self._inward * 1.2 + jitter
        inside = self._door + self._inward * 1.2 + jitter
        front = self._door_projection() + jitter
        points = [start, front, outside, inside]
        pause = [0.0, 0.0, 0.0, 0.0]
        n_zones = min(len(self._zones), 1 + rng.poisson(self.plan.traffic.zones_per_visit - 1))
        chosen = rng.choice(len(self._zones), size=n_zones, replace=False, p=self._zone_p)
        for index in chosen:
            zone = self._zones[int(index)]
            dwell = max(MIN_STAY_S * 2, rng.exponential(zone.dwell_s))
            spot = np.array(geometry.sample_in_polygon(zone.polygon, rng, margin=0.8))
            # Browse: stand at a few spots near each other, for the drawn dwell in total.
            stops = 1 + int(rng.integers(0, 3))
            for k in range(stops):
                shift = rng.normal(0, 0.5, 2) if k else np.zeros(2)
                here = spot + shift
                if not geometry.contains(zone.polygon, here[0], here[1]):
                    here = spot
                points.append(here)
                pause.append(dwell / stops)
        exit_jitter = self._along * rng.uniform(-0.6, 0.6) * self._door_half
        points += [self._door + self._inward * 1.2 + exit_jitter, self._door - self._inward * 1.2 + exit_jitter,
                   self._door_projection() + exit_jitter, finish if rng.random() < 0.5 else start]
        pause += [0.0, 0.0, 0.0, 0.0]
        return points, pause


def _timed(points: list[np.ndarray], pause: list[float], speed: float) -> tuple[np.ndarray, np.ndarray]:
    """Waypoint times from 0, walking at `speed`; a pause becomes a second waypoint at the same place."""
    times, where = [], []
    t = 0.0
    for i, point in enumerate(points):
        if i:
            t += float(np.linalg.norm(point - points[i - 1])) / speed
        times.append(t)
        where.append(point)
        if pause[i] > 0:
            t += pause[i]
            times.append(t)
            where.append(point)
    return np.array(times), np.array(where)


def zone_stays(plan: StorePlan, track: Track, step_s: float = 1.0) -> list[ZoneStay]:
    """When the track is inside each zone, from its geometry, ignoring passes under MIN_STAY_S."""
    ts = np.arange(track.t0, track.t1 + step_s, step_s)
    x, y = track.at(ts)
    stays = []
    for zone in plan.zones:
        inside = geometry.contains(zone.polygon, x, y)
        edges = np.flatnonzero(np.diff(np.concatenate([[0], inside.astype(np.int8), [0]])))
        for a, b in zip(edges[::2], edges[1::2], strict=True):
            stay = ZoneStay(zone.name, float(ts[a]), float(ts[min(b, len(ts) - 1)]))
            if stay.dwell_s >= MIN_STAY_S:
                stays.append(stay)
    stays.sort(key=lambda s: s.enter)
    return stays
