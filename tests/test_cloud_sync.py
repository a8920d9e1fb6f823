"""cloud_sync: the store's uploader against a real cloud process, on SQLite and on PostgreSQL.

The main scenario kills things: the cloud is down (SIGKILL) while the uploader retries; then a
cloud that applies the first batch but never answers, and the uploader is SIGKILLed while it
waits; then both restart. Afterwards every aggregate is in the cloud exactly once, every batch id
once, no cell below k and no install identity in any body the cloud received (the cloud keeps each
batch's signed bytes). Other tests: bad requests and bad exposure rows get clear errors while good
rows are kept; k-suppression and the outbox's own rules as units.

PostgreSQL: a fresh database per test on the server at 127.0.0.1:5432 (dropped afterwards). The
PostgreSQL cases are skipped when no server answers, except under CI=1, where that is a failure.
"""

from __future__ import annotations

import gzip
import json
import os
import secrets
import signal
import sqlite3
import subprocess
import sys
import textwrap
import time
from collections import Counter
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest
import yaml

from cloud_sync.cloud.db import CloudDB
from cloud_sync.uploader.anonymity import (
    campaign_pseudonym,
    suppress_footfall,
    suppress_zone,
)
from cloud_sync.uploader.outbox import Item, UploadOutbox
from cloud_sync.uploader.signing import encode_body, headers, keygen, public_key_b64
from edge.radio.eid import ephemeral_id
from gateway.aggregates import FOOTFALL, ZONES, ensure_aggregate_schema, hour_of
from gateway.broker import free_port
from gateway.eid_resolver import EidResolver
from gateway.installs import InstallRegistry
from gateway.store import ensure_schema, open_db

from .conftest import wait_for

ROOT = Path(__file__).resolve().parents[1]
STORE = "store-7"
CAMPAIGN = "spring-sale"
K = 5
HOURS = 30
PG_HOST, PG_PORT = "127.0.0.1", 5432


# --- databases --------------------------------------------------------------------------------------


def _pg_admin_url() -> str | None:
    import psycopg

    for user in dict.fromkeys([os.environ.get("PGUSER"), "root", "postgres"]):
        if not user:
            continue
        url = f"postgresql://{user}@{PG_HOST}:{PG_PORT}/postgres"
        try:
            psycopg.connect(url, connect_timeout=3).close()
            return url
        except psycopg.Error:
            continue
    return None


@pytest.fixture(params=["sqlite", "postgresql"])
def db_url(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[str]:
    if request.param == "sqlite":
        yield f"sqlite:///{tmp_path / 'cloud.db'}"
        return
    try:
        import psycopg
    except ImportError:
        pytest.fail("psycopg is missing: pip install 'psycopg[binary]'")
    admin = _pg_admin_url()
    if admin is None:
        message = f"no PostgreSQL server answers at {PG_HOST}:{PG_PORT}"
        if os.environ.get("CI") in ("1", "true"):
            pytest.fail(message + " (CI=1: .ci/run must start one)")
        pytest.skip(message)
    name = f"omnisense_test_{secrets.token_hex(6)}"
    with psycopg.connect(admin, autocommit=True) as conn:
        conn.execute(f"CREATE DATABASE {name}")
    try:
        yield admin.rsplit("/", 1)[0] + "/" + name
    finally:
        with psycopg.connect(admin, autocommit=True) as conn:
            conn.execute(f"DROP DATABASE IF EXISTS {name} WITH (FORCE)")


# --- processes ----------------------------------------------------------------------------------------

CLOUD_SCRIPT = textwrap.dedent("""
    import asyncio, pathlib, sys
    import uvicorn
    from cloud_sync.cloud.api import create_cloud_app

    db_url, port, hold = sys.argv[1], int(sys.argv[2]), sys.argv[3]
    max_body = int(sys.argv[4]) if len(sys.argv) > 4 else 16 * 1024 * 1024
    app = create_cloud_app(db_url, max_body_bytes=max_body)
    if hold:
        # Test hook: the first batch is applied, then its answer never comes.
        marker = pathlib.Path(hold)

        @app.middleware("http")
        async def hold_first_batch(request, call_next):
            response = await call_next(request)
            if request.url.path.endswith("/batches") and not marker.exists():
                marker.write_text(request.headers.get("x-omnisense-batch", ""))
                await asyncio.sleep(3600)
            return response

    uvicorn.run(app, host="127.0.0.1", port=port, log_level="warning")
""")

UPLOADER_SCRIPT = textwrap.dedent("""
    import asyncio, logging, pathlib, signal, sys
    from cloud_sync.uploader.config import load_uploader_settings
    from cloud_sync.uploader.uploader import Uploader

    logging.basicConfig(level=logging.INFO, format="%(name)s: %(message)s")
    uploader = Uploader(load_uploader_settings(pathlib.Path(sys.argv[1])))

    async def main():
        stop = asyncio.Event()
        asyncio.get_running_loop().add_signal_handler(signal.SIGTERM, stop.set)
        await uploader.run(stop)

    asyncio.run(main())
""")


class Child:
    def __init__(self, args: list[str], log: Path) -> None:
        self.log = log
        self._out = open(log, "ab")  # noqa: SIM115 - closed in stop()
        self.proc = subprocess.Popen([sys.executable, *args], cwd=ROOT, stdout=self._out, stderr=subprocess.STDOUT,
                                     env={**os.environ, "PYTHONPATH": str(ROOT)})

    def kill(self) -> None:
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGKILL)
        self.proc.wait(10)
        self._out.close()

    def stop(self) -> None:
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
            try:
                self.proc.wait(10)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait(10)
        self._out.close()

    def output(self) -> str:
        return self.log.read_text(errors="replace")


