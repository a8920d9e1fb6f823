"""The node's side of an install: claim codes, the pinned CA, claiming over real HTTPS, placement and
calibration applied, the calibration math and its run on the simulator, and the local snapshot."""

from __future__ import annotations

import asyncio
import base64
import datetime as dt
import hashlib
import ipaddress
import json
import math
import ssl
import stat
import threading
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any
from urllib.parse import quote

import cv2
import numpy as np
import pytest
import yaml
from cryptography import x509
from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.hazmat.primitives.serialization import Encoding, NoEncryption, PrivateFormat
from cryptography.x509.oid import NameOID
from typer.testing import CliRunner

from edge.claim import ClaimCode, ClaimError, claim, hardware_id, parse_claim_code
from edge.config import NodeConfig
from edge.protocol import CameraPlacement, Channel, RadioCalibration, RemoteConfig
from edge.radio.calibration import CalibrationError, Reference, calibrate
from edge.radio.pipeline import RadioOptions, RadioPipeline
from edge.settings import load_config
from edge.vision.camera_source import CameraOptions, CameraSource
from omnisense.cli import app

STORE = "store-7"
TOKEN = "store-7.s3cret-token_value"
PASSWORD = "pw-Zq8v3xK2mN7"
UUID = "e2c56db5-dffb-48d2-b060-d0f5a71096e0"
SIM_START = "2025-03-03T11:00:00+00:00"


# --- a throwaway PKI and a real HTTPS gateway stand-in ---------------------------------------------------------------


@dataclass
class Authority:
    key: ec.EllipticCurvePrivateKey
    cert: x509.Certificate

    @classmethod
    def create(cls, name: str) -> Authority:
        key = ec.generate_private_key(ec.SECP256R1())
        subject = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, name)])
        now = dt.datetime.now(dt.UTC)
        cert = (x509.CertificateBuilder().subject_name(subject).issuer_name(subject).public_key(key.public_key())
                .serial_number(x509.random_serial_number()).not_valid_before(now - dt.timedelta(hours=1))
                .not_valid_after(now + dt.timedelta(days=1))
                .add_extension(x509.BasicConstraints(ca=True, path_length=0), critical=True)
                .add_extension(x509.KeyUsage(digital_signature=True, key_cert_sign=True, crl_sign=True,
                                             content_commitment=False, key_encipherment=False, data_encipherment=False,
                                             key_agreement=False, encipher_only=False, decipher_only=False),
                               critical=True)
                .sign(key, hashes.SHA256()))
        return cls(key, cert)

    @property
    def pem(self) -> bytes:
        return self.cert.public_bytes(Encoding.PEM)

    @property
    def fingerprint(self) -> str:
        return hashlib.sha256(self.cert.public_bytes(Encoding.DER)).hexdigest()

    def server_files(self, folder: Path) -> tuple[Path, Path]:
        """A certificate for 127.0.0.1 and localhost signed by this CA: (cert file, key file)."""
        key = ec.generate_private_key(ec.SECP256R1())
        now = dt.datetime.now(dt.UTC)
        cert = (x509.CertificateBuilder()
                .subject_name(x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "gateway")]))
                .issuer_name(self.cert.subject).public_key(key.public_key())
                .serial_number(x509.random_serial_number()).not_valid_before(now - dt.timedelta(hours=1))
                .not_valid_after(now + dt.timedelta(days=1))
                .add_extension(x509.SubjectAlternativeName([x509.DNSName("localhost"),
                                                            x509.IPAddress(ipaddress.ip_address("127.0.0.1"))]),
                               critical=False)
                .sign(self.key, hashes.SHA256()))
        folder.mkdir(parents=True, exist_ok=True)
        cert_file, key_file = folder / "server.pem", folder / "server.key"
        cert_file.write_bytes(cert.public_bytes(Encoding.PEM))
        key_file.write_bytes(key.private_bytes(Encoding.PEM, PrivateFormat.PKCS8, NoEncryption()))
        return cert_file, key_file


@pytest.fixture(scope="module")
def store_ca() -> Authority:
    return Authority.create("store-7 CA")


