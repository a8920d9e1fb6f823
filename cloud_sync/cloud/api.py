"""The cloud ingest API: signed batches from the stores, ad-exposure import, read-back.

`create_cloud_app(db_url)` builds the FastAPI app. Endpoints:

* `PUT  /v1/stores/{store_id}` (admin) - register or rotate a store's Ed25519 public key:
  `{"public_key": "<base64 of the raw 32 bytes>"}` (what `omnisense upload keygen` prints).
* `POST /v1/stores/{store_id}/batches` (signed by the store) - a gzip JSON batch with headers
  `X-Omnisense-Store`, `X-Omnisense-Batch` (the idempotency key) and `X-Omnisense-Signature`
  (base64 Ed25519 of the body bytes). 200 `{"duplicate": false, ...counts}` when applied,
  200 `{"duplicate": true}` for a batch id already applied (nothing re-applied); 401 naming why
  the signature is not accepted; 400 for a body that is not gzip JSON or headers that disagree;
  422 naming each invalid field; 413 when too large.
* `POST /v1/exposures` (admin) - a JSON list of `{pseudonym, campaign, time, arm}`; `POST
  /v1/exposures/csv` (admin) - the same as CSV with a header row (body `text/csv`). Good rows are
  stored whatever else is in the request; the answer is `{"accepted": n, "rejected": [{"index"
  (JSON, 0-based) or "line" (CSV, 1 = header), "reason"}]}`. `time` is epoch seconds or ISO 8601
  with a UTC offset; `arm` is `exposed` or `control`. Re-importing a row (same campaign,
  pseudonym and time) replaces it.
* `GET /v1/stores/{store_id}/footfall|zones?since=&until=` (admin) - hours in [since, until)
  (ISO 8601 or epoch seconds). `GET /healthz`.

Admin auth is deliberately simple: when `admin_token` is set, admin endpoints need
`Authorization: Bearer <admin_token>`; when it is not set they are open (a laptop or a test).
Stores authenticate every batch by its signature alone.
"""

from __future__ import annotations

import csv
import datetime as dt
import gzip
import io
import json
import math
import secrets
import zlib
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from typing import Annotated, Any, Literal

from fastapi import Depends, FastAPI, Header, HTTPException, Query, Request
from fastapi import Path as PathParam
from fastapi.concurrency import run_in_threadpool
from fastapi.responses import JSONResponse
from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator

from cloud_sync.cloud.db import CloudDB
from cloud_sync.uploader.signing import (
    BATCH_HEADER,
    SIGNATURE_HEADER,
    STORE_HEADER,
    verify,
)
from edge.settings import format_validation_error

BATCH_SCHEMA = "omnisense.cloud.batch/v1"
ID_PATTERN = r"^[A-Za-z0-9._-]+$"
MAX_ROWS = 100_000


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid")


class FootfallHour(_Strict):
    hour_start: int = Field(ge=0, multiple_of=3600)
    entries: int | None = Field(None, ge=0)
    exits: int | None = Field(None, ge=0)
    peak_occupancy: int | None = Field(None, ge=0)
    mean_occupancy: float | None = Field(None, ge=0)
    camera_reports: int | None = Field(None, ge=0)
    distinct_devices: int | None = Field(None, ge=0)
    walk_ins: int | None = Field(None, ge=0)
    walk_bys: int | None = Field(None, ge=0)
    capture_rate: float | None = Field(None, ge=0, le=1)
    dwell_mean: float | None = Field(None, ge=0)
    dwell_p25: float | None = Field(None, ge=0)
    dwell_p50: float | None = Field(None, ge=0)
    dwell_p75: float | None = Field(None, ge=0)
    dwell_p90: float | None = Field(None, ge=0)


class ZoneHour(_Strict):
    zone: str = Field(min_length=1, max_length=100)
    hour_start: int = Field(ge=0, multiple_of=3600)
    people_mean: float | None = Field(None, ge=0)
    people_peak: int | None = Field(None, ge=0)
    distinct_devices: int | None = Field(None, ge=0)
    visits: int | None = Field(None, ge=0)
    dwell_mean: float | None = Field(None, ge=0)
    dwell_p25: float | None = Field(None, ge=0)
    dwell_p50: float | None = Field(None, ge=0)
    dwell_p75: float | None = Field(None, ge=0)
    dwell_p90: float | None = Field(None, ge=0)


