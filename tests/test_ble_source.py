"""The BLE source: restarts a failing scanner, drops garbage, forwards the app's ID, hashes everything else."""

from __future__ import annotations

import asyncio
import datetime as dt
import logging
from typing import Any

from bleak.backends.device import BLEDevice
from bleak.backends.scanner import AdvertisementData

from edge.config import SourceSettings
from edge.protocol import Channel, PresenceEvent, RadioEvent, RemoteConfig, utcnow
from edge.radio.ble_source import BleOptions, BleSource
from edge.radio.eid import EDDYSTONE_UUID, eid_frame
from edge.sources import build_sources

SALT = RemoteConfig(node_id="n1", version=1, issued_at=utcnow(), zone="shoes", salt="5a" * 32,
                    salt_day=dt.date(2026, 11, 23))
T0 = 1_795_000_000.0


def advert(address: str, rssi: int, manufacturer: dict[int, bytes] | None = None,
           service: dict[str, bytes] | None = None) -> tuple[BLEDevice, AdvertisementData]:
    data = AdvertisementData(local_name=None, manufacturer_data=manufacturer or {}, service_data=service or {},
                             service_uuids=list(service or {}), tx_power=None, rssi=rssi, platform_data=())
    return BLEDevice(address, None, None), data


class ScriptedScanner:
    """Hardware stand-in: fails to start `failures` times, then replays adverts and finishes."""

    def __init__(self, source: BleSource, callback: Any, adverts: list[tuple[float, Any]], state: dict) -> None:
        self.source, self.callback, self.adverts, self.state = source, callback, adverts, state
        self.finished = asyncio.Event()

    async def start(self) -> None:
        self.state["starts"] += 1
        if self.state["starts"] <= self.state["failures"]:
            raise OSError("adapter hci0 not found")
        for t, (device, data) in self.adverts:
            self.state["now"] = t
            self.callback(device, data)
        self.finished.set()

    async def stop(self) -> None:
        self.state["stops"] += 1


def run_source(adverts: list[tuple[float, Any]], failures: int = 0, config: RemoteConfig | None = SALT,
               options: BleOptions | None = None) -> tuple[BleSource, list[tuple[Channel, dict]], dict]:
    state = {"starts": 0, "stops": 0, "failures": failures, "now": T0}
    options = options or BleOptions(zone="shoes", restart_initial_s=0.01, restart_max_s=0.05)
    source = BleSource("ble-0", options, clock=lambda: state["now"],
                       scanner_factory=lambda cb: ScriptedScanner(source, cb, adverts, state))
    if config is not None:
        source.apply_config(config)
    emitted: list[tuple[Channel, dict]] = []
    asyncio.run(source.run(lambda channel, fields: emitted.append((channel, fields))))
    return source, emitted, state


def stay(address: str, seconds: int, rssi: int = -60, start: float = T0, **kw: Any) -> list[tuple[float, Any]]:
    return [(start + i, advert(address, rssi, **kw)) for i in range(seconds)]


def presence(emitted: list[tuple[Channel, dict]]) -> list[PresenceEvent]:
    return [PresenceEvent(node_id="n1", boot_id="b", seq=i + 1, **f)
            for i, (c, f) in enumerate(e for e in emitted if e[0] is Channel.PRESENCE)]


def test_a_scanner_that_fails_to_start_is_restarted_with_backoff_and_counting_goes_on(caplog):
    caplog.set_level(logging.WARNING)
    source, emitted, state = run_source(stay("AA:BB:CC:00:11:22", 120), failures=3)
    assert state["starts"] == 4 and source.restarts == 3
    assert "could not start" in caplog.text and "no Bluetooth adapter" in caplog.text
    assert [e.action for e in presence(emitted) if e.action != "dwell"] == ["enter", "exit"]


