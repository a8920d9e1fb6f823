"""End to end against a real Mosquitto: nodes and gateway as separate processes, killed and restarted."""

from __future__ import annotations

import signal
import time
from collections import Counter
from pathlib import Path

import httpx

from edge.mqtt import MqttLink
from edge.protocol import Channel, NodeStatus, topic
from edge.settings import MqttSettings
from tests.conftest import STORE, GatewayProc, Mosquitto, NodeProc, Service, wait_for


def assert_exactly_once(gateway: GatewayProc, nodes: list[NodeProc]) -> int:
    """Every seq each node allocated is stored once, and the gateway reports no gaps."""
    rows = gateway.stored_rows()
    per_key = Counter((node, seq) for node, _boot, seq in rows)
    assert not [k for k, n in per_key.items() if n > 1], "an event was stored twice"
    total = 0
    for node in nodes:
        last_seq, depth = node.outbox()
        assert depth == 0, f"{node.node_id} still has {depth} events in its outbox"
        stored = sorted(seq for (n, seq) in per_key if n == node.node_id)
        assert stored == list(range(1, last_seq + 1)), f"{node.node_id}: stored seqs differ from sent 1..{last_seq}"
        total += last_seq
    views = {v["node_id"]: v for v in gateway.get("/api/nodes")}
    for node in nodes:
        assert views[node.node_id]["gaps"] == [], f"gateway reports gaps for {node.node_id}"
    return total


def wait_all_stored(gateway: GatewayProc, nodes: list[NodeProc], expected: int | None, timeout: float) -> None:
    def done() -> bool:
        sent = [node.outbox() for node in nodes]
        target = expected if expected is not None else sum(last for last, _ in sent)
        finished = expected is None or sum(last for last, _ in sent) == expected
        return finished and all(depth == 0 for _, depth in sent) and len(gateway.stored_rows()) >= target

    wait_for(done, timeout, "every sent event to be stored", interval=0.2)


def start_nodes(mosquitto: Mosquitto, tmp_path: Path, services: list[Service], count: int, n: int,
                rate_hz: float = 0) -> list[NodeProc]:
    nodes = [NodeProc(mosquitto, tmp_path, f"node-{i + 1}", count, rate_hz) for i in range(n)]
    for node in nodes:
        node.start()
        services.append(node)
    return nodes


def test_three_nodes_thousand_events_each_stored_exactly_once(mosquitto, tmp_path, services):
    gateway = GatewayProc(mosquitto, tmp_path, ["node-1", "node-2", "node-3"])
    gateway.start()
    services.append(gateway)
    nodes = start_nodes(mosquitto, tmp_path, services, count=1000, n=3)
    wait_all_stored(gateway, nodes, 3000, 60)
    assert assert_exactly_once(gateway, nodes) == 3000
    assert len(gateway.stored_rows()) == 3000
    stats = gateway.get("/api/stats")
    assert stats["events"] == 3000 and stats["gaps"] == 0 and stats["dead_letters"] == {}


def test_broker_restart_mid_stream_loses_nothing(mosquitto, tmp_path, services):
    gateway = GatewayProc(mosquitto, tmp_path, ["node-1", "node-2"])
    gateway.start()
    services.append(gateway)
    nodes = start_nodes(mosquitto, tmp_path, services, count=3000, n=2, rate_hz=600)
    wait_for(lambda: len(gateway.stored_rows()) > 500, 30, "the stream to flow")
    mosquitto.stop(signal.SIGTERM)
    time.sleep(1.5)  # nodes keep producing into their outboxes while the broker is down
    mosquitto.start()
    wait_all_stored(gateway, nodes, 6000, 90)
    assert assert_exactly_once(gateway, nodes) == 6000


