"""People-level ad-to-visit lift: did the people who saw the ad come into the store more often?

Inputs are two tables: ad exposures (a pseudonym, the campaign, the time, the arm: `exposed` saw
the ad, `control` was held out) and app visits (the same per-campaign pseudonym of the app install,
the arrival time, the dwell). Pure numpy; the CSV loaders at the bottom turn files into arrays.

Semantics
---------
- **Arm.** A person belongs to the arm of their *first* exposure in the campaign, and is measured
  from that instant `t_e`. Later exposures (in either arm) change nothing; the number of people seen
  in both arms is reported (`Arms.both_arms`), because a large number means the hold-out leaked.
  Two first exposures at the very same instant in different arms count as exposed.
- **Qualifying visit.** A visit with `dwell_s >= min_dwell_s` (walking past the door is not a visit).
  Visits of pseudonyms that were never exposed are ignored.
- **Conversion within W days.** At least one qualifying visit with arrival in the half-open interval
  `(t_e, t_e + W * 86400]`: a visit at the exposure instant does not count, one exactly W days later
  does. Rates count *people*: converted people / people in the arm.
- **Visits, a person counted once per day.** Day k after the exposure is `(t_e + (k-1) d, t_e + k d]`
  (d = 86400 s, days relative to the person's exposure, so no time zone is involved). Visits in
  window W are the person-days with at least one qualifying visit in `(t_e, t_e + W d]`.
  Incremental visits = visits(exposed) - visits(control) * n(exposed) / n(control): the visits the
  exposed group made beyond what the control group's rate predicts for a group of its size.
  Incremental people = (p_exposed - p_control) * n(exposed), with the Newcombe interval scaled.

Statistics (`two_proportions`)
------------------------------
- Wilson score interval for each proportion.
- Newcombe's hybrid score interval for the difference (Newcombe 1998, method 10): the Wilson limits
  of the two proportions combined by "square-and-add".
- Two-proportion z-test with the pooled variance, two-sided p-value.
- lift = p_exposed / p_control - 1. Its interval is the MOVER-R interval for the ratio of two
  independent proportions with Wilson limits (Donner & Zou 2012, "Closed-form confidence intervals
  for functions of the normal mean and standard deviation", Stat Methods Med Res 21:347; the same
  square-and-add recovery of variance as Newcombe's, applied to a ratio), minus 1. Unlike the
  Katz log interval it stays finite when the exposed arm has no conversions; when the control arm
  has none the upper limit is infinite (and the lift itself is infinite or undefined).

Vectorised attribution (`attribute`)
------------------------------------
Visits are sorted by (person, time). Each person's first exposure and each visit get one int64 key,
`person * stride + tick(time)`, where `tick` is whole milliseconds since the earliest time and
`stride` exceeds every tick, so keys order by person first and by time within a person. One
`np.searchsorted` of the exposure keys into the visit keys finds, for every person at once, the
first visit at or after the exposure's millisecond; visits in that same millisecond that are not
strictly later than `t_e` (compared as exact float seconds) are stepped over in a short vectorised
loop, so the millisecond ticks never change a result. The window test is then one comparison per
window on the found visit's exact time: `t_visit <= t_e + W * 86400`. Person-days come from the
same sorted visits: day k is non-decreasing along a person's sorted visits, so the first visit of
each (person, day) run is a change in `person * (max W + 1) + day`; no second sort.
"""

from __future__ import annotations

import csv
import datetime as dt
import math
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

DAY_S = 86_400.0
DEFAULT_WINDOWS_DAYS: tuple[int, ...] = (1, 7, 14, 30)
DEFAULT_MIN_DWELL_S = 60.0
_TICK_S = 1e-3  # the combined key's time resolution; exact float comparisons settle ties within a tick
_Z_975 = 1.959963984540054  # standard normal quantile for the default alpha = 0.05


# ---------------------------------------------------------------------------------------------
# Data


