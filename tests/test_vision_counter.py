"""edge.vision on synthetic scenes (no footage): exact counts per direction; mot metrics; the eval CLI."""

from __future__ import annotations

import json
from collections.abc import Callable

import cv2
import numpy as np
import pytest
from typer.testing import CliRunner

from edge.vision.counter import (
    Crossing,
    LineCounter,
    VisionPipeline,
    VisionSettings,
    point_in_polygon,
)
from edge.vision.line import CountingLine, LineError
from edge.vision.mot import (
    match_crossings,
    mean_absolute_error,
    parse_gt,
    people_per_frame,
    score_crossings,
    true_crossings,
)
from edge.vision.camera_source import replace_placement
from edge.vision.detect import BlobDetector, Detections, PersonSize, _peaks, head_cuts
from edge.vision.track import Track, Tracker
from omnisense.vision_cli import vision_app

W, H = 320, 240
PW, PH = 16, 44  # person width and height in pixels
Path_ = Callable[[int], "tuple[float, float] | None"]  # frame -> foot point, or None when absent


def background() -> np.ndarray:
    rng = np.random.default_rng(7)
    return cv2.GaussianBlur(rng.integers(120, 210, (H, W, 3), dtype=np.uint8), (5, 5), 0)


def draw(frame: np.ndarray, foot: tuple[float, float], shadow: bool = False) -> None:
    fx, fy = foot
    if shadow:  # a soft shadow cast to the right of the feet: the background, darker
        mask = np.zeros(frame.shape[:2], np.uint8)
        cv2.ellipse(mask, (int(fx + PW), int(fy - 4)), (PW, 6), 0, 0, 360, 255, -1)
        frame[mask > 0] = (frame[mask > 0] * 0.65).astype(np.uint8)
    cv2.ellipse(frame, (int(fx), int(fy - PH / 2)), (PW // 2, PH // 2), 0, 0, 360, (35, 30, 40), -1)


WARMUP = 60  # frames of empty scene first: the background model's start-up (edge.vision.detect._WARMUP)


def run(paths: list[Path_], frames: int, line: str = "x=160", light_step_at: int | None = None,
        shadow: bool = False) -> dict[str, int]:
    """Counts per direction; scene frame i is shown after WARMUP frames of the empty background."""
    bg = background()
    # drawn people have one size everywhere: no perspective in these synthetic scenes
    pipe = VisionPipeline(VisionSettings(line=line, person_height_px=PH, person_width_px=PW, perspective=0))
    totals = {"increasing": 0, "decreasing": 0}
    for i in range(-WARMUP, frames):
        f = bg.copy()
        for p in paths:
            foot = p(i) if i >= 0 else None
            if foot is not None:
                draw(f, foot, shadow)
        if light_step_at is not None and i >= light_step_at:
            f = cv2.convertScaleAbs(f, alpha=0.7)
        for c in pipe.process(f, i + WARMUP).crossings:
            totals[c.direction] += 1
    return totals


def walk(start: tuple[float, float], end: tuple[float, float], t0: int, t1: int) -> Path_:
    def at(i: int):
        if not t0 <= i <= t1:
            return None
        a = (i - t0) / (t1 - t0)
        return start[0] + a * (end[0] - start[0]), start[1] + a * (end[1] - start[1])
    return at


def test_one_person_left_to_right_counts_one_increasing() -> None:
    assert run([walk((40, 150), (280, 150), 10, 90)], 100) == {"increasing": 1, "decreasing": 0}


def test_one_person_right_to_left_counts_one_decreasing() -> None:
    assert run([walk((280, 170), (40, 170), 10, 90)], 100) == {"increasing": 0, "decreasing": 1}


def test_group_of_three_side_by_side_counts_three() -> None:
    paths = [walk((120 + k * PW, 40), (120 + k * PW, 230), 10, 80) for k in range(3)]
    assert run(paths, 90, line="y=130") == {"increasing": 3, "decreasing": 0}


def test_group_of_two_counts_two() -> None:
    paths = [walk((280, 120 + k * 1.0), (40, 120 + k * 1.0), 10, 90) for k in range(1)]
    paths += [walk((280, 160), (40, 160), 10, 90)]
    assert run(paths, 100) == {"increasing": 0, "decreasing": 2}


def test_stop_on_line_jitter_and_step_back_counts_nothing() -> None:
    def path(i: int):
        if i < 10:
            return None
        if i < 40:
            return 60 + (i - 10) * 100 / 30, 150.0  # walks up to the line
        if i < 80:
            return 160 + 5 * (1 if (i // 2) % 2 else -1), 150.0  # lingers on it, +-5 px
        if i < 110:
            return 160 - (i - 80) * 100 / 30, 150.0  # steps back the way they came
        return None
    assert run([path], 120) == {"increasing": 0, "decreasing": 0}


def test_crossing_twice_counts_once_each_way() -> None:
    there, back = walk((40, 150), (280, 150), 10, 70), walk((280, 150), (40, 150), 71, 130)
    assert run([lambda i: there(i) or back(i)], 140) == {"increasing": 1, "decreasing": 1}


def test_light_switch_mid_crossing_does_not_add_or_lose_people() -> None:
    assert run([walk((40, 150), (280, 150), 10, 90)], 100, light_step_at=45) == {"increasing": 1, "decreasing": 0}


def test_attached_shadow_is_not_a_second_person() -> None:
    paths = [walk((280, 150), (40, 150), 10, 90), walk((40, 200), (280, 200), 20, 100)]
    assert run(paths, 110, shadow=True) == {"increasing": 1, "decreasing": 1}


def test_line_parse_sides_and_names() -> None:
    x = CountingLine.parse("x=384", scale=0.625)
    assert x.side(np.array([[239.0, 0], [241.0, 0], [240.0, 5]])).tolist() == [-1, 1, 0]
    y = CountingLine.parse("y=288")
    assert y.side(np.array([[0, 300.0], [0, 280.0]]), band=10).tolist() == [1, 0]
    two = CountingLine.parse("10,0,10,100")
    assert two.side(np.array([[20.0, 50]])).tolist() == [1]
    assert two.direction(-1, 1) == "increasing" and two.in_out("increasing") == "in"
    assert CountingLine.parse("x=1", flip=True).in_out("increasing") == "out"
    for bad in ("z=3", "x=", "1,2,3", "1,1,1,1"):
        with pytest.raises(LineError):
            CountingLine.parse(bad)


def test_an_old_reset_at_key_names_its_replacement() -> None:
    with pytest.raises(ValueError, match="occupancy_reset"):
        VisionSettings(line="x=10", reset_at="22:00")


def test_line_counter_hysteresis_occupancy_and_reset() -> None:
    counter = LineCounter(CountingLine.parse("x=100"), band_px=5)
    t = Track(1, np.zeros(4), np.eye(4), 10, 30, confirmed=True)
    events = []
    for i, x in enumerate([80, 97, 103, 98, 104, 110, 96, 90, 120]):
        t.state = np.array([x, 50.0, 0, 0])
        events += counter.update(i, [t])
    assert [(c.frame, c.direction) for c in events] == [(5, "increasing"), (7, "decreasing"), (8, "increasing")]
    assert counter.occupancy == 1
    counter.reset()
    assert counter.occupancy == 0
    t.state = np.array([50.0, 50, 0, 0])
    counter.update(9, [t])
    assert counter.occupancy == 0  # out with nobody in: never negative


def _confirmed(track_id: int, foot: tuple[float, float], w: float = 20, h: float = 50) -> Track:
    return Track(track_id, np.array([*foot, 0.0, 0.0]), np.diag([4.0, 4.0, 1.0, 1.0]), w, h, hits=5, confirmed=True)


def warm_detector() -> tuple[np.ndarray, BlobDetector]:
    """The background and a detector that has learnt it (the synthetic scenes' sizes, no perspective)."""
    bg = background()
    detector = BlobDetector(W, H, PW, PH, perspective=0)
    for _ in range(WARMUP):
        detector.detect(bg)
    return bg, detector


def test_a_broad_person_beside_a_slim_one_is_cut_between_their_heads() -> None:
    # Shoulder to shoulder: a broad person (2 person-widths, e.g. in a coat with bags) and a slim one (0.75).
    # The blob is 2.75 widths wide: cut into equal columns it would be three people, one of them half of each.
    bg, detector = warm_detector()
    f = bg.copy()
    broad, slim = (140.0, 200.0), (140.0 + PW + 0.375 * PW, 200.0)
    cv2.ellipse(f, (int(broad[0]), int(broad[1] - PH / 2)), (PW, PH // 2), 0, 0, 360, (35, 30, 40), -1)
    cv2.ellipse(f, (int(slim[0]), int(slim[1] - PH / 2)), (int(0.375 * PW), PH // 2), 0, 0, 360, (35, 30, 40), -1)
    det = detector.detect(f)
    assert len(det) == 2
    assert np.allclose(sorted(det.foot_x), [broad[0], slim[0]], atol=2.0)
    assert np.allclose(det.foot_y, 200, atol=2.0)


def test_two_people_side_by_side_with_a_gap_the_closing_bridges_are_two_detections() -> None:
    # Two slim people a few pixels apart: together narrower than 1.5 person widths (no column split), and the
    # closing that joins the pieces of one body bridges the gap. Each is a whole person on their own: two.
    bg, detector = warm_detector()
    f = bg.copy()
    half = int(0.3 * PW)
    left, right = 150.0, 150.0 + 2 * half + 4
    for x in (left, right):
        cv2.ellipse(f, (int(x), int(200 - PH / 2)), (half, PH // 2), 0, 0, 360, (35, 30, 40), -1)
    det = detector.detect(f)
    assert cv2.connectedComponentsWithStats(detector.mask)[0] == 2  # one blob after the closing
    assert len(det) == 2
    assert np.allclose(sorted(det.foot_x), [left, right], atol=1.5)
    # A person whose legs are cut from the torso by clothes the colour of the floor is still one person.
    f = bg.copy()
    cv2.ellipse(f, (150, int(200 - PH / 2)), (PW // 2, PH // 2), 0, 0, 360, (35, 30, 40), -1)
    f[200 - PH // 2 - 1:200 - PH // 2 + 2] = bg[200 - PH // 2 - 1:200 - PH // 2 + 2]
    assert len(detector.detect(f)) == 1


def test_the_detector_says_which_box_bottoms_are_feet() -> None:
    # A whole person: their feet. An upper body (the legs behind someone the colour of the floor), a person
    # cut by the frame's bottom edge, and the upper one of two people in file split into rows: a cut, not
    # feet (the tracker then believes only the column of a box matched to someone half hidden).
    bg, detector = warm_detector()
    f = bg.copy()
    cv2.ellipse(f, (60, int(150 - PH / 2)), (PW // 2, PH // 2), 0, 0, 360, (35, 30, 40), -1)   # whole
    cv2.ellipse(f, (140, int(120 - PH / 4)), (PW // 2, PH // 4), 0, 0, 360, (35, 30, 40), -1)  # upper body
    cv2.ellipse(f, (220, H - PH // 4), (PW // 2, PH // 2), 0, 0, 360, (35, 30, 40), -1)         # at the edge
    cv2.ellipse(f, (290, int(200 - PH)), (PW // 2, PH), 0, 0, 360, (35, 30, 40), -1)            # two in file
    det = detector.detect(f)
    seen = {round(float(x) / 10): bool(s) for x, s in zip(det.foot_x, det.feet_seen)}
    rows = sorted((float(y), bool(s)) for x, y, s in zip(det.foot_x, det.foot_y, det.feet_seen) if x > 260)
    assert seen[6] and not seen[14] and not seen[22]
    assert len(rows) == 2 and rows[0][1] is False and rows[1][1] is True
    assert Detections.from_boxes([(0, 0, 10, 20)]).feet_seen.tolist() == [True]  # a person detector's box
    with pytest.raises(ValueError, match="feet_seen"):
        Detections.from_boxes([(0, 0, 10, 20)], feet_seen=[True, False])


def test_head_cuts_need_two_heads_standing_out() -> None:
    blob = np.zeros((44, 40), np.uint8)
    blob[4:, 0:40] = 255                      # a flat top: a wide object or people with no heads showing
    assert head_cuts(blob, PW, PH) is None
    blob[:4, 4:12] = blob[:4, 28:36] = 255    # two bumps of 4 px: less than a head above the shoulders
    assert head_cuts(blob, PW, PH) is None
    blob[:] = 0
    blob[10:, :] = 255
    blob[:10, 2:14] = blob[:10, 26:38] = 255  # two heads 10 px above the shoulders, 24 px apart
    cuts = head_cuts(blob, PW, PH)
    assert cuts is not None and cuts[0] == 0 and cuts[-1] == 40 and len(cuts) == 3 and 14 <= cuts[1] <= 26


def test_head_peaks_are_scipys_find_peaks_with_a_distance() -> None:
    # The detector finds peaks itself (importing scipy.signal costs 30 MB of a Pi's memory); same answer.
    from scipy.signal import find_peaks
    rng = np.random.default_rng(3)
    for _ in range(500):
        v = np.convolve(rng.random(int(rng.integers(1, 60))) * 40, np.ones(3) / 3, mode="same")
        spacing = float(rng.uniform(1, 12))
        assert _peaks(v, spacing) == [int(p) - 1 for p in find_peaks(np.pad(v, 1), distance=spacing)[0]]


def _feet(*feet: tuple[float, float], w: float = 20, h: float = 50) -> Detections:
    return Detections.from_boxes([(x - w / 2, y - h, w, h) for x, y in feet])


def test_tracker_lets_a_hidden_persons_track_coast_rather_than_swap_two_people() -> None:
    # A's person is hidden this frame; A could still reach B's detection, and B A's neighbour: the pairing
    # that makes most pairs (A->b, B->a) swaps the two people. Leaving A unmatched costs less.
    tracker = Tracker(gate_px=25)
    a, b = _confirmed(101, (347, 170)), _confirmed(102, (331, 194))
    tracker.tracks = [a, b]
    tracker.update(_feet((318, 174), (339, 192)))
    assert b.time_since_update == 0 and b.foot[1] > 185   # B took its own person (the lower one)
    assert a.time_since_update == 1 and abs(a.foot[1] - 170) < 1e-9  # A coasts where it was
    assert [t.foot for t in tracker.tracks if t not in (a, b)] == [(318, 174)]  # the other blob starts a track


def test_a_person_walking_behind_another_keeps_their_track_longer_than_max_age() -> None:
    # R walks right behind F (oblique view): one blob for both, matched to F, for 2 x max_age frames.
    # A track that is not behind anyone dies after max_age; R's coasts on and takes R's blob when R is clear.
    tracker = Tracker(gate_px=25, max_age=5, occlusion=True)
    rear, front, alone = _confirmed(1, (100, 100)), _confirmed(2, (104, 125)), _confirmed(3, (300, 100))
    for t in (rear, front, alone):
        t.state[2] = 1.0  # walking right at 1 px per frame
    tracker.tracks = [rear, front, alone]
    for i in range(1, 11):
        tracker.update(_feet((104 + i, 125)))
    assert alone not in tracker.tracks
    assert rear in tracker.tracks and rear.time_since_update == 10
    tracker.update(_feet((112, 100), (119, 125)))  # R steps out to the side of F
    assert rear.time_since_update == 0 and abs(rear.foot[0] - 111.5) < 1  # the same person, same track


@pytest.mark.parametrize("occlusion", [True, False])
def test_a_person_behind_another_keeps_their_own_foot_row(occlusion: bool) -> None:
    # R stands behind F (oblique view: R's feet are higher in the image, half its box behind F's). The blob
    # matched to R ends at F's legs, 18 px below R's feet: only its column says something about R.
    tracker = Tracker(gate_px=25, occlusion=occlusion)
    rear, front = _confirmed(1, (100, 100)), _confirmed(2, (100, 125))
    tracker.tracks = [rear, front]
    tracker.update(_feet((96, 118), (101, 125)))
    assert rear.time_since_update == 0 and rear.foot[0] < 99.5  # matched, moved towards the blob's column
    if occlusion:
        assert abs(rear.foot[1] - 100) < 1e-6
    else:
        assert rear.foot[1] > 105  # without occlusion handling it is dragged down towards the front person


@pytest.mark.parametrize("feet_seen", [True, False])
def test_a_person_half_hidden_whose_feet_are_seen_keeps_their_measured_row(feet_seen: bool) -> None:
    # R is half behind F, but the detection matched to R is a whole person whose bottom is R's own feet, well
    # above F's: its row is a measurement (a person detector's box). A bottom that is a cut (a blob split into
    # rows, an upper body) says nothing about R's row.
    tracker = Tracker(gate_px=25, occlusion=True)
    rear, front = _confirmed(1, (100, 100)), _confirmed(2, (100, 125))
    tracker.tracks = [rear, front]
    tracker.update(Detections.from_boxes([(87, 56, 20, 50), (91, 75, 20, 50)], feet_seen=[feet_seen, True]))
    assert rear.time_since_update == 0
    if feet_seen:
        assert rear.foot[1] > 102  # pulled towards the measured 106
    else:
        assert abs(rear.foot[1] - 100) < 1e-6


# People in file seen by an oblique camera (line y=122, a 72 px person at the middle row, 0.89 perspective,
# as the simulated door camera): the second of two walking 30 px apart is hidden behind the first for part
# of the way. Feet are given per frame; None = not detected (hidden).
IN_FILE = {"line": "y=122", "person_height_px": 72.0, "perspective": 0.89}
IN_FILE_SIZE = PersonSize(72.0, H, 0.89)  # a person's height in pixels by foot row, as the counter models it


def _count_in_file(paths: list[Path_], frames: int) -> dict[str, int]:
    pipe = VisionPipeline(VisionSettings(**IN_FILE))
    totals = {"increasing": 0, "decreasing": 0}
    for f in range(frames):
        boxes = []
        for path in paths:
            foot = path(f)
            if foot is not None:
                h = float(IN_FILE_SIZE.height(foot[1]))
                boxes.append((foot[0] - 0.2 * h, foot[1] - h, 0.4 * h, h))
        for c in pipe.process_detections(Detections.from_boxes(boxes), f + 1, (H, W)).crossings:
            totals[c.direction] += 1
    return totals


def _walk(y0: float, speed: float, seen: Callable[[float], bool] = lambda y: True,
          stop: float | None = None) -> Path_:
    """Feet at x=160 from row y0 at `speed` px per frame (stopping at row `stop`), detected where `seen`."""
    def at(f: int) -> tuple[float, float] | None:
        y = y0 + speed * f
        if stop is not None:
            y = max(y, stop) if speed < 0 else min(y, stop)
        return (160.0, y) if 20 <= y <= 236 and seen(y) else None
    return at


def test_two_walking_out_in_file_count_two_though_the_leader_is_hidden_before_the_line() -> None:
    # Walking away from the camera: the leader (30 px deeper) disappears behind the follower 38 px before the
    # line. Their path, with the follower crossing the same way just after, says they crossed too.
    leader = _walk(200, -4, seen=lambda y: y > 160)
    follower = _walk(230, -4)
    assert _count_in_file([leader, follower], 60) == {"increasing": 0, "decreasing": 2}


def test_someone_hidden_who_stops_short_of_the_line_is_not_counted() -> None:
    # The same pair stop a step before the line and stay: the leader's predicted path runs on across it,
    # but the person in front of them never crosses, so nothing is counted.
    leader = _walk(200, -4, seen=lambda y: y > 160, stop=140)
    follower = _walk(230, -4, stop=170)
    assert _count_in_file([leader, follower], 80) == {"increasing": 0, "decreasing": 0}


def test_someone_seen_behind_another_who_stops_short_of_the_line_is_not_counted() -> None:
    # The same pair, but the leader is detected all the way (a detector that sees people half hidden): behind
    # the follower only their column is measured and their row is a prediction, which runs on across the line
    # when they stop. A prediction counts only with the person in front, who never crosses.
    leader = _walk(200, -4, stop=130)
    follower = _walk(230, -4, stop=162)
    assert _count_in_file([leader, follower], 80) == {"increasing": 0, "decreasing": 0}


@pytest.mark.parametrize("placed", [False, True])
def test_a_piece_of_someone_is_not_a_companion_walking_behind_them(placed: bool) -> None:
    # A blob that also splits off a person's head and shoulders (a scarf the colour of the floor) makes a
    # short track "behind" them; lost before the line while the person crosses, it is not a second person.
    # The same once the installer's placement has replaced the counter (it keeps the person model).
    pipe = VisionPipeline(VisionSettings(**IN_FILE))
    totals = {"increasing": 0, "decreasing": 0}
    for f in range(60):
        if placed and f == 3:
            pipe = replace_placement(pipe, VisionSettings(**IN_FILE, zones={"door": [(0, 122), (319, 122), (160, 239)]}))
        y = 230 - 4 * f
        h = float(IN_FILE_SIZE.height(y))
        boxes = [(160 - 0.2 * h, y - h, 0.4 * h, h)]
        if y > 170:
            boxes.append((163 - 0.2 * h, y - h, 0.4 * h, 0.4 * h))  # head and shoulders, a blob of their own
        if y > 20:
            for c in pipe.process_detections(Detections.from_boxes(boxes), f + 1, (H, W)).crossings:
                totals[c.direction] += 1
    assert totals == {"increasing": 0, "decreasing": 1}


def test_two_coming_in_in_file_count_two_though_the_second_is_seen_only_past_the_line() -> None:
    # Walking towards the camera: the second is hidden behind the first until 28 px past the line, and
    # comes out from behind them still walking in: they crossed with them.
    first = _walk(100, 4)
    second = _walk(70, 4, seen=lambda y: y > 150)
    assert _count_in_file([first, second], 45) == {"increasing": 2, "decreasing": 0}


def test_three_coming_in_in_file_count_three_though_the_last_two_are_seen_only_past_the_line() -> None:
    # A quicker leader, then two close in file: the second comes out from behind the leader past the line,
    # and the third from behind the second once the leader is far ahead. Each crossed with the one in front.
    first = _walk(100, 6)
    second = _walk(70, 4, seen=lambda y: y > 150)
    third = _walk(40, 4, seen=lambda y: y > 150)
    assert _count_in_file([first, second, third], 55) == {"increasing": 3, "decreasing": 0}


def test_a_leader_hidden_a_step_past_the_line_counts_when_the_one_behind_crosses_too() -> None:
    # Walking out: the leader is seen crossing the line but goes behind the follower before being a step
    # past it (the crossing is not yet confirmed); the follower crossing the same way confirms it.
    leader = _walk(200, -4, seen=lambda y: y > 108)
    follower = _walk(230, -4)
    assert _count_in_file([leader, follower], 60) == {"increasing": 0, "decreasing": 2}


def test_someone_coming_out_from_behind_walking_the_other_way_has_not_crossed_with_them() -> None:
    # Someone standing inside (unseen: long in the background) sets off out of the store just as a person
    # coming in passes in front of them: one in, and one out when they cross, not an "in" copied from the
    # person in front.
    first = _walk(60, 4)

    def other(f: int) -> tuple[float, float] | None:
        return None if f < 27 else (160.0, 140.0 - 4 * (f - 27))

    assert _count_in_file([first, other], 60) == {"increasing": 1, "decreasing": 1}


def test_point_in_polygon() -> None:
    square = [(0, 0), (10, 0), (10, 10), (0, 10)]
    assert point_in_polygon(np.array([[5, 5], [15, 5], [10, 5], [-1, -1]]), square).tolist() == [True, False, True, False]


GT = """\
1,1,10,0,4,10,1,-1,-1,0
2,1,18,0,4,10,1,-1,-1,0
3,1,8,0,4,10,1,-1,-1,0
1,2,30,0,4,10,1,-1,-1,0
3,2,0,0,4,10,1,-1,-1,0
2,3,0,0,4,10,0,-1,-1,0
3,3,40,0,4,10,0,-1,-1,0
"""


def test_mot_true_crossings_matching_and_metrics() -> None:
    gt = parse_gt(GT)
    assert len(gt) == 5  # flag 0 rows ignored
    truth = true_crossings(gt, CountingLine.parse("x=15"))
    assert [(c.frame, c.track_id, c.direction) for c in truth] == [(2, 1, "increasing"), (3, 1, "decreasing"), (3, 2, "decreasing")]
    system = [Crossing(12, 7, "increasing"), Crossing(13, 8, "decreasing"), Crossing(40, 9, "decreasing"),
              Crossing(3, 5, "increasing")]
    pairs = match_crossings(system, truth, tolerance=10)
    assert sorted((s.track_id, t.frame) for s, t in pairs) == [(5, 2), (8, 3)]  # 13 - 3 = 10: just in
    s = score_crossings(system, truth, tolerance=10)
    assert (s["increasing"].system, s["increasing"].truth, s["increasing"].matched) == (2, 1, 1)
    assert s["increasing"].count_accuracy == 0.0 and s["increasing"].precision == 0.5 and s["increasing"].recall == 1.0
    assert s["decreasing"].count_accuracy == 1.0 and s["decreasing"].f1 == 0.5
    assert s["all"].f1 == pytest.approx(2 * 2 / 7)
    frames = np.arange(1, 4)
    assert people_per_frame(gt, frames).tolist() == [2, 1, 2]
    assert people_per_frame(gt, frames, roi=[(0, 0), (25, 0), (25, 20), (0, 20)]).tolist() == [1, 1, 2]
    assert mean_absolute_error(np.array([2, 3, 1]), np.array([2, 1, 2])) == 1.0


def _err(result) -> str:
    try:
        return result.output + result.stderr
    except ValueError:
        return result.output


def test_eval_unreadable_video_exits_2_naming_the_file(tmp_path) -> None:
    video = tmp_path / "broken.avi"
    video.write_bytes(b"this is not a video")
    gt = tmp_path / "gt.txt"
    gt.write_text(GT)
    r = CliRunner().invoke(vision_app, ["eval", str(video), "--gt", str(gt), "--line", "x=15"])
    assert r.exit_code == 2 and "broken.avi" in _err(r)
    r = CliRunner().invoke(vision_app, ["eval", str(video), "--gt", str(gt), "--line", "q=15"])
    assert r.exit_code == 2 and "bad line" in _err(r)
    r = CliRunner().invoke(vision_app, ["eval", str(video), "--gt", str(tmp_path / "none.txt"), "--line", "x=15"])
    assert r.exit_code == 2 and "none.txt" in _err(r)
    for model in (tmp_path / "missing.onnx", gt):  # no file; a file that is no model
        r = CliRunner().invoke(vision_app, ["eval", str(video), "--gt", str(gt), "--line", "x=15",
                                            "--detector-model", str(model)])
        assert r.exit_code == 2 and model.name in _err(r) and "Traceback" not in _err(r), _err(r)


def test_eval_json_on_a_short_synthetic_video(tmp_path) -> None:
    video = tmp_path / "walk.avi"
    out = cv2.VideoWriter(str(video), cv2.VideoWriter_fourcc(*"MJPG"), 10, (W, H))
    assert out.isOpened()
    bg = background()
    path = walk((40, 150), (280, 150), 10, 90)
    rows = []
    for i in range(100):
        f = bg.copy()
        foot = path(i)
        if foot is not None:
            draw(f, foot)
            rows.append(f"{i + 1},1,{foot[0] - PW / 2:.1f},{foot[1] - PH:.1f},{PW},{PH},1,-1,-1,0")
        out.write(f)
    out.release()
    gt = tmp_path / "gt.txt"
    gt.write_text("\n".join(rows) + "\n")
    r = CliRunner().invoke(vision_app, ["eval", str(video), "--gt", str(gt), "--line", "x=160",
                                        "--person-height", str(PH), "--json"])
    assert r.exit_code == 0, _err(r)
    data = json.loads(r.output)
    assert {"frames", "directions", "people_in_view_mae", "fps", "line", "gt_scale"} <= data.keys()
    assert data["frames"] == 100
    inc = data["directions"]["increasing"]
    assert {"system", "truth", "matched", "count_accuracy", "precision", "recall", "f1"} <= inc.keys()
    assert inc["truth"] == 1 and inc["system"] == 1 and inc["f1"] == 1.0
    assert data["people_in_view_mae"] < 0.2
