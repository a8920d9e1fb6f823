"""BLE advertisements to typed frames: beacons, the app's rotating ID, phones' platform frames.

Pure, with no radio in it: `decode` takes the fields a scanner has already split out (bleak's
`AdvertisementData`), `decode_ad_bytes` takes a raw GAP payload and lets bluetooth-data-tools split
it. Home Assistant's parsers (bluetooth-data-tools, ibeacon-ble) and beacontools were the models.

One frame per advert, the most telling one, in this order: identity-bearing service data
(Eddystone EID/UID/URL, Exposure Notification), then iBeacon/AltBeacon, then Eddystone telemetry
(a beacon often sends TLM beside its iBeacon), then the phones' platform frames (Apple Continuity,
Google), else `Generic`.

Bad data, two cases:
- merely unknown data (an undefined Eddystone frame type, a company's own format) is not an
  error: it falls through to a lower-ranked frame or to `Generic`;
- data that claims a known format and breaks it (Apple's iBeacon type with 18 bytes, a 12-byte
  Eddystone UID, URL scheme 7, a 19-byte Exposure Notification) raises `InvalidAdvert`, so a caller
  counts it as bad input instead of as a device kind, unless the same advert holds a valid beacon
  frame, which is then returned (no good data lost). Nothing else escapes (property-tested).
  The AltBeacon code 0xBEAC is no such claim: any company's data starts with it once in 65,536
  adverts, so a short one is just that company's `Generic`.

Privacy: a frame never carries an address or a local name (names are often a person's: "Anna's
iPhone"). Platform frames keep only their message type, not their payload. Eddystone-EID and
Exposure Notification identifiers are forwarded untouched: they rotate, and only holders of the
keys (the gateway, for app installs that opted in) can link them.

Speed: every sub-decoder is cached on its payload bytes, like bluetooth-data-tools does, so a
device heard again costs dictionary lookups only.
"""

from __future__ import annotations

import struct
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from functools import lru_cache
from typing import ClassVar
from uuid import UUID

from bluetooth_data_tools import parse_advertisement_data_bytes

from edge.radio.eid import EDDYSTONE_UUID, FRAME_EID

BASE_UUID_SUFFIX = "-0000-1000-8000-00805f9b34fb"


def uuid16(short: int) -> str:
    """The 128-bit form bleak uses as a service-data key for a 16-bit UUID."""
    return f"0000{short:04x}{BASE_UUID_SUFFIX}"


EXPOSURE_NOTIFICATION_UUID = uuid16(0xFD6F)
APPLE, GOOGLE = 0x004C, 0x00E0
GOOGLE_SERVICES = frozenset(uuid16(u) for u in (0xFE2C, 0xFE9F, 0xFEF3))  # Fast Pair, Google, Nearby
IBEACON_PREFIX = b"\x02\x15"      # Apple's beacon type and remaining length (21)
ALTBEACON_CODE = b"\xbe\xac"
FRAME_UID, FRAME_URL, FRAME_TLM = 0x00, 0x10, 0x20
TLM_PLAIN, TLM_ENCRYPTED = 0x00, 0x01
CACHE_SIZE = 4096

URL_SCHEMES = ("http://www.", "https://www.", "http://", "https://")
URL_EXPANSIONS = (".com/", ".org/", ".edu/", ".net/", ".info/", ".biz/", ".gov/",
                  ".com", ".org", ".edu", ".net", ".info", ".biz", ".gov")
_URL_MAX = 17

_IBEACON = struct.Struct(">HHb")
_ALTBEACON_TAIL = struct.Struct(">bB")
_TLM = struct.Struct(">HhII")
_TEMPERATURE_UNSUPPORTED = -0x8000


class InvalidAdvert(ValueError):
    """The advert claims a known format and breaks it; the message says which and how."""


@dataclass(frozen=True, slots=True)
class Frame:
    """Base of all frames; `kind` names the format (a class attribute, not a field)."""

    kind: ClassVar[str] = "frame"


