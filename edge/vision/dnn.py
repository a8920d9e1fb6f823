"""People from a person detector the installer provides: an ONNX export of YOLOv5 or YOLOv8, run by
OpenCV's dnn module on the CPU.

The default detector needs no weights (edge.vision.detect), but it sees foreground, not people: a
group that walks as one blob, or two people passing each other in a door, stay one blob. A trained
detector sees them apart; nothing is downloaded, the installer gives the file (`detector_model`).

Input: the frame letterboxed into an `input_size` square (aspect kept, grey 114 padding, as the
exporters train), RGB scaled to 0-1. Output, as Ultralytics exports it: YOLOv8 `(1, 4 + classes, N)`
(class scores, no objectness) or YOLOv5 `(1, N, 5 + classes)` (objectness times class score); the
first has fewer rows than columns, the second more. Boxes are centre x, centre y, width and height
in input pixels. A person is class `person_class` (0 in COCO). Boxes scoring at least `min_score` are
kept and overlapping ones merged by non-maximum suppression (`cv2.dnn.NMSBoxes`).
"""

from __future__ import annotations

from pathlib import Path

import cv2
import numpy as np

from edge.vision.detect import Detections


class ModelError(ValueError):
    """The detector file cannot be used; the message names the file and the reason."""


def decode(output: np.ndarray, scale: float, pad: tuple[float, float], person_class: int = 0,
           min_score: float = 0.4, nms_iou: float = 0.5, source: str = "the model") -> Detections:
    """Person boxes in frame pixels from one YOLO output; `scale` and `pad` (x, y) undo the letterbox."""
    out = np.asarray(output, dtype=np.float32)
    if out.ndim == 3 and out.shape[0] == 1:
        out = out[0]
    if out.ndim != 2 or min(out.shape) < 5:
        raise ModelError(f"{source}: output of shape {tuple(output.shape)} is not a YOLOv5 or YOLOv8 detection "
                         "head ((1, 4 + classes, N) or (1, N, 5 + classes))")
    v8 = out.shape[0] < out.shape[1]
    rows = out.T if v8 else out
    first_class = 4 if v8 else 5
    classes = rows.shape[1] - first_class
    if not 0 <= person_class < classes:
        raise ModelError(f"{source}: person_class {person_class} is not one of its {classes} classes")
    score = rows[:, first_class + person_class]
    if not v8:
        score = score * rows[:, 4]
    keep = np.flatnonzero(score >= min_score)
    if len(keep) == 0:
        return Detections.from_boxes([])
    cx, cy, w, h = (rows[keep, i] for i in range(4))
    boxes = np.stack([(cx - w / 2 - pad[0]) / scale, (cy - h / 2 - pad[1]) / scale, w / scale, h / scale], axis=1)
    chosen = cv2.dnn.NMSBoxes(boxes.tolist(), score[keep].tolist(), min_score, nms_iou)
    return Detections.from_boxes(boxes[np.asarray(chosen, dtype=int).reshape(-1)])


class DnnDetector:
    """Same interface as `BlobDetector`: `detect(frame)` returns the people in it."""

    def __init__(self, model: Path | str, input_size: int = 640, min_score: float = 0.4, nms_iou: float = 0.5,
                 person_class: int = 0) -> None:
        path = Path(model)
        if not path.is_file():
            raise ModelError(f"{path}: no such detector file")
        try:
            self.net = cv2.dnn.readNet(str(path))
        except cv2.error as exc:
            reason = str(exc).strip().splitlines()[-1] if str(exc).strip() else "unknown error"
            raise ModelError(f"{path}: OpenCV cannot load it as a detector model ({reason})") from None
        self.path = path
        self.size = input_size
        self.min_score = min_score
        self.nms_iou = nms_iou
        self.person_class = person_class

    def detect(self, frame: np.ndarray) -> Detections:
        if frame.ndim == 2:
            frame = cv2.cvtColor(frame, cv2.COLOR_GRAY2BGR)
        h, w = frame.shape[:2]
        scale = min(self.size / w, self.size / h)
        nw, nh = round(w * scale), round(h * scale)
        px, py = (self.size - nw) // 2, (self.size - nh) // 2
        canvas = np.full((self.size, self.size, 3), 114, dtype=np.uint8)
        canvas[py:py + nh, px:px + nw] = cv2.resize(frame, (nw, nh), interpolation=cv2.INTER_AREA)
        self.net.setInput(cv2.dnn.blobFromImage(canvas, 1 / 255.0, swapRB=True))
        try:
            output = self.net.forward()
        except cv2.error as exc:
            raise ModelError(f"{self.path}: the model failed on a {w}x{h} frame ({str(exc).strip()[-200:]})") from None
        return decode(output, scale, (px, py), self.person_class, self.min_score, self.nms_iou, str(self.path))
