"""Triage and storage on a real SQLite file, without a broker."""

from __future__ import annotations

import json
import threading
from pathlib import Path

from edge import protocol
from edge.mqtt import Inbound
from edge.protocol import Channel, CountsEvent, NodeStatus
from gateway.ingest import Ingestor, triage
from gateway.node_directory import NodeDirectory
from gateway.store import Accepted, DeadLetter, EventStore, node_rows, open_db

TS = protocol.utcnow()


def event_message(node: str, seq: int, mid: int = 1, boot: str = "b1") -> Inbound:
    event = CountsEvent(node_id=node, boot_id=boot, seq=seq, ts=TS, interval_s=10, line_in=1, line_out=0,
                        occupancy=1)
    return Inbound(protocol.topic("s1", node, Channel.COUNTS), protocol.encode(event), 1, mid, False)


def test_triage_sorts_messages():
    assert isinstance(triage(event_message("n1", 1), "s1", {"n1"}, 65536), Accepted)
    status = NodeStatus(node_id="n1", boot_id="b", ts=TS, state="online")
    msg = Inbound(protocol.topic("s1", "n1", Channel.STATUS), protocol.encode(status), 1, 2, True)
    assert triage(msg, "s1", {"n1"}, 65536) == status
    assert triage(Inbound(protocol.topic("s1", "n1", Channel.STATUS), b"", 1, 3, True), "s1", {"n1"}, 65536) is None
    foreign = triage(event_message("n1", 1), "s2", {"n1"}, 65536)
    assert isinstance(foreign, DeadLetter) and foreign.code == "foreign_store"
    unknown = triage(event_message("n7", 1), "s1", {"n1"}, 65536)
    assert isinstance(unknown, DeadLetter) and unknown.code == "unknown_node" and unknown.node_id == "n7"


def test_redelivered_events_are_stored_once_and_counted(tmp_path: Path):
    store = EventStore(tmp_path / "g.db")
    batch = [triage(event_message(n, s), "s1", {"n1", "n2"}, 65536) for n in ("n1", "n2") for s in range(1, 51)]
    assert store.write(batch, [], []) == 100
    assert store.write(batch[:10] + batch[60:], [], []) == 0
    rows = {r["node_id"]: r for r in node_rows(store.db)}
    assert rows["n1"]["stored"] == 50 and rows["n1"]["duplicates"] == 10
    assert rows["n2"]["stored"] == 50 and rows["n2"]["duplicates"] == 40
    assert store.db["events"].count == 100


def test_gaps_persist_and_close_across_restarts(tmp_path: Path):
    store = EventStore(tmp_path / "g.db")
    store.write([triage(event_message("n1", s), "s1", {"n1"}, 65536) for s in (1, 2, 5, 9)], [], [])
    store.close()
    store = EventStore(tmp_path / "g.db")
    assert node_rows(store.db)[0]["gaps"] == [[3, 4], [6, 8]]
    store.write([triage(event_message("n1", s), "s1", {"n1"}, 65536) for s in (3, 4, 6, 7, 8)], [], [])
    assert node_rows(store.db)[0]["gaps"] == [] and node_rows(store.db)[0]["high_water"] == 9


def test_zone_change_in_the_config_file_bumps_the_config_version(tmp_path: Path):
    versions = []
    for zone in ("shoes", "shoes", "tills"):
        directory = NodeDirectory(tmp_path / "g.db", [("n1", zone)])
        versions.append(directory.get("n1")["version"])
        directory.close()
    assert versions == [1, 1, 2]


def test_ingestor_acknowledges_only_after_commit(tmp_path: Path):
    store = EventStore(tmp_path / "g.db")
    acked: list[int] = []
    seen_when_acked: list[int] = []
    done = threading.Event()

    def ack(mid: int, qos: int) -> None:
        db = open_db(tmp_path / "g.db", readonly=True)
        seen_when_acked.append(db.execute("SELECT count(*) FROM events WHERE seq = ?", [mid]).fetchone()[0])
        db.conn.close()
        acked.append(mid)
        if len(acked) == 201:
            done.set()

    ingestor = Ingestor(store, "s1", {"n1"}, 65536, 64, 1000, ack)
    ingestor.start()
    for seq in range(1, 201):
        ingestor.submit(event_message("n1", seq, mid=seq))
    ingestor.submit(Inbound(protocol.topic("s1", "n1", Channel.COUNTS), json.dumps({"v": 3}).encode(), 1, 999, False))
    assert done.wait(10)
    ingestor.stop()
    assert sorted(acked) == [*range(1, 201), 999]
    assert seen_when_acked[:200] == [1] * 200, "an event was acknowledged before it was committed"
    assert ingestor.counters.stored == 200 and ingestor.counters.dead_letters == 1
    assert store.db["dead_letters"].count == 1
