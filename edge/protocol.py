"""The wire contract between nodes and the store gateway: topics, payload models, codecs.

The node defines what it sends, so the contract lives here; the gateway and the simulator import
it and nothing else of the edge's internals. Every payload names its schema and version in the
JSON itself, so nothing essential depends on MQTT 5 user properties (the embedded demo broker
speaks MQTT 3.1.1 only). See docs/mqtt.md for the topic table with examples.
"""

from __future__ import annotations

import json
import re
from datetime import UTC, date, datetime
from enum import StrEnum
from typing import Annotated, Literal

from pydantic import AwareDatetime, BaseModel, ConfigDict, Field, ValidationError, field_validator

TOPIC_ROOT = "omnisense/v1"
SCHEMA_VERSION = 1
EVENT_QOS = 1

ID_PATTERN = r"^[A-Za-z0-9_-]{1,64}$"
_ID_RE = re.compile(ID_PATTERN)
Identifier = Annotated[str, Field(pattern=ID_PATTERN)]


class Channel(StrEnum):
    """What follows `omnisense/v1/{store_id}/{node_id}/` in a topic."""

    STATUS = "status"
    PRESENCE = "events/presence"
    COUNTS = "events/counts"
    RADIO = "events/radio"
    TEST = "events/test"
    CONFIG = "config"


EVENT_CHANNELS = (Channel.PRESENCE, Channel.COUNTS, Channel.RADIO, Channel.TEST)


def topic(store_id: str, node_id: str, channel: Channel) -> str:
    return f"{TOPIC_ROOT}/{store_id}/{node_id}/{channel.value}"


def store_filter(store_id: str, channel: Channel) -> str:
    """Subscription filter for one channel of every node of a store."""
    return f"{TOPIC_ROOT}/{store_id}/+/{channel.value}"


class TopicError(ValueError):
    pass


def parse_topic(name: str) -> tuple[str, str, Channel]:
    """Split a topic into (store_id, node_id, channel); raises TopicError naming the problem."""
    prefix = TOPIC_ROOT + "/"
    if not name.startswith(prefix):
        raise TopicError(f"topic {name!r} is not under {TOPIC_ROOT}/")
    parts = name[len(prefix) :].split("/", 2)
    if len(parts) != 3:
        raise TopicError(f"topic {name!r} lacks store, node or channel")
    store_id, node_id, rest = parts
    if not _ID_RE.match(store_id) or not _ID_RE.match(node_id):
        raise TopicError(f"topic {name!r} has an invalid store or node id")
    try:
        return store_id, node_id, Channel(rest)
    except ValueError:
        raise TopicError(f"topic {name!r} has unknown channel {rest!r}") from None


class _Payload(BaseModel):
    """Base of every payload: strict, so a typo or a wrong type is an error, not a silent default."""

    model_config = ConfigDict(extra="forbid", frozen=True, populate_by_name=True)

    v: Literal[1] = Field(SCHEMA_VERSION, description="Schema version; a new version is a new value.")
    node_id: Identifier
    boot_id: Identifier = Field(description="Random per process start; tells restarts apart.")
    ts: AwareDatetime = Field(description="When the node produced this payload (UTC).")


class _Event(_Payload):
    seq: int = Field(ge=1, description="Per-node sequence; increases by one per event, survives restarts.")


class PresenceEvent(_Event):
    """A pseudonymous device entering, dwelling in or leaving a zone."""

    schema_: Literal["omnisense.presence"] = Field("omnisense.presence", alias="schema")
    device: Annotated[str, Field(pattern=r"^(?:[0-9a-f]{2}){8,32}$")] = Field(
        description="Keyed hash of the device under the store's daily salt, or an app's ephemeral ID."
    )
    zone: Identifier
    action: Literal["enter", "dwell", "exit"]
    dwell_s: float = Field(0.0, ge=0)
    rssi: float | None = None
    source: Literal["ble", "wifi", "app"] = "ble"


class CountsEvent(_Event):
    """Camera line crossings and occupancy over one interval."""

    schema_: Literal["omnisense.counts"] = Field("omnisense.counts", alias="schema")
    interval_s: float = Field(gt=0)
    line_in: int = Field(ge=0)
    line_out: int = Field(ge=0)
    occupancy: int = Field(ge=0)
    zones: dict[str, Annotated[int, Field(ge=0)]] = Field(default_factory=dict)


