"""Line crossings with a hysteresis band, occupancy, zones, and the whole per-frame pipeline.

Hysteresis: a track's foot point has a committed side, set the first time it is more than `band_px`
pixels from the line. A crossing is counted when the foot point is next more than `band_px` on the
other side; the committed side then flips. Jitter inside the band (|distance| <= band_px) never counts,
someone stepping onto the line and back counts nothing, and someone crossing then stepping back counts
one crossing each way (net 0, never two in the same direction for one pass).

With `confirm_px` > 0 a crossing must also be confirmed by distance: it is held until the foot point
gets more than `confirm_px` beyond the line on the new side; if the track comes back across before
that, the held crossing and the return cancel out (a foot point wobbling around the line, or a swap
between two nearby tracks, counts nothing). This lets the band stay narrow (the crossing is dated
when the foot leaves the band, not when it is a step past the line) without counting wobble.

Crossings of a tentative track are held and emitted, with their own frame numbers, once the track is
confirmed; they are dropped if it dies unconfirmed (a flicker of noise across the line).

People in file (oblique views, where the tracker says who is behind whom): from a camera looking
along the walking direction the second of two people in file is hidden behind the first for much of
the way, and a detector that has to see someone misses a tenth of the crossings at a busy door.
Two rules count them from what is seen of the person in front, and only when that person crosses
the same way within `companion_frames` (about as long as a hidden track may coast):
- a track behind someone (unseen, or matched to a detection of which the tracker believes only the
  column: its row is then a prediction from its own motion) whose predicted path crosses the line
  counts when the person in front crosses too (someone hidden who stopped short is not counted, as
  their companion stops too); only tracks the size of a whole person do this, not a piece of one; so
  does a track seen crossing that goes behind someone before it is `confirm_px` past the line;
- a track first seen coming out from behind someone who has just crossed, on the side they crossed
  to and with them still walking that way, was walking behind them and crossed with them; and whoever
  comes out from behind that track in turn crossed with it too (three in file).
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

import cv2
import numpy as np
from pydantic import BaseModel, ConfigDict, Field, field_validator, model_validator

from edge.vision.detect import BlobDetector, Detections, PersonSize
from edge.vision.dnn import DnnDetector
from edge.vision.line import DECREASING, INCREASING, CountingLine, LineError
from edge.vision.track import EMERGED_DEPTH, HIDDEN_AGE, Track, Tracker

Point = tuple[float, float]
WHOLE_PERSON = 0.7  # a track behind someone, at least this share of their size (for its depth), is a person


@dataclass(frozen=True)
class Crossing:
    frame: int
    track_id: int
    direction: str  # "increasing" or "decreasing"


def point_in_polygon(points: np.ndarray, polygon: list[Point] | np.ndarray) -> np.ndarray:
    """Boolean per point (N, 2): inside the polygon or on its edge (even-odd ray casting)."""
    p = np.asarray(points, dtype=np.float64).reshape(-1, 2)
    poly = np.asarray(polygon, dtype=np.float64).reshape(-1, 2)
    if len(p) == 0:
        return np.zeros(0, dtype=bool)
    inside = np.zeros(len(p), dtype=bool)
    x, y = p[:, 0], p[:, 1]
    for (x1, y1), (x2, y2) in zip(poly, np.roll(poly, -1, axis=0)):
        crosses = (y1 > y) != (y2 > y)
        with np.errstate(divide="ignore", invalid="ignore"):
            xs = x1 + (y - y1) * (x2 - x1) / (y2 - y1)
        inside ^= crosses & (x < xs)
    contour = poly.astype(np.float32).reshape(-1, 1, 2)
    for i in np.flatnonzero(~inside):  # points on an edge count as inside
        if cv2.pointPolygonTest(contour, (float(x[i]), float(y[i])), False) >= 0:
            inside[i] = True
    return inside


class LineCounter:
    """Counts crossings of one line by tracks, once per crossing (see the module docstring)."""

    def __init__(self, line: CountingLine, band_px: float, confirm_px: float = 0.0,
                 person_height: Callable[[float], float] | None = None, companion_frames: int = 30) -> None:
        self.line = line
        self.band = band_px
        self.confirm = confirm_px
        self.person_height = person_height  # foot row -> pixels; None: every track is a whole person
        self.companion_frames = companion_frames  # how far apart in time people in file cross
        self._held: dict[int, Crossing] = {}  # crossed, not yet confirm_px beyond the line
        self._side: dict[int, int] = {}
        self._pending: dict[int, list[Crossing]] = {}
        self._crossed: dict[int, tuple[int, int]] = {}  # track -> (frame, new side) of its latest crossing
        self._riders: dict[int, tuple[int, int, int]] = {}  # hidden track -> (track in front, frame, new side)
        self._size: dict[int, float] = {}  # track -> its height over a person's for its foot row, when last seen
        self._inherited: dict[int, Crossing] = {}  # new track -> the crossing of the person it came from behind
        self.totals = {INCREASING: 0, DECREASING: 0}
        self.inside = 0

    @property
    def occupancy(self) -> int:
        """People inside: "in" minus "out" since the last reset, never below 0."""
        return self.inside

    def reset(self) -> None:
        """Start a new day: occupancy and totals back to 0 (tracks keep their sides)."""
        self.totals = {INCREASING: 0, DECREASING: 0}
        self.inside = 0

    def _emit(self, c: Crossing) -> None:
        self.totals[c.direction] += 1
        self.inside = max(0, self.inside + (1 if self.line.in_out(c.direction) == "in" else -1))

    def _whole(self, t: Track, front: Track) -> bool:
        """Whether a track behind `front` is a whole person (someone walking behind them), not a piece of one
        (a head, a torso): its size for its foot row, when last seen, against the front person's."""
        if self.person_height is None:
            return True
        return self._size.get(t.id, 0.0) >= WHOLE_PERSON * self._size.get(front.id, 1.0)

    def _heading(self, t: Track) -> float:
        """The track's velocity across the line (pixels per frame, positive towards the positive side)."""
        return float(self.line.signed_distance(np.array([t.foot[0] + t.state[2], t.foot[1] + t.state[3]]))
                     - self.line.signed_distance(np.array(t.foot)))

    def update(self, frame: int, tracks: list[Track]) -> list[Crossing]:
        """Feed the live tracks of one frame; returns the crossings confirmed at this frame."""
        out: list[Crossing] = []
        alive = {t.id: t for t in tracks}
        for t in tracks:
            if t.time_since_update == 0 and self.person_height is not None:
                self._size[t.id] = t.h / max(float(self.person_height(t.foot[1])), 1e-9)
            front = alive.get(t.behind) if t.behind is not None else None
            hidden = ((t.time_since_update > 0 or not t.row_measured) and front is not None and self._whole(t, front)
                      and front.foot[1] > t.foot[1] + EMERGED_DEPTH * t.h)
            if t.time_since_update == 0 or hidden:  # a measured position, or the predicted path of someone hidden
                d = float(self.line.signed_distance(np.array([t.foot]))[0])
                s = 1 if d > self.band else -1 if d < -self.band else 0
                prev = self._side.get(t.id, 0)
                if s != 0 and prev == 0:
                    self._side[t.id] = s
                    inherited = self._emerged_across(t, s, alive, frame)
                    if inherited is not None:
                        self._inherited[t.id] = inherited
                elif s != 0 and s != prev:
                    self._side[t.id] = s
                    self._crossed[t.id] = (frame, s)
                    if self._held.pop(t.id, None) is None:  # a held crossing and its return cancel out
                        self._held[t.id] = Crossing(frame, t.id, self.line.direction(prev, s))
                        if hidden and front is not None:
                            self._riders[t.id] = (front.id, frame, s)
                    else:
                        self._riders.pop(t.id, None)
                if t.id in self._held and s * d > self.confirm and not hidden:
                    self._pending.setdefault(t.id, []).append(self._held.pop(t.id))
                    self._riders.pop(t.id, None)
                elif hidden and front is not None and t.id in self._held and t.id not in self._riders:
                    # hidden before a step past the line: counts with the person in front
                    self._riders[t.id] = (front.id, self._held[t.id].frame, self._side[t.id])
            if t.confirmed and t.id in self._inherited:  # counted if they walk on the way they crossed
                c = self._inherited.pop(t.id)
                if self._heading(t) * (1 if c.direction == INCREASING else -1) > 0:
                    self._pending.setdefault(t.id, []).append(c)
                    self._crossed[t.id] = (c.frame, self._side[t.id])  # someone may come out from behind them
            if t.confirmed and t.id in self._pending:
                out.extend(self._pending.pop(t.id))
        out.extend(self._riders_across(alive, frame))
        for gone in [i for i in self._side if i not in alive]:
            del self._side[gone]
            self._pending.pop(gone, None)
            self._held.pop(gone, None)
            self._inherited.pop(gone, None)
            self._size.pop(gone, None)
        stale = frame - self.companion_frames
        for gone in [i for i, (f, _) in self._crossed.items() if i not in alive and f < stale]:
            del self._crossed[gone]
        for c in out:
            self._emit(c)
        return out

    def _emerged_across(self, t: Track, side: int, alive: dict[int, Track], frame: int) -> Crossing | None:
        """The crossing of a track first seen coming out from behind someone who has just crossed to the side
        it is on, and is still walking that way: it was walking in file behind them, hidden, and crossed
        with them (dated with them)."""
        front = alive.get(t.emerged_from) if t.emerged_from is not None else None
        crossed = self._crossed.get(t.emerged_from) if t.emerged_from is not None else None
        if (front is None or crossed is None or crossed[1] != side or frame - crossed[0] > self.companion_frames
                or self._heading(front) * side <= 0):
            return None
        return Crossing(crossed[0], t.id, self.line.direction(-side, side))

    def _riders_across(self, alive: dict[int, Track], frame: int) -> list[Crossing]:
        """Crossings of hidden tracks (their predicted path crossed) once the person they were hidden behind
        has crossed the same way within `companion_frames`; dropped when that person does not (someone
        hidden who stopped, or whose prediction ran on)."""
        out = []
        for rider, (front, when, side) in list(self._riders.items()):
            crossed = self._crossed.get(front)
            if crossed is not None and crossed[1] == side and abs(crossed[0] - when) <= self.companion_frames:
                out.append(self._held.pop(rider, None) or Crossing(when, rider, self.line.direction(-side, side)))
                del self._riders[rider]
            elif front not in alive or frame - when > self.companion_frames:
                del self._riders[rider]
        return out


