"""The push adapters against local servers that speak each service's protocol over TLS on loopback.

The servers check what the real services check (signed tokens, headers, body shape), and the Web
Push one decrypts the payload with the subscription's private key, so a passing test means the
bytes on the wire are right, not only that our code called a client the way we expected.
"""

from __future__ import annotations

import asyncio
import datetime
import ipaddress
import json
import logging
import os
import socket
import ssl
import struct
import threading
import time
import uuid
from collections.abc import Coroutine, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, TypeVar
from urllib.parse import parse_qs

import http_ece
import jwt
import pytest
from cryptography import x509
from cryptography.exceptions import InvalidSignature
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec, rsa
from cryptography.hazmat.primitives.asymmetric.utils import encode_dss_signature
from cryptography.x509.oid import NameOID
from fastapi import FastAPI, Request, Response
from fastapi.responses import JSONResponse
from hypercorn.asyncio import serve
from hypercorn.config import Config as HypercornConfig
from pydantic import ValidationError

from edge.settings import format_validation_error
from gateway.broker import free_port
from gateway.push.apns import ApnsAdapter, load_signing_key
from gateway.push.base import PushMessage, PushResult, parse_retry_after, short
from gateway.push.config import PushSettings, build_adapters
from gateway.push.fcm import FcmAdapter
from gateway.push.webpush import (
    WebPushAdapter,
    WebPushSubscription,
    b64url_decode,
    b64url_encode,
)

T = TypeVar("T")
GOOGLE_TOKEN_AUDIENCE = "https://oauth2.googleapis.com/token"
FCM_SCOPE = "https://www.googleapis.com/auth/firebase.messaging"
PROJECT = "omnisense-test"
KEY_ID = "ABC123DEFG"
TEAM_ID = "TEAM123456"
BUNDLE_ID = "com.example.retailer"
GOOD_DEVICE = "a1" * 32
GONE_DEVICE = "dead" * 16
BUSY_DEVICE = "b0" * 32
OFFER = PushMessage(title="20% off coffee", body="At the shelf to your left", data={"offer_id": "o-42", "campaign": "c-7"},
                    collapse_key="offer-o-42", ttl_s=300)


def run(coro: Coroutine[Any, Any, T]) -> T:
    return asyncio.run(coro)


# ---- TLS and a server thread ------------------------------------------------------------------


@dataclass
class Tls:
    ca: Path
    cert: Path
    key: Path

    def client_context(self) -> ssl.SSLContext:
        return ssl.create_default_context(cafile=str(self.ca))


def _name(common_name: str) -> x509.Name:
    return x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, common_name)])


@pytest.fixture(scope="module")
def tls(tmp_path_factory: pytest.TempPathFactory) -> Tls:
    """A throwaway CA and a certificate for 127.0.0.1 that it signed."""
    folder = tmp_path_factory.mktemp("tls")
    now = datetime.datetime.now(datetime.UTC)
    ca_key = ec.generate_private_key(ec.SECP256R1())
    ca = (x509.CertificateBuilder().subject_name(_name("omnisense test CA")).issuer_name(_name("omnisense test CA"))
          .public_key(ca_key.public_key()).serial_number(x509.random_serial_number())
          .not_valid_before(now - datetime.timedelta(hours=1)).not_valid_after(now + datetime.timedelta(days=1))
          .add_extension(x509.BasicConstraints(ca=True, path_length=0), critical=True)
          .add_extension(x509.KeyUsage(digital_signature=False, content_commitment=False, key_encipherment=False,
                                       data_encipherment=False, key_agreement=False, key_cert_sign=True,
                                       crl_sign=True, encipher_only=False, decipher_only=False), critical=True)
          .add_extension(x509.SubjectKeyIdentifier.from_public_key(ca_key.public_key()), critical=False)
          .sign(ca_key, hashes.SHA256()))
    key = ec.generate_private_key(ec.SECP256R1())
    cert = (x509.CertificateBuilder().subject_name(_name("127.0.0.1")).issuer_name(ca.subject)
            .public_key(key.public_key()).serial_number(x509.random_serial_number())
            .not_valid_before(now - datetime.timedelta(hours=1)).not_valid_after(now + datetime.timedelta(days=1))
            .add_extension(x509.SubjectAlternativeName([x509.IPAddress(ipaddress.ip_address("127.0.0.1")),
                                                        x509.DNSName("localhost")]), critical=False)
            .add_extension(x509.BasicConstraints(ca=False, path_length=None), critical=True)
            .add_extension(x509.ExtendedKeyUsage([x509.oid.ExtendedKeyUsageOID.SERVER_AUTH]), critical=False)
            .add_extension(x509.AuthorityKeyIdentifier.from_issuer_public_key(ca_key.public_key()), critical=False)
            .sign(ca_key, hashes.SHA256()))
    files = Tls(folder / "ca.pem", folder / "server.pem", folder / "server.key")
    files.ca.write_bytes(ca.public_bytes(serialization.Encoding.PEM))
    files.cert.write_bytes(cert.public_bytes(serialization.Encoding.PEM))
    files.key.write_bytes(key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8,
                                            serialization.NoEncryption()))
    return files


