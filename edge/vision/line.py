"""The counting line: which side of it a point is on, and what a crossing is called.

A line is written as `x=384` (vertical), `y=288` (horizontal) or `X1,Y1,X2,Y2` (any two points), in
image pixels (x to the right, y down).

Signed distance and sides: for `x=c` it is `x - c`, for `y=c` it is `y - c`, and for two points it is
`((y2-y1)(x-x1) - (x2-x1)(y-y1)) / |P2-P1|`, so `c,0,c,H` is the same line as `x=c` and `W,c,0,c` the
same as `y=c`. A crossing from the negative to the positive side is "increasing" (for `x=c`: left to
right; for `y=c`: top to bottom of the image), the other way "decreasing".

"in" is a crossing towards the positive side ("increasing") unless `flip` is set, in which case "in"
is "decreasing". Which way the shop door is depends on the camera mounting, hence the flip.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np

INCREASING = "increasing"
DECREASING = "decreasing"
DIRECTIONS = (INCREASING, DECREASING)


class LineError(ValueError):
    """The text does not describe a counting line; the message says what is accepted."""


@dataclass(frozen=True)
class CountingLine:
    x1: float
    y1: float
    x2: float
    y2: float
    flip: bool = False

    @classmethod
    def parse(cls, text: str, scale: float = 1.0, flip: bool = False) -> CountingLine:
        """`x=384`, `y=288` or `X1,Y1,X2,Y2`; every coordinate is multiplied by `scale`."""
        s = text.strip().replace(" ", "").lower()
        try:
            if s.startswith(("x=", "y=")):
                c = float(s[2:]) * scale
                if not math.isfinite(c):
                    raise ValueError
                big = 1e6
                return cls(c, 0.0, c, big, flip) if s[0] == "x" else cls(big, c, 0.0, c, flip)
            parts = [float(p) * scale for p in s.split(",")]
        except ValueError:
            raise LineError(f"bad line {text!r}: write x=NUMBER, y=NUMBER or X1,Y1,X2,Y2") from None
        if len(parts) != 4 or not all(math.isfinite(p) for p in parts):
            raise LineError(f"bad line {text!r}: write x=NUMBER, y=NUMBER or X1,Y1,X2,Y2")
        if parts[0] == parts[2] and parts[1] == parts[3]:
            raise LineError(f"bad line {text!r}: the two points are the same")
        return cls(*parts, flip)

    def signed_distance(self, points: np.ndarray) -> np.ndarray:
        """Pixels from the line, positive on the positive side; `points` is (N, 2) or (2,)."""
        p = np.asarray(points, dtype=np.float64)
        dx, dy = self.x2 - self.x1, self.y2 - self.y1
        return (dy * (p[..., 0] - self.x1) - dx * (p[..., 1] - self.y1)) / math.hypot(dx, dy)

    def side(self, points: np.ndarray, band: float = 0.0) -> np.ndarray:
        """+1 beyond `band` pixels on the positive side, -1 beyond it on the negative side, 0 within."""
        d = self.signed_distance(points)
        return np.where(d > band, 1, np.where(d < -band, -1, 0)).astype(np.int8)

    @staticmethod
    def direction(from_side: int, to_side: int) -> str:
        """The name of a move from one side to the other (sides are -1 or +1)."""
        return INCREASING if to_side > from_side else DECREASING

    def in_out(self, direction: str) -> str:
        """"in" or "out" for "increasing"/"decreasing" (see the module docstring for `flip`)."""
        inward = (direction == INCREASING) != self.flip
        return "in" if inward else "out"
