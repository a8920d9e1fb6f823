"""The store's own devices (printers, tills, staff tablets, fixed PCs): learnt, and kept out of visitor counts.

A visitor stays minutes, rarely an hour; a till is heard all day. A device heard in at least
`min_share` of the `bucket_s` slots over a span of `after_s` or more is the store's. Installers can
name devices by address prefix (an OUI like `dc:fb:48`, or a full address) to `deny` (always the
store's) or `allow` (never learnt as the store's, e.g. a demo phone that lies on a counter).
Prefixes are matched against raw addresses inside the node only; they never leave it.
"""

from __future__ import annotations

from collections.abc import Hashable, Iterable
from dataclasses import dataclass

from pydantic import Field, field_validator

from edge.settings import ConfigModel


def parse_prefix(text: str) -> bytes:
    """`dc:fb:48` or `DC-FB-48-12` -> bytes; a clear error for anything else."""
    cleaned = text.strip().replace("-", ":").lower()
    parts = cleaned.split(":")
    if not 1 <= len(parts) <= 6 or any(len(p) != 2 for p in parts):
        raise ValueError(f"{text!r} is not an address prefix like 'dc:fb:48' (1 to 6 hex octets)")
    try:
        return bytes(int(p, 16) for p in parts)
    except ValueError:
        raise ValueError(f"{text!r} is not an address prefix like 'dc:fb:48' (1 to 6 hex octets)") from None


class StoreDeviceRules(ConfigModel):
    after_s: float = Field(7200.0, gt=0, description="Heard over at least this span to be learnt as the store's.")
    bucket_s: float = Field(300.0, gt=0, description="Presence is counted in slots of this length.")
    min_share: float = Field(0.8, gt=0, le=1, description="Share of slots in the span it must be heard in.")
    deny: list[str] = Field(default_factory=list, description="Address prefixes that are always the store's.")
    allow: list[str] = Field(default_factory=list, description="Address prefixes never learnt as the store's.")

    @field_validator("deny", "allow")
    @classmethod
    def _prefixes(cls, values: list[str]) -> list[str]:
        for value in values:
            parse_prefix(value)
        return values


@dataclass(slots=True)
class _Seen:
    first: float
    last: float
    last_bucket: int
    buckets: int


class StoreDevices:
    def __init__(self, rules: StoreDeviceRules) -> None:
        self.rules = rules
        self._deny = tuple(parse_prefix(p) for p in rules.deny)
        self._allow = tuple(parse_prefix(p) for p in rules.allow)
        self._listed = bool(self._deny or self._allow)
        self._seen: dict[Hashable, _Seen] = {}
        self.learnt: set[Hashable] = set()

    def listed(self, address: bytes) -> bool | None:
        """True if the installer denied this address, False if allowed, None if not listed."""
        if not self._listed:
            return None
        if any(address.startswith(p) for p in self._allow):
            return False
        if any(address.startswith(p) for p in self._deny):
            return True
        return None

    def observe(self, key: Hashable, t: float) -> bool:
        """Record a sighting; True when this device is (now) known as the store's."""
        if key in self.learnt:
            self._seen[key].last = t
            return True
        bucket = int(t // self.rules.bucket_s)
        seen = self._seen.get(key)
        if seen is None:
            self._seen[key] = _Seen(t, t, bucket, 1)
            return False
        seen.last = t
        if bucket != seen.last_bucket:
            seen.last_bucket = bucket
            seen.buckets += 1
        span = t - seen.first
        if span >= self.rules.after_s:
            slots = span // self.rules.bucket_s + 1
            if seen.buckets >= self.rules.min_share * slots:
                self.learnt.add(key)
                return True
        return False

    def expire(self, now: float, idle_s: float) -> None:
        """Forget devices not heard for `idle_s`; a learnt one that is gone for that long is unlearnt."""
        for key in [k for k, s in self._seen.items() if now - s.last >= idle_s]:
            del self._seen[key]
            self.learnt.discard(key)

    def is_store_device(self, key: Hashable) -> bool:
        return key in self.learnt

    def keys_seen(self) -> Iterable[Hashable]:
        return self._seen.keys()
