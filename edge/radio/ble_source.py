"""The BLE source: `bleak.BleakScanner` adverts -> decoded frames -> the radio pipeline.

Scanning is passive where the backend allows it (BlueZ, as on a Raspberry Pi: the node only
listens and sends no scan requests), with Home Assistant's or-patterns so BlueZ reports every
advertising device. A scanner that fails to start or dies (adapter unplugged, bluetoothd
restarted) is restarted with capped backoff; the zone state carries over, so a short outage looks
like a quiet spell, and a long one ends stays through the presence timeout.

Device keys: the app's rotating ID (`app`, forwarded untouched), a beacon's own identifier
(`beacon`: iBeacon/AltBeacon uuid-major-minor, Eddystone namespace-instance; stable across address
rotation), else the advertising address (`ble`). Exposure Notification IDs are only counted.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Callable
from typing import Any, Protocol

from pydantic import Field

from edge.backoff import Backoff
from edge.protocol import RemoteConfig
from edge.radio.ble_frames import (
    AltBeacon,
    EddystoneEID,
    EddystoneUID,
    ExposureNotification,
    IBeacon,
    InvalidAdvert,
    decode,
)
from edge.radio.pipeline import DeviceKey, RadioOptions, RadioPipeline
from edge.sources import Emit

log = logging.getLogger(__name__)

Callback = Callable[[Any, Any], None]


class Scanner(Protocol):
    async def start(self) -> None: ...

    async def stop(self) -> None: ...


class BleOptions(RadioOptions):
    adapter: str | None = Field(None, description="BlueZ adapter such as 'hci0'; default: the system's.")
    passive: bool = Field(True, description="Listen only (BlueZ); active scanning also asks for scan responses.")
    restart_initial_s: float = Field(1.0, gt=0, description="First wait before restarting a failed scanner.")
    restart_max_s: float = Field(60.0, gt=0, description="Longest wait between restarts.")
    silence_restart_s: float = Field(300.0, ge=0, description="No advert at all for this long: the scanner is "
                                     "taken for dead (bluetoothd restarted, dongle pulled) and restarted; 0: never.")


def address_bytes(address: str) -> bytes:
    """`AA:BB:CC:DD:EE:FF` -> 6 bytes; other platforms' opaque ids (macOS UUIDs) as their text bytes."""
    if len(address) == 17:
        try:
            return bytes.fromhex(address.replace(":", ""))
        except ValueError:
            pass
    return address.encode()


def bleak_scanner(options: BleOptions, callback: Callback) -> Scanner:
    """The real scanner. Imported here so a node without BLE sources never loads bleak's backends."""
    from bleak import BleakScanner
    from bleak.args.bluez import OrPattern
    from bleak.assigned_numbers import AdvertisementDataType

    bluez: dict[str, Any] = {}
    if options.adapter:
        bluez["adapter"] = options.adapter
    if options.passive:
        # The flags values phones and beacons advertise; BlueZ passive scanning needs at least one pattern.
        bluez["or_patterns"] = [OrPattern(0, AdvertisementDataType.FLAGS, bytes([flags])) for flags in (0x02, 0x06, 0x1A)]
    return BleakScanner(detection_callback=callback, scanning_mode="passive" if options.passive else "active",
                        bluez=bluez)  # type: ignore[arg-type]


def explain(exc: BaseException) -> str:
    """What a failed scanner start means for the installer; bleak's own errors are often bare OS errors."""
    if isinstance(exc, FileNotFoundError):
        return "no D-Bus system bus, so no BlueZ (install and start bluez: systemctl start bluetooth)"
    if isinstance(exc, PermissionError):
        return "permission denied by BlueZ (run as a user in the 'bluetooth' group)"
    text = str(exc) or type(exc).__name__
    if "No powered Bluetooth adapters" in text or "adapter" in text.lower() and "not found" in text.lower():
        return f"no Bluetooth adapter ({text}); check `bluetoothctl list` and the source's 'adapter' option"
    return f"{type(exc).__name__}: {text}"


