"""Live push channels of apps in the store: WebSocket or Server-Sent Events, one queue per connection.

The offer engine runs on the ingest thread; `deliver` hands a message to the API's event loop
without blocking it. An install with no open connection is not an error: `deliver` says so and
the caller falls back to a background push service (FCM, APNs, Web Push).
"""

from __future__ import annotations

import asyncio
import threading
from typing import Any

CLOSE = object()  # put on an install's queues when its consent is withdrawn


class PushHub:
    def __init__(self) -> None:
        self.loop: asyncio.AbstractEventLoop | None = None
        self._queues: dict[str, set[asyncio.Queue[Any]]] = {}
        self._lock = threading.Lock()

    def connect(self, install_id: str) -> asyncio.Queue[Any]:
        """Called on the API's loop when an app opens its channel."""
        self.loop = asyncio.get_running_loop()
        queue: asyncio.Queue[Any] = asyncio.Queue(maxsize=100)
        with self._lock:
            self._queues.setdefault(install_id, set()).add(queue)
        return queue

    def disconnect(self, install_id: str, queue: asyncio.Queue[Any]) -> None:
        with self._lock:
            queues = self._queues.get(install_id)
            if queues is not None:
                queues.discard(queue)
                if not queues:
                    del self._queues[install_id]

    def connected(self, install_id: str) -> bool:
        return install_id in self._queues

    def deliver(self, install_id: str, message: dict[str, Any]) -> bool:
        """From any thread: True if the install has a live channel the message was queued on."""
        return self._put(install_id, message)

    def close(self, install_id: str) -> None:
        """End the install's live channels (consent withdrawn)."""
        self._put(install_id, CLOSE)

    def _put(self, install_id: str, item: Any) -> bool:
        with self._lock:
            queues = list(self._queues.get(install_id, ()))
        if not queues or self.loop is None or self.loop.is_closed():
            return False
        for queue in queues:
            self.loop.call_soon_threadsafe(_offer, queue, item)
        return True


def _offer(queue: asyncio.Queue[Any], item: Any) -> None:
    if queue.full():  # a stalled client loses its oldest offer, not the loop's time
        queue.get_nowait()
    queue.put_nowait(item)
