"""Camera inputs and the camera node source: clear errors, reopening, counts events, nothing but numbers out."""

from __future__ import annotations

import asyncio
import datetime as dt
import socket
import sys
import threading
import time
import urllib.request
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import cv2
import numpy as np
import pytest

from edge.backoff import Backoff
from edge.protocol import Channel, CountsEvent, RemoteConfig
from edge.settings import ConfigError
from edge.vision.camera_source import CameraOptions, CameraSource, next_reset
from edge.vision.frames import (
    FrameSourceError,
    ReopeningFrames,
    VideoCaptureSource,
    redact,
)

# --- fakes -------------------------------------------------------------------------------------------


@dataclass
class Crossing:
    frame: int
    track_id: int
    direction: str


@dataclass
class Result:
    crossings: list[Crossing]
    people_in_view: int
    tracks: list[Any] = field(default_factory=list)


class ScriptedCounter:
    """Emits the scripted crossings when a frame index is reached; `people` people always in view."""

    def __init__(self, script: dict[int, list[str]] | None = None, people: int = 2) -> None:
        self.script = script or {}
        self.people = people
        self.seen: list[int] = []

    def process(self, frame: np.ndarray, index: int) -> Result:
        assert isinstance(frame, np.ndarray)
        self.seen.append(index)
        return Result([Crossing(index, i, d) for i, d in enumerate(self.script.get(index, []))], self.people)


class TimelineFrames:
    """A file-like input: `n` frames on its own timeline from `t0` at `fps`, then the end."""

    live = False

    def __init__(self, n: int, t0: float, fps: float = 10.0) -> None:
        self.uri, self.n, self.t0, self.fps = "timeline", n, t0, fps
        self.size: tuple[int, int] | None = (32, 24)
        self.last_time: float | None = None
        self.i = 0

    def open(self) -> None:
        self.i = 0

    def read(self) -> tuple[bool, np.ndarray | None]:
        if self.i >= self.n:
            return False, None
        self.last_time = self.t0 + self.i / self.fps
        self.i += 1
        return True, np.full((24, 32, 3), self.i % 255, np.uint8)

    def release(self) -> None:
        pass


class FlakyDevice:
    """A live camera: delivers `good` frames, then disappears (reads and reopens fail) for `gone` opens."""

    live = True

    def __init__(self, good: int = 5, gone: int = 2, delay_s: float = 0.0) -> None:
        self.uri, self.fps = "flaky0", 50.0
        self.size: tuple[int, int] | None = (32, 24)
        self.last_time: float | None = None
        self.good, self.gone, self.delay_s = good, gone, delay_s
        self.delivered = 0
        self.opens = 0
        self.failed_opens = 0
        self.is_open = False

    def open(self) -> None:
        self.opens += 1
        if self.delivered >= self.good and self.failed_opens < self.gone:
            self.failed_opens += 1
            raise FrameSourceError(self.uri, "no such camera device (unplugged)")
        self.is_open = True

    def read(self) -> tuple[bool, np.ndarray | None]:
        if not self.is_open:
            return False, None
        if self.delivered == self.good and self.failed_opens < self.gone:
            return False, None  # it just went away
        if self.delay_s:
            time.sleep(self.delay_s)
        self.delivered += 1
        self.last_time = time.time()
        return True, np.zeros((24, 32, 3), np.uint8)

    def release(self) -> None:
        self.is_open = False


def fast_backoff() -> Backoff:
    return Backoff(0.01, 0.05)


def assert_numbers_only(emitted: list[tuple[Channel, dict[str, Any]]]) -> None:
    """No pixels, bytes or arrays in any emitted field: only numbers, strings, times and {zone: int}."""
    assert emitted
    for channel, fields in emitted:
        assert channel is Channel.COUNTS
        for key, value in fields.items():
            if key == "zones":
                assert isinstance(value, dict)
                assert all(isinstance(k, str) and type(v) is int for k, v in value.items()), value
            elif key == "ts":
                assert isinstance(value, dt.datetime) and value.tzinfo is not None
            else:
                assert type(value) in (int, float, str), (key, type(value))
            assert not isinstance(value, (bytes, bytearray, memoryview, np.ndarray, list, tuple))
        CountsEvent(**fields, node_id="cam", boot_id="b00t", seq=1)  # follows the contract


