"""Claim tokens, the node directory and the health checks, over real SQLite files."""

from __future__ import annotations

import threading
import time
from datetime import date

import pytest

from edge.protocol import CameraPlacement, RadioCalibration
from gateway.claims import ClaimRefused, ClaimTokens
from gateway.doctor import NodeFacts, diagnose
from gateway.node_directory import NodeDirectory, UnknownNode

HW = "ab" * 16


def refusal(tokens: ClaimTokens, token: str, **kw) -> ClaimRefused:
    with pytest.raises(ClaimRefused) as caught:
        tokens.redeem(token, HW, **kw)
    return caught.value


def test_a_claim_token_works_once(tmp_path):
    tokens = ClaimTokens(tmp_path / "g.db", "store-1")
    issued = tokens.issue(600, node_id="door-1", zone="entrance")
    grant = tokens.redeem(issued.token, HW)
    assert (grant.node_id, grant.zone) == ("door-1", "entrance")
    again = refusal(tokens, issued.token)
    assert again.code == "used" and "already used" in again.reason


def test_expired_foreign_unknown_and_malformed_tokens_are_refused_with_reasons(tmp_path):
    tokens = ClaimTokens(tmp_path / "g.db", "store-1")
    issued = tokens.issue(60)
    late = refusal(tokens, issued.token, now=time.time() + 61)
    assert late.code == "expired" and "expired" in late.reason
    other = ClaimTokens(tmp_path / "other.db", "store-2").issue(600)
    foreign = refusal(tokens, other.token)
    assert foreign.code == "foreign_store" and "store-2" in foreign.reason and "store-1" in foreign.reason
    assert refusal(tokens, "store-1.not-a-real-secret").code == "unknown"
    assert refusal(tokens, "no-dot-here").code == "malformed"
    assert tokens.redeem(tokens.issue(60).token, HW).node_id is None


def test_only_one_of_many_racing_claims_wins(tmp_path):
    tokens = ClaimTokens(tmp_path / "g.db", "store-1")
    token = tokens.issue(600).token
    wins, codes = [], []

    def claim() -> None:
        try:
            tokens.redeem(token, HW)
            wins.append(1)
        except ClaimRefused as err:
            codes.append(err.code)

    threads = [threading.Thread(target=claim) for _ in range(8)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert len(wins) == 1 and codes == ["used"] * 7


def test_tokens_are_stored_only_as_hashes(tmp_path):
    tokens = ClaimTokens(tmp_path / "g.db", "store-1")
    token = tokens.issue(600).token
    tokens.close()
    assert token.split(".")[1].encode() not in (tmp_path / "g.db").read_bytes()


def test_directory_versions_placement_and_revocation(tmp_path):
    directory = NodeDirectory(tmp_path / "g.db", [("door-1", "entrance")])
    assert directory.known == {"door-1"} and directory.zone_of == {"door-1": "entrance"}
    first = directory.get("door-1")["version"]
    directory.update("door-1", camera=CameraPlacement(line="x=320", zones={"tills": [(0, 0), (10, 0), (10, 10)]}))
    directory.update("door-1", radio=RadioCalibration(rssi_1m=-61.5, exponent=2.4))
    row = directory.enroll("shoes-1", "cd" * 16, "s3cret-password", "shoes")
    assert directory.known == {"door-1", "shoes-1"} and directory.zone_of["shoes-1"] == "shoes"
    configs = {c.node_id: c for c in directory.remote_configs(date(2026, 11, 23), bytes(32))}
    door = configs["door-1"]
    assert door.version == first + 2 and door.camera.line == "x=320" and door.radio.rssi_1m == -61.5
    assert configs["shoes-1"].zone == "shoes" and configs["shoes-1"].camera is None
    assert directory.password_ok("shoes-1", "s3cret-password") and not directory.password_ok("shoes-1", "guess")
    assert "s3cret-password" not in str(row)
    directory.revoke("shoes-1")
    assert "shoes-1" not in directory.known and not directory.password_ok("shoes-1", "s3cret-password")
    assert {c.node_id for c in directory.remote_configs(date(2026, 11, 23), bytes(32))} == {"door-1"}
    with pytest.raises(UnknownNode, match="no node 'ghost'"):
        directory.update("ghost", zone="x")
    directory.close()
    # a restart keeps what the installer set; a zone edited in the config file wins
    again = NodeDirectory(tmp_path / "g.db", [("door-1", "lobby")])
    assert again.get("door-1")["zone"] == "lobby" and again.get("door-1")["camera"]
    assert again.known == {"door-1"}


def test_the_nodes_view_follows_the_directory(tmp_path):
    directory = NodeDirectory(tmp_path / "g.db", [("door-1", "entrance")])
    directory.enroll("shoes-1", "cd" * 16, "pw-pw-pw-pw", "shoes")
    directory.update("door-1", zone="lobby")
    rows = {r["node_id"]: r for r in directory.db.query("SELECT node_id, known, zone, config_version FROM nodes")}
    assert rows["door-1"]["zone"] == "lobby" and rows["door-1"]["config_version"] == directory.get("door-1")["version"]
    directory.revoke("shoes-1")
    rows = {r["node_id"]: r for r in directory.db.query("SELECT node_id, known FROM nodes")}
    assert rows["shoes-1"]["known"] == 0 and rows["door-1"]["known"] == 1


def healthy_facts(now: float) -> NodeFacts:
    return NodeFacts(node_id="door-1", zone="entrance", config_version=3, applied_config_version=3, state="online",
                     status_received_at=now - 5, outbox_depth=0, dropped=0,
                     sources={"camera": {"state": "ok", "frames": 900}}, last_counts_at=now - 4,
                     last_radio_at=now - 30, radio_addresses=12, test_token="ab" * 16, test_received_at=now - 1,
                     test_sent_ts=now - 1.2)


def test_doctor_passes_a_healthy_node_and_names_each_problem():
    now = time.time()
    report = diagnose(healthy_facts(now), now)
    assert report.healthy and {c.name for c in report.checks} == {
        "online", "config", "outbox", "camera camera", "radio", "test event", "clock"}
    cases = {
        "online": dict(status_received_at=now - 400),
        "config": dict(applied_config_version=2),
        "outbox": dict(dropped=5),
        "camera camera": dict(sources={"camera": {"state": "down", "frames": 10, "last_error": "no such device"}}),
        "radio": dict(radio_addresses=0),
        "clock": dict(test_sent_ts=now - 9),
    }
    for name, change in cases.items():
        facts = healthy_facts(now)
        for key, value in change.items():
            setattr(facts, key, value)
        report = diagnose(facts, now)
        failed = [c for c in report.checks if c.outcome != "ok"]
        assert not report.healthy and [c.name for c in failed] == [name], name
        assert failed[0].fix, name
    waiting = healthy_facts(now)
    waiting.test_received_at = None
    assert [c.outcome for c in diagnose(waiting, now).checks if c.name == "test event"] == ["waiting"]
