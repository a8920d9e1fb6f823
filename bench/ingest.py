"""Gateway ingest against a real Mosquitto: burst drain rate and publish-to-commit latency.

Both measured side by side with a bare paho subscriber on the same broker, in the same run:
- burst drain: N events wait in the broker for two persistent sessions (the bare subscriber's and
  the gateway's) while both are offline; then each connects alone and drains them.
- latency: a publisher in another process offers 1,000 events/s; each event carries its publish
  time; the bare subscriber records receive time, the gateway the time its batch committed.

The measuring process is pinned to one core, the broker and publisher to the other.
Usage: python bench/ingest.py [--events 100000] [--rounds 3] [--rate 1000] [--seconds 10]
"""

from __future__ import annotations

import argparse
import asyncio
import collections
import gc
import json
import multiprocessing
import os
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from datetime import UTC, datetime
from pathlib import Path

import paho.mqtt.client as paho
from paho.mqtt.packettypes import PacketTypes
from paho.mqtt.properties import Properties
from rich.console import Console
from rich.table import Table

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from bench.support.timing import pin  # noqa: E402
from edge import protocol  # noqa: E402
from edge.protocol import Channel, CountsEvent  # noqa: E402
from edge.settings import MqttSettings  # noqa: E402
from gateway.broker import free_port, mosquitto_conf  # noqa: E402
from gateway.config import ApiSettings, GatewayConfig, KnownNode  # noqa: E402
from gateway.service import Gateway  # noqa: E402

STORE = "bench-store"
NODES = [f"node-{i}" for i in range(1, 5)]
BENCH_CPU = 0
DEFAULT_GC = gc.get_threshold()


