"""Hourly aggregates and visits of a simulated store day against the simulator's ground truth.

The event-level simulator plays a Wednesday of the example store (09:00-21:00 local, the last hour
after closing so every shopper has left) as its nodes would report it: camera counts every 10 s,
presence enter / dwell (every 60 s, the edge's default) / exit per phone and zone stay. Each event
goes through the gateway's real ingest path (topic triage, contract validation, EventStore) into
a SQLite file; no broker, for speed. Then `refresh` computes the hours and a real uvicorn serves
them. Tolerances, as measured (seed 5: 912 entries, 853 phone walk-ins, 2,058 zone stays):

- camera: entries, exits and peak occupancy per hour exact; mean occupancy within 0.01 (rounding).
- zones: visits per zone and hour exact; mean dwell within 0.1 s (rounding); camera people exact.
- app phones (IDs resolved with the installs' keys, as the gateway does for opted-in installs):
  visits exact in number, time in store within 1 s.
- all phones: 1,069 walk-in visits for 853 phones (+25 %, bound 1.0-1.35): a phone's BLE address
  rotates every 15 min, so one visit can show up as two pseudonyms.
- walk-bys: 0, the truth has 2,282: the event-level simulator emits no presence for passers-by, so
  capture rate is checked in test_fusion_visits (rules) and the report (signal-level run), not here.
"""

from __future__ import annotations

import csv
import datetime as dt
import io
import threading
from collections import Counter, defaultdict
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx
import numpy as np
import pytest
import uvicorn
from fastapi import FastAPI

from edge.mqtt import Inbound
from edge.radio.eid import ephemeral_id
from firmware_sim.eventsim import EventSimSettings, build_replicas, merged
from firmware_sim.plan import load_plan
from firmware_sim.truth import Truth, write_truth
from gateway.aggregates import AggregateSettings, hour_of, load_visits, refresh
from gateway.aggregates_api import aggregates_router
from gateway.broker import free_port
from gateway.eid_resolver import EidResolver
from gateway.ingest import triage
from gateway.installs import InstallRegistry
from gateway.node_directory import NodeDirectory
from gateway.roles import ApiTokens, Authenticator, Role
from gateway.store import Accepted, EventStore, open_db
from gateway.visits import VisitRules, resolving_app_ids

ROOT = Path(__file__).resolve().parents[1]
PLAN = ROOT / "config" / "store.example.yaml"
START = dt.datetime(2026, 11, 18, 8, tzinfo=dt.UTC).timestamp()   # a Wednesday, 09:00 local: opening
END = START + 12 * 3600
HOURS = list(range(int(START), int(END), 3600))


@dataclass
class Day:
    db_path: Path
    truth: Truth
    resolve: Any
    phone_walk_ins: list[dict[str, Any]]


def app_resolver(truth: Truth, rotation_exponent: int) -> Any:
    """The installs' lookup, as the gateway's registry does it: every ID each app advertised, from its key."""
    names: dict[str, str] = {}
    step = 2 ** rotation_exponent
    for device in truth.devices:
        if device["identity_key"]:
            key = bytes.fromhex(device["identity_key"])
            for t in range(int(truth.run["start"]) - step, int(truth.run["end"]) + step, step):
                names[ephemeral_id(key, rotation_exponent, t - device["beacon_offset"]).hex()] = device["label"]

    return resolving_app_ids(lambda eid, _at: names.get(eid.hex()))


@pytest.fixture(scope="module")
def day(tmp_path_factory: pytest.TempPathFactory) -> Day:
    plan = load_plan(PLAN)
    out = tmp_path_factory.mktemp("day")
    (replica,) = build_replicas(plan, len(plan.nodes), seed=5, start=START, end=END,
                                settings=EventSimSettings(dwell_every_s=60.0))
    store = EventStore(out / "gateway.db")
    nodes = {n.node_id: n.zone for n in plan.nodes}
    NodeDirectory(out / "gateway.db", nodes.items()).close()
    batch: list[Accepted] = []
    for _, rep, row in merged([replica], START, END):
        name, payload = rep.render(row)
        accepted = triage(Inbound(name, payload, 1, 0, False), plan.store_id, set(nodes), 65536)
        assert isinstance(accepted, Accepted), accepted
        batch.append(accepted)
        if len(batch) == 2000:
            store.write(batch, [], [])
            batch = []
    store.write(batch, [], [])
    write_truth(out / "truth.jsonl", {"store_id": plan.store_id, "seed": 5, "start": START, "end": END},
                replica.visitors, replica.phones)
    truth = Truth.load(out / "truth.jsonl")
    resolve = app_resolver(truth, plan.phones.eid_rotation_exponent)
    assert refresh(store.db, plan.store_id, START, END, resolve=resolve).hours == 12
    store.close()
    phones = {d["visitor_id"] for d in truth.devices if d["visitor_id"] is not None}
    with_phone = [v for v in truth.walk_ins if v["visitor_id"] in phones and v["stays"]]
    return Day(out / "gateway.db", truth, resolve, with_phone)


