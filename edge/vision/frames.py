"""Frame sources: a camera device, a video file, an RTSP/HTTP stream or the simulator, behind one interface.

`VideoCaptureSource` wraps `cv2.VideoCapture` and does what every input needs: a clear error when
the input cannot be used (`FrameSourceError` names the input and the reason), frame skipping and
rate limiting, resizing to the configured resolution, and cropping to a region of interest.
`SimFrameSource` is the same over the simulator's `SimCapture`. `ReopeningFrames` keeps a live input
(a device or a stream) going: one that stops delivering is closed and reopened with capped
backoff, and its outages are counted for the node's status; a file or a simulation simply ends.

Everything here blocks (OpenCV does), so callers run it on a worker thread. Frames never leave the
process: what a source produces is handed to the counter and dropped.
"""

from __future__ import annotations

import logging
import os
import socket
import threading
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any, Protocol
from urllib.parse import urlsplit, urlunsplit

import cv2
import numpy as np

from edge.backoff import Backoff

log = logging.getLogger(__name__)

Roi = tuple[int, int, int, int]  # x, y, width, height in pixels of the (resized) frame

URL_DEFAULT_PORTS = {"rtsp": 554, "rtsps": 322, "http": 80, "https": 443, "rtmp": 1935}


class FrameSourceError(Exception):
    """An input that cannot be used; str() names the input (credentials hidden) and the reason."""

    def __init__(self, uri: str | int, reason: str) -> None:
        self.uri = redact(uri)
        self.reason = reason
        super().__init__(f"camera input {self.uri}: {reason}")


class FrameSource(Protocol):
    """What the camera source reads from. `read()` returns `(False, None)` when no frame came."""

    uri: str
    live: bool              # a device or stream (reopened on failure), not a file that ends
    fps: float              # frames per second that `read()` delivers (after skipping); 0 if unknown
    size: tuple[int, int] | None  # (width, height) of delivered frames once open
    last_time: float | None  # epoch seconds of the last frame read

    def open(self) -> None: ...

    def read(self) -> tuple[bool, np.ndarray | None]: ...

    def release(self) -> None: ...


def redact(uri: str | int) -> str:
    """The input as it may be logged: a URL's password replaced by '***'."""
    text = str(uri)
    if "://" not in text:
        return text
    parts = urlsplit(text)
    if parts.password is None:
        return text
    host = parts.hostname or ""
    netloc = f"{parts.username}:***@{host}" + (f":{parts.port}" if parts.port else "")
    return urlunsplit((parts.scheme, netloc, parts.path, parts.query, parts.fragment))


def parse_uri(uri: str | int) -> tuple[str, str | int]:
    """Classify an input: ("device", index or /dev path), ("url", url) or ("file", path)."""
    if isinstance(uri, int):
        return "device", uri
    text = uri.strip()
    if text.isdigit():
        return "device", int(text)
    if text.startswith("/dev/video"):
        return "device", text
    if "://" in text:
        scheme = text.split("://", 1)[0].lower()
        if scheme == "file":
            return "file", urlsplit(text).path
        return "url", text
    return "file", text


def _probe_tcp(url: str, timeout_s: float) -> str:
    """Why a stream URL did not open, as far as a TCP connect can tell."""
    parts = urlsplit(url)
    host = parts.hostname
    if not host:
        return "not a valid URL (no host)"
    try:
        port = parts.port or URL_DEFAULT_PORTS.get(parts.scheme.lower(), 554)
    except ValueError:
        return "not a valid URL (bad port)"
    try:
        with socket.create_connection((host, port), timeout=timeout_s):
            pass
    except socket.gaierror:
        return f"unknown host {host!r} (DNS lookup failed)"
    except ConnectionRefusedError:
        return f"unreachable: connection refused at {host}:{port} (no stream server listening)"
    except TimeoutError:
        return f"unreachable: no answer from {host}:{port} within {timeout_s:.0f} s"
    except OSError as exc:
        return f"unreachable: {host}:{port}: {exc.strerror or exc}"
    return (f"{host}:{port} answers but the stream did not open "
            "(wrong path or credentials, or a codec OpenCV's FFmpeg cannot decode)")