def other_cpus() -> set[int]:
    cpus = set(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else {0}
    return cpus - {BENCH_CPU} or cpus


def payload(node: str, seq: int, ts: float | None = None) -> bytes:
    when = protocol.utcnow() if ts is None else datetime.fromtimestamp(ts, UTC)
    return protocol.encode(CountsEvent(node_id=node, boot_id="bench", seq=seq, ts=when, interval_s=10,
                                       line_in=seq % 3, line_out=seq % 2, occupancy=seq % 40, zones={"shoes": 2}))


def v5_client(client_id: str, port: int, **kwargs: object) -> paho.Client:
    client = paho.Client(paho.CallbackAPIVersion.VERSION2, client_id=client_id, protocol=paho.MQTTv5, **kwargs)
    client.max_inflight_messages_set(1000)
    client.max_queued_messages_set(0)
    return client


def connect_props() -> Properties:
    props = Properties(PacketTypes.CONNECT)
    props.SessionExpiryInterval = 3600
    return props


def publish(port: int, items: list[tuple[str, int]], rate: float, first_seq_ts: bool) -> None:
    """Publisher process: QoS 1 at `rate` events/s (0: as fast as the broker takes them)."""
    pin(other_cpus())
    client = v5_client("bench-publisher", port)
    client.connect("127.0.0.1", port, clean_start=True)
    client.loop_start()
    start = time.perf_counter()
    infos: collections.deque[paho.MQTTMessageInfo] = collections.deque()
    for i, (node, seq) in enumerate(items):
        while len(infos) > 20_000:  # message ids are 16-bit: keep well below 65,535 outstanding
            infos.popleft().wait_for_publish(60)
        if rate:
            due = start + i / rate
            while (delay := due - time.perf_counter()) > 0:
                time.sleep(min(delay, 0.001))
        body = payload(node, seq, time.time() if first_seq_ts else None)
        infos.append(client.publish(protocol.topic(STORE, node, Channel.COUNTS), body, qos=1))
    for info in infos:
        info.wait_for_publish(60)
    client.disconnect()
    client.loop_stop()


def run_publisher(port: int, items: list[tuple[str, int]], rate: float, stamp: bool) -> multiprocessing.Process:
    proc = multiprocessing.get_context("spawn").Process(target=publish, args=(port, items, rate, stamp))
    proc.start()
    return proc


def make_session(client_id: str, port: int) -> None:
    """Create a persistent session subscribed to the store's events, then leave it offline."""
    client = v5_client(client_id, port)
    client.connect("127.0.0.1", port, clean_start=True, properties=connect_props())
    client.loop_start()
    client.subscribe(protocol.store_filter(STORE, Channel.COUNTS), qos=1)
    time.sleep(0.3)
    client.disconnect()
    client.loop_stop()


class BareSubscriber:
    def __init__(self, port: int, expected: int, latency: bool) -> None:
        self.expected = expected
        self.count = 0
        self.latencies: list[float] = []
        self.done = threading.Event()
        self.client = v5_client("bench-bare", port)
        self.client.on_message = self._on_message
        self.client.on_connect = lambda c, *_: c.subscribe(protocol.store_filter(STORE, Channel.COUNTS), qos=1)
        self.latency = latency
        self.port = port

    def _on_message(self, _c: object, _u: object, msg: paho.MQTTMessage) -> None:
        if self.latency:
            sent = json.loads(msg.payload)["ts"]
            self.latencies.append(time.time() - datetime.fromisoformat(sent).timestamp())
        self.count += 1
        if self.count >= self.expected:
            self.done.set()

    def run(self, timeout: float) -> float:
        start = time.perf_counter()
        self.client.connect("127.0.0.1", self.port, clean_start=False, properties=connect_props())
        self.client.loop_start()
        if not self.done.wait(timeout):
            raise RuntimeError(f"bare subscriber received {self.count} of {self.expected}")
        elapsed = time.perf_counter() - start
        self.client.disconnect()
        self.client.loop_stop()
        return elapsed


def gateway_config(port: int, workdir: Path) -> GatewayConfig:
    return GatewayConfig(store_id=STORE, db_path=workdir / "gateway.db",
                         mqtt=MqttSettings(url=f"mqtt://127.0.0.1:{port}", protocol="5"),
                         api=ApiSettings(port=0), nodes=[KnownNode(node_id=n) for n in NODES])


async def run_gateway(config: GatewayConfig, expected: int, timeout: float) -> tuple[float, int]:
    """Start the gateway, time it from its MQTT connection until `expected` new events are committed."""
    gateway = Gateway(config)
    stop = asyncio.Event()
    task = asyncio.create_task(gateway.run(stop))
    deadline = time.perf_counter() + timeout
    while not gateway.link.connected.is_set() and time.perf_counter() < deadline:
        await asyncio.sleep(0.001)
    start = time.perf_counter()
    counters = gateway.ingestor.counters
    while counters.stored < expected:
        if time.perf_counter() > deadline:
            stop.set()
            await task
            raise RuntimeError(f"gateway stored {counters.stored} of {expected}")
        await asyncio.sleep(0.005)
    elapsed = time.perf_counter() - start
    stored = counters.stored
    stop.set()
    await task
    return elapsed, stored


def default_gc() -> None:
    """The gateway tunes the collector for its process; the bare subscriber runs with Python's defaults."""
    gc.unfreeze()
    gc.set_threshold(*DEFAULT_GC)


def percentile(values: list[float], q: float) -> float:
    return statistics.quantiles(values, n=1000, method="inclusive")[int(q * 10) - 1] * 1000


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--events", type=int, default=100_000)
    parser.add_argument("--rate", type=float, default=1000)
    parser.add_argument("--seconds", type=float, default=10)
    parser.add_argument("--rounds", type=int, default=3)
    args = parser.parse_args()
    console = Console()
    pin({BENCH_CPU})
    binary = next((p for p in ("/usr/sbin/mosquitto", "/usr/bin/mosquitto") if os.access(p, os.X_OK)), "mosquitto")
    with tempfile.TemporaryDirectory() as tmp:
        workdir = Path(tmp)
        port = free_port()
        conf = workdir / "mosquitto.conf"
        conf.write_text(mosquitto_conf(port, workdir))
        broker = subprocess.Popen([binary, "-c", str(conf)], stdout=subprocess.DEVNULL, stderr=subprocess.STDOUT,
                                  preexec_fn=lambda: pin(other_cpus()))
        try:
            time.sleep(0.5)
            make_session("bench-bare", port)
            config = gateway_config(port, workdir)
            asyncio.run(run_gateway(config, 0, 10))  # creates the gateway's session and schema
            bare_rates, gateway_rates = [], []
            for round_no in range(args.rounds):
                first = round_no * args.events // len(NODES) + 1
                items = [(NODES[i % len(NODES)], first + i // len(NODES)) for i in range(args.events)]
                console.print(f"burst {round_no + 1}/{args.rounds}: queueing {args.events:,} events for two offline "
                              "persistent sessions, then draining each...")
                proc = run_publisher(port, items, 0, stamp=False)
                proc.join()
                default_gc()
                bare_rates.append(args.events / BareSubscriber(port, args.events, latency=False).run(300))
                gateway_s, stored = asyncio.run(run_gateway(config, args.events, 300))
                if stored != args.events:
                    raise RuntimeError(f"gateway stored {stored} of {args.events}")
                gateway_rates.append(args.events / gateway_s)
                console.print(f"  bare {bare_rates[-1]:,.0f}/s, gateway {gateway_rates[-1]:,.0f}/s")

            n_lat = int(args.rate * args.seconds)
            lat_items = [(NODES[i % len(NODES)], args.rounds * args.events // len(NODES) + 1 + i // len(NODES))
                         for i in range(n_lat)]
            console.print(f"latency: {args.rate:.0f} events/s for {args.seconds:.0f} s, bare subscriber then gateway...")
            default_gc()
            bare = BareSubscriber(port, n_lat, latency=True)
            bare.client.connect("127.0.0.1", port, clean_start=False, properties=connect_props())
            bare.client.loop_start()
            time.sleep(0.3)
            proc = run_publisher(port, lat_items, args.rate, stamp=True)
            if not bare.done.wait(args.seconds * 3 + 30):
                raise RuntimeError("bare subscriber did not receive the latency run")
            bare.client.disconnect()
            bare.client.loop_stop()
            proc.join()

            gw_lat: list[float] = []
            lat_items2 = [(n, s + n_lat) for n, s in lat_items]

            async def latency_run() -> None:
                gateway = Gateway(config, on_commit=lambda b: gw_lat.extend(
                    time.time() - i.event.ts.timestamp() for i in b))
                stop, ready = asyncio.Event(), asyncio.Event()
                task = asyncio.create_task(gateway.run(stop, ready))
                await ready.wait()
                await asyncio.to_thread(gateway.link.wait_connected, 10)
                counters = gateway.ingestor.counters
                while counters.stored < n_lat:  # what queued for our session during the bare run
                    await asyncio.sleep(0.05)
                await asyncio.sleep(0.3)
                gw_lat.clear()
                publisher = run_publisher(port, lat_items2, args.rate, stamp=True)
                deadline = time.perf_counter() + args.seconds * 3 + 30
                while len(gw_lat) < n_lat and time.perf_counter() < deadline:
                    await asyncio.sleep(0.05)
                await asyncio.to_thread(publisher.join)
                stop.set()
                await task

            asyncio.run(latency_run())
            if len(gw_lat) < n_lat:
                raise RuntimeError(f"gateway committed {len(gw_lat)} of {n_lat} in the latency run")
        finally:
            broker.terminate()
            broker.wait(10)

    bare_rate = statistics.median(bare_rates)
    gateway_rate = statistics.median(gateway_rates)
    figures = {
        "gateway_events_per_s": round(gateway_rate),
        "bare_subscriber_events_per_s": round(bare_rate),
        "p50_ms": round(percentile(gw_lat, 50), 2),
        "p99_ms": round(percentile(gw_lat, 99), 2),
    }
    table = Table(title=f"gateway ingest vs a bare paho subscriber (Mosquitto, one core, {args.events:,}-event burst)")
    for column in ("measure", "bare subscriber", "gateway (validated + committed)", "gateway / bare"):
        table.add_column(column, justify="right")
    table.add_row(f"burst drain, events/s (median of {args.rounds})", f"{bare_rate:,.0f}", f"{gateway_rate:,.0f}",
                  f"{gateway_rate / bare_rate:.0%}")
    table.add_row("  range over rounds", f"{min(bare_rates):,.0f}-{max(bare_rates):,.0f}",
                  f"{min(gateway_rates):,.0f}-{max(gateway_rates):,.0f}", "")
    table.add_row(f"p50 latency @ {args.rate:.0f}/s, ms", f"{percentile(bare.latencies, 50):.2f}",
                  f"{figures['p50_ms']:.2f}", "")
    table.add_row(f"p99 latency @ {args.rate:.0f}/s, ms", f"{percentile(bare.latencies, 99):.2f}",
                  f"{figures['p99_ms']:.2f}", "")
    console.print(table)
    console.print("latency: bare = publish to on_message; gateway = publish to batch commit")
    print("BENCH " + json.dumps(figures))


if __name__ == "__main__":
    main()