@dataclass(frozen=True, slots=True)
class IBeacon(Frame):
    """Apple iBeacon. `tx_power`: measured RSSI at 1 m, dBm."""

    kind: ClassVar[str] = "ibeacon"
    uuid: UUID
    major: int
    minor: int
    tx_power: int


@dataclass(frozen=True, slots=True)
class AltBeacon(Frame):
    """AltBeacon (any company). `ref_rssi`: RSSI at 1 m, dBm. Identifiers follow the usual 16+2+2 split."""

    kind: ClassVar[str] = "altbeacon"
    company_id: int
    beacon_id: bytes
    ref_rssi: int
    reserved: int

    @property
    def uuid(self) -> UUID:
        return UUID(bytes=self.beacon_id[:16])

    @property
    def major(self) -> int:
        return int.from_bytes(self.beacon_id[16:18], "big")

    @property
    def minor(self) -> int:
        return int.from_bytes(self.beacon_id[18:20], "big")


@dataclass(frozen=True, slots=True)
class EddystoneUID(Frame):
    """Eddystone-UID. `tx_power`: calibrated power at 0 m, dBm (subtract 41 dB for 1 m)."""

    kind: ClassVar[str] = "eddystone_uid"
    namespace: bytes
    instance: bytes
    tx_power: int


@dataclass(frozen=True, slots=True)
class EddystoneURL(Frame):
    """Eddystone-URL with scheme and expansion codes resolved. `tx_power`: at 0 m, dBm."""

    kind: ClassVar[str] = "eddystone_url"
    url: str
    tx_power: int


@dataclass(frozen=True, slots=True)
class EddystoneTLM(Frame):
    """Eddystone-TLM version 0. `voltage_mv` 0 and `temperature_c` None mean 'not supported'."""

    kind: ClassVar[str] = "eddystone_tlm"
    voltage_mv: int
    temperature_c: float | None
    adv_count: int
    uptime_s: float


@dataclass(frozen=True, slots=True)
class EddystoneEncryptedTLM(Frame):
    """Eddystone-TLM version 1 (eTLM): opaque without the beacon's identity key."""

    kind: ClassVar[str] = "eddystone_etlm"
    encrypted: bytes
    salt: bytes
    mic: bytes


@dataclass(frozen=True, slots=True)
class EddystoneEID(Frame):
    """Eddystone-EID, as the app advertises its rotating ID. `tx_power`: at 0 m, dBm."""

    kind: ClassVar[str] = "eddystone_eid"
    eid: bytes
    tx_power: int


@dataclass(frozen=True, slots=True)
class ExposureNotification(Frame):
    """Google/Apple Exposure Notification: rolling proximity identifier and encrypted metadata."""

    kind: ClassVar[str] = "exposure_notification"
    rpi: bytes
    aem: bytes


@dataclass(frozen=True, slots=True)
class Apple(Frame):
    """Apple manufacturer data other than iBeacon: only the first Continuity message type is kept."""

    kind: ClassVar[str] = "apple"
    continuity_type: int | None
    tx_power: int | None


@dataclass(frozen=True, slots=True)
class Google(Frame):
    """A Google platform frame (Nearby, Fast Pair, or Google manufacturer data): only which service."""

    kind: ClassVar[str] = "google"
    service_uuid16: int | None
    tx_power: int | None


@dataclass(frozen=True, slots=True)
class Generic(Frame):
    """Any other device: the first company ID and 16-bit service UUID it names, its AD TX power."""

    kind: ClassVar[str] = "generic"
    company_id: int | None
    service_uuid16: int | None
    tx_power: int | None


KINDS: dict[str, type[Frame]] = {cls.kind: cls for cls in (
    IBeacon, AltBeacon, EddystoneUID, EddystoneURL, EddystoneTLM, EddystoneEncryptedTLM, EddystoneEID,
    ExposureNotification, Apple, Google, Generic)}
_TELEMETRY = (EddystoneTLM, EddystoneEncryptedTLM)


