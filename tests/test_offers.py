"""The offer engine at unit level: campaign files, every rule and reason code, the shopper scenarios of the
gateway issue, and a property that no event sequence pushes more than the caps allow."""

from __future__ import annotations

import itertools
from collections import Counter, defaultdict
from collections.abc import Iterable
from datetime import datetime, time
from pathlib import Path
from typing import Any
from zoneinfo import ZoneInfo

import pytest
import yaml
from hypothesis import given, settings
from hypothesis import strategies as st

from edge.settings import ConfigError
from gateway.campaigns import CampaignsFile, TimeWindow, load_campaigns
from gateway.offers import (
    Decision,
    Event,
    MemoryLedger,
    OfferEngine,
    Reason,
    VisitEvent,
    ZoneEvent,
    decision_id,
    local_day_start,
)

ROOT = Path(__file__).resolve().parents[1]
EXAMPLE = ROOT / "config/campaigns.example.yaml"
TZ = "Europe/Berlin"


def t(local: str, tz: str = TZ) -> float:
    """Epoch seconds of a local wall-clock time ("2025-06-04 14:00")."""
    return datetime.fromisoformat(local).replace(tzinfo=ZoneInfo(tz)).timestamp()


WED_2PM = t("2025-06-04 14:00")  # a Wednesday afternoon, inside every example schedule


class Installs:
    """An `Audience` whose consent and segments the test changes mid-visit."""

    def __init__(self, **segments: Iterable[str]) -> None:
        self._segments = {install: set(s) for install, s in segments.items()}
        self.asked: list[str] = []

    def consented(self, install_id: str) -> bool:
        self.asked.append(install_id)
        return install_id in self._segments

    def segments(self, install_id: str) -> set[str]:
        return set(self._segments.get(install_id, ()))

    def withdraw(self, install_id: str) -> None:
        self._segments.pop(install_id, None)


_ids = itertools.count()


def zone(install: str, zone_name: str, kind: str, at: float, dwell_s: float = 0.0) -> ZoneEvent:
    return ZoneEvent(event_id=f"z{next(_ids)}", install_id=install, zone=zone_name, kind=kind, at=at,  # type: ignore[arg-type]
                     dwell_s=dwell_s)


def arrival(install: str, at: float, first: bool = False, days: float | None = None) -> VisitEvent:
    return VisitEvent(event_id=f"v{next(_ids)}", install_id=install, at=at, first_visit=first,
                      days_since_last_visit=days)


def campaign(id: str, trigger: dict[str, Any], **fields: Any) -> dict[str, Any]:
    return {"id": id, "name": id, "offer": {"title": f"offer {id}", "code": id.upper()}, "trigger": trigger,
            **fields}


def enter_shoes(id: str = "shoes-enter", **fields: Any) -> dict[str, Any]:
    return campaign(id, {"kind": "zone_enter", "zone": "shoes"}, **fields)


def engine_for(campaigns: list[dict[str, Any]], audience: Installs | None = None, tz: str = TZ,
               **budget: Any) -> tuple[OfferEngine, MemoryLedger, Installs]:
    budget = {"min_gap_s": 0, "max_offers_per_install_per_day": 100, **budget}
    file = CampaignsFile.model_validate({"timezone": tz, "budget": budget, "campaigns": campaigns})
    audience = audience if audience is not None else Installs(alice=[])
    ledger = MemoryLedger()
    return OfferEngine(file, audience, ledger), ledger, audience


def run(engine: OfferEngine, events: Iterable[Event]) -> list[Decision]:
    return [d for event in events for d in engine.handle(event)]


def reasons(decisions: Iterable[Decision]) -> list[str]:
    return [d.reason for d in decisions]


def sent(decisions: Iterable[Decision]) -> list[Decision]:
    return [d for d in decisions if d.outcome == "sent"]


def stay(install: str, zone_name: str, start: float, seconds: int, step: int = 5) -> list[ZoneEvent]:
    """Enter, a dwell update every `step` s, exit: what fusion emits for one stay."""
    events = [zone(install, zone_name, "enter", start)]
    events += [zone(install, zone_name, "dwell", start + s, s) for s in range(step, seconds + 1, step)]
    return events + [zone(install, zone_name, "exit", start + seconds + 1, seconds + 1)]


# --- campaign files ---------------------------------------------------------------------------------


def test_the_example_file_loads_with_its_three_campaigns():
    file = load_campaigns(EXAMPLE, env={})
    kinds = {c.id: c.trigger.kind for c in file.campaigns}
    assert kinds == {"shoes-dwell-20s": "dwell", "welcome-first-visit": "first_visit", "comeback-14d": "return_after"}
    shoes = file.campaigns[0]
    assert shoes.trigger.min_s == 20 and shoes.quiet_hours == TimeWindow(start=time(21), end=time(8))
    assert file.timezone_of(shoes) == TZ


def test_a_campaign_file_round_trips_through_its_own_dump():
    file = load_campaigns(EXAMPLE, env={})
    assert CampaignsFile.model_validate(file.model_dump(mode="json")) == file


