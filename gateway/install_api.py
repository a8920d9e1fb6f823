"""The installer's side of the gateway API: claim nodes, place them, check them, revoke them.

Three routers, three kinds of caller:
- `/provision/...` is public: a node that has only its claim token (the token is the credential)
  fetches the store's CA and swaps the token for its identity. Claims are refused over plain HTTP.
- `/api/installer/...` needs the installer role: issue claim tokens, set zones, counting lines and
  radio calibrations, run the health checks, revoke.
- `/api/node/...` needs the node role (its id and MQTT password): report its own calibration.
(No `from __future__ import annotations`: FastAPI reads the endpoints' annotations at run time.)
"""

import json
import secrets
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Annotated, Any

import sqlite_utils
from fastapi import APIRouter, Depends, HTTPException, Query, Request, status
from fastapi.responses import Response
from pydantic import BaseModel, ConfigDict, Field

from edge.protocol import CameraPlacement, Identifier, RadioCalibration
from gateway.claims import ClaimRefused, ClaimTokens, claim_code
from gateway.doctor import NodeFacts, NodeReport, diagnose
from gateway.node_directory import NodeDirectory, UnknownNode
from gateway.provisioning import Provisioner
from gateway.roles import HTTPError, Principal, Role, public, requires
from gateway.store import open_db
from gateway.store_ca import fingerprint_of

REFUSAL_STATUS = {"malformed": 400, "bad_hardware_id": 400, "unknown": 403, "foreign_store": 403, "used": 409,
                  "node_taken": 409, "expired": 410, "not_configured": 409, "not_https": 403}


class Refusal(BaseModel):
    code: str
    reason: str


class RefusalBody(BaseModel):
    detail: Refusal | str = Field(description="Why the claim was refused; a plain sentence when the body was not JSON.")


REFUSED = {"model": RefusalBody}
MISSING = {"model": HTTPError, "description": "No such node in this store."}
REVOKED = {"model": HTTPError, "description": "The node is revoked (or already revoked)."}


class ClaimRequest(BaseModel):
    model_config = ConfigDict(extra="forbid")

    token: str = Field(min_length=1, max_length=200, repr=False, description="The claim token (STORE.SECRET).")
    hardware_id: str = Field(min_length=1, max_length=128, description="Hex hash of the node's machine id.")
    store_id: Identifier = Field(description="The store the node was told it joins (from the claim code).")


class MqttGrant(BaseModel):
    url: str
    username: str
    password: str = Field(repr=False, description="Shown once; the gateway keeps only its hash.")
    protocol: str = "5"


class ClaimResponse(BaseModel):
    node_id: str
    store_id: str
    zone: str | None
    mqtt: MqttGrant
    gateway_url: str
    ca_pem: str


class ClaimOrder(BaseModel):
    model_config = ConfigDict(extra="forbid")

    node_id: Identifier | None = Field(None, description="The node id to give the claiming device; none: derived "
                                                         "from its hardware id.")
    zone: Identifier | None = Field(None, description="The zone the node starts in.")
    ttl_s: float = Field(3600, ge=60, le=7 * 86400, description="How long the token may be used (once).")


class IssuedToken(BaseModel):
    token: str = Field(description="The claim token: single use, shown once.")
    code: str = Field(description="What the node is given (QR code or text): gateway, store, CA pin and token.")
    expires_at: float
    node_id: str | None
    zone: str | None


class NodeSetup(BaseModel):
    node_id: str
    origin: str = Field(description="'config' (the gateway's config file) or 'claim'.")
    zone: str | None
    hardware_id: str | None = Field(description="First 8 hex digits of the device's hardware id.")
    camera: CameraPlacement | None
    radio: RadioCalibration | None
    config_version: int
    revoked: bool


class ZoneChange(BaseModel):
    model_config = ConfigDict(extra="forbid")

    zone: Identifier


class CalibrationReport(BaseModel):
    model_config = ConfigDict(extra="forbid")

    rssi_1m: float = Field(ge=-120, le=0)
    exponent: float = Field(2.0, ge=1.0, le=6.0)
    samples: int = Field(ge=1)
    spread_db: float = Field(ge=0)


class LineCheck(BaseModel):
    node_id: str
    seconds: float
    intervals: int
    line_in: int
    line_out: int
    occupancy: int | None


class TestRound(BaseModel):
    nodes: list[str]


@dataclass
class InstallContext:
    """What the installer endpoints work with; built by the gateway service."""

    store_id: str
    directory: NodeDirectory
    tokens: ClaimTokens
    provisioner: Provisioner
    db_path: Path
    publish_config: Callable[[str], None]
    ca_file: Path | None  # the store CA's certificate, once 'omnisense broker config' wrote it
    node_mqtt_url: Callable[[], str | None]
    public_url: Callable[[], str]
    heartbeat_s: float = 30.0

    @property
    def has_ca(self) -> bool:
        return self.ca_file is not None and self.ca_file.exists()


