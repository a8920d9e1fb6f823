"""The ground-truth log of a simulated run: who came, when, with which phone, where they went.

JSON Lines: one `run` record, then one `visitor` record per person and one `device` record per
phone or store device. Times are UTC epoch seconds. The log is for evaluation only; it never
travels the node-to-gateway path.
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from firmware_sim.phones import Phone
from firmware_sim.shoppers import Visitor


def write_truth(path: Path, run: dict[str, Any], visitors: list[Visitor], phones: list[Phone]) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    with open(path, "w") as out:
        out.write(json.dumps({"type": "run", **run}) + "\n")
        for v in visitors:
            out.write(json.dumps({
                "type": "visitor", "visitor_id": v.visitor_id, "party_id": v.party_id, "party_size": v.party_size,
                "kind": v.kind, "segment": v.segment, "has_phone": v.has_phone, "has_app": v.has_app,
                "entered": v.entered, "exited": v.exited, "appeared": v.track.t0, "left_view": v.track.t1,
                "stays": [{"zone": s.zone, "enter": s.enter, "exit": s.exit, "dwell_s": round(s.dwell_s, 3)}
                          for s in v.stays],
            }) + "\n")
        for p in phones:
            out.write(json.dumps({
                "type": "device", "label": p.label, "visitor_id": p.visitor_id, "platform": p.platform,
                "has_app": p.has_app, "identity_key": p.identity_key.hex() if p.identity_key else None,
                "beacon_offset": p.beacon_offset, "randomized_mac": p.randomized,
            }) + "\n")


@dataclass
class Truth:
    run: dict[str, Any]
    visitors: list[dict[str, Any]] = field(default_factory=list)
    devices: list[dict[str, Any]] = field(default_factory=list)

    @classmethod
    def load(cls, path: Path) -> Truth:
        truth: Truth | None = None
        with open(path) as lines:
            for number, line in enumerate(lines, 1):
                try:
                    record = json.loads(line)
                    kind = record.pop("type")
                except (ValueError, KeyError) as err:
                    raise ValueError(f"{path}:{number}: not a ground-truth record: {err}") from None
                if kind == "run":
                    truth = cls(record)
                elif truth is None:
                    raise ValueError(f"{path}:{number}: the first record must be the run record")
                elif kind == "visitor":
                    truth.visitors.append(record)
                elif kind == "device":
                    truth.devices.append(record)
        if truth is None:
            raise ValueError(f"{path}: empty ground-truth log")
        return truth

    @property
    def walk_ins(self) -> list[dict[str, Any]]:
        return [v for v in self.visitors if v["kind"] == "walk_in"]

    def crossings(self) -> tuple[np.ndarray, np.ndarray]:
        """Sorted times of true entries and exits through the counting line."""
        ins = np.sort([v["entered"] for v in self.walk_ins])
        outs = np.sort([v["exited"] for v in self.walk_ins])
        return ins, outs

    def occupancy(self, when: np.ndarray) -> np.ndarray:
        ins, outs = self.crossings()
        return np.searchsorted(ins, when, side="right") - np.searchsorted(outs, when, side="right")

    def in_zone(self, zone: str, when: np.ndarray) -> np.ndarray:
        stays = [(s["enter"], s["exit"]) for v in self.walk_ins for s in v["stays"] if s["zone"] == zone]
        if not stays:
            return np.zeros(len(when), dtype=int)
        enter = np.sort([a for a, _ in stays])
        leave = np.sort([b for _, b in stays])
        return np.searchsorted(enter, when, side="right") - np.searchsorted(leave, when, side="right")