class Cloud(Child):
    def __init__(self, db_url: str, port: int, workdir: Path, hold_marker: Path | None = None,
                 max_body_bytes: int = 16 * 1024 * 1024) -> None:
        script = workdir / "cloud_server.py"
        script.write_text(CLOUD_SCRIPT)
        super().__init__([str(script), db_url, str(port), str(hold_marker or ""), str(max_body_bytes)],
                         workdir / "cloud.log")
        self.url = f"http://127.0.0.1:{port}"
        wait_for(self._up, 20, f"the cloud on {self.url}\n{self.output()}", 0.1)

    def _up(self) -> bool:
        if self.proc.poll() is not None:
            raise AssertionError(f"the cloud exited with {self.proc.returncode}:\n{self.output()}")
        try:
            return httpx.get(self.url + "/healthz", timeout=1).status_code == 200
        except httpx.HTTPError:
            return False


def start_uploader(config: Path, workdir: Path) -> Child:
    script = workdir / "uploader.py"
    script.write_text(UPLOADER_SCRIPT)
    return Child([str(script), str(config)], workdir / "uploader.log")


@pytest.fixture
def children() -> Iterator[list[Child]]:
    started: list[Child] = []
    yield started
    for child in started:
        if child.proc.poll() is None:
            child.kill()


# --- the store: a gateway database with hours, an app install and its visits ------------------------------


