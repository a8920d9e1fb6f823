"""How well the people counter counts a busy simulated door, against exact truth.

Scenes: `firmware_sim.entrance.busy_door` (groups of two and three side by side and in file, in and
out at once, people stopping at the line and going on or stepping back, people turning round,
passers-by, shadows, noise, the lights switched), rendered at 320x240 and 10 frames/s from the two
door cameras: "overhead" (3.2 m above the door line, looking down) and "oblique" (3.5 m inside,
3 m up, looking at the door at 40 degrees). The counter is the production `VisionPipeline` with the
settings an installer would enter for each camera (`EntranceScene.counter_settings()`).

Per camera and seed: crossings in and out counted and true, count accuracy (1 - |system - truth| /
truth) and event F1 (a counted crossing matches a true one of the same direction within 1.5 s). Both
matter: a count can come out right while misses and false counts cancel, which only F1 shows.
The tests assert the overhead figure for seed 1 (tests/test_vision_entrance.py).

For the oblique camera two bounds are added: the same tracker and counter fed every person's true box
("perfect"), and only the true boxes of people at most half hidden by a nearer person ("perfect,
visible"): what a detector that has to see someone could count at best from this pose.

Usage: python bench/vision_entrance.py [--seeds 1,2,3] [--parties 150] [--cameras overhead,oblique] [--no-bounds]
       [--mean-gap 1.0]
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path

import numpy as np
from rich.console import Console
from rich.table import Table
from scipy.optimize import linear_sum_assignment

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from edge.vision.counter import VisionPipeline, VisionSettings  # noqa: E402
from edge.vision.detect import Detections  # noqa: E402
from firmware_sim.entrance import busy_door  # noqa: E402
from firmware_sim.plan import load_plan  # noqa: E402

PLAN = Path(__file__).resolve().parents[1] / "config" / "store.example.yaml"


def matched(system: list[float], truth: list[float], tolerance_s: float = 1.5) -> int:
    if not system or not truth:
        return 0
    d = np.abs(np.array(system)[:, None] - np.array(truth)[None, :])
    rows, cols = linear_sum_assignment(np.where(d <= tolerance_s, d, 1e9))
    return int(sum(d[r, c] <= tolerance_s for r, c in zip(rows, cols)))


DETECTORS = {
    "blobs": None,                    # the production detector on the rendered frames
    "perfect": 1.0,                   # every person's true box, even when hidden behind someone
    "perfect, visible": 0.5,          # true boxes of people at most half hidden by a nearer person
}


def run(camera: str, seed: int, parties: int, detector: str = "blobs", mean_gap_s: float = 1.0) -> dict:
    """Count one scene; `detector` other than "blobs" feeds the same tracker and counter true boxes
    (an upper bound for the oblique view: what tracking and counting lose with a perfect detector)."""
    scene = busy_door(load_plan(PLAN), camera, parties=parties, seed=seed, mean_gap_s=mean_gap_s)
    truth = scene.truth()
    pipe = VisionPipeline(VisionSettings(**scene.counter_settings()))
    when: dict[str, list[float]] = {"in": [], "out": []}
    frames = 0
    t0 = time.perf_counter()
    if detector == "blobs":
        counted = ((index, t, pipe.process(frame, index)) for index, t, frame in scene.frames())
    else:
        size = (scene.renderer.camera.height, scene.renderer.camera.width)
        counted = ((i + 1, t, pipe.process_detections(
            Detections.from_boxes(scene.person_boxes(t, DETECTORS[detector])), i + 1, size))
            for i, t in enumerate(np.arange(int(scene.duration_s * scene.fps)) / scene.fps))
    for index, t, result in counted:
        frames += 1
        for c in result.crossings:
            when[pipe.line.in_out(c.direction)].append(float(t))
    out = {"camera": camera, "detector": detector, "seed": seed, "frames": frames, "seconds": time.perf_counter() - t0}
    for d in ("in", "out"):
        true = [t for t, _, k in truth.crossings if k == d]
        m = matched(when[d], true)
        out[d] = {"system": len(when[d]), "truth": len(true),
                  "count_accuracy": 1 - abs(len(when[d]) - len(true)) / len(true),
                  "f1": 2 * m / (len(when[d]) + len(true))}
    return out


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--seeds", default="1,2,3")
    ap.add_argument("--parties", type=int, default=150)
    ap.add_argument("--cameras", default="overhead,oblique")
    ap.add_argument("--no-bounds", action="store_true", help="Skip the perfect-detector rows for the oblique camera.")
    ap.add_argument("--mean-gap", type=float, default=1.0,
                    help="busy_door's mean_gap_s (firmware_sim.entrance): 1 gives about 0.55 crossings a second, a very "
                         "busy door; 5 about 0.25, a steady one.")
    args = ap.parse_args()
    console = Console(width=140)
    results = []
    table = Table(title=f"simulated door, {args.parties} parties per scene, busy_door mean_gap_s={args.mean_gap:g}")
    for c in ("camera", "detector", "seed", "in: counted/true", "acc.", "F1", "out: counted/true", "acc.", "F1", "frames"):
        table.add_column(c, justify="right")
    for camera in args.cameras.split(","):
        detectors = ["blobs"] if camera == "overhead" or args.no_bounds else list(DETECTORS)
        for detector in detectors:
            for seed in (int(s) for s in args.seeds.split(",")):
                r = run(camera, seed, args.parties, detector, args.mean_gap)
                results.append(r)
                i, o = r["in"], r["out"]
                table.add_row(camera, detector, str(seed), f"{i['system']}/{i['truth']}",
                              f"{100 * i['count_accuracy']:.1f}%", f"{i['f1']:.3f}", f"{o['system']}/{o['truth']}",
                              f"{100 * o['count_accuracy']:.1f}%", f"{o['f1']:.3f}", str(r["frames"]))
    console.print(table)
    summary: dict[str, float] = {"mean_gap_s": args.mean_gap}
    for camera in args.cameras.split(","):
        for detector in DETECTORS:
            rs = [r for r in results if r["camera"] == camera and r["detector"] == detector]
            if not rs:
                continue
            key = camera if detector == "blobs" else f"{camera}_{detector.replace(', ', '_')}"
            for d in ("in", "out"):
                error = sum(abs(r[d]["system"] - r[d]["truth"]) for r in rs)  # per scene, so errors do not cancel
                true = sum(r[d]["truth"] for r in rs)
                summary[f"{key}_{d}_count_accuracy"] = round(1 - error / true, 4)
                summary[f"{key}_{d}_min_count_accuracy"] = round(min(r[d]["count_accuracy"] for r in rs), 4)
                summary[f"{key}_{d}_min_f1"] = round(min(r[d]["f1"] for r in rs), 4)
    print("BENCH " + json.dumps(summary))


if __name__ == "__main__":
    main()
