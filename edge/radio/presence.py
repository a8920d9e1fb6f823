"""From a device's RSSI readings to zone presence: smoothing, distance, and a hysteresis state machine.

Pure and clock-free: every call carries the time of the reading, so the same code runs on live
radios, on a pcap replayed at any speed and on the simulator. A device is in the node's zone when
its smoothed distance is within `enter_m` for `enter_after_s`; it leaves when the distance stays
beyond `exit_m` (a wider radius) for `exit_after_s` (longer than entering takes), or when it has
not been heard for `timeout_s`. The band between the radii and the two delays keep a phone
standing at the border from flapping, and the timeout guarantees exactly one exit for a phone that
walks away. Readings are smoothed by the median of the last `window_s` seconds, which one
reflected or body-blocked advert cannot move; the state is evaluated at most once per second per
device, so the cost per advert is a deque append.
"""

from __future__ import annotations

import math
from collections import deque
from collections.abc import Hashable
from dataclasses import dataclass, field
from typing import Literal

from pydantic import Field, model_validator

from edge.settings import ConfigModel

Action = Literal["enter", "dwell", "exit"]
EVAL_EVERY_S = 1.0


class PathLoss(ConfigModel):
    """Log-distance path loss: rssi = rssi_1m - 10 n log10(d). Calibrated per node (issue: provisioning)."""

    rssi_1m: float = Field(-59.0, ge=-100, le=20, description="Smoothed RSSI of a reference phone at 1 m, dBm.")
    exponent: float = Field(2.2, ge=1.5, le=5.0, description="Path-loss exponent n: 2 in free space, 2-3 indoors.")

    def distance(self, rssi: float) -> float:
        return 10.0 ** ((self.rssi_1m - rssi) / (10.0 * self.exponent))


class ZoneRules(ConfigModel):
    enter_m: float = Field(5.0, gt=0, description="Smoothed distance within which a device is in the zone.")
    exit_m: float = Field(8.0, gt=0, description="Distance beyond which it counts as outside; > enter_m.")
    enter_after_s: float = Field(10.0, ge=0, description="How long it must stay within enter_m to enter.")
    exit_after_s: float = Field(30.0, ge=0, description="How long beyond exit_m before it leaves; > enter_after_s.")
    timeout_s: float = Field(60.0, gt=0, description="Not heard for this long: it has left.")
    window_s: float = Field(15.0, gt=0, description="Median window over the device's readings.")
    dwell_every_s: float = Field(60.0, gt=0, description="At most one dwell update per device this often.")

    @model_validator(mode="after")
    def _hysteresis(self) -> ZoneRules:
        if self.exit_m <= self.enter_m:
            raise ValueError(f"exit_m ({self.exit_m}) must be larger than enter_m ({self.enter_m}): that band is the hysteresis")
        if self.exit_after_s < self.enter_after_s:
            raise ValueError(f"exit_after_s ({self.exit_after_s}) must not be shorter than enter_after_s ({self.enter_after_s})")
        return self


@dataclass(frozen=True, slots=True)
class Transition:
    key: Hashable = field(repr=False)  # a raw address among others: never in a log line
    action: Action = "enter"
    at: float = 0.0    # when it happened (for an exit: when the device was last seen near)
    dwell_s: float = 0.0
    rssi: float = 0.0


@dataclass(slots=True)
class _Device:
    readings: deque[tuple[float, float]] = field(default_factory=deque)
    inside: bool = False
    since: float | None = None      # when the pending condition (near while out, far while in) began
    entered: float = 0.0
    last_heard: float = 0.0
    last_eval: float = -math.inf
    last_dwell: float = 0.0
    smoothed: float = -127.0


class ZonePresence:
    """Presence of many devices in one node's zone."""

    def __init__(self, rules: ZoneRules, path_loss: PathLoss) -> None:
        self.rules = rules
        self.path_loss = path_loss
        self._near_rssi = self._rssi_at(rules.enter_m)
        self._far_rssi = self._rssi_at(rules.exit_m)
        self.devices: dict[Hashable, _Device] = {}

    def _rssi_at(self, metres: float) -> float:
        return self.path_loss.rssi_1m - 10.0 * self.path_loss.exponent * math.log10(metres)

    @property
    def inside(self) -> int:
        return sum(1 for d in self.devices.values() if d.inside)

    def observe(self, key: Hashable, t: float, rssi: float, out: list[Transition]) -> None:
        """Add one reading; transitions it causes are appended to `out`."""
        device = self.devices.get(key)
        if device is None:
            device = self.devices[key] = _Device()
        device.readings.append((t, rssi))
        device.last_heard = t
        if t - device.last_eval >= EVAL_EVERY_S:
            device.last_eval = t
            self._evaluate(key, device, t, out)

    def _evaluate(self, key: Hashable, d: _Device, t: float, out: list[Transition]) -> None:
        readings = d.readings
        horizon = t - self.rules.window_s
        while readings and readings[0][0] < horizon:
            readings.popleft()
        values = sorted(r for _, r in readings)
        n = len(values)
        d.smoothed = values[n // 2] if n % 2 else 0.5 * (values[n // 2 - 1] + values[n // 2])
        rules = self.rules
        if not d.inside:
            if d.smoothed >= self._near_rssi:
                if d.since is None:
                    d.since = t
                if t - d.since >= rules.enter_after_s:
                    d.inside, d.entered, d.last_dwell, d.since = True, d.since, t, None
                    out.append(Transition(key, "enter", d.entered, 0.0, d.smoothed))
            else:
                d.since = None
            return
        if d.smoothed > self._far_rssi:
            d.since = None
        elif d.since is None:
            d.since = t
        if d.since is not None and t - d.since >= rules.exit_after_s:
            self._leave(key, d, d.since, out)
        elif d.since is None and t - d.last_dwell >= rules.dwell_every_s:
            d.last_dwell = t
            out.append(Transition(key, "dwell", t, t - d.entered, d.smoothed))

    def _leave(self, key: Hashable, d: _Device, at: float, out: list[Transition]) -> None:
        d.inside, d.since = False, None
        out.append(Transition(key, "exit", at, max(0.0, at - d.entered), d.smoothed))

    def tick(self, now: float, out: list[Transition]) -> None:
        """Exit devices not heard for `timeout_s` and forget them; call about once a second."""
        timeout = self.rules.timeout_s
        gone = [k for k, d in self.devices.items() if now - d.last_heard >= timeout]
        for key in gone:
            d = self.devices.pop(key)
            if d.inside:
                self._leave(key, d, d.last_heard if d.since is None else min(d.since, d.last_heard), out)

    def forget(self, key: Hashable, out: list[Transition]) -> None:
        """Drop a device now (e.g. it turned out to be the store's own); an open stay is closed."""
        d = self.devices.pop(key, None)
        if d is not None and d.inside:
            self._leave(key, d, d.last_heard, out)

    def close(self, out: list[Transition]) -> None:
        """End of input: every device still inside leaves at its last reading."""
        for key in list(self.devices):
            self.forget(key, out)