class ServerThread:
    """Hypercorn (HTTP/1.1 and HTTP/2 over TLS, ALPN) serving an ASGI app from a background thread."""

    def __init__(self, app: FastAPI, tls: Tls) -> None:
        self.app = app
        self.port = free_port()
        self.config = HypercornConfig()
        self.config.bind = [f"127.0.0.1:{self.port}"]
        self.config.certfile = str(tls.cert)
        self.config.keyfile = str(tls.key)
        self.config.graceful_timeout = 1.0
        self.config.accesslog = None
        self._loop = asyncio.new_event_loop()
        self._stop = asyncio.Event()
        self._thread = threading.Thread(target=self._run, name=f"push-test-server-{self.port}", daemon=True)

    @property
    def url(self) -> str:
        return f"https://127.0.0.1:{self.port}"

    def _run(self) -> None:
        self._loop.run_until_complete(serve(self.app, self.config, shutdown_trigger=self._stop.wait))  # type: ignore[arg-type]
        self._loop.close()

    def start(self) -> None:
        self._thread.start()
        deadline = time.monotonic() + 10
        while True:
            try:
                socket.create_connection(("127.0.0.1", self.port), timeout=0.5).close()
                return
            except OSError:
                if time.monotonic() > deadline or not self._thread.is_alive():
                    raise RuntimeError(f"test server on port {self.port} did not start") from None
                time.sleep(0.02)

    def stop(self) -> None:
        self._loop.call_soon_threadsafe(self._stop.set)
        self._thread.join(10)


def _b64json(part: str) -> dict[str, Any]:
    return json.loads(b64url_decode(part))


def verify_es256(token: str, public_key: ec.EllipticCurvePublicKey) -> tuple[dict[str, Any], dict[str, Any]]:
    """Header and claims of an ES256 JWT, checked with `cryptography` alone (independent of the signer)."""
    signing_input, _, signature = token.rpartition(".")
    raw = b64url_decode(signature)
    if len(raw) != 64:
        raise InvalidSignature("ES256 signature is not 64 bytes")
    der = encode_dss_signature(int.from_bytes(raw[:32], "big"), int.from_bytes(raw[32:], "big"))
    public_key.verify(der, signing_input.encode(), ec.ECDSA(hashes.SHA256()))
    header, claims = signing_input.split(".")
    return _b64json(header), _b64json(claims)


# ---- FCM HTTP v1 ------------------------------------------------------------------------------


@dataclass
class FcmState:
    public_key: rsa.RSAPublicKey
    client_email: str
    private_key_id: str
    expires_in: int = 3600
    token_requests: int = 0
    issued: list[str] = field(default_factory=list)
    revoked: set[str] = field(default_factory=set)
    messages: list[dict[str, Any]] = field(default_factory=list)
    http_versions: list[str] = field(default_factory=list)

    def reset(self) -> None:
        self.expires_in, self.token_requests = 3600, 0
        self.issued.clear()
        self.revoked.clear()
        self.messages.clear()
        self.http_versions.clear()


def fcm_error(status: int, grpc_status: str, message: str, fcm_code: str | None = None,
              headers: dict[str, str] | None = None) -> JSONResponse:
    details = [{"@type": "type.googleapis.com/google.firebase.fcm.v1.FcmError", "errorCode": fcm_code}] if fcm_code else []
    return JSONResponse({"error": {"code": status, "message": message, "status": grpc_status, "details": details}},
                        status_code=status, headers=headers)


