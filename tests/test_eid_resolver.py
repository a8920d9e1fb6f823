"""Resolving rotating app IDs: one lookup, tolerant of clock skew, forgotten at once on withdrawal."""

from __future__ import annotations

import secrets

from edge.radio.eid import ephemeral_id
from gateway.eid_resolver import EidResolver

K = 10
NOW = 1_795_000_000.0


def test_an_install_resolves_across_rotations_and_with_a_skewed_clock():
    resolver = EidResolver(skew_periods=1)
    key = secrets.token_bytes(16)
    resolver.add("app-1", key, K, offset_s=12345, now=NOW)
    for minutes in range(0, 24 * 60, 7):  # a whole day of rotations
        at = NOW + 60 * minutes
        beacon_time = int(at) - 12345
        assert resolver.resolve(ephemeral_id(key, K, beacon_time), at) == "app-1"
        assert resolver.resolve(ephemeral_id(key, K, beacon_time + 900), at) == "app-1"  # phone 15 min fast
    far = int(NOW + 24 * 3600) - 12345 + 3 * (1 << K)
    assert resolver.resolve(ephemeral_id(key, K, far), NOW + 24 * 3600) is None  # beyond the tolerated skew
    assert resolver.entries == 3


def test_strangers_and_withdrawn_installs_do_not_resolve():
    resolver = EidResolver()
    keys = {f"app-{i}": secrets.token_bytes(16) for i in range(50)}
    for install, key in keys.items():
        resolver.add(install, key, K, now=NOW)
    assert resolver.resolve(ephemeral_id(secrets.token_bytes(16), K, int(NOW)), NOW) is None
    assert resolver.resolve(ephemeral_id(keys["app-7"], K, int(NOW)), NOW) == "app-7"
    resolver.remove("app-7")
    assert resolver.resolve(ephemeral_id(keys["app-7"], K, int(NOW)), NOW) is None
    assert resolver.resolve(ephemeral_id(keys["app-7"], K, int(NOW) + 5000), NOW + 5000) is None
    assert resolver.resolve(ephemeral_id(keys["app-8"], K, int(NOW) + 5000), NOW + 5000) == "app-8"
    assert len(resolver) == 49 and resolver.entries == 49 * 3