def _setup(row: dict[str, Any]) -> NodeSetup:
    return NodeSetup(
        node_id=row["node_id"], origin=row["origin"], zone=row["zone"],
        hardware_id=row["hardware_id"][:8] if row["hardware_id"] else None,
        camera=CameraPlacement.model_validate_json(row["camera"]) if row["camera"] else None,
        radio=RadioCalibration.model_validate_json(row["radio"]) if row["radio"] else None,
        config_version=row["version"], revoked=row["revoked_at"] is not None)


def _refuse(err: ClaimRefused) -> HTTPException:
    return HTTPException(REFUSAL_STATUS.get(err.code, 403), detail={"code": err.code, "reason": err.reason})


def provision_router(ctx: InstallContext) -> APIRouter:
    router = APIRouter(prefix="/provision", tags=["provision"])

    @router.get("/ca.pem", summary="The store's CA certificate, which the claim code pins",
                description="Public: a node fetches it before it has any credential and checks it against the "
                            "fingerprint in its claim code.", openapi_extra=public(),
                response_class=Response, responses={200: {"content": {"application/x-pem-file": {}}},
                                                    404: {"model": HTTPError, "description": "No store CA yet."}})
    def ca() -> Response:
        if not ctx.has_ca:
            raise HTTPException(404, "this gateway has no store CA: run 'omnisense broker config'")
        return Response(ctx.ca_file.read_bytes(), media_type="application/x-pem-file")

    @router.post("/claim", status_code=201, response_model=ClaimResponse,
                 summary="Swap a claim token for the node's identity and broker credential",
                 description="Public: the single-use claim token is the credential. Refused over plain HTTP, "
                             "and when the token is unknown, used, expired or of another store.",
                 openapi_extra=public(),
                 responses={400: REFUSED, 403: REFUSED, 409: REFUSED, 410: REFUSED})
    def claim(body: ClaimRequest, request: Request) -> ClaimResponse:
        if request.url.scheme != "https":
            raise _refuse(ClaimRefused("not_https", "claims are only accepted over HTTPS"))
        if body.store_id != ctx.store_id:
            raise _refuse(ClaimRefused("foreign_store", f"this gateway is store {ctx.store_id!r}, "
                                                        f"not {body.store_id!r}"))
        url = ctx.node_mqtt_url()
        if not ctx.has_ca or url is None:
            raise _refuse(ClaimRefused("not_configured", "this gateway has no broker to enrol nodes with: run "
                                                         "'omnisense broker config' and set provisioning.broker_dir"))
        try:
            enrolment = ctx.provisioner.claim(body.token, body.hardware_id)
        except ClaimRefused as err:
            raise _refuse(err) from None
        return ClaimResponse(node_id=enrolment.node_id, store_id=ctx.store_id, zone=enrolment.zone,
                             mqtt=MqttGrant(url=url, username=enrolment.node_id, password=enrolment.password),
                             gateway_url=ctx.public_url(), ca_pem=ctx.ca_file.read_text())

    return router