@dataclass
class Gateway:
    """What the test gateway answers and what it was asked."""

    url: str = ""
    ca_pem: bytes = b""
    claim_status: int = 201
    claim_body: dict[str, Any] = field(default_factory=dict)
    requests: list[tuple[str, str, dict[str, str], bytes]] = field(default_factory=list)

    def grant(self, ca_pem: bytes) -> dict[str, Any]:
        return {"node_id": "entrance-3", "store_id": STORE, "zone": "entrance",
                "mqtt": {"url": "mqtts://127.0.0.1:8883", "username": "entrance-3", "password": PASSWORD,
                         "protocol": "5"},
                "gateway_url": self.url, "ca_pem": ca_pem.decode()}


@pytest.fixture
def https_gateway(tmp_path: Path, store_ca: Authority) -> Iterator[Callable[..., Gateway]]:
    """Start a real HTTPS server on loopback: `start(served_ca=..., signer=...)` -> Gateway."""
    servers: list[ThreadingHTTPServer] = []

    def start(served: Authority | None = None, signer: Authority | None = None) -> Gateway:
        gw = Gateway()
        gw.ca_pem = (served or store_ca).pem
        cert_file, key_file = (signer or served or store_ca).server_files(tmp_path / f"tls{len(servers)}")

        class Handler(BaseHTTPRequestHandler):
            def _answer(self, status: int, body: bytes, kind: str = "application/json") -> None:
                self.send_response(status)
                self.send_header("Content-Type", kind)
                self.send_header("Content-Length", str(len(body)))
                self.end_headers()
                self.wfile.write(body)

            def _record(self) -> bytes:
                body = self.rfile.read(int(self.headers.get("Content-Length") or 0))
                gw.requests.append((self.command, self.path, dict(self.headers), body))
                return body

            def do_GET(self) -> None:
                self._record()
                if self.path == "/provision/ca.pem":
                    self._answer(200, gw.ca_pem, "application/x-pem-file")
                else:
                    self._answer(404, b'{"detail": "not found"}')

            def do_POST(self) -> None:
                self._record()
                body = gw.claim_body or gw.grant(gw.ca_pem)
                self._answer(gw.claim_status, json.dumps(body).encode())

            def do_PUT(self) -> None:
                body = json.loads(self._record())
                expected = "Basic " + base64.b64encode(f"entrance-3:{PASSWORD}".encode()).decode()
                if self.headers.get("Authorization") != expected:
                    self._answer(401, b'{"detail": {"code": "auth", "reason": "unknown node or wrong password"}}')
                    return
                self._answer(200, json.dumps({"rssi_1m": body["rssi_1m"], "exponent": body["exponent"]}).encode())

            def log_message(self, format: str, *args: Any) -> None:
                pass

        httpd = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        context = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
        context.load_cert_chain(cert_file, key_file)
        httpd.socket = context.wrap_socket(httpd.socket, server_side=True)
        httpd.daemon_threads = True
        threading.Thread(target=httpd.serve_forever, kwargs={"poll_interval": 0.05}, daemon=True).start()
        servers.append(httpd)
        gw.url = f"https://127.0.0.1:{httpd.server_address[1]}"
        return gw

    yield start
    for httpd in servers:
        httpd.shutdown()
        httpd.server_close()


def code_for(gw: Gateway, pin: str, token: str = TOKEN) -> str:
    return f"omnisense://claim?gw={quote(gw.url, safe='')}&store={STORE}&ca={pin}&t={quote(token, safe='')}"


def write_yaml(path: Path, doc: dict[str, Any]) -> Path:
    path.write_text(yaml.safe_dump(doc, sort_keys=False))
    return path


# --- claim codes ---------------------------------------------------------------------------------------------------

PIN = "ab" * 32
GOOD = f"omnisense://claim?gw=https%3A%2F%2Fgw.store-7.local%3A8443&store={STORE}&ca={PIN}&t={TOKEN}"


def test_a_claim_code_parses_and_keeps_its_token_out_of_repr() -> None:
    code = parse_claim_code("  " + GOOD + "\n")
    assert code == ClaimCode("https://gw.store-7.local:8443", STORE, PIN, TOKEN)
    assert TOKEN not in repr(code)
    colons = ":".join(PIN[i:i + 2].upper() for i in range(0, 64, 2))  # as a browser shows a fingerprint
    assert parse_claim_code(GOOD.replace(PIN, colons)).ca_sha256 == PIN