@dataclass(frozen=True)
class Exposures:
    """Ad exposures of one campaign: parallel arrays, one element per exposure."""

    person: np.ndarray  # int64 person codes (>= 0), shared with Visits.person
    time: np.ndarray  # float64 epoch seconds
    exposed: np.ndarray  # bool: True = exposed arm, False = control (hold-out)

    def __post_init__(self) -> None:
        object.__setattr__(self, "person", np.asarray(self.person, dtype=np.int64))
        object.__setattr__(self, "time", np.asarray(self.time, dtype=np.float64))
        object.__setattr__(self, "exposed", np.asarray(self.exposed, dtype=bool))
        _same_length(person=self.person, time=self.time, exposed=self.exposed)


@dataclass(frozen=True)
class Visits:
    """App visits: parallel arrays, one element per visit."""

    person: np.ndarray  # int64 person codes, the same coding as Exposures.person
    time: np.ndarray  # float64 epoch seconds of arrival
    dwell_s: np.ndarray  # float64 seconds in the store

    def __post_init__(self) -> None:
        object.__setattr__(self, "person", np.asarray(self.person, dtype=np.int64))
        object.__setattr__(self, "time", np.asarray(self.time, dtype=np.float64))
        object.__setattr__(self, "dwell_s", np.asarray(self.dwell_s, dtype=np.float64))
        _same_length(person=self.person, time=self.time, dwell_s=self.dwell_s)


def _same_length(**arrays: np.ndarray) -> None:
    lengths = {name: a.shape for name, a in arrays.items()}
    if any(a.ndim != 1 for a in arrays.values()) or len({a.size for a in arrays.values()}) > 1:
        raise ValueError(f"need 1-D arrays of one length, got shapes {lengths}")


@dataclass(frozen=True)
class Arms:
    """Each exposed-or-control person once, by their first exposure, sorted by person code."""

    person: np.ndarray  # int64, ascending, unique
    time: np.ndarray  # float64: the first exposure
    exposed: np.ndarray  # bool: the arm of the first exposure
    both_arms: int  # people with exposures in both arms (a leaking hold-out if many)

    @property
    def n_exposed(self) -> int:
        return int(self.exposed.sum())

    @property
    def n_control(self) -> int:
        return int(self.person.size - self.exposed.sum())


@dataclass(frozen=True)
class ProportionsResult:
    """Two independent proportions x1/n1 (exposed) and x2/n2 (control) compared."""

    x1: int
    n1: int
    x2: int
    n2: int
    alpha: float
    p1: float
    p2: float
    wilson1: tuple[float, float]
    wilson2: tuple[float, float]
    diff: float  # p1 - p2
    newcombe: tuple[float, float]  # interval of the difference, Newcombe's method 10
    z: float  # pooled two-proportion z statistic
    p_value: float  # two-sided
    lift: float  # p1 / p2 - 1
    lift_ci: tuple[float, float]  # MOVER-R (Wilson) interval of p1 / p2, minus 1

    def to_dict(self) -> dict[str, Any]:
        return {k: _jsonable(v) for k, v in self.__dict__.items()}


@dataclass(frozen=True)
class WindowResult:
    """Exposed versus control within one attribution window."""

    window_days: int
    n_exposed: int
    n_control: int
    converted_exposed: int  # people with a qualifying visit in (t_e, t_e + W]
    converted_control: int
    visits_exposed: int  # person-days with a qualifying visit in (t_e, t_e + W]
    visits_control: int
    stats: ProportionsResult = field(repr=False)

    @property
    def rate_exposed(self) -> float:
        return self.stats.p1

    @property
    def rate_control(self) -> float:
        return self.stats.p2

    @property
    def lift(self) -> float:
        return self.stats.lift

    @property
    def incremental_visits(self) -> float:
        """Visits of the exposed beyond the control's visit rate scaled to the exposed group's size."""
        if self.n_control == 0:
            return math.nan
        return self.visits_exposed - self.visits_control * self.n_exposed / self.n_control

    @property
    def incremental_people(self) -> float:
        return self.stats.diff * self.n_exposed

    @property
    def incremental_people_ci(self) -> tuple[float, float]:
        lo, hi = self.stats.newcombe
        return lo * self.n_exposed, hi * self.n_exposed

    def to_dict(self) -> dict[str, Any]:
        s = self.stats
        return {
            "window_days": self.window_days,
            "n_exposed": self.n_exposed, "n_control": self.n_control,
            "converted_exposed": self.converted_exposed, "converted_control": self.converted_control,
            "rate_exposed": _jsonable(s.p1), "rate_control": _jsonable(s.p2),
            "wilson_exposed": _jsonable(s.wilson1), "wilson_control": _jsonable(s.wilson2),
            "difference": _jsonable(s.diff), "newcombe": _jsonable(s.newcombe),
            "lift": _jsonable(s.lift), "lift_ci": _jsonable(s.lift_ci),
            "z": _jsonable(s.z), "p_value": _jsonable(s.p_value), "alpha": s.alpha,
            "visits_exposed": self.visits_exposed, "visits_control": self.visits_control,
            "incremental_visits": _jsonable(self.incremental_visits),
            "incremental_people": _jsonable(self.incremental_people),
            "incremental_people_ci": _jsonable(self.incremental_people_ci),
        }


