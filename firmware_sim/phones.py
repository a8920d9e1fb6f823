"""Phones and store devices: what each one transmits over BLE and Wi-Fi, and under which address.

- App phones (with consent) advertise the app's Eddystone-EID-style rotating ID.
- Other phones advertise platform frames (Apple Continuity, Google Nearby) from a random
  resolvable-looking address that changes about every 15 minutes.
- Phones probe for Wi-Fi in bursts over channels 1, 6 and 11. Most use a random, locally
  administered MAC that changes every few minutes; the sequence number runs on across changes and
  the information elements stay those of the phone model, which is what estimators exploit.
- Store devices (printer, till, staff phone, tablet) stand still all day with fixed addresses.

Addresses are derived by hashing (seed, device, rotation epoch), so they need no state and a seed
reproduces them exactly.
"""

from __future__ import annotations

import functools
import hashlib
from dataclasses import dataclass

import numpy as np

from edge.radio.eid import EDDYSTONE_UUID, eid_frame, ephemeral_id
from firmware_sim.dot11 import ProbeFingerprint
from firmware_sim.plan import FixedDevice, StorePlan
from firmware_sim.shoppers import Track, Visitor

APPLE, GOOGLE_NEARBY_UUID, HP, SAMSUNG = 0x004C, "0000fef3-0000-1000-8000-00805f9b34fb", 0x0065, 0x0075
WIFI_CHANNELS = (1, 6, 11)

# Phone models by their probe-request fingerprint (information elements differ between chipsets).
FINGERPRINTS: dict[str, ProbeFingerprint] = {
    "ios-a": ProbeFingerprint(ht_capabilities=b"\x2d\x40\x17\xff\xff\x00" + bytes(20),
                              ext_capabilities=b"\x04\x00\x0a\x02\x01\x40\x40\x40\x00\x01\x20",
                              vendor=(b"\x00\x17\xf2\x0a\x00\x01\x04\x00\x00\x00\x00",)),
    "ios-b": ProbeFingerprint(ht_capabilities=b"\x63\x00\x17\xff\xff\x00" + bytes(20),
                              ext_capabilities=b"\x04\x00\x0a\x02\x01\x40\x40\x40\x00\x01\x20",
                              vendor=(b"\x00\x17\xf2\x0a\x00\x01\x04\x00\x00\x00\x00",)),
    "android-qc": ProbeFingerprint(ht_capabilities=b"\xef\x01\x1b\xff\xff\x00" + bytes(20),
                                   ext_capabilities=b"\x00\x00\x0a\x02\x00\x00\x00\x40\x80\x00\x01",
                                   vendor=(b"\x00\x50\xf2\x08\x00\x12\x00",)),
    "android-bcm": ProbeFingerprint(rates=b"\x82\x84\x8b\x96", ht_capabilities=b"\x21\x01\x17\xff\x00\x00" + bytes(20),
                                    ext_capabilities=b"\x00\x00\x08\x00\x00\x00\x00\x40",
                                    vendor=(b"\x00\x10\x18\x02\x00\x00\x1c\x00\x00",)),
    "android-mtk": ProbeFingerprint(ht_capabilities=b"\x2c\x01\x03\xff\x00\x00" + bytes(20),
                                    ext_capabilities=None, vendor=()),
    "printer": ProbeFingerprint(ht_capabilities=None, ext_capabilities=None,
                                vendor=(b"\x00\x50\xf2\x04\x10\x4a\x00\x01\x10",)),
}
GLOBAL_OUIS = (b"\x3c\x22\xfb", b"\xf0\x18\x98", b"\x8c\x85\x90", b"\x00\x1a\x11", b"\xdc\xfb\x48")


