"""Roles in the gateway's API, read from its own OpenAPI document rather than from a list kept here.

The real gateway runs (real Mosquitto, SQLite file, uvicorn on loopback) with one credential of each
role: an installer's and a marketer's API token made by `omnisense access create`, an app install
registered over HTTP, and a node whose password a test callable accepts. Every operation the
document lists must state its roles (`x-roles`); each protected one must answer 401 without a
credential, 403 to every role it does not name, and neither to a role it names.
"""

from __future__ import annotations

import base64
import hmac
import re
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest
import websockets.sync.client
import yaml
from typer.testing import CliRunner

from edge.settings import MqttSettings
from gateway.config import ApiSettings, GatewayConfig, KnownNode
from gateway.eid_resolver import EidResolver
from gateway.installs import InstallRegistry
from gateway.roles import ApiTokens, Authenticator, BadCredential, Role
from gateway.service import Gateway
from omnisense.cli import app as cli
from tests.conftest import STORE, GatewayThread, Mosquitto

NODE, NODE_PASSWORD = "node-1", "correct horse battery staple"
PATH_VALUES = {"node_id": NODE, "decision_id": "d-1", "install_id": "0123456789abcdef", "zone": "entrance",
               "name": "test-name"}


def node_password_ok(node_id: str, password: str) -> bool:
    return node_id == NODE and hmac.compare_digest(password.encode(), NODE_PASSWORD.encode())


class Store:
    """The running gateway, its config file and a way to get a credential of each role."""

    def __init__(self, running: GatewayThread, config_file: Path) -> None:
        self.running = running
        self.url = running.url
        self.config_file = config_file
        self.tokens = {role: access("create", "--role", role, "--name", f"test-{role}", "-c", str(config_file))
                       for role in ("installer", "marketer")}

    def headers(self, role: str) -> dict[str, str]:
        """Authorization of a role; app installs are fresh each time, since one call may withdraw consent."""
        if role == Role.APP:
            response = httpx.post(f"{self.url}/api/app/installs", json={"consent": True}, timeout=10)
            assert response.status_code == 201, response.text
            return {"Authorization": f"Bearer {response.json()['token']}"}
        if role == Role.NODE:
            return {"Authorization": "Basic " + base64.b64encode(f"{NODE}:{NODE_PASSWORD}".encode()).decode()}
        return {"Authorization": f"Bearer {self.tokens[role]}"}

    def openapi(self) -> dict[str, Any]:
        return httpx.get(f"{self.url}/openapi.json", timeout=10).raise_for_status().json()


def access(*args: str) -> str:
    """Run `omnisense access ...` in-process; its standard output (the token, for `create`)."""
    result = CliRunner().invoke(cli, ["access", *args], env={"COLUMNS": "200"})
    assert result.exit_code == 0, result.output
    return result.stdout.strip()


@pytest.fixture(scope="module")
def store(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Store]:
    workdir = tmp_path_factory.mktemp("roles")
    broker = Mosquitto(workdir)
    broker.start()
    config = GatewayConfig(store_id=STORE, db_path=workdir / "gateway.db", mqtt=MqttSettings(url=broker.url),
                           api=ApiSettings(port=0), nodes=[KnownNode(node_id=NODE, zone="entrance")])
    config_file = workdir / "gateway.yaml"
    config_file.write_text(yaml.safe_dump(config.model_dump(mode="json", exclude_defaults=True)))
    gateway = Gateway(config)
    gateway.auth.node_password_ok = node_password_ok  # the node credential of this test
    try:
        with GatewayThread(gateway) as running:
            yield Store(running, config_file)
    finally:
        broker.stop()


def operations(document: dict[str, Any]) -> list[tuple[str, str, dict[str, Any]]]:
    methods = {"get", "put", "post", "delete", "patch", "head", "options", "trace"}
    return [(path, method, op) for path, item in document["paths"].items()
            for method, op in item.items() if method in methods]


def concrete(path: str, operation: dict[str, Any]) -> str:
    """The path with plausible values in its parameters."""
    def value(match: re.Match[str]) -> str:
        name = match.group(1)
        schema = next((p.get("schema", {}) for p in operation.get("parameters", []) if p["name"] == name), {})
        return "1" if schema.get("type") == "integer" else PATH_VALUES.get(name, "x-1")
    return re.sub(r"\{([^}]+)\}", value, path)