def run(source: CameraSource) -> list[tuple[Channel, dict[str, Any]]]:
    emitted: list[tuple[Channel, dict[str, Any]]] = []
    asyncio.run(source.run(lambda channel, fields: emitted.append((channel, fields))))
    return emitted


# --- unreadable inputs -------------------------------------------------------------------------------------


def test_missing_file_is_a_clear_error(tmp_path: Path) -> None:
    path = tmp_path / "nope.mp4"
    with pytest.raises(FrameSourceError) as err:
        VideoCaptureSource(str(path)).open()
    assert str(path) in str(err.value) and "file not found" in str(err.value)


def test_text_file_named_avi_is_not_a_video(tmp_path: Path) -> None:
    path = tmp_path / "notes.avi"
    path.write_text("this is not a video\n" * 50)
    with pytest.raises(FrameSourceError) as err:
        VideoCaptureSource(str(path)).open()
    assert str(path) in str(err.value) and "not a video" in str(err.value)


def test_rtsp_url_to_closed_port_fails_fast_and_clearly() -> None:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    url = f"rtsp://admin:secret@127.0.0.1:{port}/stream1"
    started = time.monotonic()
    with pytest.raises(FrameSourceError) as err:
        VideoCaptureSource(url, open_timeout_s=3).open()
    assert time.monotonic() - started < 5
    message = str(err.value)
    assert f"127.0.0.1:{port}" in message and "refused" in message
    assert "secret" not in message  # credentials never in messages or logs
    assert redact(url) == f"rtsp://admin:***@127.0.0.1:{port}/stream1"


def test_missing_device_is_a_clear_error() -> None:
    with pytest.raises(FrameSourceError) as err:
        VideoCaptureSource("57").open()
    assert "camera input 57" in str(err.value)


# --- a real video file ---------------------------------------------------------------------------------------


def write_video(path: Path, frames: int = 20, size: tuple[int, int] = (160, 120)) -> None:
    writer = cv2.VideoWriter(str(path), cv2.VideoWriter_fourcc(*"MJPG"), 10.0, size)
    assert writer.isOpened()
    for i in range(frames):
        writer.write(np.full((size[1], size[0], 3), i * 10, np.uint8))
    writer.release()


def test_file_reads_with_skip_resize_and_roi(tmp_path: Path) -> None:
    path = tmp_path / "clip.avi"
    write_video(path)
    source = VideoCaptureSource(str(path), width=80, height=60, skip=1, roi=(10, 5, 40, 30))
    source.open()
    assert source.size == (40, 30) and source.fps == pytest.approx(5.0) and not source.live
    levels = []
    while True:
        ok, frame = source.read()
        if not ok:
            break
        assert frame is not None and frame.shape == (30, 40, 3)
        levels.append(float(frame.mean()))
    source.release()
    assert len(levels) == 10  # every second frame of 20
    assert levels == pytest.approx([i * 20 for i in range(10)], abs=4)  # frames 0, 2, 4, ...


def test_file_fps_thins_and_roi_outside_is_an_error(tmp_path: Path) -> None:
    path = tmp_path / "clip.avi"
    write_video(path)
    source = VideoCaptureSource(str(path), fps=5)
    source.open()
    n = 0
    while source.read()[0]:
        n += 1
    assert n == 10
    with pytest.raises(FrameSourceError, match="outside"):
        VideoCaptureSource(str(path), roi=(100, 100, 100, 100)).open()


def test_file_end_ends_input_without_reopening(tmp_path: Path) -> None:
    path = tmp_path / "clip.avi"
    write_video(path, frames=6)
    frames = ReopeningFrames(VideoCaptureSource(str(path)), backoff=fast_backoff())
    frames.open()
    n = 0
    while frames.read()[0]:
        n += 1
    assert n == 6 and frames.ended and frames.state == "ended" and frames.outages == 0 and frames.reopens == 0