def test_the_environment_overrides_the_budget():
    file = load_campaigns(EXAMPLE, env={"OMNISENSE_CAMPAIGNS__BUDGET__MIN_GAP_S": "30"})
    assert file.budget.min_gap_s == 30


GOOD = {"id": "c1", "name": "c", "offer": {"title": "x"}, "trigger": {"kind": "zone_enter", "zone": "shoes"}}


@pytest.mark.parametrize(("changes", "words"), [
    ({"trigger": {"kind": "teleport", "zone": "shoes"}}, ["campaigns.0.trigger", "teleport", "dwell"]),
    ({"trigger": {"kind": "dwell", "zone": "shoes"}}, ["campaigns.0.trigger.dwell.min_s", "Field required"]),
    ({"trigger": {"kind": "dwell", "zone": "shoes", "min_s": -3}}, ["campaigns.0.trigger.dwell.min_s", "greater"]),
    ({"trigger": {"kind": "zone_enter", "zone": "shoes/1"}}, ["campaigns.0.trigger.zone_enter.zone", "pattern"]),
    ({"timezone": "Mars/Olympus"}, ["campaigns.0.timezone", "unknown timezone", "Mars/Olympus"]),
    ({"timezone": "+01:00"}, ["campaigns.0.timezone", "unknown timezone"]),
    ({"quiet_hours": "21:00 to 08:00"}, ["campaigns.0.quiet_hours", "HH:MM-HH:MM"]),
    ({"quiet_hours": "25:00-08:00"}, ["campaigns.0.quiet_hours", "bad time", "hour"]),
    ({"quiet_hours": "08:00-08:00"}, ["campaigns.0.quiet_hours", "ambiguous"]),
    ({"quiet_hours": {"start": "21:00"}}, ["campaigns.0.quiet_hours.end", "Field required"]),
    ({"schedule": {"hours": "9-17"}}, ["campaigns.0.schedule.hours", "HH:MM-HH:MM"]),
    ({"schedule": {"days_of_week": ["monday"]}}, ["campaigns.0.schedule.days_of_week.0", "mon"]),
    ({"schedule": {"start": "2025-06-01T00:00:00"}}, ["campaigns.0.schedule.start", "timezone"]),
    ({"schedule": {"start": "2025-06-02T00:00:00+02:00", "end": "2025-06-01T00:00:00+02:00"}},
     ["campaigns.0.schedule", "not after start"]),
    ({"audience": {"segments": ["vip"], "exclude_segments": ["vip"]}}, ["campaigns.0.audience", "both"]),
    ({"max_per_install_per_day": 0}, ["campaigns.0.max_per_install_per_day", "greater"]),
    ({"cooldown": 60}, ["campaigns.0.cooldown", "Extra inputs"]),
    ({"id": "summer sale"}, ["campaigns.0.id", "pattern"]),
    ({"offer": {"title": "x", "url": "shop.example/x"}}, ["campaigns.0.offer.url", "absolute URL"]),
])
def test_a_bad_campaign_fails_naming_the_field_and_the_reason(tmp_path, changes, words):
    path = tmp_path / "campaigns.yaml"
    path.write_text(yaml.safe_dump({"timezone": TZ, "campaigns": [{**GOOD, **changes}]}))
    with pytest.raises(ConfigError) as caught:
        load_campaigns(path, env={})
    message = str(caught.value)
    assert str(path) in message
    for word in words:
        assert word in message, message


@pytest.mark.parametrize(("text", "words"), [
    ("timezone: Europe/Berln\ncampaigns: []\n", ["timezone", "unknown timezone"]),
    ("campaigns: []\n", ["timezone", "Field required"]),
    (f"timezone: {TZ}\nbudget: {{min_gap: 5}}\n", ["budget.min_gap", "Extra inputs"]),
    (f"timezone: {TZ}\ncampaigns: [{GOOD}, {GOOD}]\n".replace("'", '"'), ["used twice", "c1"]),
])
def test_a_bad_file_fails_naming_the_field_and_the_reason(tmp_path, text, words):
    path = tmp_path / "campaigns.yaml"
    path.write_text(text)
    with pytest.raises(ConfigError) as caught:
        load_campaigns(path, env={})
    for word in words:
        assert word in str(caught.value), str(caught.value)


@pytest.mark.parametrize(("window", "inside", "outside"), [
    ("09:00-17:30", ["09:00", "12:00", "17:29"], ["08:59", "17:30", "23:00"]),
    ("21:00-08:00", ["21:00", "23:59", "00:00", "07:59"], ["08:00", "12:00", "20:59"]),
])
def test_time_windows_are_half_open_and_may_wrap_midnight(window, inside, outside):
    parsed = TimeWindow.model_validate(window)
    assert str(parsed) == window
    assert all(parsed.contains(time.fromisoformat(x)) for x in inside)
    assert not any(parsed.contains(time.fromisoformat(x)) for x in outside)


# --- the scenarios --------------------------------------------------------------------------