@pytest.mark.parametrize(("text", "named"), [
    ("https://gw.store-7.local/claim?t=x", "not a claim code"),
    (GOOD.replace(f"&t={TOKEN}", ""), "t (the claim token)"),
    (GOOD.replace(f"&t={TOKEN}", "&t="), "t (the claim token)"),
    (GOOD.split("&ca=")[0], "ca (the CA fingerprint), t (the claim token): was it cut off?"),
    (GOOD.replace("https%3A%2F%2F", "http%3A%2F%2F"), "must be an https:// URL"),
    (GOOD.replace(f"store={STORE}", "store=store 7!"), "is not a store id"),
    (GOOD.replace(PIN, PIN[:40]), "64 hex digits"),
    (GOOD.replace(PIN, "zz" * 32), "64 hex digits"),
    (GOOD + "&t=other", "gives t more than once"),
    (GOOD.replace("%3A8443", "%3Aport"), "bad port"),
])
def test_a_bad_claim_code_names_what_is_wrong(text: str, named: str) -> None:
    with pytest.raises(ClaimError, match=None) as err:
        parse_claim_code(text)
    assert named in str(err.value)
    assert TOKEN not in str(err.value) or named == "not a claim code"


def test_hardware_id_is_a_hash_of_machine_id_else_pi_serial_else_mac(tmp_path: Path) -> None:
    machine, cpu = tmp_path / "machine-id", tmp_path / "cpuinfo"
    machine.write_text("4c4c4544004a4810804bb4c04f4d4e32\n")
    cpu.write_text("processor\t: 0\nHardware\t: BCM2835\nSerial\t\t: 10000000abcdef01\nModel\t: Raspberry Pi 4\n")
    by_machine = hardware_id(machine, cpu)
    by_serial = hardware_id(tmp_path / "missing", cpu)
    fallback = hardware_id(tmp_path / "missing", tmp_path / "missing")
    assert len({by_machine, by_serial, fallback}) == 3
    assert all(len(h) == 64 and int(h, 16) >= 0 for h in (by_machine, by_serial, fallback))
    assert "4c4c4544" not in by_machine and "abcdef01" not in by_serial
    assert hardware_id(machine, cpu) == by_machine  # stable


# --- claiming over real HTTPS --------------------------------------------------------------------------------------


def test_a_claim_writes_a_node_that_loads_with_its_password_in_a_private_file(
        tmp_path: Path, https_gateway: Callable[..., Gateway], store_ca: Authority) -> None:
    gw = https_gateway()
    template = write_yaml(tmp_path / "template.yaml", {"store_id": "x", "node_id": "x", "sources": [
        {"kind": "sim_ble", "options": {"sim": {"node": "shoes-radio"}}}]})
    out = tmp_path / "etc"
    path = claim(parse_claim_code(code_for(gw, store_ca.fingerprint)), out, template, hardware="ab" * 32)

    assert path == (out / "node.yaml").resolve()
    config = load_config(NodeConfig, path, "OMNISENSE_NODE", env={})
    assert (config.store_id, config.node_id) == (STORE, "entrance-3")
    assert config.mqtt.url == "mqtts://127.0.0.1:8883" and config.mqtt.username == "entrance-3"
    assert config.mqtt.protocol == "5" and config.mqtt.password is None
    assert config.mqtt.secret() == PASSWORD
    assert config.mqtt.ca_file == config.gateway.ca_file == out.resolve() / "ca.pem"
    assert config.gateway.url == gw.url and config.data_dir == out.resolve() / "data"
    assert [s.kind for s in config.sources] == ["sim_ble"]
    assert (out / "ca.pem").read_bytes() == store_ca.pem
    assert stat.S_IMODE((out / "mqtt.password").stat().st_mode) == 0o600
    assert (out / "mqtt.password").read_text() == PASSWORD + "\n"
    assert PASSWORD not in path.read_text()

    [fetch, post] = [(m, p) for m, p, _, _ in gw.requests]
    assert fetch == ("GET", "/provision/ca.pem") and post == ("POST", "/provision/claim")
    body = json.loads(gw.requests[1][3])
    assert body == {"token": TOKEN, "hardware_id": "ab" * 32, "store_id": STORE}