class VisionSettings(BaseModel):
    """How one camera counts. Pixel values are in the pixels of the frames given to the pipeline."""

    model_config = ConfigDict(extra="forbid")

    line: str = Field(title="Counting line", description="x=X, y=Y or X1,Y1,X2,Y2 in frame pixels (see edge.vision.line).")
    flip: bool = Field(False, description="Count 'in' towards the negative side of the line instead of the positive.")
    person_height_px: float | None = Field(
        None, gt=0, description="Height of a standing person near the line, in pixels (head to feet). "
        "Sets the blob splitting, the tracking gate and the band. With `perspective`, this is the height of a person "
        "whose feet are on the frame's middle row. Default: a seventh of the frame height.")
    perspective: float = Field(
        1.5, ge=0, le=1.9, description="Relative growth of a person's height over one frame height, by foot row: "
        "h(y) = person_height_px * (1 + perspective * (y - H/2) / H). 0 = same size everywhere (camera looking "
        "straight down); about 1.5 for an elevated oblique view whose far edge is several times farther than its near edge.")
    person_width_px: float | None = Field(
        None, gt=0, description="Shoulder width of a person in pixels; default 0.4 x the height.")
    band_px: float | None = Field(
        None, ge=0, description="Half-width of the hysteresis band around the line, pixels; default 0.06 x person height "
        "(about 10 cm: the jitter of a filtered foot point).")
    confirm_px: float | None = Field(
        None, ge=0, description="A crossing counts once the foot point is this far beyond the line (without coming back); "
        "default 0.15 x person height (about 25 cm, less than one step).")
    roi: list[Point] | None = Field(None, description="Polygon: only people with their feet in it are counted as in view.")
    zones: dict[str, list[Point]] = Field(default_factory=dict, description="Named polygons for people-in-zone counts.")
    process_width: int = Field(320, ge=64, description="Frames are downscaled to this width before detection.")
    learning_rate: float = Field(
        -1.0, le=1.0, description="Share of the background model renewed per frame; -1 = OpenCV automatic (1/(2n) for "
        "the first 250 frames, then 1/500): someone standing still fades into the background after about 50 frames "
        "(5 s at 10 frames/s), and their track with it.")
    min_hits: int = Field(3, ge=1, description="Frames a track must be matched before it counts.")
    max_age: int = Field(10, ge=0, description="Frames a confirmed track coasts unseen before it is dropped.")
    detector_model: Path | None = Field(
        None, description="An ONNX person detector (a YOLOv5 or YOLOv8 export) to find people with instead of background "
        "subtraction; the installer provides the file (edge.vision.dnn). Default: background subtraction, no weights.")
    detector_input: int = Field(640, ge=32, description="The detector's square input size in pixels, as exported.")
    detector_min_score: float = Field(0.4, gt=0, lt=1, description="Lowest score at which a detector's person box is kept.")
    detector_person_class: int = Field(0, ge=0, description="The detector's class index for a person (0 in COCO).")

    @model_validator(mode="before")
    @classmethod
    def _moved_keys(cls, data: object) -> object:
        if isinstance(data, dict) and "reset_at" in data:
            raise ValueError("reset_at is no longer a vision setting: set the camera's occupancy_reset ('HH:MM', "
                             "local time) instead, which resets occupancy at closing time")
        return data

    @field_validator("line")
    @classmethod
    def _line_parses(cls, v: str) -> str:
        CountingLine.parse(v)
        return v

    @field_validator("detector_model")
    @classmethod
    def _model_exists(cls, v: Path | None) -> Path | None:
        if v is not None and not v.is_file():
            raise ValueError(f"{v}: no such detector file")
        return v

    @field_validator("roi")
    @classmethod
    def _polygon(cls, v: list[Point] | None) -> list[Point] | None:
        if v is not None and len(v) < 3:
            raise ValueError("a polygon needs at least 3 points")
        return v

    @model_validator(mode="after")
    def _zones(self) -> VisionSettings:
        for name, poly in self.zones.items():
            if len(poly) < 3:
                raise ValueError(f"zone {name!r}: a polygon needs at least 3 points")
        return self