def fcm_app(state: FcmState) -> FastAPI:
    app = FastAPI()

    @app.post("/token")
    async def token(request: Request) -> Response:
        form = {k: v[0] for k, v in parse_qs((await request.body()).decode()).items()}
        if form.get("grant_type") != "urn:ietf:params:oauth:grant-type:jwt-bearer":
            return JSONResponse({"error": "unsupported_grant_type"}, status_code=400)
        assertion = form.get("assertion", "")
        try:
            claims = jwt.decode(assertion, state.public_key, algorithms=["RS256"], audience=GOOGLE_TOKEN_AUDIENCE,
                                options={"require": ["iat", "exp", "iss", "aud"]})
        except jwt.InvalidTokenError as err:
            return JSONResponse({"error": "invalid_grant", "error_description": str(err)}, status_code=400)
        if (jwt.get_unverified_header(assertion).get("kid") != state.private_key_id
                or claims["iss"] != state.client_email or claims.get("scope") != FCM_SCOPE
                or not 0 < claims["exp"] - claims["iat"] <= 3600):
            return JSONResponse({"error": "invalid_grant", "error_description": f"bad claims {claims}"}, status_code=400)
        state.token_requests += 1
        access = f"ya29.test-{state.token_requests}"
        state.issued.append(access)
        return JSONResponse({"access_token": access, "expires_in": state.expires_in, "token_type": "Bearer"})

    @app.post("/v1/projects/{project}/messages:send")
    async def send(project: str, request: Request) -> Response:
        # Read the body before any early answer: hypercorn 0.18 drops the HTTP/2 connection when DATA
        # arrives for a stream it already answered (pgjones/hypercorn#329); the APNs and Web Push apps do the same.
        body = await request.json()
        state.http_versions.append(request.scope["http_version"])
        bearer = request.headers.get("authorization", "").removeprefix("Bearer ")
        if bearer not in state.issued or bearer in state.revoked:
            return fcm_error(401, "UNAUTHENTICATED", "Request had invalid authentication credentials.")
        if project != PROJECT:
            return fcm_error(403, "PERMISSION_DENIED", f"no access to project {project}", "SENDER_ID_MISMATCH")
        message = body.get("message")
        problem = fcm_body_problem(message)
        if problem:
            return fcm_error(400, "INVALID_ARGUMENT", problem, "INVALID_ARGUMENT")
        state.messages.append(message)
        if message["token"] == "unregistered-token":
            return fcm_error(404, "NOT_FOUND", "Requested entity was not found.", "UNREGISTERED")
        if message["token"] == "busy-token":
            return fcm_error(429, "RESOURCE_EXHAUSTED", "Quota exceeded.", "QUOTA_EXCEEDED", {"Retry-After": "7"})
        return JSONResponse({"name": f"projects/{project}/messages/{len(state.messages)}"})

    return app


def fcm_body_problem(message: Any) -> str | None:
    """What FCM would reject in a `message`, for the fields this adapter sends."""
    if not isinstance(message, dict) or set(message) - {"token", "notification", "data", "android"}:
        return f"unexpected message fields: {message!r}"
    if not isinstance(message.get("token"), str) or not message["token"]:
        return "message.token is required"
    notification = message.get("notification", {})
    if set(notification) - {"title", "body"} or not all(isinstance(v, str) for v in notification.values()):
        return f"bad notification {notification!r}"
    data = message.get("data", {})
    if not all(isinstance(k, str) and isinstance(v, str) for k, v in data.items()):
        return "Invalid value at 'message.data': values must be strings"
    android = message.get("android", {})
    ttl = android.get("ttl", "0s")
    if not (isinstance(ttl, str) and ttl.endswith("s") and ttl[:-1].isdigit()):
        return f"Invalid value at 'message.android.ttl' ({ttl!r}): Illegal duration format"
    if set(android) - {"ttl", "collapse_key"}:
        return f"unexpected android fields {android!r}"
    return None


@pytest.fixture(scope="module")
def fcm_server(tls: Tls) -> Iterator[tuple[ServerThread, FcmState]]:
    key = rsa.generate_private_key(public_exponent=65537, key_size=2048)
    state = FcmState(key.public_key(), f"push@{PROJECT}.iam.gserviceaccount.com", "0123456789abcdef")
    server = ServerThread(fcm_app(state), tls)
    server.start()
    server.private_key = key  # type: ignore[attr-defined]
    yield server, state
    server.stop()


@pytest.fixture
def service_account(fcm_server: tuple[ServerThread, FcmState], tmp_path: Path) -> Path:
    """A service account key whose token_uri is the local token endpoint."""
    server, state = fcm_server
    state.reset()
    key: rsa.RSAPrivateKey = server.private_key  # type: ignore[attr-defined]
    pem = key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8,
                            serialization.NoEncryption()).decode()
    path = tmp_path / "service-account.json"
    path.write_text(json.dumps({
        "type": "service_account", "project_id": PROJECT, "private_key_id": state.private_key_id,
        "private_key": pem, "client_email": state.client_email, "client_id": "1234567890",
        "token_uri": f"{server.url}/token", "universe_domain": "googleapis.com",
    }))
    return path


def fcm_adapter(service_account: Path, server: ServerThread, tls: Tls) -> FcmAdapter:
    return FcmAdapter.from_service_account_file(service_account, base_url=server.url, verify=tls.client_context())


def test_fcm_sends_with_a_cached_oauth_token(fcm_server: tuple[ServerThread, FcmState], service_account: Path,
                                             tls: Tls) -> None:
    server, state = fcm_server

    async def scenario() -> list[PushResult]:
        adapter = fcm_adapter(service_account, server, tls)
        try:
            return [await adapter.send("good-token", OFFER), await adapter.send("other-token", OFFER)]
        finally:
            await adapter.aclose()

    results = run(scenario())
    assert [r.ok for r in results] == [True, True]
    assert results[0].status == 200 and results[0].reason == f"projects/{PROJECT}/messages/1"
    assert state.token_requests == 1, "the access token is reused until shortly before it expires"
    assert state.http_versions == ["2", "2"]
    assert state.messages[0] == {
        "token": "good-token",
        "notification": {"title": OFFER.title, "body": OFFER.body},
        "data": {"offer_id": "o-42", "campaign": "c-7"},
        "android": {"ttl": "300s", "collapse_key": "offer-o-42"},
    }


