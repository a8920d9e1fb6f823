"""HCI LE advertising reports, as a raw BlueZ HCI socket returns them, split into one report per advert.

For nodes that read the controller directly (an `AF_BLUETOOTH` raw socket, or a btmon capture)
instead of going through bleak. Each report gives the advertiser's address, its type, the RSSI
and the GAP payload that `ble_frames.decode_ad_bytes` decodes.

Understood: H4 event packets (`0x04`, event `0x3E` LE Meta) with subevent `0x02` (legacy
advertising report) or `0x0D` (extended advertising report). Reports follow one another, each
complete, as the Linux kernel reads them (`hci_le_adv_report_evt`), not as the parallel arrays of
the specification's table. Any other well-formed event yields no reports. A packet that is not an
HCI event, or whose lengths do not add up, raises `HciError` (never anything else), so a reader can
count bad packets without a catch-all.

The address stays in node memory: `AdvReport` leaves it out of its repr and `HciError` messages
name lengths and offsets, never bytes.
"""

from __future__ import annotations

from dataclasses import dataclass, field

H4_EVENT = 0x04
EVT_LE_META = 0x3E
SUBEVENT_ADV_REPORT = 0x02
SUBEVENT_EXT_ADV_REPORT = 0x0D
RSSI_UNAVAILABLE = 0x7F
TX_POWER_UNAVAILABLE = 0x7F
_LEGACY_FIXED = 9        # event type, address type, address (6), data length
_EXTENDED_FIXED = 24     # event type (2), address type, address (6), PHYs (2), SID, TX power, RSSI,
                         # periodic interval (2), direct address type, direct address (6), data length


class HciError(ValueError):
    """The bytes are not a well-formed HCI event; the message says what is wrong (never an address)."""


@dataclass(frozen=True, slots=True)
class AdvReport:
    """One advertising report. `address` is most significant byte first (as printed), raw: keep it in memory.

    `event_type` is the controller's: legacy 0 ADV_IND .. 4 SCAN_RSP; extended, a bit field in
    which bits 5-6 mark incomplete or truncated data. `rssi` and `tx_power` are None when the
    controller says 'not available'.
    """

    address: bytes = field(repr=False)
    address_type: int
    event_type: int
    rssi: int | None
    data: bytes
    tx_power: int | None = None


def parse_event(packet: bytes) -> list[AdvReport]:
    """The advertising reports in one H4 HCI event packet; [] for other well-formed events."""
    if type(packet) is not bytes:
        packet = bytes(packet)
    n = len(packet)
    if n < 3:
        raise HciError(f"{n} bytes: shorter than an HCI event header (3)")
    if packet[0] != H4_EVENT:
        raise HciError(f"packet indicator 0x{packet[0]:02x}, expected 0x04 (HCI event)")
    if packet[2] != n - 3:
        raise HciError(f"event parameter length {packet[2]}, but {n - 3} bytes follow the header")
    if packet[1] != EVT_LE_META or n < 4:
        return []
    subevent = packet[3]
    if subevent == SUBEVENT_ADV_REPORT:
        return _legacy(packet)
    if subevent == SUBEVENT_EXT_ADV_REPORT:
        return _extended(packet)
    return []


def _count(packet: bytes) -> int:
    if len(packet) < 5:
        raise HciError("advertising report event without a report count")
    count = packet[4]
    if count == 0:
        raise HciError("advertising report event with a report count of 0")
    return count


def _legacy(packet: bytes) -> list[AdvReport]:
    count, end, offset = _count(packet), len(packet), 5
    reports = []
    for index in range(count):
        if offset + _LEGACY_FIXED > end:
            raise HciError(f"report {index} of {count} truncated at byte {offset}")
        length = packet[offset + 8]
        data_start = offset + _LEGACY_FIXED
        rssi_at = data_start + length
        if rssi_at >= end:
            raise HciError(f"report {index} of {count}: its {length} data bytes and RSSI run past the event")
        reports.append(AdvReport(packet[offset + 7:offset + 1:-1], packet[offset + 1], packet[offset],
                                 _signed(packet[rssi_at], RSSI_UNAVAILABLE), packet[data_start:rssi_at]))
        offset = rssi_at + 1
    if offset != end:
        raise HciError(f"{end - offset} bytes after the last of {count} reports")
    return reports


def _extended(packet: bytes) -> list[AdvReport]:
    count, end, offset = _count(packet), len(packet), 5
    reports = []
    for index in range(count):
        if offset + _EXTENDED_FIXED > end:
            raise HciError(f"extended report {index} of {count} truncated at byte {offset}")
        length = packet[offset + 23]
        data_start = offset + _EXTENDED_FIXED
        data_end = data_start + length
        if data_end > end:
            raise HciError(f"extended report {index} of {count}: its {length} data bytes run past the event")
        reports.append(AdvReport(packet[offset + 8:offset + 2:-1], packet[offset + 2],
                                 packet[offset] | packet[offset + 1] << 8,
                                 _signed(packet[offset + 13], RSSI_UNAVAILABLE), packet[data_start:data_end],
                                 _signed(packet[offset + 12], TX_POWER_UNAVAILABLE)))
        offset = data_end
    if offset != end:
        raise HciError(f"{end - offset} bytes after the last of {count} extended reports")
    return reports


def _signed(value: int, unavailable: int) -> int | None:
    if value == unavailable:
        return None
    return value - 256 if value > 127 else value
