"""The camera source: frames -> the counting core -> `events/counts` every interval.

Frames are read and counted on a worker thread (OpenCV blocks, and detection is CPU work that must
not stall the node's event loop); only numbers come back to the loop: for each frame its time, the
line crossings in and out, and the people in view (in total and per zone). Every
`counts_interval_s` the source emits one `Channel.COUNTS` reading: crossings in and out over the
interval, occupancy (in − out since the last reset, never below zero, reset daily at a local time),
and the people in each zone (the rounded mean over the interval's frames). An interval in which no
frame was processed (the camera was down throughout) is not reported: no data is not zero.

A live camera that stops delivering is reopened with capped backoff (`ReopeningFrames`); counting
goes on when it returns, with the occupancy carried over. `health` says how the camera is doing
(state, frames, outages and their total length) for the node's status.

The installer's placement (the gateway config's `camera`: line, direction and zones) replaces the
node's own line, flip and zones from the next frame on; every other counting setting stays the
node's, and what the counter has learnt (background, tracks, occupancy) carries over.

No frame leaves the node. The only ways to see one are on the node itself: the debug snapshot, off
by default, a tiny HTTP server on 127.0.0.1 that serves the latest frame as JPEG with the line and
zones drawn (or through an SSH tunnel), and `omnisense provision snapshot`, which writes one frame
to a local file.
"""

from __future__ import annotations

import asyncio
import datetime as dt
import logging
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any, Protocol

import cv2
import numpy as np
from pydantic import Field, ValidationError, field_validator, model_validator

from edge.backoff import Backoff
from edge.protocol import CameraPlacement, Channel, Identifier, RemoteConfig
from edge.settings import ConfigError, ConfigModel, format_validation_error
from edge.sources import Emit
from edge.vision.frames import FrameSource, ReopeningFrames, VideoCaptureSource

log = logging.getLogger(__name__)

BATCH = 32            # frames counted per trip to the worker thread
BATCH_WAIT_S = 0.25   # longest trip, so intervals close on time while a camera is down
SNAPSHOT_HOST = "127.0.0.1"


class Counter(Protocol):
    """The counting core as this source uses it (`edge.vision.counter.VisionPipeline`).

    `process` returns an object with `crossings` (each with `direction` "in" or "out", or the
    core's "increasing"/"decreasing", named by the counter's `line.in_out`) and
    `people_in_view` (int); optionally `zones` ({zone: people}). A counter may offer
    `draw(frame) -> frame` to paint its line and zones on the debug snapshot.
    """

    def process(self, frame: np.ndarray, index: int) -> Any: ...


class CameraOptions(ConfigModel):
    uri: str | int = Field(description="Device index ('0'), /dev/videoN, a video file, or an rtsp:// / http:// URL.")
    width: int | None = Field(None, ge=32, le=3840, description="Frame width to count at; frames are resized.")
    height: int | None = Field(None, ge=32, le=2160, description="Frame height to count at.")
    fps: float | None = Field(None, gt=0, le=120, description="Wanted frame rate; faster inputs are thinned to it.")
    skip: int = Field(0, ge=0, le=100, description="Drop this many frames after each counted one.")
    roi: tuple[int, int, int, int] | None = Field(
        None, description="Region of interest (x, y, w, h) in pixels of the resized frame; the rest is cropped.")
    zone: Identifier | None = Field(None, description="The zone the camera sees, until the gateway's config names one.")
    counts_interval_s: float = Field(10.0, gt=0, le=3600, description="Seconds per counts event.")
    pipeline: dict[str, Any] = Field(default_factory=dict,
                                     description="Settings of the counting core (edge.vision VisionSettings).")
    reopen_initial_s: float = Field(1.0, gt=0, description="First wait before reopening a failed camera.")
    reopen_max_s: float = Field(30.0, gt=0, description="Longest wait between reopen attempts.")
    open_timeout_s: float = Field(5.0, gt=0, le=120, description="How long a stream URL may take to open.")
    read_timeout_s: float = Field(5.0, gt=0, le=120, description="How long a stream may go without a frame.")
    occupancy_reset: str | None = Field(None, description="Local time 'HH:MM' at which occupancy is set to 0 "
                                        "(e.g. '04:00', when the store is closed); none: never.")
    utc_offset_h: float | None = Field(None, ge=-14, le=14,
                                       description="The store's UTC offset for the reset; none: the node's time zone.")
    snapshot_port: int | None = Field(None, ge=0, le=65535, description="Serve a debug snapshot (JPEG with "
                                      "the line and zones) on 127.0.0.1:PORT; none (default): off; 0: any free port.")

    @field_validator("occupancy_reset")
    @classmethod
    def _hhmm(cls, value: str | None) -> str | None:
        if value is None:
            return None
        try:
            dt.datetime.strptime(value, "%H:%M")
        except ValueError:
            raise ValueError(f"expected a local time 'HH:MM', got {value!r}") from None
        return value

    @model_validator(mode="after")
    def _pairs(self) -> CameraOptions:
        if (self.width is None) != (self.height is None):
            raise ValueError("give both width and height, or neither")
        if self.roi is not None:
            x, y, w, h = self.roi
            if x < 0 or y < 0 or w <= 0 or h <= 0:
                raise ValueError(f"roi (x, y, w, h) needs x, y >= 0 and w, h > 0, got {self.roi}")
            if self.width is not None and (x + w > self.width or y + h > self.height):  # type: ignore[operator]
                raise ValueError(f"roi {self.roi} reaches outside the {self.width}x{self.height} frame")
        return self


