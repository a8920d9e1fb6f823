"""The node's configuration model (`config/node.example.yaml`)."""

from __future__ import annotations

from pathlib import Path
from typing import Any, Literal

from pydantic import Field

from edge.protocol import Identifier
from edge.settings import ConfigModel, MqttSettings

ENV_PREFIX = "OMNISENSE_NODE"


class OutboxSettings(ConfigModel):
    max_events: int = Field(500_000, ge=10, description="Events kept on disk while the broker is unreachable.")
    when_full: Literal["drop_oldest", "reject_new"] = Field(
        "drop_oldest", description="What a full outbox gives up; either way the loss is counted and reported."
    )


class PublishSettings(ConfigModel):
    max_inflight: int = Field(100, ge=1, le=20_000, description="Events sent but not yet acknowledged.")
    status_interval_s: float = Field(30.0, gt=0, description="Heartbeat of the retained status.")
    drain_timeout_s: float = Field(3.0, ge=0, description="On shutdown, how long to wait for in-flight acks.")


class SourceSettings(ConfigModel):
    kind: str = Field(description="Registered source kind, e.g. 'synthetic'.")
    options: dict[str, Any] = Field(default_factory=dict, description="Validated by the source's own model.")


class GatewayLink(ConfigModel):
    """The gateway's HTTPS API, for what a node asks it directly (calibration); written by a claim."""

    url: str = Field(description="https://gateway-host:port")
    ca_file: Path | None = Field(None, description="The store's CA certificate; none: the system's trust store.")


class NodeConfig(ConfigModel):
    store_id: Identifier
    node_id: Identifier
    data_dir: Path = Field(Path(".omnisense/node"), description="Where the outbox file lives.")
    mqtt: MqttSettings = MqttSettings()
    outbox: OutboxSettings = OutboxSettings()
    publish: PublishSettings = PublishSettings()
    sources: list[SourceSettings] = Field(default_factory=list)
    gateway: GatewayLink | None = Field(None, description="Set by `omnisense provision claim`; HTTP basic auth with "
                                                          "the node id and its MQTT password.")
