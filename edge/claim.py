"""Claiming a node: the installer's claim code -> the store's CA, the node's identity, a ready node.yaml.

Trust on first use, pinned: the claim code carries the SHA-256 of the store CA's certificate (DER),
shown by the gateway to the installer. The node fetches the CA without verification (it has no
trust yet), accepts it only if it matches the pin, and from then on talks to the gateway over TLS
verified against that CA alone. An impostor on the shop's network can serve a CA, but not one with
the pinned hash, so it never sees the token.

The node is known by a hardware id: a SHA-256 of the OS's machine id, the Pi's serial, or (last
resort) the MAC address, under an application prefix, so no raw identifier leaves the node.

`parse_claim_code` is pure; `claim` does the network and file work.
"""

from __future__ import annotations

import hashlib
import hmac
import importlib
import os
import re
import uuid
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any
from urllib.parse import parse_qs, urlsplit

import httpx
import yaml
from cryptography import x509
from cryptography.hazmat.primitives.serialization import Encoding
from pydantic import BaseModel, ConfigDict, ValidationError

from edge.config import NodeConfig
from edge.gateway_api import TIMEOUT_S, GatewayError, refusal, tls_context, unreachable
from edge.protocol import ID_PATTERN
from edge.settings import format_validation_error
from edge.sources import REGISTRY

SCHEME, HOST = "omnisense", "claim"
PARAMS = {"gw": "the gateway's https URL", "store": "the store id", "ca": "the CA fingerprint", "t": "the claim token"}
HARDWARE_PREFIX = b"omnisense-hardware-id\0"
_HEX64 = re.compile(r"^[0-9a-f]{64}$")


class ClaimError(Exception):
    """The claim cannot go on; str() tells the installer what is wrong and what to do."""


@dataclass(frozen=True)
class ClaimCode:
    gateway_url: str
    store_id: str
    ca_sha256: str                      # lower-case hex of SHA-256 over the CA certificate's DER
    token: str = field(repr=False)      # a secret until spent: never in a log line


def parse_claim_code(text: str) -> ClaimCode:
    """`omnisense://claim?gw=...&store=...&ca=...&t=...` (QR content or typed); ClaimError naming the problem."""
    code = text.strip()
    parts = urlsplit(code)
    if parts.scheme.lower() != SCHEME or parts.netloc.lower() != HOST:
        raise ClaimError(f"not a claim code: expected {SCHEME}://{HOST}?gw=...&store=...&ca=...&t=..., "
                         f"got {_shorten(code)!r}")
    try:
        query = parse_qs(parts.query, keep_blank_values=True, strict_parsing=bool(parts.query))
    except ValueError:
        raise ClaimError("the claim code's parameters are garbled: scan it again or copy it whole") from None
    missing = [f"{key} ({what})" for key, what in PARAMS.items() if not (query.get(key) or [""])[0].strip()]
    if missing:
        raise ClaimError(f"the claim code lacks {', '.join(missing)}: was it cut off? Scan it again or copy it whole")
    repeated = [key for key in PARAMS if len(query[key]) > 1]
    if repeated:
        raise ClaimError(f"the claim code gives {', '.join(repeated)} more than once")
    gw, store, ca, token = (query[key][0].strip() for key in PARAMS)
    url = urlsplit(gw)
    if url.scheme != "https" or not url.hostname:
        raise ClaimError(f"gw: the gateway address must be an https:// URL with a host, got {gw!r}")
    try:
        url.port
    except ValueError:
        raise ClaimError(f"gw: bad port in {gw!r}") from None
    if not re.match(ID_PATTERN, store):
        raise ClaimError(f"store: {store!r} is not a store id (letters, digits, '-' and '_', up to 64)")
    fingerprint = ca.lower().replace(":", "")
    if not _HEX64.match(fingerprint):
        raise ClaimError(f"ca: the CA fingerprint must be 64 hex digits (a SHA-256), got {len(fingerprint)} characters")
    return ClaimCode(gw.rstrip("/"), store, fingerprint, token)


def _shorten(text: str, keep: int = 60) -> str:
    return text if len(text) <= keep else text[:keep] + "..."


