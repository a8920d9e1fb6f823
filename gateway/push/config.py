"""Push settings (the gateway configuration's `push` section) and building the adapters from them.

Key files are read and checked while the settings are validated, so a wrong path or a key of the
wrong kind stops the gateway at start-up with the field named, not at the first offer.
"""

from __future__ import annotations

import ssl
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

from pydantic import Field, ValidationInfo, field_validator

from edge.settings import ConfigModel
from gateway.push.apns import (
    APNS_BASE_URL,
    APNS_SANDBOX_URL,
    ApnsAdapter,
    check_apple_id,
    load_signing_key,
)
from gateway.push.base import PushAdapter
from gateway.push.fcm import FCM_BASE_URL, FcmAdapter, load_service_account
from gateway.push.webpush import WebPushAdapter, check_subject, load_vapid_key


def _base_url(value: str) -> str:
    parts = urlsplit(value)
    if parts.scheme not in ("https", "http") or not parts.hostname:
        raise ValueError(f"expected an https:// base URL, got {value!r}")
    return value


class FcmSettings(ConfigModel):
    service_account_file: Path = Field(description="Firebase service account key (JSON) allowed to send messages.")
    project_id: str | None = Field(None, description="Firebase project; default: the key file's project_id.")
    base_url: str = Field(FCM_BASE_URL, description="FCM HTTP v1 endpoint (changed only for tests).")
    timeout_s: float = Field(10.0, gt=0)

    @field_validator("service_account_file")
    @classmethod
    def _service_account(cls, value: Path) -> Path:
        load_service_account(value)
        return value

    @field_validator("base_url")
    @classmethod
    def _url(cls, value: str) -> str:
        return _base_url(value)


class ApnsSettings(ConfigModel):
    key_file: Path = Field(description="The team's APNs authentication key (.p8).")
    key_id: str = Field(description="The key's 10-character Key ID.")
    team_id: str = Field(description="The 10-character Team ID.")
    bundle_id: str = Field(min_length=1, description="The iOS app's bundle ID, sent as apns-topic.")
    sandbox: bool = Field(False, description="Use the development environment (apps built for debugging).")
    base_url: str | None = Field(None, description="Overrides the endpoint chosen by `sandbox` (tests).")
    timeout_s: float = Field(10.0, gt=0)

    @field_validator("key_file")
    @classmethod
    def _key(cls, value: Path) -> Path:
        load_signing_key(value)
        return value

    @field_validator("key_id", "team_id")
    @classmethod
    def _apple_id(cls, value: str, info: ValidationInfo) -> str:
        return check_apple_id(value, str(info.field_name))

    @field_validator("base_url")
    @classmethod
    def _url(cls, value: str | None) -> str | None:
        return None if value is None else _base_url(value)

    @property
    def url(self) -> str:
        return self.base_url or (APNS_SANDBOX_URL if self.sandbox else APNS_BASE_URL)


class WebPushSettings(ConfigModel):
    vapid_private_key_file: Path = Field(description="VAPID application server key: PEM, or base64url text.")
    subject: str = Field(description="Contact for push services: 'mailto:ops@example.com' or an https:// URL.")
    timeout_s: float = Field(10.0, gt=0)

    @field_validator("vapid_private_key_file")
    @classmethod
    def _key(cls, value: Path) -> Path:
        load_vapid_key(value)
        return value

    @field_validator("subject")
    @classmethod
    def _subject(cls, value: str) -> str:
        return check_subject(value)


class PushSettings(ConfigModel):
    """Which push services the app is reachable through; a missing section disables that service."""

    fcm: FcmSettings | None = None
    apns: ApnsSettings | None = None
    webpush: WebPushSettings | None = None


def build_adapters(settings: PushSettings, *, verify: ssl.SSLContext | bool = True) -> dict[str, PushAdapter[Any]]:
    """One adapter per configured service, keyed "fcm", "apns", "webpush". `verify` is for private CAs."""
    adapters: dict[str, PushAdapter[Any]] = {}
    if settings.fcm is not None:
        fcm = settings.fcm
        adapters["fcm"] = FcmAdapter.from_service_account_file(
            fcm.service_account_file, project_id=fcm.project_id, base_url=fcm.base_url, verify=verify,
            timeout_s=fcm.timeout_s)
    if settings.apns is not None:
        apns = settings.apns
        adapters["apns"] = ApnsAdapter.from_key_file(
            apns.key_file, apns.key_id, apns.team_id, apns.bundle_id, base_url=apns.url, verify=verify,
            timeout_s=apns.timeout_s)
    if settings.webpush is not None:
        web = settings.webpush
        adapters["webpush"] = WebPushAdapter.from_key_file(
            web.vapid_private_key_file, web.subject, verify=verify, timeout_s=web.timeout_s)
    return adapters