def _explain_device(device: str | int) -> str:
    path = device if isinstance(device, str) else f"/dev/video{device}"
    if os.name == "posix" and Path("/dev").is_dir():
        if not Path(path).exists():
            return f"no such camera device ({path} does not exist; is the camera plugged in?)"
        if not os.access(path, os.R_OK | os.W_OK):
            return f"permission denied on {path} (add the user to the 'video' group)"
        return f"{path} exists but cannot be opened: busy (another process is using it) or not a capture device"
    return "the camera device cannot be opened: missing, busy, or not a capture device"


class VideoCaptureSource:
    """`cv2.VideoCapture` on a device index ("0"), a /dev/video path, a file, or an rtsp:// / http:// URL.

    - `width`/`height`: delivered resolution. Devices are asked for it; every frame is resized to it
      if it differs anyway (cameras ignore what they do not support).
    - `fps`: wanted rate. Devices are asked for it; if the input runs faster, frames are dropped to
      approximate it (a 30 fps stream with fps=10 delivers every third frame).
    - `skip`: also drop `skip` frames after every delivered one (process every (skip+1)th frame).
    - `roi`: (x, y, w, h) crop, in pixels of the resized frame, applied last.
    """

    live: bool

    def __init__(self, uri: str | int, width: int | None = None, height: int | None = None,
                 fps: float | None = None, skip: int = 0, roi: Roi | None = None,
                 open_timeout_s: float = 5.0, read_timeout_s: float = 5.0,
                 capture_factory: Callable[[], Any] | None = None, start_time: float | None = None) -> None:
        if (width is None) != (height is None):
            raise ValueError("give both width and height, or neither")
        if skip < 0:
            raise ValueError(f"skip must be >= 0, got {skip}")
        if roi is not None and (roi[2] <= 0 or roi[3] <= 0 or roi[0] < 0 or roi[1] < 0):
            raise ValueError(f"roi (x, y, w, h) needs x, y >= 0 and w, h > 0, got {roi}")
        self.uri = redact(uri)
        self.kind, self.target = parse_uri(uri) if capture_factory is None else ("sim", str(uri))
        self.live = self.kind in ("device", "url")
        self.width, self.height = width, height
        self.wanted_fps = fps
        self.skip = skip
        self.roi = roi
        self.open_timeout_s, self.read_timeout_s = open_timeout_s, read_timeout_s
        self._factory = capture_factory
        self._start_time = start_time
        self._cap: Any = None
        self._pending: np.ndarray | None = None
        self._step = 1 + skip
        self._pos = 0            # frames taken from the capture, skipped ones included
        self._t0 = 0.0
        self.native_fps = 0.0
        self.fps = 0.0
        self.size: tuple[int, int] | None = None
        self.last_time: float | None = None

    # --- opening ------------------------------------------------------------------------------------

    def _capture(self) -> Any:
        if self._factory is not None:
            return self._factory()
        if self.kind == "url":
            params = []
            if hasattr(cv2, "CAP_PROP_OPEN_TIMEOUT_MSEC"):
                params += [cv2.CAP_PROP_OPEN_TIMEOUT_MSEC, int(self.open_timeout_s * 1000)]
            if hasattr(cv2, "CAP_PROP_READ_TIMEOUT_MSEC"):
                params += [cv2.CAP_PROP_READ_TIMEOUT_MSEC, int(self.read_timeout_s * 1000)]
            return cv2.VideoCapture(str(self.target), cv2.CAP_FFMPEG, params)
        if self.kind == "file":
            path = Path(str(self.target))
            if not path.exists():
                raise FrameSourceError(self.uri, "file not found")
            if path.is_dir():
                raise FrameSourceError(self.uri, "is a directory, not a video file")
            if not os.access(path, os.R_OK):
                raise FrameSourceError(self.uri, "permission denied reading the file")
            if path.stat().st_size == 0:
                raise FrameSourceError(self.uri, "the file is empty")
            return cv2.VideoCapture(str(path))
        cap = cv2.VideoCapture(self.target)
        if cap.isOpened():
            if self.width is not None:
                cap.set(cv2.CAP_PROP_FRAME_WIDTH, self.width)
                cap.set(cv2.CAP_PROP_FRAME_HEIGHT, self.height)
            if self.wanted_fps:
                cap.set(cv2.CAP_PROP_FPS, self.wanted_fps)
        return cap

    def _why_not_open(self) -> str:
        if self.kind == "file":
            return "not a video OpenCV can open (unknown container or codec, or a damaged file)"
        if self.kind == "url":
            return _probe_tcp(str(self.target), min(self.open_timeout_s, 3.0))
        if self.kind == "device":
            return _explain_device(self.target)
        return "the simulated camera did not open"

    def open(self) -> None:
        """Open the input and decode its first frame; raise FrameSourceError saying why not."""
        self.release()
        cap = self._capture()
        if cap is None or not cap.isOpened():
            if cap is not None:
                cap.release()
            raise FrameSourceError(self.uri, self._why_not_open())
        ok, first = cap.read()
        if not ok or first is None:
            cap.release()
            if self.kind == "file":
                reason = "opens but no frame decodes (not a video, an unsupported codec, or no frames)"
            elif self.kind == "url":
                reason = f"the stream opened but sent no decodable frame within {self.read_timeout_s:.0f} s"
            elif self.kind == "device":
                reason = "the camera opened but delivers no frames (busy, or a metadata-only video node)"
            else:
                reason = "the simulation has no frames"
            raise FrameSourceError(self.uri, reason)
        self._cap = cap
        self.native_fps = float(cap.get(cv2.CAP_PROP_FPS) or 0.0)
        if self.native_fps > 120 or self.native_fps < 0:  # some streams report 90000 (the RTP clock)
            self.native_fps = 0.0
        decimate = 1
        if self.wanted_fps and self.native_fps > self.wanted_fps * 1.25:
            decimate = max(1, round(self.native_fps / self.wanted_fps))
        self._step = decimate * (1 + self.skip)
        native = self.native_fps or (self.wanted_fps or 0.0)
        self.fps = native / self._step if native else 0.0
        self._pos = 1
        self._t0 = self._start_time if self._start_time is not None else time.time()
        frame = self._shape(first)
        self.size = (frame.shape[1], frame.shape[0])
        self._pending = frame

    # --- reading --------------------------------------------------------------------------------------

    def _shape(self, frame: np.ndarray) -> np.ndarray:
        if self.width is not None and (frame.shape[1], frame.shape[0]) != (self.width, self.height):
            frame = cv2.resize(frame, (self.width, self.height), interpolation=cv2.INTER_AREA)
        if self.roi is not None:
            x, y, w, h = self.roi
            if x + w > frame.shape[1] or y + h > frame.shape[0]:
                raise FrameSourceError(self.uri, f"roi {self.roi} reaches outside the "
                                                 f"{frame.shape[1]}x{frame.shape[0]} frame")
            frame = frame[y:y + h, x:x + w]
        return frame

    def _stamp(self) -> None:
        if self.live or not self.native_fps:
            self.last_time = time.time()
        else:  # a file or simulation: its own timeline from the start time
            self.last_time = self._t0 + (self._pos - 1) / self.native_fps

    def read(self) -> tuple[bool, np.ndarray | None]:
        if self._cap is None:
            return False, None
        if self._pending is not None:
            frame, self._pending = self._pending, None
            self._stamp()
            return True, frame
        for _ in range(self._step - 1):
            if not self._cap.grab():
                return False, None
            self._pos += 1
        ok, frame = self._cap.read()
        if not ok or frame is None:
            return False, None
        self._pos += 1
        self._stamp()
        return True, self._shape(frame)

    def release(self) -> None:
        if self._cap is not None:
            self._cap.release()
        self._cap = None
        self._pending = None


