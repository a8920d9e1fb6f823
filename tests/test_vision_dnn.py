"""edge.vision.dnn: an installer's ONNX person detector through OpenCV's dnn module.

No trained weights can be shipped or downloaded here, so the models are generated with the `onnx`
package: real ONNX graphs in the two export layouts (YOLOv8 and YOLOv5), loaded and run by
cv2.dnn like a trained file. Their "detections" follow the frame: the person box's centre row is
the frame's mean red level, so a scene can walk a person across a line.
"""

from __future__ import annotations

from pathlib import Path

import cv2
import numpy as np
import onnx
import pytest
from onnx import TensorProto, helper, numpy_helper

from edge.settings import ConfigError
from edge.vision.camera_source import build_counter, replace_placement
from edge.vision.counter import VisionPipeline, VisionSettings
from edge.vision.dnn import DnnDetector, ModelError, decode

SIZE = 320  # the generated models' input


def yolo_model(path: Path, boxes: list[tuple[float, float, float, float, int, float]], v8: bool = True,
               classes: int = 3, red_row: int | None = None) -> Path:
    """An ONNX model whose output holds `boxes` (centre x, centre y, w, h in input pixels, class, score);
    with `red_row`, that box's centre y is instead SIZE x the input's mean red level."""
    n = max(8, len(boxes))
    rows = np.zeros((n, 4 + classes + (0 if v8 else 1)), dtype=np.float32)
    first = 4 if v8 else 5
    for i, (cx, cy, w, h, cls, score) in enumerate(boxes):
        rows[i, :4] = cx, cy, w, h
        rows[i, first + cls] = score
        if not v8:
            rows[i, 4] = 1.0
    mask = np.zeros_like(rows)
    if red_row is not None:
        rows[red_row, 1] = 0.0
        mask[red_row, 1] = SIZE
    const = rows.T[None] if v8 else rows[None]
    mask = mask.T[None] if v8 else mask[None]
    graph = helper.make_graph(
        [helper.make_node("Gather", ["images", "zero"], ["red"], axis=1),
         helper.make_node("ReduceMean", ["red"], ["level"], axes=[1, 2], keepdims=1),
         helper.make_node("Mul", ["level", "mask"], ["moved"]),
         helper.make_node("Add", ["moved", "const"], ["output0"])],
        "yolo", [helper.make_tensor_value_info("images", TensorProto.FLOAT, [1, 3, SIZE, SIZE])],
        [helper.make_tensor_value_info("output0", TensorProto.FLOAT, list(const.shape))],
        [numpy_helper.from_array(np.array(0, dtype=np.int64), "zero"),
         numpy_helper.from_array(mask.astype(np.float32), "mask"),
         numpy_helper.from_array(const.astype(np.float32), "const")])
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 13)])
    model.ir_version = 8
    onnx.checker.check_model(model)
    onnx.save(model, str(path))
    return path


@pytest.mark.parametrize("v8", [True, False])
def test_person_boxes_come_back_in_frame_pixels_through_the_letterbox(tmp_path: Path, v8: bool) -> None:
    # A 640x480 frame letterboxed into 320: scale 0.5, 40 px of padding above and below.
    model = yolo_model(tmp_path / "m.onnx", [
        (100, 140, 20, 60, 0, 0.9),    # a person at frame (180..220, 140..260)
        (102, 141, 22, 58, 0, 0.7),    # the same person again, less sure: merged away
        (250, 200, 30, 30, 2, 0.95),   # another class
        (200, 100, 20, 60, 0, 0.2),    # a person below the score threshold
    ], v8=v8)
    found = DnnDetector(model, input_size=SIZE).detect(np.zeros((480, 640, 3), np.uint8))
    assert len(found) == 1
    assert (found.x[0], found.y[0], found.w[0], found.h[0]) == pytest.approx((180, 140, 40, 120), abs=0.5)
    assert tuple(found.feet[0]) == pytest.approx((200, 260), abs=0.5)


def test_an_unusable_detector_file_is_named_with_the_reason(tmp_path: Path) -> None:
    with pytest.raises(ModelError, match="no such detector file"):
        DnnDetector(tmp_path / "missing.onnx")
    garbage = tmp_path / "person.onnx"
    garbage.write_bytes(b"not a model at all" * 10)
    with pytest.raises(ModelError, match=r"person\.onnx: OpenCV cannot load it"):
        DnnDetector(garbage)
    with pytest.raises(ModelError, match="person_class 5 is not one of its 3 classes"):
        DnnDetector(yolo_model(tmp_path / "m.onnx", [(10, 10, 5, 5, 0, 0.9)]), input_size=SIZE,
                    person_class=5).detect(np.zeros((SIZE, SIZE, 3), np.uint8))
    with pytest.raises(ModelError, match="not a YOLOv5 or YOLOv8 detection head"):
        decode(np.zeros((1, 10)), 1.0, (0, 0))


def test_a_bad_detector_in_the_camera_config_fails_at_start_up(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match=r"pipeline\.detector_model.*no such detector file"):
        build_counter({"line": "y=120", "detector_model": str(tmp_path / "missing.onnx")})
    garbage = tmp_path / "person.onnx"
    garbage.write_bytes(b"\x08\x01" * 50)
    with pytest.raises(ConfigError, match=r"pipeline\.detector_model: .*person\.onnx"):
        build_counter({"line": "y=120", "detector_model": str(garbage)})


def test_the_counter_counts_a_person_the_detector_walks_across_the_line(tmp_path: Path) -> None:
    # The model puts its person's centre at SIZE x the mean red level: raising the red level frame by frame
    # walks them from the top of the frame to the bottom, across y=160, once.
    model = yolo_model(tmp_path / "m.onnx", [(160, 0, 30, 90, 0, 0.9)], red_row=0)
    pipe = VisionPipeline(VisionSettings(line="y=160", detector_model=model, detector_input=SIZE,
                                         person_height_px=90, perspective=0))
    crossings = []
    for i, red in enumerate(np.linspace(0.2, 0.8, 40)):
        frame = np.zeros((SIZE, SIZE, 3), np.uint8)
        frame[..., 2] = round(red * 255)  # BGR: red is the last channel
        crossings += pipe.process(frame, i + 1).crossings
    assert [c.direction for c in crossings] == ["increasing"]
    assert isinstance(pipe.detector, DnnDetector)


def test_the_default_needs_no_detector_file() -> None:
    pipe = VisionPipeline(VisionSettings(line="y=120"))
    pipe.process(np.zeros((240, 320, 3), np.uint8), 1)
    assert type(pipe.detector).__name__ == "BlobDetector"
    assert cv2.dnn  # the module the detector uses is part of the OpenCV the project installs


def test_a_placement_change_keeps_the_loaded_detector_and_counts_on_the_new_line(tmp_path: Path) -> None:
    model = yolo_model(tmp_path / "m.onnx", [(160, 0, 30, 90, 0, 0.9)], red_row=0)
    settings = dict(detector_model=model, detector_input=SIZE, person_height_px=90, perspective=0)
    pipe = VisionPipeline(VisionSettings(line="y=60", **settings))
    loaded = pipe.detector
    pipe = replace_placement(pipe, VisionSettings(line="y=160", **settings))
    assert pipe.detector is loaded  # the network is not read from disk again
    crossings = []
    for i, red in enumerate(np.linspace(0.2, 0.8, 40)):
        frame = np.zeros((SIZE, SIZE, 3), np.uint8)
        frame[..., 2] = round(red * 255)
        crossings += pipe.process(frame, i + 1).crossings
    assert [c.direction for c in crossings] == ["increasing"]