def test_fcm_refreshes_a_token_that_is_about_to_expire(fcm_server: tuple[ServerThread, FcmState],
                                                        service_account: Path, tls: Tls) -> None:
    server, state = fcm_server
    state.expires_in = 60  # inside google-auth's refresh margin, so never worth caching

    async def scenario() -> None:
        adapter = fcm_adapter(service_account, server, tls)
        try:
            assert (await adapter.send("good-token", OFFER)).ok
            assert (await adapter.send("good-token", OFFER)).ok
        finally:
            await adapter.aclose()

    run(scenario())
    assert state.token_requests == 2


def test_fcm_fetches_a_new_token_once_on_401(fcm_server: tuple[ServerThread, FcmState], service_account: Path,
                                              tls: Tls) -> None:
    server, state = fcm_server

    async def scenario() -> PushResult:
        adapter = fcm_adapter(service_account, server, tls)
        try:
            assert (await adapter.send("good-token", OFFER)).ok
            state.revoked.update(state.issued)
            return await adapter.send("good-token", OFFER)
        finally:
            await adapter.aclose()

    result = run(scenario())
    assert result.ok
    assert state.token_requests == 2 and len(state.messages) == 2


def test_fcm_maps_errors(fcm_server: tuple[ServerThread, FcmState], service_account: Path, tls: Tls) -> None:
    server, _ = fcm_server

    async def scenario() -> tuple[PushResult, PushResult]:
        adapter = fcm_adapter(service_account, server, tls)
        try:
            return await adapter.send("unregistered-token", OFFER), await adapter.send("busy-token", OFFER)
        finally:
            await adapter.aclose()

    gone, busy = run(scenario())
    assert gone == PushResult(False, 404, "UNREGISTERED: Requested entity was not found.", None, unregistered=True)
    assert (busy.ok, busy.status, busy.retry_after_s, busy.unregistered) == (False, 429, 7.0, False)
    assert busy.reason.startswith("QUOTA_EXCEEDED") and busy.retryable


def test_fcm_reports_a_refused_project_and_an_unreachable_token_endpoint(
        fcm_server: tuple[ServerThread, FcmState], service_account: Path, tls: Tls, tmp_path: Path) -> None:
    server, _ = fcm_server
    broken = tmp_path / "broken.json"
    info = json.loads(service_account.read_text())
    broken.write_text(json.dumps({**info, "token_uri": f"https://127.0.0.1:{free_port()}/token"}))

    async def scenario() -> tuple[PushResult, PushResult]:
        wrong = FcmAdapter.from_service_account_file(service_account, project_id="someone-else", base_url=server.url,
                                                     verify=tls.client_context())
        unreachable = FcmAdapter.from_service_account_file(broken, base_url=server.url, verify=tls.client_context())
        try:
            return await wrong.send("good-token", OFFER), await unreachable.send("good-token", OFFER)
        finally:
            await wrong.aclose()
            await unreachable.aclose()

    mismatch, no_token = run(scenario())
    assert (mismatch.status, mismatch.unregistered) == (403, False) and mismatch.reason.startswith("SENDER_ID_MISMATCH")
    assert (no_token.ok, no_token.status) == (False, None) and "no FCM access token" in no_token.reason


def test_fcm_bare_404_does_not_drop_the_token(fcm_server: tuple[ServerThread, FcmState], service_account: Path,
                                              tls: Tls) -> None:
    server, _ = fcm_server

    async def scenario() -> PushResult:
        misrouted = FcmAdapter.from_service_account_file(service_account, base_url=f"{server.url}/wrong-prefix",
                                                         verify=tls.client_context())
        try:
            return await misrouted.send("good-token", OFFER)
        finally:
            await misrouted.aclose()

    result = run(scenario())
    assert (result.ok, result.status, result.unregistered) == (False, 404, False)


# ---- APNs -------------------------------------------------------------------------------------


@dataclass
class ApnsState:
    public_key: ec.EllipticCurvePublicKey
    expired_up_to_iat: int = 0
    requests: list[dict[str, Any]] = field(default_factory=list)

    def reset(self) -> None:
        self.expired_up_to_iat = 0
        self.requests.clear()


def apns_error(status: int, reason: str) -> JSONResponse:
    body: dict[str, Any] = {"reason": reason}
    if status == 410:
        body["timestamp"] = int(time.time() * 1000)
    return JSONResponse(body, status_code=status, headers={"apns-id": str(uuid.uuid4()).upper()})