class RadioEvent(_Event):
    """What one radio of a node heard over an interval, with the naive count beside the estimate."""

    schema_: Literal["omnisense.radio"] = Field("omnisense.radio", alias="schema")
    interval_s: float = Field(gt=0)
    source: Literal["ble", "wifi"]
    zone: Identifier | None = None
    devices: int = Field(ge=0, description="Distinct visitor devices heard; for Wi-Fi estimated across rotating MACs.")
    addresses: int = Field(ge=0, description="Distinct source addresses heard: the naive count.")
    in_zone: int = Field(0, ge=0, description="Visitor devices in the node's zone at the end of the interval.")
    store_devices: int = Field(0, ge=0, description="Devices heard that are the store's own, left out of the counts.")
    app_ids: int = Field(0, ge=0, description="Distinct app ephemeral IDs heard.")
    exposure_notifications: int = Field(0, ge=0, description="Distinct Exposure Notification IDs (counted only).")
    rejected: int = Field(0, ge=0, description="Malformed adverts or frames dropped.")


class TestEvent(_Event):
    """The answer to a config's `test_token`: proves the whole path node -> outbox -> broker -> gateway -> SQLite."""

    schema_: Literal["omnisense.test"] = Field("omnisense.test", alias="schema")
    token: Annotated[str, Field(pattern=r"^[0-9a-f]{16,64}$")]


Event = PresenceEvent | CountsEvent | RadioEvent | TestEvent
EVENT_MODELS: dict[Channel, type[PresenceEvent] | type[CountsEvent] | type[RadioEvent] | type[TestEvent]] = {
    Channel.PRESENCE: PresenceEvent,
    Channel.COUNTS: CountsEvent,
    Channel.RADIO: RadioEvent,
    Channel.TEST: TestEvent,
}
EVENT_KINDS = {Channel.PRESENCE: "presence", Channel.COUNTS: "counts", Channel.RADIO: "radio", Channel.TEST: "test"}
CHANNEL_OF_SCHEMA = {"omnisense.presence": Channel.PRESENCE, "omnisense.counts": Channel.COUNTS,
                     "omnisense.radio": Channel.RADIO, "omnisense.test": Channel.TEST}


class NodeStatus(_Payload):
    """Retained on `status`: `online` at connect (and as a heartbeat), `offline` as the Last Will."""

    schema_: Literal["omnisense.status"] = Field("omnisense.status", alias="schema")
    state: Literal["online", "offline"]
    last_seq: int = Field(0, ge=0, description="Highest seq allocated so far.")
    outbox_depth: int = Field(0, ge=0, description="Events on disk not yet acknowledged by the broker.")
    dropped: int = Field(0, ge=0, description="Events discarded because the outbox was full.")
    config_version: int | None = Field(None, description="Version of the retained config applied.")
    sources: dict[str, dict[str, str | int | float | None]] = Field(
        default_factory=dict, description="Per source that reports it, how its hardware is doing: a camera's "
        "state (ok, down, ended), frames, outages and their seconds, the last error.")


Point = tuple[float, float]
_NUMBER = r"\s*-?\d+(?:\.\d+)?\s*"
_LINE_RE = re.compile(rf"^\s*(?:[xXyY]\s*={_NUMBER}|{_NUMBER},{_NUMBER},{_NUMBER},{_NUMBER})$")


class CameraPlacement(BaseModel):
    """Where a camera node counts, set by the installer: the line (and its direction) and zone polygons."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    line: str = Field(description="x=X, y=Y or X1,Y1,X2,Y2 in the pixels of the frames counted (edge.vision.line).")
    flip: bool = Field(False, description="Count 'in' towards the negative side of the line.")
    zones: dict[Identifier, list[Point]] = Field(default_factory=dict,
                                                 description="Named polygons (at least 3 points) for people-in-zone counts.")

    @field_validator("line")
    @classmethod
    def _line(cls, value: str) -> str:
        if not _LINE_RE.match(value):
            raise ValueError(f"expected x=NUMBER, y=NUMBER or X1,Y1,X2,Y2, got {value!r}")
        return value.replace(" ", "")

    @field_validator("zones")
    @classmethod
    def _polygons(cls, value: dict[str, list[Point]]) -> dict[str, list[Point]]:
        for name, points in value.items():
            if len(points) < 3:
                raise ValueError(f"zone {name!r} needs at least 3 points, got {len(points)}")
        return value


class RadioCalibration(BaseModel):
    """A node's log-distance path-loss model, measured by the installer with a reference phone or beacon."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    rssi_1m: float = Field(ge=-120, le=0, description="Median RSSI of the reference at 1 m, dBm.")
    exponent: float = Field(2.0, ge=1.0, le=6.0, description="Path-loss exponent: 2 in free space, 2.5-4 indoors.")


