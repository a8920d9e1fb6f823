"""The gateway's configuration model (`config/gateway.example.yaml`)."""

from __future__ import annotations

from pathlib import Path

from pydantic import Field, field_validator, model_validator

from edge.protocol import Identifier
from edge.settings import ConfigModel, MqttSettings
from gateway.campaigns import check_timezone
from gateway.fusion import FusionRules
from gateway.push.config import PushSettings

ENV_PREFIX = "OMNISENSE_GATEWAY"


class ApiSettings(ConfigModel):
    host: str = "127.0.0.1"
    port: int = Field(8080, ge=0, le=65535, description="0 picks a free port.")
    cert_file: Path | None = Field(None, description="Serve HTTPS with this certificate (PEM); default: the broker's "
                                                     "server.pem when provisioning.broker_dir is set, else plain HTTP.")
    key_file: Path | None = Field(None, description="The certificate's private key (PEM).")

    @model_validator(mode="after")
    def _pair(self) -> ApiSettings:
        if (self.cert_file is None) != (self.key_file is None):
            raise ValueError("give both cert_file and key_file, or neither")
        return self


class ProvisioningSettings(ConfigModel):
    broker_dir: Path | None = Field(None, description="What 'omnisense broker config' wrote (CA, password file, ACL). "
                                                      "None: nodes cannot be claimed.")
    node_mqtt_url: str | None = Field(None, description="The broker as claimed nodes reach it, e.g. "
                                                        "mqtts://gateway.local:8883; default: this gateway's mqtt.url.")
    public_url: str | None = Field(None, description="This gateway's API as nodes reach it (in claim codes), e.g. "
                                                     "https://gateway.local:8443; default: from api.host and api.port.")
    heartbeat_s: float = Field(30.0, gt=0, description="The nodes' status interval: 3 missed heartbeats is offline.")


class IngestSettings(ConfigModel):
    max_payload_bytes: int = Field(64 * 1024, ge=256, description="Larger payloads are dead-lettered.")
    max_batch: int = Field(2000, ge=1, description="Most messages committed in one transaction.")
    queue_limit: int = Field(50_000, ge=100, description="Received but uncommitted messages held in memory.")


class KnownNode(ConfigModel):
    node_id: Identifier
    zone: Identifier | None = None


class GatewayConfig(ConfigModel):
    store_id: Identifier
    db_path: Path = Field(Path(".omnisense/gateway.db"))
    mqtt: MqttSettings = MqttSettings()
    api: ApiSettings = ApiSettings()
    ingest: IngestSettings = IngestSettings()
    nodes: list[KnownNode] = Field(default_factory=list, description="Nodes of this store; others are dead-lettered.")
    campaigns: Path | None = Field(None, description="Offer campaigns YAML (see config/campaigns.example.yaml); "
                                                     "none: no offers are sent.")
    eid_rotation_exponent: int = Field(10, ge=0, le=15, description="App installs' EIDs change every 2^K s.")
    fusion: FusionRules = FusionRules()
    push: PushSettings = PushSettings()
    provisioning: ProvisioningSettings = ProvisioningSettings()
    timezone: str | None = Field(None, description="The store's IANA timezone (e.g. Europe/Berlin): when its day, "
                                                   "and so the daily salt, changes. Default: this machine's.")

    @field_validator("timezone")
    @classmethod
    def _known_timezone(cls, value: str | None) -> str | None:
        return None if value is None else check_timezone(value)

    @model_validator(mode="after")
    def _unique_nodes(self) -> GatewayConfig:
        seen: set[str] = set()
        for node in self.nodes:
            if node.node_id in seen:
                raise ValueError(f"node {node.node_id!r} is listed twice under nodes")
            seen.add(node.node_id)
        return self