class AppVisit(_Strict):
    pseudonym: str = Field(pattern=r"^[0-9a-f]{32}$")
    campaign: str = Field(min_length=1, max_length=128)
    arrival: int = Field(ge=0)
    dwell_s: float | None = Field(None, ge=0)


class BatchBody(_Strict):
    schema_: Literal["omnisense.cloud.batch/v1"] = Field(alias="schema")
    store_id: str = Field(pattern=ID_PATTERN, max_length=64)
    batch_id: str = Field(pattern=ID_PATTERN, min_length=8, max_length=64)
    created_at: float
    footfall_hours: list[FootfallHour] = Field(max_length=MAX_ROWS)
    zone_hours: list[ZoneHour] = Field(max_length=MAX_ROWS)
    app_visits: list[AppVisit] = Field(max_length=MAX_ROWS)


class StoreKey(_Strict):
    public_key: str = Field(description="base64 of the store's raw 32-byte Ed25519 public key")

    @field_validator("public_key")
    @classmethod
    def _ed25519(cls, value: str) -> str:
        import base64

        from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PublicKey

        try:
            Ed25519PublicKey.from_public_bytes(base64.b64decode(value, validate=True))
        except ValueError:
            raise ValueError("not a base64 raw 32-byte Ed25519 public key") from None
        return value


class Exposure(_Strict):
    pseudonym: str = Field(min_length=1, max_length=128)
    campaign: str = Field(min_length=1, max_length=128)
    time: float
    arm: Literal["exposed", "control"]

    @field_validator("pseudonym", "campaign", mode="before")
    @classmethod
    def _strip(cls, value: Any) -> Any:
        return value.strip() if isinstance(value, str) else value

    @field_validator("arm", mode="before")
    @classmethod
    def _arm(cls, value: Any) -> Any:
        return value.strip().lower() if isinstance(value, str) else value

    @field_validator("time", mode="before")
    @classmethod
    def _time(cls, value: Any) -> float:
        if isinstance(value, bool):
            raise ValueError("expected epoch seconds or ISO 8601 with a UTC offset")
        if isinstance(value, int | float):
            seconds = float(value)
        elif isinstance(value, str):
            text = value.strip()
            try:
                seconds = float(text)
            except ValueError:
                try:
                    when = dt.datetime.fromisoformat(text.replace("Z", "+00:00"))
                except ValueError:
                    raise ValueError(f"not epoch seconds or an ISO 8601 date-time: {value!r}") from None
                if when.tzinfo is None:
                    raise ValueError(f"give a UTC offset, e.g. {text}+00:00") from None
                seconds = when.timestamp()
        else:
            raise ValueError("expected epoch seconds or ISO 8601 with a UTC offset")
        if not math.isfinite(seconds) or seconds < 0:
            raise ValueError(f"not a time: {value!r}")
        return seconds


EXPOSURE_COLUMNS = ("pseudonym", "campaign", "time", "arm")


def _reason(exc: ValidationError) -> str:
    return format_validation_error(exc).strip().replace("\n  ", "; ")


