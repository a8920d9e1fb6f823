"""`omnisense vision ...`: run the people counter on a recording and score it against MOT ground truth.

Thin: reading the video and printing; detection, tracking, counting and scoring are in `edge.vision`.

Coordinates: `--line` and `--roi` are in the pixels of the ground truth file (for PETS09, the native
768x576), like the annotations they are compared with. The counter runs on the video's pixels, so they
are multiplied by `--gt-scale` (ground-truth pixels -> video pixels) before they reach it. The truth
side is computed in ground-truth pixels, unscaled. `--person-height` is in video pixels.
"""

from __future__ import annotations

import json
import time
from pathlib import Path
from typing import Annotated

import typer
from rich.console import Console
from rich.table import Table

from omnisense.runtime import err_console

vision_app = typer.Typer(
    help="Camera people counting on recordings: line crossings and people in view, scored against ground truth.",
    no_args_is_help=True,
    add_completion=False,
    pretty_exceptions_enable=False,
)


@vision_app.callback()
def vision() -> None:
    """Camera people counting on recordings: line crossings and people in view, scored against ground truth."""


def _fail(message: str) -> typer.Exit:
    err_console.print(f"[bold red]error:[/] {message}", highlight=False, markup=True)
    return typer.Exit(2)


def parse_polygon(text: str, scale: float = 1.0) -> list[tuple[float, float]]:
    """`X1,Y1,X2,Y2,X3,Y3,...` (at least three points) times `scale`."""
    try:
        v = [float(p) * scale for p in text.replace(" ", "").split(",")]
    except ValueError:
        raise ValueError(f"bad --roi {text!r}: write X1,Y1,X2,Y2,X3,Y3[,...]") from None
    if len(v) < 6 or len(v) % 2:
        raise ValueError(f"bad --roi {text!r}: need an even number of values, at least three points")
    return list(zip(v[0::2], v[1::2]))


def _fmt(v: float | None, pct: bool = False) -> str:
    if v is None:
        return "-"
    return f"{100 * v:.1f}%" if pct else f"{v:.3f}"


@vision_app.command("eval")
def eval_(
    video: Annotated[Path, typer.Argument(help="Recording readable by OpenCV.", show_default=False)],
    gt: Annotated[Path, typer.Option("--gt", help="MOTChallenge ground truth (frame,id,left,top,width,height,flag,...).", show_default=False)],
    line: Annotated[str, typer.Option("--line", help="x=X, y=Y or X1,Y1,X2,Y2 in ground-truth pixels.", show_default=False)],
    gt_scale: Annotated[float, typer.Option("--gt-scale", help="Ground-truth pixels -> video pixels (PETS09 vtest.avi: 0.625).")] = 1.0,
    roi: Annotated[str | None, typer.Option("--roi", help="Polygon X1,Y1,X2,Y2,X3,Y3,... in ground-truth pixels: people in view are counted inside it only.")] = None,
    person_height: Annotated[float | None, typer.Option("--person-height", help="Person height in video pixels at the frame's middle row; it grows with y by the perspective setting (default: frame height / 7).")] = None,
    detector_model: Annotated[Path | None, typer.Option("--detector-model", help="An ONNX person detector (YOLOv5/YOLOv8 export) instead of background subtraction.")] = None,
    tolerance: Annotated[int, typer.Option(help="Frames within which a system crossing matches a true one.")] = 10,
    as_json: Annotated[bool, typer.Option("--json", help="Print one JSON object.")] = False,
) -> None:
    """Count line crossings and people in view in VIDEO and score them against the ground truth."""
    # OpenCV and the counter are imported here, not with the CLI: every `omnisense` process (a radio node,
    # the gateway) would otherwise map OpenCV with numpy, about 55 MB.
    import cv2
    import numpy as np
    from pydantic import ValidationError

    from edge.settings import format_validation_error
    from edge.vision.counter import VisionPipeline, VisionSettings
    from edge.vision.dnn import ModelError
    from edge.vision.line import DIRECTIONS, CountingLine, LineError
    from edge.vision.mot import (
        GroundTruthError,
        mean_absolute_error,
        people_per_frame,
        read_gt,
        score_crossings,
        true_crossings,
    )

    if gt_scale <= 0:
        raise _fail(f"--gt-scale must be positive, got {gt_scale}")
    try:
        truth_line = CountingLine.parse(line)
        video_line = CountingLine.parse(line, scale=gt_scale)
    except LineError as e:
        raise _fail(str(e)) from None
    try:
        truth_roi = parse_polygon(roi) if roi else None
        video_roi = parse_polygon(roi, gt_scale) if roi else None
    except ValueError as e:
        raise _fail(str(e)) from None
    try:
        truth = read_gt(gt)
    except GroundTruthError as e:
        raise _fail(str(e)) from None
    vl = video_line
    try:
        settings = VisionSettings(line=f"{vl.x1},{vl.y1},{vl.x2},{vl.y2}", roi=video_roi, person_height_px=person_height,
                                  detector_model=detector_model)
        pipe = VisionPipeline(settings)
    except ValidationError as e:
        raise _fail("invalid counting settings:\n" + format_validation_error(e)) from None
    except ModelError as e:
        raise _fail(str(e)) from None
    if not video.is_file():
        raise _fail(f"{video}: no such file")
    cap = cv2.VideoCapture(str(video))
    if not cap.isOpened():
        raise _fail(f"{video}: OpenCV cannot open it as a video")
    crossings, seen = [], []
    t0 = time.perf_counter()
    n = 0
    try:
        while True:
            ok, frame = cap.read()
            if not ok:
                break
            n += 1
            r = pipe.process(frame, n)
            crossings += r.crossings
            seen.append(r.people_in_view)
    finally:
        cap.release()
    elapsed = time.perf_counter() - t0
    if n == 0:
        raise _fail(f"{video}: no frames could be decoded")
    true = [c for c in true_crossings(truth, truth_line) if c.frame <= n]
    scores = score_crossings(crossings, true, tolerance)
    frames = np.arange(1, n + 1)
    mae = mean_absolute_error(np.array(seen), people_per_frame(truth, frames, truth_roi))
    fps = n / elapsed if elapsed > 0 else float("inf")
    result = {
        "video": str(video), "frames": n, "line": line, "gt_scale": gt_scale, "roi": truth_roi,
        "tolerance_frames": tolerance,
        "directions": {d: scores[d].as_dict() for d in (*DIRECTIONS, "all")},
        "people_in_view_mae": mae, "fps": fps,
    }
    if as_json:
        typer.echo(json.dumps(result))
        return
    table = Table(title=f"{video.name}: line {line} (ground-truth pixels, x{gt_scale} in the video), {n} frames")
    for col in ("direction", "system", "truth", "count accuracy", "precision", "recall", "F1"):
        table.add_column(col, justify="left" if col == "direction" else "right")
    for d in (*DIRECTIONS, "all"):
        s = scores[d]
        table.add_row(d, str(s.system), str(s.truth), _fmt(s.count_accuracy, True), _fmt(s.precision),
                      _fmt(s.recall), _fmt(s.f1))
    console = Console()
    console.print(table)
    console.print(f"people in view: MAE {mae:.3f} per frame{' inside the ROI' if roi else ''}; speed {fps:.1f} frames/s")
