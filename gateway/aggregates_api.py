"""HTTP API of the footfall aggregates and visits: JSON for the dashboard, CSV for spreadsheets.

The hourly tables are read as `gateway.aggregates.refresh` left them; visits are rebuilt from the
stored events per request, so they always follow the current rules. Times are UTC.

Roles: marketers read all three. Installers may read the hourly footfall too, to check after
placing the counting camera that entries and exits look right; zones and visits (movement of
pseudonymous phones) stay with the marketer.
"""

from __future__ import annotations

import csv
import io
from collections.abc import Mapping
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Annotated, Any, Literal

import sqlite_utils
from fastapi import APIRouter, Depends, HTTPException, Query
from fastapi.responses import Response
from pydantic import AwareDatetime, BaseModel, Field

from edge.protocol import Identifier
from gateway.aggregates import FOOTFALL, ZONES, AggregateSettings, load_visits
from gateway.roles import Role, requires
from gateway.store import reader
from gateway.visits import Resolver

MAX_VISIT_RANGE = timedelta(days=7)
DEFAULT_VISIT_RANGE = timedelta(days=1)

class FootfallHour(BaseModel):
    """One UTC hour of the store. Dwell: time in store of the radio walk-ins who arrived in the hour."""

    store_id: str
    hour_start: datetime
    entries: int = Field(description="People in through the door (camera line count).")
    exits: int = Field(description="People out through the door (camera line count).")
    peak_occupancy: int | None = Field(description="Most people inside at a camera report; null without reports.")
    mean_occupancy: float | None = Field(description="Mean people inside over the camera reports.")
    camera_reports: int = Field(description="Occupancy reports of the counting camera: its coverage of the hour.")
    distinct_devices: int = Field(description="Phones (pseudonyms) placed inside the store during the hour.")
    walk_ins: int = Field(description="Radio visits that arrived in the hour and came in.")
    walk_bys: int = Field(description="Radio visits that arrived in the hour and only passed the door.")
    capture_rate: float | None = Field(description="walk_ins / (walk_ins + walk_bys); null when both are 0.")
    dwell_mean: float | None = Field(description="Mean time in store, s.")
    dwell_p25: float | None = Field(description="25th percentile of time in store, s.")
    dwell_p50: float | None = Field(description="Median time in store, s.")
    dwell_p75: float | None = Field(description="75th percentile of time in store, s.")
    dwell_p90: float | None = Field(description="90th percentile of time in store, s.")


class ZoneHour(BaseModel):
    """One zone in one UTC hour. Dwell: the zone stays that began in the hour."""

    store_id: str
    zone: str
    hour_start: datetime
    people_mean: float | None = Field(description="Mean people in the zone seen by cameras; null if none covers it.")
    people_peak: int | None = Field(description="Most people in the zone at a camera report.")
    distinct_devices: int = Field(description="Phones placed in the zone during the hour.")
    visits: int = Field(description="Zone stays of walk-in visits that began in the hour.")
    dwell_mean: float | None = Field(description="Mean dwell in the zone, s.")
    dwell_p25: float | None = Field(description="25th percentile of dwell in the zone, s.")
    dwell_p50: float | None = Field(description="Median dwell in the zone, s.")
    dwell_p75: float | None = Field(description="75th percentile of dwell in the zone, s.")
    dwell_p90: float | None = Field(description="90th percentile of dwell in the zone, s.")


class StayView(BaseModel):
    zone: str
    enter: datetime
    exit: datetime
    dwell_s: float


class VisitView(BaseModel):
    device: str = Field(description="Pseudonym of the phone (or its app install, when resolved).")
    arrival: datetime
    departure: datetime
    duration_s: float
    walk_in: bool
    max_rssi: float | None
    zones: list[StayView]


Since = Annotated[AwareDatetime | None, Query(description="From this time (inclusive)")]
Until = Annotated[AwareDatetime | None, Query(description="Up to this time (exclusive)")]
Format = Annotated[Literal["json", "csv"], Query(description="json, or csv with a header row")]


def _when(t: float) -> datetime:
    return datetime.fromtimestamp(t, UTC)


def _range_error(detail: str) -> HTTPException:
    """A 422 shaped like FastAPI's own validation errors, so clients parse one format."""
    return HTTPException(422, detail=[{"loc": ["query", "until"], "msg": detail, "type": "value_error"}])


def _day_before(end: datetime) -> datetime:
    """The default start of a visits range; the earliest time there is for an `until` in the year 1."""
    try:
        return end - DEFAULT_VISIT_RANGE
    except OverflowError:
        return datetime.min.replace(tzinfo=UTC)


