"""The generated store broker, against a real Mosquitto with real paho clients: TLS, per-node
credentials, ACLs, client-id binding and immediate revocation.

Denials are checked with a barrier rather than a pause: after a forbidden publish the same client
publishes an allowed marker, and since Mosquitto handles one client's packets in order, once the
marker has arrived anything the forbidden publish would have delivered has arrived too.
"""

from __future__ import annotations

import getpass
import re
import shutil
import ssl
import stat
import subprocess
import threading
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import paho.mqtt.client as paho
import pytest
from paho.mqtt.reasoncodes import ReasonCode
from typer.testing import CliRunner

from edge.mqtt import Inbound, MqttLink
from edge.settings import MqttSettings
from gateway.broker import MOSQUITTO_CONF, GeneratedMosquitto, free_port
from gateway.broker_setup import (
    OPERATIONAL_SETTINGS,
    BrokerAuth,
    BrokerFiles,
    BrokerSetupError,
    gateway_mqtt_settings,
    generate,
    hash_password,
    new_password,
    node_mqtt_settings,
    read_passwd,
    verify_password,
)
from gateway.store_ca import StoreCA
from tests.conftest import mosquitto_binary, wait_for

STORE = "sec-store"
ROOT = f"omnisense/v1/{STORE}"
NOT_AUTHORIZED = 0x87
BAD_CREDENTIALS = 0x86


# --- a paho client that records everything --------------------------------------------------------


class Client:
    """A raw MQTT 5 paho client (TLS with the store's CA unless told otherwise) recording what happens."""

    def __init__(self, files: BrokerFiles, username: str | None, password: str | None,
                 client_id: str | None = None, *, ca_file: Path | None | str = "store", tls: bool = True) -> None:
        self.files = files
        self.client = paho.Client(paho.CallbackAPIVersion.VERSION2, client_id=client_id or f"t-{uuid.uuid4().hex[:8]}",
                                  protocol=paho.MQTTv5)
        if username is not None:
            self.client.username_pw_set(username, password)
        if tls:
            self.client.tls_set(ca_certs=str(files.ca_cert) if ca_file == "store" else ca_file,
                                cert_reqs=ssl.CERT_REQUIRED)
        self.client.reconnect_delay_set(0.2, 1)
        self._lock = threading.Lock()
        self.connacks: list[ReasonCode] = []
        self.disconnects: list[str] = []
        self.messages: list[tuple[str, bytes, bool]] = []
        self.pubacks: dict[int, ReasonCode] = {}
        self.subacks: dict[int, list[ReasonCode]] = {}
        self.client.on_connect = lambda _c, _u, _f, rc, _p: self._add(self.connacks, rc)
        self.client.on_disconnect = lambda _c, _u, _f, rc, _p: self._add(self.disconnects, str(rc))
        self.client.on_message = lambda _c, _u, m: self._add(self.messages, (m.topic, m.payload, bool(m.retain)))
        self.client.on_publish = self._on_publish
        self.client.on_subscribe = self._on_subscribe

    def _add(self, into: list[Any], item: Any) -> None:
        with self._lock:
            into.append(item)

    def _on_publish(self, _c: object, _u: object, mid: int, rc: ReasonCode, _p: object) -> None:
        with self._lock:
            self.pubacks[mid] = rc

    def _on_subscribe(self, _c: object, _u: object, mid: int, rcs: list[ReasonCode], _p: object) -> None:
        with self._lock:
            self.subacks[mid] = rcs

    def start(self) -> Client:
        self.client.connect("127.0.0.1", self.files.port, keepalive=10)
        self.client.loop_start()
        return self

    def connected(self, timeout: float = 10) -> Client:
        wait_for(lambda: self.connacks, timeout, "a CONNACK")
        assert not self.connacks[0].is_failure, f"refused: {self.connacks[0]}"
        return self

    def refused(self, timeout: float = 10) -> ReasonCode:
        wait_for(lambda: self.connacks or self.disconnects, timeout, "a CONNACK or a disconnect")
        self.stop()  # or paho would keep retrying
        assert self.connacks and self.connacks[0].is_failure, f"expected a refusal, got {self.connacks}"
        return self.connacks[0]

    def publish(self, topic: str, payload: bytes, qos: int = 1, retain: bool = False) -> ReasonCode | None:
        """Publish; for QoS 1 wait for the PUBACK and return its reason code."""
        info = self.client.publish(topic, payload, qos=qos, retain=retain)
        if qos == 0:
            return None
        return wait_for(lambda: self.pubacks.get(info.mid), 10, f"PUBACK of {topic}")

    def subscribe(self, *filters: str) -> list[ReasonCode]:
        _, mid = self.client.subscribe([(f, 1) for f in filters])
        return wait_for(lambda: self.subacks.get(mid), 10, "SUBACK")

    def received(self, topic_part: str) -> list[tuple[str, bytes, bool]]:
        with self._lock:
            return [m for m in self.messages if topic_part in m[0]]

    def stop(self) -> None:
        self.client.disconnect()
        self.client.loop_stop()


