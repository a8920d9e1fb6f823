"""Event-level simulation: many nodes emitting what the edge processing would have produced.

No frames or radio are simulated: from the shoppers' ground truth each camera node reports line
crossings, occupancy and people per zone every `counts_interval_s`, and each radio node reports a
zone enter, dwell updates and an exit for every phone that stays in its zone (app phones by their
rotating ID, others by a keyed pseudonym), on the same contract and at the rates the real edge
uses. Stores are replicas of one plan with their own shoppers, so `--nodes 1000` is a hundred
ten-node stores. Events are produced lazily in time order, one window at a time.
"""

from __future__ import annotations

import datetime as dt
import hashlib
import hmac
import json
import secrets
from collections.abc import Iterator
from dataclasses import dataclass

import numpy as np

from edge.protocol import Channel, topic
from firmware_sim.phones import Phone, build_phones
from firmware_sim.plan import StorePlan
from firmware_sim.rf import RadioChannel
from firmware_sim.shoppers import ShopperModel, Visitor

COUNTS, ENTER, DWELL, EXIT = 0, 1, 2, 3
ACTIONS = {ENTER: "enter", DWELL: "dwell", EXIT: "exit"}
WINDOW_S = 60.0


@dataclass(frozen=True)
class EventSimSettings:
    counts_interval_s: float = 10.0
    dwell_every_s: float = 5.0


def replica_store_id(plan: StorePlan, k: int) -> str:
    return plan.store_id if k == 0 else f"{plan.store_id}-{k:04d}"


