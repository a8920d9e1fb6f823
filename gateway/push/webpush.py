"""Web Push for the retailer's web app: RFC 8030 delivery, RFC 8291 payload encryption, RFC 8292 VAPID.

http-ece encrypts (aes128gcm, a fresh sender key and salt per message) and py-vapid signs the
VAPID JWT; the request itself goes out over async httpx. (pywebpush wraps the same two libraries
but sends with blocking `requests`.)
"""

from __future__ import annotations

import base64
import hashlib
import json
import logging
import re
import ssl
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

import http_ece
import httpx
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ec
from py_vapid import Vapid02, VapidException
from pydantic import BaseModel, ConfigDict, field_validator

from gateway.push.base import (
    PushMessage,
    PushResult,
    parse_retry_after,
    redact_httpx_logs,
    short,
)

log = logging.getLogger(__name__)

MAX_RECORD_BYTES = 4096  # RFC 8291 §4: push services need accept no larger encrypted body
VAPID_LIFETIME_S = 12 * 3600  # RFC 8292 allows at most 24 h
VAPID_RENEW_BEFORE_S = 3600
_TOPIC = re.compile(r"^[A-Za-z0-9_-]{1,32}$")
_URGENCIES = ("very-low", "low", "normal", "high")


def b64url_decode(value: str) -> bytes:
    return base64.urlsafe_b64decode(value + "=" * (-len(value) % 4))


def b64url_encode(value: bytes) -> str:
    return base64.urlsafe_b64encode(value).rstrip(b"=").decode()


class WebPushKeys(BaseModel):
    model_config = ConfigDict(frozen=True)

    p256dh: str
    auth: str

    @field_validator("p256dh")
    @classmethod
    def _p256dh(cls, value: str) -> str:
        try:
            ec.EllipticCurvePublicKey.from_encoded_point(ec.SECP256R1(), b64url_decode(value))
        except ValueError:
            raise ValueError("p256dh is not a base64url P-256 public key") from None
        return value

    @field_validator("auth")
    @classmethod
    def _auth(cls, value: str) -> str:
        try:
            secret = b64url_decode(value)
        except ValueError:
            secret = b""
        if len(secret) != 16:
            raise ValueError("auth is not a base64url 16-byte secret")
        return value


class WebPushSubscription(BaseModel):
    """A browser's `PushSubscription.toJSON()`: where to post, and the keys to encrypt for."""

    model_config = ConfigDict(frozen=True, extra="ignore")

    endpoint: str
    keys: WebPushKeys

    @field_validator("endpoint")
    @classmethod
    def _https(cls, value: str) -> str:
        parts = urlsplit(value)
        if parts.scheme != "https" or not parts.hostname:
            raise ValueError("endpoint is not an https:// URL (RFC 8030 requires HTTPS)")
        return value

    @property
    def audience(self) -> str:
        """The push service's origin, which the VAPID token is bound to."""
        parts = urlsplit(self.endpoint)
        host = parts.hostname or ""
        return f"https://{host}" + (f":{parts.port}" if parts.port else "")


def load_vapid_key(path: Path) -> Vapid02:
    """The application server's VAPID key: a PEM, or base64url raw/DER text as web-push tools print it."""
    try:
        text = Path(path).read_text().strip()
    except OSError as err:
        raise ValueError(f"cannot read {path}: {err.strerror or err}") from None
    try:
        vapid = Vapid02.from_pem(text.encode()) if "-----BEGIN" in text else Vapid02.from_string(text)
    except (ValueError, TypeError, VapidException) as err:
        raise ValueError(f"{path} is not a VAPID private key (PEM or base64url): {err}") from None
    if not isinstance(vapid.private_key, ec.EllipticCurvePrivateKey) or \
            not isinstance(vapid.private_key.curve, ec.SECP256R1):
        raise ValueError(f"{path}: VAPID needs a P-256 key")
    return vapid


def check_subject(value: str) -> str:
    if not (value.startswith("mailto:") and "@" in value) and not value.startswith("https://"):
        raise ValueError(f"VAPID subject is a contact the push service can use, 'mailto:ops@example.com' "
                         f"or an https:// URL; got {value!r}")
    return value