def create_cloud_app(db_url: str, admin_token: str | None = None, max_body_bytes: int = 16 * 1024 * 1024,
                     *, pool_min_size: int = 1, pool_max_size: int = 10) -> FastAPI:
    db = CloudDB(db_url, pool_min_size=pool_min_size, pool_max_size=pool_max_size)

    @asynccontextmanager
    async def lifespan(_: FastAPI) -> AsyncIterator[None]:
        try:
            yield
        finally:
            await run_in_threadpool(db.close)  # the PostgreSQL pool's connections

    app = FastAPI(title="omnisense cloud", version="1", lifespan=lifespan,
                  description="Ingest of signed store batches, ad-exposure import, read-back.")
    app.state.db = db

    def admin(authorization: Annotated[str | None, Header()] = None) -> None:
        if admin_token is None:
            return
        if authorization is None or not authorization.startswith("Bearer "):
            raise HTTPException(401, "admin endpoint: send Authorization: Bearer <admin_token>")
        if not secrets.compare_digest(authorization.removeprefix("Bearer ").encode(), admin_token.encode()):
            raise HTTPException(403, "admin endpoint: wrong admin token")

    Admin = Depends(admin)

    async def read_body(request: Request) -> bytes:
        declared = request.headers.get("content-length")
        if declared is not None and declared.isdigit() and int(declared) > max_body_bytes:
            raise HTTPException(413, f"body of {declared} bytes; the limit is {max_body_bytes}")
        body = bytearray()
        async for chunk in request.stream():
            body += chunk
            if len(body) > max_body_bytes:
                raise HTTPException(413, f"body larger than the limit of {max_body_bytes} bytes")
        return bytes(body)

    @app.get("/healthz")
    def healthz() -> dict[str, str]:
        return {"status": "ok"}

    @app.put("/v1/stores/{store_id}", dependencies=[Admin])
    def register_store(store_id: Annotated[str, PathParam(pattern=ID_PATTERN, max_length=64)],
                       key: StoreKey) -> JSONResponse:
        new = db.register_store(store_id, key.public_key)
        return JSONResponse({"store_id": store_id, "created": new}, status_code=201 if new else 200)

    @app.post("/v1/stores/{store_id}/batches")
    async def upload_batch(store_id: str, request: Request) -> dict[str, Any]:
        store_header = request.headers.get(STORE_HEADER)
        batch_id = request.headers.get(BATCH_HEADER)
        signature = request.headers.get(SIGNATURE_HEADER)
        if store_header != store_id:
            raise HTTPException(400, f"{STORE_HEADER} ({store_header!r}) must name the store in the URL ({store_id!r})")
        if not batch_id:
            raise HTTPException(400, f"missing {BATCH_HEADER}: the batch's idempotency key")
        if not signature:
            raise HTTPException(401, f"missing {SIGNATURE_HEADER}: batches must be signed with the store's key")
        raw = await read_body(request)
        public_key = await run_in_threadpool(db.public_key, store_id)
        if public_key is None:
            raise HTTPException(401, f"store {store_id!r} is not registered: PUT /v1/stores/{store_id} its public key")
        problem = verify(public_key, raw, signature)
        if problem is not None:
            raise HTTPException(401, problem)
        try:
            decoder = zlib.decompressobj(wbits=16 + zlib.MAX_WBITS)
            text = decoder.decompress(raw, max_body_bytes)
            if decoder.unconsumed_tail:
                raise HTTPException(413, f"batch larger than {max_body_bytes} bytes once decompressed")
            if not decoder.eof:
                raise zlib.error("truncated")
        except (zlib.error, EOFError, gzip.BadGzipFile) as err:
            raise HTTPException(400, f"body is not gzip-compressed: {err}") from None
        try:
            document = json.loads(text)
        except (ValueError, UnicodeDecodeError) as err:
            raise HTTPException(400, f"batch is not JSON: {err}") from None
        try:
            batch = BatchBody.model_validate(document)
        except ValidationError as exc:
            raise HTTPException(422, "invalid batch: " + _reason(exc)) from None
        if batch.store_id != store_id:
            raise HTTPException(422, f"invalid batch: store_id {batch.store_id!r} is not the URL's store {store_id!r}")
        if batch.batch_id != batch_id:
            raise HTTPException(422, f"invalid batch: batch_id {batch.batch_id!r} is not {BATCH_HEADER} {batch_id!r}")
        applied = await run_in_threadpool(
            db.apply_batch, store_id, batch_id, raw,
            [r.model_dump() for r in batch.footfall_hours], [r.model_dump() for r in batch.zone_hours],
            [r.model_dump() for r in batch.app_visits])
        if applied.duplicate:
            return {"batch_id": batch_id, "duplicate": True}
        return {"batch_id": batch_id, "duplicate": False, "footfall_hours": applied.footfall_hours,
                "zone_hours": applied.zone_hours, "app_visits": applied.app_visits}

    def store_exposures(rows: list[tuple[str, str, float, str]]) -> int:
        return db.upsert_exposures(rows) if rows else 0

    @app.post("/v1/exposures", dependencies=[Admin])
    async def import_exposures(request: Request) -> dict[str, Any]:
        raw = await read_body(request)
        try:
            document = json.loads(raw)
        except (ValueError, UnicodeDecodeError) as err:
            raise HTTPException(400, f"body is not JSON: {err}") from None
        if isinstance(document, dict) and set(document) == {"rows"}:
            document = document["rows"]
        if not isinstance(document, list):
            raise HTTPException(422, "expected a JSON list of {pseudonym, campaign, time, arm} objects "
                                     f"(or {{\"rows\": [...]}}), got {type(document).__name__}")
        good, rejected = [], []
        for index, item in enumerate(document):
            if not isinstance(item, dict):
                rejected.append({"index": index, "reason": f"expected an object, got {type(item).__name__}"})
                continue
            try:
                e = Exposure.model_validate(item)
            except ValidationError as exc:
                rejected.append({"index": index, "reason": _reason(exc)})
                continue
            good.append((e.campaign, e.pseudonym, e.time, e.arm))
        accepted = await run_in_threadpool(store_exposures, good)
        return {"accepted": accepted, "rejected": rejected}

    @app.post("/v1/exposures/csv", dependencies=[Admin])
    async def import_exposures_csv(request: Request) -> dict[str, Any]:
        raw = await read_body(request)
        try:
            text = raw.decode("utf-8-sig")
        except UnicodeDecodeError as err:
            raise HTTPException(400, f"CSV is not UTF-8 text: {err}") from None
        reader = csv.reader(io.StringIO(text, newline=""))
        try:
            header = next(reader)
        except StopIteration:
            raise HTTPException(400, "empty CSV: expected a header row "
                                     f"{','.join(EXPOSURE_COLUMNS)}") from None
        except csv.Error as err:
            raise HTTPException(400, f"line 1: not CSV: {err}") from None
        names = [h.strip().lower() for h in header]
        missing = [c for c in EXPOSURE_COLUMNS if c not in names]
        if missing:
            raise HTTPException(400, f"line 1: the header has no column {', '.join(missing)} "
                                     f"(need {', '.join(EXPOSURE_COLUMNS)}; found {', '.join(names) or 'nothing'})")
        where = {c: names.index(c) for c in EXPOSURE_COLUMNS}
        good, rejected = [], []
        while True:
            try:
                fields = next(reader)
            except StopIteration:
                break
            except csv.Error as err:
                rejected.append({"line": reader.line_num, "reason": f"not CSV: {err}"})
                continue
            line = reader.line_num
            if not fields or all(not f.strip() for f in fields):
                continue
            if len(fields) != len(names):
                rejected.append({"line": line, "reason": f"{len(fields)} fields, the header has {len(names)}"})
                continue
            try:
                e = Exposure.model_validate({c: fields[i] for c, i in where.items()})
            except ValidationError as exc:
                rejected.append({"line": line, "reason": _reason(exc)})
                continue
            good.append((e.campaign, e.pseudonym, e.time, e.arm))
        accepted = await run_in_threadpool(store_exposures, good)
        return {"accepted": accepted, "rejected": rejected}

    Since = Annotated[dt.datetime | None, Query(description="ISO 8601 or epoch seconds; hours starting at or after")]
    Until = Annotated[dt.datetime | None, Query(description="ISO 8601 or epoch seconds; hours starting before")]

    def _epoch(value: dt.datetime | None) -> float | None:
        if value is None:
            return None
        if value.tzinfo is None:
            value = value.replace(tzinfo=dt.UTC)
        return value.timestamp()

    @app.get("/v1/stores/{store_id}/footfall", dependencies=[Admin])
    def footfall(store_id: str, since: Since = None, until: Until = None) -> list[dict[str, Any]]:
        return db.footfall(store_id, _epoch(since), _epoch(until))

    @app.get("/v1/stores/{store_id}/zones", dependencies=[Admin])
    def zones(store_id: str, since: Since = None, until: Until = None) -> list[dict[str, Any]]:
        return db.zone_hours(store_id, _epoch(since), _epoch(until))

    return app