class StoreReplica:
    """One store's nodes and shoppers; yields (time, topic, payload) for a window, in time order."""

    def __init__(self, plan: StorePlan, k: int, seed: int, start: float, end: float,
                 settings: EventSimSettings, node_limit: int | None = None, warmup_s: float = 0.0) -> None:
        self.plan, self.settings = plan, settings
        self.store_id = replica_store_id(plan, k)
        self.seed = seed
        self.nodes = plan.nodes[:node_limit] if node_limit else plan.nodes
        # Shoppers from `warmup_s` before the start, so a run can begin in a busy store; events from the start.
        self.visitors: list[Visitor] = ShopperModel(plan, seed).simulate(start - warmup_s, end)
        self.phones: list[Phone] = build_phones(plan, self.visitors, seed, start, end)
        self.counting_node = plan.counting_node().node_id
        self.boot_id = secrets.token_hex(6)
        self.seq = [0] * len(self.nodes)
        self._salt = secrets.token_bytes(32)  # today's salt: memory only
        self._topics = [(topic(self.store_id, n.node_id, Channel.COUNTS), topic(self.store_id, n.node_id, Channel.PRESENCE))
                        for n in self.nodes]
        walk_ins = [v for v in self.visitors if v.kind == "walk_in"]
        self._ins = np.sort([v.entered for v in walk_ins])
        self._outs = np.sort([v.exited for v in walk_ins])
        self._zone_enter: dict[str, np.ndarray] = {}
        self._zone_exit: dict[str, np.ndarray] = {}
        for zone in plan.zones:
            stays = [s for v in walk_ins for s in v.stays if s.zone == zone.name]
            self._zone_enter[zone.name] = np.sort([s.enter for s in stays])
            self._zone_exit[zone.name] = np.sort([s.exit for s in stays])
        self._build(start, end)

    def _build(self, start: float, end: float) -> None:
        """The schedule: one row per event (time, node, kind, stay), sorted by time."""
        times, nodes, kinds, refs = [], [], [], []
        interval = self.settings.counts_interval_s
        ticks = np.arange(start + interval, end + 1e-9, interval)
        for i, node in enumerate(self.nodes):
            if node.camera is not None:
                times.append(ticks)
                nodes.append(np.full(len(ticks), i))
                kinds.append(np.full(len(ticks), COUNTS))
                refs.append(np.full(len(ticks), -1))
        radio_nodes = [i for i, n in enumerate(self.nodes) if n.zone and (n.ble or n.wifi)]
        channel = RadioChannel(self.plan, 1, self.seed)
        phone_of = {p.visitor_id: p for p in self.phones if p.visitor_id is not None}
        self.stays: list[tuple[Phone, str, float, float, float]] = []   # phone, zone, enter, exit, rssi
        for visitor in self.visitors:
            phone = phone_of.get(visitor.visitor_id)
            if phone is None:
                continue
            for stay in visitor.stays:
                if stay.enter >= end or stay.exit < start:
                    continue
                here = [i for i in radio_nodes if self.nodes[i].zone == stay.zone]
                if not here:
                    continue
                x, y = visitor.track.at((stay.enter + stay.exit) / 2)
                rssi = channel.mean_rssi(np.array([float(x)]), np.array([float(y)]), self.plan.radio.ble_rssi_1m_dbm)[0]
                best = max(here, key=lambda i: rssi[i])  # self.nodes is a prefix of plan.nodes
                ref = len(self.stays)
                self.stays.append((phone, stay.zone, stay.enter, stay.exit, float(rssi[best])))
                updates = np.arange(stay.enter + self.settings.dwell_every_s, stay.exit, self.settings.dwell_every_s)
                t = np.concatenate([[stay.enter], updates, [stay.exit]])
                k = np.concatenate([[ENTER], np.full(len(updates), DWELL), [EXIT]])
                keep = (t >= start) & (t < end)
                times.append(t[keep])
                kinds.append(k[keep])
                nodes.append(np.full(int(keep.sum()), best))
                refs.append(np.full(int(keep.sum()), ref))
        if times:
            t_all = np.concatenate(times)
            order = np.argsort(t_all, kind="stable")
            self.t = t_all[order]
            self.node = np.concatenate(nodes)[order].astype(np.int32)
            self.kind = np.concatenate(kinds)[order].astype(np.int8)
            self.ref = np.concatenate(refs)[order].astype(np.int32)
        else:
            self.t = np.empty(0)
            self.node = self.ref = np.empty(0, dtype=np.int32)
            self.kind = np.empty(0, dtype=np.int8)

    def window(self, a: float, b: float) -> tuple[np.ndarray, np.ndarray]:
        """Row indices of events in [a, b), and their times."""
        lo, hi = np.searchsorted(self.t, [a, b], side="left")
        return np.arange(lo, hi), self.t[lo:hi]

    def render(self, row: int) -> tuple[str, bytes]:
        """Topic and payload of one scheduled event; numbers it with the node's next seq."""
        node = int(self.node[row])
        when = float(self.t[row])
        self.seq[node] += 1
        envelope = {"v": 1, "node_id": self.nodes[node].node_id, "boot_id": self.boot_id, "seq": self.seq[node],
                    "ts": dt.datetime.fromtimestamp(when, dt.UTC).isoformat()}
        kind = int(self.kind[row])
        if kind == COUNTS:
            return self._topics[node][0], json.dumps({"schema": "omnisense.counts", **envelope,
                                                      **self._counts(node, when)}).encode()
        phone, zone, enter, _exit, rssi = self.stays[int(self.ref[row])]
        if phone.has_app:
            device, source = phone.eid(when, self.plan.phones.eid_rotation_exponent).hex(), "app"
        else:
            address = phone.ble_address(enter, self.seed, self.plan.phones.ble_address_rotation_s)
            device = hmac.new(self._salt, address.encode(), hashlib.sha256).hexdigest()[:16]
            source = "ble"
        return self._topics[node][1], json.dumps({
            "schema": "omnisense.presence", **envelope, "device": device, "zone": zone, "action": ACTIONS[kind],
            "dwell_s": round(when - enter, 1), "rssi": round(rssi, 1), "source": source}).encode()

    def _counts(self, node: int, when: float) -> dict[str, object]:
        interval = self.settings.counts_interval_s
        camera = self.nodes[node].camera
        assert camera is not None
        zones = {z: int(np.searchsorted(self._zone_enter[z], when, side="right")
                        - np.searchsorted(self._zone_exit[z], when, side="right")) for z in camera.zones}
        if self.nodes[node].node_id != self.counting_node:
            return {"interval_s": interval, "line_in": 0, "line_out": 0, "occupancy": sum(zones.values()),
                    "zones": zones}

        def between(times: np.ndarray) -> int:
            return int(np.searchsorted(times, when, side="right") - np.searchsorted(times, when - interval, side="right"))

        inside = int(np.searchsorted(self._ins, when, side="right") - np.searchsorted(self._outs, when, side="right"))
        return {"interval_s": interval, "line_in": between(self._ins), "line_out": between(self._outs),
                "occupancy": inside, "zones": zones}


def merged(replicas: list[StoreReplica], start: float, end: float) -> Iterator[tuple[float, StoreReplica, int]]:
    """All replicas' events in global time order, built one window at a time."""
    a = start
    while a < end:
        b = min(a + WINDOW_S, end)
        parts = [(r, *r.window(a, b)) for r in replicas]
        if any(len(rows) for _, rows, _ in parts):
            owners = np.concatenate([np.full(len(rows), i) for i, (_, rows, _) in enumerate(parts)])
            rows = np.concatenate([rows for _, rows, _ in parts])
            times = np.concatenate([t for _, _, t in parts])
            for j in np.argsort(times, kind="stable"):
                yield float(times[j]), replicas[int(owners[j])], int(rows[j])
        a = b


def build_replicas(plan: StorePlan, nodes: int, seed: int, start: float, end: float,
                   settings: EventSimSettings = EventSimSettings(), warmup_s: float = 0.0) -> list[StoreReplica]:
    per_store = len(plan.nodes)
    count = max(1, -(-nodes // per_store))
    replicas = []
    for k in range(count):
        limit = min(per_store, nodes - k * per_store)
        replicas.append(StoreReplica(plan, k, seed + 1000 * k, start, end, settings,
                                     node_limit=limit if limit < per_store else None, warmup_s=warmup_s))
    return replicas
