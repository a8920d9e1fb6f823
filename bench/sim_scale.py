"""How fast the simulator runs, on one core.

- Sensor level: the example ten-node store on a busy Friday evening: every BLE advert and probe
  request each node hears (handed over as bleak's types and raw radiotap bytes), and every camera
  frame at the configured resolution and rate. Reported as simulated seconds per wall second, beside
  the real-time requirement (1.0).
- Event level: 1, 10, 100 and 1,000 nodes (stores of ten replicated) publishing the events the edge
  would produce, through a private Mosquitto on the other core, as fast as they go. The speed-up
  over real time times the node count is how many nodes one core drives at real time. Beside it, in
  the same run, a bare paho client publishing the same number of pre-built payloads: the ceiling
  of one Python MQTT connection on this machine.

Usage: python bench/sim_scale.py [--sensor-seconds 120] [--event-seconds 300]
"""

from __future__ import annotations

import argparse
import datetime as dt
import json
import os
import sys
import tempfile
import threading
import time
from pathlib import Path

import cv2
import paho.mqtt.client as paho
from rich.console import Console
from rich.table import Table

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from bench.support.timing import pin  # noqa: E402
from edge.settings import MqttSettings  # noqa: E402
from firmware_sim.eventsim import build_replicas, merged  # noqa: E402
from firmware_sim.plan import load_plan  # noqa: E402
from firmware_sim.sources import RadioFeed, SimCapture, to_bleak  # noqa: E402
from firmware_sim.world import World  # noqa: E402
from gateway.broker import MosquittoProcess  # noqa: E402
from omnisense.sim import Publisher, SimSettings  # noqa: E402

PLAN = Path(__file__).resolve().parents[1] / "config" / "store.example.yaml"
BENCH_CPU = 0
FRIDAY_EVENING = dt.datetime(2026, 11, 20, 16, 0, tzinfo=dt.UTC).timestamp()   # 17:00 local, the busiest hour
WARMUP_S = 1800.0   # shoppers arrive from half an hour earlier, so the store is busy from the first second


def sensor_level(seconds: float) -> dict[str, float]:
    plan = load_plan(PLAN)
    world = World(plan, 1, FRIDAY_EVENING, FRIDAY_EVENING + seconds, warmup_s=WARMUP_S)
    feed = RadioFeed(world)
    for node in range(len(plan.nodes)):
        feed.subscribe(node)
    cameras = [SimCapture(world, n.node_id) for n in plan.nodes if n.camera]
    adverts = probes = frames = 0
    radio_s = camera_s = 0.0
    wall0 = time.perf_counter()
    t = FRIDAY_EVENING
    while t < world.end:
        a = time.perf_counter()
        feed.advance()
        for queue in feed.ble.values():
            while queue:
                to_bleak(queue.popleft())
                adverts += 1
        for queue in feed.wifi.values():
            probes += len(queue)
            queue.clear()
        b = time.perf_counter()
        for capture in cameras:
            while capture.get(cv2.CAP_PROP_POS_FRAMES) / capture.fps < t + 1 - world.start:
                ok, _ = capture.read()
                if not ok:
                    break
                frames += 1
        camera_s += time.perf_counter() - b
        radio_s += b - a
        t += 1.0
    wall = time.perf_counter() - wall0
    return {"sim_s": seconds, "wall_s": wall, "speed": seconds / wall, "adverts": adverts, "probes": probes,
            "frames": frames, "radio_s": radio_s, "camera_s": camera_s, "visitors": len(world.figures(FRIDAY_EVENING + seconds / 2))}


def event_level(nodes: int, seconds: float, url: str) -> dict[str, float]:
    plan = load_plan(PLAN)
    a = time.perf_counter()
    settings = SimSettings(plan=plan, nodes=nodes, speed=0, duration_s=seconds, start=FRIDAY_EVENING, seed=1)
    replicas = build_replicas(plan, nodes, 1, FRIDAY_EVENING, FRIDAY_EVENING + seconds, warmup_s=WARMUP_S)
    build = time.perf_counter() - a
    publisher = Publisher(settings, replicas, MqttSettings(url=url))
    b = time.perf_counter()
    publisher.run()
    wall = time.perf_counter() - b
    if publisher.stats.error:
        raise RuntimeError(publisher.stats.error)
    events = publisher.stats.published
    return {"nodes": nodes, "events": events, "events_per_node_s": events / nodes / seconds, "build_s": build,
            "wall_s": wall, "speed": seconds / wall, "msg_per_s": events / wall,
            "nodes_at_realtime": nodes * seconds / wall}


