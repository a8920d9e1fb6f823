"""The Wi-Fi source: probe requests from a monitor-mode interface or a pcap -> linked devices -> the radio pipeline.

Frames are read in batches on a worker thread (a packet socket blocks) and processed on the event
loop: parse, link the phone's rotating random MACs into one device (`ProbeLinker`), then the
shared pipeline (store devices, zone state, pseudonyms). A device's key is the first address the
node heard it use, so a phone keeps one pseudonym for the day however often its MAC changes while
it is linked. An interface that fails (unplugged dongle, monitor mode lost) is reopened with
capped backoff. A pcap is replayed with its own timestamps, as fast as it can be read or paced.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Protocol

from pydantic import Field, model_validator

from edge.backoff import Backoff
from edge.protocol import RemoteConfig
from edge.radio.pcap import read_pcap
from edge.radio.pipeline import RadioOptions, RadioPipeline
from edge.radio.presence import PathLoss, ZoneRules
from edge.radio.probe import MalformedFrame, parse_probe
from edge.radio.wifi_devices import ProbeLinker
from edge.sources import Emit

log = logging.getLogger(__name__)

BATCH = 512
BATCH_WAIT_S = 0.2


class FrameSocket(Protocol):
    """What a monitor-mode packet socket offers: `recv` one frame, b"" at the end of the input."""

    def recv(self, bufsize: int = 65535) -> bytes: ...

    def close(self) -> None: ...


class WifiOptions(RadioOptions):
    interface: str | None = Field(None, description="Monitor-mode interface, e.g. 'wlan1mon'.")
    pcap: Path | None = Field(None, description="Replay this capture (radiotap, linktype 127) instead.")
    replay_speed: float = Field(0.0, ge=0, description="Pcap replay pace: 1 is real time, 0 as fast as possible.")
    path_loss: PathLoss = PathLoss(rssi_1m=-40.0, exponent=2.2)
    # A phone probes in bursts about once a minute, not every second as it advertises over BLE:
    # wider windows, and an entry needs two near bursts at least 30 s apart.
    zone_rules: ZoneRules = ZoneRules(window_s=90, enter_after_s=30, exit_after_s=120, timeout_s=300,
                                      dwell_every_s=120)
    link_s: float = Field(60.0, gt=0, description="A new random MAC joins a like device heard this recently.")
    reopen_initial_s: float = Field(1.0, gt=0, description="First wait before reopening a failed interface.")
    reopen_max_s: float = Field(60.0, gt=0, description="Longest wait between reopenings.")

    @model_validator(mode="after")
    def _one_input(self) -> WifiOptions:
        if (self.interface is None) == (self.pcap is None):
            raise ValueError("give exactly one of 'interface' (live capture) or 'pcap' (replay)")
        return self


def monitor_socket(options: WifiOptions) -> FrameSocket:
    from edge.radio.monitor import MonitorSocket

    assert options.interface is not None
    return MonitorSocket(options.interface)


class WifiSource:
    Options = WifiOptions

    def __init__(self, name: str, options: WifiOptions,
                 socket_factory: Callable[[], FrameSocket] | None = None,
                 clock: Callable[[FrameSocket], float] | None = None) -> None:
        """`clock(socket)` is the time of the frame just received; live capture uses the wall clock."""
        self.name = name
        self.options = options
        self.socket_factory = socket_factory or (lambda: monitor_socket(options))
        self.clock = clock or (lambda _sock: time.time())
        self.linker = ProbeLinker(link_s=options.link_s)
        self.pipeline: RadioPipeline | None = None
        self._config: RemoteConfig | None = None
        self.frames = 0
        self.probes = 0
        self.reopens = 0

    def apply_config(self, config: RemoteConfig) -> None:
        self._config = config
        if self.pipeline is not None:
            self.pipeline.apply_config(config)

    def on_frame(self, t: float, frame: bytes) -> None:
        pipeline = self.pipeline
        assert pipeline is not None
        self.frames += 1
        try:
            probe = parse_probe(frame)
        except MalformedFrame:
            pipeline.rejected()
            return
        if probe is None:
            return  # another kind of frame: a monitor interface hears everything
        if probe.rssi is None:
            pipeline.rejected()
            return
        self.probes += 1
        pipeline.sighting(t, ("wifi", self.linker.link_identity(t, probe)), float(probe.rssi), probe.src)

    async def run(self, emit: Emit) -> None:
        self.pipeline = RadioPipeline("wifi", self.options, emit)
        if self._config is not None:
            self.pipeline.apply_config(self._config)
        last = time.time()
        try:
            if self.options.pcap is not None:
                last = await self._replay(self.options.pcap)
            else:
                last = await self._capture()
        finally:
            self.pipeline.close(last)

    async def _replay(self, path: Path) -> float:
        frames = read_pcap(path)
        first: float | None = None
        wall0 = time.monotonic()
        t = time.time()
        while True:
            batch = _take(frames, BATCH)
            if not batch:
                return t
            for t, frame in batch:
                if first is None:
                    first = t
                if self.options.replay_speed > 0:
                    delay = (t - first) / self.options.replay_speed - (time.monotonic() - wall0)
                    if delay > 0:
                        await asyncio.sleep(delay)
                self.on_frame(t, frame)
            await asyncio.sleep(0)

    async def _capture(self) -> float:
        backoff = Backoff(self.options.reopen_initial_s, self.options.reopen_max_s)
        t = time.time()
        while True:
            try:
                sock = self.socket_factory()
            except OSError as exc:
                delay = backoff.next()
                self.reopens += 1
                log.warning("%s: cannot open the Wi-Fi capture: %s; retrying in %.1f s", self.name, exc, delay)
                await asyncio.sleep(delay)
                continue
            try:
                while True:
                    batch, ended, failure = await asyncio.to_thread(self._read_batch, sock)
                    for t, frame in batch:
                        self.on_frame(t, frame)
                    if failure is not None:
                        raise failure
                    backoff.reset()
                    assert self.pipeline is not None
                    self.pipeline.tick(t if batch else self.clock(sock))
                    if ended:
                        return t
            except OSError as exc:
                delay = backoff.next()
                self.reopens += 1
                log.warning("%s: Wi-Fi capture failed: %s; reopening in %.1f s", self.name, exc, delay)
                await asyncio.sleep(delay)
            finally:
                sock.close()

    def _read_batch(self, sock: FrameSocket) -> tuple[list[tuple[float, bytes]], bool, OSError | None]:
        """Up to BATCH frames or BATCH_WAIT_S of waiting: (frames, input ended, the error that stopped it).

        A failing interface still hands over the frames read before it failed.
        """
        batch: list[tuple[float, bytes]] = []
        deadline = time.monotonic() + BATCH_WAIT_S
        while len(batch) < BATCH and time.monotonic() < deadline:
            try:
                frame = sock.recv(65535)
            except TimeoutError:
                break
            except OSError as exc:
                return batch, False, exc
            if not frame:
                return batch, True, None
            batch.append((self.clock(sock), frame))
        return batch, False, None


def _take(frames: Iterator[tuple[float, bytes]], n: int) -> list[tuple[float, bytes]]:
    batch = []
    for item in frames:
        batch.append(item)
        if len(batch) >= n:
            break
    return batch