def test_a_shopper_staying_30s_at_the_shoes_gets_one_push_after_the_dwell_threshold():
    file = load_campaigns(EXAMPLE, env={})
    ledger = MemoryLedger()
    engine = OfferEngine(file, Installs(alice=["loyalty"]), ledger)
    decisions = run(engine, stay("alice", "shoes", WED_2PM, 30))
    assert len(decisions) == 1
    (push,) = decisions
    assert push.outcome == "sent" and push.reason == Reason.SENT and push.campaign_id == "shoes-dwell-20s"
    assert push.at == WED_2PM + 20, "sent at the first dwell update past 20 s, not before, not later"
    assert push.offer is not None and push.offer.code == "SHOES15"
    assert ledger.sent == [push]


def test_a_shopper_without_consent_gets_nothing():
    file = load_campaigns(EXAMPLE, env={})
    engine = OfferEngine(file, Installs(), MemoryLedger())
    decisions = run(engine, [arrival("bob", WED_2PM, first=True), *stay("bob", "shoes", WED_2PM + 60, 30)])
    assert not sent(decisions)
    assert reasons(decisions) == ["no_consent", "no_consent"]


def test_withdrawing_consent_mid_visit_stops_further_pushes():
    engine, ledger, installs = engine_for([
        campaign("welcome", {"kind": "first_visit"}),
        campaign("shoes", {"kind": "dwell", "zone": "shoes", "min_s": 20}),
    ])
    first = engine.handle(arrival("alice", WED_2PM, first=True))
    assert reasons(first) == ["sent"]
    events = stay("alice", "shoes", WED_2PM + 60, 30)
    run(engine, events[:2])  # enter, 5 s: below the threshold
    installs.withdraw("alice")
    later = run(engine, events[2:])
    assert reasons(later) == ["no_consent"]
    assert len(ledger.sent) == 1


def test_consent_is_asked_at_decision_time_for_every_event():
    engine, _, installs = engine_for([enter_shoes()])
    engine.handle(zone("alice", "shoes", "enter", WED_2PM))
    engine.handle(zone("alice", "shoes", "enter", WED_2PM + 3600))
    assert installs.asked == ["alice", "alice"]


def test_a_reached_frequency_cap_is_suppressed_with_its_reason():
    engine, ledger, _ = engine_for([enter_shoes(max_per_install_per_day=2)])
    decisions = run(engine, [zone("alice", "shoes", "enter", WED_2PM + i * 60) for i in range(4)])
    assert reasons(decisions) == ["sent", "sent", "install_daily_cap", "install_daily_cap"]
    assert [d.reason for d in ledger.decisions] == reasons(decisions), "suppressions are recorded too"
    assert all(d.offer is None for d in decisions if d.outcome == "suppressed")


def test_quiet_hours_are_respected_across_midnight():
    engine, _, _ = engine_for([enter_shoes(quiet_hours="21:00-08:00", max_per_install_per_day=10)])
    times = ["2025-06-04 20:59", "2025-06-04 21:00", "2025-06-04 23:59", "2025-06-05 00:30", "2025-06-05 07:59",
             "2025-06-05 08:00"]
    decisions = run(engine, [zone("alice", "shoes", "enter", t(x)) for x in times])
    assert reasons(decisions) == ["sent", "quiet_hours", "quiet_hours", "quiet_hours", "quiet_hours", "sent"]


def test_quiet_hours_follow_daylight_saving_time():
    # 2025-03-30: Berlin moves from +01:00 to +02:00 at 02:00. 06:30 UTC is 08:30 local, after quiet
    # hours; a fixed winter offset would think it 07:30 and stay quiet.
    engine, _, _ = engine_for([enter_shoes(quiet_hours="21:00-08:00", max_per_install_per_day=10)])
    utc = [datetime.fromisoformat(x).timestamp() for x in ("2025-03-30T05:30:00+00:00", "2025-03-30T06:30:00+00:00")]
    assert reasons(run(engine, [zone("alice", "shoes", "enter", x) for x in utc])) == ["quiet_hours", "sent"]
    # In autumn it goes the other way: 06:30 UTC on 2025-10-26 is 07:30 local (+01:00), still quiet.
    autumn = datetime.fromisoformat("2025-10-26T06:30:00+00:00").timestamp()
    assert reasons(engine.handle(zone("alice", "shoes", "enter", autumn))) == ["quiet_hours"]


def test_a_campaign_timezone_overrides_the_store_timezone():
    engine, _, _ = engine_for([enter_shoes(quiet_hours="21:00-08:00", timezone="America/New_York")])
    # 14:00 in Berlin is 08:00 in New York: outside New York's quiet hours; 13:00 Berlin is 07:00 there.
    assert reasons(engine.handle(zone("alice", "shoes", "enter", t("2025-06-04 13:00")))) == ["quiet_hours"]
    assert reasons(engine.handle(zone("alice", "shoes", "enter", t("2025-06-04 14:00")))) == ["sent"]


