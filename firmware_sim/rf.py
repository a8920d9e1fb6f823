"""Received signal strength at each node: log-distance path loss, walls, shadowing, fast fading.

    RSSI = P(1 m) + gain - 10 n log10(d / 1 m) - sum(walls crossed) + S(t) + F

S is log-normal shadowing that changes smoothly over `shadowing_corr_s` (a sum of sinusoids with
random phases per transmitter and node, so it is deterministic and needs no state), F is Rician
fast fading drawn per reception. Vectorised over receptions and nodes.
"""

from __future__ import annotations

import numpy as np

from firmware_sim.plan import RadioModel, StorePlan

N_SINUSOIDS = 6


class RadioChannel:
    def __init__(self, plan: StorePlan, n_transmitters: int, seed: int) -> None:
        self.model: RadioModel = plan.radio
        self.nodes = plan.nodes
        self.node_xy = np.array([n.position for n in plan.nodes], dtype=float)
        self.walls = np.array([w.segment for w in plan.walls], dtype=float).reshape(-1, 2, 2)
        self.wall_db = np.array([w.attenuation_db for w in plan.walls], dtype=float)
        rng = np.random.default_rng(seed)
        shape = (n_transmitters, len(plan.nodes), N_SINUSOIDS)
        self._freq = rng.uniform(0.2, 1.0, shape) / self.model.shadowing_corr_s
        self._phase = rng.uniform(0, 2 * np.pi, shape)
        self._fading_rng = np.random.default_rng(seed + 1)

    def wall_loss(self, x: np.ndarray, y: np.ndarray) -> np.ndarray:
        """dB lost to walls on the straight path from each (x, y) to each node: shape (len(x), nodes)."""
        if not len(self.walls):
            return np.zeros((len(x), len(self.node_xy)))
        p = np.stack([x, y], axis=-1)[:, None, None, :]          # (E, 1, 1, 2)
        q = self.node_xy[None, :, None, :]                        # (1, N, 1, 2)
        a = self.walls[None, None, :, 0, :]                       # (1, 1, W, 2)
        b = self.walls[None, None, :, 1, :]

        def orient(u: np.ndarray, v: np.ndarray, w: np.ndarray) -> np.ndarray:
            return (v[..., 0] - u[..., 0]) * (w[..., 1] - u[..., 1]) - (v[..., 1] - u[..., 1]) * (w[..., 0] - u[..., 0])

        crosses = (orient(a, b, p) * orient(a, b, q) < 0) & (orient(p, q, a) * orient(p, q, b) < 0)
        return crosses.astype(float) @ self.wall_db

    def mean_rssi(self, x: np.ndarray, y: np.ndarray, rssi_1m: float) -> np.ndarray:
        """Path loss and walls only (no shadowing or fading): what the model predicts on average."""
        d = np.hypot(x[:, None] - self.node_xy[None, :, 0], y[:, None] - self.node_xy[None, :, 1])
        d = np.maximum(d, 0.1)
        gains = np.array([(n.ble or n.wifi).gain_db if (n.ble or n.wifi) else 0.0 for n in self.nodes])
        return rssi_1m + gains - 10 * self.model.path_loss_exponent * np.log10(d) - self.wall_loss(x, y)

    def shadowing(self, tx: np.ndarray, t: np.ndarray) -> np.ndarray:
        """Smooth Gaussian shadowing per (reception, node), standard deviation sigma."""
        phase = 2 * np.pi * self._freq[tx] * t[:, None, None] + self._phase[tx]
        return self.model.shadowing_sigma_db * np.sqrt(2.0 / N_SINUSOIDS) * np.cos(phase).sum(axis=-1)

    def fading(self, shape: tuple[int, ...]) -> np.ndarray:
        k = 10 ** (self.model.rician_k_db / 10)
        los = np.sqrt(k / (k + 1))
        scatter = np.sqrt(1 / (2 * (k + 1)))
        h = los + scatter * (self._fading_rng.standard_normal(shape) + 1j * self._fading_rng.standard_normal(shape))
        return 10 * np.log10(np.abs(h) ** 2 + 1e-12)

    def rssi(self, tx: np.ndarray, t: np.ndarray, x: np.ndarray, y: np.ndarray, rssi_1m: float) -> np.ndarray:
        """Received strength at every node for each reception; NaN where below the sensitivity."""
        value = self.mean_rssi(x, y, rssi_1m) + self.shadowing(tx, t) + self.fading((len(t), len(self.node_xy)))
        value[value < self.model.sensitivity_dbm] = np.nan
        return np.round(value)