def test_gateway_sigkill_and_restart_loses_nothing(mosquitto, tmp_path, services):
    gateway = GatewayProc(mosquitto, tmp_path, ["node-1", "node-2"])
    gateway.start()
    services.append(gateway)
    nodes = start_nodes(mosquitto, tmp_path, services, count=4000, n=2, rate_hz=800)
    wait_for(lambda: len(gateway.stored_rows()) > 1000, 30, "the stream to flow")
    gateway.stop(signal.SIGKILL)
    time.sleep(1.0)
    gateway.start()
    wait_all_stored(gateway, nodes, 8000, 90)
    assert assert_exactly_once(gateway, nodes) == 8000


def test_node_sigkill_and_restart_loses_nothing(mosquitto, tmp_path, services):
    gateway = GatewayProc(mosquitto, tmp_path, ["node-1"])
    gateway.start()
    services.append(gateway)
    [node] = start_nodes(mosquitto, tmp_path, services, count=5000, n=1, rate_hz=1000)
    wait_for(lambda: node.outbox()[0] > 800, 30, "the node to produce")
    node.stop(signal.SIGKILL)
    killed_at = node.outbox()[0]
    assert killed_at < 5000, "the node finished before it could be killed"
    node.set_count(1000)  # a fresh run emits 1,000 more; the sequence continues where it stopped
    node.start()
    wait_for(lambda: node.outbox()[0] >= killed_at + 1000, 30, "the restarted node to produce")
    wait_all_stored(gateway, [node], killed_at + 1000, 60)
    assert assert_exactly_once(gateway, [node]) == killed_at + 1000
    boots = {boot for _n, boot, _s in gateway.stored_rows()}
    assert len(boots) == 2, "events of both boots are stored under their own boot id"


def read_retained_status(mosquitto: Mosquitto, node_id: str) -> NodeStatus | None:
    received: list[bytes] = []
    link = MqttLink(MqttSettings(url=mosquitto.url), client_id="test-status-reader",
                    subscriptions=[(topic(STORE, node_id, Channel.STATUS), 1)],
                    on_message=lambda m: received.append(m.payload))
    link.start()
    try:
        assert link.wait_connected(10)
        wait_for(lambda: received, 5, "the retained status")
    finally:
        link.stop()
    return NodeStatus.model_validate_json(received[-1])


def test_node_sigkill_publishes_offline_through_its_will(mosquitto, tmp_path, services):
    gateway = GatewayProc(mosquitto, tmp_path, ["node-1"])
    gateway.start()
    services.append(gateway)
    [node] = start_nodes(mosquitto, tmp_path, services, count=10, n=1, rate_hz=5)
    wait_for(lambda: read_retained_status(mosquitto, "node-1").state == "online", 20, "the node to be online")
    node.stop(signal.SIGKILL)
    status = wait_for(lambda: (s := read_retained_status(mosquitto, "node-1")).state == "offline" and s, 20,
                      "the Will to mark the node offline")
    assert status.node_id == "node-1"
    wait_for(lambda: gateway.get("/api/nodes")[0]["state"] == "offline", 10, "the gateway to see it offline")


def test_clean_node_shutdown_says_offline_and_keeps_nothing_waiting(mosquitto, tmp_path, services):
    gateway = GatewayProc(mosquitto, tmp_path, ["node-1"])
    gateway.start()
    services.append(gateway)
    [node] = start_nodes(mosquitto, tmp_path, services, count=200, n=1, rate_hz=0)
    wait_all_stored(gateway, [node], 200, 30)
    assert node.stop(signal.SIGTERM) == 0
    assert read_retained_status(mosquitto, "node-1").state == "offline"
    view = gateway.get("/api/nodes")[0]
    assert view["reported_last_seq"] == 200 and view["config_version"] == view["applied_config_version"] == 1


