"""The Wi-Fi source: pcap replay, an interface that fails and returns, garbage frames, rotating MACs linked."""

from __future__ import annotations

import asyncio
import datetime as dt
from pathlib import Path

from edge.protocol import Channel, RadioEvent, RemoteConfig, utcnow
from edge.radio.wifi_source import WifiOptions, WifiSource
from firmware_sim.dot11 import probe_request
from firmware_sim.phones import FINGERPRINTS

PCAP = Path(__file__).parent / "data" / "radio" / "wifi" / "sc6-61" / "sc6-61_2023-04-14_anonymized.pcap"
SALT = RemoteConfig(node_id="n1", version=1, issued_at=utcnow(), zone="lab", salt="33" * 32,
                    salt_day=dt.date(2023, 4, 14))
T0 = 1_681_459_200.0


def run(source: WifiSource) -> list[tuple[Channel, dict]]:
    source.apply_config(SALT)
    emitted: list[tuple[Channel, dict]] = []
    asyncio.run(source.run(lambda channel, fields: emitted.append((channel, fields))))
    return emitted


def radio_events(emitted: list[tuple[Channel, dict]]) -> list[RadioEvent]:
    return [RadioEvent(node_id="n1", boot_id="b", seq=i + 1, **f)
            for i, (c, f) in enumerate(e for e in emitted if e[0] is Channel.RADIO)]


def test_a_real_pcap_replays_into_counts_with_the_naive_count_beside_the_linked_one():
    source = WifiSource("wifi-0", WifiOptions(pcap=PCAP, zone="lab", report_every_s=300))
    radio = radio_events(run(source))
    assert source.probes > 1000 and source.pipeline is not None and source.pipeline.rejected_total == 0
    assert len(radio) >= 20
    assert sum(r.addresses for r in radio) > sum(r.devices + r.store_devices for r in radio)  # MACs linked
    assert all(r.source == "wifi" and r.zone == "lab" for r in radio)


class FlakyInterface:
    """Opens only on the third try, delivers frames, loses the interface, comes back, then ends."""

    def __init__(self, plan: list) -> None:
        self.plan = plan
        self.opened = 0

    def __call__(self) -> FlakyInterface:
        self.opened += 1
        if self.opened <= 2:
            raise OSError("no network interface named 'wlan1'")
        return self

    def recv(self, bufsize: int = 65535) -> bytes:
        item = self.plan.pop(0)
        if isinstance(item, Exception):
            raise item
        self.now = item[0]
        return item[1]

    def close(self) -> None:
        pass


def phone_frames(start: float, seconds: int, rotate_every: int, rssi: int = -45) -> list[tuple[float, bytes]]:
    """One phone 1-2 m from the node, probing every 20 s, changing its random MAC every `rotate_every` s."""
    frames = []
    for i, t in enumerate(range(0, seconds, 20)):
        mac = bytes([0x02, 0x11, 0x22, 0x33, 0x44, t // rotate_every])
        frames.append((start + t, probe_request(mac, 100 + i, 6, rssi, FINGERPRINTS["ios-a"], b"")))
    return frames


def test_an_interface_that_fails_is_reopened_and_counting_goes_on(caplog):
    frames = phone_frames(T0, 600, rotate_every=120)
    garbage = [(T0 + 1, b"\x00\x00\x08"), (T0 + 2, b"\x00" * 40)]
    plan = [*frames[:10], *garbage, OSError("interface went down"), *frames[10:], (T0 + 600, b"")]
    flaky = FlakyInterface(plan)
    options = WifiOptions(interface="wlan1", zone="lab", reopen_initial_s=0.01, reopen_max_s=0.02)
    source = WifiSource("wifi-0", options, socket_factory=flaky, clock=lambda sock: sock.now)
    emitted = run(source)
    assert flaky.opened == 4 and source.reopens == 3
    assert "cannot open the Wi-Fi capture" in caplog.text and "Wi-Fi capture failed" in caplog.text
    presence = [f for c, f in emitted if c is Channel.PRESENCE]
    assert [f["action"] for f in presence if f["action"] != "dwell"] == ["enter", "exit"]  # one stay, 5 MACs
    assert len({f["device"] for f in presence}) == 1
    radio = radio_events(emitted)
    assert sum(r.rejected for r in radio) == 2
    assert max(r.addresses for r in radio) > max(r.devices for r in radio)
