"""What every push adapter takes and returns, independent of the push service behind it."""

from __future__ import annotations

import email.utils
import logging
import time
from dataclasses import dataclass
from typing import Protocol, TypeVar

import httpx
from pydantic import BaseModel, ConfigDict, Field, field_validator

# Keys the services keep for themselves: FCM rejects these in `data`, APNs reserves `aps`. Refusing
# them here keeps one message sendable through every adapter.
RESERVED_DATA_KEYS = frozenset({"aps", "from", "notification", "message_type", "collapse_key"})
RESERVED_DATA_PREFIXES = ("google", "gcm")
MAX_TTL_S = 28 * 24 * 3600  # FCM's limit, the strictest of the three

Target_contra = TypeVar("Target_contra", contravariant=True)


class PushMessage(BaseModel):
    """One notification for the app: what the shopper sees, plus data the app acts on."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    title: str = Field(min_length=1)
    body: str
    data: dict[str, str] = Field(default_factory=dict, description="e.g. offer id, campaign id")
    collapse_key: str | None = Field(None, min_length=1, max_length=64,
                                     description="A newer message with the same key replaces an undelivered one.")
    # An in-store offer is useless once the shopper has left, so the default lifetime is short.
    ttl_s: int = Field(600, ge=0, le=MAX_TTL_S, description="Seconds the service keeps trying to deliver.")

    @field_validator("data")
    @classmethod
    def _no_reserved_keys(cls, value: dict[str, str]) -> dict[str, str]:
        for key in value:
            if key in RESERVED_DATA_KEYS or key.startswith(RESERVED_DATA_PREFIXES):
                raise ValueError(f"data key {key!r} is reserved by a push service; rename it")
        return value


@dataclass(frozen=True)
class PushResult:
    """How one send went.

    `unregistered` means the push service no longer knows the target (app uninstalled, token
    rotated, subscription gone): the caller must delete that registration and never retry it.
    """

    ok: bool
    status: int | None
    reason: str
    retry_after_s: float | None = None
    unregistered: bool = False

    @property
    def retryable(self) -> bool:
        """A later attempt may succeed: throttled, the service failed, or it was never reached."""
        if self.ok or self.unregistered:
            return False
        return self.status is None or self.status == 429 or self.status >= 500


class PushAdapter(Protocol[Target_contra]):
    """Sends to one push service; `target` is that service's registration (token or subscription)."""

    async def send(self, target: Target_contra, message: PushMessage) -> PushResult: ...

    async def aclose(self) -> None: ...


def parse_retry_after(value: str | None, now: float | None = None) -> float | None:
    """Seconds to wait from a `Retry-After` header, which is either seconds or an HTTP date."""
    if not value:
        return None
    value = value.strip()
    if value.isdigit():
        return float(value)
    try:
        when = email.utils.parsedate_to_datetime(value)
    except (TypeError, ValueError):
        return None
    return max(0.0, when.timestamp() - (time.time() if now is None else now))


def short(identifier: str, keep: int = 8) -> str:
    """A device token or subscription shortened for logs: they identify a person's device."""
    return identifier[:keep] + "…" if len(identifier) > keep else identifier


class _RedactLongPathSegments(logging.Filter):
    """Shortens identifiers in the URLs httpx logs at INFO (APNs device tokens, Web Push endpoints).

    It acts on the shared "httpx" logger, so other clients' long path segments are shortened too.
    """

    def filter(self, record: logging.LogRecord) -> bool:
        if isinstance(record.args, tuple) and any(isinstance(arg, httpx.URL) for arg in record.args):
            record.args = tuple(_redact_url(arg) if isinstance(arg, httpx.URL) else arg for arg in record.args)
        return True


def _redact_url(url: httpx.URL) -> str:
    path = "/".join(short(part) if len(part) > 24 else part for part in url.path.split("/"))
    return f"{url.scheme}://{url.netloc.decode()}{path}"


def redact_httpx_logs() -> None:
    """Install the filter on httpx's logger once; adapters call it so a device token never reaches a log."""
    logger = logging.getLogger("httpx")
    if not any(isinstance(f, _RedactLongPathSegments) for f in logger.filters):
        logger.addFilter(_RedactLongPathSegments())
