"""A simple synthetic source: pseudonymous devices wandering between zones, plus periodic counts.

It stands in for the radio and camera adapters until the full store simulator drives them; it
emits readings that follow the contract, at a set rate or as fast as the node takes them.
"""

from __future__ import annotations

import asyncio
import hashlib
import random

from pydantic import Field

from edge.protocol import Channel
from edge.settings import ConfigModel
from edge.sources import Emit


class SyntheticOptions(ConfigModel):
    rate_hz: float = Field(2.0, ge=0, description="Readings per second; 0 means as fast as possible.")
    count: int | None = Field(None, ge=0, description="Readings to emit in this run; none means forever.")
    zones: list[str] = Field(default_factory=lambda: ["entrance", "shoes", "tills"], min_length=1)
    devices: int = Field(20, ge=1, description="Distinct pseudonymous devices.")
    counts_every: int = Field(10, ge=1, description="Every Nth reading is a camera counts reading.")
    seed: int | None = None


class SyntheticSource:
    Options = SyntheticOptions

    def __init__(self, name: str, options: SyntheticOptions) -> None:
        self.name = name
        self.options = options
        self.emitted = 0
        self._rng = random.Random(options.seed)
        self._where: dict[int, str] = {}
        self._dwell: dict[int, float] = {}
        self._occupancy = 0

    def _device_id(self, index: int) -> str:
        return hashlib.sha256(f"{self.options.seed}:{index}".encode()).hexdigest()[:16]

    def next_reading(self) -> tuple[Channel, dict[str, object]]:
        rng = self._rng
        n = self.emitted
        self.emitted += 1
        if n % self.options.counts_every == self.options.counts_every - 1:
            came, left = rng.randint(0, 3), rng.randint(0, 3)
            left = min(left, self._occupancy + came)
            self._occupancy += came - left
            zones = {z: rng.randint(0, self._occupancy) for z in self.options.zones}
            return Channel.COUNTS, {"interval_s": 10.0, "line_in": came, "line_out": left,
                                    "occupancy": self._occupancy, "zones": zones}
        device = rng.randrange(self.options.devices)
        zone = self._where.get(device)
        dwell = self._dwell.get(device, 0.0)
        if zone is None:
            zone, action, dwell = rng.choice(self.options.zones), "enter", 0.0
            self._where[device] = zone
        elif rng.random() < 0.3:
            action = "exit"
            del self._where[device]
        else:
            action, dwell = "dwell", dwell + rng.uniform(1, 10)
        self._dwell[device] = dwell
        return Channel.PRESENCE, {"device": self._device_id(device), "zone": zone, "action": action,
                                  "dwell_s": round(dwell, 2), "rssi": round(rng.uniform(-90, -40), 1),
                                  "source": "ble"}

    async def run(self, emit: Emit) -> None:
        interval = 1.0 / self.options.rate_hz if self.options.rate_hz > 0 else 0.0
        loop = asyncio.get_running_loop()
        next_at = loop.time()
        while self.options.count is None or self.emitted < self.options.count:
            emit(*self.next_reading())
            if interval:
                next_at += interval
                delay = next_at - loop.time()
                if delay > 0:
                    await asyncio.sleep(delay)
            elif self.emitted % 500 == 0:
                await asyncio.sleep(0)