def build_counter(pipeline: dict[str, Any]) -> Counter:
    """The counting core from the `pipeline` options; ConfigError naming what is wrong."""
    try:
        from edge.vision.counter import VisionPipeline, VisionSettings
        from edge.vision.dnn import ModelError
    except ImportError as exc:
        raise ConfigError(f"the camera source needs the counting core edge.vision.counter, "
                          f"which cannot be imported: {exc}") from None
    try:
        settings = VisionSettings.model_validate(pipeline)
    except ValidationError as exc:
        detail = format_validation_error(exc, prefix="pipeline.")
        raise ConfigError(f"invalid counting settings:\n{detail}") from None
    try:
        return VisionPipeline(settings)
    except ModelError as exc:
        raise ConfigError(f"pipeline.detector_model: {exc}") from None


def placed(pipeline: dict[str, Any], placement: CameraPlacement | None) -> dict[str, Any]:
    """The node's own counting settings with the installer's line, direction and zones, if any."""
    if placement is None:
        return dict(pipeline)
    zones = {name: [list(p) for p in polygon] for name, polygon in placement.zones.items()}
    return {**pipeline, "line": placement.line, "flip": placement.flip, "zones": zones}


def replace_placement(counter: Counter, settings: Any) -> Counter:
    """The counter counting with `settings` (a VisionSettings differing in line, flip or zones).

    What was learnt carries over: the background model, the tracks, and the totals and occupancy so
    far. Only which side of the line each track is on starts afresh, so moving the line under a
    standing person counts nothing. A counter of another kind keeps its own line.
    """
    from edge.vision.counter import LineCounter, VisionPipeline

    if not isinstance(counter, VisionPipeline):
        log.debug("counter %s has no placement to change", type(counter).__name__)
        return counter
    new = VisionPipeline(settings, detector=counter.detector)
    old = counter.counter
    if old is not None:  # started: keep what it learnt
        new.tracker, new.size = counter.tracker, counter.size
        new.counter = LineCounter(new.line, old.band, old.confirm, old.person_height, old.companion_frames)
        new.counter.totals, new.counter.inside = dict(old.totals), old.inside
    return new


def in_or_out(counter: Counter, direction: str) -> str:
    """A crossing's direction as "in" or "out": the core names sides ("increasing"), its line knows the door."""
    if direction in ("in", "out"):
        return direction
    line = getattr(counter, "line", None)
    return line.in_out(direction) if hasattr(line, "in_out") else direction


def next_reset(t: float, hhmm: str, utc_offset_h: float | None) -> float:
    """Epoch seconds of the first `hhmm` local time after `t`."""
    hour, minute = (int(p) for p in hhmm.split(":"))
    if utc_offset_h is None:
        now = dt.datetime.fromtimestamp(t)  # naive local time; .timestamp() reads it back as local
        day = now.date()
        for _ in range(3):
            when = dt.datetime.combine(day, dt.time(hour, minute)).timestamp()
            if when > t:
                return when
            day += dt.timedelta(days=1)
        raise AssertionError("unreachable")
    tz = dt.timezone(dt.timedelta(hours=utc_offset_h))
    now = dt.datetime.fromtimestamp(t, tz)
    cand = now.replace(hour=hour, minute=minute, second=0, microsecond=0)
    if cand.timestamp() <= t:
        cand += dt.timedelta(days=1)
    return cand.timestamp()


@dataclass
class FrameCount:
    """What one counted frame contributes: numbers only, never pixels."""

    t: float
    line_in: int
    line_out: int
    people: int
    zones: dict[str, int] | None = None


