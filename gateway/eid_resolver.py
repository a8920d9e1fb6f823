"""Resolving the app's rotating ephemeral IDs to consented installs with one dictionary lookup.

For every install the table holds the EIDs of the current rotation period and `skew_periods` on
each side, so a phone whose clock is off by up to that much still resolves. A heap orders the
installs by when their window must slide; sliding one install costs two AES blocks (its temporary
key changes only every 2^16 s and is cached). Withdrawing consent removes an install's entries at
once, so its next sighting stays anonymous. The table holds the 8-byte EIDs and small integers,
never the identity keys' derivatives beyond the current window.
"""

from __future__ import annotations

import heapq
from dataclasses import dataclass, field

from edge.radio.eid import ephemeral_id


@dataclass(slots=True)
class _Install:
    install_id: str
    identity_key: bytes = field(repr=False)
    exponent: int = 10
    offset_s: int = 0                 # the app's EID clock: beacon_time = unix_time - offset_s
    centre: int = -1                  # the period the current window is centred on
    eids: list[bytes] = field(default_factory=list)
    active: bool = True


class EidResolver:
    def __init__(self, skew_periods: int = 1) -> None:
        self.skew_periods = skew_periods
        self._installs: dict[str, _Install] = {}
        self._table: dict[bytes, _Install] = {}
        self._heap: list[tuple[float, int, _Install]] = []
        self._counter = 0
        self.now = 0.0

    def __len__(self) -> int:
        return len(self._installs)

    @property
    def entries(self) -> int:
        return len(self._table)

    def add(self, install_id: str, identity_key: bytes, rotation_exponent: int, offset_s: int = 0,
            now: float | None = None) -> None:
        self.remove(install_id)
        install = _Install(install_id, bytes(identity_key), rotation_exponent, offset_s)
        self._installs[install_id] = install
        self._slide(install, self.now if now is None else now)

    def remove(self, install_id: str) -> None:
        install = self._installs.pop(install_id, None)
        if install is not None:
            install.active = False
            for eid in install.eids:
                if self._table.get(eid) is install:
                    del self._table[eid]

    def resolve(self, eid: bytes, at: float) -> str | None:
        """The install that advertised `eid` around time `at` (unix seconds), or None."""
        if at > self.now:
            self.advance(at)
        install = self._table.get(eid)
        return install.install_id if install is not None else None

    def advance(self, now: float) -> None:
        """Slide every install whose window is due; called by `resolve`, or ahead of time by a timer."""
        self.now = now
        heap = self._heap
        while heap and heap[0][0] <= now:
            _, _, install = heapq.heappop(heap)
            if install.active:
                self._slide(install, now)

    def _slide(self, install: _Install, now: float) -> None:
        period = 1 << install.exponent
        beacon_time = int(now) - install.offset_s
        centre = beacon_time >> install.exponent
        if centre != install.centre:
            for eid in install.eids:
                if self._table.get(eid) is install:
                    del self._table[eid]
            install.eids = [ephemeral_id(install.identity_key, install.exponent, (centre + d) * period)
                            for d in range(-self.skew_periods, self.skew_periods + 1)]
            for eid in install.eids:
                self._table[eid] = install
            install.centre = centre
        next_unix = (centre + 1) * period + install.offset_s
        self._counter += 1
        heapq.heappush(self._heap, (float(next_unix), self._counter, install))
