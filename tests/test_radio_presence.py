"""Zone presence from noisy RSSI: no flapping at a border, one exit for a phone that leaves; store devices; pseudonyms."""

from __future__ import annotations

import datetime as dt
import math

import numpy as np
import pytest
from pydantic import ValidationError

from edge.radio.anonymize import Pseudonymizer
from edge.radio.presence import PathLoss, Transition, ZonePresence, ZoneRules
from edge.radio.store_devices import StoreDeviceRules, StoreDevices, parse_prefix
from gateway.salt import DailySalt

PATH = PathLoss(rssi_1m=-59.0, exponent=2.2)
RULES = ZoneRules()


def rssi_at(metres: float, rng: np.random.Generator, sigma: float = 4.0) -> float:
    """Path loss plus the spread a phone in a pocket shows: log-normal shadowing and fading dips."""
    fading_db = 10 * math.log10(max(rng.rayleigh(0.8) ** 2, 1e-3))
    return PATH.rssi_1m - 10 * PATH.exponent * math.log10(metres) + rng.normal(0, sigma) + min(0.0, fading_db)


def run(presence: ZonePresence, track, seconds: int, rng: np.random.Generator, key="phone", start=0.0,
        every_s: float = 1.0) -> list[Transition]:
    out: list[Transition] = []
    t = start
    while t < start + seconds:
        presence.observe(key, t, rssi_at(track(t), rng), out)
        presence.tick(t, out)
        t += every_s
    return out


@pytest.mark.parametrize("seed", range(5))
def test_a_phone_standing_on_the_zone_border_does_not_flap(seed):
    rng = np.random.default_rng(seed)
    presence = ZonePresence(RULES, PATH)
    out = run(presence, lambda t: RULES.enter_m, 1800, rng)
    actions = [t.action for t in out if t.action != "dwell"]
    assert actions.count("enter") <= 1 and actions.count("exit") == 0, actions
    dwells = [t for t in out if t.action == "dwell"]
    assert len(dwells) <= 1800 / RULES.dwell_every_s  # rate-limited, not one per advert


@pytest.mark.parametrize("seed", range(5))
def test_a_phone_that_leaves_produces_exactly_one_exit_within_the_timeout(seed):
    rng = np.random.default_rng(seed)
    presence = ZonePresence(RULES, PATH)
    out = run(presence, lambda t: 2.0, 300, rng)  # browsing 2 m from the node for 5 minutes
    assert [t.action for t in out if t.action != "dwell"] == ["enter"]
    assert out[0].at <= RULES.enter_after_s + 2
    gone_at = 300.0
    later: list[Transition] = []
    for t in range(300, 600):  # silence: the phone left the store
        presence.tick(float(t), later)
    exits = [t for t in later if t.action == "exit"]
    assert len(exits) == 1
    assert exits[0].at == pytest.approx(gone_at - 1)
    assert exits[0].dwell_s == pytest.approx(gone_at - 1 - out[0].at)
    assert not presence.devices  # forgotten: memory stays bounded


def test_walking_away_while_still_heard_exits_after_the_exit_delay():
    rng = np.random.default_rng(7)
    presence = ZonePresence(RULES, PATH)
    out = run(presence, lambda t: 1.5 if t < 120 else 25.0, 400, rng)
    actions = [t.action for t in out if t.action != "dwell"]
    assert actions == ["enter", "exit"]
    exit_ = next(t for t in out if t.action == "exit")
    assert 120 <= exit_.at <= 120 + RULES.window_s  # the median follows once half the window is far


def test_passing_by_briefly_is_not_an_entry():
    rng = np.random.default_rng(3)
    presence = ZonePresence(RULES, PATH)
    out = run(presence, lambda t: 2.0 if 30 <= t < 36 else 30.0, 200, rng)
    assert out == []


def test_hysteresis_rules_are_checked():
    with pytest.raises(ValidationError, match="exit_m"):
        ZoneRules(enter_m=6, exit_m=5)
    with pytest.raises(ValidationError, match="exit_after_s"):
        ZoneRules(enter_after_s=30, exit_after_s=10)


def test_distance_inverts_the_path_loss_model():
    assert PATH.distance(-59.0) == pytest.approx(1.0)
    assert PATH.distance(-59.0 - 22.0) == pytest.approx(10.0)


def test_a_till_heard_all_day_is_learnt_and_a_visitor_is_not():
    devices = StoreDevices(StoreDeviceRules())
    learnt_at = None
    for t in range(0, 4 * 3600, 20):
        if devices.observe("till", float(t)) and learnt_at is None:
            learnt_at = t
        if t < 3000:
            devices.observe("shopper", float(t))  # a long visit of 50 minutes
    assert learnt_at is not None and 7200 <= learnt_at < 7300
    assert not devices.is_store_device("shopper")
    devices.expire(4 * 3600.0, idle_s=900)
    assert "shopper" not in set(devices.keys_seen())
    assert devices.is_store_device("till")


def test_installer_lists_win_over_learning():
    devices = StoreDevices(StoreDeviceRules(deny=["dc:fb:48"], allow=["02:00:00:00:00:07"]))
    assert devices.listed(bytes.fromhex("dcfb48112233")) is True
    assert devices.listed(bytes.fromhex("020000000007")) is False
    assert devices.listed(bytes.fromhex("020000000008")) is None
    with pytest.raises(ValidationError, match="not an address prefix"):
        StoreDeviceRules(deny=["dc:fb:4"])
    assert parse_prefix("DC-FB-48") == bytes.fromhex("dcfb48")


def test_pseudonyms_are_stable_within_a_day_unrelated_across_days_and_separated_by_kind():
    mac = bytes.fromhex("3c2eff001122")
    node_a, node_b = Pseudonymizer(), Pseudonymizer()
    salts = DailySalt(lambda: day)
    day = dt.date(2026, 11, 23)
    first_day, salt = salts.current()
    node_a.set_salt(first_day, salt)
    node_b.set_salt(first_day, salt)
    monday = node_a.pseudonym(b"wifi", mac)
    assert monday == node_b.pseudonym(b"wifi", mac)  # same store, same day: same pseudonym on every node
    assert node_a.pseudonym(b"ble", mac) != monday
    assert len(monday) == 16 and mac.hex() not in monday
    day = dt.date(2026, 11, 24)
    assert salts.changed()
    second_day, next_salt = salts.current()
    assert second_day == day and next_salt != salt
    node_a.set_salt(second_day, next_salt)
    assert node_a.pseudonym(b"wifi", mac) != monday
    assert next_salt.hex() not in repr(node_a) and next_salt.hex() not in repr(salts)


def test_no_pseudonym_without_a_salt():
    with pytest.raises(RuntimeError, match="no daily salt"):
        Pseudonymizer().pseudonym(b"wifi", b"\x00" * 6)
    with pytest.raises(ValueError, match="16 bytes"):
        Pseudonymizer().set_salt(dt.date(2026, 1, 1), b"short")
