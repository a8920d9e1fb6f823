"""The app's rotating ephemeral ID, computed as Eddystone-EID does (AES-128, a new ID every 2^K s).

Pure, with no radio in it: the simulated app computes it to advertise, and the gateway computes it
to resolve an advertised ID back to an app install that opted in. Only holders of the identity key
can link two IDs of the same phone; a node just forwards what it heard.
"""

from __future__ import annotations

import struct

from cryptography.hazmat.primitives.ciphers import Cipher, algorithms, modes

EDDYSTONE_UUID = "0000feaa-0000-1000-8000-00805f9b34fb"
FRAME_EID = 0x30


def _aes_block(key: bytes, block: bytes) -> bytes:
    encryptor = Cipher(algorithms.AES(key), modes.ECB()).encryptor()
    return encryptor.update(block) + encryptor.finalize()


def ephemeral_id(identity_key: bytes, rotation_exponent: int, beacon_time: int) -> bytes:
    """The 8-byte EID a beacon with this identity key advertises at `beacon_time` (its own seconds counter)."""
    if len(identity_key) != 16:
        raise ValueError(f"identity key must be 16 bytes, got {len(identity_key)}")
    if not 0 <= rotation_exponent <= 15:
        raise ValueError(f"rotation exponent K must be 0..15, got {rotation_exponent}")
    t = beacon_time & 0xFFFFFFFF
    temporary_key = _aes_block(identity_key, bytes(11) + b"\xff\x00\x00" + struct.pack(">H", t >> 16))
    quantum = t & ~((1 << rotation_exponent) - 1) & 0xFFFFFFFF
    return _aes_block(temporary_key, bytes(11) + bytes([rotation_exponent]) + struct.pack(">I", quantum))[:8]


def eid_frame(eid: bytes, tx_power_0m: int = -20) -> bytes:
    """Service data for UUID 0xFEAA: frame type 0x30, calibrated tx power at 0 m, the 8-byte EID."""
    return bytes([FRAME_EID, tx_power_0m & 0xFF]) + eid


def agree_identity_key(resolver_private: bytes, beacon_public: bytes) -> tuple[bytes, bytes]:
    """Eddystone-EID registration from the resolver's side: (identity key, resolver public key).

    X25519 between the resolver (the gateway) and the beacon (the app), then HKDF-SHA256 with
    salt = resolver public key || beacon public key, first 16 bytes. The app derives the same key
    from the resolver's public key; the key itself never travels.
    """
    from cryptography.hazmat.primitives import hashes
    from cryptography.hazmat.primitives.asymmetric.x25519 import (
        X25519PrivateKey,
        X25519PublicKey,
    )
    from cryptography.hazmat.primitives.kdf.hkdf import HKDF

    if len(beacon_public) != 32:
        raise ValueError(f"an X25519 public key has 32 bytes, got {len(beacon_public)}")
    private = X25519PrivateKey.from_private_bytes(resolver_private)
    resolver_public = private.public_key().public_bytes_raw()
    shared = private.exchange(X25519PublicKey.from_public_bytes(beacon_public))
    key = HKDF(algorithm=hashes.SHA256(), length=32, salt=resolver_public + beacon_public, info=b"").derive(shared)
    return key[:16], resolver_public
