"""App installs that opted in: consent, tokens, EID identity keys, segments and push targets.

An install exists only with explicit consent. Its bearer token is stored as a SHA-256 hash; its
identity key is kept so its rotating IDs resolve after a restart, and is deleted, with the push
target, the moment consent is withdrawn (the row stays, marked withdrawn, so decisions that
referred to it remain explainable). The registry is the offer engine's audience: it answers
"consented?" and "which segments?" at decision time, so a withdrawal takes effect at once.
"""

from __future__ import annotations

import hashlib
import json
import os
import secrets
import threading
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from edge.radio.eid import agree_identity_key
from gateway.eid_resolver import EidResolver
from gateway.store import open_db


@dataclass(frozen=True)
class Registration:
    install_id: str
    token: str = field(repr=False)
    identity_key: bytes | None = field(repr=False)  # returned only when the gateway issued it
    resolver_public_key: bytes | None = None        # returned when the key was agreed by X25519
    rotation_exponent: int = 10


CLOCK_SLACK_S = 60.0


def _hash(token: str) -> str:
    return hashlib.sha256(token.encode()).hexdigest()


class InstallRegistry:
    def __init__(self, db_path: Path, resolver: EidResolver, rotation_exponent: int = 10) -> None:
        self.db = open_db(db_path)
        self.db.execute("PRAGMA busy_timeout = 5000")
        self.db.execute("PRAGMA secure_delete = ON")  # a withdrawn install's key is overwritten, not just unlinked
        os.chmod(db_path, 0o600)  # identity keys and push targets live in this file
        self.resolver = resolver
        self.rotation_exponent = rotation_exponent
        self._lock = threading.Lock()
        self._segments: dict[str, frozenset[str]] = {}
        self._push: dict[str, dict[str, Any]] = {}
        if "installs" not in self.db.table_names():
            self.db["installs"].create(
                {"install_id": str, "token_hash": str, "identity_key": str, "rotation_exponent": int,
                 "clock_offset_s": int, "segments": str, "push": str, "consented_at": float,
                 "withdrawn_at": float, "last_visit_at": float, "visits": int},
                pk="install_id",
            )
            self.db["installs"].create_index(["token_hash"], unique=True)
        now = time.time()
        for row in self.db.query("SELECT * FROM installs WHERE withdrawn_at IS NULL"):
            self._remember(row, now)

    def _remember(self, row: dict[str, Any], now: float) -> None:
        install_id = row["install_id"]
        self._segments[install_id] = frozenset(json.loads(row["segments"] or "[]"))
        if row["push"]:
            self._push[install_id] = json.loads(row["push"])
        self.resolver.add(install_id, bytes.fromhex(row["identity_key"]), row["rotation_exponent"],
                          row["clock_offset_s"], now)

    def close(self) -> None:
        self.db.conn.close()

    def register(self, segments: list[str], beacon_public_key: bytes | None = None, beacon_time: int | None = None,
                 push: dict[str, Any] | None = None, identity_key: bytes | None = None) -> Registration:
        """A new consented install. The caller has checked that consent was given explicitly."""
        install_id = secrets.token_hex(8)
        token = secrets.token_urlsafe(32)
        resolver_public = None
        if beacon_public_key is not None:
            identity_key, resolver_public = agree_identity_key(secrets.token_bytes(32), beacon_public_key)
            issued = None
        else:
            identity_key = identity_key or secrets.token_bytes(16)
            issued = identity_key
        now = time.time()
        offset = int(now) - beacon_time if beacon_time is not None else 0
        row = {"install_id": install_id, "token_hash": _hash(token), "identity_key": identity_key.hex(),
               "rotation_exponent": self.rotation_exponent, "clock_offset_s": offset,
               "segments": json.dumps(sorted(set(segments))), "push": json.dumps(push) if push else None,
               "consented_at": now, "withdrawn_at": None}
        with self._lock:
            self.db["installs"].insert(row)
            self._remember(row, now)
        return Registration(install_id, token, issued, resolver_public, self.rotation_exponent)

    def authenticate(self, token: str) -> str | None:
        """The install a bearer token belongs to, if it still has consent."""
        with self._lock:
            row = next(self.db.query("SELECT install_id FROM installs WHERE token_hash = ? AND withdrawn_at IS NULL",
                                     [_hash(token)]), None)
        return row["install_id"] if row else None

    def withdraw(self, install_id: str) -> None:
        """Consent withdrawn: keys and push target deleted, no resolution and no push from now on."""
        with self._lock:
            self.resolver.remove(install_id)
            self._segments.pop(install_id, None)
            self._push.pop(install_id, None)
            self.db.execute("UPDATE installs SET identity_key = '', push = NULL, withdrawn_at = ? WHERE install_id = ?",
                            [time.time(), install_id])

    def arrived(self, install_id: str, at: float, new_visit_after_s: float = 4 * 3600) -> tuple[bool, float | None] | None:
        """Record an arrival in the store: (first visit ever?, days since the last visit), or None when it
        continues the current visit (back within `new_visit_after_s`)."""
        with self._lock:
            row = next(self.db.query("SELECT last_visit_at, visits FROM installs WHERE install_id = ?",
                                     [install_id]), None)
            if row is None:
                return None
            last = row["last_visit_at"]
            if last is not None and at - last < new_visit_after_s:
                self.db.execute("UPDATE installs SET last_visit_at = ? WHERE install_id = ?", [max(at, last), install_id])
                return None
            self.db.execute("UPDATE installs SET last_visit_at = ?, visits = coalesce(visits, 0) + 1"
                            " WHERE install_id = ?", [at, install_id])
        return last is None, None if last is None else (at - last) / 86400

    def set_push(self, install_id: str, push: dict[str, Any] | None) -> None:
        with self._lock:
            if install_id not in self._segments:
                return
            if push:
                self._push[install_id] = push
            else:
                self._push.pop(install_id, None)
            self.db.execute("UPDATE installs SET push = ? WHERE install_id = ?",
                            [json.dumps(push) if push else None, install_id])

    def resolve(self, eid: bytes, at: float) -> str | None:
        """`at` is clamped to this machine's clock: one node running fast must not slide every window ahead."""
        with self._lock:
            return self.resolver.resolve(eid, min(at, time.time() + CLOCK_SLACK_S))

    # --- the offer engine's audience ------------------------------------------------------------

    def consented(self, install_id: str) -> bool:
        return install_id in self._segments

    def segments(self, install_id: str) -> set[str]:
        return set(self._segments.get(install_id, ()))

    def push_target(self, install_id: str) -> dict[str, Any] | None:
        return self._push.get(install_id)