class Gateway:
    """The gateway's side, through the real MqttLink with the settings handed out for the generated broker."""

    def __init__(self, files: BrokerFiles) -> None:
        self.messages: list[Inbound] = []
        self.link = MqttLink(MqttSettings(**gateway_mqtt_settings(files)), f"omnisense-gateway-{STORE}",
                             subscriptions=[(f"{ROOT}/#", 1)], on_message=self.messages.append)

    def got(self, payload: bytes) -> list[Inbound]:
        return [m for m in list(self.messages) if m.payload == payload]


# --- fixtures -------------------------------------------------------------------------------------


class Broker:
    def __init__(self, files: BrokerFiles, process: GeneratedMosquitto) -> None:
        self.files = files
        self.process = process
        self.auth = BrokerAuth.from_dir(files.directory, STORE)
        self.clients: list[Client] = []

    def node(self) -> tuple[str, str]:
        """A freshly registered node: (node id, password)."""
        node_id, password = f"n{uuid.uuid4().hex[:8]}", new_password()
        self.auth.set_node(node_id, password)
        return node_id, password

    def client(self, username: str | None, password: str | None, client_id: str | None = None,
               **kwargs: Any) -> Client:
        client = Client(self.files, username, password, client_id, **kwargs)
        self.clients.append(client)
        return client

    def connect_node(self, node_id: str, password: str, client_id: str | None = None) -> Client:
        """Connect, retrying while the broker has not yet re-read the password file after set_node()."""
        def attempt() -> Client | None:
            client = self.client(node_id, password, client_id or f"omnisense-{STORE}-{node_id}").start()
            wait_for(lambda: client.connacks, 10, "a CONNACK")
            if client.connacks[0].is_failure:
                client.stop()
                return None
            return client
        return wait_for(attempt, 10, f"{node_id} to be accepted")


@pytest.fixture(scope="module")
def broker(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Broker]:
    files = generate(tmp_path_factory.mktemp("broker"), STORE, port=free_port(), bind="127.0.0.1",
                     user=getpass.getuser())
    process = GeneratedMosquitto(files, mosquitto_binary())
    process.start()
    found = Broker(files, process)
    yield found
    for client in found.clients:
        client.stop()
    process.stop()


@pytest.fixture(scope="module")
def gateway(broker: Broker) -> Iterator[Gateway]:
    gw = Gateway(broker.files)
    gw.link.start()
    wait_for(gw.link.subscribed.is_set, 10, "the gateway to subscribe")
    yield gw
    gw.link.stop()


def token() -> bytes:
    return uuid.uuid4().hex.encode()


# --- passwords ------------------------------------------------------------------------------------


