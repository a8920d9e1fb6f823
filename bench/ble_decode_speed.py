"""How fast BLE adverts decode on one core, beside bluetooth-data-tools splitting the same payloads.

A store-like mix (Apple Continuity 40 %, Google Nearby 20 %, the app's Eddystone-EID 15 %, iBeacon
10 %, Exposure Notification 5 %, other devices 10 %), two ways:
- distinct: every advert's payload is new, so no cache helps (rotating IDs, worst case);
- repeated: 1,000 devices sending the same payload again and again (beacons, and phones between
  rotations), which the per-payload caches serve (bluetooth-data-tools' holds 1,024 payloads).
Decoded from bleak's already-split fields (`decode`) and from raw AD bytes (`decode_ad_bytes`, which
includes bluetooth-data-tools' split). The baseline is bluetooth-data-tools' own
`parse_advertisement_data_bytes` on the same raw payloads, cache bypassed for "distinct".

Usage: python bench/ble_decode_speed.py [--adverts 200000]
"""

from __future__ import annotations

import argparse
import json
import random
import sys
from pathlib import Path

from rich.console import Console
from rich.table import Table

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from bluetooth_data_tools import parse_advertisement_data_bytes  # noqa: E402

from bench.support.timing import pin, rate  # noqa: E402
from edge.radio.ble_frames import (  # noqa: E402
    EXPOSURE_NOTIFICATION_UUID,
    decode,
    decode_ad_bytes,
    uuid16,
)
from edge.radio.eid import EDDYSTONE_UUID  # noqa: E402

BENCH_CPU = 0
DEVICES = 1000
Fields = tuple[dict[int, bytes], dict[str, bytes], list[str], None, int | None]
MIX = (("apple", 40), ("google", 20), ("eid", 15), ("ibeacon", 10), ("exposure", 5), ("generic", 10))


def _ad(kind: str, rnd: random.Random) -> bytes:
    """One raw advertising payload (GAP AD structures) of the given kind, with random contents."""
    flags = b"\x02\x01\x06"
    if kind == "apple":
        body = bytes([0x10, 0x05]) + rnd.randbytes(5)
        return flags + bytes([len(body) + 3, 0xFF, 0x4C, 0x00]) + body
    if kind == "google":
        return flags + b"\x03\x03\xf3\xfe" + bytes([13, 0x16, 0xF3, 0xFE]) + rnd.randbytes(10)
    if kind == "eid":
        return flags + b"\x03\x03\xaa\xfe" + bytes([13, 0x16, 0xAA, 0xFE, 0x30, 0xEC]) + rnd.randbytes(8)
    if kind == "ibeacon":
        return flags + b"\x1a\xff\x4c\x00\x02\x15" + rnd.randbytes(20) + b"\xc5"
    if kind == "exposure":
        return b"\x02\x01\x1a\x03\x03\x6f\xfd" + bytes([23, 0x16, 0x6F, 0xFD]) + rnd.randbytes(20)
    return flags + bytes([9, 0xFF]) + rnd.randbytes(8) + b"\x02\x0a\xf8"


def _fields(payload: bytes) -> Fields:
    """What bleak's AdvertisementData would hold for the payload (fresh containers, as bleak builds)."""
    name, uuids, service, manufacturer, tx = parse_advertisement_data_bytes(payload)
    return dict(manufacturer), dict(service), list(uuids), name, tx


def _workload(n: int, distinct: bool, seed: int = 1) -> list[bytes]:
    rnd = random.Random(seed)
    kinds = [k for k, share in MIX for _ in range(share)]
    if distinct:
        return [_ad(rnd.choice(kinds), rnd) for _ in range(n)]
    devices = [_ad(rnd.choice(kinds), rnd) for _ in range(DEVICES)]
    return [rnd.choice(devices) for _ in range(n)]


def _clear_caches() -> None:
    parse_advertisement_data_bytes.cache_clear()
    from edge.radio import ble_frames
    for name in ("_decode_ad_bytes", "_eddystone", "_ibeacon", "_altbeacon", "_exposure_notification",
                 "_apple", "_google", "_generic", "_short"):
        getattr(ble_frames, name).cache_clear()


def measure(n: int) -> dict[str, float]:
    """Adverts per second for each way, keyed by name."""
    figures: dict[str, float] = {}
    bdt_uncached = parse_advertisement_data_bytes.__wrapped__
    for label, distinct in (("distinct", True), ("repeated", False)):
        payloads = _workload(n, distinct)
        fields = [_fields(p) for p in payloads]
        _clear_caches()

        def run_decode() -> None:
            for f in fields:
                decode(*f)

        def run_decode_ad() -> None:
            if distinct:
                _clear_caches()
            for p in payloads:
                decode_ad_bytes(p)

        def run_bdt() -> None:
            split = bdt_uncached if distinct else parse_advertisement_data_bytes
            for p in payloads:
                split(p)

        def run_loop() -> None:
            for _ in payloads:
                pass

        overhead = 1 / rate(run_loop, n)
        for name, run in (("decode", run_decode), ("decode_ad_bytes", run_decode_ad), ("bdt_split", run_bdt)):
            if distinct and name == "decode":
                _clear_caches()
            seconds = 1 / rate(run, n) - overhead
            figures[f"{name}_{label}_per_s"] = 1 / seconds
    return figures


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--adverts", type=int, default=200_000)
    args = parser.parse_args()
    pin({BENCH_CPU})
    assert EDDYSTONE_UUID == uuid16(0xFEAA) and EXPOSURE_NOTIFICATION_UUID == uuid16(0xFD6F)
    figures = measure(args.adverts)
    table = Table(title=f"BLE decode, one core, {args.adverts:,} adverts of a store-like mix (loop overhead removed)")
    table.add_column("what")
    for label in ("distinct", "repeated"):
        table.add_column(f"{label}: adverts/s", justify="right")
        table.add_column("µs/advert", justify="right")
    rows = (("decode (bleak fields)", "decode"), ("decode_ad_bytes (raw AD, incl. bdt split)", "decode_ad_bytes"),
            ("baseline: bdt parse_advertisement_data_bytes", "bdt_split"))
    for title, key in rows:
        cells = []
        for label in ("distinct", "repeated"):
            rate = figures[f"{key}_{label}_per_s"]
            cells += [f"{rate:,.0f}", f"{1e6 / rate:.2f}"]
        table.add_row(title, *cells)
    Console(width=140).print(table)
    print("BENCH " + json.dumps({k: round(v) for k, v in figures.items()}))


if __name__ == "__main__":
    main()
