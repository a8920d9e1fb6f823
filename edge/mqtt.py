"""The one module that talks to the broker (paho-mqtt 2.x); everything else hands it bytes and topics.

It owns the connection: protocol choice (MQTT 5 with a fall back to 3.1.1 for brokers such as the
embedded amqtt that refuse 5), TLS, credentials, the Last Will, session persistence, reconnects with
backoff, and resubscribing after each connect. Both the node and the gateway use it; neither
imports paho.
"""

from __future__ import annotations

import logging
import ssl
import threading
from collections.abc import Callable
from dataclasses import dataclass

import paho.mqtt.client as paho
from paho.mqtt.packettypes import PacketTypes
from paho.mqtt.properties import Properties
from paho.mqtt.reasoncodes import ReasonCode

from edge.settings import MqttSettings

log = logging.getLogger(__name__)

UNSUPPORTED_PROTOCOL_VERSION = 0x84


@dataclass(frozen=True, slots=True)
class Inbound:
    topic: str
    payload: bytes
    qos: int
    mid: int
    retain: bool


@dataclass(frozen=True, slots=True)
class Will:
    topic: str
    payload: bytes
    qos: int = 1
    retain: bool = True


class NotConnected(RuntimeError):
    pass


class MqttLink:
    """An MQTT connection kept up by paho's network thread, reconnecting with backoff.

    `persistent=True` keeps the broker-side session across restarts (clean start never), which the
    gateway needs so events queued while it was down are delivered when it returns. Otherwise the
    session starts clean on the first connect of the process and is resumed on reconnects.
    With `manual_ack=True` an incoming QoS 1 message is acknowledged only when `ack()` is called,
    after the receiver has made it durable.
    """

    def __init__(
        self,
        settings: MqttSettings,
        client_id: str,
        *,
        subscriptions: list[tuple[str, int]] | None = None,
        will: Will | None = None,
        persistent: bool = False,
        manual_ack: bool = False,
        max_inflight: int = 100,
        on_connect: Callable[[], None] | None = None,
        on_disconnect: Callable[[], None] | None = None,
        on_message: Callable[[Inbound], None] | None = None,
        on_published: Callable[[int, bool], None] | None = None,
    ) -> None:
        self.settings = settings
        self.client_id = client_id
        self.subscriptions = subscriptions or []
        self.will = will
        self.persistent = persistent
        self.manual_ack = manual_ack
        self.max_inflight = max_inflight
        self._on_connect = on_connect
        self._on_disconnect = on_disconnect
        self._on_message = on_message
        self._on_published = on_published
        self.protocol = paho.MQTTv311 if settings.protocol == "3.1.1" else paho.MQTTv5
        self.connected = threading.Event()
        self.subscribed = threading.Event()  # the broker has acknowledged our subscriptions (SUBACK)
        self.connect_count = 0
        self.last_error: str | None = None
        self._stopping = threading.Event()
        self._subscribe_mid = -1
        self._client: paho.Client | None = None

    @property
    def protocol_name(self) -> str:
        return "5" if self.protocol == paho.MQTTv5 else "3.1.1"

    def start(self) -> None:
        if self.settings.protocol == "auto":
            threading.Thread(target=self._probe_then_connect, name=f"mqtt-probe-{self.client_id}",
                             daemon=True).start()
        else:
            self._connect()

    def _connect(self) -> None:
        self._client = self._new_client()
        self._client.loop_start()

    def wait_connected(self, timeout: float) -> bool:
        return self.connected.wait(timeout)

    def _probe_then_connect(self) -> None:
        """Ask the broker once whether it speaks MQTT 5, then connect for real with the answer."""
        delay = self.settings.reconnect_min_s
        while not self._stopping.is_set():
            answer = self._probe()
            if answer is not None:
                self.protocol = answer
                if answer == paho.MQTTv311:
                    log.info("broker at %s speaks MQTT 3.1.1 only; %s uses 3.1.1", self.settings.url,
                             self.client_id)
                self._connect()
                return
            self._stopping.wait(delay)
            delay = min(delay * 2, self.settings.reconnect_max_s)

    def _probe(self) -> int | None:
        """MQTT 5 CONNECT without properties from a throwaway client id: 5, 3.1.1, or None if unreachable.

        A 3.1.1-only broker answers 0x84 (Unsupported protocol version) or closes the connection.
        """
        done = threading.Event()
        answer: list[int] = []

        def on_connect(_c: object, _u: object, _f: object, reason: ReasonCode, _p: object) -> None:
            answer.append(paho.MQTTv311 if reason.value == UNSUPPORTED_PROTOCOL_VERSION else paho.MQTTv5)
            done.set()

        def on_disconnect(*_: object) -> None:
            if not answer:
                answer.append(paho.MQTTv311)
            done.set()

        probe = paho.Client(paho.CallbackAPIVersion.VERSION2, client_id=f"{self.client_id}-probe",
                            protocol=paho.MQTTv5)
        self._authenticate(probe)
        probe.on_connect = on_connect
        probe.on_disconnect = on_disconnect
        try:
            probe.connect(self.settings.host, self.settings.port, keepalive=5, clean_start=True)
        except (OSError, ssl.SSLError) as err:
            self.last_error = f"cannot reach broker at {self.settings.url}: {err}"
            return None
        probe.loop_start()
        done.wait(5)
        probe.disconnect()
        probe.loop_stop()
        return answer[0] if answer else None

    def _authenticate(self, client: paho.Client) -> None:
        if self.settings.username:
            client.username_pw_set(self.settings.username, self.settings.secret())
        if self.settings.tls:
            client.tls_set(ca_certs=str(self.settings.ca_file) if self.settings.ca_file else None,
                           cert_reqs=ssl.CERT_REQUIRED)

    def _new_client(self) -> paho.Client:
        v5 = self.protocol == paho.MQTTv5
        client = paho.Client(
            paho.CallbackAPIVersion.VERSION2,
            client_id=self.client_id,
            protocol=self.protocol,
            clean_session=None if v5 else not self.persistent,
            manual_ack=self.manual_ack,
        )
        client.max_inflight_messages_set(self.max_inflight)
        client.max_queued_messages_set(0)
        client.reconnect_delay_set(self.settings.reconnect_min_s, self.settings.reconnect_max_s)  # type: ignore[arg-type]
        self._authenticate(client)
        if self.will:
            client.will_set(self.will.topic, self.will.payload, self.will.qos, self.will.retain)
        client.on_connect = self._handle_connect
        client.on_disconnect = self._handle_disconnect
        client.on_message = self._handle_message
        client.on_publish = self._handle_publish
        client.on_subscribe = self._handle_subscribe
        properties = None
        clean_start: bool | int = paho.MQTT_CLEAN_START_FIRST_ONLY
        if v5:
            properties = Properties(PacketTypes.CONNECT)
            properties.SessionExpiryInterval = self.settings.session_expiry_s
            clean_start = False if self.persistent else paho.MQTT_CLEAN_START_FIRST_ONLY
        client.connect_async(
            self.settings.host, self.settings.port, self.settings.keepalive_s,
            clean_start=clean_start, properties=properties,
        )
        return client

    def _handle_connect(self, client: paho.Client, _u: object, flags: object, reason: ReasonCode,
                        _p: object) -> None:
        if reason.is_failure:
            self.last_error = f"broker refused connection: {reason}"
            log.warning("%s: %s", self.client_id, self.last_error)
            return
        self.connect_count += 1
        self.last_error = None
        if self.subscriptions:
            self._subscribe_mid = client.subscribe(self.subscriptions)[1]
        else:
            self.subscribed.set()
        self.connected.set()
        log.info("%s connected to %s:%s (MQTT %s)", self.client_id, self.settings.host, self.settings.port,
                 self.protocol_name)
        if self._on_connect:
            self._on_connect()

    def _handle_subscribe(self, _c: object, _u: object, mid: int, reasons: list[ReasonCode], _p: object) -> None:
        refused = [str(r) for r in reasons if r.is_failure]
        if refused:
            log.error("%s: broker refused subscriptions: %s", self.client_id, ", ".join(refused))
        elif mid == self._subscribe_mid:
            self.subscribed.set()

    def _handle_disconnect(self, _c: object, _u: object, _f: object, reason: ReasonCode,
                           _p: object) -> None:
        was_connected = self.connected.is_set()
        self.connected.clear()
        self.subscribed.clear()
        if was_connected:
            if not self._stopping.is_set():
                log.warning("%s lost the broker: %s; reconnecting", self.client_id, reason)
            if self._on_disconnect:
                self._on_disconnect()

    def _handle_message(self, _c: object, _u: object, msg: paho.MQTTMessage) -> None:
        if self._on_message:
            self._on_message(Inbound(msg.topic, msg.payload, msg.qos, msg.mid, bool(msg.retain)))

    def _handle_publish(self, _c: object, _u: object, mid: int, reason: ReasonCode, _p: object) -> None:
        if reason.is_failure:
            log.warning("%s: broker did not accept message %d: %s", self.client_id, mid, reason)
        if self._on_published:
            self._on_published(mid, not reason.is_failure)

    def publish(self, topic: str, payload: bytes, qos: int = 1, retain: bool = False,
                schema: str | None = None) -> int:
        """Queue one message; returns its mid. `schema` rides as an MQTT 5 user property when available."""
        client = self._client
        if client is None or not self.connected.is_set():
            raise NotConnected(f"{self.client_id} is not connected")
        properties = None
        if schema and self.protocol == paho.MQTTv5:
            properties = Properties(PacketTypes.PUBLISH)
            properties.UserProperty = ("schema", schema)
        info = client.publish(topic, payload, qos=qos, retain=retain, properties=properties)
        # NO_CONN: the connection dropped just now; paho keeps a QoS 1 message and sends it on reconnect.
        if info.rc not in (paho.MQTT_ERR_SUCCESS, paho.MQTT_ERR_NO_CONN) or (qos == 0 and info.rc):
            raise NotConnected(f"{self.client_id}: publish failed: {paho.error_string(info.rc)}")
        return info.mid

    def ack(self, mid: int, qos: int) -> None:
        client = self._client
        if client is not None:
            client.ack(mid, qos)

    def stop(self, final: tuple[str, bytes] | None = None, timeout: float = 3.0) -> None:
        """Disconnect cleanly, first publishing `final` (topic, payload; retained) if connected."""
        self._stopping.set()
        client = self._client
        if client is not None:
            if final and self.connected.is_set():
                info = client.publish(final[0], final[1], qos=1, retain=True)
                try:
                    info.wait_for_publish(timeout)
                except (RuntimeError, ValueError):
                    pass
            client.disconnect()
            client.loop_stop()
