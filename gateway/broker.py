"""Brokers the store can run: Mosquitto (production, tests) from the shipped configuration, and an
embedded amqtt broker for the zero-install demo."""

from __future__ import annotations

import getpass
import logging
import re
import socket
from pathlib import Path

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
