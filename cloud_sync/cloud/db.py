"""The cloud's database: one small repository over SQLite (default) or PostgreSQL (given a URL).

The SQL is written once, in the subset both speak: `INSERT ... ON CONFLICT (...) DO UPDATE SET
col = excluded.col` for idempotent upserts, `ON CONFLICT DO NOTHING` plus the row count to see a
duplicate batch. `?` placeholders are rewritten to `%s` for psycopg. One unit of work (one request)
is one transaction on one connection. PostgreSQL connections come from a pool
(`psycopg_pool.ConnectionPool`, `pool_min_size`..`pool_max_size` connections, each checked before
it is handed out, so a server restart costs a reconnect rather than a failed request; a request
waits up to `pool_timeout_s` for a free connection): opening a PostgreSQL connection costs a TCP and
authentication round trip per request otherwise. SQLite connections are opened per unit of work
(a local file: cheap). SQLite runs in WAL with a busy timeout, PostgreSQL at READ COMMITTED, where
a second upload of the same batch waits on the first one's row lock and then sees the conflict.
`close()` closes the pool.

Tables (natural keys in brackets):
  stores [store_id]: public_key (base64 Ed25519), registered_at
  batches [store_id, batch_id]: received_at, item counts, body (the signed gzip bytes, for audit)
  footfall_hours [store_id, hour_start], zone_hours [store_id, zone, hour_start]
  app_visits [store_id, campaign, pseudonym, arrival]: dwell_s
  exposures [campaign, pseudonym, exposed_at]: arm ('exposed' | 'control')
Times are epoch seconds (hour_start, arrival: integers; the rest: double precision).
"""

from __future__ import annotations

import sqlite3
import time
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

FOOTFALL_COLUMNS = ("entries", "exits", "peak_occupancy", "mean_occupancy", "camera_reports", "distinct_devices",
                    "walk_ins", "walk_bys", "capture_rate", "dwell_mean", "dwell_p25", "dwell_p50", "dwell_p75",
                    "dwell_p90")
ZONE_COLUMNS = ("people_mean", "people_peak", "distinct_devices", "visits", "dwell_mean", "dwell_p25", "dwell_p50",
                "dwell_p75", "dwell_p90")
_INT = {"entries", "exits", "peak_occupancy", "camera_reports", "distinct_devices", "walk_ins", "walk_bys",
        "people_peak", "visits"}


def _columns(names: Sequence[str]) -> str:
    return ", ".join(f"{n} {'INTEGER' if n in _INT else 'DOUBLE PRECISION'}" for n in names)


def _schema(blob: str) -> list[str]:
    return [
        "CREATE TABLE IF NOT EXISTS stores (store_id TEXT PRIMARY KEY, public_key TEXT NOT NULL,"
        " registered_at DOUBLE PRECISION NOT NULL)",
        f"CREATE TABLE IF NOT EXISTS batches (store_id TEXT NOT NULL, batch_id TEXT NOT NULL,"
        f" received_at DOUBLE PRECISION NOT NULL, footfall_hours INTEGER NOT NULL, zone_hours INTEGER NOT NULL,"
        f" app_visits INTEGER NOT NULL, body {blob} NOT NULL, PRIMARY KEY (store_id, batch_id))",
        f"CREATE TABLE IF NOT EXISTS footfall_hours (store_id TEXT NOT NULL, hour_start BIGINT NOT NULL,"
        f" {_columns(FOOTFALL_COLUMNS)}, batch_id TEXT NOT NULL, updated_at DOUBLE PRECISION NOT NULL,"
        f" PRIMARY KEY (store_id, hour_start))",
        f"CREATE TABLE IF NOT EXISTS zone_hours (store_id TEXT NOT NULL, zone TEXT NOT NULL,"
        f" hour_start BIGINT NOT NULL, {_columns(ZONE_COLUMNS)}, batch_id TEXT NOT NULL,"
        f" updated_at DOUBLE PRECISION NOT NULL, PRIMARY KEY (store_id, zone, hour_start))",
        "CREATE TABLE IF NOT EXISTS app_visits (store_id TEXT NOT NULL, campaign TEXT NOT NULL,"
        " pseudonym TEXT NOT NULL, arrival BIGINT NOT NULL, dwell_s DOUBLE PRECISION, batch_id TEXT NOT NULL,"
        " PRIMARY KEY (store_id, campaign, pseudonym, arrival))",
        "CREATE INDEX IF NOT EXISTS app_visits_campaign ON app_visits (campaign, pseudonym)",
        "CREATE TABLE IF NOT EXISTS exposures (campaign TEXT NOT NULL, pseudonym TEXT NOT NULL,"
        " exposed_at DOUBLE PRECISION NOT NULL, arm TEXT NOT NULL, imported_at DOUBLE PRECISION NOT NULL,"
        " PRIMARY KEY (campaign, pseudonym, exposed_at))",
    ]