def _bounds(since: datetime | None, until: datetime | None) -> tuple[float | None, float | None]:
    if since is not None and until is not None and since >= until:
        raise _range_error(f"until ({until.isoformat()}) must be later than since ({since.isoformat()})")
    return (since.timestamp() if since else None), (until.timestamp() if until else None)


def _csv(rows: list[BaseModel], model: type[BaseModel], name: str) -> Response:
    """Header row, then the same values the JSON has (times in ISO 8601, nulls empty)."""
    out = io.StringIO()
    writer = csv.DictWriter(out, fieldnames=list(model.model_fields), lineterminator="\n")
    writer.writeheader()
    for row in rows:
        writer.writerow({k: ("" if v is None else v) for k, v in row.model_dump(mode="json").items()})
    return Response(out.getvalue(), media_type="text/csv",
                    headers={"Content-Disposition": f'attachment; filename="{name}.csv"'})


def _hourly(db: sqlite_utils.Database, table: str, since: float | None, until: float | None,
            zone: str | None = None) -> list[dict[str, Any]]:
    if table not in db.table_names():
        return []  # nothing computed yet
    where, params = [], []
    for clause, value in (("hour_start >= ?", since), ("hour_start < ?", until), ("zone = ?", zone)):
        if value is not None:
            where.append(clause)
            params.append(value)
    order = "hour_start, store_id" + (", zone" if table == ZONES else "")
    sql = f"SELECT * FROM {table}" + (" WHERE " + " AND ".join(where) if where else "") + f" ORDER BY {order}"
    rows = list(db.query(sql, params))
    for row in rows:
        row["hour_start"] = _when(row["hour_start"])
    return rows


def aggregates_router(db_path: Path, settings: AggregateSettings | None = None,
                      zone_of: Mapping[str, str | None] | None = None, resolve: Resolver | None = None) -> APIRouter:
    """Routes over the gateway database at `db_path`; `settings`, `zone_of` and `resolve` shape the visits."""
    router = APIRouter(tags=["footfall"])
    rules = settings or AggregateSettings()

    db_dependency = Depends(reader(db_path))

    @router.get("/api/footfall/hourly", response_model=list[FootfallHour],
                summary="Store footfall per UTC hour: entries, exits, occupancy, walk-ins, walk-bys, dwell",
                responses={200: {"content": {"text/csv": {}}}},
                dependencies=[requires(Role.MARKETER, Role.INSTALLER)])
    def footfall(db: sqlite_utils.Database = db_dependency, since: Since = None, until: Until = None,
                 format: Format = "json") -> Any:
        a, b = _bounds(since, until)
        rows = [FootfallHour.model_validate(r) for r in _hourly(db, FOOTFALL, a, b)]
        return _csv(rows, FootfallHour, "footfall-hourly") if format == "csv" else rows

    @router.get("/api/zones/hourly", response_model=list[ZoneHour],
                summary="Per zone and UTC hour: people seen by cameras, phones, visits and dwell",
                responses={200: {"content": {"text/csv": {}}}}, dependencies=[requires(Role.MARKETER)])
    def zones(db: sqlite_utils.Database = db_dependency,
              zone: Annotated[Identifier | None, Query(description="Only this zone")] = None,
              since: Since = None, until: Until = None, format: Format = "json") -> Any:
        a, b = _bounds(since, until)
        rows = [ZoneHour.model_validate(r) for r in _hourly(db, ZONES, a, b, zone)]
        return _csv(rows, ZoneHour, "zones-hourly") if format == "csv" else rows

    @router.get("/api/visits", response_model=list[VisitView],
                summary="Store visits that arrived in a range (default: the last 24 h), oldest first",
                dependencies=[requires(Role.MARKETER)])
    def visits(db: sqlite_utils.Database = db_dependency, since: Since = None, until: Until = None,
               limit: Annotated[int, Query(ge=1, le=10_000)] = 100) -> list[VisitView]:
        end = until or datetime.now(UTC)
        start = since or _day_before(end)
        _bounds(start, end)
        if end - start > MAX_VISIT_RANGE:
            days = (end - start).total_seconds() / 86400
            raise _range_error(f"a range of at most {MAX_VISIT_RANGE.days} days, not {days:.1f}: visits are "
                               "rebuilt from the events per request")
        found = load_visits(db, start.timestamp(), end.timestamp(), rules, zone_of, resolve)[:limit]
        return [VisitView(device=v.device, arrival=_when(v.arrival), departure=_when(v.departure),
                          duration_s=round(v.duration_s, 1), walk_in=v.walk_in, max_rssi=v.max_rssi,
                          zones=[StayView(zone=s.zone, enter=_when(s.enter), exit=_when(s.exit),
                                          dwell_s=round(s.dwell_s, 1)) for s in v.zones])
                for v in found]

    return router