def test_hashes_are_mosquitto_format_and_mosquitto_passwd_hashes_verify(tmp_path: Path) -> None:
    hashed = hash_password("s3cret")
    assert re.fullmatch(r"\$7\$101\$[A-Za-z0-9+/=]{16}\$[A-Za-z0-9+/=]{88}", hashed)
    assert verify_password("s3cret", hashed) and not verify_password("s3cret ", hashed)
    assert not verify_password("s3cret", "$7$garbage")
    tool = shutil.which("mosquitto_passwd")
    if tool is None:
        pytest.skip("mosquitto_passwd is not installed; Mosquitto accepting our hashes is tested below")
    path = tmp_path / "passwd"
    subprocess.run([tool, "-c", "-b", str(path), "someone", "their password"], check=True, capture_output=True)
    theirs = read_passwd(path)["someone"]
    assert verify_password("their password", theirs) and not verify_password("their passwordx", theirs)


def test_mosquitto_accepts_a_password_hashed_here_and_refuses_strangers(broker: Broker) -> None:
    node_id, password = broker.node()
    assert read_passwd(broker.files.passwd)[node_id].startswith("$7$")
    broker.connect_node(node_id, password)
    for username, secret in [(None, None), (node_id, password + "x"), ("nobody", password), (node_id, "")]:
        reason = broker.client(username, secret).start().refused()
        assert reason.value in (NOT_AUTHORIZED, BAD_CREDENTIALS), f"{username!r}: {reason}"


# --- what a node may do ---------------------------------------------------------------------------


def test_node_publishes_its_own_status_and_events_and_reads_its_own_config(broker: Broker, gateway: Gateway) -> None:
    node_id, password = broker.node()
    config = token()
    gateway.link.publish(f"{ROOT}/{node_id}/config", config, qos=1, retain=True)
    wait_for(lambda: gateway.got(config), 10, "the gateway to see its own config")

    # The node's settings as handed out, through the real MqttLink (MQTT 5, no probe).
    settings = MqttSettings(**node_mqtt_settings(broker.files, node_id, "127.0.0.1"), password=password)
    inbox: list[Inbound] = []
    link = MqttLink(settings, f"omnisense-{STORE}-{node_id}", subscriptions=[(f"{ROOT}/{node_id}/config", 1)],
                    on_message=inbox.append)
    link.start()
    try:
        wait_for(link.subscribed.is_set, 10, "the node to subscribe")
        wait_for(lambda: [m for m in inbox if m.payload == config and m.retain], 10, "the node's retained config")
        status, event = token(), token()
        link.publish(f"{ROOT}/{node_id}/status", status, qos=1, retain=True)
        link.publish(f"{ROOT}/{node_id}/events/presence", event, qos=1)
        wait_for(lambda: gateway.got(status) and gateway.got(event), 10, "the gateway to receive status and event")
    finally:
        link.stop()


def test_node_cannot_publish_under_another_nodes_or_stores_topics(broker: Broker, gateway: Gateway) -> None:
    (a, a_pw), (b, _) = broker.node(), broker.node()
    node = broker.connect_node(a, a_pw)
    forbidden = [f"{ROOT}/{b}/status", f"{ROOT}/{b}/events/presence", f"{ROOT}/{b}/events/test",
                 f"{ROOT}/{b}/config", f"{ROOT}/{a}/config", f"omnisense/v1/other-store/{a}/status",
                 f"omnisense/v1/other-store/{a}/events/counts", f"{ROOT}/{a}/elsewhere", "$SYS/broker/x", "anything"]
    sent = []
    for topic in forbidden:
        payload = token()
        sent.append(payload)
        assert node.publish(topic, payload, qos=1).value == NOT_AUTHORIZED, topic  # MQTT 5 PUBACK says so
        payload = token()
        sent.append(payload)
        node.publish(topic, payload, qos=0)  # silently dropped
    marker = token()
    assert not node.publish(f"{ROOT}/{a}/events/counts", marker).is_failure
    wait_for(lambda: gateway.got(marker), 10, "the marker")
    assert not [p for p in sent if gateway.got(p)]


