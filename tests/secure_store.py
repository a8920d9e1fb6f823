"""A store as an installer finds it: Mosquitto on the generated configuration (TLS, passwords, ACL)
and the gateway process serving HTTPS with the store's certificate, plus an installer token."""

from __future__ import annotations

import getpass
import sqlite3
import ssl
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx

from gateway.broker import GeneratedMosquitto, free_port
from gateway.broker_setup import BrokerFiles, gateway_mqtt_settings, generate
from gateway.roles import ApiTokens, Role
from tests.conftest import Service, mosquitto_binary, wait_for

STORE = "store-7"


class SecureGateway(Service):
    def __init__(self, files: BrokerFiles, workdir: Path, **extra: Any) -> None:
        self.port = free_port()
        self.db_path = workdir / "gateway.db"
        self.ca = files.ca_cert
        config = {"store_id": files.store_id, "db_path": str(self.db_path), "mqtt": gateway_mqtt_settings(files),
                  "api": {"port": self.port}, "provisioning": {"broker_dir": str(files.directory), "heartbeat_s": 2},
                  **extra}
        super().__init__("gateway", config, workdir, "gateway")

    @property
    def url(self) -> str:
        return f"https://127.0.0.1:{self.port}"

    def start(self) -> None:
        super().start()
        wait_for(self._connected, 30, "the gateway to serve HTTPS and connect to the broker")

    def _connected(self) -> bool:
        if self.proc is not None and self.proc.poll() is not None:
            raise AssertionError(f"gateway exited:\n{self.output()}")
        try:
            return httpx.get(self.url + "/healthz", verify=ssl.create_default_context(cafile=self.ca),
                             timeout=1).json()["mqtt_connected"]
        except httpx.HTTPError:
            return False

    def dead_letters(self) -> list[tuple[str, str]]:
        with sqlite3.connect(f"file:{self.db_path}?mode=ro", uri=True) as db:
            return db.execute("SELECT node_id, code FROM dead_letters").fetchall()


@dataclass
class SecureStore:
    files: BrokerFiles
    broker: GeneratedMosquitto
    gateway: SecureGateway
    installer_token: str

    @property
    def trust(self) -> ssl.SSLContext:
        """Trusts the store's CA only."""
        return ssl.create_default_context(cafile=self.files.ca_cert)

    def api(self, token: str | None = None) -> httpx.Client:
        token = token or self.installer_token
        return httpx.Client(base_url=self.gateway.url, verify=self.trust, timeout=10,
                            headers={"Authorization": f"Bearer {token}"})

    def cli_options(self) -> list[str]:
        return ["--gateway", self.gateway.url, "--token", self.installer_token, "--ca", str(self.files.ca_cert)]


def start_secure_store(workdir: Path, started: list[Service]) -> SecureStore:
    mosquitto_binary()
    files = generate(workdir / "broker", STORE, port=free_port(), bind="127.0.0.1", hostnames=("localhost",),
                     ips=("127.0.0.1",), user=getpass.getuser())
    broker = GeneratedMosquitto(files)
    broker.start()
    gateway = SecureGateway(files, workdir)
    tokens = ApiTokens(gateway.db_path)
    token = tokens.create(Role.INSTALLER, "installer-ann")
    tokens.close()
    started.append(gateway)
    gateway.start()
    return SecureStore(files, broker, gateway, token)
