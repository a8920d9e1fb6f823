"""Classic libpcap capture files of radiotap frames (what `tcpdump -i mon0 -w` and sniffers write).

Both byte orders, microsecond and nanosecond timestamps. Only linktype 127 (radiotap) is
accepted, because the probe parser expects a radiotap header in front of every frame.

Good records are never lost to a bad one: a capture cut short (a sniffer that lost power) ends
the iteration after the last complete record, with a warning and `PcapReader.truncated` set; a
corrupt record header in the middle raises `PcapError` only after every record before it.
"""

from __future__ import annotations

import logging
import struct
from collections.abc import Iterator
from pathlib import Path

LINKTYPE_RADIOTAP = 127
_MAGICS = {  # magic as read little-endian -> (byte order, timestamp fraction divisor)
    0xA1B2C3D4: ("<", 1e6), 0xD4C3B2A1: (">", 1e6),
    0xA1B23C4D: ("<", 1e9), 0x4D3CB2A1: (">", 1e9),
}
_PCAPNG_MAGIC = 0x0A0D0D0A
_MAX_RECORD = 1 << 18  # larger than any 802.11 frame; a bigger length means a corrupt header

log = logging.getLogger(__name__)


class PcapError(ValueError):
    """The file cannot be read as a radiotap pcap; the message names the file and the problem."""


class PcapReader:
    """Iterates (timestamp in seconds, frame bytes) over a pcap file; validates the header on creation."""

    def __init__(self, path: Path | str) -> None:
        self.path = Path(path)
        self.truncated = False
        self.records = 0
        try:
            with open(self.path, "rb") as f:
                header = f.read(24)
        except FileNotFoundError:
            raise PcapError(f"{self.path}: no such file") from None
        except IsADirectoryError:
            raise PcapError(f"{self.path}: is a directory, not a pcap file") from None
        except OSError as err:
            raise PcapError(f"{self.path}: cannot read: {err.strerror or err}") from None
        if len(header) < 4:
            raise PcapError(f"{self.path}: not a pcap file ({len(header)} bytes)")
        magic = struct.unpack_from("<I", header)[0]
        if magic == _PCAPNG_MAGIC:
            raise PcapError(f"{self.path}: pcapng is not supported; convert it with "
                            f"'editcap -F pcap IN OUT' or 'tcpdump -r IN -w OUT'")
        if magic not in _MAGICS:
            raise PcapError(f"{self.path}: not a pcap file (magic 0x{magic:08x})")
        if len(header) < 24:
            raise PcapError(f"{self.path}: pcap file header truncated ({len(header)} of 24 bytes)")
        order, self._divisor = _MAGICS[magic]
        self.nanoseconds = self._divisor == 1e9
        self.linktype = struct.unpack_from(order + "I", header, 20)[0] & 0x03FFFFFF
        if self.linktype != LINKTYPE_RADIOTAP:
            raise PcapError(f"{self.path}: linktype {self.linktype}, expected {LINKTYPE_RADIOTAP} "
                            f"(802.11 with radiotap headers, as captured on a monitor-mode interface)")
        self._record = struct.Struct(order + "IIII")

    def __iter__(self) -> Iterator[tuple[float, bytes]]:
        record, divisor = self._record, self._divisor
        size = record.size
        try:
            f = open(self.path, "rb")  # noqa: SIM115 - closed in finally; a generator can't use with cleanly here
        except OSError as err:
            raise PcapError(f"{self.path}: cannot read: {err.strerror or err}") from None
        try:
            f.seek(24)
            offset = 24
            while True:
                head = f.read(size)
                if len(head) < size:
                    if head:
                        self._cut(offset, "record header")
                    return
                seconds, fraction, captured, _ = record.unpack(head)
                if captured > _MAX_RECORD:
                    raise PcapError(f"{self.path}: corrupt record header at byte {offset} "
                                    f"(record length {captured}) after {self.records} good records")
                frame = f.read(captured)
                if len(frame) < captured:
                    self._cut(offset, "record")
                    return
                offset += size + captured
                self.records += 1
                yield seconds + fraction / divisor, frame
        finally:
            f.close()

    def _cut(self, offset: int, what: str) -> None:
        self.truncated = True
        log.warning("%s: last %s truncated at byte %d; kept the %d complete records before it",
                    self.path, what, offset, self.records)


def read_pcap(path: Path | str) -> Iterator[tuple[float, bytes]]:
    """(timestamp seconds since the epoch, raw radiotap frame) per record; raises PcapError at once for a bad file."""
    return iter(PcapReader(path))