def build_gateway(path: Path, now: float) -> dict[str, Any]:
    """HOURS finished hours of aggregates, one of them (and one zone cell) below k, and one app install
    with one walk-in visit per hour."""
    db = open_db(path)
    ensure_schema(db)
    ensure_aggregate_schema(db)
    first = hour_of(now) - (HOURS + 2) * 3600
    hours = [first + i * 3600 for i in range(HOURS)]
    small_hour, small_zone_hour = hours[7], hours[11]
    footfall, zones = [], []
    for i, h in enumerate(hours):
        visitors = 3 if h == small_hour else 20 + i
        footfall.append({"store_id": STORE, "hour_start": h, "entries": visitors, "exits": visitors - 1,
                         "peak_occupancy": 9, "mean_occupancy": 4.5, "camera_reports": 360,
                         "distinct_devices": 3 if h == small_hour else 12,
                         "walk_ins": 3 if h == small_hour else 10,
                         "walk_bys": 2, "capture_rate": 0.8, "dwell_mean": 300.0, "dwell_p25": 100.0,
                         "dwell_p50": 250.0, "dwell_p75": 400.0, "dwell_p90": 600.0})
        devices = 3 if h == small_hour else 8
        zones.append({"store_id": STORE, "zone": "a", "hour_start": h, "people_mean": 3.0, "people_peak": devices,
                      "distinct_devices": devices, "visits": devices, "dwell_mean": 120.0, "dwell_p25": 60.0,
                      "dwell_p50": 100.0, "dwell_p75": 150.0, "dwell_p90": 200.0})
        if h == small_zone_hour:
            zones.append({"store_id": STORE, "zone": "b", "hour_start": h, "people_mean": 1.0, "people_peak": 3,
                          "distinct_devices": 3, "visits": 3, "dwell_mean": 77.7, "dwell_p25": 1.0,
                          "dwell_p50": 2.0, "dwell_p75": 3.0, "dwell_p90": 4.0})
    db[FOOTFALL].insert_all(footfall)
    db[ZONES].insert_all(zones)
    db.conn.close()

    registry = InstallRegistry(path, EidResolver())
    install = registry.register(["loyal"])
    identity_key = install.identity_key
    assert identity_key is not None
    registry.db.conn.close()
    db = open_db(path)
    events, seq = [], 0
    for h in hours:
        for action, dt_s in (("enter", 0), ("dwell", 60), ("dwell", 120), ("exit", 180)):
            ts = h + 600 + dt_s
            eid = ephemeral_id(identity_key, install.rotation_exponent, int(ts))
            seq += 1
            events.append({"node_id": "n1", "boot_id": "b1", "seq": seq, "kind": "presence", "ts": ts,
                           "received_at": ts, "payload": json.dumps(
                               {"device": eid.hex(), "zone": "a", "action": action, "dwell_s": float(dt_s),
                                "rssi": -60.0, "source": "app"})})
    db["events"].insert_all(events)
    token_hash = db.execute("SELECT token_hash FROM installs").fetchone()[0]
    db.conn.close()
    return {"hours": hours, "small_hour": small_hour, "small_zone_hour": small_zone_hour,
            "install_id": install.install_id, "token": install.token, "token_hash": token_hash,
            "identity_key": identity_key.hex()}


def outbox_state(path: Path) -> dict[str, Any]:
    if not path.exists():
        return {}
    conn = sqlite3.connect(f"file:{path}?mode=ro", uri=True)
    try:
        conn.row_factory = sqlite3.Row
        tables = {r[0] for r in conn.execute("SELECT name FROM sqlite_master WHERE type = 'table'")}
        if not {"batches", "items", "meta"} <= tables:
            return {}  # the uploader is still creating its tables
        batches = [dict(r) for r in conn.execute("SELECT batch_id, state, attempts, last_error FROM batches")]
        items = conn.execute("SELECT count(*) FROM items").fetchone()[0]
        watermark = conn.execute("SELECT value FROM meta WHERE name = 'watermark'").fetchone()
    finally:
        conn.close()
    return {"batches": batches, "items": items, "watermark": watermark[0] if watermark else None}


def bodies(db: CloudDB) -> list[dict[str, Any]]:
    return [json.loads(gzip.decompress(body)) for _, _, body in db.batch_bodies()]


# --- the scenario -------------------------------------------------------------------------------------


