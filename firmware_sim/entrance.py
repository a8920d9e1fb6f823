"""Busy door scenes for the camera counter, with exact truth.

A camera at the store's door renders (with `firmware_sim.camera.FrameRenderer`: perspective,
shadows, sensor noise, slow light drift and the lights switched) people walking through the door
of the plan:
- parties of one, two or three, the groups side by side or one behind the other;
- in and out at the same time (each direction keeps to its own half of the door, as people do; a
  party of three side by side takes the whole door, so nobody comes the other way meanwhile);
- some stop at the line for a few seconds and then go on, or step back the way they came;
- some come in and turn round at once, leaving again;
- passers-by walking along the pavement without coming in.

Two cameras (`cameras`): "overhead", looking straight down from 3.2 m above the middle of the door
line (how door counters are mounted), and "oblique", from inside the store 3.5 m behind the door,
3 m up, looking down at the door at 40 degrees. Truth is each person's feet changing side of the
door line on the floor; the scene is built so that a person either clearly crosses or clearly does
not (people who stop, stop a step short of the line). Frames are 320x240 at 10 frames/s by default.

`EntranceScene.counter_settings()` gives what an installer would enter for the counting core: the
door line in image pixels and which way is in, and the size of a person at the line with the
perspective growth, all from the camera's pose (a 1.75 m person).
"""

from __future__ import annotations

import math
from collections.abc import Iterator
from dataclasses import dataclass, field

import numpy as np

from firmware_sim.camera import Figure, FrameRenderer
from firmware_sim.plan import CameraSensor, NodePlan, StorePlan

PERSON_M = 1.75          # the installer's reference person
SHOULDER_M = 0.48        # shoulder width drawn by the renderer (2 x 0.24 m)
SPACING_M = 0.62         # centre to centre, side by side
IN_FILE_M = 0.9          # centre to centre, one behind the other
VIEW_M = 4.0             # people enter and leave the scene this far from the door line


def cameras(plan: StorePlan, resolution: tuple[int, int] = (320, 240)) -> dict[str, NodePlan]:
    """The two door cameras for `plan`'s entrance (see the module docstring)."""
    (x1, y1), (x2, y2) = plan.entrance.line
    mx, my = (x1 + x2) / 2, (y1 + y2) / 2
    nx, ny = plan.inward_normal
    inward_yaw = math.degrees(math.atan2(ny, nx))
    return {
        "overhead": NodePlan(node_id="door-overhead", position=(mx, my), camera=CameraSensor(
            kind="overhead", height_m=3.2, pitch_deg=90, yaw_deg=inward_yaw, hfov_deg=100, resolution=resolution)),
        "oblique": NodePlan(node_id="door-oblique", position=(mx + 3.5 * nx, my + 3.5 * ny), camera=CameraSensor(
            kind="oblique", height_m=3.0, pitch_deg=40, yaw_deg=inward_yaw + 180, hfov_deg=80, resolution=resolution)),
    }


@dataclass
class Walker:
    """One person: waypoints (t, x, y) walked in straight lines; absent before the first and after the last."""

    person: int
    height_m: float
    points: list[tuple[float, float, float]]
    party: str = ""          # what the person is doing, e.g. "in 3 side by side pause_back", "passer-by"

    @property
    def t0(self) -> float:
        return self.points[0][0]

    @property
    def t1(self) -> float:
        return self.points[-1][0]

    def at(self, t: float) -> tuple[float, float] | None:
        if not self.t0 <= t < self.t1:
            return None
        ts = [p[0] for p in self.points]
        k = max(0, min(len(ts) - 2, int(np.searchsorted(ts, t, side="right")) - 1))
        (ta, xa, ya), (tb, xb, yb) = self.points[k], self.points[k + 1]
        a = 0.0 if tb == ta else (t - ta) / (tb - ta)
        return xa + a * (xb - xa), ya + a * (yb - ya)


@dataclass
class Truth:
    entries: int = 0
    exits: int = 0
    crossings: list[tuple[float, int, str]] = field(default_factory=list)  # (time, person, "in"/"out")