def _jsonable(v: Any) -> Any:
    """Floats as JSON can carry them: NaN and infinities become None."""
    if isinstance(v, tuple):
        return [_jsonable(x) for x in v]
    if isinstance(v, float | np.floating):
        return float(v) if math.isfinite(v) else None
    return v


# ---------------------------------------------------------------------------------------------
# Statistics


def _normal_quantile(alpha: float) -> float:
    """z such that P(|Z| > z) = alpha, without scipy: bisection on erfc (monotone, exact to 1e-15)."""
    if not 0 < alpha < 1:
        raise ValueError(f"alpha must be in (0, 1), got {alpha}")
    if alpha == 0.05:
        return _Z_975
    lo, hi = 0.0, 40.0
    for _ in range(200):
        mid = (lo + hi) / 2
        if math.erfc(mid / math.sqrt(2)) > alpha:
            lo = mid
        else:
            hi = mid
    return (lo + hi) / 2


def wilson(x: int, n: int, alpha: float = 0.05) -> tuple[float, float]:
    """Wilson score interval of the proportion x/n (NaNs when n = 0)."""
    if n <= 0:
        return math.nan, math.nan
    z = _normal_quantile(alpha)
    z2 = z * z
    center = (x + z2 / 2) / (n + z2)
    half = z / (n + z2) * math.sqrt(x * (n - x) / n + z2 / 4)
    return max(0.0, center - half), min(1.0, center + half)


def two_proportions(x1: int, n1: int, x2: int, n2: int, alpha: float = 0.05) -> ProportionsResult:
    """Compare x1/n1 (exposed) with x2/n2 (control): Wilson, Newcombe, pooled z-test, lift."""
    for name, x, n in (("1", x1, n1), ("2", x2, n2)):
        if n < 0 or x < 0 or x > n:
            raise ValueError(f"need 0 <= x{name} <= n{name}, got x{name}={x}, n{name}={n}")
    p1 = x1 / n1 if n1 else math.nan
    p2 = x2 / n2 if n2 else math.nan
    l1, u1 = wilson(x1, n1, alpha)
    l2, u2 = wilson(x2, n2, alpha)
    diff = p1 - p2
    newcombe = (diff - math.sqrt((p1 - l1) ** 2 + (u2 - p2) ** 2),
                diff + math.sqrt((u1 - p1) ** 2 + (p2 - l2) ** 2))
    if n1 and n2:
        pooled = (x1 + x2) / (n1 + n2)
        se = math.sqrt(pooled * (1 - pooled) * (1 / n1 + 1 / n2))
        z = diff / se if se > 0 else math.nan
    else:
        z = math.nan
    p_value = math.erfc(abs(z) / math.sqrt(2)) if math.isfinite(z) else math.nan
    if not (n1 and n2):
        lift, lift_ci = math.nan, (math.nan, math.nan)
    else:
        lift = p1 / p2 - 1 if p2 > 0 else (math.inf if p1 > 0 else math.nan)
        lo_r, hi_r = _mover_ratio(p1, l1, u1, p2, l2, u2)
        lift_ci = (lo_r - 1, hi_r - 1)
    return ProportionsResult(x1=x1, n1=n1, x2=x2, n2=n2, alpha=alpha, p1=p1, p2=p2, wilson1=(l1, u1),
                             wilson2=(l2, u2), diff=diff, newcombe=newcombe, z=z, p_value=p_value, lift=lift,
                             lift_ci=lift_ci)