def test_outage_and_crash_mid_batch_lose_nothing_and_send_nothing_twice(
        db_url: str, tmp_path: Path, children: list[Child]) -> None:
    now = time.time()
    store = build_gateway(tmp_path / "gateway.db", now)
    key_file = tmp_path / "store_key.pem"
    key = keygen(key_file)
    secret_file = tmp_path / "pseudonym.secret"
    secret = secrets.token_hex(32)
    secret_file.write_text(secret + "\n")  # a text line, as `openssl rand -hex 32` writes it
    port = free_port()
    outbox = tmp_path / "uploader.db"
    config = tmp_path / "uploader.yaml"
    config.write_text(yaml.safe_dump({
        "store_id": STORE, "gateway_db": str(tmp_path / "gateway.db"), "outbox": str(outbox),
        "cloud_url": f"http://127.0.0.1:{port}", "key_file": str(key_file), "k": K,
        "pseudonym_secret_file": str(secret_file), "campaigns": [CAMPAIGN], "batch_size": 16,
        "interval_s": 0.2, "settle_s": 0, "timeout_s": 60, "backoff_initial_s": 0.05, "backoff_max_s": 0.3}))

    # The cloud knows the store, then goes down hard.
    cloud = Cloud(db_url, port, tmp_path)
    children.append(cloud)
    response = httpx.put(f"{cloud.url}/v1/stores/{STORE}", json={"public_key": public_key_b64(key)})
    assert response.status_code == 201, response.text
    cloud.kill()

    # The uploader exports and retries against nothing.
    uploader = start_uploader(config, tmp_path)
    children.append(uploader)
    wait_for(lambda: any(b["attempts"] >= 3 for b in outbox_state(outbox).get("batches", [])), 20,
             "the uploader retrying while the cloud is down")
    state = outbox_state(outbox)
    assert len(state["batches"]) == 1, "one batch formed and retried, not a new one per attempt"
    assert state["batches"][0]["state"] == "pending" and "Connect" in state["batches"][0]["last_error"]

    # A cloud that applies the first batch but never answers; the uploader dies waiting.
    marker = tmp_path / "held_batch"
    cloud = Cloud(db_url, port, tmp_path, hold_marker=marker)
    children.append(cloud)
    wait_for(marker.exists, 20, "the first batch to reach the cloud")
    held = marker.read_text()
    uploader.kill()
    cloud.kill()
    state = outbox_state(outbox)
    assert {b["batch_id"]: b["state"] for b in state["batches"]}[held] == "pending", "not acknowledged: it was sent"

    # Both come back; the same batch id is resent, recognised, and the rest follows.
    cloud = Cloud(db_url, port, tmp_path)
    children.append(cloud)
    uploader = start_uploader(config, tmp_path)
    children.append(uploader)
    wait_for(lambda: (s := outbox_state(outbox)) and s["items"] == 0
             and all(b["state"] == "acked" for b in s["batches"]), 30,
             "every batch acknowledged")
    uploader.stop()
    log = uploader.output()
    cloud.stop()

    db = CloudDB(db_url)
    sent = bodies(db)
    acked = {b["batch_id"] for b in outbox_state(outbox)["batches"]}
    assert {b["batch_id"] for b in sent} == acked
    assert len(sent) == len(acked), "each batch stored once"
    assert held in acked

    # Every hour above k exactly once, in the cloud and across everything sent.
    expected = [h for h in store["hours"] if h != store["small_hour"]]
    rows = db.footfall(STORE)
    assert [r["hour_start"] for r in rows] == expected
    assert rows[0]["entries"] == 20 and rows[-1]["entries"] == 20 + HOURS - 1
    sent_hours = Counter(r["hour_start"] for b in sent for r in b["footfall_hours"])
    assert sent_hours == Counter(expected), "no hour sent in two batches"
    zone_rows = db.zone_hours(STORE)
    assert [(r["zone"], r["hour_start"]) for r in zone_rows] == [("a", h) for h in expected]
    assert Counter((r["zone"], r["hour_start"]) for b in sent for r in b["zone_hours"]) == Counter(
        ("a", h) for h in expected)

    # App visits: one per hour, under the campaign pseudonym only.
    pseudonym = campaign_pseudonym(secret.encode(), CAMPAIGN, store["install_id"])
    visits = db.app_visits(CAMPAIGN)
    assert [v["arrival"] for v in visits] == [h + 600 for h in store["hours"]]
    assert {v["pseudonym"] for v in visits} == {pseudonym}
    assert all(170 <= v["dwell_s"] <= 190 for v in visits)

    # Privacy: nothing below k and no install identity in any byte the cloud received.
    everything = json.dumps(sent)
    assert all(r["hour_start"] != store["small_hour"] for b in sent for r in b["footfall_hours"] + b["zone_hours"])
    assert str(store["small_hour"]) not in everything    # the app visit in that hour arrived at +600 s
    assert all(r["zone"] != "b" for b in sent for r in b["zone_hours"])
    assert "77.7" not in everything
    for secret in (store["install_id"], store["token"], store["token_hash"], store["identity_key"]):
        assert secret not in everything
        assert secret.encode() not in b"".join(body for _, _, body in db.batch_bodies())
    assert "Traceback" not in log, log


# --- bad requests ---------------------------------------------------------------------------------------


@pytest.fixture
def cloud(db_url: str, tmp_path: Path, children: list[Child]) -> Cloud:
    server = Cloud(db_url, free_port(), tmp_path)
    children.append(server)
    return server


def _batch(store_id: str = STORE, batch_id: str = "batch-0001", **sections: list[dict[str, Any]]) -> dict[str, Any]:
    return {"schema": "omnisense.cloud.batch/v1", "store_id": store_id, "batch_id": batch_id, "created_at": 1.0,
            "footfall_hours": [], "zone_hours": [], "app_visits": [], **sections}