@dataclass
class EntranceScene:
    """`walkers` over [0, duration_s); frames at `fps`; rendered from `camera` (see `cameras`)."""

    plan: StorePlan
    node: NodePlan
    walkers: list[Walker]
    duration_s: float
    seed: int = 1
    # when the lights first switch (and, 120 s later, back); None: wherever the renderer's hour puts it
    light_switch_at_s: float | None = 30.0

    def __post_init__(self) -> None:
        self.renderer = FrameRenderer(self.plan, self.node, self.seed)
        cam = self.node.camera
        assert cam is not None
        self.fps = cam.fps
        # The renderer switches lights at fixed phases of the hour: start the scene so that one falls inside it.
        self.t_start = 0.0
        if self.light_switch_at_s is not None:
            self.t_start = float(self.renderer._switch_phase[0]) - self.light_switch_at_s

    # --- truth ----------------------------------------------------------------------------------------------

    def _door_side(self, x: np.ndarray, y: np.ndarray) -> np.ndarray:
        (x1, y1), (x2, y2) = self.plan.entrance.line
        nx, ny = self.plan.inward_normal
        return (x - x1) * nx + (y - y1) * ny

    def truth(self, step_s: float = 0.005) -> Truth:
        """Every change of side of each person's feet across the door line, from their path sampled finely."""
        out = Truth()
        for w in self.walkers:
            ts = np.arange(w.t0, w.t1, step_s)
            pts = np.asarray(w.points)
            x, y = np.interp(ts, pts[:, 0], pts[:, 1]), np.interp(ts, pts[:, 0], pts[:, 2])
            sides = self._door_side(x, y) >= 0
            for k in np.flatnonzero(sides[1:] != sides[:-1]):
                inward = bool(sides[k + 1])
                out.crossings.append((float(ts[k + 1]), w.person, "in" if inward else "out"))
                if inward:
                    out.entries += 1
                else:
                    out.exits += 1
        out.crossings.sort()
        return out

    # --- what an installer would enter ----------------------------------------------------------------------

    def counter_settings(self) -> dict:
        """VisionSettings fields for this camera: line, flip, person size and perspective (from the pose)."""
        cam = self.renderer.camera
        (x1, y1), (x2, y2) = self.plan.entrance.line
        nx, ny = self.plan.inward_normal
        sensor = self.node.camera
        assert sensor is not None
        if sensor.kind == "overhead":
            # Seen from above a person is a head and shoulders: the blob's size is the shoulder width at head height.
            (a, b), _ = cam.project(np.array([[x1, y1, PERSON_M], [x2, y2, PERSON_M]]))
            mid = np.array([[(x1 + x2) / 2, (y1 + y2) / 2, PERSON_M]])
            depth = float(cam.project(mid)[1][0])
            size = SHOULDER_M * cam.focal / depth
            inside, _ = cam.project(np.array([[(x1 + x2) / 2 + nx, (y1 + y2) / 2 + ny, PERSON_M]]))
            settings = {"person_height_px": round(float(size), 1), "person_width_px": round(float(size), 1),
                        "perspective": 0.0}
        else:
            (a, b), _ = cam.project(np.array([[x1, y1, 0.0], [x2, y2, 0.0]]))
            inside, _ = cam.project(np.array([[(x1 + x2) / 2 + nx, (y1 + y2) / 2 + ny, 0.0]]))
            settings = {"person_height_px": round(float(self._height_at_row(cam.height / 2)), 1),
                        "perspective": round(float(self._perspective()), 2)}
        line = (float(a[0]), float(a[1]), float(b[0]), float(b[1]))
        # in = towards the positive side (edge.vision.line) unless flipped
        d = ((line[3] - line[1]) * (inside[0][0] - line[0]) - (line[2] - line[0]) * (inside[0][1] - line[1]))
        return {"line": ",".join(f"{v:.1f}" for v in line), "flip": bool(d < 0), **settings}

    def _height_at_row(self, row: float) -> float:
        """Pixel height of a PERSON_M person whose feet are on image row `row`, on the camera's centre column."""
        cam = self.renderer.camera
        direction = cam.forward + ((row - cam.height / 2) / cam.focal) * cam.down
        s = -cam.centre[2] / direction[2]
        foot = cam.centre + s * direction
        (f, h), _ = cam.project(np.array([foot, foot + [0.0, 0.0, PERSON_M]]))
        return float(f[1] - h[1])

    def _perspective(self) -> float:
        cam = self.renderer.camera
        lo, hi = self._height_at_row(0.25 * cam.height), self._height_at_row(0.75 * cam.height)
        return (hi - lo) / (0.5 * self._height_at_row(0.5 * cam.height))

    # --- frames ---------------------------------------------------------------------------------------------

    def figures(self, t: float) -> list[Figure]:
        out = []
        for w in self.walkers:
            p = w.at(t)
            if p is not None:
                out.append(Figure(w.person, p[0], p[1], w.height_m))
        return out

    def person_boxes(self, t: float, max_hidden: float | None = None) -> list[tuple[float, float, float, float]]:
        """Each person's true box (left, top, width, height; feet to head, 0.4 x height wide) in the image at `t`:
        what a perfect detector would report. With `max_hidden`, people whose box is covered by more than that
        share by a nearer person's box are left out (what any detector that needs to see someone would miss).
        For side views only: from overhead a person is a head and shoulders, not a feet-to-head box."""
        if self.node.camera is None or self.node.camera.kind == "overhead":
            raise ValueError("person_boxes is for side (oblique) views; an overhead camera sees heads, not boxes")
        cam = self.renderer.camera
        boxes: list[tuple[float, float, float, float, float]] = []
        for f in self.figures(t):
            (foot, head), depth = cam.project(np.array([[f.x, f.y, 0.0], [f.x, f.y, f.height_m]]))
            if depth[0] <= 0 or not 0 <= foot[0] < cam.width or head[1] >= cam.height or foot[1] < 0:
                continue
            h = float(abs(foot[1] - head[1]))
            boxes.append((float(foot[0]) - 0.2 * h, float(min(foot[1], head[1])), 0.4 * h, h, float(depth[0])))
        if max_hidden is not None:
            boxes = [b for b in boxes if _hidden_share(b, boxes) <= max_hidden]
        return [b[:4] for b in boxes]

    def frames(self) -> Iterator[tuple[int, float, np.ndarray]]:
        """(frame index from 1, scene time s, BGR frame) for the whole scene."""
        for i in range(int(self.duration_s * self.fps)):
            t = i / self.fps
            yield i + 1, t, self.renderer.render(self.t_start + t, self.figures(t), i)


