"""People as foreground blobs: MOG2 background subtraction on a downscaled frame, shadows dropped.

Works with no downloaded weights. Per frame:
1. downscale to `process_width` pixels wide (the blob shapes survive; the cost falls with the area);
2. gain compensation: the frame is scaled so its mean brightness matches the first frame's, so a
   light switch (a global brightness step) is not foreground; if more than `_FLOOD` of the frame is
   foreground anyway (a camera bump, a large lighting change) the background model is rebuilt from
   this frame and no people are reported for it;
3. MOG2 with shadow detection, learning at `learning_rate` (for the first `_WARMUP` frames faster, at
   1/n, so people in the first frame do not leave ghosts for minutes);
   shadow pixels (value 127) are dropped, only 255 is foreground;
4. morphology: an opening removes speckle, a closing sized by the person joins a body's pieces; but where
   the closing joined two or more pieces that are each as tall as a whole person (`_WHOLE` of the height at
   their foot row), they are people side by side with a gap between them, kept apart, each with the small
   pieces nearest to it (a closing wide enough to join a torso to its legs also bridges the gap between
   two slim people walking together);
5. contours become blobs; blobs under a tenth of a person's box are noise; a blob wider (taller) than one
   person (k = round(w / person_w) > 1 columns, or rows) is split into columns (rows), each trimmed to its
   own foreground, which separates groups walking side by side (or one behind the other in an oblique
   view). The columns are cut between heads where the blob's upper outline shows them (peaks that stand a
   head above the shoulders between them, a head's spacing apart: W4's silhouette-peak idea), so a broad
   person beside a slim one is cut between the two, not down the middle of the broad one; else into k
   equal columns.

All sizes are in the pixels of the frame given (not of the downscaled copy).

Perspective: in an elevated oblique view a person's height grows linearly with the image row of
their feet. `PersonSize` models it with two physical numbers: the height of a person whose feet are
on the frame's middle row, and `perspective`, the relative growth of that height over one frame
height (h(y) = h_mid * (1 + perspective * (y - H/2) / H); 0 = same size everywhere, e.g. a camera
looking straight down). Every size threshold (noise area, splitting, the closing) uses the size at
the blob's own foot row. A blob touching the bottom edge of the frame has its feet cut off: its foot
row is taken from its top (the head is visible) and the perspective model, not from the frame edge.
"""

from __future__ import annotations

from dataclasses import dataclass

import cv2
import numpy as np

_FLOOD = 0.35          # foreground share of the frame above which the background is rebuilt
_MIN_AREA = 0.10       # blobs with less foreground than this share of a person's box are noise; a head seen from
                       # above (all there is of someone whose clothes match the floor) is about this much: kept
_SPLIT_BIAS = 0.15     # k = floor(w / person_w + 0.5 - bias): a blob must be clearly wider to split
_WARMUP = 50           # frames after start (or a rebuild) with a fast, 1/n, learning rate
_MIN_SCALE = 0.2       # the perspective never shrinks a person below this share of the centre size
_HEAD_DROP = 0.12      # of a person's height: from the top of the head down to the shoulders, about 20 cm
_HEAD_SPACING = 0.6    # of a person's width (0.4 x height): heads of people shoulder to shoulder are this far apart
_WHOLE = 0.9          # of a person's height at its foot row: a foreground piece this tall is a whole person
_HEAD_SPLIT = 1.2      # blobs being split that are at least this many person widths wide are searched for heads