@dataclass
class Interval:
    start: float
    frames: int = 0
    line_in: int = 0
    line_out: int = 0
    people: int = 0                                   # sum over frames, for the mean
    zones: dict[str, int] = field(default_factory=dict)  # sums over frames


def _point_list(value: Any) -> list[tuple[float, float]] | None:
    if isinstance(value, dict):
        for a, b in (("a", "b"), ("start", "end"), ("p1", "p2")):
            if a in value and b in value:
                return _point_list([value[a], value[b]])
        if all(k in value for k in ("x1", "y1", "x2", "y2")):
            return [(value["x1"], value["y1"]), (value["x2"], value["y2"])]
        return None
    try:
        points = [(float(p[0]), float(p[1])) for p in value]
    except (TypeError, ValueError, IndexError, KeyError):
        return None
    return points if len(points) >= 2 else None


def _line_points(value: Any, size: tuple[int, int]) -> list[tuple[float, float]] | None:
    """The counting line as two points: the core's text form (`x=X`, `y=Y`, `X1,Y1,X2,Y2`) or point pairs."""
    if value is None:
        return None
    if isinstance(value, str):
        text = value.replace(" ", "").lower()
        try:
            if text.startswith("x="):
                x = float(text[2:])
                return [(x, 0.0), (x, float(size[1] - 1))]
            if text.startswith("y="):
                y = float(text[2:])
                return [(0.0, y), (float(size[0] - 1), y)]
            x1, y1, x2, y2 = (float(v) for v in text.split(","))
        except ValueError:
            return None
        return [(x1, y1), (x2, y2)]
    return _point_list(value)


def _pixels(points: list[tuple[float, float]], size: tuple[int, int]) -> np.ndarray:
    """Points as pixels; coordinates all within [0, 1] are taken as fractions of the frame."""
    arr = np.array(points, dtype=np.float64)
    if arr.size and arr.min() >= 0 and arr.max() <= 1.0:
        arr = arr * np.array(size, dtype=np.float64)
    return arr.round().astype(np.int32)


def draw_overlay(frame: np.ndarray, pipeline: dict[str, Any], text: str) -> np.ndarray:
    """The counting line and zones (from the pipeline settings, if they carry them) and a caption."""
    out = frame.copy()
    size = (out.shape[1], out.shape[0])
    zones = pipeline.get("zones")
    if isinstance(zones, dict):
        for name, polygon in zones.items():
            points = _point_list(polygon.get("polygon") if isinstance(polygon, dict) else polygon)
            if points and len(points) >= 3:
                px = _pixels(points, size)
                cv2.polylines(out, [px], True, (255, 160, 0), 2)
                cv2.putText(out, str(name), tuple(int(v) for v in px[0]), cv2.FONT_HERSHEY_SIMPLEX, 0.5,
                            (255, 160, 0), 1, cv2.LINE_AA)
    line = _line_points(pipeline.get("line"), size)
    if line:
        px = _pixels(line[:2], size)
        cv2.line(out, tuple(int(v) for v in px[0]), tuple(int(v) for v in px[1]), (0, 0, 255), 2, cv2.LINE_AA)
    cv2.putText(out, text, (8, 20), cv2.FONT_HERSHEY_SIMPLEX, 0.5, (0, 255, 0), 1, cv2.LINE_AA)
    return out


class SnapshotServer:
    """Serves `render()` (JPEG bytes, or None before the first frame) on 127.0.0.1 only."""

    def __init__(self, port: int, render: Callable[[], bytes | None]) -> None:
        self.render = render
        outer = self

        class Handler(BaseHTTPRequestHandler):
            def do_GET(self) -> None:
                if self.path.split("?")[0] not in ("/", "/snapshot.jpg"):
                    self.send_error(404, "only /snapshot.jpg is served")
                    return
                try:
                    body = outer.render()
                except Exception:  # a drawing bug must not take the server down
                    log.exception("debug snapshot failed")
                    body = None
                if body is None:
                    self.send_error(503, "no frame yet")
                    return
                self.send_response(200)
                self.send_header("Content-Type", "image/jpeg")
                self.send_header("Content-Length", str(len(body)))
                self.send_header("Cache-Control", "no-store")
                self.end_headers()
                self.wfile.write(body)

            def log_message(self, format: str, *args: Any) -> None:
                log.debug("snapshot: " + format, *args)

        self.httpd = ThreadingHTTPServer((SNAPSHOT_HOST, port), Handler)
        self.httpd.daemon_threads = True
        self.port = self.httpd.server_address[1]
        self._thread = threading.Thread(target=self.httpd.serve_forever, name="camera-snapshot", daemon=True)

    @property
    def url(self) -> str:
        return f"http://{SNAPSHOT_HOST}:{self.port}/snapshot.jpg"

    def start(self) -> None:
        self._thread.start()

    def stop(self) -> None:
        self.httpd.shutdown()
        self.httpd.server_close()
        self._thread.join(timeout=2)


