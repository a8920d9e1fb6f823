"""The edge node runtime: sources -> durable outbox -> MQTT, with status and remote config.

Concurrency: everything but the MQTT network thread runs on one asyncio loop. Sources call `emit`,
which only stages the reading; the pump numbers staged readings, commits them to the outbox in one
transaction, and hands the oldest unsent ones to the broker within an in-flight window. PUBACKs
arrive on the MQTT thread and are handed over through a deque; only then does a row leave the
outbox. Unacknowledged messages are resent by the MQTT client after a reconnect, and by the pump
from the outbox after a restart; the gateway drops the duplicates by (node, boot, seq).
"""

from __future__ import annotations

import asyncio
import logging
import secrets
from collections import deque
from typing import Any

from pydantic import ValidationError

from edge import protocol
from edge.config import NodeConfig
from edge.mqtt import Inbound, MqttLink, NotConnected, Will
from edge.outbox import Outbox
from edge.protocol import Channel, NodeStatus, RemoteConfig
from edge.sources import Source

log = logging.getLogger(__name__)

FLUSH_BATCH = 1000


class Node:
    def __init__(self, config: NodeConfig, sources: list[Source]) -> None:
        self.config = config
        self.sources = sources
        self.boot_id = secrets.token_hex(8)
        self.outbox = Outbox(config.data_dir / "outbox.db", config.outbox.max_events, config.outbox.when_full)
        self.remote_config: RemoteConfig | None = None
        self.invalid_readings = 0
        self._topics = {ch.value: protocol.topic(config.store_id, config.node_id, ch) for ch in Channel}
        self._staged: list[tuple[Channel, dict[str, Any]]] = []
        self._inflight: dict[int, int] = {}  # mid -> seq
        self._cursor = 0  # highest seq handed to the MQTT client in this process
        self._acks: deque[tuple[int, bool]] = deque()
        self._loop: asyncio.AbstractEventLoop | None = None
        self._wake = asyncio.Event()
        self._connected_since_status = False
        self._stopping = False
        self.link = MqttLink(
            config.mqtt,
            client_id=f"omnisense-{config.store_id}-{config.node_id}",
            subscriptions=[(self._topics[Channel.CONFIG.value], 1)],
            will=Will(self._topics[Channel.STATUS.value], protocol.encode(self._status("offline"))),
            max_inflight=config.publish.max_inflight,
            on_connect=self._from_mqtt_thread(self._on_connect),
            on_disconnect=self._from_mqtt_thread(self._on_disconnect),
            on_message=self._on_message,
            on_published=self._on_published,
        )

    # --- called by sources (loop thread) ---------------------------------------------------------

    def emit(self, channel: Channel, fields: dict[str, Any]) -> None:
        self._staged.append((channel, fields))
        if len(self._staged) == 1 or len(self._staged) >= FLUSH_BATCH:
            self._wake.set()

    # --- MQTT thread -> loop thread ---------------------------------------------------------------

    def _from_mqtt_thread(self, fn: Any) -> Any:
        def call(*args: Any) -> None:
            if self._loop is not None and not self._loop.is_closed():
                self._loop.call_soon_threadsafe(fn, *args)
        return call

    def _on_published(self, mid: int, ok: bool) -> None:
        self._acks.append((mid, ok))
        if len(self._acks) == 1 and self._loop is not None and not self._loop.is_closed():
            self._loop.call_soon_threadsafe(self._wake.set)

    def _on_message(self, message: Inbound) -> None:
        if message.topic != self._topics[Channel.CONFIG.value]:
            return
        try:
            config = RemoteConfig.model_validate_json(message.payload)
        except ValidationError as exc:
            log.warning("ignoring invalid config on %s: %s", message.topic, exc.errors()[0]["msg"])
            return
        if config.node_id != self.config.node_id:
            log.warning("ignoring config for node %r on my topic", config.node_id)
            return
        if self._loop is not None:
            self._loop.call_soon_threadsafe(self._apply_config, config)

    # --- loop thread ------------------------------------------------------------------------------

    def _on_connect(self) -> None:
        self._connected_since_status = True
        self._wake.set()

    def _on_disconnect(self) -> None:
        self._wake.set()

    def _apply_config(self, config: RemoteConfig) -> None:
        if self.remote_config is None or config.version != self.remote_config.version:
            log.info("%s applied config version %d (zone %s)", self.config.node_id, config.version, config.zone)
        answered = self.remote_config.test_token if self.remote_config else None
        self.remote_config = config
        if config.test_token and config.test_token != answered:
            self.emit(Channel.TEST, {"token": config.test_token})
        for source in self.sources:
            apply = getattr(source, "apply_config", None)
            if apply is not None:
                apply(config)
        self._publish_status()

    def _status(self, state: str) -> NodeStatus:
        return NodeStatus(
            node_id=self.config.node_id, boot_id=self.boot_id, ts=protocol.utcnow(), state=state,
            last_seq=self.outbox.last_seq, outbox_depth=self.outbox.depth, dropped=self.outbox.dropped,
            config_version=self.remote_config.version if self.remote_config else None,
            sources=self._source_health(),
        )

    def _source_health(self) -> dict[str, dict[str, Any]]:
        health = {}
        for source in self.sources:
            report = getattr(source, "health", None)
            if isinstance(report, dict):
                health[source.name] = {k: v for k, v in report.items() if isinstance(v, str | int | float) or v is None}
        return health

    def _publish_status(self) -> None:
        try:
            self.link.publish(self._topics[Channel.STATUS.value], protocol.encode(self._status("online")),
                              qos=1, retain=True, schema="omnisense.status/1")
        except NotConnected:
            pass

    def _flush_staged(self) -> None:
        """Number the staged readings and commit them to the outbox in one transaction."""
        while self._staged:
            batch, self._staged = self._staged[:FLUSH_BATCH], self._staged[FLUSH_BATCH:]
            rows: list[tuple[str, bytes, str]] = []
            first = self.outbox.last_seq + 1
            now = protocol.utcnow()
            for channel, fields in batch:
                try:
                    event = protocol.EVENT_MODELS[channel](
                        **{"ts": now, **fields}, node_id=self.config.node_id, boot_id=self.boot_id,
                        seq=first + len(rows),
                    )
                except (ValidationError, TypeError, KeyError) as exc:
                    self.invalid_readings += 1
                    log.warning("dropping a reading that breaks the contract: %s", exc)
                    continue
                rows.append((channel.value, protocol.encode(event), protocol.schema_property(event)))
            self.outbox.append(rows, first)

    def _settle_acks(self) -> None:
        done = []
        while self._acks:
            mid, ok = self._acks.popleft()
            seq = self._inflight.pop(mid, None)
            if seq is None:
                continue
            if ok:
                done.append(seq)
            else:  # the broker refused it: send it again from the outbox on the next round
                self._cursor = min(self._cursor, seq - 1)
        self.outbox.acknowledge(done)

    def _send(self) -> None:
        room = self.config.publish.max_inflight - len(self._inflight)
        if room <= 0 or not self.link.connected.is_set():
            return
        for item in self.outbox.pending(self._cursor, room):
            try:
                mid = self.link.publish(self._topics[item.channel], item.payload, qos=protocol.EVENT_QOS,
                                        schema=item.schema)
            except NotConnected:
                return
            self._inflight[mid] = item.seq
            self._cursor = item.seq

    async def _pump(self) -> None:
        heartbeat = self.config.publish.status_interval_s
        next_status = asyncio.get_running_loop().time() + heartbeat
        while True:
            self._wake.clear()
            self._flush_staged()
            self._settle_acks()
            if self._connected_since_status:
                self._connected_since_status = False
                self._publish_status()
            self._send()
            now = asyncio.get_running_loop().time()
            if now >= next_status:
                self._publish_status()
                next_status = now + heartbeat
            if self._stopping and not self._staged:
                return
            try:
                await asyncio.wait_for(self._wake.wait(), timeout=min(0.5, max(0.01, next_status - now)))
            except TimeoutError:
                pass

    async def _run_source(self, source: Source) -> None:
        try:
            await source.run(self.emit)
            log.info("source %s finished", source.name)
        except asyncio.CancelledError:
            raise
        except Exception:
            log.exception("source %s failed; the node goes on without it", source.name)

    async def run(self, stop: asyncio.Event) -> None:
        """Run until `stop` is set, then drain briefly and disconnect with an `offline` status."""
        self._loop = asyncio.get_running_loop()
        log.info("node %s/%s boot %s: %d events waiting in the outbox, last seq %d",
                 self.config.store_id, self.config.node_id, self.boot_id, self.outbox.depth, self.outbox.last_seq)
        self.link.start()
        pump = asyncio.create_task(self._pump(), name="pump")
        tasks = [asyncio.create_task(self._run_source(s), name=s.name) for s in self.sources]
        stop_wait = asyncio.create_task(stop.wait())
        await asyncio.wait([stop_wait, pump], return_when=asyncio.FIRST_COMPLETED)
        for task in tasks:
            task.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)
        await self._drain(self.config.publish.drain_timeout_s)
        self._stopping = True
        self._wake.set()
        await pump
        self._settle_acks()
        await asyncio.to_thread(self.link.stop, (self._topics[Channel.STATUS.value],
                                                 protocol.encode(self._status("offline"))))
        self.outbox.close()
        stop_wait.cancel()

    async def _drain(self, timeout: float) -> None:
        loop = asyncio.get_running_loop()
        deadline = loop.time() + timeout
        while loop.time() < deadline and (self._staged or self.outbox.depth) and self.link.connected.is_set():
            await asyncio.sleep(0.02)
