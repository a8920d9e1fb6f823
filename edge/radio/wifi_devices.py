"""How many people are near a sniffer, from Wi-Fi probe requests, despite MAC address randomization.

Two layers, both pure:

- `ProbeLinker` gives every probe a device key (an int that lives in memory only). A global
  address is its own device. A phone with a random address changes it as often as every scan, so
  a new random address is linked to a recent device with the same fingerprint (the information
  elements of its chipset and driver, see `edge.radio.probe`), preferring one whose 12-bit
  sequence counter it continues (many phones keep the counter across address changes), else the
  one heard most recently. State older than `horizon_s` is forgotten, so memory stays bounded
  on a node that runs for weeks.
- `estimate_windows` counts, per window, the devices heard at least once at or above an RSSI
  threshold (close enough to be in the room), leaves out denied OUIs and the fixed devices it
  learns (heard in nearly every window for many hours: printers, PCs, access points), and turns
  devices into people with one scale factor. Phones idle or asleep may not probe in a window and
  some people carry two devices; the factor absorbs both, and it is why the defaults were fitted.

Defaults were fitted on the six sc6-61 days (an ESP32 sniffer in a university lab) and checked by
leave-one-day-out in `bench/wifi_occupancy.py`; a sniffer placed elsewhere (through a wall, high
on a shelf) mainly shifts `rssi_min_dbm`, the one parameter to recheck on site.
"""

from __future__ import annotations

from collections import deque
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field

from edge.radio.probe import ProbeRequest

SEQ_MODULO = 4096
MAX_FILL_S = 86_400.0   # a longer silence is a sniffer switched off, not a day of empty windows


def parse_oui(text: str) -> bytes:
    """'dc:fb:48', 'DC-FB-48' or 'dcfb48' -> 3 bytes; ValueError naming the bad input otherwise."""
    digits = text.replace(":", "").replace("-", "").strip()
    try:
        raw = bytes.fromhex(digits)
    except ValueError:
        raw = b""
    if len(raw) != 3:
        raise ValueError(f"not an OUI (three hex bytes such as dc:fb:48): {text!r}")
    return raw


@dataclass(slots=True)
class _Track:
    """One device as the linker knows it: its recent addresses, each with where its sequence counter was."""

    device: int
    last_seen: float
    first_src: bytes = b""              # the first address heard: the device's stable identity while linked
    heads: dict[bytes, int] = field(default_factory=dict)  # address -> last sequence number
    keeps_seq: bool = False             # has carried its counter across an address change

    def advance(self, src: bytes, seq: int, when: float) -> None:
        self.heads.pop(src, None)
        self.heads[src] = seq
        if len(self.heads) > _MAX_HEADS:
            del self.heads[next(iter(self.heads))]
        self.last_seen = max(self.last_seen, when)

    def seq_gap(self, seq: int, max_gap: int) -> int:
        """How far `seq` runs ahead of the nearest address's counter; SEQ_MODULO when it continues none."""
        best = SEQ_MODULO
        for last in self.heads.values():
            gap = (seq - last) % SEQ_MODULO
            if 0 < gap <= max_gap and gap < best:
                best = gap
        return best


_MAX_HEADS = 4


