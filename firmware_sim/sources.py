"""The simulator behind the real hardware interfaces, so the same edge code runs on either.

- `SimCapture` behaves as `cv2.VideoCapture`: `isOpened`, `read`, `grab`/`retrieve`, `get`, `set`,
  `release`, frames at the camera's resolution and rate, then `(False, None)` at the end.
- `SimBleakScanner` behaves as `bleak.BleakScanner`: constructed with a `detection_callback`,
  `await start()` / `await stop()` or `async with`, and calls the callback with bleak's own
  `BLEDevice` and `AdvertisementData`.
- `SimMonitorSocket` behaves as a monitor-mode `AF_PACKET` socket: `recv()` returns one radiotap +
  802.11 frame; `write_pcap` writes the same bytes to a capture file for replay.

All of them read one shared `World` (and `SimClock` for pacing), so the cameras and radios of a
store see the same shoppers at the same moments.
"""

from __future__ import annotations

import asyncio
import threading
import time
from collections import deque
from collections.abc import Callable
from pathlib import Path
from typing import Any

import cv2
import numpy as np
from bleak.backends.device import BLEDevice
from bleak.backends.scanner import AdvertisementData

from firmware_sim.dot11 import PcapWriter
from firmware_sim.world import BleReception, World

RADIO_WINDOW_S = 5.0
RECV_TIMEOUT_S = 0.25


class SimClock:
    """Simulated time: `start` plus wall time since creation times `speed`; speed 0 means unpaced."""

    def __init__(self, start: float, speed: float = 1.0) -> None:
        self.start, self.speed = start, speed
        self._wall0 = time.monotonic()

    def wall_delay(self, when: float) -> float:
        """Seconds to wait before simulated time `when` is due; 0 when unpaced or already due."""
        if self.speed <= 0:
            return 0.0
        return max(0.0, (when - self.start) / self.speed - (time.monotonic() - self._wall0))


class RadioFeed:
    """Cuts the world's radio output into per-node queues, window by window, for several consumers."""

    def __init__(self, world: World) -> None:
        self.world = world
        self._next = world.start
        self.ble: dict[int, deque[BleReception]] = {}
        self.wifi: dict[int, deque[Any]] = {}
        self._lock = threading.Lock()

    def subscribe(self, node: int, ble: bool = True, wifi: bool = True) -> None:
        """Queue this node's receptions of the radios asked for; the others are not kept."""
        if ble:
            self.ble.setdefault(node, deque())
        if wifi:
            self.wifi.setdefault(node, deque())

    def advance(self) -> bool:
        """Simulate the next window; False when the period is over.

        Thread-safe: a Wi-Fi source reads its socket on a worker thread while the BLE scanner of the
        same node runs on the event loop, and the world must see each window exactly once, in order.
        """
        with self._lock:
            if self._next >= self.world.end:
                return False
            end = min(self._next + RADIO_WINDOW_S, self.world.end)
            window = self.world.radio(self._next, end, ble_nodes=self.ble.keys(), wifi_nodes=self.wifi.keys())
            self._next = end
            for r in window.ble:  # the world made only the subscribers' receptions
                self.ble[r.node].append(r)
            for w in window.wifi:
                self.wifi[w.node].append(w)
        return True


class SimCapture:
    """A `cv2.VideoCapture` look-alike that renders the world from a camera node's pose."""

    def __init__(self, world: World, node_id: str, clock: SimClock | None = None) -> None:
        self.world = world
        self.renderer = world.renderer(node_id)
        cam = self.renderer.camera.sensor
        self.fps = cam.fps
        self.width, self.height = cam.resolution
        self.clock = clock
        self._index = 0
        self._frames = int((world.end - world.start) * self.fps)
        self._open = True
        self._grabbed: np.ndarray | None = None

    def isOpened(self) -> bool:  # noqa: N802 - OpenCV's name
        return self._open

    def _now(self) -> float:
        return self.world.start + self._index / self.fps

    def grab(self) -> bool:
        if not self._open or self._index >= self._frames:
            self._grabbed = None
            return False
        when = self._now()
        if self.clock is not None and (delay := self.clock.wall_delay(when)) > 0:
            time.sleep(delay)
        self._grabbed = self.renderer.render(when, self.world.figures(when), self._index)
        self._index += 1
        return True

    def retrieve(self) -> tuple[bool, np.ndarray | None]:
        return (self._grabbed is not None), self._grabbed

    def read(self) -> tuple[bool, np.ndarray | None]:
        return self.retrieve() if self.grab() else (False, None)

    def get(self, prop: int) -> float:
        values = {cv2.CAP_PROP_FRAME_WIDTH: self.width, cv2.CAP_PROP_FRAME_HEIGHT: self.height,
                  cv2.CAP_PROP_FPS: self.fps, cv2.CAP_PROP_POS_FRAMES: self._index,
                  cv2.CAP_PROP_POS_MSEC: 1000.0 * self._index / self.fps, cv2.CAP_PROP_FRAME_COUNT: self._frames}
        return float(values.get(prop, 0.0))

    def set(self, prop: int, value: float) -> bool:
        """Like a real camera, only what the hardware supports: here, nothing but seeking."""
        if prop == cv2.CAP_PROP_POS_FRAMES:
            self._index = max(0, min(int(value), self._frames))
            return True
        return False

    def release(self) -> None:
        self._open = False
        self._grabbed = None


