"""One simulated store over a period: shoppers, their phones, the radio channel and the cameras.

The world is advanced in time windows, in order. For each window it says what each node's sensors
received: BLE adverts (with RSSI), raw probe-request frames, and where people stand for the
cameras. Sources in `firmware_sim.sources` hand these to the edge code through the same
interfaces real hardware uses.
"""

from __future__ import annotations

import hashlib
from collections.abc import Collection
from dataclasses import dataclass, field

import numpy as np

from firmware_sim import dot11
from firmware_sim.camera import Figure, FrameRenderer
from firmware_sim.phones import (
    Advert,
    Phone,
    advert,
    build_phones,
    mac_text,
    probe_burst,
    probe_ssid,
)
from firmware_sim.plan import StorePlan
from firmware_sim.rf import RadioChannel
from firmware_sim.shoppers import ShopperModel, Visitor


@dataclass(frozen=True)
class BleReception:
    when: float
    node: int
    rssi: int
    advert: Advert
    phone: int


@dataclass(frozen=True)
class WifiReception:
    when: float
    node: int
    frame: bytes          # radiotap + 802.11 probe request, as a monitor-mode socket returns it
    phone: int


@dataclass
class RadioWindow:
    ble: list[BleReception] = field(default_factory=list)
    wifi: list[WifiReception] = field(default_factory=list)


