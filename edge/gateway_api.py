"""What a node asks its store gateway over HTTPS: the TLS trust it pins, refusals it explains, calibration.

Everything the gateway is sent from here is numbers and the node's own identity; the gateway is
trusted through the store CA written at claim time (`gateway.ca_file`), never the system's store
alone, so a node on a shop's network cannot be talked into another gateway.
"""

from __future__ import annotations

import ssl
from pathlib import Path
from typing import Any

import httpx
from pydantic import ValidationError

from edge.config import NodeConfig
from edge.protocol import RadioCalibration
from edge.settings import ConfigError

TIMEOUT_S = 15.0


class GatewayError(Exception):
    """The gateway could not be reached or refused; str() is the message for the installer."""


def tls_context(ca_pem: str | None = None, ca_file: Path | None = None) -> ssl.SSLContext:
    """Verify the server (chain and host name) against the given CA only, or the system's store if none."""
    try:
        if ca_pem is not None:
            return ssl.create_default_context(cadata=ca_pem)
        if ca_file is not None:
            return ssl.create_default_context(cafile=str(ca_file))
    except (OSError, ssl.SSLError) as exc:
        where = ca_file or "the CA certificate"
        raise GatewayError(f"{where}: not a usable CA certificate: {exc}") from None
    return ssl.create_default_context()


def refusal(response: httpx.Response) -> str:
    """The gateway's reason for a 4xx/5xx: `detail.reason` (or `detail` text), else the status and body start."""
    try:
        doc: Any = response.json()
    except ValueError:
        doc = None
    detail = doc.get("detail") if isinstance(doc, dict) else None
    if isinstance(detail, dict) and detail.get("reason"):
        code = f" ({detail['code']})" if detail.get("code") else ""
        return f"{detail['reason']}{code}"
    if isinstance(detail, str) and detail:
        return detail
    text = response.text.strip().replace("\n", " ")[:200]
    return f"HTTP {response.status_code} {response.reason_phrase}" + (f": {text}" if text else "")


def unreachable(url: str, exc: httpx.HTTPError) -> GatewayError:
    """A network or TLS failure, said so an installer knows what to check."""
    text = str(exc) or type(exc).__name__
    if "CERTIFICATE_VERIFY_FAILED" in text or "Hostname mismatch" in text or "IP address mismatch" in text:
        return GatewayError(f"the gateway at {url} did not prove it is the store's gateway (TLS: {text}); "
                            "check the address in the claim code, or claim the node again")
    if isinstance(exc, httpx.TimeoutException):
        return GatewayError(f"the gateway at {url} did not answer within {TIMEOUT_S:g} s; is it running and reachable?")
    return GatewayError(f"cannot reach the gateway at {url}: {text}; check the network and the address")


def put_calibration(config: NodeConfig, body: dict[str, float | int]) -> RadioCalibration:
    """`PUT /api/node/calibration` as this node (HTTP basic: node id, MQTT password); the stored calibration."""
    if config.gateway is None:
        raise GatewayError("the node configuration has no `gateway` section: claim the node first "
                           "(omnisense provision claim), or add gateway: {url, ca_file}")
    try:
        password = config.mqtt.secret()
    except ConfigError as exc:
        raise GatewayError(str(exc)) from None
    if password is None:
        raise GatewayError("the node has no MQTT password (mqtt.password_file), which is also its gateway password")
    url = config.gateway.url.rstrip("/") + "/api/node/calibration"
    verify = tls_context(ca_file=config.gateway.ca_file)
    try:
        with httpx.Client(verify=verify, timeout=TIMEOUT_S) as client:
            response = client.put(url, json=body, auth=(config.node_id, password))
    except httpx.HTTPError as exc:
        raise unreachable(config.gateway.url, exc) from None
    if response.status_code in (401, 403):
        raise GatewayError(f"the gateway refused node {config.node_id!r}: {refusal(response)}; "
                           "its password may have been reset: claim the node again")
    if response.status_code != 200:
        raise GatewayError(f"the gateway did not store the calibration: {refusal(response)}")
    try:
        doc = response.json()
        fields = {k: doc[k] for k in RadioCalibration.model_fields if k in doc} if isinstance(doc, dict) else doc
        return RadioCalibration.model_validate(fields)  # lenient: the gateway may add what it recorded
    except (ValueError, ValidationError) as exc:
        raise GatewayError(f"the gateway's answer is not a radio calibration: {exc}") from None