def test_garbage_goes_to_dead_letters_and_good_events_around_it_are_kept(mosquitto, tmp_path, services):
    gateway = GatewayProc(mosquitto, tmp_path, ["node-1", "node-2"])
    gateway.start()
    services.append(gateway)
    nodes = start_nodes(mosquitto, tmp_path, services, count=2000, n=2, rate_hz=1000)
    good = {"schema": "omnisense.counts", "v": 1, "node_id": "node-1", "boot_id": "b1", "seq": 1,
            "ts": "2026-11-23T10:00:00+00:00", "interval_s": 10, "line_in": 1, "line_out": 0, "occupancy": 1}
    import json

    garbage = [
        (Channel.PRESENCE, "node-1", b"\x00\xffnot json at all", "not_json"),
        (Channel.COUNTS, "node-1", json.dumps({**good, "line_in": "many"}).encode(), "invalid"),
        (Channel.COUNTS, "node-1", b"x" * 1_000_000, "oversize"),
        (Channel.COUNTS, "node-1", json.dumps({**good, "v": 99}).encode(), "unknown_version"),
        (Channel.COUNTS, "node-2", json.dumps(good).encode(), "node_mismatch"),
        (Channel.COUNTS, "node-9", json.dumps({**good, "node_id": "node-9"}).encode(), "unknown_node"),
    ]
    prankster = MqttLink(MqttSettings(url=mosquitto.url), client_id="prankster")
    prankster.start()
    assert prankster.wait_connected(10)
    wait_for(lambda: len(gateway.stored_rows()) > 300, 30, "good events to flow")
    for channel, node_id, payload, _code in garbage:
        prankster.publish(topic(STORE, node_id, channel), payload)
        time.sleep(0.05)
    prankster.stop()
    wait_all_stored(gateway, nodes, 4000, 60)
    assert assert_exactly_once(gateway, nodes) == 4000
    letters = wait_for(lambda: len(d := gateway.get("/api/dead-letters")) >= len(garbage) and d, 20,
                       "the dead letters")
    assert sorted(d["code"] for d in letters) == sorted(code for *_, code in garbage)
    by_code = {d["code"]: d for d in letters}
    assert "line_in" in by_code["invalid"]["reason"]
    assert "99" in by_code["unknown_version"]["reason"]
    assert by_code["oversize"]["size"] == 1_000_000 and len(by_code["oversize"]["payload"]) <= 1024
    assert gateway.get("/api/stats")["dead_letters"]["not_json"] == 1
    health = httpx.get(gateway.url + "/healthz", timeout=5)
    assert health.status_code == 200 and health.json()["status"] == "ok"


def test_burst_of_50000_while_gateway_is_down_is_delivered_in_full(mosquitto, tmp_path, services):
    """Mosquitto's default queue limit (1,000 per client) would drop most of this; the shipped config must not."""
    node_ids = [f"node-{i + 1}" for i in range(5)]
    gateway = GatewayProc(mosquitto, tmp_path, node_ids)
    gateway.start()  # creates the persistent session and its subscriptions
    services.append(gateway)
    assert gateway.stop(signal.SIGTERM) == 0
    nodes = start_nodes(mosquitto, tmp_path, services, count=10_000, n=5, rate_hz=0)
    wait_for(lambda: all(n.outbox() == (10_000, 0) for n in nodes), 180,
             "the broker to acknowledge all 50,000 events", interval=0.5)
    gateway.start()
    wait_all_stored(gateway, nodes, 50_000, 120)
    assert assert_exactly_once(gateway, nodes) == 50_000


def test_node_that_boots_before_the_broker_buffers_then_delivers_in_order(mosquitto, tmp_path, services):
    gateway = GatewayProc(mosquitto, tmp_path, ["node-1"])
    gateway.start()  # its persistent session exists from now on, and survives the broker's restart
    services.append(gateway)
    mosquitto.stop()
    [node] = start_nodes(mosquitto, tmp_path, services, count=500, n=1, rate_hz=0)
    wait_for(lambda: node.outbox() == (500, 500), 30, "the node to buffer everything on disk")
    mosquitto.start()
    wait_all_stored(gateway, [node], 500, 60)
    assert assert_exactly_once(gateway, [node]) == 500
    seqs_in_arrival_order = [e["seq"] for e in gateway.get("/api/events", node="node-1", limit=10_000)]
    assert seqs_in_arrival_order == sorted(seqs_in_arrival_order), "replayed out of order"