@dataclass(frozen=True, slots=True)
class Applied:
    duplicate: bool
    footfall_hours: int = 0
    zone_hours: int = 0
    app_visits: int = 0


class _Conn:
    """A connection with one placeholder style (`?`) for both databases."""

    def __init__(self, raw: Any, postgres: bool) -> None:
        self.raw, self.postgres = raw, postgres

    def _sql(self, sql: str) -> str:
        return sql.replace("?", "%s") if self.postgres else sql

    def execute(self, sql: str, params: Sequence[Any] = ()) -> Any:
        return self.raw.execute(self._sql(sql), tuple(params))

    def executemany(self, sql: str, rows: Sequence[Sequence[Any]]) -> None:
        if not rows:
            return
        if self.postgres:
            with self.raw.cursor() as cur:
                cur.executemany(self._sql(sql), [tuple(r) for r in rows])
        else:
            self.raw.executemany(sql, [tuple(r) for r in rows])

    def rows(self, sql: str, params: Sequence[Any] = ()) -> list[dict[str, Any]]:
        cur = self.execute(sql, params)
        names = [d[0] for d in cur.description]
        return [dict(zip(names, r, strict=True)) for r in cur.fetchall()]


def _upsert(table: str, key: Sequence[str], columns: Sequence[str]) -> str:
    names = [*key, *columns]
    updates = ", ".join(f"{c} = excluded.{c}" for c in columns)
    return (f"INSERT INTO {table} ({', '.join(names)}) VALUES ({', '.join('?' for _ in names)})"
            f" ON CONFLICT ({', '.join(key)}) DO UPDATE SET {updates}")