def _hidden_share(box: tuple[float, ...], others: list[tuple[float, ...]]) -> float:
    """The largest share of `box` covered by one nearer box (boxes are left, top, width, height, depth)."""
    x, y, w, h, depth = box
    share = 0.0
    for ox, oy, ow, oh, odepth in others:
        if odepth < depth:
            iw = max(0.0, min(x + w, ox + ow) - max(x, ox))
            ih = max(0.0, min(y + h, oy + oh) - max(y, oy))
            share = max(share, iw * ih / (w * h))
    return share


def busy_door(plan: StorePlan, camera: str = "overhead", parties: int = 150, seed: int = 1,
              mean_gap_s: float = 1.0, resolution: tuple[int, int] = (320, 240)) -> EntranceScene:
    """A scene of `parties` parties through the door and passers-by (see the module docstring).

    Parties arrive in each direction at random (on average one every 2 x `mean_gap_s` seconds), held
    back while the door is taken: a party reaches the line at least a second after the previous one of
    its direction has passed it. With the default, about 0.55 crossings a second: a very busy door.
    """
    rng = np.random.default_rng(seed)
    (x1, y1), (x2, y2) = plan.entrance.line
    mid = np.array([(x1 + x2) / 2, (y1 + y2) / 2])
    along = np.array([x2 - x1, y2 - y1]) / math.hypot(x2 - x1, y2 - y1)
    inward = np.array(plan.inward_normal)
    door_half = math.hypot(x2 - x1, y2 - y1) / 2
    walkers: list[Walker] = []
    busy_until = {"in": -1e9, "out": -1e9}   # when the previous party of each direction has passed the line
    whole_door_until = -1e9                  # a party of three side by side takes the whole door
    # each direction has its own arrivals (Poisson, delayed by the door being busy); parties are placed in time order
    arrival = {d: 2.0 + rng.exponential(2 * mean_gap_s) for d in ("in", "out")}
    pid = 0

    def point(offset_along: float, offset_in: float) -> tuple[float, float]:
        p = mid + along * offset_along + inward * offset_in
        return float(p[0]), float(p[1])

    for _ in range(parties):
        direction = min(arrival, key=arrival.get)  # type: ignore[arg-type]
        t = arrival[direction]
        size = int(rng.choice([1, 2, 3], p=[0.6, 0.28, 0.12]))
        side_by_side = size > 1 and rng.random() < 0.7
        behaviour = rng.choice(["walk", "pause_go", "pause_back", "turn_round"], p=[0.8, 0.07, 0.07, 0.06])
        speed = float(rng.uniform(1.1, 1.5))
        wide = side_by_side and size == 3
        other = "out" if direction == "in" else "in"
        # the leader reaches the line at least a second after the previous party of this direction left it
        start = max(t, busy_until[direction] + 1.0 - VIEW_M / speed, whole_door_until + 0.8)
        if wide:
            start = max(start, busy_until[other] + 0.8)
        # lane: each direction keeps to its own (right-hand) half of the door; three abreast take it all
        sign = 1.0 if direction == "in" else -1.0
        lane = 0.0 if wide else sign * rng.uniform(0.3, 0.5)
        if side_by_side:
            lateral = [(k - (size - 1) / 2) * SPACING_M for k in range(size)]
            lag = [0.0] * size
        else:
            lateral = [0.0] * size
            lag = [k * IN_FILE_M for k in range(size)]
        lateral = [min(door_half - 0.25, max(-(door_half - 0.25), lane + d)) for d in lateral]
        heading = 1.0 if direction == "in" else -1.0     # along the inward normal
        t_line = start + VIEW_M / speed                   # the leader reaches the line
        pause = float(rng.uniform(1.5, 4.0))
        for k in range(size):
            pid += 1
            lat = lateral[k] + rng.normal(0, 0.04)
            h = float(rng.uniform(1.55, 1.9))
            lg = lag[k] / speed
            t0 = start + lg
            far = -heading * VIEW_M
            pts: list[tuple[float, float, float]] = [(t0, *point(lat, far))]
            if behaviour == "walk":
                pts.append((t0 + 2 * VIEW_M / speed, *point(lat + rng.normal(0, 0.1), -far)))
            elif behaviour in ("pause_go", "pause_back"):
                stop = -heading * (0.3 + lag[k])                 # a step short of the line (or of the one ahead)
                t_stop = t0 + (VIEW_M - 0.3 - lag[k]) / speed
                pts.append((t_stop, *point(lat, stop)))
                pts.append((t_stop + pause, *point(lat, stop)))
                if behaviour == "pause_go":
                    pts.append((t_stop + pause + (VIEW_M + 0.3 + lag[k]) / speed, *point(lat, -far)))
                else:
                    pts.append((t_stop + pause + (VIEW_M - 0.3 - lag[k]) / speed, *point(lat, far)))
            else:  # turn_round: through the door, 1.5 m on, and straight back out the way they came
                turn = heading * 1.5
                t_turn = t0 + (VIEW_M + 1.5) / speed
                pts.append((t_turn, *point(lat, turn)))
                pts.append((t_turn + 0.8, *point(lat + 0.3 * sign, turn)))
                pts.append((t_turn + 0.8 + (VIEW_M + 1.5) / speed, *point(lat + 0.3 * sign, far)))
            formation = "side by side" if side_by_side else "in file" if size > 1 else "alone"
            walkers.append(Walker(pid, h, pts, f"{direction} {size} {formation} {behaviour}"))
        end_line = t_line + (pause if behaviour.startswith("pause") else 0) + (size * IN_FILE_M + 1.0) / speed
        if behaviour == "turn_round":
            end_line += 2 * 1.5 / speed + 0.8
        busy_until[direction] = end_line
        if behaviour == "turn_round":
            busy_until[other] = max(busy_until[other], end_line)
        if wide:
            whole_door_until = end_line
        arrival[direction] = start + rng.exponential(2 * mean_gap_s)
    duration = max(w.t1 for w in walkers) + 1.0
    # passers-by on the pavement, both ways, through the whole scene
    (sx1, sy1), (sx2, sy2) = plan.storefront.path
    p = 0.0
    while True:
        p += rng.exponential(6.0)
        if p > duration:
            break
        pid += 1
        speed = float(rng.uniform(1.0, 1.5))
        a, b = np.array([mid[0] - 6, sy1]), np.array([mid[0] + 6, sy2])
        if rng.random() < 0.5:
            a, b = b, a
        a = a + [0, rng.normal(0, 0.2)]
        b = b + [0, rng.normal(0, 0.2)]
        walkers.append(Walker(pid, float(rng.uniform(1.55, 1.9)),
                              [(p, float(a[0]), float(a[1])), (p + 12 / speed, float(b[0]), float(b[1]))], "passer-by"))
    node = cameras(plan, resolution)[camera]
    return EntranceScene(plan, node, walkers, duration, seed)
