"""edge.vision.assign: the tracker's assignment solver gives SciPy's optimum, on any shape, with forbidden pairs."""

from __future__ import annotations

import subprocess
import sys

import numpy as np
import pytest
from scipy.optimize import linear_sum_assignment as scipy_lsa

from edge.vision.assign import linear_sum_assignment


@pytest.mark.parametrize("seed", range(4))
def test_same_total_cost_as_scipy_on_random_matrices(seed: int) -> None:
    rng = np.random.default_rng(seed)
    for k in range(400):
        n, m = (int(v) for v in rng.integers(1, 14, 2))
        cost = rng.random((n, m)) * 60
        if k % 3 == 0:
            cost = np.round(cost / 15)          # many ties
        if k % 2:
            cost[rng.random((n, m)) < 0.3] = np.inf  # pairs outside the gate
        try:
            want_rows, want_cols = scipy_lsa(cost)
        except ValueError:
            with pytest.raises(ValueError, match="infeasible"):
                linear_sum_assignment(cost)
            continue
        rows, cols = linear_sum_assignment(cost)
        assert len(rows) == len(want_rows) == min(n, m)
        assert list(rows) == sorted(set(rows)) and len(set(cols)) == len(cols)
        assert cost[rows, cols].sum() == pytest.approx(cost[want_rows, want_cols].sum())


def test_the_trackers_matrix_shape_with_a_dummy_column_per_track() -> None:
    # Two tracks, two detections; each track may also stay unmatched at the cost of its gate (10).
    cost = np.array([[3.0, np.inf, 10.0, np.inf], [4.0, 12.0, np.inf, 10.0]])
    rows, cols = linear_sum_assignment(cost)
    # 3 + 10 (track 1 coasts) beats 3 + 12 (track 1 takes the far detection) and 10 + 4
    assert [(int(r), int(c)) for r, c in zip(rows, cols)] == [(0, 0), (1, 3)]


def test_bad_matrices_are_refused_with_the_reason() -> None:
    with pytest.raises(ValueError, match="2-D"):
        linear_sum_assignment(np.zeros(3))
    with pytest.raises(ValueError, match="NaN"):
        linear_sum_assignment(np.array([[np.nan, 1.0]]))
    with pytest.raises(ValueError, match="infeasible"):
        linear_sum_assignment(np.array([[np.inf, np.inf], [1.0, 2.0]]))
    rows, cols = linear_sum_assignment(np.zeros((0, 3)))
    assert len(rows) == len(cols) == 0


def _loaded(module: str) -> set[str]:
    code = f"import sys, {module}; print(' '.join(sorted(m for m in sys.modules if '.' not in m)))"
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    return set(out.stdout.split())


def test_the_camera_counter_does_not_load_scipy() -> None:
    # SciPy's optimize package maps about 55 MB into a camera node; counting and scoring must not need it.
    assert "scipy" not in _loaded("edge.vision.counter") | _loaded("edge.vision.mot")


def test_the_omnisense_command_loads_neither_scipy_nor_opencv_until_a_command_needs_them() -> None:
    # Every node and the gateway start through this module: a radio node has no use for OpenCV or SciPy.
    assert not {"scipy", "cv2"} & _loaded("omnisense.cli")
