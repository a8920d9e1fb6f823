"""One frame from the node's camera with the counting line and zones drawn, for the installer on the node.

Runs on the node (`omnisense provision snapshot`) and writes a local JPEG; no frame is sent
anywhere. It opens the camera source's own input (same device, resolution, region of interest),
so what is drawn is in the pixels the counter counts in.
"""

from __future__ import annotations

import time
from pathlib import Path
from typing import Any

import cv2
import numpy as np

from edge.vision.camera_source import CameraSource, draw_overlay
from edge.vision.frames import FrameSourceError

LIVE_WARMUP_FRAMES = 10  # a camera's first frames are often dark while its exposure settles


class SnapshotError(Exception):
    """No frame could be taken; the message names the input and what to try."""


def grab_frame(source: CameraSource, timeout_s: float = 10.0) -> np.ndarray:
    """One frame of the source's input: the first of a file or simulation, a settled one of a camera."""
    frames = source.frames.source
    try:
        frames.open()
    except FrameSourceError as exc:
        hint = " (is the node running and holding the camera? stop it, or use the debug snapshot_port)" \
            if frames.live else ""
        raise SnapshotError(f"{exc}{hint}") from None
    try:
        frame: np.ndarray | None = None
        read = 0
        deadline = time.monotonic() + timeout_s
        while time.monotonic() < deadline:
            ok, image = frames.read()
            if ok and image is not None:
                frame, read = image, read + 1
                if not frames.live or read >= LIVE_WARMUP_FRAMES:
                    break
            elif not frames.live:
                break
    finally:
        frames.release()
    if frame is None:
        raise SnapshotError(f"camera input {frames.uri}: no frame within {timeout_s:g} s")
    return frame


def overlay_settings(source: CameraSource, line: str | None = None, flip: bool | None = None,
                     zones: dict[str, list[tuple[float, float]]] | None = None) -> dict[str, Any]:
    """The line and zones to draw: those given, else the source's own counting settings."""
    settings = dict(source.pipeline_settings)
    if line is not None:
        settings["line"] = line
    if flip is not None:
        settings["flip"] = flip
    if zones is not None:
        settings["zones"] = zones
    return settings


def render(frame: np.ndarray, settings: dict[str, Any], caption: str, quality: int = 90) -> bytes:
    image = draw_overlay(frame, settings, caption)
    ok, jpeg = cv2.imencode(".jpg", image, [cv2.IMWRITE_JPEG_QUALITY, quality])
    if not ok:
        raise SnapshotError("could not encode the frame as JPEG")
    return jpeg.tobytes()


def write_snapshot(source: CameraSource, out: Path, settings: dict[str, Any], caption: str,
                   timeout_s: float = 10.0) -> tuple[int, int]:
    """Take one frame, draw, write `out`; returns the frame's (width, height)."""
    frame = grab_frame(source, timeout_s)
    body = render(frame, settings, caption)
    try:
        out.parent.mkdir(parents=True, exist_ok=True)
        out.write_bytes(body)
    except OSError as exc:
        raise SnapshotError(f"{out}: cannot write the snapshot: {exc.strerror or exc}") from None
    return frame.shape[1], frame.shape[0]
