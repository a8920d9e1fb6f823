"""edge.vision: people counting from camera frames on a Pi-class CPU.

Pure processing, frames in and results out (no capture, no I/O):
- `line`: the counting line, which side a point is on, direction names.
- `detect`: people as foreground blobs (MOG2 background subtraction, shadows dropped, groups split by
  an expected person size). Needs no downloaded weights.
- `dnn`: people from an installer-provided ONNX person detector (YOLOv5/YOLOv8) through cv2.dnn.
- `assign`: minimum-cost assignment (SciPy's algorithm, without loading SciPy on a node).
- `track`: SORT-like multi-object tracking (constant-velocity Kalman on the foot point, Hungarian
  assignment with a distance gate, min hits to confirm, max age to delete).
- `counter`: line crossings with a hysteresis band (people in file counted from the person in
  front), occupancy, zones, and `VisionPipeline` which ties detection, tracking and counting together.
- `mot`: MOTChallenge ground truth, true crossings and the evaluation metrics.
"""