class WebPushAdapter:
    """Sends to browser push subscriptions made with this adapter's `application_server_key`."""

    def __init__(self, vapid: Vapid02, subject: str, *, urgency: str = "high",
                 verify: ssl.SSLContext | bool = True, timeout_s: float = 10.0,
                 clock: Callable[[], float] = time.time) -> None:
        if urgency not in _URGENCIES:
            raise ValueError(f"urgency is one of {', '.join(_URGENCIES)}; got {urgency!r}")
        redact_httpx_logs()
        self._vapid = vapid
        self._subject = check_subject(subject)
        # An offer at the shelf is worth waking the device for; RFC 8030's default would be "normal".
        self._urgency = urgency
        self._clock = clock
        self._client = httpx.AsyncClient(http2=True, verify=verify, timeout=timeout_s)
        self._vapid_tokens: dict[str, tuple[str, float]] = {}

    @classmethod
    def from_key_file(cls, path: Path, subject: str, *, verify: ssl.SSLContext | bool = True,
                      timeout_s: float = 10.0) -> WebPushAdapter:
        return cls(load_vapid_key(path), subject, verify=verify, timeout_s=timeout_s)

    @property
    def application_server_key(self) -> str:
        """The public key the app passes to `pushManager.subscribe()`, base64url."""
        point = self._vapid.public_key.public_bytes(serialization.Encoding.X962,
                                                    serialization.PublicFormat.UncompressedPoint)
        return b64url_encode(point)

    async def send(self, target: WebPushSubscription, message: PushMessage) -> PushResult:
        body = encrypt(_payload(message), target)
        if len(body) > MAX_RECORD_BYTES:
            return PushResult(False, None, f"payload too large: {len(body)} encrypted bytes > {MAX_RECORD_BYTES}")
        try:
            authorization = self._authorization(target.audience)
        except VapidException as err:
            return PushResult(False, None, f"cannot sign VAPID token for {target.audience}: {err}")
        headers = {
            "Authorization": authorization,
            "TTL": str(message.ttl_s),
            "Urgency": self._urgency,
            "Content-Encoding": "aes128gcm",
            "Content-Type": "application/octet-stream",
        }
        if message.collapse_key is not None:
            headers["Topic"] = topic(message.collapse_key)
        try:
            response = await self._client.post(target.endpoint, content=body, headers=headers)
        except httpx.HTTPError as err:
            return PushResult(False, None, f"push service unreachable: {err!r}")
        result = _result(response)
        if not result.ok:
            log.warning("Web Push to %s (%s) failed: %s %s", target.audience, short(target.endpoint.rsplit("/", 1)[-1]),
                        result.status, result.reason)
        return result

    async def aclose(self) -> None:
        await self._client.aclose()

    def _authorization(self, audience: str) -> str:
        """`vapid t=<JWT>,k=<public key>`, reused per push service until an hour before it expires."""
        now = self._clock()
        cached = self._vapid_tokens.get(audience)
        if cached is None or now >= cached[1] - VAPID_RENEW_BEFORE_S:
            expires = int(now) + VAPID_LIFETIME_S
            signed = self._vapid.sign({"aud": audience, "sub": self._subject, "exp": expires})
            cached = (signed["Authorization"], float(expires))
            self._vapid_tokens[audience] = cached
        return cached[0]


def encrypt(plaintext: bytes, subscription: WebPushSubscription) -> bytes:
    """RFC 8291 aes128gcm body: header (salt, record size, sender key) and one encrypted record."""
    return http_ece.encrypt(
        plaintext,
        private_key=ec.generate_private_key(ec.SECP256R1()),
        dh=b64url_decode(subscription.keys.p256dh),
        auth_secret=b64url_decode(subscription.keys.auth),
        version="aes128gcm",
    )


def topic(collapse_key: str) -> str:
    """RFC 8030 `Topic`: at most 32 base64url characters, so longer keys are hashed (stably) to fit."""
    if _TOPIC.match(collapse_key):
        return collapse_key
    return b64url_encode(hashlib.sha256(collapse_key.encode()).digest())[:32]


def _payload(message: PushMessage) -> bytes:
    """What the service worker's `push` event gets as `event.data.json()`."""
    body: dict[str, Any] = {"title": message.title, "body": message.body, "data": dict(message.data)}
    if message.collapse_key is not None:
        body["tag"] = message.collapse_key
    return json.dumps(body, separators=(",", ":"), ensure_ascii=False).encode()


def _result(response: httpx.Response) -> PushResult:
    status = response.status_code
    if 200 <= status < 300:
        return PushResult(True, status, "created")
    if status == 413:
        reason = "payload too large for the push service"
    else:
        reason = response.text.strip()[:200] or response.reason_phrase or f"HTTP {status}"
    return PushResult(False, status, reason, retry_after_s=parse_retry_after(response.headers.get("retry-after")),
                      unregistered=status in (404, 410))
