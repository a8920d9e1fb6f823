"""Brokers the store can run: Mosquitto from a configuration generated for the store (production:
TLS, passwords, ACL; see gateway.broker_setup) or from the shipped anonymous development
configuration (tests, benchmarks), and an embedded amqtt broker for the zero-install demo."""

from __future__ import annotations

import getpass
import logging
import os
import re
import shutil
import signal
import socket
import subprocess
import time
from pathlib import Path
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from gateway.broker_setup import BrokerFiles

CONFIG_DIR = Path(__file__).resolve().parents[1] / "config"
MOSQUITTO_CONF = CONFIG_DIR / "mosquitto.conf"


def free_port(host: str = "127.0.0.1") -> int:
    with socket.socket() as sock:
        sock.bind((host, 0))
        return int(sock.getsockname()[1])


def mosquitto_conf(port: int, data_dir: Path, base: Path = MOSQUITTO_CONF, host: str = "127.0.0.1") -> str:
    """The shipped configuration with its listener and persistence folder moved to `port` and `data_dir`.

    It also runs the broker as the current user: started as root, Mosquitto otherwise switches to
    the `mosquitto` user, which cannot write the persistence file into our folder.
    """
    text = base.read_text() + f"\nuser {getpass.getuser()}\n"
    text, listeners = re.subn(r"(?m)^listener\s+.*$", f"listener {port} {host}", text)
    text, folders = re.subn(r"(?m)^persistence_location\s+.*$", f"persistence_location {data_dir}/", text)
    if listeners != 1 or folders != 1:
        raise ValueError(f"{base}: expected exactly one 'listener' and one 'persistence_location' line")
    return text


def find_mosquitto() -> str | None:
    """The mosquitto binary; Debian installs it in /usr/sbin, which is not on every user's PATH."""
    return shutil.which("mosquitto") or ("/usr/sbin/mosquitto" if os.access("/usr/sbin/mosquitto", os.X_OK) else None)


def _require_mosquitto(binary: str | None) -> str:
    found = binary or find_mosquitto()
    if found is None:
        raise FileNotFoundError("the mosquitto binary is missing: install it with 'sudo apt-get install -y mosquitto'")
    return found


class MosquittoProcess:
    """A private Mosquitto on a free port, running the shipped configuration, as a child process."""

    host = "127.0.0.1"

    def __init__(self, workdir: Path, binary: str | None = None) -> None:
        self.binary = _require_mosquitto(binary)
        self.port = free_port()
        self.data_dir = workdir / "mosquitto"
        self.data_dir.mkdir(parents=True, exist_ok=True)
        self.conf = self.data_dir / "mosquitto.conf"
        self.conf.write_text(mosquitto_conf(self.port, self.data_dir))
        self.log = self.data_dir / "mosquitto.log"
        self.proc: subprocess.Popen[bytes] | None = None

    @property
    def url(self) -> str:
        return f"mqtt://127.0.0.1:{self.port}"

    def start(self, timeout: float = 10.0) -> None:
        with self.log.open("ab") as log:
            self.proc = subprocess.Popen([self.binary, "-c", str(self.conf)], stdout=log, stderr=subprocess.STDOUT)
        deadline = time.monotonic() + timeout
        while not self._accepting():
            if time.monotonic() > deadline:
                raise TimeoutError(f"mosquitto did not listen on port {self.port} within {timeout:.0f} s")
            time.sleep(0.05)

    def _accepting(self) -> bool:
        if self.proc is not None and self.proc.poll() is not None:
            raise RuntimeError(f"mosquitto exited: {self.log.read_text()[-2000:]}")
        with socket.socket(socket.AF_INET6 if ":" in self.host else socket.AF_INET) as sock:
            return sock.connect_ex((self.host, self.port)) == 0

    def stop(self, sig: int = signal.SIGTERM) -> None:
        if self.proc is not None and self.proc.poll() is None:
            self.proc.send_signal(sig)
            self.proc.wait(15)
        self.proc = None


class GeneratedMosquitto(MosquittoProcess):
    """Mosquitto running a directory written by `gateway.broker_setup.generate` (TLS on its port).

    The caller picks the port when generating; start() returns once the TLS port accepts TCP.
    """

    def __init__(self, files: BrokerFiles, binary: str | None = None) -> None:
        self.binary = _require_mosquitto(binary)
        self.files = files
        self.port = files.port
        self.host = "127.0.0.1" if files.bind == "0.0.0.0" else "::1" if files.bind == "::" else files.bind
        self.data_dir = files.data_dir
        self.conf = files.conf
        self.log = files.directory / "mosquitto.log"
        self.proc = None

    @property
    def url(self) -> str:
        host = f"[{self.host}]" if ":" in self.host else self.host
        return f"mqtts://{host}:{self.port}"

    @property
    def pid(self) -> int | None:
        return self.proc.pid if self.proc is not None else None


class EmbeddedBroker:
    """amqtt in this process's event loop: MQTT 3.1.1 only, in memory, for the demo."""

    def __init__(self, port: int | None = None, host: str = "127.0.0.1") -> None:
        self.host = host
        self.port = port or free_port(host)
        self._broker = None

    @property
    def url(self) -> str:
        return f"mqtt://{self.host}:{self.port}"

    async def start(self) -> None:
        from amqtt.broker import Broker

        for name in ("amqtt", "transitions"):
            logging.getLogger(name).setLevel(logging.ERROR)
        self._broker = Broker(
            {
                "listeners": {"default": {"type": "tcp", "bind": f"{self.host}:{self.port}"}},
                "plugins": {"amqtt.plugins.authentication.AnonymousAuthPlugin": {"allow_anonymous": True}},
            }
        )
        await self._broker.start()

    async def stop(self) -> None:
        if self._broker is not None:
            await self._broker.shutdown()
