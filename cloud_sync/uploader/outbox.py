"""The uploader's durable outbox: items wait in SQLite until the cloud has acknowledged their batch.

One SQLite file (WAL, `synchronous=FULL`: an acknowledgement or a formed batch is on disk before
we act on it). Three tables:

* `items` - one row per upload item: `kind` (footfall_hour / zone_hour / app_visit), its natural
  `key` (e.g. the hour start, or zone and hour), the JSON `payload`, and the `batch_id` it was
  put in (NULL while pending). A partial unique index on (kind, key) among the pending rows makes
  re-enqueueing the same item replace its pending version; an item already in a batch is left
  alone (the batch is immutable) and the new version waits for the next batch.
* `batches` - a batch is formed and committed (id, exact gzip body, item count) BEFORE it is
  sent. A crash mid-send therefore resends the very same bytes under the same batch id, which the
  cloud recognises as a duplicate: nothing is applied twice. States: `pending` -> `acked` (items
  deleted, row kept `keep_acked_days` for audit), `poison` (rejected by the cloud as invalid;
  items kept, error recorded, never retried automatically) or `split` (refused as too large, HTTP
  413: its items were shared out to two new pending batches of half the size each, in the same
  transaction; the row is kept for audit).
* `meta` - the export watermark (the first hour not yet enqueued) and counters.

Enqueueing a range and advancing the watermark happen in one transaction, so an hour is enqueued
exactly once however the process is stopped.
"""

from __future__ import annotations

import json
import sqlite3
import time
import uuid
from collections.abc import Callable, Iterable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

KINDS = ("footfall_hour", "zone_hour", "app_visit")
SECTIONS = {"footfall_hour": "footfall_hours", "zone_hour": "zone_hours", "app_visit": "app_visits"}


@dataclass(frozen=True, slots=True)
class Item:
    kind: str
    key: str
    payload: dict[str, Any]


@dataclass(frozen=True, slots=True)
class Batch:
    batch_id: str
    body: bytes
    items: int
    attempts: int


