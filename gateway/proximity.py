"""From committed presence events to offers on the app: resolve, fuse, decide, push.

Runs on the ingest thread, after each batch is durable: an app's ephemeral ID is resolved to a
consented install (unknown IDs stop here and stay anonymous), the install's sightings from all
nodes are fused to one zone at a time, zone changes and arrivals go to the offer engine, and a
"sent" decision goes to the app's live channel, else to its background push service. A timer
adds the dwell events the campaigns wait for (the nodes report dwell only once a minute).
The install id, never the pseudonym or EID, is what the decisions refer to.

Idempotence: redelivered events are skipped by their (node, boot, seq) within a process, and the
engine's ledger refuses an event id it has decided before, across restarts.
"""

from __future__ import annotations

import asyncio
import logging
import threading
import time
from collections import OrderedDict
from collections.abc import Callable
from typing import Any

from edge.protocol import PresenceEvent
from gateway.campaigns import DwellTrigger
from gateway.fusion import Fusion, LocationChange, Sighting
from gateway.installs import InstallRegistry
from gateway.offer_ledger import SqliteLedger
from gateway.offers import Decision, OfferEngine, VisitEvent, ZoneEvent
from gateway.push_hub import PushHub
from gateway.store import Accepted

log = logging.getLogger(__name__)

RECENT_KEYS = 200_000
Background = Callable[[str, dict[str, Any], dict[str, Any]], None]  # (install, push target, message)


class Proximity:
    def __init__(self, registry: InstallRegistry, fusion: Fusion, engine: OfferEngine, ledger: SqliteLedger,
                 hub: PushHub, background: Background | None = None) -> None:
        self.registry, self.fusion, self.engine, self.ledger, self.hub = registry, fusion, engine, ledger, hub
        self.background = background
        self._recent: OrderedDict[tuple[str, str, int], None] = OrderedDict()
        self._stays: dict[str, tuple[str, float, set[float]]] = {}  # install -> (zone, since, dwell marks passed)
        self.lock = threading.RLock()  # held while deciding; the campaigns API takes it to swap campaigns
        self.resolved = 0
        self.unresolved = 0

    # --- ingest thread ----------------------------------------------------------------------------

    def on_commit(self, accepted: list[Accepted]) -> None:
        with self.lock:
            for item in accepted:
                event = item.event
                if not isinstance(event, PresenceEvent) or event.source != "app":
                    continue
                key = (event.node_id, event.boot_id, event.seq)
                if key in self._recent:
                    continue
                self._recent[key] = None
                if len(self._recent) > RECENT_KEYS:
                    self._recent.popitem(last=False)
                at = event.ts.timestamp()
                try:
                    install = self.registry.resolve(bytes.fromhex(event.device), at)
                except ValueError:
                    self.unresolved += 1
                    continue
                if install is None:
                    self.unresolved += 1
                    continue
                self.resolved += 1
                changes = self.fusion.update(Sighting(install, event.node_id, event.zone, event.action, at,
                                                      event.dwell_s, event.rssi, event.source))
                self._handle(changes, f"{event.node_id}/{event.boot_id}/{event.seq}")

    # --- timer ------------------------------------------------------------------------------------

    def tick(self, now: float) -> None:
        """Expire stale sightings and raise dwell events as installs pass the campaigns' dwell marks."""
        with self.lock:
            self._handle(self.fusion.tick(now), f"tick/{now:.3f}")
            marks = self._dwell_marks()
            for install, (zone, since, passed) in list(self._stays.items()):
                for mark in marks.get(zone, ()):
                    if mark not in passed and now - since >= mark:
                        passed.add(mark)
                        self._decide(ZoneEvent(event_id=f"{install}/{zone}/{since:.3f}/dwell/{mark:g}",
                                               install_id=install, zone=zone, kind="dwell", at=since + mark,
                                               dwell_s=mark))

    async def run_timer(self, stop: asyncio.Event, every_s: float = 0.25) -> None:
        while not stop.is_set():
            try:
                await asyncio.to_thread(self.tick, time.time())
            except Exception:  # a locked database or a bad row must not end timeouts and dwell offers for good
                log.exception("proximity tick failed; trying again")
            try:
                await asyncio.wait_for(stop.wait(), every_s)
            except TimeoutError:
                pass

    # --- shared -----------------------------------------------------------------------------------

    def _dwell_marks(self) -> dict[str, list[float]]:
        marks: dict[str, list[float]] = {}
        for campaign in self.engine.campaigns.campaigns:
            if isinstance(campaign.trigger, DwellTrigger):
                marks.setdefault(campaign.trigger.zone, []).append(campaign.trigger.min_s)
        return marks

    def _handle(self, changes: list[LocationChange], cause: str) -> None:
        for change in changes:
            install = change.device
            if change.kind == "enter":
                if change.previous is None:
                    visit = self.registry.arrived(install, change.at)
                    if visit is not None:
                        first, days = visit
                        self._decide(VisitEvent(event_id=f"{cause}/arrival/{install}", install_id=install,
                                                at=change.at, first_visit=first, days_since_last_visit=days))
                else:
                    self._decide(ZoneEvent(event_id=f"{cause}/exit/{install}/{change.previous}", install_id=install,
                                           zone=change.previous, kind="exit", at=change.at, dwell_s=change.dwell_s))
                assert change.zone is not None
                self._stays[install] = (change.zone, change.at, set())
                self._decide(ZoneEvent(event_id=f"{cause}/enter/{install}/{change.zone}", install_id=install,
                                       zone=change.zone, kind="enter", at=change.at))
            elif change.kind == "exit" and change.previous is not None:
                self._stays.pop(install, None)
                self._decide(ZoneEvent(event_id=f"{cause}/exit/{install}/{change.previous}", install_id=install,
                                       zone=change.previous, kind="exit", at=change.at, dwell_s=change.dwell_s))

    def _decide(self, event: ZoneEvent | VisitEvent) -> None:
        if not self.registry.consented(event.install_id):
            self._stays.pop(event.install_id, None)  # withdrawn mid-visit: forget it, decide nothing about it
            return
        for decision in self.engine.handle(event):
            if decision.outcome == "sent" and decision.offer is not None:
                self._push(decision)

    def _push(self, decision: Decision) -> None:
        offer = decision.offer
        assert offer is not None
        message = {"type": "offer", "decision_id": decision.decision_id, "campaign": decision.campaign_id,
                   "title": offer.title, "body": offer.body, "url": offer.url, "code": offer.code,
                   "data": offer.data, "at": decision.at}
        via = []
        if self.hub.deliver(decision.install_id, message):
            via.append("live")
        else:
            target = self.registry.push_target(decision.install_id)
            if target is not None and self.background is not None:
                self.background(decision.install_id, target, message)
                via.append(target["platform"])
        self.ledger.delivered(decision.decision_id, via)
        if not via:
            log.info("offer %s for an install with no open channel and no push target", decision.decision_id[:8])
