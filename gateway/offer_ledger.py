"""The offer engine's `Ledger` in the gateway's SQLite file: every decision with its reason, and redemptions.

One transaction per event (the event is seen if and only if its decisions are stored), so caps,
cooldowns and de-duplication survive a restart. The `offer_decisions` table is also the record a
marketer or a regulator reads: what was sent to whom and why, and what was held back and why.
"""

from __future__ import annotations

import json
import threading
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from gateway.campaigns import Offer
from gateway.offers import Decision, Reason
from gateway.store import open_db


class SqliteLedger:
    def __init__(self, db_path: Path) -> None:
        self.db = open_db(db_path)
        self.db.execute("PRAGMA busy_timeout = 5000")
        self._conn = self.db.conn
        self._lock = threading.Lock()
        names = self.db.table_names()
        if "offer_events" not in names:
            self.db["offer_events"].create({"event_id": str, "at": float}, pk="event_id")
        if "offer_decisions" not in names:
            self.db["offer_decisions"].create(
                {"decision_id": str, "event_id": str, "campaign_id": str, "install_id": str, "at": float,
                 "outcome": str, "reason": str, "offer": str, "delivered": str, "redeemed_at": float},
                pk="decision_id",
            )
            self.db["offer_decisions"].create_index(["install_id", "outcome", "at"])
            self.db["offer_decisions"].create_index(["campaign_id", "outcome"])
            self.db["offer_decisions"].create_index(["event_id"])
            self.db["offer_decisions"].create_index(["outcome", "at"])

    def close(self) -> None:
        self.db.conn.close()

    def _one(self, sql: str, params: Sequence[Any]) -> Any:
        with self._lock:
            row = self._conn.execute(sql, params).fetchone()
        return row[0] if row else None

    def seen(self, event_id: str) -> bool:
        return self._one("SELECT 1 FROM offer_events WHERE event_id = ?", [event_id]) is not None

    def decisions_for(self, event_id: str) -> list[Decision]:
        with self._lock:
            rows = self._conn.execute(
                "SELECT decision_id, event_id, campaign_id, install_id, at, outcome, reason, offer"
                " FROM offer_decisions WHERE event_id = ?", [event_id]).fetchall()
        return [Decision(decision_id=r[0], event_id=r[1], campaign_id=r[2], install_id=r[3], at=r[4], outcome=r[5],
                         reason=Reason(r[6]), offer=Offer.model_validate_json(r[7]) if r[7] else None) for r in rows]

    def record(self, event_id: str, at: float, decisions: Sequence[Decision]) -> None:
        with self._lock:
            conn = self._conn
            conn.execute("BEGIN IMMEDIATE")
            try:
                conn.execute("INSERT INTO offer_events (event_id, at) VALUES (?, ?)", [event_id, at])
                conn.executemany(
                    "INSERT INTO offer_decisions (decision_id, event_id, campaign_id, install_id, at, outcome, reason,"
                    " offer) VALUES (?, ?, ?, ?, ?, ?, ?, ?)",
                    [(d.decision_id, d.event_id, d.campaign_id, d.install_id, d.at, d.outcome, str(d.reason),
                      d.offer.model_dump_json() if d.offer else None) for d in decisions])
                conn.execute("COMMIT")
            except BaseException:
                conn.execute("ROLLBACK")
                raise

    def count_sent(self, install_id: str, campaign_id: str | None, since: float) -> int:
        if campaign_id is None:
            return self._one("SELECT count(*) FROM offer_decisions WHERE install_id = ? AND outcome = 'sent'"
                             " AND at >= ?", [install_id, since])
        return self._one("SELECT count(*) FROM offer_decisions WHERE install_id = ? AND outcome = 'sent'"
                         " AND at >= ? AND campaign_id = ?", [install_id, since, campaign_id])

    def last_sent(self, install_id: str, campaign_id: str | None) -> float | None:
        if campaign_id is None:
            return self._one("SELECT max(at) FROM offer_decisions WHERE install_id = ? AND outcome = 'sent'",
                             [install_id])
        return self._one("SELECT max(at) FROM offer_decisions WHERE install_id = ? AND outcome = 'sent'"
                         " AND campaign_id = ?", [install_id, campaign_id])

    def count_sent_store(self, since: float) -> int:
        return self._one("SELECT count(*) FROM offer_decisions WHERE outcome = 'sent' AND at >= ?", [since])

    def count_sent_campaign(self, campaign_id: str) -> int:
        return self._one("SELECT count(*) FROM offer_decisions WHERE outcome = 'sent' AND campaign_id = ?",
                         [campaign_id])

    # --- beyond the engine's protocol -------------------------------------------------------------

    def delivered(self, decision_id: str, via: list[str]) -> None:
        with self._lock:
            self._conn.execute("UPDATE offer_decisions SET delivered = ? WHERE decision_id = ?",
                               [json.dumps(via), decision_id])

    def redeem(self, install_id: str, decision_id: str) -> float | None:
        """Mark a sent offer redeemed (once; a repeat returns the first time); None if it was not sent to this install."""
        with self._lock:
            row = self._conn.execute("SELECT redeemed_at FROM offer_decisions WHERE decision_id = ? AND install_id = ?"
                                     " AND outcome = 'sent'", [decision_id, install_id]).fetchone()
            if row is None:
                return None
            if row[0] is not None:
                return float(row[0])
            now = time.time()
            self._conn.execute("UPDATE offer_decisions SET redeemed_at = ? WHERE decision_id = ?", [now, decision_id])
            return now
