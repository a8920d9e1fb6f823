"""The gateway's SQLite database (through sqlite-utils): events, nodes, gaps, dead letters.

One writer (the ingest thread) commits batches in single transactions; readers (the API) open
their own connections, which WAL lets them do while the writer works. Events are unique on
(node, boot, seq): a redelivered event is counted as a duplicate and otherwise ignored.
"""

from __future__ import annotations

import json
import sqlite3
import time
from collections import defaultdict
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import sqlite_utils

from edge.protocol import Event, NodeStatus
from gateway.sequence import SeqTracker

DEAD_PAYLOAD_KEEP = 1024  # bytes of a dead-lettered payload kept for diagnosis


@dataclass(frozen=True, slots=True)
class Accepted:
    event: Event
    kind: str
    payload: bytes


@dataclass(frozen=True, slots=True)
class DeadLetter:
    topic: str
    node_id: str | None
    code: str
    reason: str
    payload: bytes


def open_db(path: Path, readonly: bool = False) -> sqlite_utils.Database:
    if readonly:
        conn = sqlite3.connect(f"file:{path}?mode=ro", uri=True, check_same_thread=False)
        return sqlite_utils.Database(conn)
    path.parent.mkdir(parents=True, exist_ok=True)
    db = sqlite_utils.Database(sqlite3.connect(path, check_same_thread=False, isolation_level=None))
    db.enable_wal()
    db.execute("PRAGMA synchronous=NORMAL")
    return db


def reader(path: Path) -> Callable[[], Iterator[sqlite_utils.Database]]:
    """A FastAPI dependency: one read-only connection per request; WAL lets readers run beside the writer."""

    def connection() -> Iterator[sqlite_utils.Database]:
        db = open_db(path, readonly=True)
        try:
            yield db
        finally:
            db.conn.close()

    return connection


def ensure_schema(db: sqlite_utils.Database) -> None:
    if "events" not in db.table_names():
        db["events"].create(
            {"id": int, "node_id": str, "boot_id": str, "seq": int, "kind": str, "ts": float,
             "received_at": float, "payload": str},
            pk="id", not_null={"node_id", "boot_id", "seq", "kind", "ts", "received_at", "payload"},
        )
        db["events"].create_index(["node_id", "boot_id", "seq"], unique=True)
        db["events"].create_index(["ts"])
    if "nodes" not in db.table_names():
        db["nodes"].create(
            {"node_id": str, "known": int, "zone": str, "config_version": int, "state": str, "boot_id": str,
             "last_seen": float, "status_at": float, "reported_last_seq": int, "outbox_depth": int,
             "dropped": int, "applied_config_version": int, "high_water": int, "stored": int,
             "duplicates": int, "dead_letters": int},
            pk="node_id", defaults={"known": 0, "state": "unknown", "high_water": 0, "stored": 0,
                                    "duplicates": 0, "dead_letters": 0, "config_version": 0},
        )
    for column in ("sources", "status_received_at"):  # added for the health checks; older files lack them
        if column not in db["nodes"].columns_dict:
            db["nodes"].add_column(column, str if column == "sources" else float)
    if "gaps" not in db.table_names():
        db["gaps"].create({"node_id": str, "first_seq": int, "last_seq": int}, pk=("node_id", "first_seq"))
    if "dead_letters" not in db.table_names():
        db["dead_letters"].create(
            {"id": int, "received_at": float, "topic": str, "node_id": str, "code": str, "reason": str,
             "size": int, "payload": str},
            pk="id",
        )
        db["dead_letters"].create_index(["code"])