def apns_app(state: ApnsState) -> FastAPI:
    app = FastAPI()

    @app.post("/3/device/{device_token}")
    async def push(device_token: str, request: Request) -> Response:
        payload = json.loads(await request.body())
        headers = request.headers
        scheme, _, token = headers.get("authorization", "").partition(" ")
        try:
            jose, claims = verify_es256(token, state.public_key)
        except (InvalidSignature, ValueError):
            return apns_error(403, "InvalidProviderToken")
        state.requests.append({"http_version": request.scope["http_version"], "device": device_token,
                               "jose": jose, "claims": claims, "headers": dict(headers), "payload": payload})
        if request.scope["http_version"] != "2":
            return apns_error(400, "BadMessageId")  # APNs has no HTTP/1.1 at all
        if scheme != "bearer" or jose != {"alg": "ES256", "kid": KEY_ID, "typ": "JWT"} or claims["iss"] != TEAM_ID:
            return apns_error(403, "InvalidProviderToken")
        if not time.time() - 3600 <= claims["iat"] <= time.time() + 300 or claims["iat"] <= state.expired_up_to_iat:
            return apns_error(403, "ExpiredProviderToken")
        if headers.get("apns-topic") != BUNDLE_ID:
            return apns_error(400, "DeviceTokenNotForTopic")
        if headers.get("apns-push-type") != "alert":
            return apns_error(400, "InvalidPushType")
        if headers.get("apns-priority") not in ("5", "10"):
            return apns_error(400, "BadPriority")
        if not headers.get("apns-expiration", "").isdigit():
            return apns_error(400, "BadExpirationDate")
        if len(headers.get("apns-collapse-id", "").encode()) > 64:
            return apns_error(400, "BadCollapseId")
        alert = payload.get("aps", {}).get("alert", {})
        if not isinstance(alert.get("title"), str) or not isinstance(alert.get("body"), str):
            return apns_error(400, "PayloadEmpty")
        if device_token == GONE_DEVICE:
            return apns_error(410, "Unregistered")
        if device_token == BUSY_DEVICE:
            return apns_error(429, "TooManyRequests")
        return Response(status_code=200, headers={"apns-id": "EC1BF194-B3B2-424A-89A9-5A918A6E6B5D"})

    return app


@pytest.fixture(scope="module")
def apns_server(tls: Tls) -> Iterator[tuple[ServerThread, ApnsState, Path]]:
    key = ec.generate_private_key(ec.SECP256R1())
    key_file = tls.ca.parent / f"AuthKey_{KEY_ID}.p8"
    key_file.write_bytes(key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8,
                                           serialization.NoEncryption()))
    state = ApnsState(key.public_key())
    server = ServerThread(apns_app(state), tls)
    server.start()
    yield server, state, key_file
    server.stop()


class Clock:
    def __init__(self, start: float) -> None:
        self.now = start

    def __call__(self) -> float:
        return self.now


def apns_adapter(apns_server: tuple[ServerThread, ApnsState, Path], tls: Tls, clock: Clock | None = None) -> ApnsAdapter:
    server, state, key_file = apns_server
    state.reset()
    return ApnsAdapter(load_signing_key(key_file), KEY_ID, TEAM_ID, BUNDLE_ID, base_url=server.url,
                       verify=tls.client_context(), clock=clock or time.time)


def test_apns_sends_over_http2_with_a_signed_provider_token(apns_server: tuple[ServerThread, ApnsState, Path],
                                                             tls: Tls) -> None:
    _, state, _ = apns_server

    async def scenario() -> PushResult:
        adapter = apns_adapter(apns_server, tls)
        try:
            return await adapter.send(GOOD_DEVICE, OFFER)
        finally:
            await adapter.aclose()

    result = run(scenario())
    assert result == PushResult(True, 200, "EC1BF194-B3B2-424A-89A9-5A918A6E6B5D")
    [request] = state.requests
    assert request["http_version"] == "2"
    assert request["device"] == GOOD_DEVICE
    headers = request["headers"]
    assert (headers["apns-topic"], headers["apns-push-type"], headers["apns-priority"]) == (BUNDLE_ID, "alert", "10")
    assert headers["apns-collapse-id"] == "offer-o-42"
    assert 0 < int(headers["apns-expiration"]) - request["claims"]["iat"] <= OFFER.ttl_s + 1
    assert request["payload"] == {"aps": {"alert": {"title": OFFER.title, "body": OFFER.body}},
                                  "offer_id": "o-42", "campaign": "c-7"}


def test_device_tokens_stay_out_of_logs(apns_server: tuple[ServerThread, ApnsState, Path], tls: Tls,
                                        caplog: pytest.LogCaptureFixture) -> None:
    async def scenario() -> None:
        adapter = apns_adapter(apns_server, tls)
        try:
            await adapter.send(GOOD_DEVICE, OFFER)
            await adapter.send(GONE_DEVICE, OFFER)
        finally:
            await adapter.aclose()

    with caplog.at_level(logging.INFO):
        run(scenario())
    assert "/3/device/a1a1a1a1…" in caplog.text and "Unregistered" in caplog.text
    assert GOOD_DEVICE not in caplog.text and GONE_DEVICE not in caplog.text


