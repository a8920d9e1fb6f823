"""MOTChallenge ground truth, the true line crossings it implies, and the counting metrics.

Ground truth rows: `frame,id,left,top,width,height,flag,...` (frames from 1). Rows with flag 0 are
ignored. A person's foot point is (left + width/2, top + height). A true crossing is a change of side
of the foot point between two consecutive annotated frames of the same id, sides being
`signed_distance >= 0` (positive, including on the line) and `< 0`; its frame is the later one.

Matching: a system crossing matches a true one of the same direction within ±`tolerance` frames,
one-to-one, choosing the most matches (then the smallest total time difference).
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import numpy as np

from edge.vision.assign import linear_sum_assignment
from edge.vision.counter import Crossing, point_in_polygon
from edge.vision.line import DIRECTIONS, CountingLine


class GroundTruthError(ValueError):
    """The ground-truth file cannot be used; the message names it and what is wrong."""


@dataclass(frozen=True)
class GroundTruth:
    frame: np.ndarray
    id: np.ndarray
    x: np.ndarray
    y: np.ndarray
    w: np.ndarray
    h: np.ndarray

    @property
    def feet(self) -> np.ndarray:
        return np.stack([self.x + self.w / 2, self.y + self.h], axis=1)

    def __len__(self) -> int:
        return len(self.frame)


def parse_gt(text: str, scale: float = 1.0, source: str = "ground truth") -> GroundTruth:
    rows = []
    for n, line in enumerate(text.splitlines(), start=1):
        if not line.strip() or line.lstrip().startswith("#"):
            continue
        parts = line.replace(" ", "").split(",")
        try:
            if len(parts) < 6:
                raise ValueError
            vals = [float(p) for p in parts[:7]]
        except ValueError:
            raise GroundTruthError(f"{source}, line {n}: need frame,id,left,top,width,height[,flag,...], "
                                   f"got {line.strip()[:60]!r}") from None
        if len(vals) >= 7 and vals[6] == 0:
            continue
        rows.append(vals[:6])
    a = np.asarray(rows, dtype=np.float64).reshape(-1, 6)
    return GroundTruth(a[:, 0].astype(int), a[:, 1].astype(int), a[:, 2] * scale, a[:, 3] * scale,
                       a[:, 4] * scale, a[:, 5] * scale)


def read_gt(path: Path | str, scale: float = 1.0) -> GroundTruth:
    """Read a MOTChallenge gt.txt; coordinates are multiplied by `scale`."""
    try:
        text = Path(path).read_text(encoding="utf-8")
    except FileNotFoundError:
        raise GroundTruthError(f"{path}: no such file") from None
    except (OSError, UnicodeDecodeError) as e:
        raise GroundTruthError(f"{path}: cannot read ({e})") from None
    return parse_gt(text, scale, str(path))


def true_crossings(gt: GroundTruth, line: CountingLine) -> list[Crossing]:
    """Crossings implied by the annotations (see the module docstring), sorted by frame."""
    out: list[Crossing] = []
    positive = line.signed_distance(gt.feet) >= 0
    order = np.lexsort((gt.frame, gt.id))
    ids, frames, pos = gt.id[order], gt.frame[order], positive[order]
    same = ids[1:] == ids[:-1]
    change = same & (pos[1:] != pos[:-1])
    for k in np.flatnonzero(change):
        direction = DIRECTIONS[0] if pos[k + 1] else DIRECTIONS[1]
        out.append(Crossing(int(frames[k + 1]), int(ids[k + 1]), direction))
    return sorted(out, key=lambda c: (c.frame, c.track_id))


def people_per_frame(gt: GroundTruth, frames: np.ndarray, roi: list | None = None) -> np.ndarray:
    """Annotated people per frame in `frames`, counting only feet inside `roi` when given."""
    keep = point_in_polygon(gt.feet, roi) if roi is not None else np.ones(len(gt), dtype=bool)
    counts = np.bincount(gt.frame[keep], minlength=int(max(frames.max(initial=0), gt.frame.max(initial=0))) + 1)
    return counts[np.asarray(frames, dtype=int)]


def match_crossings(system: list[Crossing], truth: list[Crossing], tolerance: int = 10) -> list[tuple[Crossing, Crossing]]:
    """One-to-one (system, truth) pairs of the same direction within ±tolerance frames."""
    pairs: list[tuple[Crossing, Crossing]] = []
    for d in DIRECTIONS:
        s = [c for c in system if c.direction == d]
        t = [c for c in truth if c.direction == d]
        if not s or not t:
            continue
        dt = np.abs(np.array([c.frame for c in s])[:, None] - np.array([c.frame for c in t])[None, :])
        rows, cols = linear_sum_assignment(np.where(dt <= tolerance, dt, 1e9))
        pairs += [(s[r], t[c]) for r, c in zip(rows, cols) if dt[r, c] <= tolerance]
    return pairs


@dataclass(frozen=True)
class DirectionScore:
    system: int
    truth: int
    matched: int

    @property
    def count_accuracy(self) -> float | None:
        """1 - |system - truth| / truth (None when there is no true crossing)."""
        return None if self.truth == 0 else 1.0 - abs(self.system - self.truth) / self.truth

    @property
    def precision(self) -> float | None:
        return None if self.system == 0 else self.matched / self.system

    @property
    def recall(self) -> float | None:
        return None if self.truth == 0 else self.matched / self.truth

    @property
    def f1(self) -> float | None:
        total = self.system + self.truth
        return None if total == 0 else 2 * self.matched / total

    def as_dict(self) -> dict:
        return {"system": self.system, "truth": self.truth, "matched": self.matched,
                "count_accuracy": self.count_accuracy, "precision": self.precision,
                "recall": self.recall, "f1": self.f1}


def score_crossings(system: list[Crossing], truth: list[Crossing], tolerance: int = 10) -> dict[str, DirectionScore]:
    """Per direction and "all": counts, matched events, and the metrics derived from them."""
    pairs = match_crossings(system, truth, tolerance)
    out = {}
    for d in DIRECTIONS:
        out[d] = DirectionScore(sum(c.direction == d for c in system), sum(c.direction == d for c in truth),
                                sum(p[0].direction == d for p in pairs))
    out["all"] = DirectionScore(len(system), len(truth), len(pairs))
    return out


def mean_absolute_error(system: np.ndarray, truth: np.ndarray) -> float:
    """Mean over frames of |people seen by the system - people annotated|."""
    s, t = np.asarray(system, dtype=float), np.asarray(truth, dtype=float)
    return float(np.mean(np.abs(s - t))) if len(s) else 0.0
