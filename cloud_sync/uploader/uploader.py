"""`Uploader(settings).run(stop)`: export finished hours from the gateway database into the outbox,
and send the outbox to the cloud in signed, compressed, idempotent batches.

Delivery is at-least-once on the wire and exactly-once in the cloud: a batch is committed to the
outbox (id and body) before its first send, every retry resends the same bytes under the same id,
and the cloud applies a batch id once. Failures are retried with capped exponential backoff and
jitter (`edge.backoff.Backoff`):

* connection errors, timeouts, 5xx, 409 (a concurrent upload of the same batch) and 429: retry;
* 401 / 403 (store unknown or key not registered): retry at the capped delay and log an error -
  the fault is the store's registration, not the batch, so the backlog is kept intact;
* 413 (payload too large): the batch is split in two halves, sent next, and so on down to single
  items (`UploadOutbox.split`), so one oversized batch costs log2(size) extra requests; a single
  item the cloud still refuses is poison, with a reason naming it;
* any other 4xx (400, 422 ...): the batch is *poison* - marked so, its error logged and kept
  with its items in the outbox for a human (`UploadOutbox.retry_poisoned`), and the next batch goes.
Only a 2xx acknowledges a batch.
"""

from __future__ import annotations

import asyncio
import logging
import math
import sqlite3
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from typing import Any

import httpx

from cloud_sync.uploader.anonymity import (
    campaign_pseudonym,
    suppress_footfall,
    suppress_zone,
)
from cloud_sync.uploader.config import UploaderSettings
from cloud_sync.uploader.outbox import SECTIONS, Item, UploadOutbox
from cloud_sync.uploader.signing import encode_body, headers, load_private_key
from edge.backoff import Backoff

log = logging.getLogger("cloud_sync.uploader")

HOUR = 3600
SCHEMA = "omnisense.cloud.batch/v1"
EXPORT_CHUNK_HOURS = 24


@dataclass(frozen=True, slots=True)
class SendResult:
    batch_id: str
    outcome: str          # acked, duplicate, retry, split, poison
    status: int | None
    detail: str = ""


def _hour_floor(t: float) -> int:
    return int(math.floor(t / HOUR) * HOUR)


