"""Minimum-cost assignment (the Hungarian problem) for the tracker, without SciPy.

`scipy.optimize.linear_sum_assignment` solves this exactly, but importing `scipy.optimize` maps about
55 MB of shared libraries into the process (SciPy 1.17 beside OpenCV), a third of a Pi node's memory
budget for the camera counter, for matrices of a few tracks by a few detections. This is the same
algorithm as SciPy's (shortest augmenting paths with dual variables, Crouse 2016, "On implementing 2D
rectangular assignment algorithms"), one numpy pass per augmenting step, and gives the same pairs; the
tests check it against SciPy on random matrices.
"""

from __future__ import annotations

import numpy as np


def linear_sum_assignment(cost: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """(rows, cols) of a minimum-cost assignment of `cost` (n x m; `inf` = not allowed), rows ascending:
    min(n, m) pairs. Raises ValueError when no assignment of finite cost exists."""
    c = np.asarray(cost, dtype=np.float64)
    if c.ndim != 2:
        raise ValueError(f"the cost matrix must be 2-D, got shape {c.shape}")
    if np.isnan(c).any() or (c == -np.inf).any():
        raise ValueError("the cost matrix contains NaN or -inf")
    transposed = c.shape[0] > c.shape[1]
    if transposed:
        c = c.T
    nr, nc = c.shape
    u, v = np.zeros(nr), np.zeros(nc)
    col4row = np.full(nr, -1)
    row4col = np.full(nc, -1)
    for cur in range(nr):
        shortest = np.full(nc, np.inf)
        path = np.full(nc, -1)
        seen_rows = np.zeros(nr, dtype=bool)
        seen_cols = np.zeros(nc, dtype=bool)
        low, i, sink = 0.0, cur, -1
        while sink < 0:  # Dijkstra over the columns from row `cur` to a free column
            seen_rows[i] = True
            reduced = low + c[i] - u[i] - v
            better = ~seen_cols & (reduced < shortest)
            path[better] = i
            shortest[better] = reduced[better]
            open_cost = np.where(seen_cols, np.inf, shortest)
            low = float(open_cost.min())
            if low == np.inf:
                raise ValueError("the cost matrix is infeasible: no assignment of finite cost exists")
            ties = np.flatnonzero(open_cost == low)
            free = ties[row4col[ties] < 0]
            j = int(free[0] if len(free) else ties[0])
            seen_cols[j] = True
            if row4col[j] < 0:
                sink = j
            else:
                i = int(row4col[j])
        u[cur] += low
        others = seen_rows.copy()
        others[cur] = False
        u[others] += low - shortest[col4row[others]]
        v[seen_cols] -= low - shortest[seen_cols]
        j = sink
        while True:  # flip the path's pairs
            i = int(path[j])
            row4col[j] = i
            col4row[i], j = j, col4row[i]
            if i == cur:
                break
    if transposed:
        order = np.argsort(col4row)
        return col4row[order], order
    return np.arange(nr), col4row