def _mover_ratio(p1: float, l1: float, u1: float, p2: float, l2: float, u2: float) -> tuple[float, float]:
    """MOVER-R interval of p1/p2 from the two Wilson intervals (Donner & Zou 2012).

    The lower limit L is the root of p1 - L p2 = sqrt((p1 - l1)^2 + L^2 (u2 - p2)^2), the upper limit U
    of p1 - U p2 = -sqrt((u1 - p1)^2 + U^2 (p2 - l2)^2): Newcombe's square-and-add applied to
    p1 - theta p2 = 0. Squared, each is a quadratic a t^2 - 2 p1 p2 t + c = 0; the closed forms below
    pick the root on the right side, and hold for a < 0 too (a control interval reaching past 2 p2).
    """
    prod = p1 * p2
    a_lo, c_lo = u2 * (2 * p2 - u2), l1 * (2 * p1 - l1)
    a_hi, c_hi = l2 * (2 * p2 - l2), u1 * (2 * p1 - u1)
    if a_lo != 0:
        lower = (prod - math.sqrt(max(prod * prod - a_lo * c_lo, 0.0))) / a_lo
    else:  # u2 = 2 p2: the equation is linear
        lower = c_lo / (2 * prod) if prod > 0 else 0.0
    if a_hi > 0:
        upper = (prod + math.sqrt(max(prod * prod - a_hi * c_hi, 0.0))) / a_hi
    else:  # l2 = 0 (no control conversions): the ratio is unbounded above
        upper = math.inf
    return max(lower, 0.0), upper


# ---------------------------------------------------------------------------------------------
# Attribution


def assign_arms(exposures: Exposures) -> Arms:
    """Each person once, in the arm of their first exposure (ties across arms at one instant: exposed)."""
    if exposures.person.size == 0:
        empty = np.empty(0, np.int64)
        return Arms(empty, np.empty(0, np.float64), np.empty(0, bool), 0)
    if exposures.person.min() < 0:
        raise ValueError("person codes must be >= 0")
    if not np.isfinite(exposures.time).all():
        raise ValueError("exposure times must be finite")
    codes, dense = _dense(exposures.person)
    size = codes.size if codes is not None else int(dense.max()) + 1
    first = np.full(size, np.inf)
    np.minimum.at(first, dense, exposures.time)
    is_first = exposures.time == first[dense]
    exposed_first = np.zeros(size, bool)
    np.logical_or.at(exposed_first, dense[is_first], exposures.exposed[is_first])
    seen_exposed = np.zeros(size, bool)
    seen_control = np.zeros(size, bool)
    seen_exposed[dense[exposures.exposed]] = True
    seen_control[dense[~exposures.exposed]] = True
    present = np.isfinite(first)
    person = codes if codes is not None else np.flatnonzero(present).astype(np.int64)
    return Arms(person=person, time=first[present], exposed=exposed_first[present],
                both_arms=int((seen_exposed & seen_control).sum()))


def _dense(person: np.ndarray) -> tuple[np.ndarray | None, np.ndarray]:
    """Codes usable as array indices: as given when compact, else ranks of the unique codes."""
    top = int(person.max())
    if top < 4 * person.size + 1024:
        return None, person
    codes, inverse = np.unique(person, return_inverse=True)
    return codes, inverse.astype(np.int64)


