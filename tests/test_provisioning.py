"""Claiming nodes against the real thing: Mosquitto on the generated configuration, the gateway
process over HTTPS, real MQTT clients with the credentials a claim hands out."""

from __future__ import annotations

import secrets
from collections.abc import Iterator
from pathlib import Path
from urllib.parse import parse_qs, urlsplit

import httpx
import pytest

from edge import protocol
from edge.mqtt import Inbound, MqttLink
from edge.protocol import Channel, CountsEvent, RemoteConfig
from edge.settings import MqttSettings
from tests.conftest import Service, wait_for
from tests.secure_store import STORE, SecureStore, start_secure_store


@pytest.fixture
def store(tmp_path: Path, services: list[Service]) -> Iterator[SecureStore]:
    secure = start_secure_store(tmp_path, services)
    yield secure
    secure.gateway.stop()
    secure.broker.stop()


def issue(store: SecureStore, **order: object) -> dict[str, str]:
    with store.api() as api:
        response = api.post("/api/installer/claims", json=order)
    assert response.status_code == 201, response.text
    code = parse_qs(urlsplit(response.json()["code"]).query)
    return {k: v[0] for k, v in code.items()}


def claim(store: SecureStore, token: str, hardware_id: str | None = None, store_id: str = STORE) -> httpx.Response:
    body = {"token": token, "hardware_id": hardware_id or secrets.token_hex(16), "store_id": store_id}
    return httpx.post(store.gateway.url + "/provision/claim", json=body, verify=store.trust, timeout=10)


class NodeClient:
    """A node's MQTT connection with what it was granted, collecting its config messages."""

    def __init__(self, grant: dict, ca: Path, password: str | None = None) -> None:
        self.node_id = grant["node_id"]
        self.configs: list[bytes] = []
        settings = MqttSettings(url=grant["mqtt"]["url"], username=grant["mqtt"]["username"],
                                password=password or grant["mqtt"]["password"], ca_file=ca, protocol="5",
                                reconnect_min_s=0.2, reconnect_max_s=1)
        self.link = MqttLink(settings, f"omnisense-{STORE}-{self.node_id}",
                             subscriptions=[(protocol.topic(STORE, self.node_id, Channel.CONFIG), 1)],
                             on_message=self._on_message)
        self.link.start()

    def _on_message(self, message: Inbound) -> None:
        self.configs.append(message.payload)

    def stop(self) -> None:
        self.link.stop()


def test_a_claim_over_https_hands_out_a_working_identity_once(store: SecureStore):
    code = issue(store, node_id="door-1", zone="entrance")
    assert code["store"] == STORE and code["ca"] == store.files.fingerprint and code["gw"] == store.gateway.url
    hardware = secrets.token_hex(16)
    first = claim(store, code["t"], hardware)
    assert first.status_code == 201, first.text
    grant = first.json()
    assert grant["node_id"] == "door-1" and grant["zone"] == "entrance" and grant["mqtt"]["username"] == "door-1"
    assert grant["ca_pem"].encode() == store.files.ca_cert.read_bytes()

    node = NodeClient(grant, store.files.ca_cert)
    try:
        assert node.link.wait_connected(10), node.link.last_error
        config = RemoteConfig.model_validate_json(wait_for(lambda: node.configs, 10, "the node's config")[0])
        assert config.node_id == "door-1" and config.zone == "entrance" and config.salt
    finally:
        node.stop()

    replay = claim(store, code["t"], hardware)
    assert replay.status_code == 409 and replay.json()["detail"]["code"] == "used"
    assert "already used" in replay.json()["detail"]["reason"]
    # the credential is stored hashed only
    assert grant["mqtt"]["password"].encode() not in store.gateway.db_path.read_bytes()
    assert grant["mqtt"]["password"].encode() not in store.files.passwd.read_bytes()


