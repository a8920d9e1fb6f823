"""`omnisense sim`: many simulated nodes (event level) against one broker, with the gateway of the
first store, progress, a ground-truth log, and the evaluation at the end."""

from __future__ import annotations

import asyncio
import shutil
import threading
import time
from dataclasses import dataclass, field
from pathlib import Path

from rich.console import Console
from rich.progress import BarColumn, Progress, TextColumn, TimeElapsedColumn
from rich.table import Table

from edge.mqtt import MqttLink
from edge.protocol import Channel, NodeStatus, encode, topic, utcnow
from edge.settings import MqttSettings
from firmware_sim.evaluate import Metric, evaluate, load_events
from firmware_sim.eventsim import StoreReplica, build_replicas, merged
from firmware_sim.plan import StorePlan
from firmware_sim.truth import Truth, write_truth
from gateway.broker import EmbeddedBroker, MosquittoProcess, find_mosquitto
from gateway.config import ApiSettings, GatewayConfig, KnownNode
from gateway.service import Gateway
from gateway.store import node_rows, open_db

MAX_OUTSTANDING = 20_000  # unacknowledged QoS 1 publishes; well below paho's 16-bit message ids


@dataclass
class SimSettings:
    plan: StorePlan
    nodes: int
    speed: float
    duration_s: float
    start: float
    seed: int = 1
    broker_url: str | None = None
    gateway: bool = True
    out_dir: Path = Path(".sim")


@dataclass
class PublishStats:
    published: int = 0
    acknowledged: int = 0
    sim_time: float = 0.0
    per_store: dict[str, int] = field(default_factory=dict)
    done: threading.Event = field(default_factory=threading.Event)
    error: str | None = None


class Publisher:
    """Publishes the replicas' events over one MQTT connection, paced by the simulated clock."""

    def __init__(self, settings: SimSettings, replicas: list[StoreReplica], mqtt: MqttSettings) -> None:
        self.settings, self.replicas = settings, replicas
        self.stats = PublishStats()
        self._lock = threading.Lock()
        self.link = MqttLink(mqtt, client_id=f"omnisense-sim-{replicas[0].boot_id}", max_inflight=1000,
                             on_published=self._on_published)

    def _on_published(self, _mid: int, _ok: bool) -> None:
        with self._lock:
            self.stats.acknowledged += 1

    def _status(self, replica: StoreReplica, state: str) -> None:
        for i, node in enumerate(replica.nodes):
            status = NodeStatus(node_id=node.node_id, boot_id=replica.boot_id, ts=utcnow(), state=state,  # type: ignore[arg-type]
                                last_seq=replica.seq[i])
            self._publish(topic(replica.store_id, node.node_id, Channel.STATUS), encode(status), retain=True)

    def _publish(self, name: str, payload: bytes, retain: bool = False) -> None:
        while self.stats.published - self.stats.acknowledged > MAX_OUTSTANDING:
            time.sleep(0.002)
        self.link.publish(name, payload, retain=retain)
        self.stats.published += 1

    def run(self) -> None:
        s = self.settings
        try:
            self.link.start()
            if not self.link.wait_connected(15):
                raise ConnectionError(f"cannot connect to the broker: {self.link.last_error or 'no answer'}")
            for replica in self.replicas:
                self._status(replica, "online")
            wall0 = time.monotonic()
            end = s.start + s.duration_s
            for when, replica, row in merged(self.replicas, s.start, end):
                if s.speed > 0:
                    delay = (when - s.start) / s.speed - (time.monotonic() - wall0)
                    if delay > 0:
                        time.sleep(delay)
                name, payload = replica.render(row)
                self._publish(name, payload)
                self.stats.per_store[replica.store_id] = self.stats.per_store.get(replica.store_id, 0) + 1
                self.stats.sim_time = when
            self.stats.sim_time = end
            for replica in self.replicas:
                self._status(replica, "offline")
            deadline = time.monotonic() + 30
            while self.stats.acknowledged < self.stats.published and time.monotonic() < deadline:
                time.sleep(0.05)
        except Exception as err:  # reported to the user by the runner
            self.stats.error = str(err)
        finally:
            self.link.stop()
            self.stats.done.set()


def _stored(db_path: Path) -> int:
    db = open_db(db_path, readonly=True)
    try:
        return sum(r["stored"] or 0 for r in node_rows(db))
    finally:
        db.conn.close()


def metrics_table(metrics: list[Metric], title: str) -> Table:
    table = Table(title=title)
    for column in ("metric", "system", "truth", "error", "accuracy"):
        table.add_column(column, justify="left" if column == "metric" else "right")
    for m in metrics:
        accuracy = m.accuracy
        table.add_row(m.name, f"{m.system:.2f}".rstrip("0").rstrip("."), f"{m.truth:.2f}".rstrip("0").rstrip("."),
                      f"{m.error:+.2f}" if m.kind == "difference" else f"{m.error:.2f}",
                      f"{accuracy:.1%}" if accuracy is not None else "-")
    return table