def test_a_gateway_presenting_another_ca_is_refused_before_the_token_is_sent(
        tmp_path: Path, https_gateway: Callable[..., Gateway], store_ca: Authority) -> None:
    impostor = https_gateway(served=Authority.create("impostor CA"))
    with pytest.raises(ClaimError) as err:
        claim(parse_claim_code(code_for(impostor, store_ca.fingerprint)), tmp_path / "out")
    assert "presented a CA that does not match the claim code: possible impostor" in str(err.value)
    assert impostor.url in str(err.value)
    assert [m for m, *_ in impostor.requests] == ["GET"]  # the token never left the node
    assert not (tmp_path / "out" / "node.yaml").exists()


def test_a_server_serving_the_right_ca_but_not_holding_its_key_fails_tls(
        tmp_path: Path, https_gateway: Callable[..., Gateway], store_ca: Authority) -> None:
    # A man in the middle can copy the public CA certificate, but its own TLS certificate is signed by another key.
    mitm = https_gateway(served=store_ca, signer=Authority.create("mitm CA"))
    with pytest.raises(ClaimError) as err:
        claim(parse_claim_code(code_for(mitm, store_ca.fingerprint)), tmp_path / "out")
    assert "did not prove it is the store's gateway" in str(err.value)
    assert [m for m, *_ in mitm.requests] == ["GET"]


@pytest.mark.parametrize(("status", "code", "reason"), [
    (409, "used", "This claim code was already used by another node."),
    (410, "expired", "This claim code expired at 10:42; ask for a new one."),
    (403, "foreign_store", "This claim code belongs to store other-store, not store-7."),
])
def test_a_refused_claim_shows_the_gateways_reason(
        tmp_path: Path, https_gateway: Callable[..., Gateway], store_ca: Authority,
        status: int, code: str, reason: str) -> None:
    gw = https_gateway()
    gw.claim_status, gw.claim_body = status, {"detail": {"code": code, "reason": reason}}
    result = CliRunner().invoke(app, ["provision", "claim", code_for(gw, store_ca.fingerprint),
                                      "--out", str(tmp_path / "out")], env={"COLUMNS": "300"})
    assert result.exit_code == 2
    assert reason in " ".join(result.output.split())
    assert not (tmp_path / "out" / "mqtt.password").exists()


def test_the_claim_command_prints_what_it_wrote(
        tmp_path: Path, https_gateway: Callable[..., Gateway], store_ca: Authority) -> None:
    gw = https_gateway()
    result = CliRunner().invoke(app, ["provision", "claim", code_for(gw, store_ca.fingerprint),
                                      "--out", str(tmp_path / "out")], env={"COLUMNS": "300"})
    assert result.exit_code == 0, result.output
    assert "node entrance-3 of store store-7" in result.output and "omnisense node -c" in result.output
    assert PASSWORD not in result.output and TOKEN not in result.output


def test_an_unreachable_gateway_and_a_bad_template_are_clear(tmp_path: Path, store_ca: Authority) -> None:
    code = ClaimCode("https://127.0.0.1:9", STORE, store_ca.fingerprint, TOKEN)
    with pytest.raises(ClaimError, match=r"cannot reach the gateway at https://127.0.0.1:9"):
        claim(code, tmp_path / "out")
    template = write_yaml(tmp_path / "t.yaml", {"sources": [{"kind": "camra", "options": {}}]})
    with pytest.raises(ClaimError, match=r"unknown source kind 'camra'"):
        claim(code, tmp_path / "out", template)  # checked before anything is sent


# --- placement applied on the node -----------------------------------------------------------------------------------

W, H, PW, PH = 320, 240, 16, 44
WARMUP = 60


def _background() -> np.ndarray:
    rng = np.random.default_rng(7)
    return cv2.GaussianBlur(rng.integers(120, 210, (H, W, 3), dtype=np.uint8), (5, 5), 0)


def _walk(start: tuple[float, float], end: tuple[float, float], t0: int, t1: int):
    def at(i: int) -> tuple[float, float] | None:
        if not t0 <= i <= t1:
            return None
        a = (i - t0) / (t1 - t0)
        return start[0] + a * (end[0] - start[0]), start[1] + a * (end[1] - start[1])
    return at