def test_apns_reuses_the_provider_token_for_50_minutes(apns_server: tuple[ServerThread, ApnsState, Path],
                                                        tls: Tls) -> None:
    _, state, _ = apns_server
    clock = Clock(time.time() - 3000)  # so the token signed 51 minutes "later" is not in the server's future

    async def scenario() -> None:
        adapter = apns_adapter(apns_server, tls, clock)
        try:
            for step in (0, 49 * 60, 2 * 60):
                clock.now += step
                assert (await adapter.send(GOOD_DEVICE, OFFER)).ok
        finally:
            await adapter.aclose()

    run(scenario())
    iats = [r["claims"]["iat"] for r in state.requests]
    assert iats[0] == iats[1] and iats[2] == iats[0] + 51 * 60


def test_apns_signs_a_new_token_once_when_told_it_expired(apns_server: tuple[ServerThread, ApnsState, Path],
                                                           tls: Tls) -> None:
    _, state, _ = apns_server
    clock = Clock(time.time() - 60)

    async def scenario() -> PushResult:
        adapter = apns_adapter(apns_server, tls, clock)
        try:
            assert (await adapter.send(GOOD_DEVICE, OFFER)).ok
            state.expired_up_to_iat = int(clock.now)
            clock.now += 30
            return await adapter.send(GOOD_DEVICE, OFFER)
        finally:
            await adapter.aclose()

    result = run(scenario())
    assert result.ok
    assert [r["claims"]["iat"] for r in state.requests] == [int(clock.now) - 30] * 2 + [int(clock.now)]


def test_apns_maps_errors(apns_server: tuple[ServerThread, ApnsState, Path], tls: Tls) -> None:
    _, state, _ = apns_server

    async def scenario() -> list[PushResult]:
        adapter = apns_adapter(apns_server, tls)
        try:
            return [await adapter.send(t, OFFER) for t in (GONE_DEVICE, BUSY_DEVICE, "not/a-token")]
        finally:
            await adapter.aclose()

    gone, busy, malformed = run(scenario())
    assert (gone.ok, gone.status, gone.reason, gone.unregistered) == (False, 410, "Unregistered", True)
    assert (busy.status, busy.reason, busy.unregistered, busy.retryable) == (429, "TooManyRequests", False, True)
    assert malformed.unregistered and malformed.status is None
    assert len(state.requests) == 2, "a malformed token is never sent"


# ---- Web Push ---------------------------------------------------------------------------------


@dataclass
class Subscriber:
    """A browser's side of a subscription: the keys it keeps and the JSON it gives the app."""

    private_key: ec.EllipticCurvePrivateKey
    auth: bytes

    @classmethod
    def new(cls) -> Subscriber:
        return cls(ec.generate_private_key(ec.SECP256R1()), os.urandom(16))

    def subscription(self, endpoint: str) -> WebPushSubscription:
        public = self.private_key.public_key().public_bytes(serialization.Encoding.X962,
                                                           serialization.PublicFormat.UncompressedPoint)
        return WebPushSubscription.model_validate({"endpoint": endpoint, "expirationTime": None,
                                                   "keys": {"p256dh": b64url_encode(public),
                                                            "auth": b64url_encode(self.auth)}})


@dataclass
class WebPushState:
    origin: str = ""
    vapid_key: str = ""
    subscribers: dict[str, Subscriber] = field(default_factory=dict)
    delivered: list[dict[str, Any]] = field(default_factory=list)

    def reset(self) -> None:
        self.delivered.clear()


def webpush_app(state: WebPushState) -> FastAPI:
    app = FastAPI()

    @app.post("/wpush/v2/{sub_id}")
    async def push(sub_id: str, request: Request) -> Response:
        body = await request.body()
        headers = request.headers
        if sub_id == "gone" or sub_id not in state.subscribers:
            return Response("push subscription has unsubscribed or expired", status_code=410)
        scheme, _, params = headers.get("authorization", "").partition(" ")
        fields = dict(p.strip().split("=", 1) for p in params.split(",") if "=" in p)
        if scheme.lower() != "vapid" or set(fields) != {"t", "k"}:
            return Response("missing VAPID authorization", status_code=401)
        public = ec.EllipticCurvePublicKey.from_encoded_point(ec.SECP256R1(), b64url_decode(fields["k"]))
        try:
            _, claims = verify_es256(fields["t"], public)
        except (InvalidSignature, ValueError):
            return Response("VAPID signature does not verify", status_code=401)
        if claims.get("aud") != state.origin or not time.time() < claims["exp"] <= time.time() + 24 * 3600 \
                or not str(claims.get("sub", "")).startswith("mailto:"):
            return Response(f"bad VAPID claims {claims}", status_code=401)
        if fields["k"] != state.vapid_key:
            return Response("VAPID key does not match the subscription's applicationServerKey", status_code=403)
        ttl = headers.get("ttl", "")
        if headers.get("content-encoding") != "aes128gcm" or not ttl.isdigit():
            return Response("need Content-Encoding: aes128gcm and TTL", status_code=400)
        if sub_id == "small" and len(body) > 100:
            return Response(status_code=413)
        if sub_id == "busy":
            return Response("slow down", status_code=429, headers={"Retry-After": "30"})
        salt, record_size, id_length = body[:16], *struct.unpack("!IB", body[16:21])
        sender_key = body[21:21 + id_length]
        subscriber = state.subscribers[sub_id]
        plaintext = http_ece.decrypt(body, private_key=subscriber.private_key, auth_secret=subscriber.auth,
                                     version="aes128gcm")
        state.delivered.append({"sub": sub_id, "payload": json.loads(plaintext), "ttl": int(ttl),
                                "urgency": headers.get("urgency"), "topic": headers.get("topic"),
                                "record_size": record_size, "sender_key": sender_key, "salt": salt,
                                "http_version": request.scope["http_version"]})
        return Response(status_code=201, headers={"Location": f"{state.origin}/m/{uuid.uuid4().hex}"})

    return app


