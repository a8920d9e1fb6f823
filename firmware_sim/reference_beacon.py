"""A calibration reference in the simulator: a beacon held still at a known distance from one node.

It advertises every `every_s` and is received with the simulator's own propagation model
(`RadioChannel`: the plan's 1 m RSSI, the node's antenna gain, log-distance path loss, walls and
Rician fast fading, rounded to whole dBm and lost below the sensitivity). Shadowing is left out:
the installer holds the reference in line of sight, so what moves the readings is multipath, not
bodies drifting through the path. `true_rssi_1m` is what a perfect calibration would find.

`ReferenceScanner` is the `sim_ble` scanner with the reference's adverts merged, in time order,
into what the node hears of the simulated store.
"""

from __future__ import annotations

import asyncio
import hashlib
import math
from collections.abc import Iterator
from uuid import UUID

import numpy as np
from pydantic import Field, model_validator

from edge.settings import ConfigModel
from firmware_sim import geometry
from firmware_sim.phones import Advert, mac_text
from firmware_sim.rf import RadioChannel
from firmware_sim.sources import SimBleakScanner, to_bleak
from firmware_sim.world import BleReception, World

TEST_COMPANY_ID = 0xFFFF  # Bluetooth SIG's company id for tests: an address-only reference's payload
APPLE = 0x004C


class ReferenceOptions(ConfigModel):
    """The reference the installer would hold; give its address, its iBeacon identity, or both."""

    address: str | None = Field(None, pattern=r"^[0-9A-Fa-f]{2}(?::[0-9A-Fa-f]{2}){5}$",
                                description="Its BLE address; default: a fixed one derived from the seed.")
    ibeacon: str | None = Field(None, description="UUID[:MAJOR:MINOR]: advertise as this iBeacon.")
    distance_m: float = Field(1.0, gt=0.05, le=30, description="How far from the node it is held.")
    every_s: float = Field(0.2, gt=0.01, le=10, description="Advertising interval.")
    tx_power: int = Field(-59, ge=-100, le=20, description="Measured power the iBeacon frame states (unused by nodes).")

    @model_validator(mode="after")
    def _identity(self) -> ReferenceOptions:
        if self.address is None and self.ibeacon is None:
            raise ValueError("give the reference an address or an ibeacon UUID")
        if self.ibeacon is not None:
            _ibeacon_fields(self.ibeacon)
        return self


def _ibeacon_fields(text: str) -> tuple[UUID, int, int]:
    parts = text.split(":")
    try:
        uuid = UUID(parts[0])
        major, minor = (int(parts[1]), int(parts[2])) if len(parts) == 3 else (0, 0) if len(parts) == 1 else (-1, -1)
    except ValueError:
        raise ValueError(f"ibeacon {text!r}: write UUID or UUID:MAJOR:MINOR") from None
    if not (0 <= major <= 0xFFFF and 0 <= minor <= 0xFFFF):
        raise ValueError(f"ibeacon {text!r}: write UUID or UUID:MAJOR:MINOR (major, minor 0-65535)")
    return uuid, major, minor


class ReferenceBeacon:
    """The reference's receptions at one node, with the simulator's channel model."""

    def __init__(self, world: World, node_id: str, options: ReferenceOptions) -> None:
        plan = world.plan
        self.node = world.node_index[node_id]
        node = plan.nodes[self.node]
        if node.ble is None:
            raise ValueError(f"reference: node {node_id!r} has no BLE radio in the plan")
        self.options = options
        self.plan_rssi_1m = plan.radio.ble_rssi_1m_dbm
        self.true_rssi_1m = plan.radio.ble_rssi_1m_dbm + node.ble.gain_db  # what the node hears at 1 m, on average
        self.sensitivity = plan.radio.sensitivity_dbm
        self.channel = RadioChannel(plan, 1, world.seed + 7919)  # its own fading draws: the world's stay as they are
        self.x, self.y = self._spot(world, node.position, options.distance_m)
        digest = hashlib.blake2b(f"{world.seed}:reference:{node_id}".encode(), digest_size=6).digest()
        self.address = (options.address or mac_text(bytes([digest[0] | 0xC0]) + digest[1:])).upper()
        self.manufacturer_data = self._payload(options)
        self.start, self.end = world.start, world.end

    def _spot(self, world: World, at: tuple[float, float], distance: float) -> tuple[float, float]:
        """Where the installer stands: `distance` from the node, on the floor, with no wall in between."""
        candidates = []
        for angle in np.radians(np.arange(0, 360, 15)):
            x, y = at[0] + distance * math.cos(angle), at[1] + distance * math.sin(angle)
            if geometry.contains(world.plan.floor, x, y):
                candidates.append((x, y))
        for x, y in candidates:
            if self.channel.wall_loss(np.array([x]), np.array([y]))[0, self.node] == 0:
                return x, y
        return candidates[0] if candidates else (at[0] + distance, at[1])

    @staticmethod
    def _payload(options: ReferenceOptions) -> dict[int, bytes]:
        if options.ibeacon is None:
            return {TEST_COMPANY_ID: b"omnisense-reference"}
        uuid, major, minor = _ibeacon_fields(options.ibeacon)
        return {APPLE: b"\x02\x15" + uuid.bytes + major.to_bytes(2, "big") + minor.to_bytes(2, "big")
                + options.tx_power.to_bytes(1, "big", signed=True)}

    def receptions(self) -> Iterator[BleReception]:
        """Every advert the node hears, in time order, over the world's period; computed in chunks."""
        step = self.options.every_s
        n = int((self.end - self.start) / step)
        for first in range(0, n, 256):
            when = self.start + step * np.arange(first, min(first + 256, n))
            x, y = np.full(len(when), self.x), np.full(len(when), self.y)
            mean = self.channel.mean_rssi(x, y, self.plan_rssi_1m)[:, self.node]  # adds the node's gain
            rssi = np.round(mean + self.channel.fading((len(when),)))
            for t, value in zip(when, rssi, strict=True):
                if value >= self.sensitivity:
                    yield BleReception(float(t), self.node, int(value), self._advert(float(t)), -1)

    def _advert(self, when: float) -> Advert:
        return Advert(when, self.address, None, dict(self.manufacturer_data), {}, [], None)


class ReferenceScanner(SimBleakScanner):
    """`SimBleakScanner` that also delivers the reference's adverts, merged by time with the store's."""

    def __init__(self, *args: object, reference: ReferenceBeacon, **kwargs: object) -> None:
        super().__init__(*args, **kwargs)  # type: ignore[arg-type]
        self.reference = reference

    async def _run(self) -> None:
        queue = self.feed.ble[self.node]
        ours = self.reference.receptions()
        pending = next(ours, None)
        exhausted = False
        delivered = 0
        try:
            while True:
                if not queue and not exhausted:
                    exhausted = not self.feed.advance()
                    await asyncio.sleep(0)
                    continue
                if pending is not None and (not queue or pending.when <= queue[0].when):
                    r, pending = pending, next(ours, None)
                elif queue:
                    r = queue.popleft()
                else:
                    return
                if self.clock is not None and (delay := self.clock.wall_delay(r.when)) > 0:
                    await asyncio.sleep(delay)
                self.last_time = r.when
                if self.callback is not None:
                    self.callback(*to_bleak(r))
                delivered += 1
                if delivered % 64 == 0:
                    await asyncio.sleep(0)  # unpaced, a beacon alone never yields: let the node's loop run
        finally:
            self.finished.set()
