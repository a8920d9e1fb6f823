"""The gateway's HTTP API (FastAPI): health, nodes, events, dead letters. OpenAPI at /docs.

Every endpoint names the roles it accepts (`gateway.roles`); only the liveness check is public.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator, Sequence
from datetime import UTC, datetime
from pathlib import Path
from typing import Annotated, Any, Literal

import sqlite_utils
from fastapi import APIRouter, Depends, FastAPI, Query, Request
from pydantic import AwareDatetime, BaseModel

from gateway.roles import Authenticator, Role, amend_openapi, document_roles, public, requires
from gateway.store import event_rows, node_rows, open_db


class Health(BaseModel):
    status: Literal["ok", "degraded"]
    mqtt_connected: bool
    ingest_backlog: int
    ingest_error: str | None


class NodeView(BaseModel):
    node_id: str
    known: bool
    zone: str | None
    state: str
    boot_id: str | None
    last_seen: datetime | None
    high_water: int
    stored: int
    duplicates: int
    dead_letters: int
    gaps: list[list[int]]
    reported_last_seq: int | None
    outbox_depth: int | None
    dropped: int | None
    config_version: int | None
    applied_config_version: int | None


class EventView(BaseModel):
    id: int
    node_id: str
    boot_id: str
    seq: int
    kind: str
    ts: datetime
    received_at: datetime
    payload: dict[str, Any]


class DeadLetterView(BaseModel):
    id: int
    received_at: datetime
    topic: str
    node_id: str | None
    code: str
    reason: str
    size: int
    payload: str


class Stats(BaseModel):
    events: int
    nodes: int
    duplicates: int
    dead_letters: dict[str, int]
    gaps: int


def _database(request: Request) -> Iterator[sqlite_utils.Database]:
    """A read-only connection per request; WAL lets readers run beside the ingest writer."""
    db = open_db(request.app.state.db_path, readonly=True)
    try:
        yield db
    finally:
        db.conn.close()


Db = Annotated[sqlite_utils.Database, Depends(_database)]


def _when(value: float | None) -> datetime | None:
    return None if value is None else datetime.fromtimestamp(value, UTC)


def _unparsable_body(path: str, method: str, operation: dict[str, Any]) -> None:
    """FastAPI answers a body it cannot decode (not UTF-8, say) with a 400 before validation: say so."""
    if "requestBody" in operation:
        operation["responses"].setdefault("400", {
            "description": "The body could not be parsed.",
            "content": {"application/json": {"schema": {"$ref": "#/components/schemas/HTTPError"}}}})


def create_app(db_path: Path, health: Callable[[], Health], routers: Sequence[APIRouter] = (), *,
               auth: Authenticator) -> FastAPI:
    """`auth` checks every request's credential against the roles its endpoint accepts."""
    app = FastAPI(
        title="omnisense gateway",
        version="1",
        description="Store gateway: events received from the store's nodes over MQTT, node status and "
        "dead letters. Times are UTC.\n\nRoles: installers and marketers send an API token "
        "(`omnisense access create`), app installs their install token, both as `Authorization: Bearer`; "
        "nodes send HTTP Basic with their node id and MQTT password. Each operation lists the roles it "
        "accepts in `x-roles`.",
    )

    app.state.db_path = db_path
    app.state.auth = auth
    document_roles(app)
    amend_openapi(app, _unparsable_body)
    installer = APIRouter(tags=["installer"], dependencies=[requires(Role.INSTALLER)])

    @app.get("/healthz", response_model=Health, summary="Is the gateway up, connected and keeping up?",
             description="Liveness for load balancers and the installer's first check; says nothing about the "
                         "store's data.", openapi_extra=public())
    def healthz() -> Health:
        return health()

    @installer.get("/api/nodes", response_model=list[NodeView], summary="Every node seen or configured, with counters")
    def nodes(db: Db) -> list[NodeView]:
        views = []
        for row in node_rows(db):
            row["last_seen"] = _when(row["last_seen"])
            views.append(NodeView.model_validate({k: row.get(k) for k in NodeView.model_fields}))
        return views

    @installer.get("/api/events", response_model=list[EventView], summary="Stored events, oldest first")
    def events(
        db: Db,
        since: Annotated[AwareDatetime | None, Query(description="Only events produced at or after this time")] = None,
        node: Annotated[str | None, Query(description="Only this node's events")] = None,
        kind: Annotated[Literal["presence", "counts", "radio", "test"] | None, Query(description="Only this kind")] = None,
        after_id: Annotated[int | None, Query(description="Page on: only ids above this",
                                              ge=-(2**63), le=2**63 - 1)] = None,  # SQLite's integers
        limit: Annotated[int, Query(ge=1, le=10_000)] = 100,
    ) -> list[EventView]:
        rows = event_rows(db, since.timestamp() if since else None, node, kind, limit, after_id)
        for row in rows:
            row["ts"], row["received_at"] = _when(row["ts"]), _when(row["received_at"])
        return [EventView.model_validate(row) for row in rows]

    @installer.get("/api/dead-letters", response_model=list[DeadLetterView], summary="Rejected messages, newest first")
    def dead_letters(db: Db, code: str | None = None,
                     limit: Annotated[int, Query(ge=1, le=10_000)] = 100) -> list[DeadLetterView]:
        where = "WHERE code = ?" if code else ""
        rows = db.query(f"SELECT * FROM dead_letters {where} ORDER BY id DESC LIMIT ?", [*([code] if code else []), limit])
        return [DeadLetterView.model_validate({**r, "received_at": _when(r["received_at"])}) for r in rows]

    @installer.get("/api/stats", response_model=Stats, summary="Totals over the whole database")
    def stats(db: Db) -> Stats:
        totals = next(db.query("SELECT count(*) AS nodes, coalesce(sum(duplicates), 0) AS duplicates FROM nodes"))
        by_code = {r["code"]: r["n"] for r in db.query("SELECT code, count(*) AS n FROM dead_letters GROUP BY code")}
        missing = next(db.query("SELECT coalesce(sum(last_seq - first_seq + 1), 0) AS n FROM gaps"))["n"]
        events = next(db.query("SELECT count(*) AS n FROM events"))["n"]
        return Stats(events=events, nodes=totals["nodes"], duplicates=totals["duplicates"],
                     dead_letters=by_code, gaps=missing)

    app.include_router(installer)
    for router in routers:
        app.include_router(router)
    return app