def test_node_cannot_read_another_nodes_config_or_events(broker: Broker, gateway: Gateway) -> None:
    (a, a_pw), (b, b_pw) = broker.node(), broker.node()
    secret_config = token()
    gateway.link.publish(f"{ROOT}/{b}/config", secret_config, qos=1, retain=True)
    wait_for(lambda: gateway.got(secret_config), 10, "B's retained config to be stored")

    spy = broker.connect_node(a, a_pw)
    spy.subscribe(f"{ROOT}/{b}/config", f"{ROOT}/{b}/#", f"{ROOT}/#", "omnisense/#", "#", "$SYS/#")
    own = token()
    spy.publish(f"{ROOT}/{a}/status", own, retain=True)  # its own status it may read back
    wait_for(lambda: spy.received(f"/{a}/status"), 10, "A's own status")

    other = broker.connect_node(b, b_pw)
    event = token()
    other.publish(f"{ROOT}/{b}/events/presence", event)
    wait_for(lambda: gateway.got(event), 10, "the gateway to receive B's event")
    marker = token()
    spy.publish(f"{ROOT}/{a}/status", marker, retain=True)
    wait_for(lambda: [m for m in spy.received(f"/{a}/status") if m[1] == marker], 10, "A's marker")
    assert {topic for topic, _, _ in spy.messages} == {f"{ROOT}/{a}/status"}, spy.messages


# --- TLS ------------------------------------------------------------------------------------------


def test_clients_must_trust_the_store_ca_and_speak_tls(broker: Broker, tmp_path: Path) -> None:
    node_id, password = broker.node()
    stranger_ca = StoreCA.load_or_create(tmp_path / "other-ca", STORE).directory / "ca.pem"
    for ca in (None, stranger_ca):  # the system's CAs, then another store's CA
        with pytest.raises(ssl.SSLCertVerificationError):
            broker.client(node_id, password, ca_file=ca).start()
    plain = broker.client(node_id, password, tls=False)
    try:
        plain.start()
    except OSError:
        pass  # the broker may close the socket before paho has finished sending CONNECT
    else:
        wait_for(lambda: plain.disconnects, 10, "the broker to drop the plain connection")
    assert not [rc for rc in plain.connacks if not rc.is_failure]


# --- credentials change while the broker runs -----------------------------------------------------


def test_revoked_node_is_disconnected_at_once_and_cannot_reconnect(broker: Broker, gateway: Gateway) -> None:
    (victim, victim_pw), (bystander, bystander_pw) = broker.node(), broker.node()
    doomed = broker.connect_node(victim, victim_pw)
    other = broker.connect_node(bystander, bystander_pw)
    gateway_connects = gateway.link.connect_count
    pid = broker.process.pid

    broker.auth.revoke_node(victim)
    assert victim not in broker.auth.node_ids()
    wait_for(lambda: doomed.disconnects, 5, "the revoked node to be disconnected")
    # paho reconnects on its own with the old password: refused.
    refused = wait_for(lambda: [rc for rc in doomed.connacks[1:] if rc.is_failure], 10, "the reconnect to be refused")
    assert refused[0].value in (NOT_AUTHORIZED, BAD_CREDENTIALS)
    assert broker.client(victim, victim_pw).start().refused().is_failure

    # Nobody else was touched, and the broker was not restarted.
    assert not other.publish(f"{ROOT}/{bystander}/status", token()).is_failure
    assert other.disconnects == [] and len(other.connacks) == 1
    assert gateway.link.connect_count == gateway_connects and gateway.link.connected.is_set()
    assert broker.process.pid == pid == broker.auth.broker_pid()


