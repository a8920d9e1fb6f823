"""Signed batches: Ed25519 over the exact gzip-compressed body bytes that go over the wire.

The store keeps its private key in a PEM file (PKCS#8, mode 0600) made by `keygen`; the cloud
holds the public half (raw 32 bytes, base64) registered for the store and verifies every batch
before it decompresses anything. The body itself names the store and the batch id, and the cloud
checks those against the URL and headers, so the signature covers them too.
"""

from __future__ import annotations

import base64
import gzip
import json
import os
from pathlib import Path
from typing import Any

from cryptography.exceptions import InvalidSignature
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric.ed25519 import (
    Ed25519PrivateKey,
    Ed25519PublicKey,
)

STORE_HEADER = "X-Omnisense-Store"
BATCH_HEADER = "X-Omnisense-Batch"
SIGNATURE_HEADER = "X-Omnisense-Signature"


class KeyFileError(Exception):
    """The key file cannot be used; str() names the file and the problem."""


def keygen(path: Path, overwrite: bool = False) -> Ed25519PrivateKey:
    """Write a new private key to `path` (0600) and return it; refuses to replace one unless `overwrite`."""
    if path.exists() and not overwrite:
        raise KeyFileError(f"{path}: a key already exists (it is the store's identity in the cloud; "
                        "pass overwrite to replace it and register the new public key)")
    key = Ed25519PrivateKey.generate()
    pem = key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8,
                            serialization.NoEncryption())
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_suffix(path.suffix + ".tmp")
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    with os.fdopen(fd, "wb") as f:
        f.write(pem)
        f.flush()
        os.fsync(f.fileno())
    os.replace(tmp, path)
    return key


def load_private_key(path: Path, create: bool = False) -> Ed25519PrivateKey:
    if not path.exists():
        if create:
            return keygen(path)
        raise KeyFileError(f"{path}: no store key; create one with `omnisense upload keygen`")
    try:
        key = serialization.load_pem_private_key(path.read_bytes(), password=None)
    except (ValueError, TypeError) as err:
        raise KeyFileError(f"{path}: not an unencrypted PEM private key: {err}") from None
    if not isinstance(key, Ed25519PrivateKey):
        raise KeyFileError(f"{path}: expected an Ed25519 key, got {type(key).__name__}")
    return key


def public_key_b64(key: Ed25519PrivateKey) -> str:
    """The public half as base64 of the raw 32 bytes: what `PUT /v1/stores/{id}` takes."""
    raw = key.public_key().public_bytes(serialization.Encoding.Raw, serialization.PublicFormat.Raw)
    return base64.b64encode(raw).decode()


def encode_body(document: dict[str, Any]) -> bytes:
    """Canonical JSON, gzip-compressed with a fixed mtime, so the same document gives the same bytes."""
    text = json.dumps(document, sort_keys=True, separators=(",", ":"), allow_nan=False)
    return gzip.compress(text.encode(), compresslevel=6, mtime=0)


def sign(key: Ed25519PrivateKey, body: bytes) -> str:
    return base64.b64encode(key.sign(body)).decode()


def headers(key: Ed25519PrivateKey, store_id: str, batch_id: str, body: bytes) -> dict[str, str]:
    return {STORE_HEADER: store_id, BATCH_HEADER: batch_id, SIGNATURE_HEADER: sign(key, body),
            "Content-Type": "application/json", "Content-Encoding": "gzip"}


def verify(public_key_b64_: str, body: bytes, signature_b64: str) -> str | None:
    """None when `signature_b64` is the store's signature of `body`; otherwise the reason it is not."""
    try:
        public = Ed25519PublicKey.from_public_bytes(base64.b64decode(public_key_b64_, validate=True))
    except ValueError:
        return "the store's registered public key is not a valid Ed25519 key"
    try:
        signature = base64.b64decode(signature_b64, validate=True)
    except ValueError:
        return f"{SIGNATURE_HEADER} is not base64"
    try:
        public.verify(signature, body)
    except InvalidSignature:
        return "the signature does not match the body and the store's registered public key"
    return None
