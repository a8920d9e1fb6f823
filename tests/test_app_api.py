"""The app's API over a real HTTP server: consent required, tokens checked, SSE fallback, redemption, the ledger."""

from __future__ import annotations

import base64
import threading
import time

import httpx
import pytest
import uvicorn
from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.asymmetric.x25519 import (
    X25519PrivateKey,
    X25519PublicKey,
)
from cryptography.hazmat.primitives.kdf.hkdf import HKDF
from fastapi import FastAPI

from edge.radio.eid import ephemeral_id
from gateway.app_api import Redemption, app_router
from gateway.broker import free_port
from gateway.campaigns import CampaignsFile
from gateway.eid_resolver import EidResolver
from gateway.installs import InstallRegistry
from gateway.offer_ledger import SqliteLedger
from gateway.offers import MemoryLedger, OfferEngine, ZoneEvent
from gateway.push_hub import PushHub
from gateway.roles import ApiTokens, Authenticator
from tests.conftest import wait_for


@pytest.fixture
def api(tmp_path):
    registry = InstallRegistry(tmp_path / "gw.db", EidResolver())
    hub = PushHub()
    redeemed: dict[str, float] = {}

    def redeem(install_id: str, decision_id: str) -> Redemption | None:
        if decision_id != "d-1":
            return None
        redeemed.setdefault(decision_id, 1.0)
        return Redemption(decision_id=decision_id, redeemed_at=redeemed[decision_id])

    app = FastAPI()
    app.include_router(app_router(registry, hub, redeem))
    tokens = ApiTokens(tmp_path / "gw.db")
    app.state.auth = Authenticator(tokens, registry)
    port = free_port()
    server = uvicorn.Server(uvicorn.Config(app, host="127.0.0.1", port=port, log_level="warning"))
    thread = threading.Thread(target=server.run, daemon=True)
    thread.start()
    wait_for(lambda: server.started, 10, "the API server")
    yield f"http://127.0.0.1:{port}", registry, hub
    server.should_exit = True
    thread.join(10)
    tokens.close()


def test_registration_needs_explicit_consent(api):
    url, _, _ = api
    for body in ({}, {"consent": False}, {"consent": "yes"}):
        response = httpx.post(f"{url}/api/app/installs", json=body)
        assert response.status_code == 422 and "consent" in response.text
    response = httpx.post(f"{url}/api/app/installs", json={"consent": True, "segments": ["bad segment!"]})
    assert response.status_code == 422 and "segments" in response.text


def test_wrong_or_missing_tokens_are_refused_with_a_reason(api):
    url, _, _ = api
    assert httpx.delete(f"{url}/api/app/installs/me").status_code == 401
    response = httpx.delete(f"{url}/api/app/installs/me", headers={"Authorization": "Bearer nope"})
    assert response.status_code == 401 and "unknown token" in response.text


def test_the_identity_key_can_be_agreed_by_x25519_and_never_travels(api):
    url, registry, _ = api
    app_key = X25519PrivateKey.generate()
    public = app_key.public_key().public_bytes_raw()
    body = httpx.post(f"{url}/api/app/installs", json={"consent": True,
                                                       "x25519_public_key": base64.b64encode(public).decode()}).json()
    assert body["identity_key"] is None
    resolver_public = base64.b64decode(body["resolver_public_key"])
    shared = app_key.exchange(X25519PublicKey.from_public_bytes(resolver_public))
    key = HKDF(hashes.SHA256(), 32, salt=resolver_public + public, info=b"").derive(shared)[:16]
    now = time.time()
    assert registry.resolve(ephemeral_id(key, 10, int(now)), now) == body["install_id"]


def test_offers_arrive_over_server_sent_events_and_withdrawal_ends_the_stream(api):
    url, registry, hub = api
    reg = httpx.post(f"{url}/api/app/installs", json={"consent": True}).json()
    headers = {"Authorization": f"Bearer {reg['token']}"}
    lines: list[str] = []

    def listen() -> None:
        with httpx.stream("GET", f"{url}/api/app/stream", headers=headers, timeout=20) as response:
            assert response.headers["content-type"].startswith("text/event-stream")
            for line in response.iter_lines():
                lines.append(line)

    thread = threading.Thread(target=listen, daemon=True)
    thread.start()
    wait_for(lambda: hub.connected(reg["install_id"]), 10, "the SSE client")
    assert hub.deliver(reg["install_id"], {"type": "offer", "decision_id": "d-1", "title": "Shoes"})
    wait_for(lambda: any(line.startswith("data:") for line in lines), 10, "the offer event")
    assert "event: offer" in lines and "id: d-1" in lines
    assert httpx.post(f"{url}/api/app/offers/d-1/redeem", headers=headers).json()["decision_id"] == "d-1"
    assert httpx.post(f"{url}/api/app/offers/d-2/redeem", headers=headers).status_code == 404
    assert httpx.delete(f"{url}/api/app/installs/me", headers=headers).status_code == 204
    thread.join(10)
    assert not thread.is_alive()  # the stream ended when consent was withdrawn
    assert not registry.consented(reg["install_id"])
    assert httpx.post(f"{url}/api/app/offers/d-1/redeem", headers=headers).status_code == 401


def test_the_sqlite_ledger_decides_exactly_as_the_reference_ledger(tmp_path):
    from pathlib import Path

    from gateway.campaigns import load_campaigns

    campaigns: CampaignsFile = load_campaigns(Path(__file__).parents[1] / "config" / "campaigns.example.yaml")

    class Everyone:
        def consented(self, install_id: str) -> bool:
            return True

        def segments(self, install_id: str) -> set[str]:
            return {"loyalty"}

    events = []
    at = 1_749_045_600.0  # a Wednesday, 14:00 in Berlin: inside every example schedule
    for n in range(40):
        install = f"i{n % 3}"
        events += [ZoneEvent(event_id=f"e{n}a", install_id=install, zone="shoes", kind="enter", at=at),
                   ZoneEvent(event_id=f"e{n}b", install_id=install, zone="shoes", kind="dwell", at=at + 25, dwell_s=25),
                   ZoneEvent(event_id=f"e{n}c", install_id=install, zone="shoes", kind="exit", at=at + 40, dwell_s=40)]
        at += 3600 * 5
    events += events[:9]  # redelivered
    results = []
    for ledger in (MemoryLedger(), SqliteLedger(tmp_path / "ledger.db")):
        engine = OfferEngine(campaigns, Everyone(), ledger)
        results.append([(d.decision_id, d.outcome, str(d.reason)) for e in events for d in engine.handle(e)])
    assert results[0] == results[1]
    assert sum(1 for _, outcome, _ in results[0] if outcome == "sent") >= 3
