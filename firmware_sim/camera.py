"""Synthetic camera frames: the store seen by an overhead or oblique camera, with people walking in it.

A pinhole camera at the node's pose renders the floor (tiles, door mat, what lies outside the
outline), people as figures whose size follows perspective, their shadows, slow and sudden
illumination changes, and sensor noise. Deterministic for a seed and a frame index; no frame ever
leaves the process that renders it.
"""

from __future__ import annotations

import hashlib
from dataclasses import dataclass

import cv2
import numpy as np

from firmware_sim import geometry
from firmware_sim.plan import CameraSensor, NodePlan, StorePlan

NOISE_BANK = 8
SHADOW_OFFSET = (0.5, 0.35)   # metres the shadow falls from the feet (light from the front door side)


@dataclass(frozen=True)
class Figure:
    """A person to draw: where their feet are, how tall, what they wear."""

    person: int
    x: float
    y: float
    height_m: float


def _person_colour(person: int) -> tuple[int, int, int]:
    digest = hashlib.blake2b(str(person).encode(), digest_size=3).digest()
    return int(40 + digest[0] * 0.7), int(40 + digest[1] * 0.7), int(40 + digest[2] * 0.7)


class PinholeCamera:
    def __init__(self, node: NodePlan) -> None:
        assert node.camera is not None
        cam: CameraSensor = node.camera
        self.sensor = cam
        self.width, self.height = cam.resolution
        yaw, pitch = np.radians(cam.yaw_deg), np.radians(cam.pitch_deg)
        self.centre = np.array([node.position[0], node.position[1], cam.height_m])
        self.forward = np.array([np.cos(pitch) * np.cos(yaw), np.cos(pitch) * np.sin(yaw), -np.sin(pitch)])
        self.right = np.array([np.sin(yaw), -np.cos(yaw), 0.0])
        self.down = np.cross(self.forward, self.right)
        self.focal = (self.width / 2) / np.tan(np.radians(cam.hfov_deg) / 2)

    def project(self, points: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """World points (n, 3) to pixels (n, 2) and depth (n,); depth <= 0 is behind the camera."""
        rel = points - self.centre
        depth = rel @ self.forward
        safe = np.where(depth > 1e-3, depth, 1e-3)
        u = self.width / 2 + self.focal * (rel @ self.right) / safe
        v = self.height / 2 + self.focal * (rel @ self.down) / safe
        return np.stack([u, v], axis=-1), depth

    def rays_to_floor(self) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """For every pixel, where its ray meets the floor plane (x, y) and whether it does at all."""
        u, v = np.meshgrid(np.arange(self.width) + 0.5, np.arange(self.height) + 0.5)
        direction = (self.forward[None, None, :] + ((u - self.width / 2) / self.focal)[..., None] * self.right
                     + ((v - self.height / 2) / self.focal)[..., None] * self.down)
        dz = direction[..., 2]
        hits = dz < -1e-6
        s = np.where(hits, -self.centre[2] / np.where(hits, dz, -1), 0)
        return self.centre[0] + s * direction[..., 0], self.centre[1] + s * direction[..., 1], hits


class FrameRenderer:
    """Renders frames for one camera node; `render(t, figures, index)` returns a BGR uint8 image."""

    def __init__(self, plan: StorePlan, node: NodePlan, seed: int) -> None:
        self.camera = PinholeCamera(node)
        self.plan = plan
        self.seed = seed
        rng = np.random.default_rng(seed)
        self.background = self._background(rng)
        w, h = self.camera.width, self.camera.height
        noise = rng.normal(0, 3.0, (NOISE_BANK, h, w, 3))
        self._noise_up = np.clip(noise, 0, 255).astype(np.uint8)
        self._noise_down = np.clip(-noise, 0, 255).astype(np.uint8)
        # Lights switching: a few moments in each hour when the scene brightness steps.
        self._switch_phase = rng.uniform(0, 3600, 4)
        self._switch_gain = rng.choice([0.75, 0.85, 1.15, 1.25], 4)

    def _background(self, rng: np.random.Generator) -> np.ndarray:
        fx, fy, hits = self.camera.rays_to_floor()
        inside = hits & geometry.contains(self.plan.floor, fx, fy)
        tiles = ((np.floor(fx / 0.6) + np.floor(fy / 0.6)) % 2).astype(np.float32)
        base = np.empty(fx.shape + (3,), dtype=np.float32)
        base[...] = (150, 160, 165)
        base += (tiles * 18)[..., None]
        (x1, y1), (x2, y2) = self.plan.entrance.line
        mat = hits & (np.abs(fy - (y1 + y2) / 2) < 0.8) & (fx > min(x1, x2)) & (fx < max(x1, x2))
        base[mat] = (60, 70, 80)
        pavement = hits & ~inside
        base[pavement] = (120, 120, 118)
        base[~hits] = (200, 205, 210)
        grain = rng.normal(0, 6, fx.shape).astype(np.float32)
        base += cv2.GaussianBlur(grain, (0, 0), 1.5)[..., None]
        return np.clip(base, 0, 255).astype(np.uint8)

    def gain(self, t: float) -> float:
        """Slow drift (daylight) and sudden steps (lights switched) in scene brightness."""
        g = 1.0 + 0.06 * np.sin(2 * np.pi * t / 1800.0)
        in_hour = t % 3600
        for phase, step in zip(self._switch_phase, self._switch_gain, strict=True):
            if phase <= in_hour < phase + 120:
                g *= step
        return float(g)

    def render(self, t: float, figures: list[Figure], index: int) -> np.ndarray:
        cam = self.camera
        frame = self.background.copy()
        if figures:
            feet = np.array([[f.x, f.y, 0.0] for f in figures])
            heads = np.array([[f.x, f.y, f.height_m] for f in figures])
            shadows = feet + np.array([SHADOW_OFFSET[0], SHADOW_OFFSET[1], 0.0])
            foot_px, foot_depth = cam.project(feet)
            head_px, head_depth = cam.project(heads)
            shadow_px, _ = cam.project(shadows)
            order = np.argsort(-head_depth)
            shadow_mask = np.zeros(frame.shape[:2], dtype=np.uint8)
            for i in order:
                if head_depth[i] <= 0.2 or foot_depth[i] <= 0.2:
                    continue
                radius = max(1, int(0.3 * cam.focal / foot_depth[i]))
                sx, sy = shadow_px[i]
                if abs(sx) < 4 * cam.width and abs(sy) < 4 * cam.height:
                    cv2.ellipse(shadow_mask, (int(sx), int(sy)), (radius, max(1, radius // 2)), 35, 0, 360, 255, -1)
            frame = self._darken(frame, shadow_mask)
            for i in order:
                if head_depth[i] <= 0.2 or foot_depth[i] <= 0.2:
                    continue
                self._draw_person(frame, figures[i], foot_px[i], head_px[i], cam.focal / head_depth[i])
        g = self.gain(t)
        if abs(g - 1.0) > 1e-3:
            frame = cv2.convertScaleAbs(frame, alpha=g)
        k = int.from_bytes(hashlib.blake2b(f"{self.seed}:{index}".encode(), digest_size=2).digest(), "big") % NOISE_BANK
        frame = cv2.add(frame, self._noise_up[k])
        return cv2.subtract(frame, self._noise_down[k])

    @staticmethod
    def _darken(frame: np.ndarray, mask: np.ndarray) -> np.ndarray:
        if not mask.any():
            return frame
        soft = cv2.GaussianBlur(mask, (0, 0), 3)
        factor = 1.0 - 0.45 * (soft.astype(np.float32) / 255.0)
        return (frame * factor[..., None]).astype(np.uint8)

    def _draw_person(self, frame: np.ndarray, figure: Figure, foot: np.ndarray, head: np.ndarray,
                     px_per_m: float) -> None:
        colour = _person_colour(figure.person)
        hair = (30, 35, 45)
        shoulder = max(2, int(0.24 * px_per_m))
        if self.camera.sensor.kind == "overhead":
            cx, cy = int(head[0]), int(head[1])
            cv2.ellipse(frame, (cx, cy), (shoulder, max(2, int(shoulder * 0.55))), 0, 0, 360, colour, -1)
            cv2.circle(frame, (cx, cy), max(2, int(0.1 * px_per_m)), hair, -1)
            return
        fx, fy = int(foot[0]), int(foot[1])
        hx, hy = int(head[0]), int(head[1])
        body_top = (int(hx + (fx - hx) * 0.15), int(hy + (fy - hy) * 0.15))
        cv2.line(frame, body_top, (fx, fy), colour, max(2, int(0.36 * px_per_m)))
        cv2.circle(frame, (hx + (fx - hx) // 14, hy + (fy - hy) // 14), max(2, int(0.11 * px_per_m)), hair, -1)