class SimFrameSource(VideoCaptureSource):
    """The simulator's camera (`firmware_sim.sources.SimCapture`, or any VideoCapture look-alike).

    Frames carry simulated time (`last_time`), so counts intervals follow the simulated clock; the
    simulation ends like a file.
    """

    def __init__(self, capture_factory: Callable[[], Any], start_time: float, name: str = "sim",
                 width: int | None = None, height: int | None = None, fps: float | None = None,
                 skip: int = 0, roi: Roi | None = None) -> None:
        super().__init__(f"sim:{name}", width, height, fps, skip, roi,
                         capture_factory=capture_factory, start_time=start_time)

    @classmethod
    def from_world(cls, world: Any, node_id: str, clock: Any = None, **kwargs: Any) -> SimFrameSource:
        from firmware_sim.sources import (
            SimCapture,  # the simulator only when simulating
        )

        return cls(lambda: SimCapture(world, node_id, clock), start_time=world.start, name=node_id, **kwargs)


class ReopeningFrames:
    """Keeps a live input delivering: on failure close it, wait (capped backoff), reopen; count outages.

    `read(wait_s)` returns within about `wait_s` (plus one frame time): `(False, None)` while the
    input is down or at its end (`ended`). A file or a simulation that ends is not reopened; one
    that cannot be opened at all raises FrameSourceError from `open()`. A live input that cannot be
    opened at start is an outage like any other, retried until it comes.
    """

    def __init__(self, source: FrameSource, initial_s: float = 1.0, max_s: float = 30.0,
                 clock: Callable[[], float] = time.monotonic, backoff: Backoff | None = None,
                 name: str = "camera") -> None:
        self.source = source
        self.name = name
        self.backoff = backoff or Backoff(initial_s, max_s)
        self.clock = clock
        self.frames = 0
        self.outages = 0
        self.reopens = 0
        self.ended = False
        self.last_error: str | None = None
        self.outage_since: float | None = None   # epoch seconds the current outage began
        self._down_at: float | None = None       # clock() at the start of the current outage
        self._past_outage_s = 0.0
        self._retry_at = 0.0
        self._opened = False
        self._stop = threading.Event()

    @property
    def live(self) -> bool:
        return self.source.live

    @property
    def stopped(self) -> bool:
        return self._stop.is_set()

    @property
    def down(self) -> bool:
        return self._down_at is not None

    @property
    def state(self) -> str:
        if self.ended:
            return "ended"
        if self.down:
            return "down"
        return "ok" if self._opened else "starting"

    @property
    def outage_s(self) -> float:
        current = self.clock() - self._down_at if self._down_at is not None else 0.0
        return self._past_outage_s + current

    def health(self) -> dict[str, Any]:
        return {"state": self.state, "frames": self.frames, "outages": self.outages,
                "outage_s": round(self.outage_s, 1), "reopens": self.reopens,
                "outage_since": self.outage_since, "error": self.last_error}

    def open(self) -> None:
        try:
            self.source.open()
        except FrameSourceError as exc:
            if not self.source.live:
                raise
            self._go_down(str(exc))
            return
        self._opened = True

    def _go_down(self, error: str) -> None:
        self.last_error = error
        if self._down_at is None:
            self.outages += 1
            self._down_at = self.clock()
            self.outage_since = time.time()
        self.source.release()
        delay = self.backoff.next()
        self._retry_at = self.clock() + delay
        log.warning("%s: %s; reopening in %.1f s", self.name, error, delay)

    def _come_back(self) -> None:
        assert self._down_at is not None
        lasted = self.clock() - self._down_at
        self._past_outage_s += lasted
        self._down_at = None
        self.outage_since = None
        self.backoff.reset()
        self._opened = True
        log.info("%s: camera input back after %.1f s", self.name, lasted)

    def read(self, wait_s: float = 0.5) -> tuple[bool, np.ndarray | None]:
        if self.ended or self._stop.is_set():
            return False, None
        if self._down_at is not None:
            wait = self._retry_at - self.clock()
            if wait > 0:
                self._stop.wait(min(wait, wait_s))
                if self._retry_at - self.clock() > 0 or self._stop.is_set():
                    return False, None
            self.reopens += 1
            try:
                self.source.open()
            except FrameSourceError as exc:
                self._go_down(str(exc))
                return False, None
            self._come_back()
        ok, frame = self.source.read()
        if ok:
            self.frames += 1
            return True, frame
        if not self.source.live:
            self.ended = True
            self.source.release()
            log.info("%s: end of input %s after %d frames", self.name, self.source.uri, self.frames)
            return False, None
        self._go_down(f"camera input {self.source.uri}: stopped delivering frames")
        return False, None

    @property
    def last_time(self) -> float | None:
        return self.source.last_time

    def stop(self) -> None:
        """Interrupt a backoff wait; safe from any thread. `read()` returns at once from then on."""
        self._stop.set()

    def close(self) -> None:
        """Stop and release the input; call from the thread that reads, or when no read is running."""
        self._stop.set()
        self.source.release()