def test_bad_batches_get_clear_errors_and_change_nothing(cloud: Cloud, db_url: str, tmp_path: Path) -> None:
    key = keygen(tmp_path / "k.pem")
    other = keygen(tmp_path / "other.pem")
    url = f"{cloud.url}/v1/stores/{STORE}/batches"

    def post(body: bytes, batch_id: str = "batch-0001", signer: Any = key, store: str = STORE,
             path_store: str = STORE) -> httpx.Response:
        return httpx.post(f"{cloud.url}/v1/stores/{path_store}/batches", content=body,
                          headers=headers(signer, store, batch_id, body))

    good = encode_body(_batch(footfall_hours=[{"hour_start": 7200, "entries": 9}]))
    r = post(good)
    assert r.status_code == 401 and "not registered" in r.json()["detail"]
    r = httpx.put(f"{cloud.url}/v1/stores/{STORE}", json={"public_key": "bm90IGEga2V5"})
    assert r.status_code == 422 and "Ed25519" in r.text
    assert httpx.put(f"{cloud.url}/v1/stores/{STORE}", json={"public_key": public_key_b64(key)}).status_code == 201

    r = post(good, signer=other)
    assert r.status_code == 401 and "signature does not match" in r.json()["detail"]
    r = httpx.post(url, content=good, headers={**headers(key, STORE, "batch-0001", good),
                                               "X-Omnisense-Signature": "!!"})
    assert r.status_code == 401 and "not base64" in r.json()["detail"]
    r = post(good, store="store-8")
    assert r.status_code == 400 and "must name the store in the URL" in r.json()["detail"]
    r = post(b"{not gzip")
    assert r.status_code == 400 and "not gzip" in r.json()["detail"]
    r = post(gzip.compress(b"{not json"))
    assert r.status_code == 400 and "not JSON" in r.json()["detail"]
    r = post(encode_body(_batch(footfall_hours=[{"hour_start": 7201, "entries": -1}])))
    detail = r.json()["detail"]
    assert r.status_code == 422 and "footfall_hours.0.hour_start" in detail and "footfall_hours.0.entries" in detail
    r = post(encode_body(_batch(footfall_hours=[{"hour_start": 7200, "install_id": "x"}])))
    assert r.status_code == 422 and "footfall_hours.0.install_id: Extra inputs are not permitted" in r.json()["detail"]
    r = post(encode_body(_batch(store_id="store-8")))
    assert r.status_code == 422 and "not the URL's store" in r.json()["detail"]
    r = post(encode_body(_batch(batch_id="batch-0002")))
    assert r.status_code == 422 and "X-Omnisense-Batch" in r.json()["detail"]
    r = post(good, path_store="store-8", store="store-8")
    assert r.status_code == 401 and "not registered" in r.json()["detail"]
    db = CloudDB(db_url)
    assert db.footfall(STORE) == [] and db.batch_bodies() == []

    assert post(good).json() == {"batch_id": "batch-0001", "duplicate": False, "footfall_hours": 1,
                                 "zone_hours": 0, "app_visits": 0}
    again = encode_body(_batch(footfall_hours=[{"hour_start": 7200, "entries": 99}]))
    assert post(again).json() == {"batch_id": "batch-0001", "duplicate": True}
    assert [r["entries"] for r in db.footfall(STORE)] == [9], "a duplicate batch id is not re-applied"


