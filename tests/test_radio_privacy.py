"""Privacy by construction: a simulated store day through real nodes, Mosquitto and the gateway leaks no MAC.

Two node processes run the production BLE and Wi-Fi sources on the simulator's radios (every phone
of the store, with rotating random and fixed global addresses). Afterwards every MQTT payload the
broker carried, every row and every byte of every database file, and every log line are searched
for every address the simulated phones used, in all the textual forms a MAC is written in.
"""

from __future__ import annotations

import datetime as dt
import hashlib
import hmac
import json
import re
import sqlite3
import threading
from pathlib import Path
from typing import Any

import numpy as np
import paho.mqtt.client as paho

from firmware_sim.plan import default_start, load_plan
from firmware_sim.radio_sources import DEFAULT_PLAN
from firmware_sim.world import World
from tests.conftest import STORE, GatewayProc, Mosquitto, Service, wait_for

NODES = ("apparel-front", "tills-radio")
SEED = 11
DAY = dt.date(2026, 11, 21)  # a Saturday: the busiest day of the plan's week


HEX_RUN = re.compile(rb"[0-9a-f]{12,}")
SEPARATED = re.compile(rb"[0-9a-f]{2}([:\-])[0-9a-f]{2}(?:\1[0-9a-f]{2}){4}")
DOTTED = re.compile(rb"[0-9a-f]{4}\.[0-9a-f]{4}\.[0-9a-f]{4}")


def macs_in(blob: bytes, macs: set[bytes], binary: bool = False) -> set[bytes]:
    """The addresses in `macs` that occur in `blob` in any textual form a MAC is written in
    (aa:bb:.., AA-BB-.., aabbccddeeff inside any hex run, aabb.ccdd.eeff), or as raw bytes."""
    text = blob.lower()
    found: set[bytes] = set()
    for run in HEX_RUN.findall(text):
        found.update(bytes.fromhex(run[i:i + 12].decode()) for i in range(len(run) - 11))
    for match in SEPARATED.finditer(text):
        found.add(bytes.fromhex(match.group().replace(b":", b"").replace(b"-", b"").decode()))
    for match in DOTTED.finditer(text):
        found.add(bytes.fromhex(match.group().replace(b".", b"").decode()))
    if binary and len(blob) >= 6:
        raw = np.frombuffer(blob, dtype=np.uint8)
        as_int = raw[:len(raw) - 5].astype(np.uint64)  # the 6 bytes from each offset, read big-endian
        for i in range(1, 6):
            as_int <<= np.uint64(8)
            as_int |= raw[i:len(raw) - 5 + i]
        wanted = np.array([int.from_bytes(m, "big") for m in macs if len(m) == 6], dtype=np.uint64)
        found.update(int(v).to_bytes(6, "big") for v in np.intersect1d(as_int, wanted))
    return found & macs


def test_the_mac_search_finds_every_form():
    mac = bytes.fromhex("3c2eff0a1b2c")
    for text in (b"x 3c:2e:ff:0a:1b:2c y", b"3C-2E-FF-0A-1B-2C", b'{"d":"003c2eff0a1b2c9"}', b"3c2e.ff0a.1b2c"):
        assert macs_in(text, {mac}) == {mac}, text
    assert macs_in(b"\x00\x01" + mac + b"\x02", {mac}, binary=True) == {mac}
    assert macs_in(b"3c:2e:ff:0a:1b:2d 3c2eff0a1b", {mac}) == set()


class Recorder:
    """A plain MQTT client that keeps every payload the broker delivers under the root topic."""

    def __init__(self, broker: Mosquitto) -> None:
        self.messages: list[tuple[str, bytes]] = []
        self._lock = threading.Lock()
        self.client = paho.Client(paho.CallbackAPIVersion.VERSION2, client_id="privacy-recorder")
        self.client.on_message = self._on_message
        self.client.connect("127.0.0.1", broker.port)
        self.client.subscribe("#", qos=1)
        self.client.loop_start()

    def _on_message(self, _client: Any, _userdata: Any, message: paho.MQTTMessage) -> None:
        with self._lock:
            self.messages.append((message.topic, bytes(message.payload)))

    def stop(self) -> None:
        self.client.loop_stop()
        self.client.disconnect()


def node_service(broker: Mosquitto, workdir: Path, node_id: str, sim: dict[str, Any]) -> Service:
    config = {
        "store_id": STORE, "node_id": node_id, "data_dir": str(workdir / node_id), "mqtt": {"url": broker.url},
        "publish": {"status_interval_s": 2},
        "sources": [{"kind": "sim_ble", "options": {"sim": {**sim, "node": node_id}}},
                    {"kind": "sim_wifi", "options": {"sim": {**sim, "node": node_id}}}],
    }
    service = Service("node", config, workdir, node_id)
    service.command = "node"
    return service