@dataclass
class FrameResult:
    frame: int
    crossings: list[Crossing]
    people_in_view: int
    tracks: list[Track]
    zones: dict[str, int] = field(default_factory=dict)
    detections: Detections | None = None


class VisionPipeline:
    """Frames in, counts out: detect, track, count. Pure (no capture, no I/O, no clock)."""

    def __init__(self, settings: VisionSettings, detector: BlobDetector | DnnDetector | None = None) -> None:
        """`detector`: one already made for these settings (a placement change keeps the loaded model)."""
        self.settings = settings
        self.line = CountingLine.parse(settings.line, flip=settings.flip)
        self.detector = detector
        if detector is None and settings.detector_model is not None:  # loaded now: an unusable file fails at start-up
            self.detector = DnnDetector(settings.detector_model, settings.detector_input, settings.detector_min_score,
                                        person_class=settings.detector_person_class)
        self.tracker: Tracker | None = None
        self.counter: LineCounter | None = None

    def _start(self, h: int, w: int) -> None:
        s = self.settings
        ph = s.person_height_px or h / 7
        pw = s.person_width_px or 0.4 * ph
        band = s.band_px if s.band_px is not None else 0.06 * ph
        if self.detector is None:
            self.detector = BlobDetector(w, h, pw, ph, s.process_width, s.learning_rate, perspective=s.perspective)
        size = PersonSize(ph, h, s.perspective, pw / ph)
        self.size = size
        self.tracker = Tracker(gate_px=0.5 * ph, min_hits=s.min_hits, max_age=s.max_age, gate_scale=size.scale_at,
                               occlusion=s.perspective > 0)
        confirm = s.confirm_px if s.confirm_px is not None else 0.15 * ph
        self.counter = LineCounter(self.line, band, confirm, size.height, HIDDEN_AGE * s.max_age)

    @property
    def occupancy(self) -> int:
        return self.counter.occupancy if self.counter else 0

    def reset(self) -> None:
        if self.counter:
            self.counter.reset()

    def process(self, frame: np.ndarray, index: int) -> FrameResult:
        """One frame (BGR or grey) and its number; closing-time resets are the caller's (it owns the clock)."""
        if self.tracker is None:
            self._start(*frame.shape[:2])
        assert self.detector
        return self.process_detections(self.detector.detect(frame), index)

    def process_detections(self, det: Detections, index: int, frame_size: tuple[int, int] | None = None) -> FrameResult:
        """Track and count one frame's detections from another detector; `frame_size` (h, w) on the first call."""
        if self.tracker is None:
            if frame_size is None:
                raise ValueError("the first frame's detections need frame_size=(height, width)")
            self._start(*frame_size)
        assert self.tracker and self.counter
        tracks = self.tracker.update(det)
        crossings = self.counter.update(index, tracks)
        visible = [t for t in tracks if t.confirmed and t.time_since_update <= self.settings.max_age]
        feet = np.array([t.foot for t in visible]).reshape(-1, 2)
        in_view = int(point_in_polygon(feet, self.settings.roi).sum()) if self.settings.roi else len(visible)
        zones = {name: int(point_in_polygon(feet, poly).sum()) for name, poly in self.settings.zones.items()}
        return FrameResult(index, crossings, in_view, tracks, zones, det)


__all__ = ["Crossing", "FrameResult", "LineCounter", "LineError", "VisionPipeline", "VisionSettings", "point_in_polygon"]