@dataclass
class Phone:
    index: int                   # transmitter index for the radio channel
    label: str                   # visitor id or store device name, for the ground truth
    visitor_id: int | None
    platform: str                # ios, android, printer, till, tablet
    track: Track
    has_app: bool
    identity_key: bytes | None
    beacon_offset: int           # beacon clock = epoch seconds - offset
    randomized: bool
    global_mac: bytes
    fingerprint: ProbeFingerprint
    mac_lifetime_s: float
    ble: bool = True
    wifi: bool = True
    seq: int = 0

    def ble_address(self, when: float, seed: int, rotation_s: float) -> str:
        if self.platform in ("printer", "till", "tablet"):
            return mac_text(self.global_mac)
        return _private_address(seed, self.index, int((when + self._ble_phase) // rotation_s))

    def wifi_mac(self, when: float, seed: int) -> bytes:
        if not self.randomized:
            return self.global_mac
        epoch = int((when + self._wifi_phase) // self.mac_lifetime_s)
        raw = bytearray(_digest(seed, "wifi", self.index, epoch)[:6])
        raw[0] = (raw[0] & 0xFC) | 0x02  # locally administered, unicast
        return bytes(raw)

    def addresses(self, t0: float, t1: float, seed: int, rotation_s: float) -> set[bytes]:
        """Every address this phone can put on air in [t0, t1]: its global MAC and its BLE and Wi-Fi
        address in each rotation period the interval touches, whether or not it transmitted then."""
        found = {self.global_mac}
        if self.ble:
            found |= {bytes.fromhex(self.ble_address(t, seed, rotation_s).replace(":", ""))
                      for t in _one_time_per_period(t0, t1, rotation_s, self._ble_phase)}
        if self.wifi:
            found |= {self.wifi_mac(t, seed) for t in _one_time_per_period(t0, t1, self.mac_lifetime_s, self._wifi_phase)}
        return found

    @property
    def _ble_phase(self) -> float:  # phones rotate their addresses out of step with each other
        return self.index * 97.0

    @property
    def _wifi_phase(self) -> float:
        return self.index * 31.0

    def eid(self, when: float, rotation_exponent: int) -> bytes:
        assert self.identity_key is not None
        return ephemeral_id(self.identity_key, rotation_exponent, int(when) - self.beacon_offset)


def _one_time_per_period(t0: float, t1: float, period: float, offset: float) -> list[float]:
    """A time in the middle of each period of `(t + offset) // period` that [t0, t1] touches."""
    first, last = int((t0 + offset) // period), int((t1 + offset) // period)
    return [(k + 0.5) * period - offset for k in range(first, last + 1)]


@functools.lru_cache(maxsize=1 << 14)
def _digest(seed: int, *parts: object) -> bytes:
    """Deterministic bytes for a phone's secrets and addresses. Cached: a phone sends hundreds of adverts
    with the digest of one rotation period."""
    return hashlib.blake2b(repr((seed, *parts)).encode(), digest_size=16).digest()


@functools.lru_cache(maxsize=1 << 14)
def _private_address(seed: int, phone: int, epoch: int) -> str:
    raw = bytearray(_digest(seed, "ble", phone, epoch)[:6])
    raw[0] = (raw[0] & 0x3F) | 0x40  # resolvable private address
    return mac_text(bytes(raw))


def mac_text(raw: bytes) -> str:
    """An address as radios print it: upper-case hex pairs joined by colons."""
    return ":".join(f"{b:02X}" for b in raw)


def identity_key(seed: int, visitor_id: int) -> bytes:
    """The app install's identity key (in the real system agreed by X25519 at registration)."""
    return _digest(seed, "ik", visitor_id)


def build_phones(plan: StorePlan, visitors: list[Visitor], seed: int, day_start: float, day_end: float) -> list[Phone]:
    rng = np.random.default_rng(seed + 7)
    mix = plan.phones
    phones: list[Phone] = []
    for visitor in visitors:
        if not visitor.has_phone:
            continue
        ios = rng.random() < 0.55
        model = str(rng.choice(["ios-a", "ios-b"] if ios else ["android-qc", "android-bcm", "android-mtk"]))
        index = len(phones)
        phones.append(Phone(
            index=index, label=f"visitor-{visitor.visitor_id}", visitor_id=visitor.visitor_id,
            platform="ios" if ios else "android", track=visitor.track, has_app=visitor.has_app,
            identity_key=identity_key(seed, visitor.visitor_id) if visitor.has_app else None,
            beacon_offset=int(rng.integers(0, 2**20)), randomized=bool(rng.random() < mix.randomized_mac_share),
            global_mac=GLOBAL_OUIS[int(rng.integers(0, 4))] + _digest(seed, "mac", index)[:3],
            fingerprint=FINGERPRINTS[model], mac_lifetime_s=float(rng.uniform(*mix.mac_rotation_s)),
            seq=int.from_bytes(_digest(seed, "seq", index)[:2], "big") & 0xFFF,  # phones' counters start anywhere
        ))
    for device in plan.fixed_devices:
        phones.append(_fixed(device, len(phones), seed, day_start, day_end))
    return phones


def _fixed(device: FixedDevice, index: int, seed: int, start: float, end: float) -> Phone:
    x, y = device.position
    track = Track(np.array([start, end]), np.array([x, x]), np.array([y, y]))
    platform = "android" if device.kind == "staff_phone" else device.kind
    oui = b"\xdc\xfb\x48" if device.kind in ("till", "tablet") else b"\x40\xec\x99"
    return Phone(index=index, label=device.name, visitor_id=None, platform=platform, track=track, has_app=False,
                 identity_key=None, beacon_offset=0, randomized=False, global_mac=oui + _digest(seed, device.name)[:3],
                 fingerprint=FINGERPRINTS["printer" if device.kind == "printer" else "android-qc"],
                 mac_lifetime_s=1e9, ble=device.ble, wifi=device.wifi)


@dataclass(frozen=True)
class Advert:
    """One BLE advertisement as a scanner's detection callback receives it (before bleak's types)."""

    when: float
    address: str
    local_name: str | None
    manufacturer_data: dict[int, bytes]
    service_data: dict[str, bytes]
    service_uuids: list[str]
    tx_power: int | None


def advert(phone: Phone, when: float, seed: int, plan: StorePlan, counter: int) -> Advert:
    address = phone.ble_address(when, seed, plan.phones.ble_address_rotation_s)
    if phone.has_app and counter % 2 == 0:
        eid = phone.eid(when, plan.phones.eid_rotation_exponent)
        return Advert(when, address, None, {}, {EDDYSTONE_UUID: eid_frame(eid)}, [EDDYSTONE_UUID], None)
    if phone.platform == "ios":
        nearby = bytes([0x10, 0x05, 0x01 + (counter % 3), 0x1C]) + _digest(seed, "nb", phone.index)[:3]
        return Advert(when, address, None, {APPLE: nearby}, {}, [], None)
    if phone.platform == "android":
        return Advert(when, address, None, {}, {GOOGLE_NEARBY_UUID: _digest(seed, "gn", phone.index, int(when) // 600)[:10]},
                      [GOOGLE_NEARBY_UUID], None)
    if phone.platform == "printer":
        return Advert(when, address, f"HP-Printer-{phone.global_mac[-1]:02X}", {HP: b"\x02\x15\x00\x01"}, {}, [], -8)
    return Advert(when, address, f"Galaxy Tab {phone.index}", {SAMSUNG: b"\x01\x00\x02\x00\x01"}, {}, [], None)


def probe_burst(phone: Phone, when: float, seed: int, rng: np.random.Generator) -> list[tuple[float, int, bytes, int]]:
    """(time, channel, source MAC, sequence number) for each probe request of one scan."""
    frames = []
    source = phone.wifi_mac(when, seed)
    per_channel = 1 + int(rng.integers(0, 2))
    for c, channel in enumerate(WIFI_CHANNELS):
        for j in range(per_channel):
            phone.seq = (phone.seq + 1) & 0xFFF
            frames.append((when + 0.035 * c + 0.004 * j, channel, source, phone.seq))
    return frames


def probe_ssid(phone: Phone) -> bytes:
    return b"StoreGuest" if phone.platform in ("printer", "till") else b""