class ProbeLinker:
    """Streaming assignment of device keys to probes (in time order).

    A new random address continues the device of the same fingerprint whose sequence counter it
    continues (at most `max_seq_gap` ahead: frames sent on channels the sniffer did not hear fall in
    between), if that device was heard within `seq_link_s`; failing that, it joins the device of the
    same fingerprint heard most recently, within `link_s`.
    `horizon_s`: addresses and devices not heard for this long are forgotten.

    Without counter evidence (phones that also randomize the counter) a new address joins the
    most recent device of its kind, so two phones of one model probing within `link_s` of each
    other count once; a device seen carrying its counter is only ever continued by its counter.
    """

    def __init__(self, link_s: float = 60.0, max_seq_gap: int = 64, seq_link_s: float = 300.0,
                 horizon_s: float = 900.0) -> None:
        if not 0 < link_s <= horizon_s or not 0 < seq_link_s <= horizon_s or not 0 < max_seq_gap < SEQ_MODULO // 2:
            raise ValueError("need 0 < link_s, seq_link_s <= horizon_s and 0 < max_seq_gap < 2048")
        self.link_s, self.max_seq_gap, self.seq_link_s, self.horizon_s = link_s, max_seq_gap, seq_link_s, horizon_s
        self._by_src: dict[bytes, tuple[_Track, float]] = {}   # address -> its device, when last heard
        self._by_fingerprint: dict[bytes, list[_Track]] = {}
        self._next_device = 0
        self._next_sweep = float("-inf")

    def __len__(self) -> int:
        """Addresses currently remembered: what bounds the linker's memory."""
        return len(self._by_src)

    def link(self, when: float, probe: ProbeRequest) -> int:
        """The device key of this probe."""
        return self._link(when, probe).device

    def link_identity(self, when: float, probe: ProbeRequest) -> bytes:
        """The first address of this probe's device: a key that survives its MAC changes (memory only)."""
        return self._link(when, probe).first_src

    def _link(self, when: float, probe: ProbeRequest) -> _Track:
        if when >= self._next_sweep:
            self._forget(when - self.horizon_s)
            self._next_sweep = when + self.horizon_s / 4
        known = self._by_src.get(probe.src)
        track = known[0] if known is not None else self._continued(when, probe) if probe.randomized else None
        if track is None:
            track = _Track(self._next_device, when, probe.src)
            self._next_device += 1
            if probe.randomized:
                self._by_fingerprint.setdefault(probe.fingerprint, []).append(track)
        self._by_src[probe.src] = (track, when if known is None else max(known[1], when))
        track.advance(probe.src, probe.seq, when)
        return track

    def _continued(self, when: float, probe: ProbeRequest) -> _Track | None:
        """The recent device of the same kind this new random address most likely belongs to."""
        best: _Track | None = None
        best_gap = SEQ_MODULO
        for track in self._by_fingerprint.get(probe.fingerprint, ()):
            age = when - track.last_seen
            gap = track.seq_gap(probe.seq, self.max_seq_gap) if age <= self.seq_link_s else SEQ_MODULO
            if gap == SEQ_MODULO and (track.keeps_seq or age > self.link_s):
                continue  # a device that carries its counter would have continued it; or heard too long ago
            if best is None or gap < best_gap or (gap == best_gap and track.last_seen > best.last_seen):
                best, best_gap = track, gap
        if best is not None and best_gap < SEQ_MODULO:
            best.keeps_seq = True
        return best

    def _forget(self, before: float) -> None:
        self._by_src = {src: seen for src, seen in self._by_src.items() if seen[1] >= before}
        for fingerprint in list(self._by_fingerprint):
            kept = [t for t in self._by_fingerprint[fingerprint] if t.last_seen >= before]
            if kept:
                self._by_fingerprint[fingerprint] = kept
            else:
                del self._by_fingerprint[fingerprint]


class FixedDevices:
    """Learns devices that never leave: heard in at least `share` of the last `history` windows that had any probe.

    Only after `history` such windows, so a long meeting is not mistaken for furniture.
    """

    def __init__(self, history: int = 144, share: float = 0.9) -> None:
        self.history, self.share = history, share
        self._windows: deque[frozenset[bytes]] = deque(maxlen=history)
        self._counts: dict[bytes, int] = {}

    def is_fixed(self, address: bytes) -> bool:
        return len(self._windows) >= self.history and self._counts.get(address, 0) >= self.share * self.history

    def add_window(self, addresses: Iterable[bytes]) -> None:
        seen = frozenset(addresses)
        if not seen:
            return
        if len(self._windows) == self._windows.maxlen:
            for address in self._windows[0]:
                left = self._counts[address] - 1
                if left:
                    self._counts[address] = left
                else:
                    del self._counts[address]
        self._windows.append(seen)
        for address in seen:
            self._counts[address] = self._counts.get(address, 0) + 1


@dataclass(frozen=True)
class EstimatorSettings:
    """The few physical parameters of the estimate.

    - `window_s`: seconds per reported window.
    - `rssi_min_dbm`: a device counts in a window if heard at least this strong once: in the room
      rather than behind a wall. Fitted: -67 dBm (leave-one-day-out picks -67 on five of six folds,
      -65 on the sixth). The parameter to recheck when the sniffer sits elsewhere.
    - `people_per_device`: devices in range to people. Fitted: 0.9 (0.88-1.06 across folds).
    - `link_s`, `max_seq_gap`, `seq_link_s`: how a new random address is linked, see `ProbeLinker`.
      60 s without counter evidence beat 30 s and 120 s and is about how often a phone scans.
    - `fixed_history_windows`, `fixed_share`: an address heard in this share of this many past
      windows (12 h) is a fixed device and not counted; shorter histories dropped people who
      spent a working day in the lab.
    - `deny_oui`: OUI prefixes never counted at all, the site's own known devices. Empty by
      default; for sc6-61 the lab PCs dc:fb:48 and 40:ec:99.

    Measured on sc6-61 (bench/wifi_occupancy.py, 530 windows): MAE 1.16 people per window with
    these defaults, 1.24 leave-one-day-out, against 25.9 for distinct addresses and 3.6 for
    distinct non-randomized addresses.
    """

    window_s: float = 300.0
    rssi_min_dbm: int = -67
    people_per_device: float = 0.9
    link_s: float = 60.0
    max_seq_gap: int = 64
    seq_link_s: float = 300.0
    fixed_history_windows: int = 144
    fixed_share: float = 0.9
    deny_oui: tuple[bytes, ...] = ()


