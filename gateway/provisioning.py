"""Turning a claim into a node: who it is, its broker credential, and its first config.

The order matters for a node that retries: the token is spent first (so a replay is refused
whatever happens next), then the identity is written, then the broker learns the credential, then
the node's retained config is published, so the node finds its config the moment it connects.
"""

from __future__ import annotations

import logging
import re
import secrets
from collections.abc import Callable
from dataclasses import dataclass
from typing import Protocol

from gateway.claims import ClaimRefused, ClaimTokens
from gateway.node_directory import NodeDirectory

log = logging.getLogger(__name__)

HARDWARE_ID = re.compile(r"^[0-9a-f]{16,128}$")


class BrokerCredentials(Protocol):
    """What the broker must know about nodes (gateway.broker_setup.BrokerAuth for Mosquitto)."""

    def set_node(self, node_id: str, password: str) -> None: ...

    def revoke_node(self, node_id: str) -> None: ...


@dataclass(frozen=True)
class Enrolment:
    node_id: str
    zone: str | None
    password: str


class Provisioner:
    def __init__(self, tokens: ClaimTokens, directory: NodeDirectory, broker: BrokerCredentials | None,
                 publish_config: Callable[[str], None], clear_config: Callable[[str], None]) -> None:
        self.tokens = tokens
        self.directory = directory
        self.broker = broker
        self._publish_config = publish_config
        self._clear_config = clear_config

    def claim(self, token: str, hardware_id: str) -> Enrolment:
        if self.broker is None:
            raise ClaimRefused("not_configured", "this gateway has no broker to enrol nodes with: run "
                                                 "'omnisense broker config' and set provisioning.broker_dir")
        if not HARDWARE_ID.match(hardware_id):
            raise ClaimRefused("bad_hardware_id", "hardware_id must be 16 to 128 lowercase hex digits "
                                                  "(a hash of the node's machine id)")
        grant = self.tokens.redeem(token, hardware_id)
        previous = self.directory.by_hardware(hardware_id)
        node_id = grant.node_id or (previous["node_id"] if previous else self._new_id(hardware_id))
        if grant.node_id:
            holder = self._holder(grant.node_id)
            if holder is not None and holder != hardware_id:
                raise ClaimRefused("node_taken", f"node {grant.node_id!r} belongs to another device; revoke it "
                                                 "first, or issue a token without a node id")
        password = secrets.token_urlsafe(24)
        row = self.directory.enroll(node_id, hardware_id, password, grant.zone)
        self.broker.set_node(node_id, password)
        self._publish_config(node_id)
        log.info("node %s claimed by device %s… (zone %s)", node_id, hardware_id[:8], row["zone"])
        return Enrolment(node_id, row["zone"], password)

    def _holder(self, node_id: str) -> str | None:
        try:
            row = self.directory.get(node_id)
        except KeyError:
            return None
        return row["hardware_id"] if row["revoked_at"] is None else None

    def _new_id(self, hardware_id: str) -> str:
        taken = {r["node_id"] for r in self.directory.rows()}
        for length in range(6, len(hardware_id) + 1):
            candidate = f"node-{hardware_id[:length]}"
            if candidate not in taken:
                return candidate
        raise ClaimRefused("node_taken", "no free node id for this device")

    def revoke(self, node_id: str) -> dict[str, object]:
        """Refused by the broker and the gateway at once; its retained config (with the salt) is cleared."""
        row = self.directory.revoke(node_id)
        if self.broker is not None:
            self.broker.revoke_node(node_id)
        self._clear_config(node_id)
        log.warning("node %s revoked", node_id)
        return row
