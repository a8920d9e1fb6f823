"""Plane geometry in metres for the store plan: polygons, segments, crossings. Pure numpy."""

from __future__ import annotations

import numpy as np

Point = tuple[float, float]


def polygon_area(poly: list[Point]) -> float:
    """Signed shoelace area; positive when the vertices run counter-clockwise."""
    xy = np.asarray(poly, dtype=float)
    x, y = xy[:, 0], xy[:, 1]
    return float(0.5 * (np.dot(x, np.roll(y, -1)) - np.dot(y, np.roll(x, -1))))


def contains(poly: list[Point], x: np.ndarray | float, y: np.ndarray | float) -> np.ndarray:
    """Even-odd ray casting, vectorised over points."""
    px, py = np.asarray(x, dtype=float), np.asarray(y, dtype=float)
    inside = np.zeros(np.broadcast(px, py).shape, dtype=bool)
    n = len(poly)
    for i in range(n):
        x1, y1 = poly[i]
        x2, y2 = poly[(i + 1) % n]
        if y1 == y2:
            continue
        crosses = (y1 > py) != (y2 > py)
        x_at = x1 + (py - y1) * (x2 - x1) / (y2 - y1)
        inside ^= crosses & (px < x_at)
    return inside


def segments_cross(a: Point, b: Point, c: Point, d: Point) -> bool:
    """Whether segment ab properly intersects segment cd (touching endpoints do not count)."""
    def orient(p: Point, q: Point, r: Point) -> float:
        return (q[0] - p[0]) * (r[1] - p[1]) - (q[1] - p[1]) * (r[0] - p[0])
    d1, d2 = orient(c, d, a), orient(c, d, b)
    d3, d4 = orient(a, b, c), orient(a, b, d)
    return (d1 * d2 < 0) and (d3 * d4 < 0)


def side_of_line(a: Point, b: Point, x: np.ndarray | float, y: np.ndarray | float) -> np.ndarray:
    """Sign of the cross product: >0 left of a->b, <0 right of it."""
    return np.sign((b[0] - a[0]) * (np.asarray(y) - a[1]) - (b[1] - a[1]) * (np.asarray(x) - a[0]))


def sample_in_polygon(poly: list[Point], rng: np.random.Generator, margin: float = 0.0) -> Point:
    """A uniform point inside the polygon, by rejection from its bounding box."""
    xy = np.asarray(poly, dtype=float)
    lo, hi = xy.min(axis=0) + margin, xy.max(axis=0) - margin
    for _ in range(1000):
        x, y = rng.uniform(lo, hi)
        if contains(poly, x, y):
            return float(x), float(y)
    cx, cy = xy.mean(axis=0)
    return float(cx), float(cy)
