"""Radio calibration: a reference phone or beacon held at a known distance -> the node's path-loss model.

Pure (no radio, no network): `calibrate` turns RSSI samples into `rssi_1m` and a spread, and
`Reference` says which adverts are the reference's. The adapter that scans and uploads is
`edge.radio.reference_scan` with `omnisense provision calibrate`.

Why a median with outlier rejection: one reflection or a hand over the antenna moves a few adverts
by 10 dB or more; Tukey's fences (1.5 IQR beyond the quartiles) drop those, and the median of the
rest is what `PathLoss.rssi_1m` means (the presence code smooths with a median too). The spread
(interquartile range) tells the installer whether the measurement can be trusted: a reference
that moved, or people walking between it and the node, widens it.
"""

from __future__ import annotations

import math
import re
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from uuid import UUID

import numpy as np

from edge.radio.ble_frames import IBeacon, InvalidAdvert, decode

MIN_SAMPLES = 10
MAX_SPREAD_DB = 10.0
RSSI_1M_RANGE = (-120.0, 0.0)     # what the contract's RadioCalibration accepts
EXPONENT_RANGE = (1.0, 6.0)
DISTANCE_RANGE_M = (0.1, 30.0)


class CalibrationError(ValueError):
    """The samples cannot give a trustworthy calibration; the message says what to do."""


@dataclass(frozen=True)
class Calibration:
    rssi_1m: float       # dBm, at 1 m (converted from `distance_m` with `exponent`)
    exponent: float
    samples: int         # samples used (after outlier rejection)
    spread_db: float     # interquartile range of the samples used
    rejected: int        # outliers dropped
    distance_m: float
    median_dbm: float    # median at `distance_m`, before conversion

    def as_upload(self) -> dict[str, float | int]:
        """The body of `PUT /api/node/calibration`: numbers only."""
        return {"rssi_1m": self.rssi_1m, "exponent": self.exponent, "samples": self.samples,
                "spread_db": self.spread_db}


def calibrate(rssi: Iterable[float], distance_m: float = 1.0, exponent: float = 2.0,
              min_samples: int = MIN_SAMPLES, max_spread_db: float = MAX_SPREAD_DB) -> Calibration:
    """`rssi_1m` from samples of a reference at `distance_m`; CalibrationError when they cannot be trusted."""
    if not DISTANCE_RANGE_M[0] <= distance_m <= DISTANCE_RANGE_M[1]:
        raise CalibrationError(f"distance {distance_m} m is outside {DISTANCE_RANGE_M[0]}..{DISTANCE_RANGE_M[1]} m; "
                               "hold the reference 1 m from the node (the default)")
    if not EXPONENT_RANGE[0] <= exponent <= EXPONENT_RANGE[1]:
        raise CalibrationError(f"path-loss exponent {exponent} is outside {EXPONENT_RANGE[0]}..{EXPONENT_RANGE[1]} "
                               "(2 in free space, 2.5-4 indoors)")
    values = np.array([v for v in rssi if math.isfinite(v) and -127 <= v <= 20], dtype=float)
    if len(values) < min_samples:
        raise CalibrationError(
            f"only {len(values)} adverts of the reference were heard, at least {min_samples} are needed: check that "
            "it is advertising (a beacon app in the foreground, Bluetooth on), that the address or iBeacon UUID is "
            "right, and scan longer (--seconds)")
    q1, q3 = np.percentile(values, [25, 75])
    fence = 1.5 * (q3 - q1)
    kept = values[(values >= q1 - fence) & (values <= q3 + fence)]
    k1, k3 = np.percentile(kept, [25, 75])
    spread = float(k3 - k1)
    if spread > max_spread_db:
        raise CalibrationError(
            f"the reference's RSSI varied by {spread:.1f} dB (interquartile range), more than {max_spread_db:g} dB: "
            f"hold it still at {distance_m:g} m in line of sight of the node, keep people and metal out of the way, "
            "and measure again")
    median = float(np.median(kept))
    rssi_1m = median + 10.0 * exponent * math.log10(distance_m)
    if not RSSI_1M_RANGE[0] <= rssi_1m <= RSSI_1M_RANGE[1]:
        raise CalibrationError(f"the reference gives {rssi_1m:.1f} dBm at 1 m, outside {RSSI_1M_RANGE[0]:g}.."
                               f"{RSSI_1M_RANGE[1]:g} dBm: check --distance and that the reference is the device meant")
    return Calibration(round(rssi_1m, 1), exponent, int(len(kept)), round(spread, 1), int(len(values) - len(kept)),
                       distance_m, round(median, 1))


_ADDRESS = re.compile(r"^[0-9A-F]{2}(?::[0-9A-F]{2}){5}$")


@dataclass(frozen=True)
class Reference:
    """Which adverts are the reference's: by BLE address, or by iBeacon UUID (and major, minor).

    Matched in node memory only; the address is never sent anywhere.
    """

    address: str | None = None
    uuid: UUID | None = None
    major: int | None = None
    minor: int | None = None

    @classmethod
    def parse(cls, text: str) -> Reference:
        """`AA:BB:CC:DD:EE:FF` or `ibeacon:UUID[:MAJOR:MINOR]`; ValueError naming what is wrong."""
        spec = text.strip()
        if spec.lower().startswith("ibeacon:"):
            parts = spec[len("ibeacon:"):].split(":")
            if len(parts) not in (1, 3):
                raise ValueError(f"reference {text!r}: write ibeacon:UUID or ibeacon:UUID:MAJOR:MINOR")
            try:
                uuid = UUID(parts[0])
            except ValueError:
                raise ValueError(f"reference {text!r}: {parts[0]!r} is not a UUID "
                                 "(e.g. ibeacon:e2c56db5-dffb-48d2-b060-d0f5a71096e0)") from None
            if len(parts) == 1:
                return cls(uuid=uuid)
            try:
                major, minor = int(parts[1]), int(parts[2])
            except ValueError:
                raise ValueError(f"reference {text!r}: major and minor must be numbers 0-65535") from None
            if not (0 <= major <= 0xFFFF and 0 <= minor <= 0xFFFF):
                raise ValueError(f"reference {text!r}: major and minor must be numbers 0-65535")
            return cls(uuid=uuid, major=major, minor=minor)
        address = spec.upper().replace("-", ":")
        if not _ADDRESS.match(address):
            raise ValueError(f"reference {text!r}: give the BLE address (AA:BB:CC:DD:EE:FF) or ibeacon:UUID[:MAJOR:MINOR]")
        return cls(address=address)

    def matches(self, address: str, manufacturer_data: Mapping[int, bytes], service_data: Mapping[str, bytes],
                service_uuids: Sequence[str]) -> bool:
        """Whether one advert (bleak's fields) is the reference's."""
        if self.address is not None:
            return address.upper() == self.address
        try:
            frame = decode(manufacturer_data, service_data, service_uuids)
        except InvalidAdvert:
            return False
        if not isinstance(frame, IBeacon) or frame.uuid != self.uuid:
            return False
        return self.major is None or (frame.major == self.major and frame.minor == self.minor)