def status_of(url: str, method: str, headers: dict[str, str]) -> httpx.Response:
    """The status and headers only: some answers are streams that never end (Server-Sent Events)."""
    with httpx.stream(method.upper(), url, headers=headers, timeout=10) as response:
        if response.status_code >= 400:
            response.read()
        return response


def test_every_operation_states_its_roles(store: Store) -> None:
    document = store.openapi()
    ops = operations(document)
    assert len(ops) >= 10
    missing = [f"{m.upper()} {p}" for p, m, op in ops if not op.get("x-roles")]
    assert not missing, (f"operations without x-roles (add requires(...) to the endpoint or its router, "
                         f"or openapi_extra=public()): {missing}")
    known = {str(r) for r in Role} | {"public"}
    for path, method, op in ops:
        roles = op["x-roles"]
        assert set(roles) <= known, f"{method.upper()} {path}: unknown roles {roles}"
        assert roles == ["public"] or "public" not in roles, f"{method.upper()} {path}: public mixed with roles"
        sentence = "**Public:**" if roles == ["public"] else f"**Roles:** {', '.join(roles)}."
        assert sentence in op.get("description", ""), f"{method.upper()} {path}: roles not in the description"


def test_only_the_agreed_endpoints_are_public(store: Store) -> None:
    public = {f"{m.upper()} {p}" for p, m, op in operations(store.openapi()) if op.get("x-roles") == ["public"]}
    assert public <= {"GET /healthz", "POST /api/app/installs", "GET /provision/ca.pem", "POST /provision/claim"}
    assert {"GET /healthz", "POST /api/app/installs"} <= public


def test_the_document_declares_the_security_schemes(store: Store) -> None:
    document = store.openapi()
    schemes = document["components"]["securitySchemes"]
    assert schemes["bearer"] == {**schemes["bearer"], "type": "http", "scheme": "bearer"}
    assert schemes["nodeBasic"] == {**schemes["nodeBasic"], "type": "http", "scheme": "basic"}
    for path, method, op in operations(document):
        roles = op["x-roles"]
        if roles == ["public"]:
            assert not op.get("security"), f"{method.upper()} {path} is public but names a scheme"
            continue
        # OpenAPI 3.1: for non-OAuth schemes the list holds the role names the operation requires.
        stated = {role for requirement in op["security"] for roles_ in requirement.values() for role in roles_}
        assert stated == set(roles), f"{method.upper()} {path}"
        schemes_used = {name for requirement in op["security"] for name in requirement}
        assert schemes_used == ({"bearer"} if set(roles) - {"node"} else set()) | (
            {"nodeBasic"} if "node" in roles else set()), f"{method.upper()} {path}"
        assert {"401", "403"} <= set(op["responses"]), f"{method.upper()} {path} does not document 401/403"


def test_every_endpoint_refuses_the_wrong_role(store: Store) -> None:
    """For every protected operation: 401 without a credential, 403 for every other role, and through for its own."""
    checked = 0
    for path, method, op in operations(store.openapi()):
        roles = op["x-roles"]
        if roles == ["public"]:
            continue
        url, label = store.url + concrete(path, op), f"{method.upper()} {path}"
        anonymous = status_of(url, method, {})
        assert anonymous.status_code == 401, f"{label} without a credential: {anonymous.status_code}"
        assert anonymous.headers.get("www-authenticate"), f"{label}: a 401 without WWW-Authenticate"
        for role in Role:
            response = status_of(url, method, store.headers(role))
            if role in roles:
                assert response.status_code not in (401, 403), \
                    f"{label} refused its own role {role}: {response.status_code} {response.text}"
            else:
                assert response.status_code == 403, f"{label} as {role}: {response.status_code} {response.text}"
                detail = response.json()["detail"]
                assert all(r in detail for r in roles) and str(role) in detail, f"{label}: {detail!r}"
        checked += 1
    assert checked >= 10


def test_bad_credentials_are_401_with_the_reason(store: Store) -> None:
    url = f"{store.url}/api/nodes"
    cases = {"Bearer osk_not-a-token": "unknown or revoked token",
             "Bearer": "send an installer's API token",
             "Basic " + base64.b64encode(f"{NODE}:wrong".encode()).decode(): "unknown node or wrong password",
             "Basic " + base64.b64encode(b"node-2:" + NODE_PASSWORD.encode()).decode(): "wrong password",
             "Basic !!!": "malformed Basic credential",
             "Digest username=x": "unsupported Authorization header"}
    for header, says in cases.items():
        response = httpx.get(url, headers={"Authorization": header}, timeout=10)
        assert response.status_code == 401 and says in response.json()["detail"], (header, response.text)
        assert response.headers["www-authenticate"] == 'Bearer realm="omnisense"'


