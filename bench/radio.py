"""How many BLE adverts and Wi-Fi probe requests one core takes through the node's whole radio path.

Workloads, both with real shapes:
- BLE: every advert the ten nodes of the example store hear in a busy hour (the simulator's phones:
  Apple Continuity, Google, the app's Eddystone-EID, store devices with fixed addresses), handed over
  as bleak's `BLEDevice` / `AdvertisementData`, exactly what the detection callback receives.
- Wi-Fi: the real probe requests of the sc6-61 recordings in tests/data (an ESP32 sniffer in a lab),
  replayed a few times with shifted timestamps, plus the simulator's probes.

"omnisense" is the production path per frame: decode (or parse radiotap + 802.11), device key (for
Wi-Fi, linking rotating MACs), store-device check, zone presence state machine, interval counts;
pseudonyms (HMAC-SHA256 under the daily salt) are computed per emitted event, as the node does, and
the HMAC per frame is shown beside it for the case one wanted it per frame. Baselines in the same
run, on the same bytes: bluetooth-data-tools splitting the raw advertising payload (its cache
bypassed) and scapy dissecting the radiotap frame and reading the same fields (dpkt beside it).

Usage: python bench/radio.py [--seconds 1800]
"""

from __future__ import annotations

import argparse
import datetime as dt
import hashlib
import hmac
import json
import sys
from collections.abc import Callable
from pathlib import Path
from typing import Any

from rich.console import Console
from rich.table import Table

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from bench.support.timing import pin, rate  # noqa: E402
from edge.protocol import RemoteConfig, utcnow  # noqa: E402
from edge.radio.ble_source import BleOptions, BleSource  # noqa: E402
from edge.radio.pcap import read_pcap  # noqa: E402
from edge.radio.wifi_source import WifiOptions, WifiSource  # noqa: E402
from firmware_sim.plan import load_plan  # noqa: E402
from firmware_sim.sources import to_bleak  # noqa: E402
from firmware_sim.world import World  # noqa: E402

ROOT = Path(__file__).resolve().parents[1]
PLAN = ROOT / "config" / "store.example.yaml"
PCAPS = sorted((ROOT / "tests" / "data" / "radio" / "wifi" / "sc6-61").glob("*.pcap"))
BENCH_CPU = 0
FRIDAY_EVENING = dt.datetime(2026, 11, 20, 16, 0, tzinfo=dt.UTC).timestamp()
SALT = RemoteConfig(node_id="bench", version=1, issued_at=utcnow(), zone="shoes", salt="5a" * 32,
                    salt_day=dt.date(2026, 11, 20))


def gap_payload(manufacturer: dict[int, bytes], service: dict[str, bytes], name: str | None, tx: int | None) -> bytes:
    """The raw advertising payload (GAP AD structures) that bleak's fields came from."""
    out = bytearray(b"\x02\x01\x06")
    for uuid, data in service.items():
        out += bytes([len(data) + 3, 0x16]) + int(uuid[4:8], 16).to_bytes(2, "little") + data
    for company, data in manufacturer.items():
        out += bytes([len(data) + 3, 0xFF]) + company.to_bytes(2, "little") + data
    if name:
        out += bytes([len(name) + 1, 0x09]) + name.encode()
    if tx is not None:
        out += bytes([2, 0x0A, tx & 0xFF])
    return bytes(out)


def ble_workload(seconds: float) -> tuple[list[tuple[float, int, Any, Any]], list[bytes], list[tuple[float, bytes]]]:
    world = World(load_plan(PLAN), 1, FRIDAY_EVENING, FRIDAY_EVENING + seconds, warmup_s=1800)
    adverts, payloads, probes = [], [], []
    t = world.start
    while t < world.end:
        window = world.radio(t, t + 5)
        for r in window.ble:
            device, data = to_bleak(r)
            adverts.append((r.when, r.node, device, data))
            payloads.append(gap_payload(r.advert.manufacturer_data, r.advert.service_data, r.advert.local_name,
                                        r.advert.tx_power))
        probes.extend((w.when, w.frame) for w in window.wifi)
        t += 5
    return adverts, payloads, probes


def wifi_workload(sim_probes: list[tuple[float, bytes]], copies: int) -> list[tuple[float, bytes]]:
    real = [item for path in PCAPS for item in read_pcap(path)]
    frames = []
    span = (real[-1][0] - real[0][0] + 3600) if real else 0.0
    for k in range(copies):
        frames.extend((t + k * span, f) for t, f in real)
    return frames + sim_probes


def omnisense_ble(adverts: list[tuple[float, int, Any, Any]]) -> tuple[Callable[[], None], list[BleSource]]:
    """One BLE source per node, as in the store; each advert goes to the node that heard it."""
    clock = [0.0]
    nodes = 1 + max(node for _, node, _, _ in adverts)
    sources = [BleSource(f"bench-{i}", BleOptions(zone="shoes"), clock=lambda: clock[0]) for i in range(nodes)]

    def run() -> None:
        from edge.radio.pipeline import RadioPipeline
        for source in sources:
            source.pipeline = RadioPipeline("ble", source.options, lambda c, f: None)
            source.pipeline.apply_config(SALT)
        callbacks = [s.on_advert for s in sources]
        for when, node, device, data in adverts:
            clock[0] = when
            callbacks[node](device, data)
        for source in sources:
            assert source.pipeline is not None
            source.pipeline.close(clock[0])

    return run, sources


