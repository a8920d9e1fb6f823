"""The gateway process: MQTT subscription -> ingest thread -> SQLite, plus the HTTP API.

The MQTT session is persistent (fixed client id, never a clean start, long expiry), so events
published while the gateway is down wait in the broker and arrive when it returns.
"""

from __future__ import annotations

import asyncio
import contextlib
import datetime as dt
import gc
import logging
import socket
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import uvicorn

from edge import protocol
from edge.mqtt import Inbound, MqttLink, NotConnected
from edge.protocol import Channel, RemoteConfig
from gateway.aggregates import refresh
from gateway.aggregates_api import aggregates_router
from gateway.api import Health, create_app
from gateway.app_api import Redemption, app_router
from gateway.campaigns import CampaignsFile, load_campaigns
from gateway.broker_setup import BrokerAuth
from gateway.campaigns_api import campaigns_router
from gateway.claims import ClaimTokens
from gateway.config import GatewayConfig
from gateway.eid_resolver import EidResolver
from gateway.fusion import Fusion
from gateway.ingest import Ingestor
from gateway.installs import InstallRegistry
from gateway.offer_ledger import SqliteLedger
from gateway.offers import OfferEngine
from gateway.proximity import Proximity
from gateway.push.base import PushMessage
from gateway.push.config import build_adapters
from gateway.push.webpush import WebPushSubscription
from gateway.push_hub import PushHub
from gateway.install_api import InstallContext, installer_router, node_router, provision_router
from gateway.node_directory import NodeDirectory, remote_config
from gateway.provisioning import Provisioner
from gateway.roles import ApiTokens, Authenticator
from gateway.salt import DailySalt, local_today
from gateway.store import Accepted, EventStore, open_db
from gateway.store_ca import CA_CERT
from gateway.visits import resolving_app_ids

log = logging.getLogger(__name__)

# On stop, requests in progress get this long. Without a bound, one idle TLS client that does not
# answer the close_notify holds the shutdown for asyncio's 30 s SSL shutdown timeout.
GRACEFUL_SHUTDOWN_S = 5.0


class _ApiServer(uvicorn.Server):
    """uvicorn without its own signal handling: the process owner decides when to stop."""

    @contextlib.contextmanager
    def capture_signals(self) -> Iterator[None]:
        yield


def _tune_gc() -> None:
    """Collect young objects every 20,000 allocations instead of 700.

    Each message makes a dozen short-lived container objects; with the default threshold the cyclic
    collector runs every few dozen messages: triage plus write of a 2,000-message batch measured
    14.1 us per message with the default and 9.6 us with this. Start-up objects are frozen out of
    later full collections.
    """
    gc.collect()
    gc.freeze()
    gc.set_threshold(20_000, 20, 20)


