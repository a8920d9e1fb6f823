"""How fast the people counter runs on one core, beside an OpenCV HOG baseline, and how well it counts.

Workload: PETS 2009 S2.L1 (`vtest.avi`, 795 frames, 480x360) read from ../shared/data/footage when it
is there (it must not be copied into the project); otherwise synthetic frames (dark figures walking
across a textured background) are used for the speed figures only, and the accuracy section says so.

- omnisense: `VisionPipeline` (MOG2 blobs at 320 px wide, SORT-like tracker, hysteresis line counter),
  decoding included, at 480x360 (the clip as is) and 640x480 (each decoded frame resized first).
- baseline: `cv2.HOGDescriptor` with the default people SVM (`detectMultiScale`, stride 8, scale 1.05)
  + a greedy nearest-centroid tracker + the same `LineCounter`, on the same frames (the first
  `--baseline-frames`, since it is slow).
- accuracy (footage only): both lines x=384 and y=288 (native pixels, x0.625 in the video) against
  gt.txt: count accuracy, precision/recall/F1 per direction, people-in-view MAE.
- peak RSS (ru_maxrss) is read after the omnisense runs, before the baseline loads HOG.

Usage: python bench/vision.py [--baseline-frames 60]
"""

from __future__ import annotations

import argparse
import json
import resource
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import cv2
import numpy as np
from rich.console import Console
from rich.table import Table

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from bench.support.timing import pin
from edge.vision.counter import LineCounter, VisionPipeline, VisionSettings
from edge.vision.line import DIRECTIONS, CountingLine
from edge.vision.mot import mean_absolute_error, people_per_frame, read_gt, score_crossings, true_crossings
from edge.vision.track import Track

FOOTAGE = Path(__file__).resolve().parents[2] / "shared" / "data" / "footage" / "pets09_s2l1"
SCALE = 0.625
LINES = ("x=384", "y=288")