def hardware_id(machine_id: Path = Path("/etc/machine-id"), cpuinfo: Path = Path("/proc/cpuinfo")) -> str:
    """SHA-256 hex naming this device: of the machine id, else the Pi's CPU serial, else the MAC address."""
    for source in (_read_machine_id(machine_id), _read_pi_serial(cpuinfo)):
        if source:
            return hashlib.sha256(HARDWARE_PREFIX + source.encode()).hexdigest()
    return hashlib.sha256(HARDWARE_PREFIX + f"mac:{uuid.getnode():012x}".encode()).hexdigest()


def _read_machine_id(path: Path) -> str | None:
    try:
        value = path.read_text().strip()
    except OSError:
        return None
    return f"machine-id:{value}" if value and set(value) != {"0"} else None


def _read_pi_serial(path: Path) -> str | None:
    try:
        text = path.read_text()
    except OSError:
        return None
    found = re.search(r"^Serial\s*:\s*([0-9a-fA-F]+)\s*$", text, re.MULTILINE)
    return f"serial:{found.group(1).lower()}" if found and set(found.group(1)) != {"0"} else None


def ca_fingerprint(cert: x509.Certificate) -> str:
    return hashlib.sha256(cert.public_bytes(Encoding.DER)).hexdigest()


def pinned_ca(pem: bytes, pin: str, gateway_url: str) -> str:
    """The certificate in `pem` whose fingerprint is `pin`, as PEM; ClaimError when there is none."""
    try:
        certs = x509.load_pem_x509_certificates(pem)
    except ValueError:
        raise ClaimError(f"the gateway at {gateway_url} did not serve a PEM certificate at /provision/ca.pem") from None
    for cert in certs:
        if hmac.compare_digest(ca_fingerprint(cert), pin):
            return cert.public_bytes(Encoding.PEM).decode()
    raise ClaimError(f"the gateway at {gateway_url} presented a CA that does not match the claim code: possible "
                     "impostor; do not go on. Check that the node is on the store's network, or get a new claim code")


class _Mqtt(BaseModel):
    model_config = ConfigDict(extra="ignore")
    url: str
    username: str
    password: str
    protocol: str = "5"


class _Grant(BaseModel):
    """The documented answer of `POST /provision/claim`; unknown fields are ignored (newer gateways)."""

    model_config = ConfigDict(extra="ignore")
    node_id: str
    store_id: str
    zone: str | None = None
    mqtt: _Mqtt
    gateway_url: str
    ca_pem: str | None = None


def fetch_ca(code: ClaimCode) -> str:
    """The store CA from the gateway, fetched without verification and accepted only if it matches the pin."""
    url = code.gateway_url + "/provision/ca.pem"
    try:
        response = httpx.get(url, verify=False, timeout=TIMEOUT_S)  # no trust yet: the pin decides
    except httpx.HTTPError as exc:
        raise ClaimError(str(unreachable(code.gateway_url, exc))) from None
    if response.status_code != 200:
        raise ClaimError(f"the gateway at {code.gateway_url} did not serve its CA: {refusal(response)}")
    return pinned_ca(response.content, code.ca_sha256, code.gateway_url)


def redeem(code: ClaimCode, ca_pem: str, hardware: str) -> _Grant:
    """`POST /provision/claim` over TLS verified against the pinned CA; the gateway's refusal as ClaimError."""
    try:
        verify = tls_context(ca_pem=ca_pem)
    except GatewayError as exc:
        raise ClaimError(str(exc)) from None
    body = {"token": code.token, "hardware_id": hardware, "store_id": code.store_id}
    try:
        with httpx.Client(verify=verify, timeout=TIMEOUT_S) as client:
            response = client.post(code.gateway_url + "/provision/claim", json=body)
    except httpx.HTTPError as exc:
        raise ClaimError(str(unreachable(code.gateway_url, exc))) from None
    if response.status_code not in (200, 201):
        raise ClaimError(f"the gateway refused the claim: {refusal(response)}")
    try:
        grant = _Grant.model_validate(response.json())
    except (ValueError, ValidationError) as exc:
        raise ClaimError(f"the gateway's answer to the claim is not what this node understands: {exc}") from None
    if grant.store_id != code.store_id:
        raise ClaimError(f"the gateway enrolled the node in store {grant.store_id!r}, not {code.store_id!r} "
                         "as the claim code says: not going on")
    if urlsplit(grant.gateway_url).scheme != "https":
        raise ClaimError(f"the gateway gave its API address as {grant.gateway_url!r}, not https://: not going on")
    if grant.ca_pem is not None:
        pinned_ca(grant.ca_pem.encode(), code.ca_sha256, code.gateway_url)  # the same CA, or something is off
    return grant


