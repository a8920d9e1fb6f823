"""One radio's sightings -> presence events and interval counts, anonymized on the way out.

Shared by the BLE and the Wi-Fi source. Devices are keyed in memory by `(kind, identifier)` —
a raw address, a beacon's id, or the anchor address of a Wi-Fi device whose random MACs were
linked — and the key becomes a pseudonym only when an event is emitted: the HMAC under the
store's daily salt for radios, or the app's ephemeral ID untouched (only the gateway resolves it).
Until the first salt arrives, transitions wait in memory (bounded, and counted when dropped), so
a node that boots before it reaches the gateway loses no presence. Sighting times are the
readings' own (live clock, pcap or simulator), so replays and simulations keep their timing.
"""

from __future__ import annotations

import datetime as dt
import logging
from collections import deque
from collections.abc import Hashable
from typing import Literal

from pydantic import Field

from edge.protocol import Channel, Identifier, RadioCalibration, RemoteConfig
from edge.radio.anonymize import Pseudonymizer
from edge.radio.presence import PathLoss, Transition, ZonePresence, ZoneRules
from edge.radio.store_devices import StoreDeviceRules, StoreDevices
from edge.settings import ConfigModel
from edge.sources import Emit

log = logging.getLogger(__name__)

DeviceKey = tuple[str, bytes]  # (kind, identifier); kind "app" is forwarded as is, the others are hashed
RadioKind = Literal["ble", "wifi"]


class RadioOptions(ConfigModel):
    zone: Identifier | None = Field(None, description="The node's zone until the gateway's config names one.")
    path_loss: PathLoss = PathLoss()
    zone_rules: ZoneRules = ZoneRules()
    store_devices: StoreDeviceRules = StoreDeviceRules()
    report_every_s: float = Field(60.0, gt=0, description="Interval of the events/radio counts.")
    max_waiting: int = Field(100_000, ge=0, description="Transitions held while no daily salt has arrived.")