def test_garbage_adverts_are_counted_and_dropped_and_good_ones_kept():
    bad_ibeacon = {0x004C: b"\x02\x15" + b"\x01" * 10}  # claims iBeacon, 12 bytes instead of 23
    bad_eddystone = {EDDYSTONE_UUID: b"\x00"}            # a UID frame of one byte
    adverts = stay("AA:BB:CC:00:11:22", 60)
    adverts += [(T0 + 60 + i, advert("11:22:33:44:55:66", -50, manufacturer=bad_ibeacon)) for i in range(5)]
    adverts += [(T0 + 65 + i, advert("11:22:33:44:55:67", -50, service=bad_eddystone)) for i in range(4)]
    adverts += [(T0 + 70, advert("11:22:33:44:55:68", None))]  # type: ignore[arg-type]  # no RSSI
    source, emitted, _ = run_source(adverts)
    assert source.pipeline is not None and source.pipeline.rejected_total == 10
    radio = [RadioEvent(node_id="n1", boot_id="b", seq=1, **f) for c, f in emitted if c is Channel.RADIO]
    assert sum(r.rejected for r in radio) == 10
    assert sum(1 for e in presence(emitted) if e.action == "enter") == 1


def test_the_app_id_is_forwarded_untouched_and_addresses_are_hashed():
    eid = bytes.fromhex("8b0a3c4f1e2d5a69")
    adverts = stay("4C:11:22:33:44:55", 90, service={EDDYSTONE_UUID: eid_frame(eid)})
    adverts += stay("5D:11:22:33:44:55", 90, start=T0 + 0.5)
    _, emitted, _ = run_source(adverts)
    events = presence(emitted)
    app = [e for e in events if e.source == "app"]
    assert app and {e.device for e in app} == {eid.hex()}
    ble = [e for e in events if e.source == "ble"]
    assert ble and all(e.device != "5d1122334455" for e in ble)
    assert not any("5d:11:22" in str(f).lower() or "5d1122334455" in str(f).lower() for _, f in emitted)


def test_without_a_salt_presence_waits_in_memory_and_is_released_when_the_salt_arrives():
    state = {"starts": 0, "stops": 0, "failures": 0, "now": T0}
    adverts = stay("AA:BB:CC:00:11:22", 60)
    source = BleSource("ble-0", BleOptions(zone="shoes"), clock=lambda: state["now"],
                       scanner_factory=lambda cb: ScriptedScanner(source, cb, adverts, state))
    emitted: list[tuple[Channel, dict]] = []
    asyncio.run(source.run(lambda channel, fields: emitted.append((channel, fields))))
    assert not [e for e in emitted if e[0] is Channel.PRESENCE]
    assert source.pipeline is not None and len(source.pipeline.waiting) >= 2
    source.apply_config(SALT)
    assert [e.action for e in presence(emitted) if e.action != "dwell"] == ["enter", "exit"]


def test_a_store_printer_denied_by_the_installer_never_becomes_presence():
    options = BleOptions(zone="shoes", store_devices={"deny": ["00:1b:a9"]})
    _, emitted, _ = run_source(stay("00:1B:A9:01:02:03", 120), options=options)
    assert presence(emitted) == []
    radio = [f for c, f in emitted if c is Channel.RADIO]
    assert radio and radio[-1]["store_devices"] == 1 and radio[-1]["devices"] == 0


def test_the_simulated_scanner_runs_through_the_registry():
    [source] = build_sources([SourceSettings(kind="sim_ble", options={
        "zone_rules": {"timeout_s": 60}, "sim": {"node": "shoes-radio", "duration_s": 900, "speed": 0,
                                                 "warmup_s": 900, "seed": 3}})])
    source.apply_config(SALT)
    emitted: list[tuple[Channel, dict]] = []
    asyncio.run(source.run(lambda channel, fields: emitted.append((channel, fields))))
    events = presence(emitted)
    enters = sum(1 for e in events if e.action == "enter")
    exits = sum(1 for e in events if e.action == "exit")
    assert enters >= 1 and enters == exits  # every stay closed at the end of the input
    assert all(e.zone == "shoes" for e in events)
    radio = [f for c, f in emitted if c is Channel.RADIO]
    assert len(radio) >= 14 and all(f["addresses"] >= f["devices"] - f["app_ids"] for f in radio)