class Uploader:
    def __init__(self, settings: UploaderSettings, now: Any = time.time) -> None:
        self.settings = settings
        self.outbox = UploadOutbox(settings.outbox)
        self.key = load_private_key(settings.key_file)
        if settings.pseudonym_secret_file is not None:
            self.pseudonym_secret = settings.pseudonym_secret_file.read_bytes().strip()
            if len(self.pseudonym_secret) < 16:
                raise ValueError(f"{settings.pseudonym_secret_file}: the pseudonym secret must be at least 16 bytes")
        else:
            from cryptography.hazmat.primitives import serialization

            self.pseudonym_secret = self.key.private_bytes(serialization.Encoding.Raw,
                                                           serialization.PrivateFormat.Raw,
                                                           serialization.NoEncryption())
        self.backoff = Backoff(settings.backoff_initial_s, settings.backoff_max_s)
        self._now = now

    # --- export: gateway database -> outbox ---------------------------------------------------------

    @contextmanager
    def _gateway(self) -> Iterator[sqlite3.Connection | None]:
        path = self.settings.gateway_db
        if not path.exists():
            yield None
            return
        conn = sqlite3.connect(f"file:{path}?mode=ro", uri=True, check_same_thread=False)
        conn.row_factory = sqlite3.Row
        conn.execute("PRAGMA busy_timeout = 5000")
        try:
            yield conn
        finally:
            conn.close()

    @staticmethod
    def _tables(conn: sqlite3.Connection) -> set[str]:
        return {r[0] for r in conn.execute("SELECT name FROM sqlite_master WHERE type = 'table'")}

    def export_due(self) -> int:
        """Enqueue every finished hour from the watermark on; returns the number of items enqueued."""
        limit = _hour_floor(self._now() - self.settings.settle_s)
        total = 0
        with self._gateway() as conn:
            if conn is None:
                return 0
            tables = self._tables(conn)
            start = self.outbox.watermark
            if start is None:
                start = self._first_hour(conn, tables)
                if start is None:
                    return 0
            while start < limit:
                end = min(limit, start + EXPORT_CHUNK_HOURS * HOUR)
                items, suppressed = self._collect(conn, tables, start, end)
                total += self.outbox.enqueue(items, watermark=end, suppressed=suppressed)
                if items or suppressed:
                    log.info("enqueued %d items for %s hours from %d (%d cells suppressed below k=%d)",
                             len(items), (end - start) // HOUR, start, suppressed, self.settings.k)
                start = end
        return total

    def _first_hour(self, conn: sqlite3.Connection, tables: set[str]) -> int | None:
        if self.settings.start_at is not None:
            return _hour_floor(self.settings.start_at)
        firsts = []
        for table in ("hourly_footfall", "hourly_zone"):
            if table in tables:
                firsts.append(conn.execute(f"SELECT min(hour_start) FROM {table}").fetchone()[0])
        if self.settings.campaigns and "events" in tables:
            firsts.append(conn.execute("SELECT min(ts) FROM events WHERE kind = 'presence'").fetchone()[0])
        firsts = [f for f in firsts if f is not None]
        return _hour_floor(min(firsts)) if firsts else None

    def _collect(self, conn: sqlite3.Connection, tables: set[str], h0: int, h1: int) -> tuple[list[Item], int]:
        k, store = self.settings.k, self.settings.store_id
        items: list[Item] = []
        suppressed = 0
        if "hourly_footfall" in tables:
            for row in conn.execute("SELECT * FROM hourly_footfall WHERE hour_start >= ? AND hour_start < ?"
                                    " ORDER BY hour_start", (h0, h1)):
                kept = suppress_footfall(dict(row), k)
                if kept is None:
                    suppressed += 1
                    continue
                kept["store_id"] = store
                items.append(Item("footfall_hour", str(kept["hour_start"]), kept))
        if "hourly_zone" in tables:
            for row in conn.execute("SELECT * FROM hourly_zone WHERE hour_start >= ? AND hour_start < ?"
                                    " ORDER BY hour_start, zone", (h0, h1)):
                kept = suppress_zone(dict(row), k)
                if kept is None:
                    suppressed += 1
                    continue
                kept["store_id"] = store
                items.append(Item("zone_hour", f"{kept['zone']}@{kept['hour_start']}", kept))
        if self.settings.campaigns and {"events", "installs"} <= tables:
            items.extend(self._app_visits(conn, h0, h1))
        return items, suppressed

    def _app_visits(self, conn: sqlite3.Connection, h0: int, h1: int) -> list[Item]:
        """Walk-in visits of consented app installs that arrived in [h0, h1), one row per lift campaign."""
        import sqlite_utils

        from gateway.aggregates import load_visits
        from gateway.eid_resolver import EidResolver
        from gateway.visits import resolving_app_ids

        resolver = EidResolver()
        installs = set()
        for row in conn.execute("SELECT install_id, identity_key, rotation_exponent, clock_offset_s FROM installs"
                                " WHERE withdrawn_at IS NULL AND identity_key IS NOT NULL AND identity_key != ''"):
            resolver.add(row["install_id"], bytes.fromhex(row["identity_key"]), row["rotation_exponent"],
                         row["clock_offset_s"] or 0, h0 - 3 * HOUR)
            installs.add(row["install_id"])
        if not installs:
            return []
        db = sqlite_utils.Database(conn)
        visits = load_visits(db, h0, h1, resolve=resolving_app_ids(resolver.resolve))
        items = []
        for v in visits:
            if v.device not in installs or not v.walk_in:
                continue
            for campaign in self.settings.campaigns:
                pseudonym = campaign_pseudonym(self.pseudonym_secret, campaign, v.device)
                arrival = int(v.arrival)
                items.append(Item("app_visit", f"{campaign}:{pseudonym}:{arrival}",
                                  {"pseudonym": pseudonym, "campaign": campaign, "arrival": arrival,
                                   "dwell_s": round(v.duration_s, 1)}))
        return items

    # --- send: outbox -> cloud --------------------------------------------------------------------

    def encode(self, batch_id: str, items: list[Item]) -> bytes:
        document: dict[str, Any] = {"schema": SCHEMA, "store_id": self.settings.store_id, "batch_id": batch_id,
                                    "created_at": round(time.time(), 3)}
        for section in SECTIONS.values():
            document[section] = []
        for item in items:
            payload = dict(item.payload)
            if item.kind != "app_visit":
                payload.pop("store_id", None)
            document[SECTIONS[item.kind]].append(payload)
        return encode_body(document)

    @property
    def batch_url(self) -> str:
        return f"{self.settings.cloud_url}/v1/stores/{self.settings.store_id}/batches"

    async def send_next(self, client: httpx.AsyncClient) -> SendResult | None:
        """Send the next batch once; None when the outbox is empty."""
        batch = self.outbox.next_batch(self.settings.batch_size, self.encode)
        if batch is None:
            return None
        try:
            response = await client.post(self.batch_url, content=batch.body,
                                         headers=headers(self.key, self.settings.store_id, batch.batch_id, batch.body))
        except httpx.HTTPError as err:
            detail = f"{type(err).__name__}: {err}" if str(err) else type(err).__name__
            self.outbox.attempted(batch.batch_id, detail)
            return SendResult(batch.batch_id, "retry", None, detail)
        status = response.status_code
        if 200 <= status < 300:
            self.outbox.acknowledge(batch.batch_id)
            duplicate = _json(response).get("duplicate") is True
            return SendResult(batch.batch_id, "duplicate" if duplicate else "acked", status)
        detail = f"HTTP {status}: {response.text[:500]}"
        if status in (409, 429, 401, 403) or status >= 500:
            self.outbox.attempted(batch.batch_id, detail)
            return SendResult(batch.batch_id, "retry", status, detail)
        if status == 413:
            return self._too_large(batch.batch_id, batch.items, len(batch.body), detail)
        self.outbox.poison(batch.batch_id, detail)
        return SendResult(batch.batch_id, "poison", status, detail)

    def _too_large(self, batch_id: str, items: int, size: int, detail: str) -> SendResult:
        """413: halve the batch (its halves go next), or poison it when it is a single item."""
        if items > 1:
            halves = self.outbox.split(batch_id, self.encode, f"{detail} ({items} items, {size} bytes): split")
            if halves:
                return SendResult(batch_id, "split", 413,
                                  f"{items} items in {size} bytes too large for the cloud: split into "
                                  f"{' + '.join(str(h.items) for h in halves)} items")
        what = ", ".join(f"{i.kind} {i.key}" for i in self.outbox.batch_items(batch_id)) or "its item"
        reason = (f"a single item too large for the cloud ({what}: {size} bytes compressed, signed); "
                  f"it cannot be split further - raise the cloud's max_body_bytes and "
                  f"`omnisense upload retry-poisoned`. {detail}")
        self.outbox.poison(batch_id, reason)
        return SendResult(batch_id, "poison", 413, reason)

    async def run(self, stop: asyncio.Event) -> None:
        """Export and send until `stop` is set."""
        log.info("uploader for store %s: gateway %s, outbox %s, cloud %s", self.settings.store_id,
                 self.settings.gateway_db, self.settings.outbox, self.settings.cloud_url)
        async with httpx.AsyncClient(timeout=self.settings.timeout_s) as client:
            while not stop.is_set():
                try:
                    await asyncio.to_thread(self.export_due)
                except sqlite3.Error as err:
                    log.error("cannot read the gateway database %s: %s", self.settings.gateway_db, err)
                delay = await self._drain(client, stop)
                self.outbox.prune(self.settings.keep_acked_days * 86400)
                await _wait(stop, delay if delay is not None else self.settings.interval_s)

    async def _drain(self, client: httpx.AsyncClient, stop: asyncio.Event) -> float | None:
        """Send batches until the outbox is empty (None) or a send failed (the delay before retrying)."""
        while not stop.is_set():
            result = await self.send_next(client)
            if result is None:
                return None
            if result.outcome in ("acked", "duplicate"):
                self.backoff.reset()
                log.debug("batch %s %s", result.batch_id, result.outcome)
                continue
            if result.outcome == "split":
                log.warning("batch %s: %s", result.batch_id, result.detail)
                continue
            if result.outcome == "poison":
                log.error("batch %s refused by the cloud and set aside (poison): %s", result.batch_id, result.detail)
                continue
            if result.status in (401, 403):
                delay = self.backoff.max_s
                self.backoff.next()
                log.error("the cloud does not accept this store's signature (%s); is the public key registered? "
                          "retrying in %.0f s", result.detail, delay)
            else:
                delay = self.backoff.next()
                log.warning("batch %s not delivered (%s); retrying in %.1f s", result.batch_id, result.detail, delay)
            return delay
        return None


def _json(response: httpx.Response) -> dict[str, Any]:
    try:
        value = response.json()
    except ValueError:
        return {}
    return value if isinstance(value, dict) else {}


async def _wait(stop: asyncio.Event, seconds: float) -> None:
    try:
        await asyncio.wait_for(stop.wait(), seconds)
    except TimeoutError:
        pass