def test_exposure_import_reports_each_bad_row_and_keeps_the_good(cloud: Cloud, db_url: str) -> None:
    text = ("pseudonym,campaign,time,arm\n"
            "p1,c1,2026-03-01T10:00:00+00:00,exposed\n"      # 2 good
            "p2,c1,2026-03-01T10:00:00,control\n"            # 3 no UTC offset
            "p3,c1,1772359200,maybe\n"                       # 4 bad arm
            "p4,,1772359200,control\n"                       # 5 no campaign
            "\n"
            "p5,c1,1772359200\n"                             # 7 a field short
            "p6,c1,yesterday,exposed\n"                      # 8 bad time
            "p7,c2,1772359200, Control \n")                  # 9 good
    r = httpx.post(f"{cloud.url}/v1/exposures/csv", content=text, headers={"Content-Type": "text/csv"})
    assert r.status_code == 200, r.text
    report = r.json()
    assert report["accepted"] == 2
    reasons = {row["line"]: row["reason"] for row in report["rejected"]}
    assert sorted(reasons) == [3, 4, 5, 7, 8]
    assert "UTC offset" in reasons[3] and reasons[4].startswith("arm:") and reasons[5].startswith("campaign:")
    assert "3 fields, the header has 4" in reasons[7] and "yesterday" in reasons[8]

    rows = [{"pseudonym": "p8", "campaign": "c1", "time": 1772359300, "arm": "control"},
            {"pseudonym": "p9", "campaign": "c1", "arm": "exposed"},
            "p10",
            {"pseudonym": "p11", "campaign": "c1", "time": "2026-03-01T10:05:00Z", "arm": "exposed", "x": 1}]
    report = httpx.post(f"{cloud.url}/v1/exposures", json=rows).json()
    assert report["accepted"] == 1
    assert [(r["index"], r["reason"].split(":")[0]) for r in report["rejected"]] == [
        (1, "time"), (2, "expected an object, got str"), (3, "x")]

    # Re-importing is idempotent; the good rows are all there.
    httpx.post(f"{cloud.url}/v1/exposures/csv", content=text, headers={"Content-Type": "text/csv"})
    stored = CloudDB(db_url).exposures()
    assert [(e["pseudonym"], e["campaign"], e["arm"]) for e in stored] == [
        ("p1", "c1", "exposed"), ("p8", "c1", "control"), ("p7", "c2", "control")]

    r = httpx.post(f"{cloud.url}/v1/exposures/csv", content="who,when\nx,y\n")
    assert r.status_code == 400 and "no column pseudonym, campaign, time, arm" in r.json()["detail"]
    r = httpx.post(f"{cloud.url}/v1/exposures/csv", content=b"\xff\xfe\x00bad")
    assert r.status_code == 400 and "not UTF-8" in r.json()["detail"]
    r = httpx.post(f"{cloud.url}/v1/exposures", content="{oops")
    assert r.status_code == 400 and "not JSON" in r.json()["detail"]
    r = httpx.post(f"{cloud.url}/v1/exposures", json={"pseudonym": "p"})
    assert r.status_code == 422 and "expected a JSON list" in r.json()["detail"]


def test_a_batch_the_cloud_refuses_is_set_aside_and_the_rest_delivered(
        cloud: Cloud, tmp_path: Path) -> None:
    import asyncio

    from cloud_sync.uploader.config import UploaderSettings
    from cloud_sync.uploader.uploader import Uploader

    key = keygen(tmp_path / "k.pem")
    httpx.put(f"{cloud.url}/v1/stores/{STORE}", json={"public_key": public_key_b64(key)}).raise_for_status()
    settings = UploaderSettings(store_id=STORE, gateway_db=tmp_path / "none.db", outbox=tmp_path / "o.db",
                                cloud_url=cloud.url, key_file=tmp_path / "k.pem", batch_size=1)
    uploader = Uploader(settings)
    uploader.outbox.enqueue([Item("footfall_hour", "bad", {"hour_start": 123, "entries": 50}),
                             Item("footfall_hour", "3600", {"hour_start": 3600, "entries": 50})])

    async def drain() -> list[Any]:
        async with httpx.AsyncClient() as client:
            return [await uploader.send_next(client), await uploader.send_next(client),
                    await uploader.send_next(client)]

    first, second, third = asyncio.run(drain())
    assert first.outcome == "poison" and first.status == 422 and "hour_start" in first.detail
    assert second.outcome == "acked" and third is None
    status = uploader.outbox.status()
    assert status["poison_batches"] == 1 and status["pending_items"] == 0 and status["acked_items"] == 1
    assert "multiple of 3600" in uploader.outbox.batches("poison")[0]["last_error"]