class SimBleakScanner:
    """A `bleak.BleakScanner` look-alike for one node; hands bleak's own types to the callback."""

    def __init__(self, feed: RadioFeed, node_id: str,
                 detection_callback: Callable[[BLEDevice, AdvertisementData], Any] | None = None,
                 clock: SimClock | None = None, **_: Any) -> None:
        self.feed = feed
        self.node = feed.world.node_index[node_id]
        feed.subscribe(self.node, wifi=False)
        self.callback = detection_callback
        self.clock = clock
        self._task: asyncio.Task[None] | None = None
        self.finished = asyncio.Event()
        self.last_time: float | None = None  # simulated time of the advert being delivered

    async def start(self) -> None:
        self._task = asyncio.create_task(self._run())

    async def stop(self) -> None:
        if self._task:
            self._task.cancel()
            await asyncio.gather(self._task, return_exceptions=True)

    async def __aenter__(self) -> SimBleakScanner:
        await self.start()
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.stop()

    async def _run(self) -> None:
        queue = self.feed.ble[self.node]
        try:
            while queue or self.feed.advance():
                while queue:
                    r = queue.popleft()
                    if self.clock is not None and (delay := self.clock.wall_delay(r.when)) > 0:
                        await asyncio.sleep(delay)
                    self.last_time = r.when
                    if self.callback is not None:
                        self.callback(*to_bleak(r))
                await asyncio.sleep(0)
        finally:
            self.finished.set()


def to_bleak(r: BleReception) -> tuple[BLEDevice, AdvertisementData]:
    a = r.advert
    data = AdvertisementData(local_name=a.local_name, manufacturer_data=a.manufacturer_data,
                             service_data=a.service_data, service_uuids=a.service_uuids,
                             tx_power=a.tx_power, rssi=r.rssi, platform_data=())
    return BLEDevice(a.address, a.local_name, None), data


class SimMonitorSocket:
    """A monitor-mode packet socket look-alike: `recv()` returns the next raw frame, b"" at the end."""

    def __init__(self, feed: RadioFeed, node_id: str, clock: SimClock | None = None) -> None:
        self.feed = feed
        self.node = feed.world.node_index[node_id]
        feed.subscribe(self.node, ble=False)
        self.clock = clock
        self.last_time: float | None = None

    def recv(self, bufsize: int = 65535) -> bytes:
        queue = self.feed.wifi[self.node]
        while not queue:
            if not self.feed.advance():
                return b""
        r = queue[0]
        if self.clock is not None and (delay := self.clock.wall_delay(r.when)) > 0:
            time.sleep(min(delay, RECV_TIMEOUT_S))
            if delay > RECV_TIMEOUT_S:
                raise TimeoutError("no frame due yet")  # as a real socket with a timeout: the reader may stop
        queue.popleft()
        self.last_time = r.when
        return r.frame[:bufsize]

    def close(self) -> None:
        self.feed.wifi[self.node].clear()


def write_pcap(world: World, node_id: str, path: Path) -> int:
    """Everything one node's Wi-Fi sniffer hears over the world's period, as a pcap file."""
    sock = SimMonitorSocket(RadioFeed(world), node_id)
    writer = PcapWriter.to_file(path)
    n = 0
    try:
        while frame := sock.recv():
            assert sock.last_time is not None
            writer.write(sock.last_time, frame)
            n += 1
    finally:
        writer.close()
    return n
