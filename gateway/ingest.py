"""From MQTT messages to committed rows, acknowledged only once they are durable.

`triage` is pure: it sorts one message into an accepted event, a status update, a dead letter or
nothing. The `Ingestor` thread drains whatever has arrived (group commit: one transaction per
drain, so batches grow with load and latency stays low when it is light), commits, and only then
sends the PUBACKs, so a gateway killed at any moment loses nothing: the broker redelivers what was
not acknowledged, and the unique key drops what had been committed.
"""

from __future__ import annotations

import functools
import logging
import threading
import time
from collections import deque
from collections.abc import Callable
from dataclasses import dataclass

from edge import protocol
from edge.mqtt import Inbound
from edge.protocol import Channel, NodeStatus, PayloadError, TopicError
from gateway.store import Accepted, DeadLetter, EventStore

log = logging.getLogger(__name__)

Triaged = Accepted | NodeStatus | DeadLetter | None


@functools.lru_cache(maxsize=4096)
def _route(name: str) -> tuple[str, str, Channel] | str:
    """parse_topic, remembered: a store has a few dozen topics and each is seen thousands of times."""
    try:
        return protocol.parse_topic(name)
    except TopicError as err:
        return str(err)


def triage(message: Inbound, store_id: str, known_nodes: set[str], max_bytes: int) -> Triaged:
    route = _route(message.topic)
    if isinstance(route, str):
        return DeadLetter(message.topic, None, "bad_topic", route, message.payload)
    store, node_id, channel = route
    if store != store_id:
        return DeadLetter(message.topic, None, "foreign_store", f"store {store!r} is not this gateway's", message.payload)
    if node_id not in known_nodes:
        return DeadLetter(message.topic, node_id, "unknown_node",
                          f"node {node_id!r} is not a known node of store {store_id!r}", message.payload)
    if channel is Channel.CONFIG:
        return None  # our own retained configs echoed back
    try:
        if channel is Channel.STATUS:
            if not message.payload:
                return None  # a cleared retained status
            if len(message.payload) > max_bytes:
                raise PayloadError("oversize", f"payload of {len(message.payload)} bytes exceeds the limit of {max_bytes}")
            status = protocol.decode_status(message.payload)
            if status.node_id != node_id:
                raise PayloadError("node_mismatch",
                                   f"node_id {status.node_id!r} in payload does not match topic node {node_id!r}")
            return status
        event = protocol.decode_event(channel, node_id, message.payload, max_bytes)
    except PayloadError as err:
        return DeadLetter(message.topic, node_id, err.code, str(err), message.payload)
    return Accepted(event, protocol.EVENT_KINDS[channel], message.payload)


@dataclass
class IngestCounters:
    received: int = 0
    stored: int = 0
    duplicates: int = 0
    dead_letters: int = 0
    batches: int = 0


class Ingestor:
    def __init__(self, store: EventStore, store_id: str, known_nodes: set[str], max_bytes: int, max_batch: int,
                 queue_limit: int, ack: Callable[[int, int], None],
                 on_commit: Callable[[list[Accepted]], None] | None = None) -> None:
        self.store = store
        self.store_id = store_id
        self.known_nodes = known_nodes
        self.max_bytes = max_bytes
        self.max_batch = max_batch
        self.counters = IngestCounters()
        self._ack = ack
        self._on_commit = on_commit
        self.queue_limit = queue_limit
        self._inbox: deque[Inbound] = deque()  # appended on the MQTT thread, drained here: no lock per message
        self._arrived = threading.Event()
        self._stopping = False
        self._thread = threading.Thread(target=self._run, name="ingest", daemon=True)
        self.failed: BaseException | None = None

    def start(self) -> None:
        self._thread.start()

    @property
    def backlog(self) -> int:
        return len(self._inbox)

    def submit(self, message: Inbound) -> None:
        """Called on the MQTT thread; waits while the writer is far behind, which holds the broker back."""
        self._inbox.append(message)
        if not self._arrived.is_set():
            self._arrived.set()
        while len(self._inbox) > self.queue_limit and self._thread.is_alive():
            time.sleep(0.001)

    def stop(self, timeout: float = 10.0) -> None:
        self._stopping = True
        self._arrived.set()
        self._thread.join(timeout)

    def _run(self) -> None:
        inbox = self._inbox
        while True:
            if not inbox:
                if self._stopping:
                    return
                self._arrived.wait(0.5)
                self._arrived.clear()
                continue
            batch = [inbox.popleft() for _ in range(min(len(inbox), self.max_batch))]
            try:
                self._commit(batch)
            except Exception as exc:  # the database is broken: stop acknowledging, let the broker keep it
                self.failed = exc
                log.exception("ingest stopped: cannot commit to the database")
                return

    def _commit(self, batch: list[Inbound]) -> None:
        accepted: list[Accepted] = []
        dead: list[DeadLetter] = []
        statuses: list[NodeStatus] = []
        for message in batch:
            result = triage(message, self.store_id, self.known_nodes, self.max_bytes)
            if isinstance(result, Accepted):
                accepted.append(result)
            elif isinstance(result, DeadLetter):
                dead.append(result)
                log.warning("dead letter on %s: %s", result.topic[:200], result.reason)
            elif isinstance(result, NodeStatus):
                statuses.append(result)
        new = self.store.write(accepted, dead, statuses)
        for message in batch:
            self._ack(message.mid, message.qos)
        c = self.counters
        c.received += len(batch)
        c.stored += new
        c.duplicates += len(accepted) - new
        c.dead_letters += len(dead)
        c.batches += 1
        if self._on_commit and accepted:
            self._on_commit(accepted)