def query(day: Day, sql: str) -> list[dict[str, Any]]:
    db = open_db(day.db_path, readonly=True)
    try:
        return list(db.query(sql))
    finally:
        db.conn.close()


def test_camera_footfall_per_hour_is_the_truth(day: Day) -> None:
    rows = {r["hour_start"]: r for r in query(day, "SELECT * FROM hourly_footfall")}
    assert sorted(rows) == HOURS
    ins, outs = day.truth.crossings()
    for h in HOURS:
        row = rows[h]
        assert row["entries"] == ((ins >= h) & (ins < h + 3600)).sum(), h
        assert row["exits"] == ((outs >= h) & (outs < h + 3600)).sum(), h
        when = np.arange(max(h, START + 10), h + 3600, 10.0)   # the camera's report times in the hour
        occupancy = day.truth.occupancy(when)
        assert row["camera_reports"] == len(when)
        assert row["peak_occupancy"] == occupancy.max()
        assert row["mean_occupancy"] == pytest.approx(occupancy.mean(), abs=0.01)
    assert sum(r["entries"] for r in rows.values()) == len(ins) > 800


def test_zone_visits_dwell_and_people_per_hour_agree_with_the_truth(day: Day) -> None:
    stays: dict[tuple[str, int], list[float]] = defaultdict(list)
    for v in day.phone_walk_ins:
        for s in v["stays"]:
            stays[(s["zone"], hour_of(s["enter"]))].append(s["dwell_s"])
    rows = {(r["zone"], r["hour_start"]): r for r in query(day, "SELECT * FROM hourly_zone")}
    assert {k for k, r in rows.items() if r["visits"]} == set(stays)
    for key, dwell in stays.items():
        assert rows[key]["visits"] == len(dwell), key
        assert rows[key]["dwell_mean"] == pytest.approx(np.mean(dwell), abs=0.1), key
        assert rows[key]["dwell_p50"] == pytest.approx(np.median(dwell), abs=0.1), key
    for (zone, h), row in rows.items():
        if zone in ("entrance", "apparel", "tills"):   # the zones the two cameras see
            when = np.arange(max(h, START + 10), h + 3600, 10.0)
            assert row["people_mean"] == pytest.approx(day.truth.in_zone(zone, when).mean(), abs=0.01), (zone, h)
        else:
            assert row["people_mean"] is None


def test_visits_agree_with_the_truth_where_identities_allow(day: Day) -> None:
    db = open_db(day.db_path, readonly=True)
    try:
        visits = load_visits(db, START, END, resolve=day.resolve)
    finally:
        db.conn.close()
    walk_ins = [v for v in visits if v.walk_in]
    assert len(walk_ins) == len(visits), "no passer-by presence at event level, and no shopper taken for one"
    apps = {v.device: v for v in walk_ins if v.device.startswith("visitor-")}
    true_apps = {f"visitor-{v['visitor_id']}": v for v in day.phone_walk_ins if v["has_app"]}
    assert apps.keys() == true_apps.keys() and len(apps) > 100
    for label, visit in apps.items():
        truth = true_apps[label]
        assert visit.arrival == pytest.approx(truth["stays"][0]["enter"], abs=1)
        assert visit.departure == pytest.approx(truth["stays"][-1]["exit"], abs=1)
        assert [s.zone for s in visit.zones] == [s["zone"] for s in truth["stays"]]
    ratio = len(walk_ins) / len(day.phone_walk_ins)
    assert 1.0 <= ratio <= 1.35, f"{len(walk_ins)} visits for {len(day.phone_walk_ins)} phones"
    hourly = query(day, "SELECT sum(walk_ins) AS ins, sum(walk_bys) AS bys FROM hourly_footfall")[0]
    assert (hourly["ins"], hourly["bys"]) == (len(walk_ins), 0)
    by_hour = Counter(hour_of(v["stays"][0]["enter"]) for v in day.phone_walk_ins)
    devices = {r["hour_start"]: r["distinct_devices"] for r in query(day, "SELECT * FROM hourly_footfall")}
    assert all(devices[h] >= n for h, n in by_hour.items()), "every phone that arrived in an hour was there"