class Scene:
    """A file-like input of synthetic frames with people walking; `hooks[i]()` runs as frame i is read."""

    live = False

    def __init__(self, walks: list[Any], frames: int, hooks: dict[int, Callable[[], None]] | None = None) -> None:
        self.uri, self.fps, self.size, self.last_time = "scene", 10.0, (W, H), None
        self.walks, self.n, self.hooks, self.i = walks, frames, hooks or {}, 0
        self.bg = _background()

    def open(self) -> None:
        self.i = 0

    def read(self) -> tuple[bool, np.ndarray | None]:
        if self.i >= self.n + WARMUP:
            return False, None
        scene = self.i - WARMUP
        if scene in self.hooks:
            self.hooks[scene]()
        frame = self.bg.copy()
        for walk in self.walks:
            foot = walk(scene)
            if foot is not None:
                cv2.ellipse(frame, (int(foot[0]), int(foot[1] - PH / 2)), (PW // 2, PH // 2), 0, 0, 360,
                            (35, 30, 40), -1)
        self.last_time = 1_741_000_000.0 + self.i / self.fps
        self.i += 1
        return True, frame

    def release(self) -> None:
        pass


def camera(walks: list[Any], frames: int, hooks: dict[int, Callable[[], None]] | None = None) -> CameraSource:
    pipeline = {"line": "x=160", "person_height_px": PH, "person_width_px": PW, "perspective": 0}
    options = CameraOptions(uri="scene", counts_interval_s=1000, pipeline=pipeline, snapshot_port=0)
    return CameraSource("camera-0", options, frames=Scene(walks, frames, hooks))


def counted(source: CameraSource) -> tuple[int, int, int, dict[str, int]]:
    emitted: list[tuple[Channel, dict[str, Any]]] = []
    asyncio.run(source.run(lambda channel, fields: emitted.append((channel, fields))))
    return (sum(f["line_in"] for _, f in emitted), sum(f["line_out"] for _, f in emitted),
            emitted[-1][1]["occupancy"], emitted[-1][1]["zones"])


def remote(version: int, placement: CameraPlacement | None = None, radio: RadioCalibration | None = None,
           zone: str | None = None) -> RemoteConfig:
    return RemoteConfig(node_id="cam", version=version, issued_at=dt.datetime.now(dt.UTC), camera=placement,
                        radio=radio, zone=zone)


ACROSS_OLD = _walk((40, 200), (280, 200), 0, 40)        # left to right below the new line: crosses only x=160
DOWN_NEW = _walk((60, 60), (60, 230), 60, 100)          # top to bottom at the left: crosses only y=120
ACROSS_OLD_AGAIN = _walk((40, 200), (280, 200), 110, 150)
DOOR = {"door": [(0.0, 120.0), (319.0, 120.0), (319.0, 239.0), (0.0, 239.0)]}


def red_along(image: np.ndarray, points: list[tuple[int, int]]) -> float:
    """Share of the points (x, y) whose pixel is clearly red (the line colour after JPEG)."""
    hits = 0
    for x, y in points:
        b, g, r = (int(v) for v in image[y, x])
        hits += r > 150 and r - max(g, b) > 60
    return hits / len(points)


def test_the_installers_line_replaces_the_nodes_from_then_on_and_counts_so_far_survive() -> None:
    source: CameraSource

    def place() -> None:
        source.apply_config(remote(2, CameraPlacement(line="y=120", zones=DOOR)))

    source = camera([ACROSS_OLD, DOWN_NEW, ACROSS_OLD_AGAIN], 160, hooks={50: place})
    line_in, line_out, occupancy, zones = counted(source)
    # one in over the node's line before the change, one over the installer's after it; the old line no longer counts
    assert (line_in, line_out, occupancy) == (2, 0, 2)
    assert set(zones) == {"door"}

    snap = cv2.imdecode(np.frombuffer(source._render_snapshot(), np.uint8), cv2.IMREAD_COLOR)
    assert red_along(snap, [(x, 120) for x in range(40, 300, 10)]) > 0.8   # the new line is drawn
    assert red_along(snap, [(160, y) for y in range(30, 110, 10)]) == 0    # the old one is not


def test_without_a_placement_the_nodes_own_line_counts() -> None:
    assert counted(camera([ACROSS_OLD, DOWN_NEW, ACROSS_OLD_AGAIN], 160))[:3] == (2, 0, 2)  # the two x=160 crossings
    flipped = camera([DOWN_NEW], 110)
    flipped.apply_config(remote(1, CameraPlacement(line="y=120", flip=True)))
    assert counted(flipped)[:3] == (0, 1, 0)  # downwards is "out" once flipped


def test_a_placement_is_dropped_when_cleared_and_ignored_when_invalid() -> None:
    source = camera([], 1)
    source.apply_config(remote(1, CameraPlacement(line="y=120", zones=DOOR)))
    assert source.pipeline_settings["line"] == "y=120" and "door" in source.pipeline_settings["zones"]
    source.apply_config(remote(2, CameraPlacement(line="5,5,5,5")))
    assert source.pipeline_settings["line"] == "y=120"  # a line of one point cannot count: the last good one stays
    source.apply_config(remote(3, None))
    assert source.pipeline_settings["line"] == "x=160" and not source.pipeline_settings.get("zones")


# --- calibration applied on the node ----------------------------------------------------------------------------------


def test_a_calibration_changes_the_distance_an_rssi_stands_for_and_who_is_in_the_zone() -> None:
    def entered(pipeline: RadioPipeline) -> int:
        out: list = []
        for t in range(40):
            pipeline.presence.observe("phone", 1000.0 + t, -68.0, out)
        return sum(1 for tr in out if tr.action == "enter")

    default = RadioPipeline("ble", RadioOptions(zone="shoes"), lambda *_: None)
    assert default.presence.path_loss.distance(-68.0) == pytest.approx(10 ** (9 / 22))  # -59 dBm, n 2.2: 2.6 m
    assert entered(default) == 1

    calibrated = RadioPipeline("ble", RadioOptions(zone="shoes"), lambda *_: None)
    calibrated.apply_config(remote(2, radio=RadioCalibration(rssi_1m=-50.0, exponent=2.0)))
    assert calibrated.presence.path_loss.distance(-68.0) == pytest.approx(10 ** (18 / 20))  # 7.9 m: beyond enter_m
    assert entered(calibrated) == 0

    calibrated.apply_config(remote(3))  # cleared: the node's own model again
    assert calibrated.presence.path_loss.distance(-68.0) == pytest.approx(10 ** (9 / 22))

    wifi = RadioPipeline("wifi", RadioOptions(zone="shoes"), lambda *_: None)
    wifi.apply_config(remote(2, radio=RadioCalibration(rssi_1m=-50.0, exponent=2.0)))
    assert wifi.presence.path_loss.rssi_1m == -59.0  # measured with a BLE reference: not for Wi-Fi probes


def test_zone_state_carries_over_a_calibration() -> None:
    pipeline = RadioPipeline("ble", RadioOptions(zone="shoes"), lambda *_: None)
    out: list = []
    for t in range(20):
        pipeline.presence.observe("phone", float(t), -60.0, out)
    assert pipeline.presence.inside == 1
    pipeline.apply_config(remote(2, radio=RadioCalibration(rssi_1m=-62.0, exponent=2.5)))
    assert pipeline.presence.inside == 1 and "phone" in pipeline.presence.devices


# --- the calibration math -------------------------------------------------------------------------------------------


def test_calibration_is_the_median_without_outliers() -> None:
    samples = [-60, -61, -59, -60, -62, -58, -60, -61, -59, -60, -60, -95, -30]
    result = calibrate(samples)
    assert result.rssi_1m == -60.0 and result.samples == 11 and result.rejected == 2
    assert result.spread_db == pytest.approx(1.0, abs=0.5)
    assert result.as_upload() == {"rssi_1m": -60.0, "exponent": 2.0, "samples": 11, "spread_db": result.spread_db}


def test_calibration_at_another_distance_converts_with_the_exponent() -> None:
    result = calibrate([-70.0] * 12, distance_m=3.0, exponent=2.2)
    assert result.median_dbm == -70.0
    assert result.rssi_1m == pytest.approx(-70.0 + 22 * math.log10(3.0), abs=0.05)


@pytest.mark.parametrize(("samples", "kwargs", "says"), [
    ([-60.0] * 9, {}, "only 9 adverts of the reference were heard, at least 10"),
    ([-50.0, -75.0] * 10, {}, "more than 10 dB: hold it still"),
    ([-60.0] * 12, {"distance_m": 0.0}, "distance 0.0 m is outside"),
    ([-60.0] * 12, {"exponent": 9.0}, "exponent 9.0 is outside"),
    ([float("nan")] * 12, {}, "only 0 adverts"),
])
def test_calibration_refuses_what_it_cannot_trust(samples: list[float], kwargs: dict[str, float], says: str) -> None:
    with pytest.raises(CalibrationError, match=None) as err:
        calibrate(samples, **kwargs)
    assert says in str(err.value)


def test_the_reference_is_matched_by_address_or_ibeacon() -> None:
    ibeacon = {0x004C: b"\x02\x15" + bytes.fromhex(UUID.replace("-", "")) + b"\x00\x01\x00\x02\xc5"}
    assert Reference.parse("c0:ff:ee:00:00:01").matches("C0:FF:EE:00:00:01", {}, {}, [])
    assert not Reference.parse("C0:FF:EE:00:00:01").matches("C0:FF:EE:00:00:02", {}, {}, [])
    assert Reference.parse(f"ibeacon:{UUID}").matches("any", ibeacon, {}, [])
    assert Reference.parse(f"ibeacon:{UUID}:1:2").matches("any", ibeacon, {}, [])
    assert not Reference.parse(f"ibeacon:{UUID}:1:3").matches("any", ibeacon, {}, [])
    for bad in ("C0:FF:EE", "ibeacon:not-a-uuid", f"ibeacon:{UUID}:1", f"ibeacon:{UUID}:1:70000"):
        with pytest.raises(ValueError, match="reference"):
            Reference.parse(bad)


# --- calibration on the simulator, end to end -------------------------------------------------------------------------


def sim_ble_node(tmp_path: Path, gw: Gateway | None, store_ca: Authority, distance_m: float = 1.0) -> Path:
    (tmp_path / "ca.pem").write_bytes(store_ca.pem)
    (tmp_path / "mqtt.password").write_text(PASSWORD + "\n")
    sim = {"node": "shoes-radio", "start": SIM_START, "duration_s": 120, "warmup_s": 600, "speed": 0}
    doc: dict[str, Any] = {
        "store_id": STORE, "node_id": "entrance-3",
        "mqtt": {"url": "mqtts://127.0.0.1:8883", "password_file": str(tmp_path / "mqtt.password")},
        "sources": [{"kind": "sim_ble", "options": {"sim": sim, "reference": {
            "ibeacon": f"{UUID}:1:2", "distance_m": distance_m}}}],
    }
    if gw is not None:
        doc["gateway"] = {"url": gw.url, "ca_file": str(tmp_path / "ca.pem")}
    return write_yaml(tmp_path / "node.yaml", doc)


def simulator_truth() -> float:
    from firmware_sim.plan import load_plan
    from firmware_sim.radio_sources import DEFAULT_PLAN

    plan = load_plan(DEFAULT_PLAN)
    node = next(n for n in plan.nodes if n.node_id == "shoes-radio")
    return plan.radio.ble_rssi_1m_dbm + node.ble.gain_db


@pytest.mark.parametrize(("distance", "exponent"), [(1.0, 2.0), (3.0, 2.2)])
def test_calibrating_on_the_simulator_recovers_its_1m_rssi_and_uploads_numbers_only(
        tmp_path: Path, https_gateway: Callable[..., Gateway], store_ca: Authority,
        distance: float, exponent: float) -> None:
    gw = https_gateway()
    config = sim_ble_node(tmp_path, gw, store_ca, distance)
    result = CliRunner().invoke(app, ["provision", "calibrate", "-c", str(config), "--reference", f"ibeacon:{UUID}:1:2",
                                      "--distance", str(distance), "--exponent", str(exponent)],
                                env={"COLUMNS": "300"})
    assert result.exit_code == 0, result.output
    [(method, path, headers, body)] = gw.requests
    assert (method, path) == ("PUT", "/api/node/calibration")
    sent = json.loads(body)
    assert set(sent) == {"rssi_1m", "exponent", "samples", "spread_db"}
    assert sent["rssi_1m"] == pytest.approx(simulator_truth(), abs=2.0)
    assert sent["exponent"] == exponent and sent["samples"] >= 60  # 15 s of adverts every 0.2 s
    assert sent["spread_db"] < 10
    assert "the gateway stored rssi_1m" in result.output


def test_calibrating_without_the_reference_in_range_says_what_to_do(tmp_path: Path, store_ca: Authority) -> None:
    config = sim_ble_node(tmp_path, None, store_ca)
    other = "ibeacon:00000000-0000-0000-0000-000000000001"
    result = CliRunner().invoke(app, ["provision", "calibrate", "-c", str(config), "--reference", other,
                                      "--no-upload"], env={"COLUMNS": "300"})
    assert result.exit_code == 2
    assert "only 0 adverts of the reference were heard" in " ".join(result.output.split())


def test_calibrating_a_node_without_ble_or_gateway_is_a_clear_error(tmp_path: Path, store_ca: Authority) -> None:
    config = sim_ble_node(tmp_path, None, store_ca)
    result = CliRunner().invoke(app, ["provision", "calibrate", "-c", str(config), "--reference", f"ibeacon:{UUID}"],
                                env={"COLUMNS": "300"})
    assert result.exit_code == 2 and "claim the node first" in " ".join(result.output.split())
    bare = write_yaml(tmp_path / "bare.yaml", {"store_id": STORE, "node_id": "n"})
    result = CliRunner().invoke(app, ["provision", "calibrate", "-c", str(bare), "--reference", f"ibeacon:{UUID}",
                                      "--no-upload"], env={"COLUMNS": "300"})
    assert result.exit_code == 2 and "no BLE source (kind ble or sim_ble)" in " ".join(result.output.split())


# --- the snapshot on the node -----------------------------------------------------------------------------------------


def sim_camera_node(tmp_path: Path) -> Path:
    sim = {"node": "door-cam", "start": SIM_START, "duration_s": 5, "warmup_s": 0, "speed": 0}
    return write_yaml(tmp_path / "node.yaml", {"store_id": STORE, "node_id": "door-cam", "sources": [
        {"kind": "sim_camera", "options": {"width": 320, "height": 240, "pipeline": {"line": "x=100"}, "sim": sim}}]})


def test_the_snapshot_writes_a_jpeg_with_the_nodes_line(tmp_path: Path) -> None:
    out = tmp_path / "snap.jpg"
    result = CliRunner().invoke(app, ["provision", "snapshot", "-c", str(sim_camera_node(tmp_path)), "--out", str(out)],
                                env={"COLUMNS": "300"})
    assert result.exit_code == 0, result.output
    assert out.read_bytes()[:2] == b"\xff\xd8"
    image = cv2.imread(str(out))
    assert image.shape[:2] == (240, 320)
    assert red_along(image, [(100, y) for y in range(30, 230, 10)]) > 0.8
    assert red_along(image, [(x, 50) for x in range(150, 300, 10)]) == 0


def test_the_snapshot_draws_the_line_and_zones_given(tmp_path: Path) -> None:
    out = tmp_path / "snap.jpg"
    result = CliRunner().invoke(app, ["provision", "snapshot", "-c", str(sim_camera_node(tmp_path)), "--out", str(out),
                                      "--line", "y=50", "--zone", "tills=200,120,300,120,300,220,200,220"],
                                env={"COLUMNS": "300"})
    assert result.exit_code == 0, result.output
    image = cv2.imread(str(out))
    assert red_along(image, [(x, 50) for x in range(150, 300, 10)]) > 0.8
    assert red_along(image, [(100, y) for y in range(80, 230, 10)]) == 0
    bad = CliRunner().invoke(app, ["provision", "snapshot", "-c", str(sim_camera_node(tmp_path)), "--line", "z=3"],
                             env={"COLUMNS": "300"})
    assert bad.exit_code == 2 and "bad line 'z=3'" in bad.output
