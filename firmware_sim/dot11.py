"""802.11 probe requests with radiotap headers, byte for byte as a monitor-mode interface delivers them.

Also a minimal pcap writer (linktype 127, radiotap), so a simulated capture replays like a real one.
"""

from __future__ import annotations

import struct
from dataclasses import dataclass
from pathlib import Path
from typing import BinaryIO

LINKTYPE_IEEE802_11_RADIOTAP = 127
BROADCAST = b"\xff" * 6

# radiotap "present" bits: Flags (1), Channel (3), dBm antenna signal (5)
_RT_PRESENT = (1 << 1) | (1 << 3) | (1 << 5)
_CHANNEL_FLAG_2GHZ, _CHANNEL_FLAG_5GHZ, _CHANNEL_FLAG_CCK, _CHANNEL_FLAG_OFDM = 0x0080, 0x0100, 0x0020, 0x0040


def channel_frequency(channel: int) -> int:
    if channel == 14:
        return 2484
    if 1 <= channel <= 13:
        return 2407 + 5 * channel
    return 5000 + 5 * channel


def radiotap(channel: int, rssi_dbm: int) -> bytes:
    """version 0, present = flags | channel | antenna signal; fields aligned as the standard requires."""
    freq = channel_frequency(channel)
    chan_flags = (_CHANNEL_FLAG_2GHZ | _CHANNEL_FLAG_CCK) if freq < 3000 else (_CHANNEL_FLAG_5GHZ | _CHANNEL_FLAG_OFDM)
    body = struct.pack("<BxHHb", 0, freq, chan_flags, max(-128, min(127, rssi_dbm)))
    return struct.pack("<BBHI", 0, 0, 8 + len(body), _RT_PRESENT) + body


def element(element_id: int, payload: bytes) -> bytes:
    return bytes([element_id, len(payload)]) + payload


@dataclass(frozen=True)
class ProbeFingerprint:
    """What a phone model puts in its probe requests; identical across its random MACs."""

    rates: bytes = b"\x02\x04\x0b\x16"
    ext_rates: bytes = b"\x0c\x12\x18\x24\x30\x48\x60\x6c"
    ht_capabilities: bytes | None = b"\x2d\x01\x17\xff\xff\x00" + bytes(20)
    ext_capabilities: bytes | None = b"\x00\x00\x08\x04\x00\x00\x00\x40"
    vendor: tuple[bytes, ...] = ()

    def elements(self, ssid: bytes, channel: int) -> bytes:
        out = element(0, ssid) + element(1, self.rates) + element(50, self.ext_rates) + element(3, bytes([channel]))
        if self.ht_capabilities is not None:
            out += element(45, self.ht_capabilities[:26].ljust(26, b"\x00"))
        if self.ext_capabilities is not None:
            out += element(127, self.ext_capabilities)
        for item in self.vendor:
            out += element(221, item)
        return out


def probe_request(source: bytes, seq: int, channel: int, rssi_dbm: int, fingerprint: ProbeFingerprint,
                  ssid: bytes = b"") -> bytes:
    """A broadcast probe request (wildcard SSID unless given) as captured with radiotap, without FCS."""
    if len(source) != 6:
        raise ValueError("source address must be 6 bytes")
    header = struct.pack("<HH", 0x0040, 0) + BROADCAST + source + BROADCAST + struct.pack("<H", (seq & 0xFFF) << 4)
    return radiotap(channel, rssi_dbm) + header + fingerprint.elements(ssid, channel)


class PcapWriter:
    """Classic pcap with microsecond timestamps; what tcpdump -w writes for a radiotap interface."""

    def __init__(self, stream: BinaryIO) -> None:
        self.stream = stream
        stream.write(struct.pack("<IHHiIII", 0xA1B2C3D4, 2, 4, 0, 0, 65535, LINKTYPE_IEEE802_11_RADIOTAP))

    def write(self, when: float, frame: bytes) -> None:
        seconds = int(when)
        micros = int(round((when - seconds) * 1e6))
        if micros >= 1_000_000:
            seconds, micros = seconds + 1, micros - 1_000_000
        self.stream.write(struct.pack("<IIII", seconds, micros, len(frame), len(frame)) + frame)

    @classmethod
    def to_file(cls, path: Path) -> PcapWriter:
        return cls(open(path, "wb"))  # noqa: SIM115 - closed by close()

    def close(self) -> None:
        self.stream.close()
