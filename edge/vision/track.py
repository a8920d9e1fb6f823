"""SORT-like tracking of foot points: constant-velocity Kalman filter, Hungarian assignment.

Each track filters its foot point (x, y, vx, vy) with a constant-velocity Kalman filter and smooths
its box size. Per frame: predict every track, assign detections to tracks by
`scipy.optimize.linear_sum_assignment` on the distance between predicted and detected foot points,
pairs farther apart than `gate_px` are not assigned (the gate is how far a person can get from where
they were expected in one frame). Confirmed tracks are matched first, tentative ones with what is left
(ByteTrack's idea of letting the established tracks choose first). A track is confirmed after
`min_hits` consecutive matches; a tentative track dies at its first miss; a confirmed one coasts on
its prediction for up to `max_age` frames (a person hidden behind another) and then dies.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field

import numpy as np
from scipy.optimize import linear_sum_assignment

from edge.vision.detect import Detections

_F = np.array([[1, 0, 1, 0], [0, 1, 0, 1], [0, 0, 1, 0], [0, 0, 0, 1]], dtype=np.float64)
_H = np.array([[1, 0, 0, 0], [0, 1, 0, 0]], dtype=np.float64)


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
    confirmed: bool = False
    history: list[tuple[float, float]] = field(default_factory=list)

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
                 gate_scale: Callable[[np.ndarray], np.ndarray] | None = None) -> None:
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

    def _correct(self, t: Track, z: np.ndarray, w: float, h: float) -> None:
        s = _H @ t.cov @ _H.T + self._r
        k = t.cov @ _H.T @ np.linalg.inv(s)
        t.state = t.state + k @ (z - _H @ t.state)
        t.cov = (np.eye(4) - k @ _H) @ t.cov
        t.w += 0.3 * (w - t.w)
        t.h += 0.3 * (h - t.h)
        t.hits += 1
        t.time_since_update = 0
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
        cost = np.linalg.norm(pred[:, None, :] - feet[None, idx, :], axis=2)
        gate = np.full(len(tracks), self.gate)
        if self.gate_scale is not None:
            gate = gate * self.gate_scale(pred[:, 1])
        gate = gate[:, None] * np.ones((1, len(idx)))
        rows, cols = linear_sum_assignment(np.where(cost <= gate, cost, 1e6))
        pairs = [(tracks[r], int(idx[c])) for r, c in zip(rows, cols) if cost[r, c] <= gate[r, c]]
        for _, j in pairs:
            free[j] = False
        return pairs

    def update(self, det: Detections) -> list[Track]:
        for t in self.tracks:
            self._predict(t)
        feet = det.feet
        free = np.ones(len(det), dtype=bool)
        matched: set[int] = set()
        for group in ([t for t in self.tracks if t.confirmed], [t for t in self.tracks if not t.confirmed]):
            for t, j in self._assign(group, feet, free):
                self._correct(t, feet[j], float(det.w[j]), float(det.h[j]))
                matched.add(t.id)
        self.tracks = [t for t in self.tracks if t.id in matched
                       or (t.confirmed and t.time_since_update <= self.max_age)]
        for j in np.flatnonzero(free):
            cov = np.diag([self._r[0, 0], self._r[1, 1], 25.0, 25.0])
            t = Track(self._next_id, np.array([feet[j, 0], feet[j, 1], 0.0, 0.0]), cov,
                      float(det.w[j]), float(det.h[j]), confirmed=self.min_hits <= 1)
            t.history.append(t.foot)
            self._next_id += 1
            self.tracks.append(t)
        return self.tracks
