"""SORT-like tracking of foot points: constant-velocity Kalman filter, Hungarian assignment.

Each track filters its foot point (x, y, vx, vy) with a constant-velocity Kalman filter and smooths its
box size. Per frame: predict every track, assign detections to tracks by `linear_sum_assignment`
(`edge.vision.assign`: SciPy's algorithm without SciPy's memory) on the distance between predicted and
detected foot points; pairs farther apart than the gate (`gate_px`, how far a person can get from where
they were expected in one frame) are not made, and leaving a track unmatched costs its gate, so a pair
is made only when it lowers the total: a track whose person is hidden coasts rather than take a
neighbour's detection (maximising the number of pairs instead swaps two people whose paths cross).
Confirmed tracks are matched first, tentative ones with what is left (ByteTrack's idea of letting the
established tracks choose first). A track is confirmed after `min_hits` consecutive matches; a tentative
track dies at its first miss; a confirmed one coasts on its prediction for up to `max_age` frames (a
person hidden behind another) and then dies.

Occlusion (`occlusion=True`, for oblique views): a confirmed track whose predicted box is more than
`OCCLUDED` covered by a nearer track's box (nearer = feet lower in the image) is behind someone. Its
feet are hidden, and the bottom of any blob it is matched with is the front person's, so only its
column is measured; its row follows its own motion until it is in the clear again. The exception is a
detection whose feet were seen (`Detections.feet_seen`: a whole person's box, not a cut) clearly deeper
than the front person's: someone half hidden beside or behind them, whose feet are their own. While it
is behind someone its track coasts up to `HIDDEN_AGE` x `max_age` frames: two people walking in file
can stay one blob for longer than someone is ever missed in the clear. Each track says whom it is behind
(`behind`), and a new track whose box is mostly covered by a nearer person's (feet `EMERGED_DEPTH` of
its height lower: clearly deeper, not beside them) says whom it came out from behind (`emerged_from`),
so the line counter can count people walking in file (edge.vision.counter).
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field

import numpy as np

from edge.vision.assign import linear_sum_assignment
from edge.vision.detect import Detections

_F = np.array([[1, 0, 1, 0], [0, 1, 0, 1], [0, 0, 1, 0], [0, 0, 0, 1]], dtype=np.float64)
_H = np.array([[1, 0, 0, 0], [0, 1, 0, 0]], dtype=np.float64)
OCCLUDED = 0.3   # share of a track's box covered by a nearer track's above which it is behind that person
EMERGED_DEPTH = 0.2  # of a new track's height: how much lower the feet of the person it came out from behind are
HIDDEN_AGE = 3   # a track behind someone coasts up to this many times max_age (walking behind a person takes longer)


@dataclass
class Track:
    id: int
    state: np.ndarray          # foot x, foot y, vx, vy (pixels, pixels per frame)
    cov: np.ndarray
    w: float
    h: float
    hits: int = 1
    age: int = 1
    time_since_update: int = 0
    row_measured: bool = True          # the last match measured the foot row, not only the column
    confirmed: bool = False
    history: list[tuple[float, float]] = field(default_factory=list)
    behind: int | None = None         # the nearer track hiding this one this frame (oblique views)
    emerged_from: int | None = None   # the nearer track this one was hidden behind when it was born

    @property
    def foot(self) -> tuple[float, float]:
        return float(self.state[0]), float(self.state[1])

    @property
    def box(self) -> tuple[float, float, float, float]:
        fx, fy = self.foot
        return fx - self.w / 2, fy - self.h, self.w, self.h


class Tracker:
    """Multi-object tracker; `update(detections)` once per frame returns the live tracks."""

    def __init__(self, gate_px: float, min_hits: int = 3, max_age: int = 10,
                 measurement_px: float = 2.0, acceleration_px: float = 1.0,
                 gate_scale: Callable[[np.ndarray], np.ndarray] | None = None, occlusion: bool = False) -> None:
        self.occlusion = occlusion  # oblique view: a person partly behind a nearer one has no reliable foot row
        self.gate = gate_px
        self.gate_scale = gate_scale  # foot rows -> factor on the gate (perspective: smaller far away)
        self.min_hits = min_hits
        self.max_age = max_age
        self._r = np.eye(2) * measurement_px ** 2
        q = acceleration_px ** 2
        g = np.array([[0.5, 0], [0, 0.5], [1, 0], [0, 1]])
        self._q = g @ g.T * q
        self.tracks: list[Track] = []
        self._next_id = 1

    def _predict(self, t: Track) -> None:
        t.state = _F @ t.state
        t.cov = _F @ t.cov @ _F.T + self._q
        t.age += 1
        t.time_since_update += 1

    def _correct(self, t: Track, z: np.ndarray, w: float, h: float, occluded: bool = False) -> None:
        if occluded:  # only the column is measured: the foot row belongs to whoever stands in front
            hx = _H[:1]
            s = hx @ t.cov @ hx.T + self._r[:1, :1]
            k = t.cov @ hx.T @ np.linalg.inv(s)
            t.state = t.state + k @ (z[:1] - hx @ t.state)
            t.cov = (np.eye(4) - k @ hx) @ t.cov
        else:
            s = _H @ t.cov @ _H.T + self._r
            k = t.cov @ _H.T @ np.linalg.inv(s)
            t.state = t.state + k @ (z - _H @ t.state)
            t.cov = (np.eye(4) - k @ _H) @ t.cov
            t.w += 0.3 * (w - t.w)
            t.h += 0.3 * (h - t.h)
        t.hits += 1
        t.time_since_update = 0
        t.row_measured = not occluded
        if t.hits >= self.min_hits:
            t.confirmed = True
        t.history.append(t.foot)
        if len(t.history) > 32:
            del t.history[:-32]

    def _assign(self, tracks: list[Track], feet: np.ndarray, free: np.ndarray) -> list[tuple[Track, int]]:
        idx = np.flatnonzero(free)
        if not tracks or len(idx) == 0:
            return []
        pred = np.array([t.state[:2] for t in tracks])
        dist = np.linalg.norm(pred[:, None, :] - feet[None, idx, :], axis=2)
        gate = np.full(len(tracks), self.gate)
        if self.gate_scale is not None:
            gate = gate * self.gate_scale(pred[:, 1])
        cost = np.where(dist <= gate[:, None], dist, np.inf)
        # Leaving a track unmatched costs its gate (one dummy column per track): a pair is made only when
        # it lowers the total, so a track whose own detection is missing coasts instead of taking its
        # neighbour's (a plain assignment with "infinite" costs outside the gate maximises the number of
        # pairs first, and swaps two crossing people to get one more pair).
        n = len(tracks)
        full = np.full((n, len(idx) + n), np.inf)
        full[:, :len(idx)] = cost
        full[np.arange(n), len(idx) + np.arange(n)] = gate
        rows, cols = linear_sum_assignment(full)
        pairs = [(tracks[r], int(idx[c])) for r, c in zip(rows, cols) if c < len(idx)]
        for _, j in pairs:
            free[j] = False
        return pairs

    def _covering(self, tracks: list[Track], others: list[Track], margin: float = 0.0) -> dict[int, int]:
        """For each of `tracks` whose box is covered by more than OCCLUDED of its area by a nearer box among
        `others` (nearer = feet lower in the image, in an oblique view): the id of the most covering one."""
        if not tracks or not others:
            return {}
        a = np.array([t.box for t in tracks])
        b = np.array([t.box for t in others])
        ax1, ay1, bx1, by1 = a[:, 0] + a[:, 2], a[:, 1] + a[:, 3], b[:, 0] + b[:, 2], b[:, 1] + b[:, 3]
        iw = np.clip(np.minimum(ax1[:, None], bx1[None]) - np.maximum(a[:, 0, None], b[None, :, 0]), 0, None)
        ih = np.clip(np.minimum(ay1[:, None], by1[None]) - np.maximum(a[:, 1, None], b[None, :, 1]), 0, None)
        cover = iw * ih / np.maximum(a[:, 2] * a[:, 3], 1e-9)[:, None]   # [i, j]: share of i covered by j
        cover = np.where(by1[None, :] > ay1[:, None] + margin * a[:, 3, None], cover, 0.0)
        best = cover.argmax(axis=1)
        return {t.id: others[int(j)].id for t, j, c in zip(tracks, best, cover.max(axis=1)) if c > OCCLUDED}

    def update(self, det: Detections) -> list[Track]:
        for t in self.tracks:
            self._predict(t)
        live = [t for t in self.tracks if t.confirmed]
        occluded = self._covering(live, live) if self.occlusion else {}
        feet = det.feet
        free = np.ones(len(det), dtype=bool)
        matched: set[int] = set()
        fronts = {t.id: t for t in live}
        for group in ([t for t in self.tracks if t.confirmed], [t for t in self.tracks if not t.confirmed]):
            for t, j in self._assign(group, feet, free):
                front = fronts.get(occluded.get(t.id, -1))
                row_hidden = front is not None and not (
                    det.feet_seen[j] and feet[j, 1] < front.state[1] - EMERGED_DEPTH * t.h)
                self._correct(t, feet[j], float(det.w[j]), float(det.h[j]), row_hidden)
                matched.add(t.id)
        for t in self.tracks:
            t.behind = occluded.get(t.id)
        self.tracks = [t for t in self.tracks if t.id in matched
                       or (t.confirmed and t.time_since_update <= self.max_age)
                       or (t.id in occluded and t.time_since_update <= HIDDEN_AGE * self.max_age)]
        born: list[Track] = []
        for j in np.flatnonzero(free):
            cov = np.diag([self._r[0, 0], self._r[1, 1], 25.0, 25.0])
            t = Track(self._next_id, np.array([feet[j, 0], feet[j, 1], 0.0, 0.0]), cov,
                      float(det.w[j]), float(det.h[j]), confirmed=self.min_hits <= 1)
            t.history.append(t.foot)
            self._next_id += 1
            born.append(t)
        if self.occlusion and born:
            seen = [t for t in self.tracks if t.confirmed and t.time_since_update == 0 and t.behind is None]
            nearer = self._covering(born, seen, margin=EMERGED_DEPTH)
            for t in born:
                t.emerged_from = nearer.get(t.id)
        self.tracks.extend(born)
        return self.tracks