def test_a_batch_too_large_for_the_cloud_is_halved_down_to_single_items(
        db_url: str, tmp_path: Path, children: list[Child]) -> None:
    """A cloud (behind a proxy, say) that takes at most 1,500 bytes: the uploader's batch of 61 items
    is refused with 413 and halved until the halves fit; the one item too large on its own is set
    aside with a reason naming it; every other hour reaches the cloud exactly once."""
    import asyncio

    from cloud_sync.uploader.config import UploaderSettings
    from cloud_sync.uploader.uploader import Uploader

    limit = 1500
    server = Cloud(db_url, free_port(), tmp_path, max_body_bytes=limit)
    children.append(server)
    key = keygen(tmp_path / "k.pem")
    httpx.put(f"{server.url}/v1/stores/{STORE}", json={"public_key": public_key_b64(key)}).raise_for_status()
    settings = UploaderSettings(store_id=STORE, gateway_db=tmp_path / "none.db", outbox=tmp_path / "o.db",
                                cloud_url=server.url, key_file=tmp_path / "k.pem", batch_size=100)
    uploader = Uploader(settings)
    hours = [3600 * (480_000 + h) for h in range(60)]
    items = [Item("footfall_hour", str(h), {"hour_start": h, "entries": 40 + i, "exits": 38 + i,
                                             "distinct_devices": 20 + i, "dwell_mean": 300.5 + i})
             for i, h in enumerate(hours)]
    huge = Item("footfall_hour", "huge", {"hour_start": 3600, "entries": 50, "notes": secrets.token_hex(2000)})
    uploader.outbox.enqueue(items[:30] + [huge] + items[30:])

    async def drain() -> float | None:
        async with httpx.AsyncClient(timeout=10) as client:
            return await uploader._drain(client, asyncio.Event())

    assert asyncio.run(drain()) is None  # nothing left to retry: all sent or set aside
    status = uploader.outbox.status()
    assert status["pending_batches"] == 0 and status["pending_items"] == 0
    assert status["acked_items"] == 60 and status["split_batches"] >= 6  # 61 -> 31 + 30 -> ... -> 1
    poisoned = uploader.outbox.batches("poison")
    assert len(poisoned) == 1 and poisoned[0]["items"] == 1
    reason = poisoned[0]["last_error"]
    assert "single item too large" in reason and "footfall_hour huge" in reason and "413" in reason
    split = uploader.outbox.batches("split")
    assert all("413" in b["last_error"] for b in split) and split[0]["items"] == 61

    with CloudDB(db_url) as db:
        rows = db.footfall(STORE)
        assert sorted(r["hour_start"] for r in rows) == hours  # each hour once; the huge one never
        assert {r["hour_start"]: r["entries"] for r in rows} == {h: 40 + i for i, h in enumerate(hours)}
        received = db.batch_bodies(STORE)
        ids = [b for _, b, _ in received]
        assert len(ids) == len(set(ids)) and all(len(body) <= limit for _, _, body in received)
        assert sum(len(json.loads(gzip.decompress(body))["footfall_hours"]) for _, _, body in received) == 60


@pytest.mark.parametrize("db_url", ["postgresql"], indirect=True)
def test_postgresql_connections_come_from_a_bounded_pool_that_survives_lost_connections(db_url: str) -> None:
    import threading

    import psycopg

    name = db_url.rsplit("/", 1)[1]
    admin = _pg_admin_url()
    assert admin is not None

    def backends() -> int:
        with psycopg.connect(admin, autocommit=True) as conn:
            return conn.execute("SELECT count(*) FROM pg_stat_activity WHERE datname = %s", (name,)).fetchone()[0]

    with CloudDB(db_url, pool_min_size=1, pool_max_size=3) as db:
        db.register_store(STORE, "key")
        pids: set[int] = set()
        errors: list[BaseException] = []

        def work(worker: int) -> None:
            try:
                for i in range(10):
                    hour = 3600 * (worker * 10 + i)
                    with db.connect() as conn:
                        pids.add(conn.execute("SELECT pg_backend_pid()").fetchone()[0])
                    db.apply_batch(STORE, f"batch-{worker:02d}-{i:02d}", b"body",
                                   [{"hour_start": hour, "entries": worker}], [], [])
            except BaseException as err:  # noqa: BLE001 - reported below
                errors.append(err)

        threads = [threading.Thread(target=work, args=(w,)) for w in range(8)]
        for t in threads:
            t.start()
        for t in threads:
            t.join(60)
        assert not errors, errors
        # 80 batches from 8 threads on at most 3 server connections, reused (not one per request)
        assert len(db.footfall(STORE)) == 80 and 1 <= len(pids) <= 3
        assert backends() <= 3
        # the server drops every connection (restart, idle timeout): the next requests reconnect
        with psycopg.connect(admin, autocommit=True) as conn:
            conn.execute("SELECT pg_terminate_backend(pid) FROM pg_stat_activity"
                         " WHERE datname = %s AND pid <> pg_backend_pid()", (name,))
        assert db.public_key(STORE) == "key"
        assert db.apply_batch(STORE, "batch-after", b"body", [{"hour_start": 3600 * 999}], [], []).duplicate is False
    wait_for(lambda: backends() == 0, 10, "the pool's connections to close")