class UploadOutbox:
    def __init__(self, path: Path) -> None:
        path.parent.mkdir(parents=True, exist_ok=True)
        self.path = path
        self._db = sqlite3.connect(path, isolation_level=None, check_same_thread=False)
        self._db.execute("PRAGMA journal_mode=WAL")
        self._db.execute("PRAGMA synchronous=FULL")
        self._db.execute("PRAGMA busy_timeout=5000")
        self._db.executescript(
            """
            CREATE TABLE IF NOT EXISTS items (
                id INTEGER PRIMARY KEY, kind TEXT NOT NULL, key TEXT NOT NULL, payload TEXT NOT NULL,
                enqueued_at REAL NOT NULL, batch_id TEXT);
            CREATE UNIQUE INDEX IF NOT EXISTS items_pending ON items (kind, key) WHERE batch_id IS NULL;
            CREATE INDEX IF NOT EXISTS items_batch ON items (batch_id);
            CREATE TABLE IF NOT EXISTS batches (
                batch_id TEXT PRIMARY KEY, created_at REAL NOT NULL, body BLOB NOT NULL, items INTEGER NOT NULL,
                state TEXT NOT NULL DEFAULT 'pending', attempts INTEGER NOT NULL DEFAULT 0,
                last_error TEXT, acked_at REAL);
            CREATE INDEX IF NOT EXISTS batches_state ON batches (state, created_at);
            CREATE TABLE IF NOT EXISTS meta (name TEXT PRIMARY KEY, value);
            """
        )

    @contextmanager
    def _transaction(self) -> Iterator[sqlite3.Connection]:
        self._db.execute("BEGIN IMMEDIATE")
        try:
            yield self._db
        except BaseException:
            self._db.execute("ROLLBACK")
            raise
        self._db.execute("COMMIT")

    # --- meta -------------------------------------------------------------------------------------

    def get(self, name: str, default: Any = None) -> Any:
        row = self._db.execute("SELECT value FROM meta WHERE name = ?", (name,)).fetchone()
        return default if row is None else row[0]

    def _set(self, name: str, value: Any) -> None:
        self._db.execute("INSERT INTO meta (name, value) VALUES (?, ?)"
                         " ON CONFLICT(name) DO UPDATE SET value = excluded.value", (name, value))

    def _add(self, name: str, n: int) -> None:
        self._db.execute("INSERT INTO meta (name, value) VALUES (?, ?)"
                         " ON CONFLICT(name) DO UPDATE SET value = value + excluded.value", (name, n))

    @property
    def watermark(self) -> int | None:
        """The first hour start not yet enqueued; None before the first export."""
        value = self.get("watermark")
        return None if value is None else int(value)

    # --- items ------------------------------------------------------------------------------------

    def enqueue(self, items: Iterable[Item], watermark: int | None = None, suppressed: int = 0) -> int:
        """Store items (replacing pending ones with the same kind and key) and, in the same transaction,
        move the watermark; returns how many items were stored."""
        rows = [(i.kind, i.key, json.dumps(i.payload, sort_keys=True, allow_nan=False), time.time()) for i in items]
        for kind, *_ in rows:
            if kind not in KINDS:
                raise ValueError(f"unknown item kind {kind!r}; expected one of {', '.join(KINDS)}")
        with self._transaction() as db:
            db.executemany(
                "INSERT INTO items (kind, key, payload, enqueued_at) VALUES (?, ?, ?, ?)"
                " ON CONFLICT (kind, key) WHERE batch_id IS NULL"
                " DO UPDATE SET payload = excluded.payload, enqueued_at = excluded.enqueued_at", rows)
            if watermark is not None:
                self._set("watermark", watermark)
            if suppressed:
                self._add("suppressed", suppressed)
            self._add("enqueued", len(rows))
        return len(rows)

    def pending_items(self) -> int:
        return self._db.execute("SELECT count(*) FROM items WHERE batch_id IS NULL").fetchone()[0]

    # --- batches ----------------------------------------------------------------------------------

    def next_batch(self, limit: int, encode: Callable[[str, list[Item]], bytes]) -> Batch | None:
        """The batch to send now: the oldest unacknowledged one, else a new one of up to `limit` pending
        items, committed (body and all) before it is returned. None when there is nothing to send.

        `encode(batch_id, items)` turns the items into the exact body bytes.
        """
        with self._transaction() as db:
            row = db.execute("SELECT batch_id, body, items, attempts FROM batches WHERE state = 'pending'"
                             " ORDER BY created_at, batch_id LIMIT 1").fetchone()
            if row is not None:
                return Batch(row[0], bytes(row[1]), row[2], row[3])
            picked = db.execute("SELECT id, kind, key, payload FROM items WHERE batch_id IS NULL"
                                " ORDER BY id LIMIT ?", (limit,)).fetchall()
            if not picked:
                return None
            batch_id = uuid.uuid4().hex
            items = [Item(kind, key, json.loads(payload)) for _, kind, key, payload in picked]
            body = encode(batch_id, items)
            db.execute("INSERT INTO batches (batch_id, created_at, body, items) VALUES (?, ?, ?, ?)",
                       (batch_id, time.time(), body, len(items)))
            db.executemany("UPDATE items SET batch_id = ? WHERE id = ?", [(batch_id, r[0]) for r in picked])
        return Batch(batch_id, body, len(items), 0)

    def attempted(self, batch_id: str, error: str | None) -> None:
        self._db.execute("UPDATE batches SET attempts = attempts + 1, last_error = ? WHERE batch_id = ?",
                         (error, batch_id))

    def acknowledge(self, batch_id: str) -> None:
        """The cloud has the batch: its items leave the outbox; the batch row stays for audit."""
        with self._transaction() as db:
            db.execute("UPDATE batches SET state = 'acked', acked_at = ?, last_error = NULL,"
                       " attempts = attempts + 1 WHERE batch_id = ?", (time.time(), batch_id))
            n = db.execute("DELETE FROM items WHERE batch_id = ?", (batch_id,)).rowcount
            self._add("acked_items", n)

    def split(self, batch_id: str, encode: Callable[[str, list[Item]], bytes], error: str) -> list[Batch]:
        """Replace a pending batch the cloud refused as too large by two batches of half its items each.

        In one transaction: the items are shared out in order (the first half keeps the batch's
        place at the head of the line), each half is encoded and committed under a new id, and the
        old batch is kept as `split` with `error` for audit. A batch the cloud refused was not
        applied, and the cloud's upserts are keyed by the rows' natural keys, so sending its items
        under new ids delivers each once. Returns the new batches; [] if the batch has fewer than 2
        items or is not pending.
        """
        with self._transaction() as db:
            row = db.execute("SELECT created_at FROM batches WHERE batch_id = ? AND state = 'pending'",
                             (batch_id,)).fetchone()
            if row is None:
                return []
            picked = db.execute("SELECT id, kind, key, payload FROM items WHERE batch_id = ? ORDER BY id",
                                (batch_id,)).fetchall()
            if len(picked) < 2:
                return []
            created_at = row[0]
            half = (len(picked) + 1) // 2
            out = []
            for n, part in enumerate((picked[:half], picked[half:])):
                new_id = uuid.uuid4().hex
                items = [Item(kind, key, json.loads(payload)) for _, kind, key, payload in part]
                body = encode(new_id, items)
                # the halves keep the refused batch's place: before any batch formed after it
                db.execute("INSERT INTO batches (batch_id, created_at, body, items) VALUES (?, ?, ?, ?)",
                           (new_id, created_at + n * 1e-6, body, len(items)))
                db.executemany("UPDATE items SET batch_id = ? WHERE id = ?", [(new_id, r[0]) for r in part])
                out.append(Batch(new_id, body, len(items), 0))
            db.execute("UPDATE batches SET state = 'split', last_error = ?, attempts = attempts + 1"
                       " WHERE batch_id = ?", (error, batch_id))
            self._add("splits", 1)
        return out

    def batch_items(self, batch_id: str) -> list[Item]:
        return [Item(kind, key, json.loads(payload)) for kind, key, payload in self._db.execute(
            "SELECT kind, key, payload FROM items WHERE batch_id = ? ORDER BY id", (batch_id,))]

    def poison(self, batch_id: str, error: str) -> None:
        """The cloud refused the batch as invalid: keep it and its items for a human, stop sending it."""
        self._db.execute("UPDATE batches SET state = 'poison', last_error = ?, attempts = attempts + 1"
                         " WHERE batch_id = ?", (error, batch_id))

    def retry_poisoned(self) -> int:
        """Put poisoned batches back in line (after the cause was fixed, e.g. the store key registered)."""
        return self._db.execute("UPDATE batches SET state = 'pending' WHERE state = 'poison'").rowcount

    def prune(self, older_than_s: float) -> int:
        """Forget acknowledged batches, and split ones (whose items live on in their halves), older than that."""
        cutoff = time.time() - older_than_s
        return self._db.execute("DELETE FROM batches WHERE (state = 'acked' AND acked_at < ?)"
                                " OR (state = 'split' AND created_at < ?)", (cutoff, cutoff)).rowcount

    def batches(self, state: str | None = None) -> list[dict[str, Any]]:
        sql = "SELECT batch_id, created_at, items, state, attempts, last_error, acked_at FROM batches"
        args: tuple[Any, ...] = ()
        if state is not None:
            sql += " WHERE state = ?"
            args = (state,)
        cur = self._db.execute(sql + " ORDER BY created_at", args)
        names = [d[0] for d in cur.description]
        return [dict(zip(names, r, strict=True)) for r in cur]

    def status(self) -> dict[str, Any]:
        counts = dict(self._db.execute("SELECT state, count(*) FROM batches GROUP BY state").fetchall())
        return {"watermark": self.watermark, "pending_items": self.pending_items(),
                "pending_batches": counts.get("pending", 0), "poison_batches": counts.get("poison", 0),
                "acked_batches": counts.get("acked", 0), "split_batches": counts.get("split", 0),
                "enqueued": self.get("enqueued", 0),
                "acked_items": self.get("acked_items", 0), "suppressed": self.get("suppressed", 0)}

    def close(self) -> None:
        self._db.close()
