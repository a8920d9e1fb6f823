"""Fixtures that start real parts: Mosquitto with the shipped configuration, gateway and node processes."""

from __future__ import annotations

import os
import signal
import sqlite3
import subprocess
import sys
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest
import yaml

from gateway.broker import MosquittoProcess, find_mosquitto, free_port

STORE = "test-store"


def mosquitto_binary() -> str:
    found = find_mosquitto()
    if found is None:
        pytest.fail("the mosquitto binary is missing: install it with 'sudo apt-get install -y mosquitto'")
    return found


def wait_for(predicate: Callable[[], Any], timeout: float, what: str, interval: float = 0.05) -> Any:
    deadline = time.monotonic() + timeout
    last: Any = None
    while time.monotonic() < deadline:
        last = predicate()
        if last:
            return last
        time.sleep(interval)
    raise AssertionError(f"timed out after {timeout:.0f} s waiting for {what} (last: {last!r})")


class Mosquitto(MosquittoProcess):
    """A real broker on a free port, running the project's mosquitto.conf."""

    def __init__(self, workdir: Path) -> None:
        super().__init__(workdir, mosquitto_binary())


@pytest.fixture
def mosquitto(tmp_path: Path) -> Iterator[Mosquitto]:
    broker = Mosquitto(tmp_path)
    broker.start()
    yield broker
    broker.stop()


class Service:
    """An `omnisense <command> --config FILE` child process."""

    def __init__(self, command: str, config: dict[str, Any], workdir: Path, name: str) -> None:
        self.command = command
        self.config = config
        self.path = workdir / f"{name}.yaml"
        self.log = workdir / f"{name}.log"
        self.proc: subprocess.Popen[bytes] | None = None

    def start(self) -> None:
        self.path.write_text(yaml.safe_dump(self.config))
        env = {**os.environ, "COLUMNS": "200"}
        with self.log.open("ab") as log:
            self.proc = subprocess.Popen([sys.executable, "-m", "omnisense.cli", self.command, "-c", str(self.path)],
                                         stdout=log, stderr=subprocess.STDOUT, env=env)

    def stop(self, sig: int = signal.SIGTERM, timeout: float = 20) -> int | None:
        if self.proc is None:
            return None
        if self.proc.poll() is None:
            self.proc.send_signal(sig)
            try:
                self.proc.wait(timeout)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()
                raise AssertionError(f"{self.command} did not stop on signal {sig}; log:\n{self.output()}")
        code = self.proc.returncode
        self.proc = None
        return code

    def output(self) -> str:
        return self.log.read_text(errors="replace") if self.log.exists() else ""


class GatewayProc(Service):
    """`omnisense gateway` with an installer's and a marketer's API token made on its database."""

    def __init__(self, broker: Mosquitto, workdir: Path, nodes: list[str], **extra: Any) -> None:
        self.port = free_port()
        self.db_path = workdir / "gateway.db"
        self.tokens: dict[str, str] = {}
        config = {"store_id": STORE, "db_path": str(self.db_path), "mqtt": {"url": broker.url},
                  "api": {"port": self.port}, "nodes": [{"node_id": n, "zone": "entrance"} for n in nodes], **extra}
        super().__init__("gateway", config, workdir, "gateway")

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def start(self) -> None:
        if not self.tokens:
            self.tokens = api_tokens(self.db_path)
        super().start()
        wait_for(self._connected, 20, "the gateway to connect")

    def headers(self, role: str = "installer") -> dict[str, str]:
        return {"Authorization": f"Bearer {self.tokens[role]}"}

    def _connected(self) -> bool:
        if self.proc is not None and self.proc.poll() is not None:
            raise AssertionError(f"gateway exited:\n{self.output()}")
        try:
            return httpx.get(self.url + "/healthz", timeout=1).json()["mqtt_connected"]
        except httpx.HTTPError:
            return False

    def get(self, path: str, as_role: str = "installer", **params: Any) -> Any:
        response = httpx.get(self.url + path, params=params, headers=self.headers(as_role), timeout=10)
        response.raise_for_status()
        return response.json()

    def stored_rows(self) -> list[tuple[str, str, int]]:
        with sqlite3.connect(f"file:{self.db_path}?mode=ro", uri=True) as db:
            return db.execute("SELECT node_id, boot_id, seq FROM events").fetchall()


def api_tokens(db_path: Path) -> dict[str, str]:
    """An installer's and a marketer's API token on a gateway database (it may be running: WAL)."""
    from gateway.roles import ApiTokens, Role

    tokens = ApiTokens(db_path)
    try:
        return {str(role): tokens.create(role, f"test-{role}") for role in (Role.INSTALLER, Role.MARKETER)}
    finally:
        tokens.close()


class GatewayThread:
    """The Gateway class on its own thread and event loop: a real HTTP server whose objects tests can reach."""

    def __init__(self, gateway: Any) -> None:
        import asyncio
        import threading

        self.gateway = gateway
        self.loop = asyncio.new_event_loop()
        self._stop = asyncio.Event()
        self._thread = threading.Thread(target=self.loop.run_until_complete, args=(gateway.run(self._stop),),
                                        name="gateway", daemon=True)

    def __enter__(self) -> GatewayThread:
        self._thread.start()
        wait_for(lambda: self.gateway.api_port and self.gateway.link.subscribed.is_set(), 20, "the gateway")
        return self

    def __exit__(self, *exc: object) -> None:
        self.loop.call_soon_threadsafe(self._stop.set)
        self._thread.join(30)
        self.loop.close()

    @property
    def url(self) -> str:
        return self.gateway.url


class NodeProc(Service):
    def __init__(self, broker: Mosquitto, workdir: Path, node_id: str, count: int, rate_hz: float = 0,
                 **publish: Any) -> None:
        self.node_id = node_id
        self.data_dir = workdir / node_id
        config = {
            "store_id": STORE, "node_id": node_id, "data_dir": str(self.data_dir), "mqtt": {"url": broker.url},
            "publish": {"status_interval_s": 2, **publish},
            "sources": [{"kind": "synthetic", "options": {"count": count, "rate_hz": rate_hz}}],
        }
        super().__init__("node", config, workdir, node_id)

    def set_count(self, count: int) -> None:
        self.config["sources"][0]["options"]["count"] = count

    def outbox(self) -> tuple[int, int]:
        """(last seq allocated, events still waiting), read from the node's own outbox file."""
        path = self.data_dir / "outbox.db"
        if not path.exists():
            return 0, 0
        with sqlite3.connect(f"file:{path}?mode=ro", uri=True) as db:
            try:
                last = db.execute("SELECT value FROM counters WHERE name = 'last_seq'").fetchone()
                depth = db.execute("SELECT count(*) FROM outbox").fetchone()[0]
            except sqlite3.OperationalError as err:
                if "no such table" in str(err):
                    return 0, 0  # the node has created the file but not yet its tables
                raise
        return (last[0] if last else 0), depth


@pytest.fixture
def services() -> Iterator[list[Service]]:
    """Collects started services and stops whatever a test left running."""
    started: list[Service] = []
    yield started
    for service in started:
        if service.proc is not None:
            service.stop(signal.SIGKILL)