@dataclass(frozen=True)
class Detections:
    """Boxes (left, top, width, height) and foot points (bottom centre), frame pixels, one row each.
    `feet_seen`: whether a box's bottom is where the person's feet were seen: not a cut (a blob split into
    rows, the frame's edge), an estimate from the head, or the bottom of a blob too short to be a whole
    person (an upper body whose legs are behind someone)."""

    x: np.ndarray
    y: np.ndarray
    w: np.ndarray
    h: np.ndarray
    feet_seen: np.ndarray

    @property
    def foot_x(self) -> np.ndarray:
        return self.x + self.w / 2

    @property
    def foot_y(self) -> np.ndarray:
        return self.y + self.h

    @property
    def feet(self) -> np.ndarray:
        return np.stack([self.foot_x, self.foot_y], axis=1) if len(self) else np.zeros((0, 2))

    def __len__(self) -> int:
        return len(self.x)

    @classmethod
    def from_boxes(cls, boxes: list[tuple[float, float, float, float]] | np.ndarray,
                   feet_seen: list[bool] | np.ndarray | None = None) -> Detections:
        """`feet_seen` defaults to every box's bottom being its person's feet (a person detector's boxes)."""
        b = np.asarray(boxes, dtype=np.float64).reshape(-1, 4)
        seen = np.ones(len(b), dtype=bool) if feet_seen is None else np.asarray(feet_seen, dtype=bool).reshape(-1)
        if len(seen) != len(b):
            raise ValueError(f"{len(seen)} feet_seen flags for {len(b)} boxes")
        return cls(b[:, 0].copy(), b[:, 1].copy(), b[:, 2].copy(), b[:, 3].copy(), seen)


Detection = Detections  # one frame's detections; a single detection is a row of it
Piece = tuple[int, int, int, int, int, np.ndarray]  # a blob or part of one: x, y, w, h, foreground area, its mask
Box = tuple[float, float, float, float, bool]  # left, top, width, height, feet seen


@dataclass(frozen=True)
class PersonSize:
    """Person height and width (frame pixels) as a function of the foot row y (see the module docstring)."""

    height_mid: float
    frame_height: float
    perspective: float = 0.0
    aspect: float = 0.4  # width / height

    def scale_at(self, y: np.ndarray | float) -> np.ndarray | float:
        return np.maximum(_MIN_SCALE, 1.0 + self.perspective * (np.asarray(y, dtype=np.float64) - self.frame_height / 2)
                          / self.frame_height)

    def height(self, y: np.ndarray | float) -> np.ndarray | float:
        return self.height_mid * self.scale_at(y)

    def width(self, y: np.ndarray | float) -> np.ndarray | float:
        return self.aspect * self.height(y)

    def foot_from_top(self, top: float) -> float:
        """Foot row of a person whose head is at `top`: solves y - height(y) = top."""
        k = self.height_mid * self.perspective / self.frame_height
        if k >= 0.95:  # degenerate model: fall back to the size at the middle
            return top + self.height_mid
        y = (top + self.height_mid * (1 - self.perspective / 2)) / (1 - k)
        return max(y, top + _MIN_SCALE * self.height_mid)


