"""The marketer's side: read and replace the campaigns, read every decision with its reason, per-campaign results.

A replaced campaign set is validated by the same model as the YAML file (a bad one is a 422 naming
the field), applied to the running engine at once (caps carry over: they live in the ledger), and
written back to the campaigns file when there is one, so it survives a restart. Marketers only.
"""

import os
from collections.abc import Callable
from pathlib import Path
from typing import Annotated, Any, Literal

import sqlite_utils
import yaml
from fastapi import APIRouter, Depends, Query

from gateway.campaigns import CampaignsFile
from gateway.offers import OfferEngine, Reason
from gateway.roles import Role, requires
from gateway.store import reader


def campaigns_router(db_path: Path, engine: OfferEngine, path: Path | None,
                     lock: Callable[[], Any]) -> APIRouter:
    """`lock()` is a context manager that keeps the engine from deciding while campaigns are swapped."""
    router = APIRouter(prefix="/api", tags=["campaigns"], dependencies=[requires(Role.MARKETER)])

    Db = Annotated[sqlite_utils.Database, Depends(reader(db_path))]

    @router.get("/campaigns", response_model=CampaignsFile, summary="The campaigns the engine runs now")
    def get_campaigns() -> CampaignsFile:
        return engine.campaigns

    @router.put("/campaigns", response_model=CampaignsFile, summary="Replace all campaigns (validated, applied at once)")
    def put_campaigns(body: CampaignsFile) -> CampaignsFile:
        with lock():
            engine.replace_campaigns(body)
            if path is not None:  # under the lock: the file and the engine never disagree
                text = yaml.safe_dump(body.model_dump(mode="json", exclude_none=True), sort_keys=False)
                tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
                tmp.write_text("# Written by PUT /api/campaigns; see config/campaigns.example.yaml for comments.\n" + text)
                tmp.replace(path)
        return body

    @router.get("/offers/decisions", summary="Decisions, newest first: sent, or suppressed and why")
    def decisions(db: Db, campaign: str | None = None, install: str | None = None,
                  outcome: Literal["sent", "suppressed"] | None = None, reason: Reason | None = None,
                  limit: Annotated[int, Query(ge=1, le=10_000)] = 100) -> list[dict[str, Any]]:
        where, params = [], []
        for column, value in (("campaign_id", campaign), ("install_id", install), ("outcome", outcome),
                              ("reason", str(reason) if reason else None)):
            if value is not None:
                where.append(f"{column} = ?")
                params.append(value)
        clause = f"WHERE {' AND '.join(where)}" if where else ""
        if "offer_decisions" not in db.table_names():
            return []
        return list(db.query(f"SELECT decision_id, event_id, campaign_id, install_id, at, outcome, reason, delivered,"
                             f" redeemed_at FROM offer_decisions {clause} ORDER BY at DESC LIMIT ?", [*params, limit]))

    @router.get("/offers/summary", summary="Per campaign: sent, redeemed, and suppressions by reason")
    def summary(db: Db) -> list[dict[str, Any]]:
        if "offer_decisions" not in db.table_names():
            return []
        out: dict[str, dict[str, Any]] = {}
        for row in db.query("SELECT campaign_id, outcome, reason, count(*) AS n, count(redeemed_at) AS redeemed"
                            " FROM offer_decisions GROUP BY campaign_id, outcome, reason"):
            entry = out.setdefault(row["campaign_id"], {"campaign_id": row["campaign_id"], "sent": 0, "redeemed": 0,
                                                        "suppressed": {}})
            if row["outcome"] == "sent":
                entry["sent"] += row["n"]
                entry["redeemed"] += row["redeemed"]
            else:
                entry["suppressed"][row["reason"]] = row["n"]
        return sorted(out.values(), key=lambda e: e["campaign_id"])

    return router
