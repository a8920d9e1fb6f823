"""What may leave the store: k-suppressed hourly cells and per-campaign app pseudonyms. Pure functions.

k-suppression (k = `UploaderSettings.k`, default 5). A row is a cell: one store hour, or one zone hour.

* Footfall hour. Its group is `visitors = max(entries, distinct_devices)`: the people the door
  camera counted coming in, or the phones radio saw in the store, whichever is larger. A row with
  fewer than k visitors (zero included) is not uploaded at all. In a row that is uploaded, a
  figure computed over a smaller group is blanked (null), because combined with the rest of the
  row it would describe fewer than k people:
    - `entries`, `exits`, `distinct_devices`, `walk_ins`, `walk_bys`: nulled when 0 < value < k
      (zero describes nobody and is kept);
    - `peak_occupancy`, `mean_occupancy`: nulled with `entries` (they describe the same people);
    - `dwell_*` (time in store of the hour's walk-ins): nulled when walk_ins < k;
    - `capture_rate` (walk_ins / (walk_ins + walk_bys)): nulled when walk_ins or walk_bys is
      in 1..k-1, since the rate and the other count would give the small one back.
* Zone hour. Its group is `max(people_peak, distinct_devices)`; a row below k is not uploaded.
  `distinct_devices` and `visits` are nulled when in 1..k-1, `people_*` when `people_peak` is,
  and `dwell_*` (over the zone's visits) when visits < k.

App visits are individual rows by design (ad-to-visit lift compares exposed and control app
users), so they are not k-suppressed; instead they carry no store-side identity at all: the
install's id appears only inside HMAC-SHA256(secret, campaign_id 0x00 install_id), a pseudonym
that differs per campaign, so two campaigns' data cannot be joined on it. The install's token,
identity key, segments and push target are never read by the uploader.
"""

from __future__ import annotations

import hashlib
import hmac
from collections.abc import Mapping
from typing import Any

FOOTFALL_FIELDS = ("store_id", "hour_start", "entries", "exits", "peak_occupancy", "mean_occupancy",
                   "camera_reports", "distinct_devices", "walk_ins", "walk_bys", "capture_rate", "dwell_mean",
                   "dwell_p25", "dwell_p50", "dwell_p75", "dwell_p90")
ZONE_FIELDS = ("store_id", "zone", "hour_start", "people_mean", "people_peak", "distinct_devices", "visits",
               "dwell_mean", "dwell_p25", "dwell_p50", "dwell_p75", "dwell_p90")
DWELL = ("dwell_mean", "dwell_p25", "dwell_p50", "dwell_p75", "dwell_p90")
PSEUDONYM_BYTES = 16


def _n(value: Any) -> int:
    return int(value) if value is not None else 0


def _small(value: Any, k: int) -> bool:
    return 0 < _n(value) < k


def suppress_footfall(row: Mapping[str, Any], k: int) -> dict[str, Any] | None:
    """The row as it may leave the store, or None when the whole hour is below k."""
    out = {f: row.get(f) for f in FOOTFALL_FIELDS}
    if max(_n(row.get("entries")), _n(row.get("distinct_devices"))) < k:
        return None
    for f in ("entries", "exits", "distinct_devices", "walk_ins", "walk_bys"):
        if _small(out[f], k):
            out[f] = None
    if out["entries"] is None:
        out["peak_occupancy"] = out["mean_occupancy"] = None
    if _n(row.get("walk_ins")) < k:
        for f in DWELL:
            out[f] = None
    if _small(row.get("walk_ins"), k) or _small(row.get("walk_bys"), k):
        out["capture_rate"] = None
    return out


def suppress_zone(row: Mapping[str, Any], k: int) -> dict[str, Any] | None:
    out = {f: row.get(f) for f in ZONE_FIELDS}
    if max(_n(row.get("people_peak")), _n(row.get("distinct_devices"))) < k:
        return None
    for f in ("distinct_devices", "visits"):
        if _small(out[f], k):
            out[f] = None
    if _small(row.get("people_peak"), k):
        out["people_peak"] = out["people_mean"] = None
    if _n(row.get("visits")) < k:
        for f in DWELL:
            out[f] = None
    return out


def campaign_pseudonym(secret: bytes, campaign_id: str, install_id: str) -> str:
    """HMAC-SHA256(secret, campaign_id || 0x00 || install_id), first 16 bytes, hex.

    The separator keeps ("ab", "c") and ("a", "bc") apart. Whoever records the ad exposures computes
    the same value from the same secret, so exposures and store visits join per campaign only.
    """
    if len(secret) < 16:
        raise ValueError("the pseudonym secret must be at least 16 bytes")
    message = campaign_id.encode() + b"\x00" + install_id.encode()
    return hmac.new(secret, message, hashlib.sha256).hexdigest()[: PSEUDONYM_BYTES * 2]
