"""Claim tokens: short-lived, single-use, per store, swapped by a node for its own identity.

A token reads `{store_id}.{secret}`, so a gateway can tell a token of another store from a mistyped
one and say which. Only the SHA-256 of a token is stored; redeeming is one conditional UPDATE, so
two nodes racing with the same token cannot both win.
"""

from __future__ import annotations

import hashlib
import secrets
import threading
import time
from dataclasses import dataclass
from pathlib import Path
from urllib.parse import urlencode

from gateway.store import open_db

CLAIM_SCHEME = "omnisense://claim"


class ClaimRefused(Exception):
    """A claim that cannot be honoured; `code` is for programs, the message for the installer."""

    def __init__(self, code: str, reason: str) -> None:
        super().__init__(reason)
        self.code = code
        self.reason = reason


@dataclass(frozen=True)
class IssuedClaim:
    token: str
    expires_at: float
    node_id: str | None
    zone: str | None


@dataclass(frozen=True)
class Grant:
    """What a redeemed token was issued for."""

    node_id: str | None
    zone: str | None


def claim_code(token: str, store_id: str, gateway_url: str, ca_fingerprint: str) -> str:
    """The text and QR content an installer hands a node: where to go, whom to trust, what to show."""
    return f"{CLAIM_SCHEME}?" + urlencode({"gw": gateway_url, "store": store_id, "ca": ca_fingerprint, "t": token})


def _digest(token: str) -> str:
    return hashlib.sha256(token.encode()).hexdigest()


class ClaimTokens:
    def __init__(self, db_path: Path, store_id: str) -> None:
        self.store_id = store_id
        self._lock = threading.Lock()
        self.db = open_db(db_path)
        self.db.execute("PRAGMA busy_timeout = 5000")
        if "claim_tokens" not in self.db.table_names():
            self.db["claim_tokens"].create(
                {"digest": str, "node_id": str, "zone": str, "created_at": float, "expires_at": float,
                 "used_at": float, "used_by": str},
                pk="digest", not_null={"created_at", "expires_at"},
            )

    def issue(self, ttl_s: float, node_id: str | None = None, zone: str | None = None) -> IssuedClaim:
        token = f"{self.store_id}.{secrets.token_urlsafe(24)}"
        now = time.time()
        with self._lock:
            self.db["claim_tokens"].insert({"digest": _digest(token), "node_id": node_id, "zone": zone,
                                            "created_at": now, "expires_at": now + ttl_s})
        return IssuedClaim(token, now + ttl_s, node_id, zone)

    def redeem(self, token: str, hardware_id: str, now: float | None = None) -> Grant:
        """Spend the token for `hardware_id`, or raise ClaimRefused saying why not."""
        now = time.time() if now is None else now
        store, dot, _ = token.partition(".")
        if not dot:
            raise ClaimRefused("malformed", "this is not a claim token: expected STORE.SECRET")
        if store != self.store_id:
            raise ClaimRefused("foreign_store", f"this claim token was issued by store {store!r}; "
                                                f"this gateway is store {self.store_id!r}")
        digest = _digest(token)
        with self._lock:
            spent = self.db.execute(
                "UPDATE claim_tokens SET used_at = ?, used_by = ? WHERE digest = ? AND used_at IS NULL"
                " AND expires_at > ?", [now, hardware_id, digest, now]).rowcount
            row = next(self.db["claim_tokens"].rows_where("digest = ?", [digest]), None)
        if row is None:
            raise ClaimRefused("unknown", f"store {self.store_id!r} never issued this claim token (mistyped?)")
        if not spent and row["used_at"] is not None:
            when = time.strftime("%Y-%m-%d %H:%M:%S", time.localtime(row["used_at"]))
            raise ClaimRefused("used", f"this claim token was already used at {when}; issue a new one")
        if not spent:
            raise ClaimRefused("expired", f"this claim token expired {now - row['expires_at']:.0f} s ago; "
                                          "issue a new one")
        return Grant(row["node_id"], row["zone"])

    def close(self) -> None:
        with self._lock:
            self.db.conn.close()