# --- units ------------------------------------------------------------------------------------------------


def test_k_suppression() -> None:
    row = {"store_id": STORE, "hour_start": 0, "entries": 40, "exits": 3, "peak_occupancy": 8, "mean_occupancy": 2.0,
           "camera_reports": 360, "distinct_devices": 12, "walk_ins": 4, "walk_bys": 0, "capture_rate": 1.0,
           "dwell_mean": 100.0, "dwell_p25": 1.0, "dwell_p50": 2.0, "dwell_p75": 3.0, "dwell_p90": 4.0,
           "install_id": "never"}
    out = suppress_footfall(row, 5)
    assert out is not None and "install_id" not in out
    assert out["entries"] == 40 and out["exits"] is None and out["walk_ins"] is None and out["walk_bys"] == 0
    assert out["dwell_mean"] is None and out["capture_rate"] is None and out["peak_occupancy"] == 8
    assert suppress_footfall({**row, "entries": 4, "distinct_devices": 4}, 5) is None
    assert suppress_footfall({**row, "entries": 0, "distinct_devices": 0}, 5) is None
    zone = {"store_id": STORE, "zone": "a", "hour_start": 0, "people_mean": 1.0, "people_peak": 2,
            "distinct_devices": 6, "visits": 6, "dwell_mean": 5.0}
    out = suppress_zone(zone, 5)
    assert out is not None and out["people_peak"] is None and out["people_mean"] is None and out["dwell_mean"] == 5.0
    assert suppress_zone({**zone, "distinct_devices": 4}, 5) is None


def test_pseudonyms_are_per_campaign() -> None:
    secret = b"s" * 32
    a = campaign_pseudonym(secret, "c1", "install")
    assert a == campaign_pseudonym(secret, "c1", "install") and len(a) == 32
    assert a != campaign_pseudonym(secret, "c2", "install")
    assert campaign_pseudonym(secret, "ab", "c") != campaign_pseudonym(secret, "a", "bc")
    with pytest.raises(ValueError):
        campaign_pseudonym(b"short", "c", "i")


def test_outbox_replaces_pending_items_and_keeps_formed_batches(tmp_path: Path) -> None:
    outbox = UploadOutbox(tmp_path / "o.db")
    outbox.enqueue([Item("footfall_hour", "1", {"v": 1}), Item("footfall_hour", "2", {"v": 2})], watermark=10)
    outbox.enqueue([Item("footfall_hour", "1", {"v": 11})])
    assert outbox.pending_items() == 2 and outbox.watermark == 10

    def encode(batch_id: str, items: list[Item]) -> bytes:
        return json.dumps([batch_id, [i.payload for i in items]]).encode()

    batch = outbox.next_batch(10, encode)
    assert batch is not None and json.loads(batch.body)[1] == [{"v": 11}, {"v": 2}]
    outbox.enqueue([Item("footfall_hour", "1", {"v": 111})])     # in flight: waits for the next batch
    outbox.close()
    reopened = UploadOutbox(tmp_path / "o.db")                   # a crash: the same batch comes back
    again = reopened.next_batch(10, encode)
    assert again is not None and (again.batch_id, again.body) == (batch.batch_id, batch.body)
    reopened.acknowledge(batch.batch_id)
    last = reopened.next_batch(10, encode)
    assert last is not None and json.loads(last.body)[1] == [{"v": 111}]
    with pytest.raises(ValueError, match="unknown item kind"):
        reopened.enqueue([Item("raw_mac", "x", {})])


def test_example_configs_load() -> None:
    from cloud_sync.cloud.config import load_cloud_settings
    from cloud_sync.uploader.config import load_uploader_settings

    assert load_uploader_settings(ROOT / "config" / "uploader.example.yaml", env={}).k == 5
    assert load_cloud_settings(ROOT / "config" / "cloud.example.yaml", env={}).db_url.startswith("sqlite:///")

