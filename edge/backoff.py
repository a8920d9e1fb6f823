"""Capped exponential backoff with jitter, for adapters that reopen failed hardware."""

from __future__ import annotations

import random


class Backoff:
    """`next()` gives 1, 2, 4 ... times `initial_s` up to `max_s`, each with ±20% jitter; `reset()` after success.

    The jitter keeps the nodes of a store from retrying in lockstep after a shared outage.
    """

    def __init__(self, initial_s: float = 1.0, max_s: float = 60.0, rng: random.Random | None = None) -> None:
        """A `max_s` below `initial_s` is raised to it: the first wait is never cut short."""
        if initial_s <= 0:
            raise ValueError(f"backoff needs initial_s > 0, got {initial_s}")
        self.initial_s, self.max_s = initial_s, max(max_s, initial_s)
        self.failures = 0
        self._rng = rng or random.Random()

    def next(self) -> float:
        delay = min(self.max_s, self.initial_s * 2 ** min(self.failures, 30))
        self.failures += 1
        return delay * self._rng.uniform(0.8, 1.2)

    def reset(self) -> None:
        self.failures = 0