@pytest.fixture(scope="module")
def webpush_server(tls: Tls) -> Iterator[tuple[ServerThread, WebPushState, Path]]:
    vapid = ec.generate_private_key(ec.SECP256R1())
    key_file = tls.ca.parent / "vapid_private.pem"
    key_file.write_bytes(vapid.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8,
                                             serialization.NoEncryption()))
    state = WebPushState(subscribers={name: Subscriber.new() for name in ("alice", "small", "busy", "gone")})
    state.vapid_key = b64url_encode(vapid.public_key().public_bytes(serialization.Encoding.X962,
                                                                    serialization.PublicFormat.UncompressedPoint))
    server = ServerThread(webpush_app(state), tls)
    state.origin = server.url
    server.start()
    yield server, state, key_file
    server.stop()


def webpush_adapter(webpush_server: tuple[ServerThread, WebPushState, Path], tls: Tls) -> WebPushAdapter:
    webpush_server[1].reset()
    return WebPushAdapter.from_key_file(webpush_server[2], "mailto:ops@example.com", verify=tls.client_context())


def subscription(webpush_server: tuple[ServerThread, WebPushState, Path], name: str) -> WebPushSubscription:
    server, state, _ = webpush_server
    return state.subscribers[name].subscription(f"{server.url}/wpush/v2/{name}")


def test_webpush_delivers_a_payload_the_browser_can_decrypt(
        webpush_server: tuple[ServerThread, WebPushState, Path], tls: Tls) -> None:
    _, state, _ = webpush_server

    async def scenario() -> tuple[PushResult, str]:
        adapter = webpush_adapter(webpush_server, tls)
        try:
            first = await adapter.send(subscription(webpush_server, "alice"), OFFER)
            assert first.ok
            return await adapter.send(subscription(webpush_server, "alice"), OFFER), adapter.application_server_key
        finally:
            await adapter.aclose()

    result, server_key = run(scenario())
    assert (result.ok, result.status) == (True, 201)
    assert server_key == state.vapid_key
    first, second = state.delivered
    assert first["payload"] == {"title": OFFER.title, "body": OFFER.body, "tag": "offer-o-42",
                                "data": {"offer_id": "o-42", "campaign": "c-7"}}
    assert (first["ttl"], first["urgency"], first["topic"], first["record_size"]) == (300, "high", "offer-o-42", 4096)
    assert first["http_version"] == "2"
    assert first["sender_key"] != second["sender_key"] and first["salt"] != second["salt"], \
        "RFC 8291 needs a fresh sender key and salt for every message"


def test_webpush_maps_errors(webpush_server: tuple[ServerThread, WebPushState, Path], tls: Tls) -> None:
    async def scenario() -> list[PushResult]:
        adapter = webpush_adapter(webpush_server, tls)
        try:
            return [await adapter.send(subscription(webpush_server, name), OFFER) for name in ("gone", "small", "busy")]
        finally:
            await adapter.aclose()

    gone, small, busy = run(scenario())
    assert (gone.ok, gone.status, gone.unregistered) == (False, 410, True)
    assert (small.status, small.reason, small.unregistered) == (413, "payload too large for the push service", False)
    assert (busy.status, busy.retry_after_s, busy.unregistered) == (429, 30.0, False)


def test_webpush_refuses_oversized_payloads_before_sending(
        webpush_server: tuple[ServerThread, WebPushState, Path], tls: Tls) -> None:
    _, state, _ = webpush_server
    big = OFFER.model_copy(update={"body": "x" * 5000})

    async def scenario() -> PushResult:
        adapter = webpush_adapter(webpush_server, tls)
        try:
            return await adapter.send(subscription(webpush_server, "alice"), big)
        finally:
            await adapter.aclose()

    result = run(scenario())
    assert not result.ok and result.status is None and result.reason.startswith("payload too large")
    assert state.delivered == []