def test_set_node_adds_and_replaces_credentials_without_a_restart(broker: Broker, gateway: Gateway) -> None:
    pid = broker.process.pid
    node_id, first = broker.node()
    client = broker.connect_node(node_id, first)
    assert node_id in broker.auth.node_ids()

    broker.auth.set_node(node_id, first)  # the same password again: nothing changes, nobody is dropped
    assert not client.publish(f"{ROOT}/{node_id}/status", token()).is_failure and client.disconnects == []

    second = new_password()
    broker.auth.set_node(node_id, second)  # re-claimed: the old credential stops working at once
    wait_for(lambda: client.disconnects, 5, "the connection with the old password to be closed")
    client.stop()
    broker.client(node_id, first).start().refused()
    event = token()
    assert not broker.connect_node(node_id, second).publish(f"{ROOT}/{node_id}/events/counts", event).is_failure
    wait_for(lambda: gateway.got(event), 10, "the event under the new password")
    assert broker.process.pid == pid


def test_no_client_can_take_over_another_clients_id(broker: Broker, gateway: Gateway) -> None:
    (a, a_pw), (b, b_pw) = broker.node(), broker.node()
    victim = broker.connect_node(b, b_pw, client_id=f"omnisense-{STORE}-{b}")
    gateway_connects = gateway.link.connect_count
    for stolen in (f"omnisense-{STORE}-{b}", b, f"omnisense-gateway-{STORE}", f"gateway-{STORE}"):
        intruder = broker.connect_node(a, a_pw, client_id=stolen)
        # The intruder is connected (under its own name); had it taken B's or the gateway's session,
        # the broker would have dropped them before answering its CONNECT.
        assert not intruder.publish(f"{ROOT}/{a}/status", token()).is_failure
        intruder.stop()
    assert not victim.publish(f"{ROOT}/{b}/status", token()).is_failure
    assert victim.disconnects == [] and len(victim.connacks) == 1
    assert gateway.link.connect_count == gateway_connects and gateway.link.connected.is_set()


# --- generating the files -------------------------------------------------------------------------


def _mode(path: Path) -> int:
    return stat.S_IMODE(path.stat().st_mode)


def test_generate_is_idempotent_and_keeps_secrets_private(tmp_path: Path) -> None:
    out = tmp_path / "broker"
    first = generate(out, STORE, port=18883)
    BrokerAuth.from_dir(out, STORE).set_node("door-1", "door password")
    kept = {name: (out / name).read_bytes()
            for name in ("ca.pem", "ca.key", "server.pem", "server.key", "gateway.password")}
    hashes = read_passwd(first.passwd)
    (out / "mosquitto.conf").write_text("edited by hand\n")

    second = generate(out, STORE, port=18883)
    assert second.fingerprint == first.fingerprint and re.fullmatch(r"[0-9a-f]{64}", first.fingerprint)
    assert {name: (out / name).read_bytes() for name in kept} == kept
    assert read_passwd(second.passwd) == hashes and BrokerAuth.from_dir(out, STORE).node_ids() == {"door-1"}
    assert verify_password((out / "gateway.password").read_text().splitlines()[0],
                           hashes[f"gateway-{STORE}"])
    assert "allow_anonymous false" in second.conf.read_text()
    for name in ("passwd", "ca.key", "server.key", "gateway.password"):
        assert _mode(out / name) == 0o600, name
    assert _mode(out / "data") == 0o700

    renamed = generate(out, STORE, port=18883, hostnames=["gw.example"], ips=["10.0.0.2"])
    assert renamed.fingerprint == first.fingerprint
    assert (out / "server.pem").read_bytes() != kept["server.pem"]  # new names, new certificate
    assert gateway_mqtt_settings(renamed, "gw.example")["url"] == "mqtts://gw.example:18883"
    with pytest.raises(BrokerSetupError, match="not a name of the broker's certificate"):
        gateway_mqtt_settings(out, "127.0.0.1")


