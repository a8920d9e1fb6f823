"""The offer engine: which campaign, if any, pushes an offer for one shopper event, and why.

Pure: events carry their own time, installs' consent and segments come from an `Audience`, and
what was sent before (for caps, cooldowns and budgets) from a `Ledger`, so the rules run the same
in a unit test, after a restart and in the gateway. Nothing here pushes anything; the caller pushes
the offer of each "sent" decision.

Per event the engine
1. answers a redelivered event (same `event_id`) with its original decisions marked
   "duplicate_event", so it never sends twice;
2. picks the enabled campaigns whose trigger matches; the others produce no decision at all;
3. checks each against consent, audience, schedule, quiet hours, its own caps and budget, then the
   store-wide budget, first failing rule = the recorded reason;
4. sends at most one offer: the eligible campaign with the highest priority (ties: lowest id);
   the other eligible ones are recorded as "lower_priority";
5. records the event and all its decisions in the ledger in one call.

A dwell trigger fires once per stay (enter to exit of one install in one zone), whatever the
outcome; a new stay may fire again, within the caps. Stays live in memory: after a restart the
first stay of each install may fire once more, and the caps and cooldowns (kept in the ledger)
decide whether that sends. Offers suppressed by quiet hours or schedule are dropped, not queued:
a shelf offer is only relevant while the shopper is at the shelf.

Not thread-safe: the gateway feeds one engine from one task, in event order.
"""

from __future__ import annotations

import hashlib
import math
from collections.abc import Sequence
from collections.abc import Set as AbstractSet
from dataclasses import dataclass, field, replace
from datetime import datetime
from enum import StrEnum
from typing import Literal, Protocol
from zoneinfo import ZoneInfo

from gateway.campaigns import WEEKDAYS, Campaign, CampaignsFile, Offer

ZoneEventKind = Literal["enter", "dwell", "exit"]
Outcome = Literal["sent", "suppressed"]


class Reason(StrEnum):
    """Stable codes for why a decision came out as it did; stored and reported, so never renamed."""

    SENT = "sent"
    NO_CONSENT = "no_consent"
    NOT_IN_AUDIENCE = "not_in_audience"
    OUTSIDE_SCHEDULE = "outside_schedule"
    QUIET_HOURS = "quiet_hours"
    INSTALL_TOTAL_CAP = "install_total_cap"
    INSTALL_DAILY_CAP = "install_daily_cap"
    COOLDOWN = "cooldown"
    CAMPAIGN_BUDGET = "campaign_budget"
    GLOBAL_INSTALL_CAP = "global_install_cap"
    GLOBAL_GAP = "global_gap"
    STORE_DAILY_BUDGET = "store_daily_budget"
    LOWER_PRIORITY = "lower_priority"
    DUPLICATE_EVENT = "duplicate_event"


@dataclass(frozen=True, slots=True, kw_only=True)
class ZoneEvent:
    """One install entering, staying in (`dwell`, with the time so far) or leaving a zone.

    Already fused by the gateway to one zone per install at a time. `event_id` identifies the
    logical event: a redelivery carries the same id. `at` is epoch seconds; `dwell_s` is the time
    in the zone so far (0 on enter).
    """

    event_id: str
    install_id: str
    zone: str
    kind: ZoneEventKind
    at: float
    dwell_s: float = 0.0

    def __post_init__(self) -> None:
        if self.kind not in ("enter", "dwell", "exit"):
            raise ValueError(f"ZoneEvent.kind must be enter, dwell or exit, got {self.kind!r}")
        _check_common(self.event_id, self.install_id, self.at)
        if not math.isfinite(self.dwell_s) or self.dwell_s < 0:
            raise ValueError(f"ZoneEvent.dwell_s must be a finite number >= 0, got {self.dwell_s!r}")