def test_webpush_subscription_is_validated() -> None:
    subscriber = Subscriber.new()
    good = subscriber.subscription("https://push.example.net/wpush/v2/abc")
    assert good.audience == "https://push.example.net"
    with pytest.raises(ValidationError, match="https"):
        WebPushSubscription.model_validate({**good.model_dump(), "endpoint": "http://push.example.net/x"})
    with pytest.raises(ValidationError, match="16-byte"):
        WebPushSubscription.model_validate({"endpoint": good.endpoint,
                                            "keys": {"p256dh": good.keys.p256dh, "auth": "c2hvcnQ"}})


# ---- shared pieces and configuration ----------------------------------------------------------


def test_message_rejects_keys_a_push_service_reserves() -> None:
    with pytest.raises(ValidationError, match="reserved"):
        PushMessage(title="t", body="b", data={"google.foo": "x"})
    with pytest.raises(ValidationError, match="reserved"):
        PushMessage(title="t", body="b", data={"aps": "x"})


def test_retry_after_and_short() -> None:
    assert parse_retry_after("120") == 120.0
    assert parse_retry_after("Wed, 21 Oct 2015 07:28:00 GMT", now=1445412480 - 60) == 60.0
    assert parse_retry_after("soon") is None and parse_retry_after(None) is None
    assert short(GOOD_DEVICE) == "a1a1a1a1…"


def test_build_adapters_from_settings(service_account: Path, fcm_server: tuple[ServerThread, FcmState],
                                      apns_server: tuple[ServerThread, ApnsState, Path],
                                      webpush_server: tuple[ServerThread, WebPushState, Path], tls: Tls) -> None:
    settings = PushSettings.model_validate({
        "fcm": {"service_account_file": str(service_account), "base_url": fcm_server[0].url},
        "apns": {"key_file": str(apns_server[2]), "key_id": KEY_ID, "team_id": TEAM_ID, "bundle_id": BUNDLE_ID,
                 "base_url": apns_server[0].url},
        "webpush": {"vapid_private_key_file": str(webpush_server[2]), "subject": "mailto:ops@example.com"},
    })

    async def scenario() -> dict[str, PushResult]:
        adapters = build_adapters(settings, verify=tls.client_context())
        targets = {"fcm": "good-token", "apns": GOOD_DEVICE, "webpush": subscription(webpush_server, "alice")}
        try:
            return {name: await adapter.send(targets[name], OFFER) for name, adapter in adapters.items()}
        finally:
            for adapter in adapters.values():
                await adapter.aclose()

    results = run(scenario())
    assert {name: r.ok for name, r in results.items()} == {"fcm": True, "apns": True, "webpush": True}
    assert PushSettings.model_validate({"apns": {**settings.apns.model_dump(), "base_url": None,  # type: ignore[union-attr]
                                                 "sandbox": True}}).apns.url == "https://api.sandbox.push.apple.com"  # type: ignore[union-attr]


@pytest.mark.parametrize(("section", "content", "expected"), [
    ("fcm", None, "fcm.service_account_file: cannot read"),
    ("fcm", "{not json", "fcm.service_account_file: "),
    ("fcm", json.dumps({"type": "service_account", "project_id": "p"}), "missing private_key, client_email, token_uri"),
    ("apns", None, "apns.key_file: cannot read"),
    ("apns", "-----BEGIN PRIVATE KEY-----\nnope\n-----END PRIVATE KEY-----\n", "apns.key_file: "),
    ("webpush", None, "webpush.vapid_private_key_file: cannot read"),
    ("webpush", "definitely not a key", "webpush.vapid_private_key_file: "),
])
def test_bad_key_files_fail_at_startup_naming_the_field(tmp_path: Path, section: str, content: str | None,
                                                        expected: str) -> None:
    path = tmp_path / "key"
    if content is not None:
        path.write_text(content)
    sections = {
        "fcm": {"service_account_file": str(path)},
        "apns": {"key_file": str(path), "key_id": KEY_ID, "team_id": TEAM_ID, "bundle_id": BUNDLE_ID},
        "webpush": {"vapid_private_key_file": str(path), "subject": "mailto:ops@example.com"},
    }
    with pytest.raises(ValidationError) as caught:
        PushSettings.model_validate({section: sections[section]})
    message = format_validation_error(caught.value)
    assert expected in message
    if content is None:
        assert not path.exists(), "a missing key file is an error, never generated on the fly"


def test_bad_apple_ids_and_subject_are_named() -> None:
    with pytest.raises(ValidationError) as caught:
        PushSettings.model_validate({"webpush": {"vapid_private_key_file": "/nonexistent", "subject": "ops"}})
    assert "webpush.subject: VAPID subject" in format_validation_error(caught.value)
    with pytest.raises(ValidationError) as caught:
        PushSettings.model_validate({"apns": {"key_file": "/nonexistent", "key_id": "short", "team_id": TEAM_ID,
                                              "bundle_id": BUNDLE_ID}})
    assert "apns.key_id: key_id is 10 upper-case letters or digits" in format_validation_error(caught.value)