def test_generated_conf_keeps_the_operational_settings_of_the_dev_broker(tmp_path: Path) -> None:
    shipped = dict(re.findall(r"(?m)^(\w+)\s+(.+?)\s*$", MOSQUITTO_CONF.read_text()))
    generated = dict(re.findall(r"(?m)^(\w+)\s+(.+?)\s*$", generate(tmp_path, STORE).conf.read_text()))
    for key, value in OPERATIONAL_SETTINGS.items():
        assert shipped[key] == value == generated[key], key
    assert generated["allow_anonymous"] == "false" and generated["use_username_as_clientid"] == "true"
    assert generated["tls_version"] == "tlsv1.2" and "user" not in generated
    me = getpass.getuser()
    assert generate(tmp_path, STORE, user=me).conf.read_text().count(f"\nuser {me}\n") == 1


def test_bad_input_is_named(tmp_path: Path) -> None:
    with pytest.raises(BrokerSetupError, match="store_id"):
        generate(tmp_path / "a", "no/slashes")
    with pytest.raises(BrokerSetupError, match="ips"):
        generate(tmp_path / "a", STORE, ips=["300.1.1.1"])
    blocker = tmp_path / "file"
    blocker.write_text("")
    with pytest.raises(BrokerSetupError, match=re.escape(str(blocker / "b"))):
        generate(blocker / "b", STORE)

    out = tmp_path / "c"
    generate(out, STORE)
    with pytest.raises(BrokerSetupError, match="holds the broker of store"):
        generate(out, "another-store")
    with pytest.raises(BrokerSetupError, match="of store 'sec-store', not 'another-store'"):
        BrokerAuth.from_dir(out, "another-store")
    auth = BrokerAuth.from_dir(out, STORE)
    for bad in ("a/b", "+", "#", "", f"gateway-{STORE}"):
        with pytest.raises(ValueError, match="node_id"):
            auth.set_node(bad, "pw")
    with pytest.raises(ValueError, match="password"):
        auth.set_node("ok", "two\nlines")

    with (out / "passwd").open("a") as f:
        f.write("intruder\n")  # no hash: Mosquitto would let this user in with any password
    with pytest.raises(BrokerSetupError, match=rf"{re.escape(str(out / 'passwd'))} line 2"):
        BrokerAuth.from_dir(out, STORE)
    with pytest.raises(BrokerSetupError, match="passwd line 2"):
        generate(out, STORE)
    with pytest.raises(BrokerSetupError, match="broker.json"):
        BrokerAuth.from_dir(tmp_path / "nowhere", STORE)


def test_cli_writes_the_configuration_and_prints_how_to_run_it(tmp_path: Path) -> None:
    from omnisense.cli import app

    out = tmp_path / "broker"
    args = ["broker", "config", "--store-id", STORE, "--out", str(out), "--port", "18884",
            "--hostname", "gw.local", "--ip", "192.168.1.10"]
    result = CliRunner().invoke(app, args, env={"COLUMNS": "200"})
    assert result.exit_code == 0, result.output
    files = BrokerFiles.load(out)
    assert files.fingerprint in result.output
    assert f"-c {files.conf}" in result.output and "mqtts://gw.local:18884" in result.output
    assert files.hostnames == ("gw.local",) and files.ips == ("192.168.1.10",)
    bad = CliRunner().invoke(app, [*args[:3], "x y", *args[4:]], env={"COLUMNS": "200"})
    assert bad.exit_code == 2 and "store_id" in bad.output


def test_a_stale_pid_file_never_signals_another_process(tmp_path: Path) -> None:
    files = generate(tmp_path, STORE)
    bystander = subprocess.Popen(["sleep", "30"])  # SIGHUP would end it
    try:
        files.pid_file.write_text(f"{bystander.pid}\n")
        auth = BrokerAuth.from_dir(tmp_path, STORE)
        assert auth.broker_pid() is None
        auth.set_node("door-1", "pw")  # written, applied when the broker starts
        auth.revoke_node("door-1")
        assert bystander.poll() is None and auth.node_ids() == set()
    finally:
        bystander.kill()
        bystander.wait()