def omnisense_wifi(frames: list[tuple[float, bytes]]) -> tuple[Callable[[], None], WifiSource]:
    source = WifiSource("bench", WifiOptions(zone="shoes", interface="bench0"))

    def run() -> None:
        from edge.radio.pipeline import RadioPipeline
        from edge.radio.wifi_devices import ProbeLinker
        source.pipeline = RadioPipeline("wifi", source.options, lambda c, f: None)
        source.pipeline.apply_config(SALT)
        source.linker = ProbeLinker(link_s=source.options.link_s)
        on_frame = source.on_frame
        for t, frame in frames:
            on_frame(t, frame)
        source.pipeline.close(frames[-1][0])

    return run, source


def hmac_per_frame(addresses: list[bytes]) -> Callable[[], None]:
    salt = bytes.fromhex(SALT.salt or "")

    def run() -> None:
        for a in addresses:
            hmac.new(salt, b"ble\x00" + a, hashlib.sha256).digest()

    return run


def bdt_split(payloads: list[bytes]) -> Callable[[], None]:
    from bluetooth_data_tools import parse_advertisement_data_bytes
    uncached = parse_advertisement_data_bytes.__wrapped__

    def run() -> None:
        for p in payloads:
            uncached(p)

    return run


def scapy_dissect(frames: list[bytes]) -> Callable[[], None]:
    from scapy.layers.dot11 import Dot11, Dot11Elt, RadioTap

    def run() -> None:
        for f in frames:
            packet = RadioTap(f)
            _ = packet.dBm_AntSignal, packet.ChannelFrequency
            if packet.haslayer(Dot11):
                dot11 = packet[Dot11]
                _ = dot11.addr2, dot11.SC
                element = packet.getlayer(Dot11Elt)
                while element is not None:
                    _ = element.ID, element.info
                    element = element.payload.getlayer(Dot11Elt)

    return run


def dpkt_dissect(frames: list[bytes]) -> Callable[[], None]:
    import dpkt

    def run() -> None:
        for f in frames:
            packet = dpkt.radiotap.Radiotap(f)
            dot11 = packet.data
            _ = packet.ant_sig.db if packet.ant_sig_present else None, dot11.mgmt.src, dot11.mgmt.frag_seq, dot11.ies

    return run


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--seconds", type=float, default=1800.0, help="Simulated store time for the BLE workload.")
    args = parser.parse_args()
    pin({BENCH_CPU})
    console = Console()
    with console.status("simulating the store's radio traffic"):
        adverts, payloads, sim_probes = ble_workload(args.seconds)
        frames = wifi_workload(sim_probes, copies=4)
    ble_run, ble_sources = omnisense_ble(adverts)
    wifi_run, wifi_source = omnisense_wifi(frames)
    raw = [f for _, f in frames]
    sample = raw[:: max(1, len(raw) // 5000)]  # scapy is slow: a spread-out sample of the same frames
    with console.status("measuring"):
        figures = {
            "ble_adverts_per_s": rate(ble_run, len(adverts)),
            "ble_hmac_per_frame_per_s": rate(hmac_per_frame([d.address.encode() for _, _, d, _ in adverts]), len(adverts)),
            "bdt_adverts_per_s": rate(bdt_split(payloads), len(payloads)),
            "probe_requests_per_s": rate(wifi_run, len(frames)),
            "scapy_probe_requests_per_s": rate(scapy_dissect(sample), len(sample), repeat=1),
            "dpkt_probe_requests_per_s": rate(dpkt_dissect(sample), len(sample)),
        }
    table = Table(title=f"radio path on one core (CPU {BENCH_CPU})")
    for column in ("what", "input", "items", "per second"):
        table.add_column(column, justify="left" if column in ("what", "input") else "right")
    rows = [
        ("omnisense BLE: decode, key, store devices, zone state, counts", "bleak callback", len(adverts), "ble_adverts_per_s"),
        ("  HMAC-SHA256 per advert, if it were done per frame", "address", len(adverts), "ble_hmac_per_frame_per_s"),
        ("bluetooth-data-tools: split the AD structures only (uncached)", "raw payload", len(payloads), "bdt_adverts_per_s"),
        ("omnisense Wi-Fi: parse, link MACs, store devices, zone state, counts", "radiotap frame", len(frames), "probe_requests_per_s"),
        ("scapy: dissect radiotap + 802.11 + IEs", "radiotap frame", len(sample), "scapy_probe_requests_per_s"),
        ("dpkt: dissect radiotap + 802.11 + IEs", "radiotap frame", len(sample), "dpkt_probe_requests_per_s"),
    ]
    for what, source, n, key in rows:
        table.add_row(what, source, f"{n:,}", f"{figures[key]:,.0f}")
    console.print(table)
    emitted = sum(s.pipeline.emitted for s in ble_sources if s.pipeline)
    console.print(f"BLE: {len(ble_sources)} nodes, {emitted:,} presence events emitted per run; Wi-Fi: "
                  f"{len(frames) - len(sim_probes):,} real sc6-61 frames (4 replays) and {len(sim_probes):,} simulated; "
                  f"scapy and dpkt on a spread-out sample of {len(sample):,} of the same frames")
    print("BENCH " + json.dumps({k: round(v) for k, v in figures.items()}))


if __name__ == "__main__":
    main()
