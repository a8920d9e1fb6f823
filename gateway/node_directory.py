"""The store's nodes as the gateway knows them: identity, placement, and the config each is sent.

Nodes come from two places: the `nodes` list of the gateway's config file, and claims (a node that
swapped a claim token for its own credential). Both end up here, with what the installer set since:
zone, camera placement, radio calibration. Every change bumps the node's config version; the node
reports the version it applied, which is how an installer sees a change took hold.

The node's secret is kept only as a hash (Mosquitto's PBKDF2 format, as in its password file);
`known` is the live set the ingest thread checks, so a claim or a revocation changes what is
accepted at once.
"""

from __future__ import annotations

import json
import threading
import time
from collections.abc import Iterable
from datetime import date
from pathlib import Path
from typing import Any

from edge import protocol
from edge.protocol import CameraPlacement, RadioCalibration, RemoteConfig
from gateway.broker_setup import hash_password, verify_password
from gateway.store import ensure_schema, open_db

class UnknownNode(KeyError):
    def __str__(self) -> str:
        return f"no node {self.args[0]!r} in this store"


class NodeDirectory:
    """Thread-safe: used from API worker threads, the MQTT thread and the event loop."""

    def __init__(self, db_path: Path, configured: Iterable[tuple[str, str | None]]) -> None:
        self._lock = threading.Lock()
        self.db = open_db(db_path)
        self.db.execute("PRAGMA busy_timeout = 5000")
        ensure_schema(self.db)
        if "node_directory" not in self.db.table_names():
            self.db["node_directory"].create(
                {"node_id": str, "origin": str, "hardware_id": str, "secret_hash": str, "zone": str,
                 "file_zone": str, "camera": str, "radio": str, "test_token": str, "version": int,
                 "created_at": float, "revoked_at": float},
                pk="node_id", not_null={"origin", "version", "created_at"},
            )
        self._adopt_configured(list(configured))
        live = list(self.db["node_directory"].rows_where("revoked_at IS NULL"))
        self.known: set[str] = {r["node_id"] for r in live}
        self.zone_of: dict[str, str | None] = {r["node_id"]: r["zone"] for r in live}

    def _adopt_configured(self, configured: list[tuple[str, str | None]]) -> None:
        """Nodes of the config file; a zone edited in the file wins over one set through the API before."""
        self.db.execute("UPDATE nodes SET known = 0")
        for node_id, zone in configured:
            row = self._row(node_id)
            if row is None:
                self.db["node_directory"].insert({"node_id": node_id, "origin": "config", "zone": zone,
                                                  "file_zone": zone, "version": 1, "created_at": time.time()})
            elif row["file_zone"] != zone:
                self._change(node_id, zone=zone, file_zone=zone)
        for row in self.db["node_directory"].rows_where("revoked_at IS NULL"):
            self._mirror(row)

    def _row(self, node_id: str) -> dict[str, Any] | None:
        return next(self.db["node_directory"].rows_where("node_id = ?", [node_id]), None)

    def _mirror(self, row: dict[str, Any]) -> None:
        """Keep the `nodes` table (what /api/nodes shows) and the live sets in step."""
        if hasattr(self, "known"):
            if row["revoked_at"] is None:
                self.known.add(row["node_id"])
                self.zone_of[row["node_id"]] = row["zone"]
            else:
                self.known.discard(row["node_id"])
                self.zone_of.pop(row["node_id"], None)
        self.db.execute(
            "INSERT INTO nodes (node_id, known, zone, config_version) VALUES (?, ?, ?, ?) ON CONFLICT(node_id)"
            " DO UPDATE SET known = excluded.known, zone = excluded.zone, config_version = excluded.config_version",
            [row["node_id"], int(row["revoked_at"] is None), row["zone"], row["version"]])

    def _change(self, node_id: str, **fields: Any) -> dict[str, Any]:
        row = self._row(node_id)
        if row is None:
            raise UnknownNode(node_id)
        row.update(fields, version=row["version"] + 1)
        self.db["node_directory"].update(node_id, {**fields, "version": row["version"]})
        self._mirror(row)
        return row

    def get(self, node_id: str) -> dict[str, Any]:
        with self._lock:
            row = self._row(node_id)
        if row is None:
            raise UnknownNode(node_id)
        return row

    def rows(self) -> list[dict[str, Any]]:
        with self._lock:
            return list(self.db["node_directory"].rows_where(order_by="node_id"))

    def by_hardware(self, hardware_id: str) -> dict[str, Any] | None:
        with self._lock:
            return next(self.db["node_directory"].rows_where("hardware_id = ?", [hardware_id]), None)

    def enroll(self, node_id: str, hardware_id: str, secret: str, zone: str | None) -> dict[str, Any]:
        """A claimed node, new or re-claimed (new secret, revocation lifted); its config version moves on."""
        fields = {"hardware_id": hardware_id, "secret_hash": hash_password(secret), "revoked_at": None}
        with self._lock:
            if self._row(node_id) is None:
                self.db["node_directory"].insert({"node_id": node_id, "origin": "claim", "zone": zone, "version": 1,
                                                  "created_at": time.time(), **fields})
                row = self._row(node_id)
                assert row is not None
                self._mirror(row)
            else:
                row = self._change(node_id, **fields, **({"zone": zone} if zone else {}))
        return row

    def update(self, node_id: str, *, zone: str | None = None, camera: CameraPlacement | None = None,
               radio: RadioCalibration | None = None, test_token: str | None = None) -> dict[str, Any]:
        fields: dict[str, Any] = {}
        if zone is not None:
            fields["zone"] = zone
        if camera is not None:
            fields["camera"] = camera.model_dump_json()
        if radio is not None:
            fields["radio"] = radio.model_dump_json()
        if test_token is not None:
            fields["test_token"] = test_token
        with self._lock:
            return self._change(node_id, **fields)

    def revoke(self, node_id: str) -> dict[str, Any]:
        with self._lock:
            return self._change(node_id, revoked_at=time.time(), secret_hash=None)

    def password_ok(self, node_id: str, password: str) -> bool:
        with self._lock:
            row = self._row(node_id)
        return bool(row and row["revoked_at"] is None and row["secret_hash"] and verify_password(password, row["secret_hash"]))

    def remote_configs(self, day: date, salt: bytes) -> list[RemoteConfig]:
        """The retained config of every live node, with the day's salt."""
        with self._lock:
            rows = list(self.db["node_directory"].rows_where("revoked_at IS NULL", order_by="node_id"))
        return [remote_config(row, day, salt) for row in rows]

    def close(self) -> None:
        with self._lock:
            self.db.conn.close()


def remote_config(row: dict[str, Any], day: date, salt: bytes) -> RemoteConfig:
    return RemoteConfig(
        node_id=row["node_id"], version=row["version"], issued_at=protocol.utcnow(), zone=row["zone"],
        salt=salt.hex(), salt_day=day,
        camera=CameraPlacement.model_validate(json.loads(row["camera"])) if row["camera"] else None,
        radio=RadioCalibration.model_validate(json.loads(row["radio"])) if row["radio"] else None,
        test_token=row["test_token"],
    )