@dataclass(frozen=True)
class WindowEstimate:
    start: float                            # window start, seconds since the epoch (UTC)
    people: float                           # the estimate the node reports
    devices: int                            # linked devices in range, fixed ones left out
    addresses: int                          # naive: distinct source addresses
    global_addresses: int                   # naive: distinct non-randomized source addresses
    probes: int


@dataclass
class _Window:
    start: float
    addresses: set[bytes] = field(default_factory=set)
    strong_addresses: dict[bytes, int] = field(default_factory=dict)   # address -> device key
    probes: int = 0


def estimate_windows(probes: Iterable[tuple[float, ProbeRequest]], window_s: float | None = None,
                     settings: EstimatorSettings | None = None,
                     deny_oui: Sequence[bytes] | None = None) -> list[WindowEstimate]:
    """People per window from (timestamp, probe) pairs in time order, as the node would report them live.

    Every window from the first probe's to the last probe's is reported, empty ones as 0 people,
    except across a silence longer than `MAX_FILL_S` (the sniffer was off). Windows start at
    multiples of `window_s` since the epoch. Fixed devices are learnt only from past windows, so the
    result is causal. `window_s` and `deny_oui` override `settings`.
    """
    s = settings or EstimatorSettings()
    width = window_s if window_s is not None else s.window_s
    if width <= 0:
        raise ValueError(f"window must be positive, got {width}")
    deny = tuple(deny_oui if deny_oui is not None else s.deny_oui)
    linker = ProbeLinker(link_s=s.link_s, max_seq_gap=s.max_seq_gap, seq_link_s=s.seq_link_s,
                         horizon_s=max(900.0, s.link_s, s.seq_link_s))
    fixed = FixedDevices(s.fixed_history_windows, s.fixed_share)
    out: list[WindowEstimate] = []
    current: _Window | None = None
    last_when = float("-inf")
    for when, probe in probes:
        if when < last_when - width:
            raise ValueError(f"probes out of time order by {last_when - when:.0f} s")
        last_when = max(last_when, when)
        if deny and probe.src[:3] in deny:
            continue
        start = (when // width) * width
        if current is None or start > current.start:
            if current is not None:
                out.extend(_close(current, fixed, s.people_per_device, start, width))
            current = _Window(start)
        device = linker.link(when, probe)
        current.probes += 1
        current.addresses.add(probe.src)
        if probe.rssi is not None and probe.rssi >= s.rssi_min_dbm:
            current.strong_addresses[probe.src] = device
    if current is not None:
        out.extend(_close(current, fixed, s.people_per_device, current.start + width, width))
    return out


def _close(window: _Window, fixed: FixedDevices, scale: float, next_start: float,
           width: float) -> list[WindowEstimate]:
    """The finished window's estimate, then empty windows up to `next_start`."""
    devices = {device for address, device in window.strong_addresses.items() if not fixed.is_fixed(address)}
    fixed.add_window(window.addresses)
    result = [WindowEstimate(window.start, round(scale * len(devices), 2), len(devices), len(window.addresses),
                             sum(1 for a in window.addresses if not a[0] & 0x02), window.probes)]
    start = window.start + width
    if next_start - start > MAX_FILL_S:
        return result
    while start < next_start:
        result.append(WindowEstimate(start, 0.0, 0, 0, 0, 0))
        start += width
    return result


@dataclass(frozen=True)
class ScoredWindow:
    """One window with ground truth beside the estimate and the naive counts."""

    start: float
    truth: float
    people: float
    addresses: int
    global_addresses: int


def score_windows(estimates: Iterable[WindowEstimate], truth: Iterable[tuple[float, float]],
                  window_s: float) -> list[ScoredWindow]:
    """Pair estimates with the truth: the mean of the (UTC timestamp, people) samples in each window.

    Only windows with at least one truth sample are scored; a scored window the estimate does not
    cover (nothing heard) counts as 0 everywhere.
    """
    sums: dict[float, list[float]] = {}
    for when, people in truth:
        acc = sums.setdefault((when // window_s) * window_s, [0.0, 0.0])
        acc[0] += people
        acc[1] += 1
    by_start = {e.start: e for e in estimates}
    out = []
    for start in sorted(sums):
        total, n = sums[start]
        e = by_start.get(start)
        out.append(ScoredWindow(start, total / n, e.people if e else 0.0, e.addresses if e else 0,
                                e.global_addresses if e else 0))
    return out


def mean_absolute_errors(rows: Sequence[ScoredWindow]) -> dict[str, float]:
    """MAE per window of the estimate and of the two naive counts; NaN when nothing was scored."""
    if not rows:
        return {"mae_estimate": float("nan"), "mae_naive": float("nan"), "mae_nonrandom": float("nan")}
    n = len(rows)
    return {"mae_estimate": sum(abs(r.people - r.truth) for r in rows) / n,
            "mae_naive": sum(abs(r.addresses - r.truth) for r in rows) / n,
            "mae_nonrandom": sum(abs(r.global_addresses - r.truth) for r in rows) / n}
