"""The node's durable outbox: events wait on disk until the broker has acknowledged them.

One SQLite file in WAL mode with `synchronous=NORMAL`: a committed event survives the process being
killed (power loss may cost the last moments, which a Pi's SD card would anyway). The per-node
sequence counter lives in the same file and is advanced in the same transaction as the insert, so
`seq` never repeats and never skips across restarts.
"""

from __future__ import annotations

import sqlite3
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Literal

FullPolicy = Literal["drop_oldest", "reject_new"]


@dataclass(frozen=True, slots=True)
class PendingEvent:
    seq: int
    channel: str
    payload: bytes
    schema: str


class Outbox:
    def __init__(self, path: Path, max_events: int, when_full: FullPolicy = "drop_oldest") -> None:
        path.parent.mkdir(parents=True, exist_ok=True)
        self.path = path
        self.max_events = max_events
        self.when_full = when_full
        self._db = sqlite3.connect(path, isolation_level=None, check_same_thread=False)
        self._db.execute("PRAGMA journal_mode=WAL")
        self._db.execute("PRAGMA synchronous=NORMAL")
        self._db.executescript(
            """
            CREATE TABLE IF NOT EXISTS outbox (
                seq INTEGER PRIMARY KEY, channel TEXT NOT NULL, payload BLOB NOT NULL, schema TEXT NOT NULL);
            CREATE TABLE IF NOT EXISTS counters (name TEXT PRIMARY KEY, value INTEGER NOT NULL);
            INSERT OR IGNORE INTO counters VALUES ('last_seq', 0), ('dropped', 0);
            """
        )
        self.last_seq = self._counter("last_seq")
        self.dropped = self._counter("dropped")
        self.depth = self._db.execute("SELECT count(*) FROM outbox").fetchone()[0]

    def _counter(self, name: str) -> int:
        return int(self._db.execute("SELECT value FROM counters WHERE name = ?", (name,)).fetchone()[0])

    def append(self, rows: Sequence[tuple[str, bytes, str]], first_seq: int) -> int:
        """Store events numbered first_seq, first_seq+1, ...; returns how many were stored.

        The caller numbers the payloads (the seq is inside them) from `last_seq + 1`. When the outbox
        is full, `drop_oldest` discards the oldest waiting events, `reject_new` refuses these; either
        way the loss is counted in `dropped`, which the node reports in its status.
        """
        if not rows:
            return 0
        if first_seq != self.last_seq + 1:
            raise ValueError(f"events must continue the sequence at {self.last_seq + 1}, not {first_seq}")
        overflow = self.depth + len(rows) - self.max_events
        with self._transaction():
            if overflow > 0 and self.when_full == "reject_new":
                kept = max(0, len(rows) - overflow)
                self._add_dropped(len(rows) - kept)
                rows = rows[:kept]
            elif overflow > 0:
                gone = self._db.execute(
                    "DELETE FROM outbox WHERE seq IN (SELECT seq FROM outbox ORDER BY seq LIMIT ?)", (overflow,)
                ).rowcount
                self.depth -= gone
                self._add_dropped(overflow)
                if overflow > gone:  # more new rows than the whole capacity: keep the newest
                    rows = rows[overflow - gone :]
                    first_seq += overflow - gone
            self._db.executemany(
                "INSERT INTO outbox (seq, channel, payload, schema) VALUES (?, ?, ?, ?)",
                [(first_seq + i, ch, payload, schema) for i, (ch, payload, schema) in enumerate(rows)],
            )
            self.last_seq = first_seq + len(rows) - 1 if rows else self.last_seq
            self._db.execute("UPDATE counters SET value = ? WHERE name = 'last_seq'", (self.last_seq,))
        self.depth += len(rows)
        return len(rows)

    def _add_dropped(self, n: int) -> None:
        self.dropped += n
        self._db.execute("UPDATE counters SET value = ? WHERE name = 'dropped'", (self.dropped,))

    def pending(self, after_seq: int, limit: int) -> list[PendingEvent]:
        """The oldest waiting events with seq > after_seq, in order."""
        cur = self._db.execute(
            "SELECT seq, channel, payload, schema FROM outbox WHERE seq > ? ORDER BY seq LIMIT ?", (after_seq, limit)
        )
        return [PendingEvent(seq, ch, bytes(payload), schema) for seq, ch, payload, schema in cur]

    def acknowledge(self, seqs: Iterable[int]) -> None:
        """The broker has the events: they leave the outbox."""
        batch = [(s,) for s in seqs]
        if not batch:
            return
        with self._transaction():
            removed = 0
            for chunk_start in range(0, len(batch), 500):
                cur = self._db.executemany("DELETE FROM outbox WHERE seq = ?", batch[chunk_start : chunk_start + 500])
                removed += cur.rowcount
        self.depth -= removed

    def _transaction(self) -> _Transaction:
        return _Transaction(self._db)

    def close(self) -> None:
        self._db.close()


class _Transaction:
    def __init__(self, db: sqlite3.Connection) -> None:
        self.db = db

    def __enter__(self) -> None:
        self.db.execute("BEGIN IMMEDIATE")

    def __exit__(self, exc_type: object, *_: object) -> None:
        self.db.execute("ROLLBACK" if exc_type else "COMMIT")