def test_a_shopper_on_the_border_of_two_zones_gets_no_storm_of_offers():
    engine, ledger, _ = engine_for(
        [enter_shoes(priority=1), campaign("bags-enter", {"kind": "zone_enter", "zone": "bags"}),
         campaign("shoes-dwell", {"kind": "dwell", "zone": "shoes", "min_s": 20}, priority=5),
         campaign("bags-exit", {"kind": "zone_exit", "zone": "bags"})],
        min_gap_s=600, max_offers_per_install_per_day=3,
    )
    events = []
    for i in range(0, 599, 3):  # ten minutes, a zone change every 3 s
        here, there = ("shoes", "bags") if (i // 3) % 2 == 0 else ("bags", "shoes")
        events += [zone("alice", there, "exit", WED_2PM + i, 3), zone("alice", here, "enter", WED_2PM + i),
                   zone("alice", here, "dwell", WED_2PM + i + 2, 2)]
    decisions = run(engine, events)
    assert len(ledger.sent) == 1
    assert {d.reason for d in decisions} <= {"sent", "global_gap", "install_daily_cap"}
    assert not any(d.campaign_id == "shoes-dwell" for d in decisions), "no stay lasted 20 s"


def test_a_redelivered_event_never_sends_twice():
    engine, ledger, _ = engine_for([enter_shoes(max_per_install_per_day=5)])
    event = zone("alice", "shoes", "enter", WED_2PM)
    first = engine.handle(event)
    again = engine.handle(event)
    copy = engine.handle(ZoneEvent(event_id=event.event_id, install_id="alice", zone="shoes", kind="enter",
                                   at=WED_2PM + 1))
    assert reasons(first) == ["sent"]
    assert reasons(again) == reasons(copy) == ["duplicate_event"]
    assert again[0].decision_id == copy[0].decision_id == first[0].decision_id
    assert again[0].offer is None and again[0].outcome == "suppressed"
    assert ledger.sent == first and len(ledger.decisions) == 1


def test_duplicated_events_in_a_stream_push_once():
    engine, ledger, _ = engine_for([campaign("shoes", {"kind": "dwell", "zone": "shoes", "min_s": 20})])
    events = stay("alice", "shoes", WED_2PM, 30)
    run(engine, [e for e in events for _ in range(3)])
    assert len(ledger.sent) == 1


def test_a_redelivered_enter_does_not_restart_the_stay():
    engine, ledger, _ = engine_for([campaign("shoes", {"kind": "dwell", "zone": "shoes", "min_s": 20},
                                             max_per_install_per_day=10)])
    enter = zone("alice", "shoes", "enter", WED_2PM)
    run(engine, [enter, zone("alice", "shoes", "dwell", WED_2PM + 25, 25)])
    assert engine.handle(enter) == []  # it matched no campaign then, so nothing to repeat now
    assert engine.handle(zone("alice", "shoes", "dwell", WED_2PM + 30, 30)) == []
    assert len(ledger.sent) == 1


# --- triggers ---------------------------------------------------------------------------------------


def test_only_campaigns_whose_trigger_matches_produce_decisions():
    engine, ledger, _ = engine_for([
        enter_shoes(), campaign("shoes-exit", {"kind": "zone_exit", "zone": "shoes"}),
        campaign("tills-enter", {"kind": "zone_enter", "zone": "tills"}),
        campaign("paused", {"kind": "zone_enter", "zone": "shoes"}, enabled=False),
        campaign("welcome", {"kind": "first_visit"}),
    ])
    assert [d.campaign_id for d in engine.handle(zone("alice", "shoes", "enter", WED_2PM))] == ["shoes-enter"]
    assert engine.handle(zone("alice", "shoes", "dwell", WED_2PM + 30, 30)) == []
    assert [d.campaign_id for d in engine.handle(zone("alice", "shoes", "exit", WED_2PM + 40, 40))] == ["shoes-exit"]
    assert engine.handle(zone("alice", "apparel", "enter", WED_2PM + 50)) == []
    assert engine.handle(arrival("alice", WED_2PM + 60, days=3)) == []
    assert len(ledger.decisions) == 2


def test_a_dwell_trigger_fires_once_per_stay_and_again_in_a_new_stay():
    engine, _, _ = engine_for([campaign("shoes", {"kind": "dwell", "zone": "shoes", "min_s": 20},
                                        max_per_install_per_day=10)])
    first = run(engine, stay("alice", "shoes", WED_2PM, 60))
    second = run(engine, stay("alice", "shoes", WED_2PM + 600, 60))
    assert [(d.reason, d.at) for d in first + second] == [("sent", WED_2PM + 20), ("sent", WED_2PM + 620)]


def test_dwell_campaigns_with_different_thresholds_fire_separately_in_one_stay():
    engine, _, _ = engine_for([campaign("short", {"kind": "dwell", "zone": "shoes", "min_s": 10}),
                               campaign("long", {"kind": "dwell", "zone": "shoes", "min_s": 45})])
    decisions = run(engine, stay("alice", "shoes", WED_2PM, 60))
    assert [(d.campaign_id, d.at - WED_2PM, d.reason) for d in decisions] == [("short", 10, "sent"),
                                                                            ("long", 45, "sent")]


def test_a_suppressed_dwell_does_not_fire_again_in_the_same_stay():
    engine, _, _ = engine_for([campaign("shoes", {"kind": "dwell", "zone": "shoes", "min_s": 20},
                                        quiet_hours="21:00-08:00")])
    decisions = run(engine, stay("alice", "shoes", t("2025-06-05 07:59:30"), 120))
    assert reasons(decisions) == ["quiet_hours"], "not re-fired at 08:00 while still in the same stay"


def test_a_dwell_without_its_enter_still_fires_once():
    engine, _, _ = engine_for([campaign("shoes", {"kind": "dwell", "zone": "shoes", "min_s": 20})])
    decisions = run(engine, [zone("alice", "shoes", "dwell", WED_2PM + s, s) for s in (15, 25, 35)])
    assert [d.at - WED_2PM for d in decisions] == [25]


def test_entering_another_zone_ends_the_stay():
    engine, _, _ = engine_for([campaign("shoes", {"kind": "dwell", "zone": "shoes", "min_s": 20},
                                        max_per_install_per_day=10)])
    events = [zone("alice", "shoes", "enter", WED_2PM), zone("alice", "shoes", "dwell", WED_2PM + 25, 25),
              zone("alice", "tills", "enter", WED_2PM + 30),  # the shoes exit was lost
              zone("alice", "shoes", "enter", WED_2PM + 90), zone("alice", "shoes", "dwell", WED_2PM + 115, 25)]
    assert len(sent(run(engine, events))) == 2


def test_stays_of_installs_are_independent():
    engine, _, _ = engine_for([campaign("shoes", {"kind": "dwell", "zone": "shoes", "min_s": 20})],
                              Installs(alice=[], bob=[]))
    events = sorted(stay("alice", "shoes", WED_2PM, 30) + stay("bob", "shoes", WED_2PM + 2, 30), key=lambda e: e.at)
    assert sorted(d.install_id for d in sent(run(engine, events))) == ["alice", "bob"]


def test_stale_stays_are_forgotten():
    file = CampaignsFile.model_validate({"timezone": TZ, "campaigns": [
        campaign("shoes", {"kind": "dwell", "zone": "shoes", "min_s": 20}, max_per_install_per_day=10)],
        "budget": {"min_gap_s": 0}})
    engine = OfferEngine(file, Installs(alice=[], bob=[]), MemoryLedger(), stale_stay_s=3600)
    engine.handle(zone("alice", "shoes", "dwell", WED_2PM, 25))
    engine.handle(zone("bob", "shoes", "enter", WED_2PM + 7200))
    # alice's exit never came; two hours on, a dwell of a new stay fires.
    assert reasons(engine.handle(zone("alice", "shoes", "dwell", WED_2PM + 7300, 25))) == ["sent"]


@pytest.mark.parametrize(("first", "days", "fires"), [
    (True, None, {"welcome"}), (False, 3.0, set()), (False, 13.9, set()), (False, 14.0, {"comeback"}),
    (False, 400.0, {"comeback"}), (False, None, set()),
])
def test_visit_triggers(first, days, fires):
    engine, _, _ = engine_for([campaign("welcome", {"kind": "first_visit"}),
                               campaign("comeback", {"kind": "return_after", "days": 14})])
    assert {d.campaign_id for d in engine.handle(arrival("alice", WED_2PM, first, days))} == fires


# --- audience, schedule, caps, budgets --------------------------------------------------------------


def test_segments_select_and_exclude_installs():
    audience = Installs(alice=["loyalty"], bob=[], carol=["loyalty", "staff"], dave=["staff"])
    engine, _, _ = engine_for([enter_shoes("members", priority=1, audience={"segments": ["loyalty", "vip"],
                                                                            "exclude_segments": ["staff"]}),
                               enter_shoes("everyone", audience={"exclude_segments": ["staff"]})], audience)
    outcome = {}
    for install in ("alice", "bob", "carol", "dave"):
        for d in engine.handle(zone(install, "shoes", "enter", WED_2PM)):
            outcome[install, d.campaign_id] = d.reason
    assert outcome == {("alice", "members"): "sent", ("alice", "everyone"): "lower_priority",
                       ("bob", "members"): "not_in_audience", ("bob", "everyone"): "sent",
                       ("carol", "members"): "not_in_audience", ("carol", "everyone"): "not_in_audience",
                       ("dave", "members"): "not_in_audience", ("dave", "everyone"): "not_in_audience"}


@pytest.mark.parametrize(("schedule", "local", "reason"), [
    ({"start": "2025-06-04T15:00:00+02:00"}, "2025-06-04 14:59", "outside_schedule"),
    ({"start": "2025-06-04T15:00:00+02:00"}, "2025-06-04 15:00", "sent"),
    ({"end": "2025-06-04T15:00:00+02:00"}, "2025-06-04 14:59", "sent"),
    ({"end": "2025-06-04T15:00:00+02:00"}, "2025-06-04 15:00", "outside_schedule"),
    ({"days_of_week": ["mon", "tue", "wed", "thu", "fri", "sat"]}, "2025-06-08 12:00", "outside_schedule"),
    ({"days_of_week": ["sun"]}, "2025-06-08 12:00", "sent"),
    ({"days_of_week": ["sun"]}, "2025-06-08 23:59", "sent"),
    ({"days_of_week": ["sun"]}, "2025-06-09 00:01", "outside_schedule"),
    ({"hours": "09:00-20:00"}, "2025-06-04 20:00", "outside_schedule"),
    ({"hours": "09:00-20:00"}, "2025-06-04 09:00", "sent"),
    ({"hours": "22:00-02:00"}, "2025-06-05 01:30", "sent"),
    ({"hours": "22:00-02:00"}, "2025-06-05 02:30", "outside_schedule"),
])
def test_the_schedule_is_read_in_local_time(schedule, local, reason):
    engine, _, _ = engine_for([enter_shoes(schedule=schedule)])
    assert reasons(engine.handle(zone("alice", "shoes", "enter", t(local)))) == [reason]


def test_schedule_is_checked_before_quiet_hours_and_caps():
    engine, _, _ = engine_for([enter_shoes(schedule={"hours": "09:00-20:00"}, quiet_hours="21:00-08:00")])
    assert reasons(engine.handle(zone("alice", "shoes", "enter", t("2025-06-04 22:00")))) == ["outside_schedule"]


def test_the_daily_cap_resets_at_local_midnight():
    # 23:50 and 00:10 Berlin time are the same UTC day but two local days.
    engine, _, _ = engine_for([enter_shoes()])
    times = ["2025-06-04 23:30", "2025-06-04 23:50", "2025-06-05 00:10"]
    assert reasons(run(engine, [zone("alice", "shoes", "enter", t(x)) for x in times])) == [
        "sent", "install_daily_cap", "sent"]


def test_local_day_start_handles_dst_days():
    spring = t("2025-03-30 12:00")
    assert local_day_start(spring, ZoneInfo(TZ)) == t("2025-03-30 00:00")
    assert t("2025-03-31 00:00") - t("2025-03-30 00:00") == 23 * 3600


def test_the_total_cap_per_install():
    engine, _, _ = engine_for([enter_shoes(max_per_install_total=2)])
    days = ["2025-06-04", "2025-06-05", "2025-06-06"]
    assert reasons(run(engine, [zone("alice", "shoes", "enter", t(f"{d} 12:00")) for d in days])) == [
        "sent", "sent", "install_total_cap"]


def test_the_cooldown_between_sends_of_one_campaign():
    engine, _, _ = engine_for([enter_shoes(max_per_install_per_day=10, cooldown_s=3600),
                               campaign("tills", {"kind": "zone_enter", "zone": "tills"}, max_per_install_per_day=10)])
    decisions = run(engine, [zone("alice", "shoes", "enter", WED_2PM), zone("alice", "tills", "enter", WED_2PM + 60),
                             zone("alice", "shoes", "enter", WED_2PM + 3599),
                             zone("alice", "shoes", "enter", WED_2PM + 3600)])
    assert reasons(decisions) == ["sent", "sent", "cooldown", "sent"], "other campaigns are not held back"


def test_the_campaign_budget():
    engine, _, _ = engine_for([enter_shoes(max_total=2)], Installs(a=[], b=[], c=[]))
    assert reasons(run(engine, [zone(i, "shoes", "enter", WED_2PM) for i in "abc"])) == [
        "sent", "sent", "campaign_budget"]


def test_the_global_cap_per_install_across_campaigns():
    engine, _, _ = engine_for([campaign(z, {"kind": "zone_enter", "zone": z}) for z in ("shoes", "tills", "bags")],
                              max_offers_per_install_per_day=2)
    events = [zone("alice", z, "enter", WED_2PM + i * 60) for i, z in enumerate(("shoes", "tills", "bags"))]
    assert reasons(run(engine, events)) == ["sent", "sent", "global_install_cap"]


def test_the_global_gap_between_any_two_offers():
    engine, _, _ = engine_for([enter_shoes(), campaign("tills", {"kind": "zone_enter", "zone": "tills"})],
                              min_gap_s=600)
    events = [zone("alice", "shoes", "enter", WED_2PM), zone("alice", "tills", "enter", WED_2PM + 599),
              zone("alice", "tills", "enter", WED_2PM + 600)]
    assert reasons(run(engine, events)) == ["sent", "global_gap", "sent"]


def test_the_store_daily_budget():
    engine, _, _ = engine_for([enter_shoes()], Installs(a=[], b=[], c=[]), max_offers_per_day=2)
    events = [zone(i, "shoes", "enter", WED_2PM) for i in "abc"] + [zone("c", "shoes", "enter", t("2025-06-05 12:00"))]
    assert reasons(run(engine, events)) == ["sent", "sent", "store_daily_budget", "sent"]


def test_the_highest_priority_wins_and_the_others_are_recorded():
    engine, ledger, _ = engine_for([enter_shoes("low", priority=1), enter_shoes("high", priority=9),
                                    enter_shoes("also-low", priority=1)])
    decisions = engine.handle(zone("alice", "shoes", "enter", WED_2PM))
    assert [(d.campaign_id, d.reason) for d in decisions] == [
        ("high", "sent"), ("also-low", "lower_priority"), ("low", "lower_priority")]
    assert decisions[0].offer is not None and decisions[0].offer.title == "offer high"
    assert len(ledger.decisions) == 3


def test_when_the_winner_is_held_back_the_next_eligible_campaign_sends():
    engine, _, _ = engine_for([enter_shoes("high", priority=9, cooldown_s=3600, max_per_install_per_day=5),
                               enter_shoes("low", priority=1, max_per_install_per_day=5)])
    engine.handle(zone("alice", "shoes", "enter", WED_2PM))
    decisions = engine.handle(zone("alice", "shoes", "enter", WED_2PM + 60))
    assert [(d.campaign_id, d.reason) for d in decisions] == [("high", "cooldown"), ("low", "sent")]


def test_ties_in_priority_go_to_the_lowest_campaign_id():
    engine, _, _ = engine_for([enter_shoes("b"), enter_shoes("a"), enter_shoes("c")])
    assert [d.campaign_id for d in sent(engine.handle(zone("alice", "shoes", "enter", WED_2PM)))] == ["a"]


def test_a_store_wide_bound_suppresses_every_matching_campaign_with_its_reason():
    engine, _, _ = engine_for([enter_shoes("a"), enter_shoes("b")], min_gap_s=600)
    engine.handle(zone("alice", "shoes", "enter", WED_2PM))
    assert reasons(engine.handle(zone("alice", "shoes", "enter", WED_2PM + 60))) == [
        "install_daily_cap", "global_gap"]
    engine2, _, _ = engine_for([enter_shoes("a", max_per_install_per_day=5), enter_shoes("b")], min_gap_s=600)
    engine2.handle(zone("alice", "shoes", "enter", WED_2PM))
    assert reasons(engine2.handle(zone("alice", "shoes", "enter", WED_2PM + 60))) == ["global_gap", "global_gap"]


def test_decision_ids_are_deterministic_per_event_and_campaign():
    assert decision_id("e1", "c1") == decision_id("e1", "c1")
    assert len({decision_id("e1", "c1"), decision_id("e1", "c2"), decision_id("e2", "c1"),
                decision_id("e1c", "1")}) == 4
    event = zone("alice", "shoes", "enter", WED_2PM)
    one = engine_for([enter_shoes()])[0].handle(event)
    two = engine_for([enter_shoes()])[0].handle(event)
    assert one == two


def test_caps_survive_a_restart_because_they_live_in_the_ledger():
    engine, ledger, audience = engine_for([campaign("shoes", {"kind": "dwell", "zone": "shoes", "min_s": 20})])
    events = stay("alice", "shoes", WED_2PM, 30)
    run(engine, events[:6])  # sent at 20 s, then the gateway restarts mid-stay and the broker redelivers
    restarted = OfferEngine(engine.campaigns, audience, ledger)
    later = run(restarted, events)
    # The stay was in memory, so its next dwell update fires again; the ledger's cap holds it back.
    assert reasons(later) == ["duplicate_event", "install_daily_cap"] and len(ledger.sent) == 1


def test_replacing_campaigns_keeps_the_caps():
    engine, _, _ = engine_for([enter_shoes()])
    engine.handle(zone("alice", "shoes", "enter", WED_2PM))
    engine.replace_campaigns(CampaignsFile.model_validate(
        {"timezone": TZ, "budget": {"min_gap_s": 0}, "campaigns": [enter_shoes(priority=3)]}))
    assert reasons(engine.handle(zone("alice", "shoes", "enter", WED_2PM + 60))) == ["install_daily_cap"]


class FlakyLedger(MemoryLedger):
    def __init__(self) -> None:
        super().__init__()
        self.fail_next = False

    def record(self, event_id, at, decisions) -> None:
        if self.fail_next:
            self.fail_next = False
            raise OSError("disk full")
        super().record(event_id, at, decisions)


def test_a_failed_record_leaves_no_trace_so_the_redelivery_decides_again():
    file = CampaignsFile.model_validate({"timezone": TZ, "campaigns": [
        campaign("shoes", {"kind": "dwell", "zone": "shoes", "min_s": 20})]})
    ledger = FlakyLedger()
    engine = OfferEngine(file, Installs(alice=[]), ledger)
    engine.handle(zone("alice", "shoes", "enter", WED_2PM))
    dwell = zone("alice", "shoes", "dwell", WED_2PM + 25, 25)
    ledger.fail_next = True
    with pytest.raises(OSError):
        engine.handle(dwell)
    assert reasons(engine.handle(dwell)) == ["sent"]


@pytest.mark.parametrize("bad", [
    {"kind": "linger"}, {"at": float("nan")}, {"dwell_s": -1.0}, {"event_id": ""}, {"install_id": ""},
])
def test_malformed_events_are_refused(bad):
    fields = {"event_id": "e", "install_id": "i", "zone": "shoes", "kind": "dwell", "at": WED_2PM, "dwell_s": 3.0}
    with pytest.raises(ValueError):
        ZoneEvent(**{**fields, **bad})


# --- property: no sequence of events sends more than the caps allow --------------------------------

INSTALLS = ("a", "b")
ZONES = ("shoes", "bags")

step = st.tuples(
    st.sampled_from([1, 5, 30, 300, 900, 1800, 3 * 3600, 20 * 3600]),  # seconds since the previous event
    st.sampled_from(INSTALLS),
    st.sampled_from(["enter", "dwell", "exit", "arrival"]),
    st.sampled_from(ZONES),
    st.integers(0, 60),  # dwell so far
    st.booleans(),  # first visit
    st.integers(0, 40),  # days since the last visit
    st.integers(0, 100),  # > 80: redeliver an earlier event instead
)
caps = st.fixed_dictionaries({
    "max_per_install_per_day": st.integers(1, 3), "max_per_install_total": st.none() | st.integers(1, 4),
    "cooldown_s": st.sampled_from([0, 60, 1800, 3600]), "max_total": st.none() | st.integers(1, 6),
    "priority": st.integers(0, 2), "quiet_hours": st.none() | st.just("21:00-08:00"),
})
budget = st.fixed_dictionaries({
    "max_offers_per_install_per_day": st.integers(1, 4), "min_gap_s": st.sampled_from([0, 300, 600]),
    "max_offers_per_day": st.none() | st.integers(1, 8),
})


@settings(max_examples=300, deadline=None)
@given(steps=st.lists(step, max_size=80), limits=st.lists(caps, min_size=6, max_size=6), bounds=budget,
       tz=st.sampled_from([TZ, "America/New_York", "UTC"]))
def test_no_event_sequence_sends_more_than_the_caps_allow(steps, limits, bounds, tz):
    triggers = [{"kind": "zone_enter", "zone": "shoes"}, {"kind": "dwell", "zone": "shoes", "min_s": 20},
                {"kind": "zone_exit", "zone": "bags"}, {"kind": "first_visit"}, {"kind": "return_after", "days": 14},
                {"kind": "zone_enter", "zone": "shoes"}]  # two campaigns compete for one event
    campaigns = [campaign(f"c{i}", trig, **limit) for i, (trig, limit) in enumerate(zip(triggers, limits))]
    file = CampaignsFile.model_validate({"timezone": tz, "budget": bounds, "campaigns": campaigns})
    ledger = MemoryLedger()
    engine = OfferEngine(file, Installs(a=[], b=[], c=[]), ledger)
    now, history, decisions_of = t("2025-10-25 18:00"), [], {}
    for gap, install, kind, zone_name, dwell, first, days, redeliver in steps:
        if redeliver > 80 and history:
            event = history[redeliver % len(history)]
        else:
            now += gap
            if kind == "arrival":
                event = arrival(install, now, first, None if first else days)
            else:
                event = zone(install, zone_name, kind, now, 0 if kind == "enter" else dwell)
            history.append(event)
        decisions = engine.handle(event)
        assert len(sent(decisions)) <= 1, "at most one push per event"
        if event.event_id in decisions_of:
            assert {d.reason for d in decisions} <= {"duplicate_event"}
            assert [d.decision_id for d in decisions] == [d.decision_id for d in decisions_of[event.event_id]]
        else:
            decisions_of[event.event_id] = decisions

    pushes = ledger.sent
    assert len({d.event_id for d in pushes}) == len(pushes)
    zone_of = ZoneInfo(tz)
    by_campaign = {c.id: c for c in file.campaigns}
    per_install_day: Counter[tuple[str, float]] = Counter()
    per_campaign_install_day: Counter[tuple[str, str, float]] = Counter()
    per_store_day: Counter[float] = Counter()
    times: dict[str, list[float]] = defaultdict(list)
    for push in pushes:
        day = local_day_start(push.at, zone_of)
        per_install_day[push.install_id, day] += 1
        per_campaign_install_day[push.campaign_id, push.install_id, day] += 1
        per_store_day[day] += 1
        times[push.install_id].append(push.at)
        c = by_campaign[push.campaign_id]
        local = datetime.fromtimestamp(push.at, zone_of).time()
        assert c.quiet_hours is None or not c.quiet_hours.contains(local)
    assert all(n <= bounds["max_offers_per_install_per_day"] for n in per_install_day.values())
    assert all(n <= by_campaign[cid].max_per_install_per_day for (cid, _, _), n in per_campaign_install_day.items())
    if bounds["max_offers_per_day"] is not None:
        assert all(n <= bounds["max_offers_per_day"] for n in per_store_day.values())
    for c in file.campaigns:
        mine = [p for p in pushes if p.campaign_id == c.id]
        assert c.max_total is None or len(mine) <= c.max_total
        for install in INSTALLS:
            at = sorted(p.at for p in mine if p.install_id == install)
            assert c.max_per_install_total is None or len(at) <= c.max_per_install_total
            assert all(b - a >= c.cooldown_s for a, b in itertools.pairwise(at))
    for at in times.values():
        assert all(b - a >= bounds["min_gap_s"] for a, b in itertools.pairwise(at))
