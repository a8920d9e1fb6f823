"""`omnisense sim eval`: what the gateway stored, compared with what really happened.

Pure over two inputs, the gateway's events (as dicts) and the ground truth, so it is tested
directly; the CLI only reads the database and prints.
"""

from __future__ import annotations

import json
from dataclasses import asdict, dataclass
from datetime import datetime
from pathlib import Path
from typing import Any

import numpy as np

from firmware_sim.truth import Truth


@dataclass
class Metric:
    name: str
    system: float
    truth: float
    error: float          # system - truth, or a mean absolute error where `kind` says so
    kind: str = "difference"

    @property
    def accuracy(self) -> float | None:
        if self.kind != "difference" or self.truth == 0:
            return None
        return 1.0 - abs(self.system - self.truth) / abs(self.truth)


def load_events(db_path: Path, store_nodes: set[str] | None = None) -> list[dict[str, Any]]:
    from gateway.store import open_db

    if not db_path.exists():
        raise FileNotFoundError(f"{db_path}: no such gateway database")
    db = open_db(db_path, readonly=True)
    try:
        rows = db.query("SELECT node_id, kind, ts, payload FROM events ORDER BY ts, id")
        return [{**json.loads(r["payload"]), "kind": r["kind"]} for r in rows
                if store_nodes is None or r["node_id"] in store_nodes]
    finally:
        db.conn.close()


def evaluate(events: list[dict[str, Any]], truth: Truth, counting_node: str) -> list[Metric]:
    start, end = truth.run["start"], truth.run["end"]

    def ts(event: dict[str, Any]) -> float:
        return datetime.fromisoformat(event["ts"]).timestamp()

    counts = [e for e in events if e["kind"] == "counts" and e["node_id"] == counting_node]
    presence = [e for e in events if e["kind"] == "presence"]
    ins, outs = truth.crossings()
    ins_w, outs_w = ins[(ins >= start) & (ins < end)], outs[(outs >= start) & (outs < end)]
    metrics = [
        Metric("entries (line in)", sum(e["line_in"] for e in counts), len(ins_w), 0),
        Metric("exits (line out)", sum(e["line_out"] for e in counts), len(outs_w), 0),
    ]
    if counts:
        when = np.array([ts(e) for e in counts])
        occupancy = np.array([e["occupancy"] for e in counts])
        true_occ = truth.occupancy(when)
        metrics.append(Metric("occupancy MAE per report", float(occupancy.mean()), float(true_occ.mean()),
                              float(np.abs(occupancy - true_occ).mean()), "mae"))
        entries = max(1, metrics[0].system)
        interval = float(np.median([e["interval_s"] for e in counts]))
        # Little's law: time in store per entry = time-integral of occupancy / entries. The truth is
        # the same quantity from the true visits, clipped to the run, so a short run compares fairly.
        system_dwell = float(occupancy.sum() * interval / entries)
        inside = sum(max(0.0, min(v["exited"], end) - max(v["entered"], start)) for v in truth.walk_ins)
        true_dwell = inside / max(1, len(ins_w))
        metrics.append(Metric("time in store per entry s", system_dwell, true_dwell, 0))
        for zone in sorted({z for e in counts for z in e["zones"]}):
            seen = np.array([e["zones"].get(zone, 0) for e in counts])
            metrics.append(Metric(f"people in {zone} MAE", float(seen.mean()),
                                  float(truth.in_zone(zone, when).mean()),
                                  float(np.abs(seen - truth.in_zone(zone, when)).mean()), "mae"))
    with_phone = {v["visitor_id"] for v in truth.walk_ins if v["has_phone"]}
    for zone in sorted({s["zone"] for v in truth.walk_ins for s in v["stays"]}):
        stays = [s for v in truth.walk_ins if v["visitor_id"] in with_phone for s in v["stays"]
                 if s["zone"] == zone and start <= s["enter"] < end]
        enters = [e for e in presence if e["zone"] == zone and e["action"] == "enter"]
        exits = [e for e in presence if e["zone"] == zone and e["action"] == "exit"]
        metrics.append(Metric(f"{zone}: phone visits", len(enters), len(stays), 0))
        done = [s["dwell_s"] for s in stays if s["exit"] < end]
        if done and exits:
            metrics.append(Metric(f"{zone}: mean dwell s", float(np.mean([e["dwell_s"] for e in exits])),
                                  float(np.mean(done)), 0))
    for m in metrics:
        if m.kind == "difference":
            m.error = m.system - m.truth
    return metrics


def as_json(metrics: list[Metric]) -> str:
    return json.dumps({"metrics": [{**asdict(m), "accuracy": m.accuracy} for m in metrics]})
