"""Apple Push Notification service over HTTP/2 with token-based (.p8 key) authentication, for the iOS app.

APNs only speaks HTTP/2, so the client is httpx with `http2=True` (the `h2` package). The provider
token is an ES256 JWT signed with the team's key; Apple wants it reused (a new one at most every
20 minutes) and refuses it after an hour, so it is kept for 50 minutes.
"""

from __future__ import annotations

import json
import logging
import re
import ssl
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import httpx
import jwt
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ec

from gateway.push.base import (
    PushMessage,
    PushResult,
    parse_retry_after,
    redact_httpx_logs,
    short,
)

log = logging.getLogger(__name__)

APNS_BASE_URL = "https://api.push.apple.com"
APNS_SANDBOX_URL = "https://api.sandbox.push.apple.com"
TOKEN_REUSE_S = 50 * 60
MAX_PAYLOAD_BYTES = 4096
_APPLE_ID = re.compile(r"^[A-Z0-9]{10}$")
_DEVICE_TOKEN = re.compile(r"^[0-9a-fA-F]{16,400}$")
_UNREGISTERED = {"Unregistered", "BadDeviceToken", "ExpiredToken"}


def load_signing_key(path: Path) -> ec.EllipticCurvePrivateKey:
    """The team's .p8 key: a PKCS#8 PEM P-256 private key, as downloaded from Apple."""
    try:
        pem = Path(path).read_bytes()
    except OSError as err:
        raise ValueError(f"cannot read {path}: {err.strerror or err}") from None
    try:
        key = serialization.load_pem_private_key(pem, password=None)
    except (ValueError, TypeError) as err:
        raise ValueError(f"{path} is not an unencrypted PEM private key (.p8): {err}") from None
    if not isinstance(key, ec.EllipticCurvePrivateKey) or not isinstance(key.curve, ec.SECP256R1):
        raise ValueError(f"{path}: expected an APNs P-256 (ES256) key, got {type(key).__name__}")
    return key


def check_apple_id(value: str, what: str) -> str:
    if not _APPLE_ID.match(value):
        raise ValueError(f"{what} is 10 upper-case letters or digits, as shown in the Apple developer account; "
                         f"got {value!r}")
    return value


class ApnsAdapter:
    """Sends alerts to device tokens of one app (`bundle_id`, the `apns-topic`)."""

    def __init__(self, signing_key: ec.EllipticCurvePrivateKey, key_id: str, team_id: str, bundle_id: str, *,
                 base_url: str = APNS_BASE_URL, priority: int = 10, verify: ssl.SSLContext | bool = True,
                 timeout_s: float = 10.0, clock: Callable[[], float] = time.time) -> None:
        if priority not in (5, 10):
            raise ValueError(f"apns-priority is 5 (when convenient) or 10 (now), got {priority}")
        redact_httpx_logs()
        self._key = signing_key
        self._key_id = check_apple_id(key_id, "key_id")
        self._team_id = check_apple_id(team_id, "team_id")
        self._bundle_id = bundle_id
        self._base_url = base_url.rstrip("/")
        self._priority = priority
        self._clock = clock
        self._client = httpx.AsyncClient(http1=False, http2=True, verify=verify, timeout=timeout_s)
        self._token: tuple[str, float] | None = None

    @classmethod
    def from_key_file(cls, key_file: Path, key_id: str, team_id: str, bundle_id: str, *, sandbox: bool = False,
                      base_url: str | None = None, verify: ssl.SSLContext | bool = True,
                      timeout_s: float = 10.0) -> ApnsAdapter:
        url = base_url or (APNS_SANDBOX_URL if sandbox else APNS_BASE_URL)
        return cls(load_signing_key(key_file), key_id, team_id, bundle_id, base_url=url, verify=verify,
                   timeout_s=timeout_s)

    async def send(self, target: str, message: PushMessage) -> PushResult:
        if not _DEVICE_TOKEN.match(target):
            # Never valid, and not to be put in a URL path: drop it as APNs would (BadDeviceToken).
            return PushResult(False, None, "BadDeviceToken: not a hex device token", unregistered=True)
        payload = json.dumps(_payload(message), separators=(",", ":"), ensure_ascii=False).encode()
        if len(payload) > MAX_PAYLOAD_BYTES:
            return PushResult(False, None, f"payload too large: {len(payload)} bytes > {MAX_PAYLOAD_BYTES}")
        url = f"{self._base_url}/3/device/{target}"
        try:
            response = await self._post(url, payload, message)
            if response.status_code == 403 and _reason(response) == "ExpiredProviderToken":
                log.info("APNs says the provider token expired; signing a new one")
                self._token = None
                response = await self._post(url, payload, message)
        except httpx.HTTPError as err:
            return PushResult(False, None, f"APNs unreachable: {err!r}")
        result = _result(response)
        if not result.ok:
            log.warning("APNs push to %s failed: %s %s", short(target), result.status, result.reason)
        return result

    async def aclose(self) -> None:
        await self._client.aclose()

    async def _post(self, url: str, payload: bytes, message: PushMessage) -> httpx.Response:
        headers = {
            "authorization": f"bearer {self._provider_token()}",
            "apns-topic": self._bundle_id,
            "apns-push-type": "alert",
            "apns-priority": str(self._priority),
            # 0 asks APNs to try once and not store the alert; otherwise it keeps it until then.
            "apns-expiration": str(int(self._clock()) + message.ttl_s if message.ttl_s else 0),
            "content-type": "application/json",
        }
        if message.collapse_key is not None:
            headers["apns-collapse-id"] = message.collapse_key
        return await self._client.post(url, content=payload, headers=headers)

    def _provider_token(self) -> str:
        now = self._clock()
        if self._token is None or now - self._token[1] >= TOKEN_REUSE_S:
            issued = int(now)
            token = jwt.encode({"iss": self._team_id, "iat": issued}, self._key, algorithm="ES256",
                               headers={"kid": self._key_id})
            self._token = (token, float(issued))
        return self._token[0]


def _payload(message: PushMessage) -> dict[str, Any]:
    aps: dict[str, Any] = {"alert": {"title": message.title, "body": message.body}}
    return {"aps": aps, **message.data}


def _reason(response: httpx.Response) -> str:
    try:
        body = response.json()
    except ValueError:
        return ""
    return str(body.get("reason", "")) if isinstance(body, dict) else ""


def _result(response: httpx.Response) -> PushResult:
    status = response.status_code
    if status == 200:
        return PushResult(True, status, response.headers.get("apns-id", "sent"))
    reason = _reason(response) or f"HTTP {status}"
    return PushResult(False, status, reason, retry_after_s=parse_retry_after(response.headers.get("retry-after")),
                      unregistered=reason in _UNREGISTERED or status == 410)