def decode(manufacturer_data: Mapping[int, bytes], service_data: Mapping[str, bytes],
           service_uuids: Sequence[str], local_name: str | None = None, tx_power: int | None = None) -> Frame:
    """The frame of one advert, from bleak's `AdvertisementData` fields.

    `local_name` is accepted so callers can pass the fields as they come, and deliberately never
    stored (see the module docstring). Raises `InvalidAdvert`, nothing else.
    """
    telemetry: Frame | None = None
    broken: InvalidAdvert | None = None
    if service_data:
        data = service_data.get(EDDYSTONE_UUID)
        if data is not None:
            try:
                frame = _eddystone(data if type(data) is bytes else bytes(data))
            except InvalidAdvert as exc:
                frame, broken = None, exc
            if frame is not None:
                if not isinstance(frame, _TELEMETRY):
                    return frame
                telemetry = frame
        data = service_data.get(EXPOSURE_NOTIFICATION_UUID)
        if data is not None:
            try:
                return _exposure_notification(data if type(data) is bytes else bytes(data))
            except InvalidAdvert as exc:
                broken = exc
    platform: Frame | None = None
    if manufacturer_data:
        for company, data in manufacturer_data.items():
            if type(data) is not bytes:
                data = bytes(data)
            if company == APPLE:
                if data[:2] == IBEACON_PREFIX:
                    try:
                        return _ibeacon(data)
                    except InvalidAdvert as exc:
                        broken = exc
                elif platform is None:
                    platform = _apple(data[0] if data else None, tx_power)
            elif data[:2] == ALTBEACON_CODE and len(data) >= 24:
                return _altbeacon(company, data)
    if telemetry is not None:
        return telemetry
    if broken is not None:
        raise broken
    if platform is not None:
        return platform
    return _other(manufacturer_data, service_data, service_uuids, tx_power)


def decode_ad_bytes(payload: bytes) -> Frame:
    """The frame of a raw advertising (or merged advertising + scan response) payload.

    bluetooth-data-tools splits the AD structures; it skips truncated ones rather than failing,
    so the payload as a whole is never an error, only a structure inside it can be.
    """
    return _decode_ad_bytes(payload if type(payload) is bytes else bytes(payload))


@lru_cache(maxsize=CACHE_SIZE)
def _decode_ad_bytes(payload: bytes) -> Frame:
    local_name, service_uuids, service_data, manufacturer_data, tx_power = parse_advertisement_data_bytes(payload)
    return decode(manufacturer_data, service_data, service_uuids, local_name, tx_power)


def _other(manufacturer_data: Mapping[int, bytes], service_data: Mapping[str, bytes],
           service_uuids: Sequence[str], tx_power: int | None) -> Frame:
    """Google's platform frames, else a generic device."""
    for uuid in service_data or ():
        if uuid in GOOGLE_SERVICES:
            return _google(_short(uuid), tx_power)
    if manufacturer_data and GOOGLE in manufacturer_data:
        return _google(None, tx_power)
    for uuid in service_uuids or ():
        if uuid in GOOGLE_SERVICES:
            return _google(_short(uuid), tx_power)
    company = next(iter(manufacturer_data), None) if manufacturer_data else None
    first_uuid = next(iter(service_data), None) if service_data else None
    if first_uuid is None and service_uuids:
        first_uuid = service_uuids[0]
    return _generic(company, _short(first_uuid) if first_uuid is not None else None, tx_power)


@lru_cache(maxsize=256)
def _short(uuid: str) -> int | None:
    """The 16-bit form of a Bluetooth-base UUID, None for other UUIDs."""
    if len(uuid) == 36 and uuid.startswith("0000") and uuid.endswith(BASE_UUID_SUFFIX):
        try:
            return int(uuid[4:8], 16)
        except ValueError:
            return None
    return None


@lru_cache(maxsize=CACHE_SIZE)
def _ibeacon(data: bytes) -> IBeacon:
    if len(data) < 23:
        raise InvalidAdvert(f"iBeacon manufacturer data of {len(data)} bytes, needs 23")
    major, minor, power = _IBEACON.unpack_from(data, 18)
    return IBeacon(UUID(bytes=data[2:18]), major, minor, power)