def test_unreadable_file_stays_an_error_through_the_wrapper(tmp_path: Path) -> None:
    frames = ReopeningFrames(VideoCaptureSource(str(tmp_path / "gone.avi")), backoff=fast_backoff())
    with pytest.raises(FrameSourceError, match="file not found"):
        frames.open()


# --- a camera that disappears and returns ----------------------------------------------------------------------


def test_live_camera_is_reopened_with_backoff_and_outage_counted() -> None:
    device = FlakyDevice(good=5, gone=3)
    frames = ReopeningFrames(device, backoff=fast_backoff())
    frames.open()
    got, states = 0, set()
    deadline = time.monotonic() + 5
    while got < 12 and time.monotonic() < deadline:
        ok, _ = frames.read(wait_s=0.05)
        got += ok
        states.add(frames.state)
    assert got == 12
    assert frames.outages == 1 and frames.reopens == 4  # three failed reopens, then back
    assert device.failed_opens == 3
    assert "down" in states and frames.state == "ok"
    health = frames.health()
    assert health["outage_s"] >= 0 and health["outage_since"] is None and "unplugged" in health["error"]


def test_live_camera_absent_at_start_is_an_outage_not_a_crash() -> None:
    device = FlakyDevice(good=0, gone=2)
    frames = ReopeningFrames(device, backoff=fast_backoff())
    frames.open()
    assert frames.state == "down" and frames.outages == 1
    deadline = time.monotonic() + 3
    while not frames.read(wait_s=0.05)[0]:
        assert time.monotonic() < deadline
    assert frames.state == "ok" and frames.outages == 1


def test_camera_source_counts_on_after_the_camera_returns() -> None:
    device = FlakyDevice(good=10, gone=2, delay_s=0.01)
    counter = ScriptedCounter({3: ["in"], 12: ["in", "in"], 15: ["out"]})
    options = CameraOptions(uri="0", counts_interval_s=0.2, reopen_initial_s=0.05, reopen_max_s=0.1, zone="entrance")
    source = CameraSource("camera-0", options, counter=counter, frames=device)
    emitted: list[tuple[Channel, dict[str, Any]]] = []

    async def main() -> None:
        task = asyncio.create_task(source.run(lambda ch, f: emitted.append((ch, f))))
        deadline = time.monotonic() + 8
        while not (counter.seen and counter.seen[-1] >= 20 and sum(f["line_out"] for _, f in emitted) >= 1):
            assert time.monotonic() < deadline, (counter.seen[-1:], emitted, source.health)
            await asyncio.sleep(0.05)
        task.cancel()
        await asyncio.gather(task, return_exceptions=True)

    asyncio.run(main())
    assert sum(f["line_in"] for _, f in emitted) == 3 and sum(f["line_out"] for _, f in emitted) == 1
    assert emitted[-1][1]["occupancy"] == 2
    health = source.health
    assert health["outages"] == 1 and health["state"] == "ok" and health["frames"] >= 20
    assert set(health) >= {"frames", "outages", "outage_s", "state"}
    assert_numbers_only(emitted)
    assert not device.is_open  # released when the source stopped


# --- counts events ---------------------------------------------------------------------------------------------------


T0 = dt.datetime(2025, 3, 3, 10, 0, tzinfo=dt.UTC).timestamp()


