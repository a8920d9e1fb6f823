"""Per-node sequence bookkeeping: the high-water mark and the ranges not (yet) received.

Pure state, no I/O: the store loads it, feeds it each stored seq and writes back what changed.
A gap opens when a seq arrives beyond high_water + 1 and closes, piece by piece, as late
(redelivered, replayed) events fill it.
"""

from __future__ import annotations

import bisect
from dataclasses import dataclass, field


@dataclass
class SeqTracker:
    high_water: int = 0
    gaps: list[tuple[int, int]] = field(default_factory=list)  # sorted, inclusive, disjoint

    def observe(self, seq: int) -> bool:
        """Record one received seq; returns True when the gaps changed."""
        if seq == self.high_water + 1:
            self.high_water = seq
            return False
        if seq > self.high_water:
            self.gaps.append((self.high_water + 1, seq - 1))
            self.high_water = seq
            return True
        index = bisect.bisect_right(self.gaps, (seq, float("inf"))) - 1
        if index < 0:
            return False
        first, last = self.gaps[index]
        if not first <= seq <= last:
            return False
        pieces = [(a, b) for a, b in ((first, seq - 1), (seq + 1, last)) if a <= b]
        self.gaps[index : index + 1] = pieces
        return True

    @property
    def missing(self) -> int:
        return sum(last - first + 1 for first, last in self.gaps)