async def run_sim(settings: SimSettings, console: Console) -> bool:
    out = settings.out_dir
    shutil.rmtree(out, ignore_errors=True)
    out.mkdir(parents=True)
    end = settings.start + settings.duration_s
    with console.status(f"Simulating shoppers for {settings.nodes} nodes..."):
        replicas = build_replicas(settings.plan, settings.nodes, settings.seed, settings.start, end)
    first = replicas[0]
    truth_path = out / "truth.jsonl"
    write_truth(truth_path, {"store_id": first.store_id, "seed": first.seed, "start": settings.start, "end": end},
                first.visitors, first.phones)
    scheduled = sum(len(r.t) for r in replicas)
    console.print(f"{len(replicas)} store(s), {settings.nodes} nodes, {scheduled:,} events over "
                  f"{settings.duration_s / 60:.0f} simulated minutes at {settings.speed:g}x. Ground truth: {truth_path}")

    broker: MosquittoProcess | EmbeddedBroker | None = None
    url = settings.broker_url
    if url is None:
        if find_mosquitto():
            broker = MosquittoProcess(out)
            broker.start()
            console.print(f"Private Mosquitto on [bold]{broker.url}[/]")
        else:
            broker = EmbeddedBroker()
            await broker.start()
            console.print(f"Embedded MQTT broker (amqtt; install mosquitto for more speed) on [bold]{broker.url}[/]")
        url = broker.url
    mqtt = MqttSettings(url=url)

    gateway = None
    db_path = out / "gateway.db"
    gateway_stop, ready = asyncio.Event(), asyncio.Event()
    gateway_task = None
    if settings.gateway:
        zone_of = {n.node_id: n.zone for n in first.nodes}
        gateway = Gateway(GatewayConfig(store_id=first.store_id, db_path=db_path, mqtt=mqtt, api=ApiSettings(port=0),
                                        nodes=[KnownNode(node_id=n, zone=z) for n, z in zone_of.items()]))
        gateway_task = asyncio.create_task(gateway.run(gateway_stop, ready))
        await ready.wait()
        console.print(f"Gateway of {first.store_id}: [bold]{gateway.url}[/]")

    publisher = Publisher(settings, replicas, mqtt)
    thread = threading.Thread(target=publisher.run, name="sim-publisher", daemon=True)
    wall0 = time.monotonic()
    thread.start()
    stats = publisher.stats
    columns = (TextColumn("[progress.description]{task.description}"), BarColumn(),
               TextColumn("{task.percentage:>3.0f}%"), TextColumn("{task.fields[info]}"), TimeElapsedColumn())
    with Progress(*columns, console=console, transient=False) as progress:
        task = progress.add_task("simulated time", total=settings.duration_s, info="")
        while not stats.done.is_set():
            elapsed = max(1e-6, time.monotonic() - wall0)
            sim_done = max(0.0, stats.sim_time - settings.start)
            progress.update(task, completed=sim_done,
                            info=f"{stats.published:,} published, {stats.acknowledged:,} acked, "
                                 f"{sim_done / elapsed:,.0f}x real time")
            await asyncio.sleep(0.25)
        progress.update(task, completed=settings.duration_s)
    wall = time.monotonic() - wall0
    thread.join()
    ok = stats.error is None
    if stats.error:
        console.print(f"[bold red]error:[/] {stats.error}")
    console.print(f"Published {stats.published:,} messages in {wall:.1f} s "
                  f"({settings.duration_s / wall:,.1f} simulated s per wall s, {stats.published / wall:,.0f} msg/s).")

    if gateway is not None and gateway_task is not None:
        expected = stats.per_store.get(first.store_id, 0)
        deadline = time.monotonic() + 30
        while _stored(db_path) < expected and time.monotonic() < deadline:
            await asyncio.sleep(0.2)
        stored = _stored(db_path)
        gateway_stop.set()
        await gateway_task
        if stored < expected:
            console.print(f"[bold red]The gateway stored {stored:,} of {expected:,} events of {first.store_id}.[/]")
            ok = False
        else:
            console.print(f"The gateway of {first.store_id} stored all {stored:,} of its events: {db_path}")
        metrics = evaluate(load_events(db_path), Truth.load(truth_path), settings.plan.counting_node().node_id)
        console.print(metrics_table(metrics, f"{first.store_id}: gateway vs ground truth"))
    if isinstance(broker, MosquittoProcess):
        broker.stop()
    elif broker is not None:
        await broker.stop()
    return ok