class RadioPipeline:
    def __init__(self, kind: RadioKind, options: RadioOptions, emit: Emit) -> None:
        self.kind = kind
        self.options = options
        self.emit = emit
        self.zone = options.zone
        self.presence = ZonePresence(options.zone_rules, options.path_loss)
        self.calibration: RadioCalibration | None = None  # the gateway's, when it sent one
        self.store_devices = StoreDevices(options.store_devices)
        self.pseudonyms = Pseudonymizer()
        self.waiting: deque[Transition] = deque()
        self.dropped_waiting = 0
        self.emitted = 0
        self.rejected_total = 0
        self._out: list[Transition] = []
        self._visitors: set[Hashable] = set()
        self._addresses: set[bytes] = set()
        self._store: set[Hashable] = set()
        self._exposures: set[bytes] = set()
        self._rejected = 0
        self._interval_start: float | None = None
        self._last_tick = float("-inf")

    # --- configuration from the gateway -----------------------------------------------------------

    def apply_config(self, config: RemoteConfig) -> None:
        if config.zone is not None:
            self.zone = config.zone
        if self.kind == "ble" and config.radio != self.calibration:
            self._calibrate(config.radio)  # measured with a BLE reference: a Wi-Fi probe's power is another matter
        if config.salt is not None and config.salt_day is not None:
            self.pseudonyms.set_salt(config.salt_day, bytes.fromhex(config.salt))
            self._release_waiting()

    def _calibrate(self, calibration: RadioCalibration | None) -> None:
        """Use the installer's measured path loss (none: the node's own options) from now on.

        The zone state carries over: devices keep their readings and whether they are inside; only
        the distances those readings stand for change. The gateway validated the values against
        the contract, whose ranges are what a measurement can give, so they are taken as they are.
        """
        self.calibration = calibration
        if calibration is None:
            path_loss = self.options.path_loss
        else:
            path_loss = PathLoss.model_construct(rssi_1m=calibration.rssi_1m, exponent=calibration.exponent)
        presence = ZonePresence(self.options.zone_rules, path_loss)
        presence.devices = self.presence.devices
        self.presence = presence
        log.info("%s radio path loss: rssi_1m %.1f dBm, exponent %.2f (%s)", self.kind, path_loss.rssi_1m,
                 path_loss.exponent, "calibrated" if calibration else "node default")

    # --- sightings (hot path) ---------------------------------------------------------------------

    def sighting(self, t: float, key: DeviceKey, rssi: float, address: bytes) -> None:
        """One advert or probe of a device at time `t` (seconds since the epoch)."""
        if self._interval_start is None:
            self._interval_start = t
        self._addresses.add(address)
        listed = self.store_devices.listed(address)
        if listed is True or (listed is None and self.store_devices.observe(key, t)):
            if key not in self._store:
                self._store.add(key)
                if key in self.presence.devices:
                    self.presence.forget(key, self._out)
            return
        self._visitors.add(key)
        self.presence.observe(key, t, rssi, self._out)
        if t - self._last_tick >= 1.0:
            self.tick(t)
        elif self._out:
            self._publish()

    def counted_only(self, t: float, identifier: bytes) -> None:
        """An Exposure Notification identifier: counted in the interval, never tracked or published."""
        if self._interval_start is None:
            self._interval_start = t
        self._exposures.add(identifier)

    def rejected(self, count: int = 1) -> None:
        self._rejected += count
        self.rejected_total += count

    # --- time -------------------------------------------------------------------------------------

    def tick(self, now: float) -> None:
        """Timeouts and the periodic counts; sources call it about once a second even when it is quiet."""
        self._last_tick = now
        self.presence.tick(now, self._out)
        self.store_devices.expire(now, idle_s=3 * self.options.store_devices.bucket_s)
        if self._out:
            self._publish()
        if self._interval_start is not None and now - self._interval_start >= self.options.report_every_s:
            self._report(now)

    def close(self, now: float) -> None:
        """End of input: close open stays at their last sighting and report the last interval."""
        self.presence.close(self._out)
        self._publish()
        if self._interval_start is not None:
            self._report(now)

    # --- output -----------------------------------------------------------------------------------

    def _report(self, now: float) -> None:
        start = self._interval_start if self._interval_start is not None else now
        visitors = {k for k in self._visitors if k not in self._store}
        self.emit(Channel.RADIO, {
            "ts": _aware(now), "interval_s": max(now - start, 1e-3), "source": self.kind, "zone": self.zone,
            "devices": len(visitors),
            "addresses": len(self._addresses), "in_zone": self.presence.inside, "store_devices": len(self._store),
            "app_ids": sum(1 for k in visitors if k[0] == "app"), "exposure_notifications": len(self._exposures), "rejected": self._rejected,
        })
        self._visitors.clear()
        self._addresses.clear()
        self._store.clear()
        self._exposures.clear()
        self._rejected = 0
        self._interval_start = now

    def _publish(self) -> None:
        out, self._out = self._out, []
        if not self.pseudonyms.ready:
            room = self.options.max_waiting - len(self.waiting)
            if room < len(out):
                self.dropped_waiting += len(out) - max(room, 0)
                log.warning("no daily salt from the gateway yet: %d presence transitions dropped", self.dropped_waiting)
            self.waiting.extend(out[: max(room, 0)])
            return
        for transition in out:
            self._emit_transition(transition)

    def _release_waiting(self) -> None:
        while self.waiting:
            self._emit_transition(self.waiting.popleft())

    def _emit_transition(self, tr: Transition) -> None:
        if self.zone is None:
            return  # a node outside every zone only counts
        kind, identifier = tr.key  # type: ignore[misc]
        if kind == "app":
            device, source = identifier.hex(), "app"
        else:
            device, source = self.pseudonyms.pseudonym(kind.encode(), identifier), self.kind
        self.emitted += 1
        self.emit(Channel.PRESENCE, {"ts": _aware(tr.at), "device": device, "zone": self.zone, "action": tr.action,
                                     "dwell_s": round(tr.dwell_s, 1), "rssi": round(tr.rssi, 1), "source": source})


def _aware(t: float) -> dt.datetime:
    return dt.datetime.fromtimestamp(t, dt.UTC)