def node_document(grant: _Grant, out_dir: Path, sources: list[Any]) -> dict[str, Any]:
    """The node.yaml content: identity, broker and gateway links with the files beside it; no secret inline."""
    return {
        "store_id": grant.store_id,
        "node_id": grant.node_id,
        "data_dir": str(out_dir / "data"),
        "mqtt": {"url": grant.mqtt.url, "username": grant.mqtt.username,
                 "password_file": str(out_dir / "mqtt.password"), "ca_file": str(out_dir / "ca.pem"),
                 "protocol": grant.mqtt.protocol or "5"},
        "gateway": {"url": grant.gateway_url, "ca_file": str(out_dir / "ca.pem")},
        "sources": sources,
    }


def template_sources(template: Path | None) -> list[Any]:
    """The `sources` of a template node YAML (the hardware this node has), checked; none without a template.

    Checked before the token is spent: a typo in the template must not cost the installer a claim code.
    """
    if template is None:
        return []
    try:
        doc = yaml.safe_load(template.read_text())
    except OSError as exc:
        raise ClaimError(f"{template}: cannot read the template: {exc.strerror or exc}") from None
    except yaml.YAMLError as exc:
        raise ClaimError(f"{template}: not valid YAML: {exc}") from None
    sources = doc.get("sources", []) if isinstance(doc, dict) else None
    if not isinstance(sources, list):
        raise ClaimError(f"{template}: expected a mapping with a `sources` list")
    try:
        settings = NodeConfig.model_validate({"store_id": "s", "node_id": "n", "sources": sources}).sources
    except ValidationError as exc:
        raise ClaimError(f"{template}: invalid sources:\n{format_validation_error(exc)}") from None
    for index, item in enumerate(settings):
        target = REGISTRY.get(item.kind)
        if target is None:
            raise ClaimError(f"{template}: sources.{index}.kind: unknown source kind {item.kind!r} "
                             f"(known: {', '.join(sorted(REGISTRY))})")
        module, _, name = target.partition(":")
        try:
            getattr(importlib.import_module(module), name).Options.model_validate(item.options)
        except ValidationError as exc:
            detail = format_validation_error(exc, prefix=f"sources.{index}.options.")
            raise ClaimError(f"{template}: invalid options for source {index} ({item.kind}):\n{detail}") from None
    return sources


def _write(path: Path, text: str, mode: int = 0o644) -> None:
    """Write whole or not at all, with `mode` from the first byte (a password is never world-readable)."""
    tmp = path.with_name(f".{path.name}.tmp")
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, mode)
    try:
        os.fchmod(fd, mode)
        os.write(fd, text.encode())
        os.fsync(fd)
    finally:
        os.close(fd)
    os.replace(tmp, path)


def claim(code: ClaimCode, out_dir: Path, template: Path | None = None, hardware: str | None = None) -> Path:
    """Claim this node with `code`; writes ca.pem, mqtt.password (0600) and node.yaml into out_dir; node.yaml's path."""
    sources = template_sources(template)
    out_dir = out_dir.resolve()
    try:  # before the token is spent
        out_dir.mkdir(parents=True, exist_ok=True)
    except OSError as exc:
        raise ClaimError(f"{out_dir}: cannot create the folder: {exc.strerror or exc}") from None
    if not os.access(out_dir, os.W_OK):
        raise ClaimError(f"{out_dir}: not writable by this user; choose another --out or run as the node's user")
    ca_pem = fetch_ca(code)
    grant = redeem(code, ca_pem, hardware or hardware_id())
    document = node_document(grant, out_dir, sources)
    try:
        NodeConfig.model_validate(document)
    except ValidationError as exc:
        raise ClaimError("the node configuration would be invalid (the template's sources, or the gateway's "
                         f"answer):\n{format_validation_error(exc)}") from None
    try:
        _write(out_dir / "ca.pem", ca_pem)
        _write(out_dir / "mqtt.password", grant.mqtt.password + "\n", 0o600)
        _write(out_dir / "node.yaml", "# Written by `omnisense provision claim`; the password is in mqtt.password.\n"
               + yaml.safe_dump(document, sort_keys=False))
    except OSError as exc:
        raise ClaimError(f"{out_dir}: cannot write the node's files: {exc.strerror or exc}") from None
    return out_dir / "node.yaml"
