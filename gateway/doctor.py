"""Is each node healthy end to end? Pure checks over what the gateway has stored about it.

Each failed check says what to do, in the installer's terms. A check that does not apply (no
camera on a radio node) is left out rather than passed, so "all green" means every check that
could run did and passed.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Literal

from pydantic import BaseModel

Outcome = Literal["ok", "fail", "waiting"]

MAX_CLOCK_OFFSET_S = 2.0
MAX_OUTBOX_DEPTH = 1000


class Check(BaseModel):
    name: str
    outcome: Outcome
    detail: str
    fix: str | None = None


class NodeReport(BaseModel):
    node_id: str
    zone: str | None
    healthy: bool
    checks: list[Check]


@dataclass
class NodeFacts:
    """What the gateway knows about a node, gathered by the caller from its database."""

    node_id: str
    zone: str | None
    config_version: int
    applied_config_version: int | None = None
    state: str | None = None
    status_received_at: float | None = None
    outbox_depth: int | None = None
    dropped: int | None = None
    sources: dict[str, dict[str, Any]] = field(default_factory=dict)
    last_counts_at: float | None = None
    last_radio_at: float | None = None
    radio_addresses: int = 0
    test_token: str | None = None
    test_received_at: float | None = None
    test_sent_ts: float | None = None


def diagnose(facts: NodeFacts, now: float, heartbeat_s: float = 30.0, radio_window_s: float = 300.0) -> NodeReport:
    checks = [_online(facts, now, heartbeat_s), _config(facts), _outbox(facts)]
    checks += _cameras(facts, now, heartbeat_s)
    checks += _radio(facts, now, radio_window_s)
    checks += _end_to_end(facts)
    return NodeReport(node_id=facts.node_id, zone=facts.zone, checks=checks,
                      healthy=all(c.outcome == "ok" for c in checks))


def _online(f: NodeFacts, now: float, heartbeat_s: float) -> Check:
    if f.status_received_at is None:
        return Check(name="online", outcome="fail", detail="never reported a status",
                     fix="power the node and start 'omnisense node -c node.yaml'; if it runs, its log says why it "
                         "cannot reach the broker (address, credential, CA)")
    age = now - f.status_received_at
    if f.state != "online":
        return Check(name="online", outcome="fail", detail=f"offline for {age:.0f} s",
                     fix="the node's connection dropped (its Last Will was published): check power and network")
    if age > 3 * heartbeat_s:
        return Check(name="online", outcome="fail", detail=f"last status {age:.0f} s ago (heartbeat {heartbeat_s:.0f} s)",
                     fix="the node stopped reporting without a goodbye: check power, network and the broker")
    return Check(name="online", outcome="ok", detail=f"status {age:.0f} s ago")


def _config(f: NodeFacts) -> Check:
    if f.applied_config_version == f.config_version:
        return Check(name="config", outcome="ok", detail=f"runs config version {f.config_version}")
    return Check(name="config", outcome="fail",
                 detail=f"runs config version {f.applied_config_version}, the gateway's is {f.config_version}",
                 fix="the node has not applied its latest config: it is offline or may not read its config topic "
                     "(check its broker credential and the ACL)")


def _outbox(f: NodeFacts) -> Check:
    depth, dropped = f.outbox_depth or 0, f.dropped or 0
    if dropped:
        return Check(name="outbox", outcome="fail", detail=f"{dropped} events dropped, {depth} waiting",
                     fix="the node's outbox overflowed while the broker was unreachable: fix the link, then raise "
                         "outbox.max_events if outages this long are expected")
    if depth > MAX_OUTBOX_DEPTH:
        return Check(name="outbox", outcome="fail", detail=f"{depth} events waiting on the node's disk",
                     fix="events are not getting through: check the node's broker connection and the gateway's "
                         "ingest (GET /healthz)")
    return Check(name="outbox", outcome="ok", detail=f"{depth} events waiting")


def _cameras(f: NodeFacts, now: float, heartbeat_s: float) -> list[Check]:
    checks = []
    for name, health in sorted(f.sources.items()):
        if "frames" not in health:
            continue
        state, frames = health.get("state"), health.get("frames") or 0
        if state == "ok" and frames:
            counts = "" if f.last_counts_at is None else f", counts {now - f.last_counts_at:.0f} s ago"
            checks.append(Check(name=f"camera {name}", outcome="ok", detail=f"{frames} frames{counts}"))
        else:
            error = health.get("last_error") or health.get("error") or "no frames"
            checks.append(Check(name=f"camera {name}", outcome="fail", detail=f"state {state}: {error}",
                                fix="check the camera's cable or stream URL (camera options 'uri'); the node keeps "
                                    "retrying and counts again once frames arrive"))
    return checks


def _radio(f: NodeFacts, now: float, window_s: float) -> list[Check]:
    if f.last_radio_at is None:
        return []
    age = now - f.last_radio_at
    if age > window_s:
        return [Check(name="radio", outcome="fail", detail=f"last radio report {age:.0f} s ago",
                      fix="the radio stopped reporting: check the Bluetooth adapter (bluetoothctl show) or the "
                          "monitor-mode interface")]
    if not f.radio_addresses:
        return [Check(name="radio", outcome="fail", detail="radio reports arrive but hear nothing",
                      fix="no device heard in the last report: check the antenna and that the radio is not blocked "
                          "(rfkill list)")]
    return [Check(name="radio", outcome="ok", detail=f"{f.radio_addresses} addresses heard, report {age:.0f} s ago")]


def _end_to_end(f: NodeFacts) -> list[Check]:
    if f.test_token is None:
        return []
    if f.test_received_at is None or f.test_sent_ts is None:
        return [Check(name="test event", outcome="waiting", detail="test event not seen yet",
                      fix="the node has not answered the test: if it stays so, it is offline or its events do not "
                          "reach the gateway (see the checks above)")]
    offset = f.test_received_at - f.test_sent_ts
    checks = [Check(name="test event", outcome="ok", detail="node -> broker -> gateway -> database")]
    if abs(offset) > MAX_CLOCK_OFFSET_S:
        way = "behind" if offset > 0 else "ahead of"
        checks.append(Check(name="clock", outcome="fail", detail=f"node clock {abs(offset):.1f} s {way} the gateway's",
                            fix="turn on time sync on the node (timedatectl set-ntp true) and check it reaches an "
                                "NTP server; event times are the node's"))
    else:
        checks.append(Check(name="clock", outcome="ok", detail=f"offset {offset:+.2f} s"))
    return checks