@dataclass(frozen=True, slots=True, kw_only=True)
class VisitEvent:
    """An install arriving in the store; `days_since_last_visit` is None on a first visit."""

    event_id: str
    install_id: str
    at: float
    first_visit: bool
    days_since_last_visit: float | None = None
    kind: Literal["arrival"] = "arrival"

    def __post_init__(self) -> None:
        if self.kind != "arrival":
            raise ValueError(f"VisitEvent.kind must be arrival, got {self.kind!r}")
        _check_common(self.event_id, self.install_id, self.at)


Event = ZoneEvent | VisitEvent


def _check_common(event_id: str, install_id: str, at: float) -> None:
    if not event_id or not install_id:
        raise ValueError("event_id and install_id must not be empty")
    if not math.isfinite(at):
        raise ValueError(f"at must be a finite epoch time, got {at!r}")


@dataclass(frozen=True, slots=True, kw_only=True)
class Decision:
    """What the engine decided for one campaign on one event. `offer` is set only when sent."""

    decision_id: str
    event_id: str
    campaign_id: str
    install_id: str
    at: float
    outcome: Outcome
    reason: Reason
    offer: Offer | None = None


def decision_id(event_id: str, campaign_id: str) -> str:
    """Deterministic, so a redelivered event maps onto the decisions it already has."""
    digest = hashlib.sha256(f"{event_id}\x00{campaign_id}".encode()).hexdigest()
    return digest[:32]


class Audience(Protocol):
    """Facts about app installs, asked at decision time (a withdrawal counts from the next event)."""

    def consented(self, install_id: str) -> bool: ...

    def segments(self, install_id: str) -> AbstractSet[str]: ...


class Ledger(Protocol):
    """What was decided before; persistent in the gateway so caps and dedup survive restarts.

    Only "sent" decisions count in the `count_*`/`last_sent` queries. `campaign_id=None` means any
    campaign. `since` is inclusive and may be -inf (all time). `record` must be atomic: the event is seen if and only if its
    decisions are stored. Seen event ids must be kept at least as long as events can be redelivered.
    """

    def seen(self, event_id: str) -> bool: ...

    def decisions_for(self, event_id: str) -> list[Decision]: ...

    def record(self, event_id: str, at: float, decisions: Sequence[Decision]) -> None: ...

    def count_sent(self, install_id: str, campaign_id: str | None, since: float) -> int: ...

    def last_sent(self, install_id: str, campaign_id: str | None) -> float | None: ...

    def count_sent_store(self, since: float) -> int: ...

    def count_sent_campaign(self, campaign_id: str) -> int: ...


class MemoryLedger:
    """A `Ledger` in memory: for tests, and the reference the SQLite ledger must agree with."""

    def __init__(self) -> None:
        self._events: dict[str, tuple[Decision, ...]] = {}
        self._sent: list[Decision] = []

    @property
    def sent(self) -> list[Decision]:
        return list(self._sent)

    @property
    def decisions(self) -> list[Decision]:
        return [d for decisions in self._events.values() for d in decisions]

    def seen(self, event_id: str) -> bool:
        return event_id in self._events

    def decisions_for(self, event_id: str) -> list[Decision]:
        return list(self._events.get(event_id, ()))

    def record(self, event_id: str, at: float, decisions: Sequence[Decision]) -> None:
        if event_id in self._events:
            raise ValueError(f"event {event_id!r} is already recorded")
        self._events[event_id] = tuple(decisions)
        self._sent.extend(d for d in decisions if d.outcome == "sent")

    def count_sent(self, install_id: str, campaign_id: str | None, since: float) -> int:
        return sum(1 for d in self._sent if d.install_id == install_id and d.at >= since
                   and (campaign_id is None or d.campaign_id == campaign_id))

    def last_sent(self, install_id: str, campaign_id: str | None) -> float | None:
        times = [d.at for d in self._sent
                 if d.install_id == install_id and (campaign_id is None or d.campaign_id == campaign_id)]
        return max(times, default=None)

    def count_sent_store(self, since: float) -> int:
        return sum(1 for d in self._sent if d.at >= since)

    def count_sent_campaign(self, campaign_id: str) -> int:
        return sum(1 for d in self._sent if d.campaign_id == campaign_id)


