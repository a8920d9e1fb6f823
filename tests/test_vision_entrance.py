"""The camera counter on a busy simulated door, against exact truth (firmware_sim.entrance).

What a user checks: people counted in and out by the production counting core (`VisionPipeline`
with the settings an installer would enter for the camera's pose) against the simulator's truth,
on a rendered scene of a few hundred crossings with groups, people stopping at the line, turning
round, passers-by, shadows, noise and the lights switched. Target: count accuracy >= 99% each way.
"""

from __future__ import annotations

from collections import Counter
from pathlib import Path

import numpy as np
import pytest
from scipy.optimize import linear_sum_assignment

from edge.vision.counter import VisionPipeline, VisionSettings
from edge.vision.detect import Detections
from firmware_sim.entrance import busy_door
from firmware_sim.plan import load_plan

PLAN = load_plan(Path(__file__).resolve().parents[1] / "config" / "store.example.yaml")
PARTIES = 150
CROSSINGS_PER_PERSON = {"walk": (1, 0), "pause_go": (1, 0), "pause_back": (0, 0), "turn_round": (1, 1)}


@pytest.fixture(scope="module")
def overhead():
    return busy_door(PLAN, "overhead", parties=PARTIES, seed=1)


def test_the_scene_truth_is_what_its_people_did(overhead) -> None:
    truth = overhead.truth()
    expected = Counter()
    kinds = Counter()
    for w in overhead.walkers:
        if w.party == "passer-by":
            kinds["passer-by"] += 1
            continue
        direction, size, *formation, behaviour = w.party.split()
        other = "out" if direction == "in" else "in"
        ahead, back = CROSSINGS_PER_PERSON[behaviour]
        expected[direction] += ahead
        expected[other] += back
        kinds[behaviour] += 1
        kinds[" ".join(formation)] += 1
    assert (truth.entries, truth.exits) == (expected["in"], expected["out"])
    assert truth.entries + truth.exits >= 200
    # everything the scene promises is in it
    assert all(kinds[k] >= 5 for k in ("pause_go", "pause_back", "turn_round", "side by side", "in file", "passer-by"))
    assert {w.party.split()[1] for w in overhead.walkers if w.party != "passer-by"} == {"1", "2", "3"}
    gains = [overhead.renderer.gain(overhead.t_start + t) for t in np.arange(0, overhead.duration_s, 1.0)]
    assert max(abs(np.diff(gains))) > 0.1  # the lights are switched during the scene


def _matched(system: list[float], truth: list[float], tolerance_s: float = 1.5) -> int:
    if not system or not truth:
        return 0
    d = np.abs(np.array(system)[:, None] - np.array(truth)[None, :])
    rows, cols = linear_sum_assignment(np.where(d <= tolerance_s, d, 1e9))
    return int(sum(d[r, c] <= tolerance_s for r, c in zip(rows, cols)))


def test_overhead_door_counts_in_and_out_within_one_percent(overhead) -> None:
    truth = overhead.truth()
    settings = VisionSettings(**overhead.counter_settings())
    pipe = VisionPipeline(settings)
    when: dict[str, list[float]] = {"in": [], "out": []}
    for index, t, frame in overhead.frames():
        for c in pipe.process(frame, index).crossings:
            when[pipe.line.in_out(c.direction)].append(t)
    true_when = {d: [t for t, _, k in truth.crossings if k == d] for d in ("in", "out")}
    report = {}
    for d in ("in", "out"):
        system, true = len(when[d]), len(true_when[d])
        matched = _matched(when[d], true_when[d])
        report[d] = {"system": system, "truth": true, "count_accuracy": round(1 - abs(system - true) / true, 4),
                     "f1": round(2 * matched / (system + true), 4)}
    print(report)
    for d in ("in", "out"):
        assert report[d]["count_accuracy"] >= 0.99, report
        # and not by errors cancelling out: the counted crossings are the true ones, within 1.5 s
        assert report[d]["f1"] >= 0.98, report


def test_oblique_door_tracking_and_counting_lose_little_with_perfect_detections() -> None:
    # The oblique door (3 m up, 3.5 m inside) is short of 99% with the blob detector (bench/vision_entrance.py).
    # Fed every person's true box (a person detector that sees even the hidden), the same tracker and counter
    # count it within 1% each way, at the right times: what is lost is in detection. Fed only people at most
    # half hidden (what a detector has to see), a tenth of the crossings are by someone hidden behind the
    # person in front; counted from that person's crossing (edge.vision.counter, people in file), at least
    # 97% each way are still counted.
    scene = busy_door(PLAN, "oblique", parties=PARTIES, seed=1)
    truth = scene.truth()
    true_when = {d: [t for t, _, k in truth.crossings if k == d] for d in ("in", "out")}
    size = (scene.renderer.camera.height, scene.renderer.camera.width)
    report = {}
    for label, max_hidden in (("perfect", None), ("visible", 0.5)):
        pipe = VisionPipeline(VisionSettings(**scene.counter_settings()))
        when: dict[str, list[float]] = {"in": [], "out": []}
        for i in range(int(scene.duration_s * scene.fps)):
            boxes = Detections.from_boxes(scene.person_boxes(i / scene.fps, max_hidden))
            for c in pipe.process_detections(boxes, i + 1, size).crossings:
                when[pipe.line.in_out(c.direction)].append(i / scene.fps)
        report[label] = {d: {"count_accuracy": 1 - abs(len(when[d]) - len(true_when[d])) / len(true_when[d]),
                             "f1": 2 * _matched(when[d], true_when[d]) / (len(when[d]) + len(true_when[d]))}
                         for d in ("in", "out")}
    for d in ("in", "out"):
        assert report["perfect"][d]["count_accuracy"] >= 0.99 and report["perfect"][d]["f1"] >= 0.99, report
        assert report["visible"][d]["count_accuracy"] >= 0.97, report


def test_person_boxes_and_detections_from_elsewhere() -> None:
    scene = busy_door(PLAN, "oblique", parties=10, seed=2)
    t = next(t for _, t, _ in ((i, i / scene.fps, None) for i in range(600)) if len(scene.person_boxes(t)) >= 3)
    every, seen = scene.person_boxes(t), scene.person_boxes(t, max_hidden=0.0)
    assert len(seen) <= len(every) and all(w > 0 and h > 0 for _, _, w, h in every)
    with pytest.raises(ValueError, match="overhead"):
        busy_door(PLAN, "overhead", parties=2, seed=1).person_boxes(0.0)
    pipe = VisionPipeline(VisionSettings(**scene.counter_settings()))
    with pytest.raises(ValueError, match="frame_size"):
        pipe.process_detections(Detections.from_boxes(every), 1)