class CloudDB:
    """`CloudDB("sqlite:///path.db")` or `CloudDB("postgresql://user@host:port/db")`."""

    def __init__(self, url: str, *, pool_min_size: int = 1, pool_max_size: int = 10,
                 pool_timeout_s: float = 30.0) -> None:
        self.url = url
        self.pool: Any = None
        if url.startswith("sqlite:///"):
            self.postgres = False
            self.path = Path(url.removeprefix("sqlite:///"))
            self.path.parent.mkdir(parents=True, exist_ok=True)
        elif url.startswith(("postgresql://", "postgres://")):
            self.postgres = True
            try:
                import psycopg  # noqa: F401
                from psycopg_pool import ConnectionPool
            except ImportError:
                raise ValueError("a PostgreSQL db_url needs psycopg and psycopg_pool: "
                                 "pip install 'psycopg[binary]' psycopg-pool") from None
            if not 1 <= pool_min_size <= pool_max_size:
                raise ValueError(f"need 1 <= pool_min_size ({pool_min_size}) <= pool_max_size ({pool_max_size})")
            self.pool = ConnectionPool(url, min_size=pool_min_size, max_size=pool_max_size, timeout=pool_timeout_s,
                                       kwargs={"connect_timeout": 10}, check=ConnectionPool.check_connection,
                                       name="omnisense-cloud", open=False)
            try:
                self.pool.open(wait=True, timeout=pool_timeout_s)
            except Exception:
                self.pool.close()
                raise
        else:
            raise ValueError(f"db_url must be sqlite:///path or postgresql://user@host:port/db, got {url!r}")
        with self.connect() as db:
            for statement in _schema("BYTEA" if self.postgres else "BLOB"):
                db.execute(statement)

    def close(self) -> None:
        """Close the PostgreSQL pool (nothing to do for SQLite)."""
        if self.pool is not None:
            self.pool.close()

    def __enter__(self) -> CloudDB:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    @contextmanager
    def connect(self) -> Iterator[_Conn]:
        """One transaction: committed when the block ends, rolled back when it raises."""
        if self.postgres:
            # the pool's block commits on success, rolls back on an exception, and discards a
            # connection left broken
            with self.pool.connection() as raw:
                yield _Conn(raw, True)
            return
        raw = sqlite3.connect(self.path, timeout=30, isolation_level=None)
        try:
            raw.execute("PRAGMA journal_mode=WAL")
            raw.execute("PRAGMA synchronous=NORMAL")
            raw.execute("BEGIN IMMEDIATE")
            try:
                yield _Conn(raw, False)
                raw.execute("COMMIT")
            except BaseException:
                raw.execute("ROLLBACK")
                raise
        finally:
            raw.close()

    # --- stores -----------------------------------------------------------------------------------

    def register_store(self, store_id: str, public_key: str) -> bool:
        """Store (or replace) a store's public key; True when the store is new."""
        with self.connect() as db:
            new = not db.rows("SELECT store_id FROM stores WHERE store_id = ?", (store_id,))
            db.execute(_upsert("stores", ("store_id",), ("public_key", "registered_at")),
                       (store_id, public_key, time.time()))
        return new

    def public_key(self, store_id: str) -> str | None:
        with self.connect() as db:
            rows = db.rows("SELECT public_key FROM stores WHERE store_id = ?", (store_id,))
        return rows[0]["public_key"] if rows else None

    # --- batches ----------------------------------------------------------------------------------

    def apply_batch(self, store_id: str, batch_id: str, body: bytes, footfall: Sequence[dict[str, Any]],
                    zones: Sequence[dict[str, Any]], visits: Sequence[dict[str, Any]]) -> Applied:
        """Record the batch and upsert its rows in one transaction; a batch id seen before changes nothing."""
        now = time.time()
        with self.connect() as db:
            cur = db.execute("INSERT INTO batches (store_id, batch_id, received_at, footfall_hours, zone_hours,"
                             " app_visits, body) VALUES (?, ?, ?, ?, ?, ?, ?) ON CONFLICT DO NOTHING",
                             (store_id, batch_id, now, len(footfall), len(zones), len(visits), body))
            if cur.rowcount == 0:
                return Applied(duplicate=True)
            db.executemany(_upsert("footfall_hours", ("store_id", "hour_start"),
                                   (*FOOTFALL_COLUMNS, "batch_id", "updated_at")),
                           [(store_id, r["hour_start"], *(r.get(c) for c in FOOTFALL_COLUMNS), batch_id, now)
                            for r in footfall])
            db.executemany(_upsert("zone_hours", ("store_id", "zone", "hour_start"),
                                   (*ZONE_COLUMNS, "batch_id", "updated_at")),
                           [(store_id, r["zone"], r["hour_start"], *(r.get(c) for c in ZONE_COLUMNS), batch_id, now)
                            for r in zones])
            db.executemany(_upsert("app_visits", ("store_id", "campaign", "pseudonym", "arrival"),
                                   ("dwell_s", "batch_id")),
                           [(store_id, r["campaign"], r["pseudonym"], r["arrival"], r.get("dwell_s"), batch_id)
                            for r in visits])
        return Applied(False, len(footfall), len(zones), len(visits))

    def batch_bodies(self, store_id: str | None = None) -> list[tuple[str, str, bytes]]:
        """(store_id, batch_id, body) of every batch received: what left the stores, byte for byte."""
        sql = "SELECT store_id, batch_id, body FROM batches"
        params: tuple[Any, ...] = ()
        if store_id is not None:
            sql, params = sql + " WHERE store_id = ?", (store_id,)
        with self.connect() as db:
            return [(r["store_id"], r["batch_id"], bytes(r["body"])) for r in db.rows(sql + " ORDER BY received_at",
                                                                                    params)]

    # --- reads ------------------------------------------------------------------------------------

    def footfall(self, store_id: str, since: float | None = None, until: float | None = None) -> list[dict[str, Any]]:
        return self._hours("footfall_hours", ("hour_start",), store_id, since, until)

    def zone_hours(self, store_id: str, since: float | None = None, until: float | None = None) -> list[dict[str, Any]]:
        return self._hours("zone_hours", ("hour_start", "zone"), store_id, since, until)

    def _hours(self, table: str, order: Sequence[str], store_id: str, since: float | None,
               until: float | None) -> list[dict[str, Any]]:
        sql, params = f"SELECT * FROM {table} WHERE store_id = ?", [store_id]
        if since is not None:
            sql, params = sql + " AND hour_start >= ?", [*params, since]
        if until is not None:
            sql, params = sql + " AND hour_start < ?", [*params, until]
        with self.connect() as db:
            return db.rows(sql + f" ORDER BY {', '.join(order)}", params)

    def app_visits(self, campaign: str | None = None) -> list[dict[str, Any]]:
        sql, params = "SELECT * FROM app_visits", ()
        if campaign is not None:
            sql, params = sql + " WHERE campaign = ?", (campaign,)
        with self.connect() as db:
            return db.rows(sql + " ORDER BY campaign, pseudonym, arrival", params)

    # --- exposures --------------------------------------------------------------------------------

    def upsert_exposures(self, rows: Sequence[tuple[str, str, float, str]]) -> int:
        """(campaign, pseudonym, exposed_at, arm) rows; re-importing a row replaces it (its arm)."""
        now = time.time()
        with self.connect() as db:
            db.executemany(_upsert("exposures", ("campaign", "pseudonym", "exposed_at"), ("arm", "imported_at")),
                           [(*r, now) for r in rows])
        return len(rows)

    def exposures(self, campaign: str | None = None) -> list[dict[str, Any]]:
        sql, params = "SELECT campaign, pseudonym, exposed_at, arm FROM exposures", ()
        if campaign is not None:
            sql, params = sql + " WHERE campaign = ?", (campaign,)
        with self.connect() as db:
            return db.rows(sql + " ORDER BY campaign, pseudonym, exposed_at", params)
