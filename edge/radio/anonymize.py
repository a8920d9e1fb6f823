"""Pseudonyms for radio devices: HMAC-SHA256 under the store's daily salt, truncated.

The salt comes from the gateway in the node's retained config and is held only in this object's
memory: never logged, never written, not in its repr. One device gets the same pseudonym on every
node of the store during a day (they share the salt) and an unrelated one the next day (new
salt). Without the salt nobody can test whether a pseudonym belongs to a given MAC address, as a
plain hash would allow: the space of MAC addresses is small enough to enumerate.
"""

from __future__ import annotations

import datetime as dt
import hashlib
import hmac

PSEUDONYM_BYTES = 8  # 64 bits: collisions stay negligible for the thousands of devices a store sees in a day


class Pseudonymizer:
    """Holds the current daily salt; the gateway decides when a day starts and sends the next one."""

    def __init__(self) -> None:
        self._salt: bytes | None = None
        self.day: dt.date | None = None

    def __repr__(self) -> str:
        return f"Pseudonymizer(day={self.day})"

    def set_salt(self, day: dt.date, salt: bytes) -> None:
        if len(salt) < 16:
            raise ValueError(f"a daily salt must have at least 16 bytes, got {len(salt)}")
        self._salt, self.day = bytes(salt), day

    @property
    def ready(self) -> bool:
        return self._salt is not None

    def pseudonym(self, domain: bytes, identifier: bytes) -> str:
        """Hex pseudonym of `identifier`; `domain` keeps equal bytes of different kinds apart."""
        if self._salt is None:
            raise RuntimeError("no daily salt yet: hold the sighting until the gateway's config arrives")
        digest = hmac.new(self._salt, domain + b"\x00" + identifier, hashlib.sha256).digest()
        return digest[:PSEUDONYM_BYTES].hex()