class RemoteConfig(BaseModel):
    """Retained on `config`, written by the gateway for one node."""

    model_config = ConfigDict(extra="forbid", frozen=True, populate_by_name=True)

    schema_: Literal["omnisense.config"] = Field("omnisense.config", alias="schema")
    v: Literal[1] = SCHEMA_VERSION
    node_id: Identifier
    version: int = Field(ge=1)
    issued_at: AwareDatetime
    zone: Identifier | None = None
    salt: Annotated[str, Field(pattern=r"^(?:[0-9a-f]{2}){16,64}$")] | None = Field(
        None, repr=False, description="The store's salt of `salt_day` for device pseudonyms (hex); never logged.")
    salt_day: date | None = None
    camera: CameraPlacement | None = Field(None, description="Counting line and zones; none: the node's own settings.")
    radio: RadioCalibration | None = Field(None, description="Path-loss model; none: the node's own settings.")
    test_token: Annotated[str, Field(pattern=r"^[0-9a-f]{16,64}$")] | None = Field(
        None, description="A new value asks the node for one `events/test` event carrying it (health check).")


def schema_property(model: BaseModel) -> str:
    """`schema/version`, sent as an MQTT 5 user property so brokers and tools can route on it."""
    return f"{model.schema_}/{model.v}"  # type: ignore[attr-defined]


def encode(model: BaseModel) -> bytes:
    return model.model_dump_json(by_alias=True).encode()


def utcnow() -> datetime:
    return datetime.now(UTC)


class PayloadError(ValueError):
    """A payload that breaks the contract; `code` is a stable category, str() the dead-letter reason."""

    def __init__(self, code: str, reason: str) -> None:
        super().__init__(reason)
        self.code = code


def decode_event(channel: Channel, topic_node_id: str, payload: bytes, max_bytes: int) -> Event:
    """Validate one event payload against the contract, or raise PayloadError saying why."""
    if len(payload) > max_bytes:
        raise PayloadError("oversize", f"payload of {len(payload)} bytes exceeds the limit of {max_bytes}")
    model = EVENT_MODELS.get(channel)
    if model is None:
        raise PayloadError("wrong_channel", f"channel {channel.value!r} carries no events")
    try:
        event = model.model_validate_json(payload)
    except ValidationError as exc:
        raise PayloadError(*_explain(payload, exc, model)) from None
    if event.node_id != topic_node_id:
        raise PayloadError("node_mismatch", f"node_id {event.node_id!r} in payload does not match topic node {topic_node_id!r}")
    return event


def decode_status(payload: bytes) -> NodeStatus:
    try:
        return NodeStatus.model_validate_json(payload)
    except ValidationError as exc:
        raise PayloadError(*_explain(payload, exc, NodeStatus)) from None


def _explain(payload: bytes, exc: ValidationError, model: type[BaseModel]) -> tuple[str, str]:
    """Turn a validation failure into (code, one line a person can act on)."""
    try:
        doc = json.loads(payload)
    except (ValueError, UnicodeDecodeError) as err:
        return "not_json", f"not JSON: {err}"
    if not isinstance(doc, dict):
        return "invalid", f"not a JSON object but {type(doc).__name__}"
    expected_schema = model.model_fields["schema_"].default
    if doc.get("schema") not in (None, expected_schema):
        return "wrong_schema", f"schema {doc.get('schema')!r} on a topic that carries {expected_schema!r}"
    if "v" in doc and doc["v"] != SCHEMA_VERSION:
        return "unknown_version", f"unknown schema version {doc['v']!r} (this gateway reads version {SCHEMA_VERSION})"
    problems = []
    for err in exc.errors()[:3]:
        where = ".".join(str(p) for p in err["loc"]) or "payload"
        problems.append(f"{where}: {err['msg']}")
    more = f" (+{exc.error_count() - 3} more)" if exc.error_count() > 3 else ""
    return "invalid", "; ".join(problems) + more