class BleSource:
    Options = BleOptions

    def __init__(self, name: str, options: BleOptions,
                 scanner_factory: Callable[[Callback], Scanner] | None = None,
                 clock: Callable[[], float] = time.time) -> None:
        self.name = name
        self.options = options
        self.scanner_factory = scanner_factory or (lambda cb: bleak_scanner(options, cb))
        self.clock = clock
        self.pipeline: RadioPipeline | None = None
        self._config: RemoteConfig | None = None
        self.adverts = 0
        self.restarts = 0

    def apply_config(self, config: RemoteConfig) -> None:
        self._config = config
        if self.pipeline is not None:
            self.pipeline.apply_config(config)

    def on_advert(self, device: Any, data: Any) -> None:
        """bleak's detection callback: (BLEDevice, AdvertisementData)."""
        pipeline = self.pipeline
        if pipeline is None:
            return
        self.adverts += 1
        t = self.clock()
        try:
            frame = decode(data.manufacturer_data, data.service_data, data.service_uuids, None, data.tx_power)
        except InvalidAdvert:
            pipeline.rejected()
            return
        address = address_bytes(device.address)
        key: DeviceKey
        if isinstance(frame, EddystoneEID):
            key = ("app", frame.eid)
        elif isinstance(frame, ExposureNotification):
            pipeline.counted_only(t, frame.rpi)
            return
        elif isinstance(frame, IBeacon):
            key = ("beacon", frame.uuid.bytes + frame.major.to_bytes(2, "big") + frame.minor.to_bytes(2, "big"))
        elif isinstance(frame, AltBeacon):
            key = ("beacon", frame.beacon_id)
        elif isinstance(frame, EddystoneUID):
            key = ("beacon", frame.namespace + frame.instance)
        else:
            key = ("ble", address)
        rssi = data.rssi
        if rssi is None or not -127 <= rssi <= 20:
            pipeline.rejected()
            return
        pipeline.sighting(t, key, float(rssi), address)

    async def run(self, emit: Emit) -> None:
        self.pipeline = RadioPipeline("ble", self.options, emit)
        if self._config is not None:
            self.pipeline.apply_config(self._config)
        backoff = Backoff(self.options.restart_initial_s, self.options.restart_max_s)
        try:
            while True:
                try:
                    scanner = self.scanner_factory(self.on_advert)
                    await scanner.start()
                except Exception as exc:  # bleak raises BleakError, D-Bus and OS errors alike
                    delay = backoff.next()
                    self.restarts += 1
                    log.warning("%s: BLE scanner could not start: %s; retrying in %.1f s", self.name, explain(exc), delay)
                    await self._idle(delay)
                    continue
                backoff.reset()
                try:
                    if await self._scan(scanner):
                        return
                finally:
                    await asyncio.shield(scanner.stop())
        finally:
            self.pipeline.close(self.clock())

    async def _scan(self, scanner: Scanner) -> bool:
        """Tick the pipeline while the scanner runs; True when its input ended (a replay or simulation).

        A store is never radio-silent for minutes (phones, beacons, the store's own devices), so a
        scanner that delivers nothing for `silence_restart_s` has died without saying so: restart it.
        """
        finished: asyncio.Event | None = getattr(scanner, "finished", None)
        loop = asyncio.get_running_loop()
        heard, heard_at = self.adverts, loop.time()
        silence = self.options.silence_restart_s
        while True:
            if finished is not None and finished.is_set():
                return True
            await asyncio.sleep(1.0 if finished is None else 0.05)
            assert self.pipeline is not None
            self.pipeline.tick(self.clock())
            if self.adverts != heard:
                heard, heard_at = self.adverts, loop.time()
            elif silence and loop.time() - heard_at >= silence:
                log.warning("%s: no BLE advert for %.0f s; restarting the scanner", self.name, silence)
                self.restarts += 1
                return False

    async def _idle(self, seconds: float) -> None:
        """Wait for a restart while still ending stays whose devices went quiet."""
        loop = asyncio.get_running_loop()
        end = loop.time() + seconds
        while (left := end - loop.time()) > 0:
            await asyncio.sleep(min(1.0, left))
            assert self.pipeline is not None
            self.pipeline.tick(self.clock())