def test_a_revoked_token_is_refused_at_once(store: Store) -> None:
    token = access("create", "--role", "marketer", "--name", "leaving-marketer", "-c", str(store.config_file))
    headers = {"Authorization": f"Bearer {token}"}
    assert httpx.get(f"{store.url}/api/campaigns", headers=headers, timeout=10).status_code == 200
    access("revoke", "leaving-marketer", "-c", str(store.config_file))
    response = httpx.get(f"{store.url}/api/campaigns", headers=headers, timeout=10)
    assert response.status_code == 401 and "revoked" in response.json()["detail"]
    listed = CliRunner().invoke(cli, ["access", "list", "-c", str(store.config_file)], env={"COLUMNS": "200"})
    assert "leaving-marketer" in listed.stdout and "revoked" in listed.stdout and token not in listed.stdout


def test_403_names_the_roles_the_endpoint_needs(store: Store) -> None:
    response = httpx.get(f"{store.url}/api/visits", headers=store.headers(Role.INSTALLER), timeout=10)
    assert response.status_code == 403
    assert response.json()["detail"] == "this endpoint needs the marketer role; the credential sent is of the " \
                                        "installer role"
    response = httpx.get(f"{store.url}/api/footfall/hourly", headers=store.headers(Role.APP), timeout=10)
    assert response.status_code == 403 and "installer, marketer" in response.json()["detail"]


def test_the_app_keeps_its_messages_and_its_websocket_token(store: Store) -> None:
    url = store.url
    response = httpx.delete(f"{url}/api/app/installs/me", timeout=10)
    assert response.status_code == 401 and response.json()["detail"] == \
        "send the install's token as 'Authorization: Bearer ...'"
    response = httpx.delete(f"{url}/api/app/installs/me", headers={"Authorization": "Bearer nope"}, timeout=10)
    assert response.status_code == 401 and response.json()["detail"] == "unknown token, or consent was withdrawn"
    ws = url.replace("http", "ws") + "/api/app/ws?token="
    with pytest.raises(websockets.exceptions.InvalidStatus) as refused:  # closed before accept: the handshake fails
        websockets.sync.client.connect(ws + store.tokens["installer"], open_timeout=5)
    assert refused.value.response.status_code == 403
    app_token = store.headers(Role.APP)["Authorization"].removeprefix("Bearer ")
    with websockets.sync.client.connect(ws + app_token) as socket:
        socket.ping().wait(5)


def test_tokens_are_stored_as_hashes_and_names_are_kept(tmp_path: Path) -> None:
    tokens = ApiTokens(tmp_path / "gw.db")
    try:
        token = tokens.create(Role.INSTALLER, "alice")
        assert token.encode() not in (tmp_path / "gw.db").read_bytes() + (tmp_path / "gw.db-wal").read_bytes()
        assert tokens.authenticate(token) is not None and tokens.authenticate(token + "x") is None
        with pytest.raises(ValueError, match="taken"):
            tokens.create(Role.MARKETER, "alice")
        with pytest.raises(ValueError, match="own credential"):
            tokens.create(Role.APP, "bob")
        assert tokens.revoke("alice") and not tokens.revoke("alice") and tokens.authenticate(token) is None
        assert [(r["name"], r["role"]) for r in tokens.list()] == [("alice", "installer")]
    finally:
        tokens.close()


def test_without_a_node_password_check_no_node_credential_is_accepted(tmp_path: Path) -> None:
    tokens, registry = ApiTokens(tmp_path / "gw.db"), InstallRegistry(tmp_path / "gw.db", EidResolver())
    try:
        auth = Authenticator(tokens, registry)
        header = "Basic " + base64.b64encode(f"{NODE}:{NODE_PASSWORD}".encode()).decode()
        with pytest.raises(BadCredential, match="wrong password"):
            auth.authenticate(header)
        auth.node_password_ok = node_password_ok
        assert auth.authenticate(header) is not None
        assert auth.authenticate(None) is None and auth.authenticate("  ") is None
    finally:
        tokens.close()
        registry.close()