def _peaks(v: np.ndarray, spacing: float) -> list[int]:
    """Local maxima of `v` (the middle of a flat top; the ends count), in order, the lower of two closer than
    `spacing` dropped (scipy.signal.find_peaks with `distance`, without the 30 MB that importing it costs)."""
    n = len(v)
    found: list[int] = []
    i = 0
    while i < n:
        j = i
        while j + 1 < n and v[j + 1] == v[i]:
            j += 1
        if (i == 0 or v[i - 1] < v[i]) and (j == n - 1 or v[j + 1] < v[i]):
            found.append((i + j) // 2)
        i = j + 1
    kept: list[int] = []
    for p in sorted(found, key=lambda k: -v[k]):
        if all(abs(p - q) >= spacing for q in kept):
            kept.append(p)
    return sorted(kept)


def head_cuts(blob: np.ndarray, person_w: float, person_h: float) -> list[int] | None:
    """Column boundaries (from 0 to the blob's width) between the heads on a blob mask's upper outline, cut
    at the lowest point of the outline between two heads; None when fewer than two heads stand out. Two
    neighbouring peaks are two heads when both stand `_HEAD_DROP` of a person above the lowest point between
    them; otherwise they are one (the higher)."""
    h, w = blob.shape
    top = np.where(blob.any(axis=0), blob.argmax(axis=0), h)
    outline = (h - top).astype(np.float64)  # foreground height per column
    k = max(1, int(0.25 * person_w) | 1)     # smooth over a quarter of a person's width: ragged edges are not heads
    outline = np.convolve(np.pad(outline, k // 2, mode="edge"), np.ones(k) / k, mode="valid")
    drop = _HEAD_DROP * person_h
    heads: list[int] = []
    for p in _peaks(outline, _HEAD_SPACING * person_w):
        if heads and min(outline[heads[-1]], outline[p]) - outline[heads[-1]:p + 1].min() < drop:
            if outline[p] > outline[heads[-1]]:
                heads[-1] = p
            continue
        heads.append(p)
    if len(heads) < 2:
        return None
    return [0, *(int(a + np.argmin(outline[a:b + 1])) for a, b in zip(heads[:-1], heads[1:])), w]


def _split_count(extent: float, person: float) -> int:
    return max(1, int(extent / person + 0.5 - _SPLIT_BIAS))


class BlobDetector:
    """Background-subtraction people detector; keeps its background model between frames."""

    def __init__(self, frame_width: int, frame_height: int, person_width_px: float, person_height_px: float,
                 process_width: int = 320, learning_rate: float = -1.0, history: int = 500,
                 perspective: float = 0.0) -> None:
        self.scale = min(1.0, process_width / frame_width)
        self.size = (max(1, round(frame_width * self.scale)), max(1, round(frame_height * self.scale)))
        self.frame_height = frame_height
        # person size in the downscaled frame's pixels, by foot row in those pixels
        self.person = PersonSize(person_height_px * self.scale, self.size[1], perspective,
                                 person_width_px / person_height_px)
        self.person_w = person_width_px * self.scale
        self.person_h = person_height_px * self.scale
        self.learning_rate = learning_rate
        self.history = history
        self._reference: float | None = None
        self._new_model()
        self._open = cv2.getStructuringElement(cv2.MORPH_ELLIPSE, (3, 3))
        kw = max(3, int(self.person_w * 0.25) | 1)
        kh = max(3, int(self.person_h * 0.25) | 1)
        self._close = cv2.getStructuringElement(cv2.MORPH_ELLIPSE, (kw, kh))
        self.mask: np.ndarray | None = None  # the last foreground mask (for inspection)

    def _new_model(self) -> None:
        self.model = cv2.createBackgroundSubtractorMOG2(history=self.history, varThreshold=16, detectShadows=True)
        self._frames = 0

    def detect(self, frame: np.ndarray) -> Detections:
        small = frame if self.scale == 1.0 else cv2.resize(frame, self.size, interpolation=cv2.INTER_AREA)
        level = float(np.mean(cv2.mean(small)[: (small.shape[2] if small.ndim == 3 else 1)]))
        if self._reference is None:
            self._reference = max(level, 1.0)
        gain = self._reference / max(level, 1.0)
        if abs(gain - 1.0) > 0.03:
            small = cv2.convertScaleAbs(small, alpha=gain)
        rate = self.learning_rate
        if self._frames < _WARMUP and rate >= 0:
            rate = max(rate, 1.0 / (self._frames + 1))  # learn the empty scene quickly at start-up
        fg = self.model.apply(small, learningRate=rate)
        self._frames += 1
        _, mask = cv2.threshold(fg, 200, 255, cv2.THRESH_BINARY)  # 127 = shadow, dropped
        if self._frames == 1 or cv2.countNonZero(mask) > _FLOOD * mask.size:
            self._new_model()
            self.model.apply(small, learningRate=1.0)
            self._frames = 1
            self.mask = np.zeros_like(mask)
            return Detections.from_boxes([])
        opened = cv2.morphologyEx(mask, cv2.MORPH_OPEN, self._open)
        mask = cv2.morphologyEx(opened, cv2.MORPH_CLOSE, self._close)
        self.mask = mask
        return self._blobs(mask, opened)

    def _blobs(self, mask: np.ndarray, opened: np.ndarray) -> Detections:
        """People in the closed foreground `mask`; `opened` is the mask before the closing."""
        n, labels, stats, _ = cv2.connectedComponentsWithStats(mask, connectivity=8)
        apart = self._apart(labels, n, opened)
        bottom = mask.shape[0] - 1
        boxes: list[Box] = []
        for i in range(1, n):
            x, y, w, h, area = (int(v) for v in stats[i])
            for part in apart.get(i) or [(x, y, w, h, area, mask[y:y + h, x:x + w])]:
                self._people(*part, bottom, boxes)
        b = np.asarray([box[:4] for box in boxes], dtype=np.float64).reshape(-1, 4) / self.scale
        return Detections.from_boxes(b, [box[4] for box in boxes])

    def _apart(self, labels: np.ndarray, n: int, opened: np.ndarray) -> dict[int, list[Piece]]:
        """Blobs (label -> pieces) that the closing joined from two or more whole people with a gap between
        them (people side by side): each person with the small pieces nearest to them."""
        n0, lab0, st0, _ = cv2.connectedComponentsWithStats(opened, connectivity=8)
        whole = st0[:, 3] >= _WHOLE * self.person.height(st0[:, 1] + st0[:, 3])
        whole[0] = False  # the background
        if whole.sum() < 2:
            return {}
        fg = lab0 > 0
        key = np.unique(lab0[fg].astype(np.int64) * n + labels[fg])  # each piece lies in one blob
        blob_of = np.zeros(n0, dtype=np.int64)
        blob_of[key // n] = key % n
        centre = st0[:, 0] + st0[:, 2] / 2
        out: dict[int, list[Piece]] = {}
        for blob in np.flatnonzero(np.bincount(blob_of[whole], minlength=n) >= 2):
            pieces = np.flatnonzero(blob_of == blob)
            people = [int(j) for j in pieces if whole[j]]
            members: dict[int, list[int]] = {j: [j] for j in people}
            for j in pieces:
                if not whole[j]:
                    members[min(people, key=lambda k: abs(centre[k] - centre[j]))].append(int(j))
            parts = []
            for js in members.values():
                x0, y0 = int(st0[js, 0].min()), int(st0[js, 1].min())
                x1, y1 = int((st0[js, 0] + st0[js, 2]).max()), int((st0[js, 1] + st0[js, 3]).max())
                sub = np.isin(lab0[y0:y1, x0:x1], js).astype(np.uint8) * 255
                parts.append((x0, y0, x1 - x0, y1 - y0, int(st0[js, 4].sum()), sub))
            out[int(blob)] = parts
        return out

    def _people(self, x: int, y: int, w: int, h: int, area: int, sub: np.ndarray, bottom: int,
                boxes: list[Box]) -> None:
        """The boxes of the people in one blob (box x, y, w, h, its foreground area and mask `sub`)."""
        edge = y + h - 1 >= bottom
        foot = y + h if not edge else max(float(y + h), self.person.foot_from_top(y))
        pw, ph = float(self.person.width(foot)), float(self.person.height(foot))
        min_area = _MIN_AREA * pw * ph
        if area < min_area:
            return
        kc = _split_count(w, pw)
        kr = _split_count(max(h, foot - y), ph)
        if kc == 1 and kr == 1:
            boxes.append((x, y, w, foot - y, not edge and foot - y >= _WHOLE * ph))
            return
        cuts = head_cuts(sub, pw, ph) if w >= _HEAD_SPLIT * pw else None
        if cuts is None:
            cuts = [c * w // kc for c in range(kc + 1)]
        for x0, x1 in zip(cuts[:-1], cuts[1:]):
            for r in range(kr):
                y0, y1 = r * h // kr, (r + 1) * h // kr
                cell = sub[y0:y1, x0:x1]
                if cv2.countNonZero(cell) < min_area / 2:
                    continue
                rows = np.flatnonzero(cell.any(axis=1))
                cols = np.flatnonzero(cell.any(axis=0))
                bh = rows[-1] - rows[0] + 1
                cut = y + y0 + rows[0] + bh - 1 >= bottom
                if cut:  # cut by the bottom edge: feet from the head
                    bh = max(bh, self.person.foot_from_top(y + y0 + rows[0]) - (y + y0 + rows[0]))
                seen = r == kr - 1 and not cut and bh >= _WHOLE * float(self.person.height(y + y0 + rows[0] + bh))
                boxes.append((x + x0 + cols[0], y + y0 + rows[0], cols[-1] - cols[0] + 1, bh, seen))