class EventStore:
    """The writer side. Not thread-safe: one ingest thread owns it."""

    def __init__(self, path: Path) -> None:
        self.db = open_db(path)
        ensure_schema(self.db)
        self._conn = self.db.conn
        self.trackers: dict[str, SeqTracker] = {}
        for row in self.db["nodes"].rows:
            self.trackers[row["node_id"]] = SeqTracker(row["high_water"] or 0)
        for row in self.db.query("SELECT node_id, first_seq, last_seq FROM gaps ORDER BY node_id, first_seq"):
            self.trackers.setdefault(row["node_id"], SeqTracker()).gaps.append((row["first_seq"], row["last_seq"]))

    def write(self, accepted: list[Accepted], dead: list[DeadLetter], statuses: list[NodeStatus]) -> int:
        """Commit one batch in one transaction; returns how many events were new."""
        now = time.time()
        by_node: dict[str, list[Accepted]] = defaultdict(list)
        for item in accepted:
            by_node[item.event.node_id].append(item)
        conn = self._conn
        new_total = 0
        conn.execute("BEGIN IMMEDIATE")
        try:
            for node_id, items in by_node.items():
                before = conn.total_changes
                conn.executemany(
                    "INSERT OR IGNORE INTO events (node_id, boot_id, seq, kind, ts, received_at, payload)"
                    " VALUES (?, ?, ?, ?, ?, ?, ?)",
                    [(node_id, i.event.boot_id, i.event.seq, i.kind, i.event.ts.timestamp(), now,
                      i.payload.decode()) for i in items],
                )
                new = conn.total_changes - before
                new_total += new
                tracker = self.trackers.setdefault(node_id, SeqTracker())
                gaps_changed = False
                for item in items:
                    gaps_changed |= tracker.observe(item.event.seq)
                if gaps_changed:
                    conn.execute("DELETE FROM gaps WHERE node_id = ?", (node_id,))
                    conn.executemany("INSERT INTO gaps VALUES (?, ?, ?)",
                                     [(node_id, a, b) for a, b in tracker.gaps])
                conn.execute(
                    "INSERT INTO nodes (node_id, high_water, stored, duplicates, last_seen) VALUES (?, ?, ?, ?, ?)"
                    " ON CONFLICT(node_id) DO UPDATE SET high_water = excluded.high_water,"
                    " stored = stored + excluded.stored, duplicates = duplicates + excluded.duplicates,"
                    " last_seen = excluded.last_seen",
                    (node_id, tracker.high_water, new, len(items) - new, now),
                )
            for status in statuses:
                self._write_status(status, now)
            if dead:
                self._write_dead(dead, now)
            conn.execute("COMMIT")
        except BaseException:
            conn.execute("ROLLBACK")
            raise
        return new_total

    def _write_status(self, status: NodeStatus, now: float) -> None:
        self._conn.execute(
            "INSERT INTO nodes (node_id, state, boot_id, last_seen, status_at, reported_last_seq, outbox_depth,"
            " dropped, applied_config_version, sources, status_received_at) VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)"
            " ON CONFLICT(node_id) DO UPDATE SET state = excluded.state, boot_id = excluded.boot_id,"
            " last_seen = excluded.last_seen, status_at = excluded.status_at,"
            " reported_last_seq = excluded.reported_last_seq, outbox_depth = excluded.outbox_depth,"
            " dropped = excluded.dropped, applied_config_version = excluded.applied_config_version,"
            " sources = excluded.sources, status_received_at = excluded.status_received_at",
            (status.node_id, status.state, status.boot_id, now, status.ts.timestamp(), status.last_seq,
             status.outbox_depth, status.dropped, status.config_version, json.dumps(status.sources), now),
        )

    def _write_dead(self, dead: list[DeadLetter], now: float) -> None:
        self._conn.executemany(
            "INSERT INTO dead_letters (received_at, topic, node_id, code, reason, size, payload)"
            " VALUES (?, ?, ?, ?, ?, ?, ?)",
            [(now, d.topic, d.node_id, d.code, d.reason, len(d.payload),
              d.payload[:DEAD_PAYLOAD_KEEP].decode("utf-8", "replace")) for d in dead],
        )
        per_node: dict[str, int] = defaultdict(int)
        for d in dead:
            if d.node_id:
                per_node[d.node_id] += 1
        for node_id, n in per_node.items():
            self._conn.execute("UPDATE nodes SET dead_letters = dead_letters + ? WHERE node_id = ?", (n, node_id))

    def close(self) -> None:
        self.db.conn.close()


def node_rows(db: sqlite_utils.Database) -> list[dict[str, Any]]:
    rows = list(db.query("SELECT * FROM nodes ORDER BY node_id"))
    gaps: dict[str, list[list[int]]] = defaultdict(list)
    for g in db.query("SELECT * FROM gaps ORDER BY node_id, first_seq"):
        gaps[g["node_id"]].append([g["first_seq"], g["last_seq"]])
    for row in rows:
        row["known"] = bool(row["known"])
        row["gaps"] = gaps.get(row["node_id"], [])
    return rows


def event_rows(db: sqlite_utils.Database, since: float | None, node: str | None, kind: str | None,
               limit: int, after_id: int | None) -> list[dict[str, Any]]:
    where, params = [], []
    for clause, value in (("ts >= ?", since), ("node_id = ?", node), ("kind = ?", kind), ("id > ?", after_id)):
        if value is not None:
            where.append(clause)
            params.append(value)
    sql = "SELECT * FROM events" + (" WHERE " + " AND ".join(where) if where else "") + " ORDER BY id LIMIT ?"
    rows = list(db.query(sql, [*params, limit]))
    for row in rows:
        row["payload"] = json.loads(row["payload"])
    return rows