def bare_paho(url_port: int, payloads: list[tuple[str, bytes]]) -> float:
    """Publish pre-built payloads at QoS 1 with the same window; returns messages per second."""
    client = paho.Client(paho.CallbackAPIVersion.VERSION2, client_id="bench-bare", protocol=paho.MQTTv5)
    client.max_inflight_messages_set(1000)
    acked = [0]
    done = threading.Event()

    def on_publish(*_: object) -> None:
        acked[0] += 1
        if acked[0] == len(payloads):
            done.set()

    client.on_publish = on_publish
    client.connect("127.0.0.1", url_port)
    client.loop_start()
    start = time.perf_counter()
    for i, (name, payload) in enumerate(payloads):
        while i - acked[0] > 20_000:
            time.sleep(0.002)
        client.publish(name, payload, qos=1)
    done.wait(120)
    wall = time.perf_counter() - start
    client.disconnect()
    client.loop_stop()
    return len(payloads) / wall


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--sensor-seconds", type=float, default=120)
    parser.add_argument("--event-seconds", type=float, default=300)
    args = parser.parse_args()
    console = Console(width=170)
    with tempfile.TemporaryDirectory() as tmp:
        broker = MosquittoProcess(Path(tmp))
        broker.start()
        cpus = set(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else {0}
        if broker.proc is not None and hasattr(os, "sched_setaffinity") and len(cpus) > 1:
            os.sched_setaffinity(broker.proc.pid, cpus - {BENCH_CPU})
        pin({BENCH_CPU})
        try:
            console.print(f"sensor level: ten-node store, {args.sensor_seconds:.0f} simulated s ...")
            sensor = sensor_level(args.sensor_seconds)
            rows = []
            for n in (1, 10, 100, 1000):
                console.print(f"event level: {n} nodes, {args.event_seconds:.0f} simulated s ...")
                rows.append(event_level(n, args.event_seconds, broker.url))
            plan = load_plan(PLAN)
            replicas = build_replicas(plan, 1000, 1, FRIDAY_EVENING, FRIDAY_EVENING + args.event_seconds,
                                      warmup_s=WARMUP_S)
            payloads = [replica.render(row) for _, replica, row in
                        merged(replicas, FRIDAY_EVENING, FRIDAY_EVENING + args.event_seconds)]
            ceiling = bare_paho(broker.port, payloads)
        finally:
            broker.stop()

    table = Table(title="Sensor level, one core: the example store (10 nodes, 2 cameras 640x480 @ 10 fps)")
    for column in ("simulated s", "wall s", "sim s / wall s", "real-time need", "people", "adverts heard",
                   "probe frames heard", "frames rendered", "radio s", "camera s"):
        table.add_column(column, justify="right")
    table.add_row(f"{sensor['sim_s']:.0f}", f"{sensor['wall_s']:.1f}", f"{sensor['speed']:.2f}", "1.00",
                  str(sensor["visitors"]), f"{sensor['adverts']:,}", f"{sensor['probes']:,}", f"{sensor['frames']:,}",
                  f"{sensor['radio_s']:.1f}", f"{sensor['camera_s']:.1f}")
    console.print(table)
    table = Table(title="Event level, one core, Mosquitto on the other core")
    for column in ("nodes", "events", "events/node/s", "build s", "publish wall s", "sim s / wall s", "msg/s",
                   "nodes at real time"):
        table.add_column(column, justify="right")
    for r in rows:
        table.add_row(str(r["nodes"]), f"{r['events']:,}", f"{r['events_per_node_s']:.2f}", f"{r['build_s']:.1f}",
                      f"{r['wall_s']:.1f}", f"{r['speed']:.1f}", f"{r['msg_per_s']:,.0f}",
                      f"{r['nodes_at_realtime']:,.0f}")
    table.add_row("bare paho", f"{len(payloads):,}", "", "", "", "", f"{ceiling:,.0f}", "", style="dim")
    table.caption = ("events include each node's retained online and offline status; the bare paho row publishes "
                     "the 1,000-node events pre-built, without the statuses")
    console.print(table)
    at_1000 = rows[-1]
    figures = {"sensor_level_sim_s_per_wall_s": round(sensor["speed"], 2),
               "event_level_nodes_at_realtime": round(at_1000["nodes_at_realtime"]),
               "event_level_speed_at_1000_nodes": round(at_1000["speed"], 2),
               "event_level_msg_per_s": round(at_1000["msg_per_s"]),
               "bare_paho_msg_per_s": round(ceiling)}
    print("BENCH " + json.dumps(figures))


if __name__ == "__main__":
    main()
