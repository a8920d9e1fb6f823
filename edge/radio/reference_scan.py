"""Listening for the calibration reference with the node's own BLE scanner (real bleak or the simulator's).

The scanner comes from the configured BLE source, so the calibration measures the radio, adapter
and scanning mode the node counts with. Only the RSSI of the reference's adverts is kept; every
other advert is dropped in the callback, and nothing is emitted or published.
"""

from __future__ import annotations

import asyncio
from typing import Any

from edge.radio.ble_source import BleSource, explain
from edge.radio.calibration import Reference


class ScanError(Exception):
    """The scanner could not run; the message says why, for the installer."""


async def collect_reference_rssi(source: BleSource, reference: Reference, seconds: float) -> list[float]:
    """RSSI of the reference's adverts over `seconds` of the source's clock (simulated time for `sim_ble`)."""
    samples: list[float] = []
    done = asyncio.Event()
    start: float | None = None

    def on_advert(device: Any, data: Any) -> None:
        if start is None or done.is_set():
            return
        if source.clock() - start >= seconds:
            done.set()
            return
        if data.rssi is not None and reference.matches(device.address, data.manufacturer_data, data.service_data,
                                                       data.service_uuids):
            samples.append(float(data.rssi))

    try:
        scanner = source.scanner_factory(on_advert)
        await scanner.start()
    except Exception as exc:  # bleak raises BleakError, D-Bus and OS errors alike
        raise ScanError(f"the BLE scanner of {source.name} could not start: {explain(exc)}") from None
    try:
        start = source.clock()
        finished: asyncio.Event | None = getattr(scanner, "finished", None)
        while not done.is_set() and source.clock() - start < seconds:
            if finished is not None and finished.is_set():
                break
            await asyncio.sleep(0.02)
    finally:
        await scanner.stop()
    return samples
