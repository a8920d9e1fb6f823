"""`omnisense demo`: a broker, the gateway and simulated nodes in one process, with live progress."""

from __future__ import annotations

import asyncio
import secrets
import shutil
import time
from dataclasses import dataclass
from pathlib import Path

from rich.console import Console
from rich.live import Live
from rich.table import Table

from edge.config import NodeConfig, PublishSettings, SourceSettings
from edge.mqtt import MqttLink
from edge.node import Node
from edge.protocol import Channel, topic
from edge.settings import MqttSettings
from edge.sources import build_sources
from gateway.broker import EmbeddedBroker
from gateway.config import ApiSettings, GatewayConfig, KnownNode
from gateway.roles import Role
from gateway.service import Gateway
from gateway.store import node_rows, open_db

STORE_ID = "demo-store"
ZONES = ["entrance", "shoes", "apparel", "tills"]


@dataclass
class DemoSettings:
    nodes: int = 3
    duration_s: float = 30.0
    rate_hz: float = 20.0
    broker_url: str | None = None
    api_port: int = 0
    data_dir: Path = Path(".demo")


def _gateway_view(db_path: Path) -> tuple[dict[str, dict], int]:
    """Per-node rows from the gateway's database, and dead letters not attributable to a known node."""
    db = open_db(db_path, readonly=True)
    try:
        rows = {r["node_id"]: r for r in node_rows(db)}
        elsewhere = next(db.query(
            "SELECT count(*) AS n FROM dead_letters WHERE node_id IS NULL"
            " OR node_id NOT IN (SELECT node_id FROM nodes WHERE known)"))["n"]
    finally:
        db.conn.close()
    return rows, elsewhere


def _table(title: str, nodes: list[Node], db_path: Path) -> Table:
    rows, dead_elsewhere = _gateway_view(db_path)
    table = Table(title=title)
    for column in ("node", "zone", "sent", "in outbox", "stored", "duplicates dropped", "gaps", "dead letters"):
        table.add_column(column, justify="left" if column in ("node", "zone") else "right")
    for node in nodes:
        row = rows.get(node.config.node_id, {})
        gaps = sum(b - a + 1 for a, b in row.get("gaps", []))
        table.add_row(node.config.node_id, row.get("zone") or "-", str(node.outbox.last_seq), str(node.outbox.depth),
                      str(row.get("stored", 0)), str(row.get("duplicates", 0)), str(gaps),
                      str(row.get("dead_letters", 0)))
    if dead_elsewhere:
        table.caption = f"+ {dead_elsewhere} dead letters from unknown nodes or topics"
    return table


def _lost(nodes: list[Node], db_path: Path) -> int:
    rows, _ = _gateway_view(db_path)
    return sum(max(0, n.outbox.last_seq - rows.get(n.config.node_id, {}).get("stored", 0)) for n in nodes)


async def _inject_garbage(mqtt: MqttSettings) -> None:
    """Two bad messages, so the demo shows that they are dead-lettered and nothing else is lost."""
    link = MqttLink(mqtt, client_id="omnisense-demo-prankster")
    link.start()
    if await asyncio.to_thread(link.wait_connected, 5):
        link.publish(topic(STORE_ID, "node-1", Channel.PRESENCE), b"this is not json")
        link.publish(topic(STORE_ID, "rogue-node", Channel.COUNTS), b'{"v": 1}')
        await asyncio.sleep(0.5)
    await asyncio.to_thread(link.stop)


async def run_demo(settings: DemoSettings) -> bool:
    console = Console()
    shutil.rmtree(settings.data_dir, ignore_errors=True)
    settings.data_dir.mkdir(parents=True)
    broker = None
    broker_url = settings.broker_url
    if broker_url is None:
        broker = EmbeddedBroker()
        await broker.start()
        broker_url = broker.url
        console.print(f"Embedded MQTT broker (amqtt, MQTT 3.1.1) on [bold]{broker_url}[/]")
    mqtt = MqttSettings(url=broker_url)
    node_ids = [f"node-{i + 1}" for i in range(settings.nodes)]
    gateway_config = GatewayConfig(
        store_id=STORE_ID, db_path=settings.data_dir / "gateway.db", mqtt=mqtt,
        api=ApiSettings(port=settings.api_port),
        nodes=[KnownNode(node_id=n, zone=ZONES[i % len(ZONES)]) for i, n in enumerate(node_ids)],
    )
    gateway = Gateway(gateway_config)
    gateway_stop, ready = asyncio.Event(), asyncio.Event()
    gateway_task = asyncio.create_task(gateway.run(gateway_stop, ready))
    await ready.wait()
    token = gateway.api_tokens.create(Role.INSTALLER, f"demo-{secrets.token_hex(3)}")
    console.print(f"Gateway API: [bold]{gateway.url}[/]  (docs: {gateway.url}/docs)")
    console.print(f"  nodes: curl -H 'Authorization: Bearer {token}' {gateway.url}/api/nodes", highlight=False,
                  soft_wrap=True)

    nodes = []
    for i, node_id in enumerate(node_ids):
        config = NodeConfig(
            store_id=STORE_ID, node_id=node_id, data_dir=settings.data_dir / node_id, mqtt=mqtt,
            publish=PublishSettings(status_interval_s=5, drain_timeout_s=10),
            sources=[SourceSettings(kind="synthetic", options={"rate_hz": settings.rate_hz, "seed": i})],
        )
        nodes.append(Node(config, build_sources(config.sources)))
    node_stop = asyncio.Event()
    node_tasks = [asyncio.create_task(n.run(node_stop)) for n in nodes]
    garbage = asyncio.create_task(_inject_garbage(mqtt))

    started = time.monotonic()
    with Live(console=console, refresh_per_second=4) as live:
        while (elapsed := time.monotonic() - started) < settings.duration_s:
            live.update(_table(f"omnisense demo: {elapsed:4.0f} s of {settings.duration_s:.0f} s", nodes,
                               gateway_config.db_path))
            await asyncio.sleep(0.5)
        node_stop.set()
        live.update(_table("stopping nodes, draining their outboxes...", nodes, gateway_config.db_path))
        await asyncio.gather(*node_tasks, garbage)
        deadline = time.monotonic() + 10
        while _lost(nodes, gateway_config.db_path) and time.monotonic() < deadline:
            await asyncio.sleep(0.2)
        live.update(_table(f"omnisense demo: {settings.nodes} nodes, {settings.duration_s:.0f} s",
                           nodes, gateway_config.db_path))
    lost = _lost(nodes, gateway_config.db_path)
    gateway_stop.set()
    await gateway_task
    if broker is not None:
        await broker.stop()
    sent = sum(n.outbox.last_seq for n in nodes)
    console.print()
    if lost:
        console.print(f"[bold red]{lost} of {sent} events did not reach the gateway.[/]")
    else:
        console.print(f"[bold green]All {sent} events stored exactly once.[/] Database: {gateway_config.db_path}")
    return lost == 0