def installer_router(ctx: InstallContext) -> APIRouter:
    router = APIRouter(prefix="/api/installer", tags=["installer"], dependencies=[requires(Role.INSTALLER)])

    def node_row(node_id: str) -> dict[str, Any]:
        try:
            return ctx.directory.get(node_id)
        except UnknownNode as err:
            raise HTTPException(404, str(err)) from None

    def change(node_id: str, **fields: Any) -> NodeSetup:
        if node_row(node_id)["revoked_at"] is not None:
            raise HTTPException(409, f"node {node_id!r} is revoked; claim it again first")
        row = ctx.directory.update(node_id, **fields)
        ctx.publish_config(node_id)
        return _setup(row)

    @router.post("/claims", status_code=201, response_model=IssuedToken,
                 summary="Issue a single-use claim token (show its code as a QR code or text)",
                 responses={409: {"model": HTTPError, "description": "No store CA: run 'omnisense broker config'."}})
    def issue(order: ClaimOrder) -> IssuedToken:
        if not ctx.has_ca:
            raise HTTPException(409, "this gateway has no store CA to pin: run 'omnisense broker config' and set "
                                     "provisioning.broker_dir")
        issued = ctx.tokens.issue(order.ttl_s, order.node_id, order.zone)
        return IssuedToken(token=issued.token, code=claim_code(issued.token, ctx.store_id, ctx.public_url(),
                                                               fingerprint_of(ctx.ca_file)),
                           expires_at=issued.expires_at, node_id=issued.node_id, zone=issued.zone)

    @router.get("/nodes", response_model=list[NodeSetup], summary="Every node: origin, zone, placement, calibration")
    def nodes() -> list[NodeSetup]:
        return [_setup(r) for r in ctx.directory.rows()]

    @router.put("/nodes/{node_id}/zone", response_model=NodeSetup, summary="Place a node in a zone",
                responses={404: MISSING, 409: REVOKED})
    def zone(node_id: str, body: ZoneChange) -> NodeSetup:
        return change(node_id, zone=body.zone)

    @router.put("/nodes/{node_id}/camera", response_model=NodeSetup,
                summary="Set a camera node's counting line and zones (frame pixels)",
                responses={404: MISSING, 409: REVOKED})
    def camera(node_id: str, body: CameraPlacement) -> NodeSetup:
        return change(node_id, camera=body)

    @router.put("/nodes/{node_id}/radio", response_model=NodeSetup,
                summary="Set a node's radio path-loss model by hand (the node's calibration sets it too)",
                responses={404: MISSING, 409: REVOKED})
    def radio(node_id: str, body: RadioCalibration) -> NodeSetup:
        return change(node_id, radio=body)

    @router.post("/nodes/{node_id}/revoke", response_model=NodeSetup,
                 summary="Revoke a node: the broker and the gateway refuse it from now on",
                 responses={404: MISSING, 409: REVOKED})
    def revoke(node_id: str) -> NodeSetup:
        if node_row(node_id)["revoked_at"] is not None:
            raise HTTPException(409, f"node {node_id!r} is already revoked")
        return _setup(ctx.provisioner.revoke(node_id))

    @router.get("/nodes/{node_id}/counts", response_model=LineCheck,
                summary="Line crossings a node counted over the last seconds: the live check of a new line",
                responses={404: MISSING})
    def counts(node_id: str, seconds: Annotated[float, Query(gt=0, le=86400)] = 60) -> LineCheck:
        node_row(node_id)
        db = open_db(ctx.db_path, readonly=True)
        try:
            rows = list(db.query("SELECT payload FROM events WHERE kind = 'counts' AND node_id = ? AND received_at >= ?"
                                 " ORDER BY ts", [node_id, time.time() - seconds]))
        finally:
            db.conn.close()
        payloads = [json.loads(r["payload"]) for r in rows]
        return LineCheck(node_id=node_id, seconds=seconds, intervals=len(payloads),
                         line_in=sum(p["line_in"] for p in payloads), line_out=sum(p["line_out"] for p in payloads),
                         occupancy=payloads[-1]["occupancy"] if payloads else None)

    @router.post("/doctor/test", response_model=TestRound,
                 summary="Ask every live node for a test event (answered through the normal event path)")
    def test_round() -> TestRound:
        live = [r["node_id"] for r in ctx.directory.rows() if r["revoked_at"] is None]
        for node_id in live:
            ctx.directory.update(node_id, test_token=secrets.token_hex(16))
            ctx.publish_config(node_id)
        return TestRound(nodes=live)

    @router.get("/doctor", response_model=list[NodeReport], summary="Health checks of every live node")
    def doctor() -> list[NodeReport]:
        db = open_db(ctx.db_path, readonly=True)
        try:
            facts = gather_facts(db, [r for r in ctx.directory.rows() if r["revoked_at"] is None])
        finally:
            db.conn.close()
        now = time.time()
        return [diagnose(f, now, ctx.heartbeat_s) for f in facts]

    return router


def node_router(ctx: InstallContext) -> APIRouter:
    router = APIRouter(prefix="/api/node", tags=["node"])

    @router.put("/calibration", response_model=RadioCalibration,
                summary="A node reports the path-loss model it measured with a reference at a known distance")
    def calibration(body: CalibrationReport,
                    principal: Annotated[Principal, Depends(requires(Role.NODE))]) -> RadioCalibration:
        calibrated = RadioCalibration(rssi_1m=body.rssi_1m, exponent=body.exponent)
        ctx.directory.update(principal.subject, radio=calibrated)
        ctx.publish_config(principal.subject)
        return calibrated

    return router


def gather_facts(db: sqlite_utils.Database, rows: list[dict[str, Any]]) -> list[NodeFacts]:
    """What the database says about each node, for `gateway.doctor.diagnose`."""
    status = {r["node_id"]: r for r in db.query("SELECT * FROM nodes")}
    facts = []
    for row in rows:
        node_id = row["node_id"]
        seen = status.get(node_id, {})
        last_counts = next(db.query("SELECT max(received_at) AS t FROM events WHERE kind = 'counts' AND node_id = ?",
                                    [node_id]))["t"]
        radio = next(db.query("SELECT received_at, payload FROM events WHERE kind = 'radio' AND node_id = ?"
                              " ORDER BY received_at DESC LIMIT 1", [node_id]), None)
        test = None
        if row["test_token"]:
            test = next(db.query("SELECT received_at, ts FROM events WHERE kind = 'test' AND node_id = ?"
                                 " AND json_extract(payload, '$.token') = ?", [node_id, row["test_token"]]), None)
        facts.append(NodeFacts(
            node_id=node_id, zone=row["zone"], config_version=row["version"],
            applied_config_version=seen.get("applied_config_version"), state=seen.get("state"),
            status_received_at=seen.get("status_received_at"), outbox_depth=seen.get("outbox_depth"),
            dropped=seen.get("dropped"), sources=json.loads(seen.get("sources") or "{}"), last_counts_at=last_counts,
            last_radio_at=radio["received_at"] if radio else None,
            radio_addresses=json.loads(radio["payload"])["addresses"] if radio else 0,
            test_token=row["test_token"], test_received_at=test["received_at"] if test else None,
            test_sent_ts=test["ts"] if test else None))
    return facts