def test_foreign_unknown_and_mismatched_claims_are_refused_with_reasons(store: SecureStore):
    foreign = claim(store, f"store-9.{secrets.token_urlsafe(24)}")
    assert foreign.status_code == 403 and foreign.json()["detail"]["code"] == "foreign_store"
    assert "store-9" in foreign.json()["detail"]["reason"]
    unknown = claim(store, f"{STORE}.{secrets.token_urlsafe(24)}")
    assert unknown.status_code == 403 and unknown.json()["detail"]["code"] == "unknown"
    code = issue(store)
    elsewhere = claim(store, code["t"], store_id="store-9")
    assert elsewhere.status_code == 403 and elsewhere.json()["detail"]["code"] == "foreign_store"
    bad_hw = claim(store, code["t"], hardware_id="not hex")
    assert bad_hw.status_code == 400 and "hardware_id" in bad_hw.json()["detail"]["reason"]
    # none of the refusals spent the token
    assert claim(store, code["t"]).status_code == 201


def test_a_revoked_node_is_cut_off_at_once(store: SecureStore):
    grant = claim(store, issue(store, node_id="shoes-1", zone="shoes")["t"]).json()
    node = NodeClient(grant, store.files.ca_cert)
    basic = (grant["node_id"], grant["mqtt"]["password"])
    calibration = {"rssi_1m": -60.0, "exponent": 2.2, "samples": 40, "spread_db": 2.0}
    try:
        assert node.link.wait_connected(10), node.link.last_error
        ok = httpx.put(store.gateway.url + "/api/node/calibration", json=calibration, auth=basic,
                       verify=store.trust)
        assert ok.status_code == 200, ok.text
        with store.api() as api:
            assert api.post("/api/installer/nodes/shoes-1/revoke").status_code == 200
            wait_for(lambda: not node.link.connected.is_set(), 10, "the broker to drop the revoked node")
            wait_for(lambda: node.link.last_error and "Not authorized" in node.link.last_error, 10,
                     "the broker to refuse the revoked node's reconnect")
            assert not node.link.connected.is_set()
            nodes = {n["node_id"]: n for n in api.get("/api/installer/nodes").json()}
            assert nodes["shoes-1"]["revoked"]
            assert api.post("/api/installer/nodes/shoes-1/revoke").status_code == 409
        refused = httpx.put(store.gateway.url + "/api/node/calibration", json=calibration, auth=basic,
                            verify=store.trust)
        assert refused.status_code == 401
    finally:
        node.stop()


def test_the_gateway_ignores_a_payload_that_names_another_node(store: SecureStore):
    mine = claim(store, issue(store, node_id="tills-1")["t"]).json()
    claim(store, issue(store, node_id="tills-2")["t"])
    node = NodeClient(mine, store.files.ca_cert)
    try:
        assert node.link.wait_connected(10), node.link.last_error
        posing = CountsEvent(node_id="tills-2", boot_id="b", seq=1, ts=protocol.utcnow(), interval_s=10, line_in=5,
                             line_out=0, occupancy=5)
        node.link.publish(protocol.topic(STORE, "tills-1", Channel.COUNTS), protocol.encode(posing))
        wait_for(lambda: ("tills-1", "node_mismatch") in store.gateway.dead_letters(), 10,
                 "the gateway to dead-letter the mismatched payload")
        with store.api() as api:
            events = api.get("/api/events", params={"node": "tills-2"}).json()
        assert events == []
    finally:
        node.stop()


def test_a_claim_needs_https_and_the_installer_role(store: SecureStore):
    with pytest.raises(httpx.HTTPError):
        httpx.post(store.gateway.url.replace("https", "http") + "/provision/claim", json={}, timeout=5)
    anonymous = httpx.post(store.gateway.url + "/api/installer/claims", json={}, verify=store.trust)
    assert anonymous.status_code == 401
    untrusting = httpx.Client(verify=True)
    with pytest.raises(httpx.ConnectError, match="CERTIFICATE_VERIFY_FAILED"):
        untrusting.get(store.gateway.url + "/healthz")
    pem = httpx.get(store.gateway.url + "/provision/ca.pem", verify=False)
    assert pem.status_code == 200 and pem.content == store.files.ca_cert.read_bytes()