class CameraSource:
    """Kind "camera": counts people crossing the line and in view, emitting `events/counts`."""

    Options = CameraOptions

    def __init__(self, name: str, options: CameraOptions, counter: Counter | None = None,
                 frames: FrameSource | None = None, backoff: Backoff | None = None) -> None:
        self.name = name
        self.options = options
        self.counter = counter if counter is not None else build_counter(options.pipeline)
        source = frames if frames is not None else VideoCaptureSource(
            options.uri, options.width, options.height, options.fps, options.skip, options.roi,
            open_timeout_s=options.open_timeout_s, read_timeout_s=options.read_timeout_s)
        self.frames = ReopeningFrames(source, options.reopen_initial_s, options.reopen_max_s,
                                      backoff=backoff, name=name)
        self.zone = options.zone
        self.placement: CameraPlacement | None = None   # the gateway's, when it sent one
        self.pipeline_settings: dict[str, Any] = dict(options.pipeline)  # what is counted with (and drawn)
        self._new_settings: Any = None                  # a placement waiting for the worker thread
        self._placement_lock = threading.Lock()
        self.occupancy = 0
        self.intervals = 0
        self.snapshot: SnapshotServer | None = None
        self._interval: Interval | None = None
        self._next_reset: float | None = None
        self._index = 0
        self._last_frame: np.ndarray | None = None
        self._frame_lock = threading.Lock()
        self._read_lock = threading.Lock()

    # --- status and remote config ----------------------------------------------------------------

    @property
    def health(self) -> dict[str, Any]:
        """For the node's status: state ("starting", "ok", "down", "ended"), frames counted, outages,
        their total seconds, when the current one began (epoch s) and the last error."""
        return {**self.frames.health(), "occupancy": self.occupancy, "intervals": self.intervals}

    def apply_config(self, config: RemoteConfig) -> None:
        if config.zone is not None:
            self.zone = config.zone
        if config.camera != self.placement:
            self._place(config.camera)

    def _place(self, placement: CameraPlacement | None) -> None:
        """Count with the installer's line and zones (none: the node's own) from the next frame on.

        The worker thread swaps the counter between frames, so a frame is never counted half with
        the old line; occupancy and the open interval are this source's and carry over untouched.
        """
        from edge.vision.counter import VisionSettings

        pipeline = placed(self.options.pipeline, placement)
        try:
            settings = VisionSettings.model_validate(pipeline)
        except ValidationError as exc:
            log.warning("%s: ignoring the gateway's camera placement:\n%s", self.name,
                        format_validation_error(exc, prefix="camera."))
            return
        with self._placement_lock:
            self.placement = placement
            self.pipeline_settings = pipeline
            self._new_settings = settings
        log.info("%s: counting line %s%s, zones %s (%s)", self.name, settings.line, " flipped" if settings.flip else "",
                 ", ".join(settings.zones) or "none", "installer's placement" if placement else "node default")

    def _take_placement(self) -> None:
        with self._placement_lock:
            settings, self._new_settings = self._new_settings, None
        if settings is not None:
            self.counter = replace_placement(self.counter, settings)

    # --- worker thread --------------------------------------------------------------------------------

    def _count_batch(self) -> tuple[list[FrameCount], bool]:
        """Read and count up to BATCH frames or BATCH_WAIT_S; (numbers per frame, input ended)."""
        counts: list[FrameCount] = []
        with self._read_lock:
            deadline = time.monotonic() + BATCH_WAIT_S
            while len(counts) < BATCH:
                left = deadline - time.monotonic()
                if left <= 0:
                    break
                ok, frame = self.frames.read(wait_s=left)
                if not ok or frame is None:
                    if self.frames.ended:
                        return counts, True
                    if self.frames.stopped:
                        break
                    continue
                self._index += 1
                self._take_placement()
                result = self.counter.process(frame, self._index)
                directions = [in_or_out(self.counter, str(getattr(c, "direction", "")))
                              for c in getattr(result, "crossings", ())]
                zones = getattr(result, "zones", None)
                counts.append(FrameCount(
                    t=self.frames.last_time or time.time(),
                    line_in=directions.count("in"), line_out=directions.count("out"),
                    people=int(getattr(result, "people_in_view", 0)),
                    zones={str(k): int(v) for k, v in zones.items()} if isinstance(zones, dict) else None,
                ))
                if self.snapshot is not None:
                    with self._frame_lock:
                        self._last_frame = frame
        return counts, self.frames.ended

    # --- event loop -------------------------------------------------------------------------------------

    def _now(self) -> float:
        """Live inputs run on the wall clock; files and simulations on their frames' own time."""
        if self.frames.live:
            return time.time()
        return self.frames.last_time if self.frames.last_time is not None else time.time()

    def _advance(self, t: float, emit: Emit) -> None:
        """Close every interval that ended by `t`, then apply the occupancy reset if it is due."""
        step = self.options.counts_interval_s
        if self._interval is None:
            self._interval = Interval(t)
        while t >= self._interval.start + step:
            end = self._interval.start + step
            self._close(end, step, emit)
            end += ((t - end) // step) * step  # frames come in time order: the intervals between are empty
            self._interval = Interval(end)
        if self.options.occupancy_reset is not None:
            if self._next_reset is None:
                self._next_reset = next_reset(t, self.options.occupancy_reset, self.options.utc_offset_h)
            elif t >= self._next_reset:
                log.info("%s: occupancy reset at %s (was %d)", self.name, self.options.occupancy_reset, self.occupancy)
                self.occupancy = 0
                self._next_reset = next_reset(t, self.options.occupancy_reset, self.options.utc_offset_h)

    def _close(self, end: float, interval_s: float, emit: Emit) -> None:
        iv = self._interval
        assert iv is not None
        if iv.frames == 0:
            return
        n = iv.frames
        if iv.zones:
            zones = {zone: round(total / n) for zone, total in sorted(iv.zones.items())}
        elif self.zone is not None:
            zones = {self.zone: round(iv.people / n)}
        else:
            zones = {}
        self.intervals += 1
        emit(Channel.COUNTS, {
            "ts": dt.datetime.fromtimestamp(end, dt.UTC), "interval_s": float(interval_s),
            "line_in": int(iv.line_in), "line_out": int(iv.line_out), "occupancy": int(self.occupancy),
            "zones": zones,
        })

    def _apply(self, count: FrameCount, emit: Emit) -> None:
        self._advance(count.t, emit)
        iv = self._interval
        assert iv is not None
        iv.frames += 1
        iv.line_in += count.line_in
        iv.line_out += count.line_out
        iv.people += count.people
        if count.zones:
            for zone, people in count.zones.items():
                iv.zones[zone] = iv.zones.get(zone, 0) + people
        # A frame's entries first, so a same-frame exit finds them inside; never below zero (an exit
        # of someone who came in before the reset, or a missed entry, cannot make the store owe people).
        self.occupancy = max(0, self.occupancy + count.line_in - count.line_out)

    def _render_snapshot(self) -> bytes | None:
        with self._frame_lock:
            frame = self._last_frame
        if frame is None:
            return None
        draw = getattr(self.counter, "draw", None)
        caption = f"{self.name} occupancy {self.occupancy} camera {self.frames.state}"
        image = draw(frame) if callable(draw) else draw_overlay(frame, self.pipeline_settings, caption)
        ok, jpeg = cv2.imencode(".jpg", image, [cv2.IMWRITE_JPEG_QUALITY, 80])
        return jpeg.tobytes() if ok else None

    async def run(self, emit: Emit) -> None:
        if self.options.snapshot_port is not None:
            self.snapshot = SnapshotServer(self.options.snapshot_port, self._render_snapshot)
            self.snapshot.start()
            log.warning("%s: debug snapshot on %s (installers only; turn off in production)",
                        self.name, self.snapshot.url)
        try:
            await asyncio.to_thread(self.frames.open)
            while True:
                counts, ended = await asyncio.to_thread(self._count_batch)
                for count in counts:
                    self._apply(count, emit)
                if ended:
                    return
                self._advance(self._now(), emit)
        finally:
            self._close_partial(emit)  # at the end of the input, or when the node stops
            self.frames.stop()
            await asyncio.to_thread(self._release)
            if self.snapshot is not None:
                self.snapshot.stop()
                self.snapshot = None

    def _close_partial(self, emit: Emit) -> None:
        iv = self._interval
        if iv is None or not iv.frames:
            return
        end = self._now()
        if not self.frames.live:  # the last frame's time covers one frame
            end += 1.0 / self.frames.source.fps if self.frames.source.fps else 1e-3
        self._close(end, max(end - iv.start, 1e-3), emit)
        self._interval = None

    def _release(self) -> None:
        with self._read_lock:  # after the worker's last batch, which stop() cut short
            self.frames.close()