def test_refreshing_an_hour_again_replaces_it(day: Day) -> None:
    db = open_db(day.db_path)
    try:
        before = list(db.query("SELECT * FROM hourly_footfall ORDER BY hour_start"))
        h = HOURS[5]
        strict = AggregateSettings(visits=VisitRules(walk_by_max_s=1e6))   # every entrance-only visit a walk-by
        assert refresh(db, "demo-store", h, h + 3600, strict, resolve=day.resolve).hours == 1
        changed = next(db.query("SELECT * FROM hourly_footfall WHERE hour_start = ?", [h]))
        assert changed["walk_bys"] > 0 and changed["walk_ins"] + changed["walk_bys"] == before[5]["walk_ins"]
        assert refresh(db, "demo-store", START, END, resolve=day.resolve).hours == 12
        assert list(db.query("SELECT * FROM hourly_footfall ORDER BY hour_start")) == before
        assert refresh(db, "demo-store", END + 86400, END + 90000).hours == 0, "no data, no rows"
    finally:
        db.conn.close()


@pytest.fixture(scope="module")
def api(day: Day, tmp_path_factory: pytest.TempPathFactory) -> Iterator[httpx.Client]:
    """A client of the served router, sending a marketer's API token (credentials kept apart from the day)."""
    app = FastAPI()
    app.include_router(aggregates_router(day.db_path, resolve=day.resolve))
    auth_db = tmp_path_factory.mktemp("auth") / "auth.db"
    tokens, registry = ApiTokens(auth_db), InstallRegistry(auth_db, EidResolver())
    app.state.auth = Authenticator(tokens, registry)
    marketer = tokens.create(Role.MARKETER, "test-marketer")
    port = free_port()
    server = uvicorn.Server(uvicorn.Config(app, host="127.0.0.1", port=port, log_level="warning", lifespan="off"))
    thread = threading.Thread(target=server.run, name="aggregates-api", daemon=True)
    thread.start()
    deadline = dt.datetime.now() + dt.timedelta(seconds=10)
    while not server.started:
        assert thread.is_alive() and dt.datetime.now() < deadline, "uvicorn did not start"
        threading.Event().wait(0.02)
    with httpx.Client(base_url=f"http://127.0.0.1:{port}", headers={"Authorization": f"Bearer {marketer}"},
                      timeout=10) as client:
        yield client
    server.should_exit = True
    thread.join(10)
    tokens.close()
    registry.close()


def as_csv_text(value: Any) -> str:
    return "" if value is None else str(value)


@pytest.mark.parametrize(("path", "params"), [
    ("/api/footfall/hourly", {}),
    ("/api/zones/hourly", {"zone": "apparel", "since": "2026-11-18T10:00:00Z", "until": "2026-11-18T15:00:00Z"}),
])
def test_the_csv_export_is_the_json_as_a_table(api: httpx.Client, path: str, params: dict[str, str]) -> None:
    as_json = api.get(path, params=params)
    as_csv = api.get(path, params={**params, "format": "csv"})
    assert as_json.status_code == as_csv.status_code == 200
    assert as_csv.headers["content-type"].startswith("text/csv")
    reader = csv.DictReader(io.StringIO(as_csv.text))
    table = list(reader)
    rows = as_json.json()
    assert rows and reader.fieldnames == list(rows[0])
    assert table == [{k: as_csv_text(v) for k, v in row.items()} for row in rows]
    if params:
        assert {r["zone"] for r in rows} == {"apparel"} and len(rows) == 5
        assert rows[0]["hour_start"] == "2026-11-18T10:00:00Z"


def test_the_api_serves_visits(api: httpx.Client, day: Day) -> None:
    visits = api.get("/api/visits", params={"since": "2026-11-18T08:00:00Z", "until": "2026-11-18T20:00:00Z",
                                            "limit": 10000}).json()
    assert len(visits) == 1069 and visits == sorted(visits, key=lambda v: v["arrival"])
    first = visits[0]
    assert first["walk_in"] and first["zones"][0]["zone"] and first["duration_s"] > 0
    assert len(api.get("/api/visits", params={"since": "2026-11-18T08:00:00Z", "until": "2026-11-18T20:00:00Z",
                                              "limit": 3}).json()) == 3


@pytest.mark.parametrize(("path", "params", "says"), [
    ("/api/footfall/hourly", {"since": "2026-11-18T12:00:00Z", "until": "2026-11-18T11:00:00Z"}, "later than since"),
    ("/api/footfall/hourly", {"format": "xml"}, "'json' or 'csv'"),
    ("/api/zones/hourly", {"since": "yesterday"}, "datetime"),
    ("/api/zones/hourly", {"since": "2026-11-18T12:00:00"}, "timezone"),
    ("/api/visits", {"since": "2026-11-01T00:00:00Z", "until": "2026-11-18T00:00:00Z"}, "at most 7 days"),
    ("/api/visits", {"limit": 0}, "greater than or equal to 1"),
])
def test_bad_parameters_get_a_422_naming_the_problem(api: httpx.Client, path: str, params: dict[str, Any],
                                                     says: str) -> None:
    response = api.get(path, params=params)
    assert response.status_code == 422
    assert says in response.text