def synthetic_frames(n: int = 300, size: tuple[int, int] = (480, 360)) -> list[np.ndarray]:
    """Dark figures walking left-right and top-bottom over a static textured background."""
    w, h = size
    rng = np.random.default_rng(1)
    bg = cv2.GaussianBlur(rng.integers(110, 200, (h, w, 3), dtype=np.uint8), (7, 7), 0)
    frames = []
    for i in range(n):
        f = bg.copy()
        for k in range(6):
            t = (i * (2 + k % 3) + 37 * k) % (w + 60) - 30
            x, y = (t, 60 + 45 * k) if k % 2 == 0 else (60 + 70 * k, t * h // w)
            cv2.ellipse(f, (int(x), int(y)), (9, 22), 0, 0, 360, (40, 35, 30), -1)
        frames.append(f)
    return frames


def source(resize: tuple[int, int] | None, limit: int | None = None, frames: list[np.ndarray] | None = None) -> Iterator[np.ndarray]:
    """Decoded (and optionally resized) frames: decoding is part of what is timed."""
    if frames is not None:
        for f in frames[:limit]:
            yield cv2.resize(f, resize) if resize else f
        return
    cap = cv2.VideoCapture(str(FOOTAGE / "vtest.avi"))
    n = 0
    while limit is None or n < limit:
        ok, f = cap.read()
        if not ok:
            break
        n += 1
        yield cv2.resize(f, resize) if resize else f
    cap.release()


def line_in_video(text: str, factor: float) -> str:
    L = CountingLine.parse(text, scale=factor)
    return f"{L.x1},{L.y1},{L.x2},{L.y2}"


def run_pipeline(resize, frames, line: str, factor: float) -> tuple[float, int, list, list]:
    pipe = VisionPipeline(VisionSettings(line=line_in_video(line, factor)))
    crossings, seen, n = [], [], 0
    t0 = time.perf_counter()
    for f in source(resize, frames=frames):
        n += 1
        r = pipe.process(f, n)
        crossings += r.crossings
        seen.append(r.people_in_view)
    return n / (time.perf_counter() - t0), n, crossings, seen


class CentroidTracker:
    """The classic baseline: each detection goes to the nearest live track centroid within `gate`."""

    def __init__(self, gate: float, max_age: int = 5) -> None:
        self.gate, self.max_age, self.tracks, self.next = gate, max_age, [], 1

    def update(self, boxes: np.ndarray) -> list[Track]:
        feet = [(x + w / 2, y + h) for x, y, w, h in boxes]
        for t in self.tracks:
            t.time_since_update += 1
        free = list(range(len(feet)))
        for t in sorted(self.tracks, key=lambda t: t.time_since_update):
            if not free:
                break
            d = [np.hypot(feet[j][0] - t.state[0], feet[j][1] - t.state[1]) for j in free]
            k = int(np.argmin(d))
            if d[k] <= self.gate:
                j = free.pop(k)
                t.state[:2] = feet[j]
                t.time_since_update = 0
                t.hits += 1
        self.tracks = [t for t in self.tracks if t.time_since_update <= self.max_age]
        for j in free:
            self.tracks.append(Track(self.next, np.array([*feet[j], 0.0, 0.0]), np.eye(4), 0, 0, confirmed=True))
            self.next += 1
        return self.tracks


def run_baseline(resize, frames, limit: int, line: str, factor: float) -> float:
    hog = cv2.HOGDescriptor()
    hog.setSVMDetector(cv2.HOGDescriptor_getDefaultPeopleDetector())
    tracker = CentroidTracker(gate=30 * factor / SCALE)
    counter = LineCounter(CountingLine.parse(line, scale=factor), band_px=5.0)
    n = 0
    t0 = time.perf_counter()
    for f in source(resize, limit, frames):
        n += 1
        boxes, _ = hog.detectMultiScale(f, winStride=(8, 8), padding=(8, 8), scale=1.05)
        counter.update(n, tracker.update(np.asarray(boxes).reshape(-1, 4)))
    return n / (time.perf_counter() - t0)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--baseline-frames", type=int, default=60)
    args = ap.parse_args()
    pin({0})
    cv2.setNumThreads(1)
    console = Console()
    have = (FOOTAGE / "vtest.avi").is_file() and (FOOTAGE / "gt.txt").is_file()
    frames = None if have else synthetic_frames()
    what = "PETS09 S2.L1 vtest.avi (795 frames)" if have else "synthetic frames (PETS09 footage not found)"
    console.print(f"workload: {what}; one core")

    fps, accuracy = {}, {}
    for key, resize, factor in (("480x360", None, SCALE), ("640x480", (640, 480), SCALE * 640 / 480)):
        best = 0.0
        for _ in range(2):
            rate, n, crossings, seen = run_pipeline(resize, frames, LINES[0], factor)
            best = max(best, rate)
        fps[key] = best
    peak_rss_mb = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024

    if have:
        gt = read_gt(FOOTAGE / "gt.txt")
        for line in LINES:
            _, n, crossings, seen = run_pipeline(None, None, line, SCALE)
            scores = score_crossings(crossings, true_crossings(gt, CountingLine.parse(line)))
            mae = mean_absolute_error(np.array(seen), people_per_frame(gt, np.arange(1, n + 1)))
            accuracy[line] = (scores, mae)

    base = {}
    for key, resize, factor in (("480x360", None, SCALE), ("640x480", (640, 480), SCALE * 640 / 480)):
        base[key] = run_baseline(resize, frames, args.baseline_frames, LINES[0], factor)

    t = Table(title="people counting speed, one core, decoding included")
    for c in ("frames", "omnisense fps", f"HOG+centroid fps (first {args.baseline_frames})", "speed-up"):
        t.add_column(c, justify="right")
    for key in fps:
        t.add_row(key, f"{fps[key]:.1f}", f"{base[key]:.2f}", f"{fps[key] / base[key]:.0f}x")
    console.print(t)
    console.print(f"peak RSS after the omnisense runs: {peak_rss_mb:.1f} MB")

    if have:
        a = Table(title="PETS09 S2.L1 counting accuracy (line in native 768x576 pixels, whole frame)")
        for c in ("line", "direction", "system", "truth", "count acc.", "P", "R", "F1", "people MAE"):
            a.add_column(c, justify="right")
        for line, (scores, mae) in accuracy.items():
            for d in DIRECTIONS:
                s = scores[d]
                a.add_row(line, d, str(s.system), str(s.truth), f"{100 * s.count_accuracy:.1f}%",
                          f"{s.precision:.3f}", f"{s.recall:.3f}", f"{s.f1:.3f}", f"{mae:.3f}")
        console.print(a)
    else:
        console.print("accuracy: PETS09 footage not found; speed measured on synthetic frames only")

    print("BENCH " + json.dumps({
        "fps_480x360": round(fps["480x360"], 1), "fps_640x480": round(fps["640x480"], 1),
        "baseline_fps_480x360": round(base["480x360"], 2), "baseline_fps_640x480": round(base["640x480"], 2),
        "peak_rss_mb": round(peak_rss_mb, 1),
    }))


if __name__ == "__main__":
    main()