def attribute(exposures: Exposures, visits: Visits, windows_days: Sequence[int] = DEFAULT_WINDOWS_DAYS,
              min_dwell_s: float = DEFAULT_MIN_DWELL_S, alpha: float = 0.05) -> list[WindowResult]:
    """Visit rates, lift and incremental visits of exposed versus control, one result per window."""
    windows = [int(w) for w in windows_days]
    if not windows or any(w <= 0 for w in windows):
        raise ValueError(f"windows must be whole days > 0, got {list(windows_days)}")
    arms = assign_arms(exposures)
    first_visit, person_day_first, v_arm_exposed, v_time, v_te = _attribute_arrays(arms, visits, max(windows),
                                                                                   min_dwell_s)
    n_e, n_c = arms.n_exposed, arms.n_control
    results = []
    for w in windows:
        conv = first_visit <= arms.time + w * DAY_S
        x_e = int((conv & arms.exposed).sum())
        x_c = int((conv & ~arms.exposed).sum())
        in_window = person_day_first & (v_time <= v_te + w * DAY_S)
        visits_e = int((in_window & v_arm_exposed).sum())
        visits_c = int((in_window & ~v_arm_exposed).sum())
        results.append(WindowResult(window_days=w, n_exposed=n_e, n_control=n_c, converted_exposed=x_e,
                                    converted_control=x_c, visits_exposed=visits_e, visits_control=visits_c,
                                    stats=two_proportions(x_e, n_e, x_c, n_c, alpha)))
    return results


def _attribute_arrays(arms: Arms, visits: Visits, max_window_days: int,
                      min_dwell_s: float) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    """Per person (in `arms` order): the time of the first qualifying visit after the exposure (inf if
    none). Per qualifying visit, sorted by (person, time): first of its person-day within the longest
    window, the person's arm, the visit's time and the person's exposure time (see module doc)."""
    n_people = arms.person.size
    # Which arm-person each visit belongs to (-1: never exposed), and only qualifying visits.
    slot = np.searchsorted(arms.person, visits.person)
    slot_ok = slot < n_people
    slot[~slot_ok] = 0
    known = slot_ok & (arms.person[slot] == visits.person) if n_people else np.zeros(visits.person.size, bool)
    keep = known & (visits.dwell_s >= min_dwell_s) & np.isfinite(visits.time)
    v_slot = slot[keep]
    v_time = visits.time[keep]
    # Sort by (person, time): by time first, then stably by person slot.
    order = np.argsort(v_time, kind="stable")
    order = order[np.argsort(v_slot[order], kind="stable")]
    v_slot, v_time = v_slot[order], v_time[order]

    # Combined int64 keys: slot * stride + millisecond tick since the earliest time.
    t0 = min(float(arms.time.min()) if n_people else 0.0, float(v_time.min()) if v_time.size else 0.0)
    e_tick = np.floor((arms.time - t0) / _TICK_S).astype(np.int64)
    v_tick = np.floor((v_time - t0) / _TICK_S).astype(np.int64)
    stride = int(max(e_tick.max() if e_tick.size else 0, v_tick.max() if v_tick.size else 0)) + 1
    if n_people and n_people * stride >= 2**62:
        raise ValueError(f"time span too long for millisecond keys: {n_people} people x {stride} ms")
    e_key = np.arange(n_people, dtype=np.int64) * stride + e_tick
    v_key = v_slot * stride + v_tick  # non-decreasing: v_tick is monotone in time
    idx = np.searchsorted(v_key, e_key, side="left")
    people = np.arange(n_people, dtype=np.int64)
    n_v = v_key.size
    # Step over visits in the exposure's own millisecond that are not strictly after it.
    pending = np.flatnonzero(idx < n_v)
    while pending.size:
        i = idx[pending]
        behind = (v_slot[i] == people[pending]) & (v_time[i] <= arms.time[pending])
        pending = pending[behind]
        idx[pending] += 1
        pending = pending[idx[pending] < n_v]
    found = idx < n_v
    found[found] = v_slot[idx[found]] == people[found]
    first_visit = np.full(n_people, np.inf)
    first_visit[found] = v_time[idx[found]]

    # Person-days: day k = ceil((t - t_e) / d) for visits after the exposure, within the longest window.
    v_te = arms.time[v_slot]
    after = (v_time > v_te) & (v_time <= v_te + max_window_days * DAY_S)
    day = np.ceil((v_time - v_te) / DAY_S).astype(np.int64)
    pd_key = np.where(after, v_slot * (max_window_days + 2) + day, -1)
    first_of_day = after.copy()
    first_of_day[1:] &= pd_key[1:] != pd_key[:-1]
    return first_visit, first_of_day, arms.exposed[v_slot], v_time, v_te


