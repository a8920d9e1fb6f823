"""Exposure Notification identifiers (Google/Apple, cryptography specification v1.2).

Nodes only count Exposure Notification adverts; they cannot and need not resolve them. This module
exists so the published test vectors can prove that what `ble_frames` extracts as RPI and AEM is
what a phone derives from its Temporary Exposure Key, and so a simulator or a test can produce
real frames:

    RPIK = HKDF-SHA256(TEK, salt=None, info="EN-RPIK", 16 bytes)
    RPI  = AES-128(RPIK, "EN-RPI" || 6 zero bytes || ENIntervalNumber as uint32 little-endian)
    AEMK = HKDF-SHA256(TEK, salt=None, info="EN-AEMK", 16 bytes)
    AEM  = AES-128-CTR(AEMK, iv=RPI, metadata)
"""

from __future__ import annotations

import struct

from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.ciphers import Cipher, algorithms, modes
from cryptography.hazmat.primitives.kdf.hkdf import HKDF

INTERVAL_S = 600
ROLLING_PERIOD = 144          # intervals a TEK is valid for: one day
KEY_BYTES = 16
_RPI_PREFIX = b"EN-RPI" + bytes(6)
_U32_LE = struct.Struct("<I")


def en_interval_number(unix_time_s: float) -> int:
    """The 10-minute interval a Unix time falls in."""
    return int(unix_time_s // INTERVAL_S) & 0xFFFFFFFF


def _hkdf(tek: bytes, info: bytes) -> bytes:
    if len(tek) != KEY_BYTES:
        raise ValueError(f"a temporary exposure key has {KEY_BYTES} bytes, got {len(tek)}")
    return HKDF(algorithm=hashes.SHA256(), length=KEY_BYTES, salt=None, info=info).derive(tek)


def rpi_key(tek: bytes) -> bytes:
    """RPIK, the key of the day's rolling proximity identifiers."""
    return _hkdf(tek, b"EN-RPIK")


def aem_key(tek: bytes) -> bytes:
    """AEMK, the key that encrypts the advert's metadata (version, TX power)."""
    return _hkdf(tek, b"EN-AEMK")


def rolling_ids(rpik: bytes, first_interval: int, count: int = ROLLING_PERIOD) -> list[bytes]:
    """The RPIs of `count` consecutive intervals from `first_interval` (one AES context for all)."""
    encryptor = Cipher(algorithms.AES(rpik), modes.ECB()).encryptor()
    blocks = b"".join(_RPI_PREFIX + _U32_LE.pack((first_interval + i) & 0xFFFFFFFF) for i in range(count))
    out = encryptor.update(blocks) + encryptor.finalize()
    return [out[i:i + 16] for i in range(0, len(out), 16)]


def rolling_id(rpik: bytes, interval: int) -> bytes:
    """The RPI advertised during one interval."""
    return rolling_ids(rpik, interval, 1)[0]


def crypt_metadata(aemk: bytes, rpi: bytes, data: bytes) -> bytes:
    """AEM from metadata, or metadata from AEM: AES-CTR is its own inverse."""
    if len(rpi) != 16:
        raise ValueError(f"a rolling proximity identifier has 16 bytes, got {len(rpi)}")
    encryptor = Cipher(algorithms.AES(aemk), modes.CTR(rpi)).encryptor()
    return encryptor.update(data) + encryptor.finalize()

