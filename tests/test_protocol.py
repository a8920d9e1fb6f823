from __future__ import annotations

import json
from datetime import UTC, datetime

import pytest
from hypothesis import given
from hypothesis import strategies as st

from edge import protocol
from edge.protocol import Channel, CountsEvent, PayloadError, PresenceEvent, TopicError

IDS = st.from_regex(protocol.ID_PATTERN, fullmatch=True)
TS = datetime(2026, 11, 23, 10, 0, tzinfo=UTC)


def counts(**changes: object) -> bytes:
    doc = {"schema": "omnisense.counts", "v": 1, "node_id": "n1", "boot_id": "b1", "seq": 7,
           "ts": "2026-11-23T10:00:00+00:00", "interval_s": 10, "line_in": 2, "line_out": 1, "occupancy": 4,
           "zones": {"shoes": 2}}
    doc.update(changes)
    return json.dumps(doc).encode()


@given(store=IDS, node=IDS, channel=st.sampled_from(list(Channel)))
def test_topic_round_trip(store, node, channel):
    assert protocol.parse_topic(protocol.topic(store, node, channel)) == (store, node, channel)


@pytest.mark.parametrize("name", ["omnisense/v2/s/n/status", "omnisense/v1/s/n", "omnisense/v1/s/n/events/x",
                                  "omnisense/v1/s+/n/status", "other/s/n/status"])
def test_bad_topics_are_refused_with_a_reason(name):
    with pytest.raises(TopicError, match="topic"):
        protocol.parse_topic(name)


@given(seq=st.integers(1, 2**53), line_in=st.integers(0, 10**6), zones=st.dictionaries(IDS, st.integers(0, 999)))
def test_counts_event_round_trip(seq, line_in, zones):
    event = CountsEvent(node_id="n1", boot_id="b1", seq=seq, ts=TS, interval_s=10, line_in=line_in, line_out=0,
                        occupancy=line_in, zones=zones)
    assert protocol.decode_event(Channel.COUNTS, "n1", protocol.encode(event), 65536) == event


def test_payload_names_its_schema_and_version_without_mqtt5():
    event = PresenceEvent(node_id="n1", boot_id="b1", seq=1, ts=TS, device="ab" * 8, zone="shoes", action="enter")
    doc = json.loads(protocol.encode(event))
    assert doc["schema"] == "omnisense.presence" and doc["v"] == 1
    assert protocol.schema_property(event) == "omnisense.presence/1"


@pytest.mark.parametrize(("payload", "code", "words"), [
    (b"{not json", "not_json", "not JSON"),
    (b"[1, 2]", "invalid", "not a JSON object"),
    (counts(v=2), "unknown_version", "unknown schema version 2"),
    (counts(schema="omnisense.presence"), "wrong_schema", "omnisense.presence"),
    (counts(line_in=-1), "invalid", "line_in"),
    (counts(seq="seven"), "invalid", "seq"),
    (counts(extra_field=1), "invalid", "extra_field"),
    (counts(ts="2026-11-23T10:00:00"), "invalid", "ts"),
    (counts(node_id="n2"), "node_mismatch", "does not match topic node"),
])
def test_contract_violations_are_explained(payload, code, words):
    with pytest.raises(PayloadError) as caught:
        protocol.decode_event(Channel.COUNTS, "n1", payload, 65536)
    assert caught.value.code == code
    assert words in str(caught.value)


def test_oversize_is_refused_before_parsing():
    with pytest.raises(PayloadError) as caught:
        protocol.decode_event(Channel.COUNTS, "n1", counts() + b" " * 70000, 65536)
    assert caught.value.code == "oversize"