class Gateway:
    def __init__(self, config: GatewayConfig,
                 on_commit: Callable[[list[Accepted]], None] | None = None,
                 today: Callable[[], dt.date] | None = None) -> None:
        """`on_commit` sees each batch of accepted events (redeliveries included) once it is durable;
        `today` is the store's calendar, which decides when the daily salt changes."""
        self.config = config
        self.salt = DailySalt(today or local_today(config.timezone))
        self.salt_check_s = 10.0  # how soon after midnight the nodes get the new day's salt
        self.aggregate_every_s = 60.0
        self.store = EventStore(config.db_path)
        self.registry = InstallRegistry(config.db_path, EidResolver(), config.eid_rotation_exponent)
        self.api_tokens = ApiTokens(config.db_path)
        self.auth = Authenticator(self.api_tokens, self.registry, node_password_ok=None)
        self.ledger = SqliteLedger(config.db_path)
        campaigns = (load_campaigns(config.campaigns) if config.campaigns
                     else CampaignsFile(timezone=config.timezone or "UTC", campaigns=[]))
        self.hub = PushHub()
        self.push_adapters = build_adapters(config.push)
        self.proximity = Proximity(self.registry, Fusion(config.fusion), OfferEngine(campaigns, self.registry, self.ledger),
                                   self.ledger, self.hub, background=self._push_in_background)
        user_commit = on_commit

        def committed(accepted: list[Accepted]) -> None:
            try:
                self.proximity.on_commit(accepted)
            except Exception:  # offers are a consumer of stored events: they never stop ingest
                log.exception("proximity offers could not process a batch of %d events", len(accepted))
            if user_commit is not None:
                user_commit(accepted)

        on_commit = committed
        self.directory = NodeDirectory(config.db_path, [(n.node_id, n.zone) for n in config.nodes])
        self.claim_tokens = ClaimTokens(config.db_path, config.store_id)
        broker_dir = config.provisioning.broker_dir
        self.provisioner = Provisioner(self.claim_tokens, self.directory,
                                       BrokerAuth.from_dir(broker_dir, config.store_id) if broker_dir else None,
                                       publish_config=self._publish_node_config, clear_config=self._clear_node_config)
        self.auth.node_password_ok = self.directory.password_ok
        self.link = MqttLink(
            config.mqtt,
            client_id=f"omnisense-gateway-{config.store_id}",
            subscriptions=[(protocol.store_filter(config.store_id, ch), 1)
                           for ch in (Channel.STATUS, *protocol.EVENT_CHANNELS)],
            persistent=True,
            manual_ack=True,
            on_message=self._on_message,
            on_connect=self._publish_configs,
        )
        self.ingestor = Ingestor(
            self.store, config.store_id, self.directory.known, config.ingest.max_payload_bytes,
            config.ingest.max_batch, config.ingest.queue_limit, ack=self.link.ack, on_commit=on_commit,
        )
        self.api_port: int | None = None
        self._loop: asyncio.AbstractEventLoop | None = None
        self._server: _ApiServer | None = None

    def _on_message(self, message: Inbound) -> None:
        self.ingestor.submit(message)

    def _publish_configs(self) -> None:
        """Write each live node's retained config (zone, placement, today's salt); nodes apply it on (re)connect."""
        day, salt = self.salt.current()
        for config in self.directory.remote_configs(day, salt):
            if not self._publish_config(config):
                return

    def _publish_config(self, config: RemoteConfig) -> bool:
        try:
            self.link.publish(protocol.topic(self.config.store_id, config.node_id, Channel.CONFIG),
                              protocol.encode(config), qos=1, retain=True, schema="omnisense.config/1")
        except NotConnected:
            return False  # every config is published again on the next connect
        return True

    def _publish_node_config(self, node_id: str) -> None:
        day, salt = self.salt.current()
        self._publish_config(remote_config(self.directory.get(node_id), day, salt))

    def _clear_node_config(self, node_id: str) -> None:
        """Remove a revoked node's retained config, and the day's salt in it, from the broker."""
        with contextlib.suppress(NotConnected):
            self.link.publish(protocol.topic(self.config.store_id, node_id, Channel.CONFIG), b"", qos=1, retain=True)

    async def _rotate_salt_daily(self) -> None:
        """At the start of each day, hand the nodes a new salt (their retained configs are rewritten)."""
        while True:
            await asyncio.sleep(self.salt_check_s)
            if self.salt.changed() and self.link.connected.is_set():
                await asyncio.to_thread(self._publish_configs)
                log.info("store %s: daily salt of %s handed to %d nodes", self.config.store_id, self.salt.day,
                         len(self.directory.known))

    def _push_in_background(self, install_id: str, target: dict[str, Any], message: dict[str, Any]) -> None:
        """From the ingest thread: send through FCM, APNs or Web Push on the API's loop, without waiting."""
        adapter = self.push_adapters.get(target["platform"])
        loop = self._loop
        if adapter is None or loop is None:
            log.info("no %s adapter configured: offer %s not pushed in the background", target["platform"],
                     message["decision_id"][:8])
            return
        push = PushMessage(title=message["title"], body=message["body"] or "",
                           data={"decision_id": message["decision_id"], "campaign": message["campaign"]})
        recipient: Any = (WebPushSubscription.model_validate(target["subscription"]) if target["platform"] == "webpush"
                          else target["token"])
        future = asyncio.run_coroutine_threadsafe(adapter.send(recipient, push), loop)

        def done(f: Any) -> None:
            result = None if f.cancelled() else (f.exception() or f.result())
            if result is None or isinstance(result, BaseException) or not result.ok:
                log.warning("background push of offer %s failed: %s", message["decision_id"][:8], result)
                if getattr(result, "unregistered", False):
                    loop.run_in_executor(None, self.registry.set_push, install_id, None)

        future.add_done_callback(done)

    def health(self) -> Health:
        failed = self.ingestor.failed
        connected = self.link.subscribed.is_set()
        return Health(status="ok" if connected and failed is None else "degraded", mqtt_connected=connected,
                      ingest_backlog=self.ingestor.backlog, ingest_error=str(failed) if failed else None)

    async def _signal_when_subscribed(self, ready: asyncio.Event, stop: asyncio.Event) -> None:
        """`ready` means events published from now on reach this gateway."""
        while not self.link.subscribed.is_set() and not stop.is_set():
            await asyncio.sleep(0.01)
        ready.set()

    async def _refresh_aggregates(self, stop: asyncio.Event) -> None:
        """Recompute the current and the previous hour's footfall every `aggregate_every_s`."""
        db = open_db(self.config.db_path)
        db.execute("PRAGMA busy_timeout = 5000")
        try:
            while not stop.is_set():
                try:
                    await asyncio.wait_for(stop.wait(), self.aggregate_every_s)
                except TimeoutError:
                    pass
                now = time.time()
                try:
                    await asyncio.to_thread(refresh, db, self.config.store_id, now - 3600, now, None, self.directory.zone_of,
                                            resolving_app_ids(self.registry.resolve))
                except Exception:
                    log.exception("hourly aggregates not refreshed; retrying in %.0f s", self.aggregate_every_s)
        finally:
            db.conn.close()

    def _redeem(self, install_id: str, decision_id: str) -> Redemption | None:
        when = self.ledger.redeem(install_id, decision_id)
        return None if when is None else Redemption(decision_id=decision_id, redeemed_at=when)

    @property
    def tls(self) -> tuple[Path, Path] | None:
        """The API's certificate and key: configured, or the broker's server certificate when provisioning."""
        api, broker_dir = self.config.api, self.config.provisioning.broker_dir
        if api.cert_file and api.key_file:
            return api.cert_file, api.key_file
        if broker_dir and (broker_dir / "server.pem").exists():
            return broker_dir / "server.pem", broker_dir / "server.key"
        return None

    @property
    def url(self) -> str:
        return f"{'https' if self.tls else 'http'}://{self.config.api.host}:{self.api_port}"

    def _install_context(self) -> InstallContext:
        settings = self.config.provisioning
        return InstallContext(
            store_id=self.config.store_id, directory=self.directory, tokens=self.claim_tokens,
            provisioner=self.provisioner, db_path=self.config.db_path, publish_config=self._publish_node_config,
            ca_file=settings.broker_dir / CA_CERT if settings.broker_dir else None,
            node_mqtt_url=lambda: settings.node_mqtt_url or self.config.mqtt.url,
            public_url=lambda: settings.public_url or self.url, heartbeat_s=settings.heartbeat_s)

    async def run(self, stop: asyncio.Event, ready: asyncio.Event | None = None) -> None:
        _tune_gc()
        sock = socket.socket(socket.AF_INET6 if ":" in self.config.api.host else socket.AF_INET)
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        sock.bind((self.config.api.host, self.config.api.port))
        self.api_port = sock.getsockname()[1]
        self._loop = asyncio.get_running_loop()
        redeem = self._redeem
        install = self._install_context()
        app = create_app(self.config.db_path, self.health,
                         [app_router(self.registry, self.hub, redeem),
                          campaigns_router(self.config.db_path, self.proximity.engine, self.config.campaigns,
                                           lambda: self.proximity.lock),
                          aggregates_router(self.config.db_path, zone_of=self.directory.zone_of,
                                            resolve=resolving_app_ids(self.registry.resolve)),
                          provision_router(install), installer_router(install), node_router(install)],
                         auth=self.auth)
        tls = self.tls
        self._server = _ApiServer(uvicorn.Config(app, log_level="warning", access_log=False, lifespan="off",
                                                 timeout_graceful_shutdown=GRACEFUL_SHUTDOWN_S, ssl_certfile=tls[0] if tls else None,
                                                 ssl_keyfile=tls[1] if tls else None))
        self.ingestor.start()
        self.link.start()
        serving = asyncio.create_task(self._server.serve(sockets=[sock]))
        while not self._server.started and not serving.done():
            await asyncio.sleep(0.01)
        log.info("gateway for store %s: API on %s, MQTT %s", self.config.store_id, self.url, self.config.mqtt.url)
        if ready is not None:
            asyncio.create_task(self._signal_when_subscribed(ready, stop))
        rotating = asyncio.create_task(self._rotate_salt_daily())
        timer = asyncio.create_task(self.proximity.run_timer(stop))
        aggregating = asyncio.create_task(self._refresh_aggregates(stop))
        await asyncio.wait([asyncio.create_task(stop.wait()), serving], return_when=asyncio.FIRST_COMPLETED)
        stop.set()  # also when the API server ended on its own: the timers below wait for it
        rotating.cancel()
        await timer
        await aggregating
        self._server.should_exit = True
        await serving
        await asyncio.to_thread(self.link.stop)
        await asyncio.to_thread(self.ingestor.stop)
        for adapter in self.push_adapters.values():  # after ingest: pushes it started may still finish
            await adapter.aclose()
        self.store.close()
        self.registry.close()
        self.api_tokens.close()
        self.claim_tokens.close()
        self.directory.close()
        self.ledger.close()