# ---------------------------------------------------------------------------------------------
# CSV input


EXPOSURE_COLUMNS = ("pseudonym", "campaign", "time", "arm")
VISIT_COLUMNS = ("pseudonym", "arrival", "dwell_s")  # and optionally campaign
ARMS = {"exposed": True, "control": False}


class LiftInputError(ValueError):
    """A whole input file cannot be used (missing, unreadable, no such column); the message says which."""


@dataclass(frozen=True)
class RowError:
    """One bad row: its line number in the file (the header is line 1) and what is wrong."""

    line: int
    reason: str

    def __str__(self) -> str:
        return f"line {self.line}: {self.reason}"


@dataclass(frozen=True)
class ExposureRows:
    pseudonym: list[str]
    campaign: list[str]
    time: np.ndarray  # float64 epoch seconds
    exposed: np.ndarray  # bool


@dataclass(frozen=True)
class VisitRows:
    pseudonym: list[str]
    time: np.ndarray  # float64 epoch seconds of arrival
    dwell_s: np.ndarray
    campaign: list[str] | None  # None when the file has no campaign column


def parse_time(text: str) -> float:
    """Epoch seconds from a number or an ISO 8601 date-time with a UTC offset ('Z' or +hh:mm)."""
    s = text.strip()
    if not s:
        raise ValueError("empty time")
    try:
        value = float(s)
    except ValueError:
        return _parse_iso(s)
    if not math.isfinite(value):
        raise ValueError(f"bad time {s!r}: not a finite number")
    return value


def _parse_iso(s: str) -> float:
    try:
        when = dt.datetime.fromisoformat(s)
    except ValueError:
        raise ValueError(f"bad time {s!r}: need epoch seconds or ISO 8601 with a UTC offset") from None
    if when.tzinfo is None:
        raise ValueError(f"bad time {s!r}: no UTC offset (add Z or +hh:mm)")
    return when.timestamp()


def _rows(path: Path, required: Sequence[str]) -> Iterable[tuple[int, dict[str, str]]]:
    if not path.is_file():
        raise LiftInputError(f"{path}: no such file")
    try:
        f = path.open(newline="", encoding="utf-8-sig")
    except OSError as err:
        raise LiftInputError(f"{path}: cannot read: {err.strerror or err}") from None
    with f:
        try:
            reader = csv.DictReader(f)
            fields = [c.strip() for c in reader.fieldnames or ()]
            missing = [c for c in required if c not in fields]
            if missing:
                raise LiftInputError(f"{path}: no column {', '.join(missing)} (need {', '.join(required)}; "
                                     f"found {', '.join(fields) or 'nothing'})")
            reader.fieldnames = fields
            for row in reader:
                yield reader.line_num, row
        except UnicodeDecodeError:
            raise LiftInputError(f"{path}: not a UTF-8 text CSV file") from None
        except csv.Error as err:
            raise LiftInputError(f"{path}, line {reader.line_num}: {err}") from None


def _cell(row: dict[str, str], name: str) -> str:
    value = row.get(name)
    return value.strip() if isinstance(value, str) else ""


def load_exposures_csv(path: Path) -> tuple[ExposureRows, list[RowError]]:
    """Exposures from a CSV with columns pseudonym, campaign, time, arm (exposed or control).

    Bad rows are reported, one `RowError` each, and left out; the good rows are all kept.
    """
    pseudonyms: list[str] = []
    campaigns: list[str] = []
    times: list[float] = []
    exposed: list[bool] = []
    errors: list[RowError] = []
    for line, row in _rows(Path(path), EXPOSURE_COLUMNS):
        pseudonym, arm = _cell(row, "pseudonym"), _cell(row, "arm").lower()
        if not pseudonym:
            errors.append(RowError(line, "empty pseudonym"))
            continue
        if arm not in ARMS:
            errors.append(RowError(line, f"unknown arm {_cell(row, 'arm')!r} (need exposed or control)"))
            continue
        try:
            when = parse_time(_cell(row, "time"))
        except ValueError as err:
            errors.append(RowError(line, str(err)))
            continue
        pseudonyms.append(pseudonym)
        campaigns.append(_cell(row, "campaign"))
        times.append(when)
        exposed.append(ARMS[arm])
    return ExposureRows(pseudonyms, campaigns, np.array(times, np.float64), np.array(exposed, bool)), errors


