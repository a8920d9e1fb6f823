"""Rotating identifiers against their published test vectors: Exposure Notification (all 144 RPIs and
AEMs of one TEK), BLE resolvable private addresses (through bluetooth-data-tools), and the
Eddystone-EID key exchange. The EID values themselves are checked in test_sim_model.py."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest
from bluetooth_data_tools import get_cipher_for_irk, resolve_private_address
from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.asymmetric.x25519 import (
    X25519PrivateKey,
    X25519PublicKey,
)
from cryptography.hazmat.primitives.kdf.hkdf import HKDF
from cryptography.hazmat.primitives.serialization import Encoding, PublicFormat

from edge.radio import gaen
from edge.radio.ble_frames import (
    EXPOSURE_NOTIFICATION_UUID,
    EddystoneEID,
    ExposureNotification,
    decode,
)
from edge.radio.eid import EDDYSTONE_UUID, eid_frame, ephemeral_id

PRIVACY = Path(__file__).parent / "data" / "radio" / "privacy"
GAEN: dict[str, Any] = json.loads((PRIVACY / "gaen_exposure_notification_test_vectors.json").read_text())
RPA: dict[str, Any] = json.loads((PRIVACY / "ble_rpa_irk_vectors.json").read_text())
EID: dict[str, Any] = json.loads((PRIVACY / "eddystone_eid_vectors.json").read_text())


def test_exposure_notification_keys_from_the_tek() -> None:
    tek = bytes.fromhex(GAEN["tek"])
    assert gaen.rpi_key(tek).hex() == GAEN["rpik"]
    assert gaen.aem_key(tek).hex() == GAEN["aemk"]
    assert gaen.en_interval_number(GAEN["key_generation_unix_time"]) == GAEN["first_en_interval_number"]


def test_all_144_rolling_identifiers_and_metadata() -> None:
    tek = bytes.fromhex(GAEN["tek"])
    rpik, aemk = gaen.rpi_key(tek), gaen.aem_key(tek)
    metadata = bytes.fromhex(GAEN["ble_metadata"])
    advertised = GAEN["advertised"]
    assert len(advertised) == gaen.ROLLING_PERIOD == 144
    rpis = gaen.rolling_ids(rpik, GAEN["first_en_interval_number"])
    for rpi, vector in zip(rpis, advertised, strict=True):
        assert rpi == gaen.rolling_id(rpik, vector["en_interval_number"])
        assert rpi.hex() == vector["rpi"]
        aem = gaen.crypt_metadata(aemk, rpi, metadata)
        assert aem.hex() == vector["aem"]
        assert gaen.crypt_metadata(aemk, rpi, aem) == metadata
        frame = decode({}, {EXPOSURE_NOTIFICATION_UUID: rpi + aem}, [EXPOSURE_NOTIFICATION_UUID])
        assert frame == ExposureNotification(rpi, aem)


def test_exposure_notification_inputs_are_checked() -> None:
    with pytest.raises(ValueError, match="16 bytes"):
        gaen.rpi_key(b"short")
    with pytest.raises(ValueError, match="16 bytes"):
        gaen.crypt_metadata(bytes(16), bytes(8), bytes(4))


@pytest.mark.parametrize("vector", RPA["vectors"], ids=[f"{v['irk'][:6]}-{v['resolves']}-{i}"
                                                        for i, v in enumerate(RPA["vectors"])])
def test_resolvable_private_addresses(vector: dict[str, Any]) -> None:
    irk = bytes.fromhex(vector["irk"])
    assert resolve_private_address(get_cipher_for_irk(irk), vector["address"]) is vector["resolves"]


def test_an_irk_in_the_wrong_byte_order_resolves_nothing() -> None:
    """The vectors' note: some stacks export IRKs little-endian; importing one needs reversing."""
    resolving = [v for v in RPA["vectors"] if v["resolves"] and v["irk"] != "00" * 16]
    assert len(resolving) == 4
    for vector in resolving:
        reversed_irk = bytes.fromhex(vector["irk"])[::-1]
        assert not resolve_private_address(get_cipher_for_irk(reversed_irk), vector["address"])


def test_eddystone_eid_key_exchange() -> None:
    """X25519 between beacon (the app) and resolver (the gateway), then HKDF: the identity key."""
    kx = EID["key_exchange_vector"]
    resolver = X25519PrivateKey.from_private_bytes(bytes.fromhex(kx["resolver_private"]))
    beacon = X25519PrivateKey.from_private_bytes(bytes.fromhex(kx["beacon_private"]))
    raw = Encoding.Raw, PublicFormat.Raw
    assert resolver.public_key().public_bytes(*raw).hex() == kx["resolver_public"]
    assert beacon.public_key().public_bytes(*raw).hex() == kx["beacon_public"]
    shared = beacon.exchange(X25519PublicKey.from_public_bytes(bytes.fromhex(kx["resolver_public"])))
    assert shared == resolver.exchange(beacon.public_key())
    assert shared.hex() == kx["shared_secret"]
    salt = bytes.fromhex(kx["resolver_public"] + kx["beacon_public"])
    identity_key = HKDF(algorithm=hashes.SHA256(), length=32, salt=salt, info=b"").derive(shared)[:16]
    assert identity_key.hex() == kx["identity_key"]


@pytest.mark.parametrize("vector", EID["eid_vectors"], ids=lambda v: f"t{v['beacon_time']}")
def test_eid_frames_decode_to_the_vector_ids(vector: dict[str, Any]) -> None:
    eid = ephemeral_id(bytes.fromhex(vector["identity_key"]), vector["K"], vector["beacon_time"])
    frame = decode({}, {EDDYSTONE_UUID: eid_frame(eid, -20)}, [EDDYSTONE_UUID])
    assert frame == EddystoneEID(bytes.fromhex(vector["eid"]), -20)


def test_the_gateway_side_of_the_eid_key_exchange_reproduces_the_vector():
    from edge.radio.eid import agree_identity_key

    kx = json.loads((PRIVACY / "eddystone_eid_vectors.json").read_text())["key_exchange_vector"]
    key, resolver_public = agree_identity_key(bytes.fromhex(kx["resolver_private"]), bytes.fromhex(kx["beacon_public"]))
    assert key.hex() == kx["identity_key"] and resolver_public.hex() == kx["resolver_public"]