@dataclass(frozen=True, slots=True)
class _Stay:
    """An install's current zone stay: which dwell campaigns already fired in it."""

    zone: str
    last_at: float
    fired: frozenset[str] = field(default_factory=frozenset)


class OfferEngine:
    """Decides offers for events; see the module docstring for the rules and their order."""

    def __init__(self, campaigns: CampaignsFile, audience: Audience, ledger: Ledger,
                 *, stale_stay_s: float = 6 * 3600) -> None:
        """`stale_stay_s`: a stay with no event for this long is forgotten (its exit was lost)."""
        self._audience = audience
        self._ledger = ledger
        self._stale_stay_s = stale_stay_s
        self._stays: dict[str, _Stay] = {}
        self._last_prune = -math.inf
        self.replace_campaigns(campaigns)

    @property
    def campaigns(self) -> CampaignsFile:
        return self._file

    def replace_campaigns(self, campaigns: CampaignsFile) -> None:
        """Swap in an edited campaign set (API); caps carry over because they live in the ledger."""
        self._file = campaigns
        self._store_tz = ZoneInfo(campaigns.timezone)
        self._tz = {c.id: ZoneInfo(campaigns.timezone_of(c)) for c in campaigns.campaigns}

    def handle(self, event: Event) -> list[Decision]:
        """The decisions for one event, already recorded in the ledger; push the offer of the "sent" one."""
        if self._ledger.seen(event.event_id):
            return [replace(d, outcome="suppressed", reason=Reason.DUPLICATE_EVENT, offer=None)
                    for d in self._ledger.decisions_for(event.event_id)]
        matched, stay = self._match(event)
        decisions = self._decide(event, matched)
        self._ledger.record(event.event_id, event.at, decisions)
        if isinstance(event, ZoneEvent):
            self._set_stay(event.install_id, stay, event.at)
        return decisions

    # --- triggers -------------------------------------------------------------------------------

    def _match(self, event: Event) -> tuple[list[Campaign], _Stay | None]:
        """Campaigns whose trigger this event fires, and the install's stay after it."""
        enabled = [c for c in self._file.campaigns if c.enabled]
        if isinstance(event, VisitEvent):
            return [c for c in enabled if _visit_fires(c, event)], None
        current = self._stays.get(event.install_id)
        if event.kind == "enter":
            stay: _Stay | None = _Stay(event.zone, event.at)
            matched = [c for c in enabled if c.trigger.kind == "zone_enter" and c.trigger.zone == event.zone]
        elif event.kind == "exit":
            stay = None if current is None or current.zone == event.zone else current
            matched = [c for c in enabled if c.trigger.kind == "zone_exit" and c.trigger.zone == event.zone]
        else:
            if current is None or current.zone != event.zone:
                current = _Stay(event.zone, event.at)  # its enter was lost or came before a restart
            matched = [c for c in enabled if c.trigger.kind == "dwell" and c.trigger.zone == event.zone
                       and event.dwell_s >= c.trigger.min_s and c.id not in current.fired]
            stay = _Stay(event.zone, event.at, current.fired | {c.id for c in matched})
        return matched, stay

    def _set_stay(self, install_id: str, stay: _Stay | None, at: float) -> None:
        if stay is None:
            self._stays.pop(install_id, None)
        else:
            self._stays[install_id] = stay
        if at - self._last_prune >= 60:
            self._last_prune = at
            horizon = at - self._stale_stay_s
            self._stays = {k: s for k, s in self._stays.items() if s.last_at >= horizon}

    # --- rules ----------------------------------------------------------------------------------

    def _decide(self, event: Event, matched: list[Campaign]) -> list[Decision]:
        if not matched:
            return []
        install, at = event.install_id, event.at
        consented = self._audience.consented(install)
        segments = frozenset(self._audience.segments(install)) if consented else frozenset()
        store_reason: Reason | None = None
        store_checked = False
        outcomes: list[tuple[Campaign, Reason | None]] = []
        for campaign in sorted(matched, key=lambda c: (-c.priority, c.id)):
            if not consented:
                reason: Reason | None = Reason.NO_CONSENT
            else:
                reason = self._campaign_reason(campaign, install, at, segments)
            if reason is None:
                if not store_checked:
                    store_reason, store_checked = self._store_reason(install, at), True
                reason = store_reason
            outcomes.append((campaign, reason))
        decisions = []
        winner_found = False
        for campaign, blocked in outcomes:
            if blocked is None and winner_found:
                blocked = Reason.LOWER_PRIORITY
            sent = blocked is None
            winner_found = winner_found or sent
            decisions.append(Decision(
                decision_id=decision_id(event.event_id, campaign.id), event_id=event.event_id,
                campaign_id=campaign.id, install_id=install, at=at,
                outcome="sent" if sent else "suppressed", reason=blocked or Reason.SENT,
                offer=campaign.offer if sent else None,
            ))
        return decisions

    def _campaign_reason(self, campaign: Campaign, install: str, at: float,
                         segments: frozenset[str]) -> Reason | None:
        """The first of the campaign's own rules that forbids sending, or None."""
        rule = campaign.audience
        if (rule.segments and segments.isdisjoint(rule.segments)) or not segments.isdisjoint(rule.exclude_segments):
            return Reason.NOT_IN_AUDIENCE
        tz = self._tz[campaign.id]
        local = datetime.fromtimestamp(at, tz)
        schedule = campaign.schedule
        if ((schedule.start is not None and at < schedule.start.timestamp())
                or (schedule.end is not None and at >= schedule.end.timestamp())
                or WEEKDAYS[local.weekday()] not in schedule.days_of_week
                or (schedule.hours is not None and not schedule.hours.contains(local.time()))):
            return Reason.OUTSIDE_SCHEDULE
        if campaign.quiet_hours is not None and campaign.quiet_hours.contains(local.time()):
            return Reason.QUIET_HOURS
        ledger = self._ledger
        if (campaign.max_per_install_total is not None
                and ledger.count_sent(install, campaign.id, -math.inf) >= campaign.max_per_install_total):
            return Reason.INSTALL_TOTAL_CAP
        if ledger.count_sent(install, campaign.id, local_day_start(at, tz)) >= campaign.max_per_install_per_day:
            return Reason.INSTALL_DAILY_CAP
        if campaign.cooldown_s > 0:
            last = ledger.last_sent(install, campaign.id)
            if last is not None and at - last < campaign.cooldown_s:
                return Reason.COOLDOWN
        if campaign.max_total is not None and ledger.count_sent_campaign(campaign.id) >= campaign.max_total:
            return Reason.CAMPAIGN_BUDGET
        return None

    def _store_reason(self, install: str, at: float) -> Reason | None:
        """The first store-wide bound that forbids any send to this install now, or None."""
        budget = self._file.budget
        day_start = local_day_start(at, self._store_tz)
        if self._ledger.count_sent(install, None, day_start) >= budget.max_offers_per_install_per_day:
            return Reason.GLOBAL_INSTALL_CAP
        if budget.min_gap_s > 0:
            last = self._ledger.last_sent(install, None)
            if last is not None and at - last < budget.min_gap_s:
                return Reason.GLOBAL_GAP
        if budget.max_offers_per_day is not None and self._ledger.count_sent_store(day_start) >= budget.max_offers_per_day:
            return Reason.STORE_DAILY_BUDGET
        return None


def _visit_fires(campaign: Campaign, event: VisitEvent) -> bool:
    trigger = campaign.trigger
    if trigger.kind == "first_visit":
        return event.first_visit
    if trigger.kind == "return_after":
        return (not event.first_visit and event.days_since_last_visit is not None
                and event.days_since_last_visit >= trigger.days)
    return False


def local_day_start(at: float, tz: ZoneInfo) -> float:
    """Epoch time of the local midnight that began the day `at` falls in (23 or 25 h days under DST)."""
    local = datetime.fromtimestamp(at, tz)
    return datetime(local.year, local.month, local.day, tzinfo=tz).timestamp()