class World:
    def __init__(self, plan: StorePlan, seed: int, start: float, end: float, warmup_s: float = 0.0) -> None:
        """Sensors report from `start`; shoppers arrive from `warmup_s` earlier, so the store can be busy at once."""
        self.plan, self.seed, self.start, self.end = plan, seed, start, end
        self.visitors: list[Visitor] = ShopperModel(plan, seed).simulate(start - warmup_s, end)
        self.phones: list[Phone] = build_phones(plan, self.visitors, seed, start - warmup_s, end)
        self.channel = RadioChannel(plan, len(self.phones), seed)
        self.node_index = {n.node_id: i for i, n in enumerate(plan.nodes)}
        self._rng = np.random.default_rng(seed + 13)
        self._phone_t0 = np.array([p.track.t0 for p in self.phones])
        self._phone_t1 = np.array([p.track.t1 for p in self.phones])
        self._vis_t0 = np.array([v.track.t0 for v in self.visitors])
        self._vis_t1 = np.array([v.track.t1 for v in self.visitors])
        self._heights = np.array([1.55 + (int(hashlib.blake2b(f"{seed}:{v.visitor_id}".encode(), digest_size=1)
                                                  .digest()[0]) / 255) * 0.35 for v in self.visitors])
        self._adverts_sent = np.zeros(len(self.phones), dtype=np.int64)
        self._ble_nodes = np.array([n.ble is not None for n in plan.nodes])
        self._wifi_channel = np.array([n.wifi.wifi_channel if n.wifi else -1 for n in plan.nodes])
        self._renderers: dict[str, FrameRenderer] = {}
        self.addresses_used: set[str] = set()

    def addresses_possible(self) -> set[bytes]:
        """Every address any phone can have put on air this day: a superset of `addresses_used` that
        needs no radio simulation, so a privacy check can search for all of them in seconds."""
        rotation_s = self.plan.phones.ble_address_rotation_s
        found: set[bytes] = set()
        for phone in self.phones:
            found |= phone.addresses(phone.track.t0, phone.track.t1, self.seed, rotation_s)
        return found

    def figures(self, t: float) -> list[Figure]:
        active = np.flatnonzero((self._vis_t0 <= t) & (self._vis_t1 > t))
        out = []
        for i in active:
            x, y = self.visitors[i].track.at(t)
            out.append(Figure(self.visitors[i].visitor_id, float(x), float(y), float(self._heights[i])))
        return out

    def renderer(self, node_id: str) -> FrameRenderer:
        if node_id not in self._renderers:
            node = self.plan.nodes[self.node_index[node_id]]
            if node.camera is None:
                raise ValueError(f"node {node_id!r} has no camera in the store plan")
            self._renderers[node_id] = FrameRenderer(self.plan, node, self.seed + self.node_index[node_id])
        return self._renderers[node_id]

    def radio(self, a: float, b: float, ble_nodes: Collection[int] | None = None,
              wifi_nodes: Collection[int] | None = None) -> RadioWindow:
        """Everything the nodes' radios received in [a, b). Call with consecutive windows.

        `ble_nodes`, `wifi_nodes`: only these nodes' receptions are made (default: every node's). The
        others are simulated all the same, so what a node hears does not depend on who else listens.
        """
        window = RadioWindow()
        present = np.flatnonzero((self._phone_t0 < b) & (self._phone_t1 > a))
        if not len(present):
            return window
        rng = self._rng
        mix = self.plan.phones
        lo = np.maximum(self._phone_t0[present], a)
        hi = np.minimum(self._phone_t1[present], b)
        self._ble(window, present, lo, hi, rng, mix.ble_advert_every_s, self._wanted(ble_nodes))
        self._wifi(window, present, lo, hi, rng, mix.probe_burst_every_s, self._wanted(wifi_nodes))
        window.ble.sort(key=lambda r: r.when)
        window.wifi.sort(key=lambda r: r.when)
        return window

    def _wanted(self, nodes: Collection[int] | None) -> np.ndarray:
        wanted = np.full(len(self.plan.nodes), nodes is None)
        if nodes is not None:
            wanted[list(nodes)] = True
        return wanted

    def _ble(self, window: RadioWindow, present: np.ndarray, lo: np.ndarray, hi: np.ndarray,
             rng: np.random.Generator, every_s: float, wanted: np.ndarray) -> None:
        counts = rng.poisson((hi - lo) / every_s)
        tx, when = _event_times(present, lo, hi, counts, rng)
        keep = np.array([self.phones[i].ble for i in tx], dtype=bool)
        tx, when = tx[keep], when[keep]
        if not len(tx):
            return
        x, y = self._positions(tx, when)
        rssi = self.channel.rssi(tx, when, x, y, self.plan.radio.ble_rssi_1m_dbm)
        rssi[:, ~self._ble_nodes] = np.nan
        heard = ~np.isnan(rssi)
        adverts: dict[int, Advert] = {}
        for e in np.flatnonzero(heard.any(axis=1)).tolist():  # heard by any node, wanted or not
            phone_index = int(tx[e])
            self._adverts_sent[phone_index] += 1
            adv = advert(self.phones[phone_index], float(when[e]), self.seed, self.plan,
                         int(self._adverts_sent[phone_index]))
            self.addresses_used.add(adv.address)
            adverts[e] = adv
        for e, node in zip(*(i.tolist() for i in np.nonzero(heard & wanted)), strict=True):
            window.ble.append(BleReception(float(when[e]), node, int(rssi[e, node]), adverts[e], int(tx[e])))

    def _wifi(self, window: RadioWindow, present: np.ndarray, lo: np.ndarray, hi: np.ndarray,
              rng: np.random.Generator, every_s: float, wanted: np.ndarray) -> None:
        counts = rng.poisson((hi - lo) / every_s)
        tx, when = _event_times(present, lo, hi, counts, rng)
        order = np.argsort(when, kind="stable")  # in time order, so each phone's sequence counter only runs forward
        frames: list[tuple[int, float, int, bytes, int]] = []
        for phone_index, t in zip(tx[order], when[order], strict=True):
            phone = self.phones[phone_index]
            if not phone.wifi:
                continue
            for ft, channel, source, seq in probe_burst(phone, float(t), self.seed, rng):
                frames.append((int(phone_index), ft, channel, source, seq))
        if not frames:
            return
        ftx = np.array([f[0] for f in frames])
        fwhen = np.array([f[1] for f in frames])
        x, y = self._positions(ftx, fwhen)
        rssi = self.channel.rssi(ftx, fwhen, x, y, self.plan.radio.wifi_rssi_1m_dbm)
        heard = (self._wifi_channel[None, :] == np.array([f[2] for f in frames])[:, None]) & ~np.isnan(rssi)
        for e in np.flatnonzero(heard.any(axis=1)).tolist():
            self.addresses_used.add(mac_text(frames[e][3]))
        for e, node in zip(*(i.tolist() for i in np.nonzero(heard & wanted)), strict=True):
            phone_index, ft, channel, source, seq = frames[e]
            phone = self.phones[phone_index]
            frame = dot11.probe_request(source, seq, channel, int(rssi[e, node]), phone.fingerprint, probe_ssid(phone))
            window.wifi.append(WifiReception(ft, node, frame, phone_index))

    def _positions(self, tx: np.ndarray, when: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        x = np.empty(len(tx))
        y = np.empty(len(tx))
        for e, (i, t) in enumerate(zip(tx, when, strict=True)):
            x[e], y[e] = self.phones[i].track.at(t)
        return x, y


def _event_times(items: np.ndarray, lo: np.ndarray, hi: np.ndarray, counts: np.ndarray,
                 rng: np.random.Generator) -> tuple[np.ndarray, np.ndarray]:
    tx = np.repeat(items, counts)
    when = np.repeat(lo, counts) + rng.random(int(counts.sum())) * np.repeat(hi - lo, counts)
    return tx, when