def test_counts_events_sum_crossings_per_interval() -> None:
    # 10 fps, 60 frames = 6 s; 2 s intervals: frames 1-20, 21-40, 41-60
    script = {2: ["in"], 5: ["in", "in"], 19: ["out"], 25: ["out", "out"], 30: ["out"], 44: ["in"]}
    options = CameraOptions(uri="clip.mp4", counts_interval_s=2.0, zone="entrance")
    source = CameraSource("camera-0", options, counter=ScriptedCounter(script, people=3),
                          frames=TimelineFrames(60, T0))
    emitted = run(source)
    assert_numbers_only(emitted)
    rows = [(f["line_in"], f["line_out"], f["occupancy"]) for _, f in emitted]
    assert rows == [(3, 1, 2), (0, 3, 0), (1, 0, 1)]  # an extra out never takes occupancy below 0
    assert [f["ts"].timestamp() - T0 for _, f in emitted] == pytest.approx([2.0, 4.0, 6.0])
    assert [f["interval_s"] for _, f in emitted] == pytest.approx([2.0, 2.0, 2.0])
    assert all(f["zones"] == {"entrance": 3} for _, f in emitted)
    assert source.health["state"] == "ended" and source.health["frames"] == 60


def test_zone_comes_from_the_gateway_config() -> None:
    source = CameraSource("camera-0", CameraOptions(uri="clip.mp4", counts_interval_s=1.0),
                          counter=ScriptedCounter(people=1), frames=TimelineFrames(10, T0))
    source.apply_config(RemoteConfig(node_id="cam", version=2, issued_at=dt.datetime.now(dt.UTC), zone="tills"))
    emitted = run(source)
    assert [f["zones"] for _, f in emitted] == [{"tills": 1}]


def test_occupancy_resets_at_the_configured_local_time() -> None:
    start = dt.datetime(2025, 3, 3, 23, 59, 56, tzinfo=dt.timezone(dt.timedelta(hours=2))).timestamp()
    # frames 1-40 span 23:59:56 .. 00:00:00 local; reset at 00:00 local (UTC+2)
    script = {2: ["in", "in", "in"], 45: ["in"], 70: ["out", "out"]}
    options = CameraOptions(uri="clip.mp4", counts_interval_s=2.0, occupancy_reset="00:00", utc_offset_h=2)
    emitted = run(CameraSource("camera-0", options, counter=ScriptedCounter(script),
                               frames=TimelineFrames(80, start)))
    assert_numbers_only(emitted)
    occupancy = [f["occupancy"] for _, f in emitted]
    assert occupancy == [3, 3, 1, 0]
    assert sum(f["line_in"] for _, f in emitted) == 4 and sum(f["line_out"] for _, f in emitted) == 2


def test_next_reset_is_the_next_occurrence() -> None:
    t = dt.datetime(2025, 3, 3, 3, 0, tzinfo=dt.UTC).timestamp()
    assert next_reset(t, "04:00", 0) - t == 3600
    assert next_reset(t, "02:00", 0) - t == 23 * 3600
    assert next_reset(t, "04:00", None) > t


def test_bad_options_are_config_errors() -> None:
    with pytest.raises(ValueError, match="HH:MM"):
        CameraOptions(uri="0", occupancy_reset="25:99")
    with pytest.raises(ValueError, match="both width and height"):
        CameraOptions(uri="0", width=640)
    with pytest.raises(ValueError, match="outside"):
        CameraOptions(uri="0", width=64, height=48, roi=(0, 0, 100, 10))
    with pytest.raises(ValueError, match="Extra inputs"):
        CameraOptions(uri="0", snapshot=True)