def run_store_day(mosquitto: Mosquitto, tmp_path: Path, services: list) -> dict[str, Any]:
    """The plan's whole opening day, from the first to the last hour with visitors. The addresses
    returned are every one a phone could have used that day (`World.addresses_possible`)."""
    plan = load_plan(DEFAULT_PLAN)
    start = default_start(plan, DAY)
    open_hours = [h for h, v in enumerate(plan.traffic.hourly_visitors) if v > 0]
    hours = open_hours[-1] + 1 - open_hours[0]
    sim = {"seed": SEED, "start": dt.datetime.fromtimestamp(start, dt.UTC).isoformat(), "duration_s": hours * 3600,
           "warmup_s": 1800, "speed": 0}
    recorder = Recorder(mosquitto)
    gateway = GatewayProc(mosquitto, tmp_path, list(NODES))
    gateway.start()
    services.append(gateway)
    nodes = [node_service(mosquitto, tmp_path, n, sim) for n in NODES]
    for node in nodes:
        node.start()
        services.append(node)

    def finished() -> bool:
        return all(node.output().count("finished") >= 2 for node in nodes)

    wait_for(finished, 600, "both radios of both nodes to reach the end of the simulated day", interval=0.5)

    def drained() -> bool:
        with sqlite3.connect(f"file:{gateway.db_path}?mode=ro", uri=True) as db:
            stored = db.execute("SELECT count(*) FROM events").fetchone()[0]
        depths = []
        for n in NODES:
            with sqlite3.connect(f"file:{tmp_path / n / 'outbox.db'}?mode=ro", uri=True) as db:
                depths.append(db.execute("SELECT count(*) FROM outbox").fetchone()[0])
        return stored > 0 and not any(depths)

    wait_for(drained, 60, "every event to reach the gateway", interval=0.5)
    for service in [*nodes, gateway]:
        assert service.stop() == 0, service.output()
    recorder.stop()
    addresses = World(plan, SEED, start, start + hours * 3600, warmup_s=1800).addresses_possible()
    return {"gateway": gateway, "nodes": nodes, "recorder": recorder, "addresses": addresses}


def database_text(path: Path) -> bytes:
    """Every row of every table, as text, plus the raw file (free pages and WAL included)."""
    chunks = [path.read_bytes()]
    for extra in (path.with_name(path.name + "-wal"),):
        if extra.exists():
            chunks.append(extra.read_bytes())
    with sqlite3.connect(f"file:{path}?mode=ro", uri=True) as db:
        for (table,) in db.execute("SELECT name FROM sqlite_master WHERE type = 'table'"):
            for row in db.execute(f'SELECT * FROM "{table}"'):
                chunks.append(repr(row).encode())
    return b"\n".join(chunks)


def test_a_simulated_store_day_leaks_no_mac_address(mosquitto, tmp_path, services):
    run = run_store_day(mosquitto, tmp_path, services)
    addresses: set[bytes] = run["addresses"]
    assert len(addresses) > 2000  # rotating random MACs and BLE addresses of every phone of the store
    messages = run["recorder"].messages
    presence = [json.loads(p) for t, p in messages if t.endswith("/events/presence")]
    radio = [json.loads(p) for t, p in messages if t.endswith("/events/radio")]
    assert len(presence) > 100 and len(radio) > 50, "the day produced too little to prove anything"
    assert {e["source"] for e in presence} == {"ble", "wifi", "app"}

    leaks = {"mqtt": macs_in(b"\n".join(t.encode() + b" " + p for t, p in messages), addresses),
             "gateway.db": macs_in(database_text(run["gateway"].db_path), addresses, binary=True),
             "gateway log": macs_in((tmp_path / "gateway.log").read_bytes(), addresses)}
    for node in NODES:
        leaks[f"{node} outbox"] = macs_in(database_text(tmp_path / node / "outbox.db"), addresses, binary=True)
        leaks[f"{node} log"] = macs_in((tmp_path / f"{node}.log").read_bytes(), addresses)
    assert not any(leaks.values()), f"MAC addresses found: { {k: len(v) for k, v in leaks.items()} }"

    # One device, one pseudonym on every node of the store that day: the nodes share the salt.
    config = next(json.loads(p) for t, p in messages if t.endswith("/config") and p)
    salt = bytes.fromhex(config["salt"])
    expected = {hmac.new(salt, b"wifi\x00" + mac, hashlib.sha256).digest()[:8].hex() for mac in addresses}
    per_node = {n: {e["device"] for e in presence if e["node_id"] == n and e["source"] == "wifi"} for n in NODES}
    assert all(per_node.values())
    assert per_node[NODES[0]] <= expected and per_node[NODES[1]] <= expected
    assert per_node[NODES[0]] & per_node[NODES[1]], "no phone was seen by both nodes under one pseudonym"