@lru_cache(maxsize=CACHE_SIZE)
def _altbeacon(company: int, data: bytes) -> AltBeacon:
    ref_rssi, reserved = _ALTBEACON_TAIL.unpack_from(data, 22)
    return AltBeacon(company, data[2:22], ref_rssi, reserved)


@lru_cache(maxsize=CACHE_SIZE)
def _exposure_notification(data: bytes) -> ExposureNotification:
    if len(data) != 20:
        raise InvalidAdvert(f"Exposure Notification service data of {len(data)} bytes, needs 20")
    return ExposureNotification(data[:16], data[16:])


@lru_cache(maxsize=CACHE_SIZE)
def _eddystone(data: bytes) -> Frame | None:
    """An Eddystone frame; None for a frame type Eddystone does not define (not an error)."""
    n = len(data)
    if n < 2:
        raise InvalidAdvert(f"Eddystone service data of {n} bytes, shorter than frame type and one field")
    frame_type = data[0]
    if frame_type == FRAME_EID:
        if n != 10:
            raise InvalidAdvert(f"Eddystone-EID frame of {n} bytes, needs 10")
        return EddystoneEID(data[2:], _int8(data[1]))
    if frame_type == FRAME_UID:
        if not 18 <= n <= 20:
            raise InvalidAdvert(f"Eddystone-UID frame of {n} bytes, needs 18 (or 20 with the reserved bytes)")
        return EddystoneUID(data[2:12], data[12:18], _int8(data[1]))
    if frame_type == FRAME_URL:
        return EddystoneURL(_url(data), _int8(data[1]))
    if frame_type == FRAME_TLM:
        return _telemetry(data)
    return None


def _telemetry(data: bytes) -> Frame:
    version, n = data[1], len(data)
    if version == TLM_PLAIN:
        if n != 14:
            raise InvalidAdvert(f"Eddystone-TLM frame of {n} bytes, needs 14")
        voltage, temperature, count, tenths = _TLM.unpack_from(data, 2)
        celsius = None if temperature == _TEMPERATURE_UNSUPPORTED else temperature / 256
        return EddystoneTLM(voltage, celsius, count, tenths / 10)
    if version == TLM_ENCRYPTED:
        if n != 18:
            raise InvalidAdvert(f"Eddystone encrypted TLM frame of {n} bytes, needs 18")
        return EddystoneEncryptedTLM(data[2:14], data[14:16], data[16:18])
    raise InvalidAdvert(f"Eddystone-TLM version {version}, expected 0 or 1")


def _url(data: bytes) -> str:
    n = len(data)
    if not 3 <= n <= 3 + _URL_MAX:
        raise InvalidAdvert(f"Eddystone-URL frame of {n} bytes, needs 3 to {3 + _URL_MAX}")
    scheme = data[2]
    if scheme >= len(URL_SCHEMES):
        raise InvalidAdvert(f"Eddystone-URL scheme code {scheme}, expected 0 to {len(URL_SCHEMES) - 1}")
    parts = [URL_SCHEMES[scheme]]
    for index in range(3, n):
        code = data[index]
        if code < len(URL_EXPANSIONS):
            parts.append(URL_EXPANSIONS[code])
        elif 0x20 < code < 0x7F:
            parts.append(chr(code))
        else:
            raise InvalidAdvert(f"Eddystone-URL byte {index} is 0x{code:02x}, neither printable nor an expansion code")
    return "".join(parts)


@lru_cache(maxsize=1024)
def _apple(continuity_type: int | None, tx_power: int | None) -> Apple:
    return Apple(continuity_type, tx_power)


@lru_cache(maxsize=1024)
def _google(service_uuid16: int | None, tx_power: int | None) -> Google:
    return Google(service_uuid16, tx_power)


@lru_cache(maxsize=CACHE_SIZE)
def _generic(company_id: int | None, service_uuid16: int | None, tx_power: int | None) -> Generic:
    return Generic(company_id, service_uuid16, tx_power)


def _int8(value: int) -> int:
    return value - 256 if value > 127 else value
