"""The daily salt travels gateway -> retained config -> node; a new day gives every device a new pseudonym."""

from __future__ import annotations

import asyncio
import datetime as dt
import threading

from edge.mqtt import Inbound, MqttLink
from edge.protocol import Channel, RemoteConfig, topic
from edge.radio.ble_source import BleOptions, BleSource
from edge.settings import MqttSettings
from gateway.config import ApiSettings, GatewayConfig, KnownNode
from gateway.service import Gateway
from tests.conftest import STORE, wait_for
from tests.test_ble_source import ScriptedScanner, presence, stay


class GatewayThread:
    def __init__(self, gateway: Gateway) -> None:
        self.gateway = gateway
        self.loop = asyncio.new_event_loop()
        self.stop_event = asyncio.Event()
        self.thread = threading.Thread(target=self.loop.run_until_complete, args=(gateway.run(self.stop_event),))

    def __enter__(self) -> Gateway:
        self.thread.start()
        return self.gateway

    def __exit__(self, *exc: object) -> None:
        self.loop.call_soon_threadsafe(self.stop_event.set)
        self.thread.join(20)


def configs_seen(mosquitto, node: str) -> tuple[list[RemoteConfig], MqttLink]:
    seen: list[RemoteConfig] = []

    def on_message(message: Inbound) -> None:
        if message.payload:
            seen.append(RemoteConfig.model_validate_json(message.payload))

    link = MqttLink(MqttSettings(url=mosquitto.url), client_id="salt-watcher",
                    subscriptions=[(topic(STORE, node, Channel.CONFIG), 1)], on_message=on_message)
    link.start()
    return seen, link


def pseudonyms_under(config: RemoteConfig, address: str) -> set[str]:
    state = {"starts": 0, "stops": 0, "failures": 0, "now": 1_795_000_000.0}
    adverts = stay(address, 90)
    source = BleSource("ble-0", BleOptions(zone="shoes"), clock=lambda: state["now"],
                       scanner_factory=lambda cb: ScriptedScanner(source, cb, adverts, state))
    source.apply_config(config)
    emitted: list = []
    asyncio.run(source.run(lambda channel, fields: emitted.append((channel, fields))))
    return {e.device for e in presence(emitted)}


def test_the_gateway_hands_out_a_new_salt_when_the_day_changes(mosquitto, tmp_path):
    day = [dt.date(2026, 11, 23)]
    config = GatewayConfig(store_id=STORE, db_path=tmp_path / "gw.db", mqtt=MqttSettings(url=mosquitto.url),
                           api=ApiSettings(port=0), nodes=[KnownNode(node_id="n1", zone="shoes")])
    gateway = Gateway(config, today=lambda: day[0])
    gateway.salt_check_s = 0.05
    seen, watcher = configs_seen(mosquitto, "n1")
    try:
        with GatewayThread(gateway):
            first = wait_for(lambda: seen[:1], 20, "the retained config with the first salt")[0]
            assert first.salt_day == day[0] and first.salt is not None and len(bytes.fromhex(first.salt)) == 32
            day[0] = dt.date(2026, 11, 24)
            second = wait_for(lambda: [c for c in seen if c.salt_day == day[0]], 20, "the next day's salt")[0]
    finally:
        watcher.stop()
    assert second.salt != first.salt and second.version == first.version
    monday, tuesday = pseudonyms_under(first, "AA:BB:CC:00:11:22"), pseudonyms_under(second, "AA:BB:CC:00:11:22")
    assert len(monday) == 1 and len(tuesday) == 1 and monday != tuesday
    assert pseudonyms_under(first, "AA:BB:CC:00:11:22") == monday  # stable within the day
