"""Fusion: the sightings of one device from several nodes become one location at a time.

Every node decides on its own whether a device is in its zone (edge/radio/presence.py), and nodes
overlap: a phone between apparel and tills can be "in" both. Per device the gateway keeps the
signal of each node that has it entered, smoothed over time, and places the device in the zone
with the strongest signal. It moves only when another zone is stronger by `margin_db`, so noise at
a border does not make it flap; it leaves the store when no node has it any more (the node sent an
exit, or has not mentioned it for `stale_s`, e.g. because an exit was lost or an app ID rotated).

Pure and clock-free: every sighting carries its time, so live ingest, a replay of stored events
and the tests run the same code. Per device, changes come out in time order.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from typing import Literal

from pydantic import Field

from edge.settings import ConfigModel

Action = Literal["enter", "dwell", "exit"]
ChangeKind = Literal["enter", "dwell", "exit"]


class FusionRules(ConfigModel):
    """How sightings from several nodes become one zone per device."""

    margin_db: float = Field(6.0, ge=0, description="Another zone must be this much stronger (dB) to take the "
                             "device over: the hysteresis against flapping between neighbouring zones.")
    smoothing_s: float = Field(20.0, ge=0, description="Time constant (s) of the exponential average over one node's "
                               "reports of a device; 0 takes each report as it is.")
    stale_s: float = Field(150.0, gt=0, description="A node that has not reported a device for this long (s) no "
                           "longer has it. Longer than the nodes' dwell interval (60 s by default).")
    dwell_every_s: float = Field(60.0, gt=0, description="At most one dwell change per device this often (s).")
    unknown_rssi_dbm: float = Field(-100.0, description="Signal (dBm) assumed for a sighting without RSSI: any "
                                    "measured signal beats it.")


@dataclass(frozen=True, slots=True)
class Sighting:
    """One presence event of a node, as the fusion needs it."""

    device: str
    node_id: str
    zone: str
    action: Action
    at: float              # epoch seconds
    dwell_s: float         # the node's own dwell of the device in its zone
    rssi: float | None     # the node's smoothed RSSI, dBm
    source: str            # ble, wifi or app


@dataclass(frozen=True, slots=True)
class LocationChange:
    """A device's location changed (enter, exit) or was confirmed (dwell).

    `enter`: into `zone` from `previous` (None: arriving in the store); `exit`: out of the store
    (`zone` is None) from `previous`. For both, `dwell_s` is the time spent in `previous` (0 when
    arriving). `dwell`: still in `zone` (== `previous`), `dwell_s` so far. `rssi` is the smoothed
    signal of the device's zone at that moment, dBm.
    """

    device: str
    zone: str | None
    previous: str | None
    at: float
    kind: ChangeKind
    dwell_s: float
    rssi: float | None = None


@dataclass(slots=True)
class _Link:
    """One node's view of a device."""

    zone: str
    rssi: float
    heard: float


@dataclass(slots=True)
class _Track:
    links: dict[str, _Link] = field(default_factory=dict)
    zone: str | None = None
    since: float = 0.0        # when the device entered `zone`
    last_dwell: float = 0.0
    last_at: float = -math.inf


class Fusion:
    """Streaming fusion of the store's presence sightings; one instance per store."""

    def __init__(self, rules: FusionRules | None = None, **overrides: float) -> None:
        """`Fusion(FusionRules(...))`, or single rules by name: `Fusion(margin_db=8)`; validated either way."""
        base = rules or FusionRules()
        self.rules = FusionRules.model_validate({**base.model_dump(), **overrides}) if overrides else base
        self._tracks: dict[str, _Track] = {}

    def where(self, device: str) -> str | None:
        track = self._tracks.get(device)
        return track.zone if track else None

    @property
    def devices(self) -> int:
        """Devices in the store now."""
        return len(self._tracks)

    def update(self, s: Sighting) -> list[LocationChange]:
        track = self._tracks.get(s.device)
        out = self._expire(s.device, track, s.at) if track is not None else []
        track = self._tracks.get(s.device)
        if s.action == "exit":
            if track is None or s.node_id not in track.links:
                return out  # an exit for what this node never entered (or what went stale already)
            del track.links[s.node_id]
            return out + self._decide(s.device, track, s.at, dwell_due=False)
        if track is None:
            track = self._tracks[s.device] = _Track()
        rssi = self.rules.unknown_rssi_dbm if s.rssi is None else s.rssi
        link = track.links.get(s.node_id)
        if link is None or s.action == "enter" or link.zone != s.zone:
            track.links[s.node_id] = _Link(s.zone, rssi, s.at)
        else:
            # A dwell from a node that has the device: exponential average over time, not over reports.
            gap = max(0.0, s.at - link.heard)
            alpha = 1.0 if self.rules.smoothing_s == 0 else 1.0 - math.exp(-gap / self.rules.smoothing_s)
            link.rssi += alpha * (rssi - link.rssi)
            link.heard = max(link.heard, s.at)
        return out + self._decide(s.device, track, s.at, dwell_due=True)

    def tick(self, now: float) -> list[LocationChange]:
        """Drop links no node has refreshed for `stale_s`, moving or releasing their devices; call every few seconds."""
        out: list[LocationChange] = []
        for device, track in list(self._tracks.items()):
            out.extend(self._expire(device, track, now))
        return out

    def close(self) -> list[LocationChange]:
        """End of input: every device leaves the store when a node last heard it."""
        out: list[LocationChange] = []
        for device, track in list(self._tracks.items()):
            last = max((link.heard for link in track.links.values()), default=track.last_at)
            track.links.clear()
            out.extend(self._decide(device, track, last, dwell_due=False))
        return out

    def _expire(self, device: str, track: _Track, now: float) -> list[LocationChange]:
        """Changes at the time the stale links were last heard, the best guess of when the device moved."""
        stale = [node for node, link in track.links.items() if now - link.heard >= self.rules.stale_s]
        if not stale:
            return []
        last_heard = max(track.links[node].heard for node in stale)
        for node in stale:
            del track.links[node]
        return self._decide(device, track, last_heard, dwell_due=False)

    def _decide(self, device: str, track: _Track, at: float, dwell_due: bool) -> list[LocationChange]:
        """Place the device after its links changed at `at`: the strongest zone, unless the current one is close."""
        at = max(at, track.last_at)  # per device, never back in time (nodes backdate their enters and exits)
        current = track.zone
        if not track.links:
            del self._tracks[device]
            if current is None:
                return []
            return [LocationChange(device, None, current, at, "exit", at - track.since)]
        strength: dict[str, float] = {}
        for link in track.links.values():
            strength[link.zone] = max(strength.get(link.zone, -math.inf), link.rssi)
        best = max(strength, key=lambda zone: (strength[zone], zone))
        if current is None or current not in strength or (
                best != current and strength[best] >= strength[current] + self.rules.margin_db):
            dwell = 0.0 if current is None else at - track.since
            track.zone, track.since, track.last_dwell, track.last_at = best, at, at, at
            return [LocationChange(device, best, current, at, "enter", dwell, strength[best])]
        if dwell_due and at - track.last_dwell >= self.rules.dwell_every_s:
            track.last_dwell = track.last_at = at
            return [LocationChange(device, current, current, at, "dwell", at - track.since, strength[current])]
        return []