def load_visits_csv(path: Path) -> tuple[VisitRows, list[RowError]]:
    """Visits from a CSV with columns pseudonym, arrival, dwell_s (and optionally campaign).

    Bad rows are reported, one `RowError` each, and left out; the good rows are all kept.
    """
    pseudonyms: list[str] = []
    campaigns: list[str] = []
    times: list[float] = []
    dwells: list[float] = []
    errors: list[RowError] = []
    has_campaign = False
    for line, row in _rows(Path(path), VISIT_COLUMNS):
        has_campaign = has_campaign or "campaign" in row
        pseudonym = _cell(row, "pseudonym")
        if not pseudonym:
            errors.append(RowError(line, "empty pseudonym"))
            continue
        try:
            when = parse_time(_cell(row, "arrival"))
        except ValueError as err:
            errors.append(RowError(line, str(err)))
            continue
        text = _cell(row, "dwell_s")
        try:
            dwell = float(text)
        except ValueError:
            errors.append(RowError(line, f"bad dwell_s {text!r}: need seconds"))
            continue
        if not (math.isfinite(dwell) and dwell >= 0):
            errors.append(RowError(line, f"bad dwell_s {text!r}: need a finite number >= 0"))
            continue
        pseudonyms.append(pseudonym)
        campaigns.append(_cell(row, "campaign"))
        times.append(when)
        dwells.append(dwell)
    return (VisitRows(pseudonyms, np.array(times, np.float64), np.array(dwells, np.float64),
                      campaigns if has_campaign else None), errors)


def campaigns_of(rows: ExposureRows) -> list[str]:
    return sorted(set(rows.campaign))


def to_arrays(exposure_rows: ExposureRows, visit_rows: VisitRows,
              campaign: str | None = None) -> tuple[Exposures, Visits]:
    """Number the pseudonyms (one code per pseudonym, shared by both tables) for `attribute`.

    With a campaign, only its exposures (and its visits, when the visits carry a campaign column).
    Visits of pseudonyms without an exposure get code -1 and are ignored by `attribute`.
    """
    e_mask = np.ones(len(exposure_rows.pseudonym), bool)
    if campaign is not None:
        e_mask = np.array([c == campaign for c in exposure_rows.campaign], bool)
    v_mask = np.ones(len(visit_rows.pseudonym), bool)
    if campaign is not None and visit_rows.campaign is not None:
        v_mask = np.array([c == campaign for c in visit_rows.campaign], bool)
    e_names = np.array(exposure_rows.pseudonym, dtype=object)[e_mask] if e_mask.size else np.array([], object)
    codes, e_person = np.unique(e_names.astype(str), return_inverse=True) if e_names.size else (
        np.array([], str), np.array([], np.int64))
    v_names = (np.array(visit_rows.pseudonym, dtype=object)[v_mask].astype(str) if v_mask.size
               else np.array([], str))
    pos = np.searchsorted(codes, v_names) if codes.size else np.zeros(v_names.size, np.int64)
    pos_ok = pos < codes.size
    matched = np.zeros(v_names.size, bool)
    matched[pos_ok] = codes[pos[pos_ok]] == v_names[pos_ok]
    v_person = np.where(matched, pos, -1).astype(np.int64)
    exposures = Exposures(person=np.asarray(e_person, np.int64), time=exposure_rows.time[e_mask],
                          exposed=exposure_rows.exposed[e_mask])
    visits = Visits(person=v_person, time=visit_rows.time[v_mask], dwell_s=visit_rows.dwell_s[v_mask])
    return exposures, visits
