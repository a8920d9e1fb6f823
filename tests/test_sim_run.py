"""`omnisense sim` end to end: simulated nodes publish through a real Mosquitto into the real gateway,
and `omnisense sim eval` scores what was stored against the ground truth."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

from edge.protocol import Channel, decode_event, parse_topic
from firmware_sim.eventsim import build_replicas, merged
from firmware_sim.plan import load_plan
from firmware_sim.truth import Truth

ROOT = Path(__file__).resolve().parents[1]
PLAN = ROOT / "config" / "store.example.yaml"
START = "2026-11-21T10:00:00+01:00"


def _omnisense(*args: str, timeout: float = 240) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-m", "omnisense.cli", *args], capture_output=True, text=True,
                          timeout=timeout, env={"COLUMNS": "200", "PATH": "/usr/bin:/bin:/usr/sbin"})


def test_event_level_events_follow_the_contract_in_time_order() -> None:
    plan = load_plan(PLAN)
    start = 1795255200.0
    replicas = build_replicas(plan, 25, seed=3, start=start, end=start + 900)
    assert [r.store_id for r in replicas] == ["demo-store", "demo-store-0001", "demo-store-0002"]
    assert [len(r.nodes) for r in replicas] == [10, 10, 5]
    last, seqs = 0.0, {}
    for when, replica, row in merged(replicas, start, start + 900):
        assert when >= last
        last = when
        name, payload = replica.render(row)
        store, node, channel = parse_topic(name)
        assert store == replica.store_id
        event = decode_event(channel, node, payload, 4096)
        assert event.seq == seqs.get((store, node), 0) + 1
        seqs[(store, node)] = event.seq
        if channel is Channel.PRESENCE:
            assert event.source in ("app", "ble")
    for replica in replicas:
        assert (replica.store_id, "door-cam") in seqs, "every store's counting camera reports"
    assert not any(node == "back-office" for _, node in seqs), "a node with no zone and no camera stays silent"


def test_sim_runs_a_store_through_mosquitto_and_the_gateway_and_scores_it(mosquitto, tmp_path: Path) -> None:
    out = tmp_path / "sim"
    run = _omnisense("sim", "--store", str(PLAN), "--nodes", "20", "--speed", "0", "--duration", "1200",
                     "--start", START, "--broker", mosquitto.url, "--out", str(out))
    assert run.returncode == 0, run.stdout + run.stderr
    assert "2 store(s), 20 nodes" in run.stdout
    assert "stored all" in run.stdout
    truth = Truth.load(out / "truth.jsonl")
    assert truth.run["store_id"] == "demo-store" and truth.walk_ins

    scored = _omnisense("sim", "eval", "--truth", str(out / "truth.jsonl"), "--db", str(out / "gateway.db"),
                        "--store", str(PLAN), "--json")
    assert scored.returncode == 0, scored.stderr
    metrics = {m["name"]: m for m in json.loads(scored.stdout)["metrics"]}
    ins, _ = truth.crossings()
    true_entries = int(((ins >= truth.run["start"]) & (ins < truth.run["end"])).sum())
    assert metrics["entries (line in)"]["truth"] == true_entries > 0
    # Event level emits what perfect edge processing would: the gateway must hold exactly the truth.
    assert metrics["entries (line in)"]["system"] == true_entries
    assert metrics["occupancy MAE per report"]["error"] == 0
    visits = [m for name, m in metrics.items() if name.endswith("phone visits")]
    assert visits and all(m["system"] == m["truth"] for m in visits)


def test_sim_eval_explains_a_missing_database(tmp_path: Path) -> None:
    scored = _omnisense("sim", "eval", "--truth", str(tmp_path / "t.jsonl"), "--db", str(tmp_path / "none.db"))
    assert scored.returncode == 2
    assert "no such gateway database" in scored.stderr


def test_sim_rejects_a_bad_plan(tmp_path: Path) -> None:
    bad = tmp_path / "store.yaml"
    bad.write_text(PLAN.read_text().replace("capture_rate: 0.3", "capture_rate: 3"))
    run = _omnisense("sim", "--store", str(bad))
    assert run.returncode == 2
    assert "traffic.capture_rate" in run.stderr