def test_missing_counting_core_is_named(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setitem(sys.modules, "edge.vision.counter", None)  # import fails
    with pytest.raises(ConfigError, match="edge.vision.counter"):
        CameraSource("camera-0", CameraOptions(uri="0"))


# --- the debug snapshot ------------------------------------------------------------------------------------------------


def snapshot_threads() -> int:
    return sum(t.name == "camera-snapshot" for t in threading.enumerate())


def test_snapshot_is_off_by_default() -> None:
    options = CameraOptions(uri="clip.mp4", counts_interval_s=1.0)
    assert options.snapshot_port is None
    source = CameraSource("camera-0", options, counter=ScriptedCounter(), frames=TimelineFrames(5, T0))
    seen: list[int] = []
    emitted: list[tuple[Channel, dict[str, Any]]] = []

    def emit(ch: Channel, f: dict[str, Any]) -> None:
        seen.append(snapshot_threads())
        assert source.snapshot is None
        emitted.append((ch, f))

    asyncio.run(source.run(emit))
    assert emitted and seen == [0] * len(emitted) and source._last_frame is None  # no frame even kept


def fetch(url: str) -> tuple[str, bytes]:
    with urllib.request.urlopen(url, timeout=2) as reply:
        return reply.headers["Content-Type"], reply.read()


def test_snapshot_when_on_serves_jpeg_on_loopback_only() -> None:
    device = FlakyDevice(good=10**9, gone=0, delay_s=0.01)
    pipeline = {"line": [[0.1, 0.5], [0.9, 0.5]], "zones": {"entrance": [[0, 0], [10, 0], [10, 10]]}}
    options = CameraOptions(uri="0", snapshot_port=0, pipeline=pipeline, counts_interval_s=0.2)
    source = CameraSource("camera-0", options, counter=ScriptedCounter(), frames=device)
    result: dict[str, Any] = {}

    async def main() -> None:
        task = asyncio.create_task(source.run(lambda ch, f: None))
        while source.snapshot is None or source.health["frames"] < 3:
            await asyncio.sleep(0.02)
        server = source.snapshot
        result["bound"] = server.httpd.server_address[0]
        result["type"], result["body"] = await asyncio.to_thread(fetch, server.url)
        result["port"] = server.port
        task.cancel()
        await asyncio.gather(task, return_exceptions=True)

    asyncio.run(main())
    assert result["bound"] == "127.0.0.1" and result["type"] == "image/jpeg"
    assert result["body"][:2] == b"\xff\xd8"
    image = cv2.imdecode(np.frombuffer(result["body"], np.uint8), cv2.IMREAD_COLOR)
    assert image.shape == (24, 32, 3) and image[12].max() > 0  # the line is drawn on a black frame
    assert snapshot_threads() == 0  # stopped with the source
    with pytest.raises(OSError):
        socket.create_connection(("127.0.0.1", result["port"]), timeout=0.5).close()


# --- the simulator's camera --------------------------------------------------------------------------------------------


def test_sim_camera_source_runs_on_simulated_time() -> None:
    from firmware_sim.vision_sources import SimCameraOptions, SimCameraSource

    start = dt.datetime(2025, 3, 3, 10, 0, tzinfo=dt.UTC)
    options = SimCameraOptions.model_validate({
        "counts_interval_s": 1.0, "width": 160, "height": 120, "skip": 1,
        "sim": {"node": "door-cam", "start": start.isoformat(), "duration_s": 3, "warmup_s": 0, "speed": 0},
    })
    counter = ScriptedCounter({3: ["in"]}, people=1)
    source = SimCameraSource("sim_camera-0", options, counter=counter)
    emitted = run(source)
    assert_numbers_only(emitted)
    assert len(counter.seen) == 15  # 3 s at 10 fps, every second frame
    assert [f["ts"].timestamp() - start.timestamp() for _, f in emitted] == pytest.approx([1.0, 2.0, 3.0])
    assert sum(f["line_in"] for _, f in emitted) == 1
    assert all(list(f["zones"]) == ["entrance"] for _, f in emitted)


def test_a_camera_outage_shows_in_the_nodes_status(tmp_path):
    from edge.config import NodeConfig
    from edge.node import Node
    from edge.protocol import NodeStatus, encode

    class Camera:
        name = "camera-0"
        health = {"state": "down", "frames": 120, "outages": 1, "outage_s": 12.5, "error": "refused",
                  "outage_since": 1_795_000_000.0}

        async def run(self, emit):
            return None

    node = Node(NodeConfig(store_id="s", node_id="n", data_dir=tmp_path), [Camera()])
    status = NodeStatus.model_validate_json(encode(node._status("online")))
    assert status.sources["camera-0"]["state"] == "down" and status.sources["camera-0"]["outages"] == 1
    node.outbox.close()
