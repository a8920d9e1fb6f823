"""Firebase Cloud Messaging over its HTTP v1 API, for the Android app.

google-auth signs the service account's RS256 assertion and exchanges it at the account's
`token_uri` for an access token, which it keeps until shortly before expiry. google-auth's
refresh is synchronous, so it runs in a worker thread over a small httpx transport; sends are
async over HTTP/2.
"""

from __future__ import annotations

import asyncio
import json
import logging
import ssl
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import httpx
from google.auth import exceptions as auth_exceptions
from google.auth import transport as auth_transport
from google.oauth2 import service_account

from gateway.push.base import (
    PushMessage,
    PushResult,
    parse_retry_after,
    redact_httpx_logs,
    short,
)

log = logging.getLogger(__name__)

FCM_BASE_URL = "https://fcm.googleapis.com"
FCM_SCOPE = "https://www.googleapis.com/auth/firebase.messaging"
_REQUIRED_KEYS = ("type", "project_id", "private_key", "client_email", "token_uri")


def load_service_account(path: Path) -> dict[str, Any]:
    """The service account JSON, checked enough that a wrong file fails now, not at the first push."""
    try:
        info = json.loads(Path(path).read_text())
    except OSError as err:
        raise ValueError(f"cannot read {path}: {err.strerror or err}") from None
    except json.JSONDecodeError as err:
        raise ValueError(f"{path} is not JSON: {err}") from None
    if not isinstance(info, dict):
        raise ValueError(f"{path}: expected a service account JSON object")
    missing = [key for key in _REQUIRED_KEYS if not info.get(key)]
    if missing:
        raise ValueError(f"{path}: not a service account key, missing {', '.join(missing)}")
    if info["type"] != "service_account":
        raise ValueError(f"{path}: type is {info['type']!r}, expected 'service_account'")
    try:
        service_account.Credentials.from_service_account_info(info)
    except (ValueError, TypeError) as err:
        raise ValueError(f"{path}: unusable private_key: {err}") from None
    return info


class _Response(auth_transport.Response):
    def __init__(self, response: httpx.Response) -> None:
        self._response = response

    @property
    def status(self) -> int:
        return self._response.status_code

    @property
    def headers(self) -> Mapping[str, str]:
        return self._response.headers

    @property
    def data(self) -> bytes:
        return self._response.content


class _HttpxRequest(auth_transport.Request):
    """google-auth's transport interface over httpx, so token requests honour our TLS settings."""

    def __init__(self, client: httpx.Client) -> None:
        self._client = client

    def __call__(self, url: str, method: str = "GET", body: bytes | None = None,
                 headers: Mapping[str, str] | None = None, timeout: float | None = None,
                 **kwargs: Any) -> _Response:
        try:
            response = self._client.request(method, url, content=body, headers=headers,
                                             timeout=timeout if timeout is not None else httpx.USE_CLIENT_DEFAULT)
        except httpx.HTTPError as err:
            raise auth_exceptions.TransportError(f"{method} {url}: {err}") from err
        return _Response(response)


class FcmAdapter:
    """Sends to FCM registration tokens of one Firebase project."""

    def __init__(self, credentials: service_account.Credentials, project_id: str, *,
                 base_url: str = FCM_BASE_URL, verify: ssl.SSLContext | bool = True,
                 timeout_s: float = 10.0) -> None:
        redact_httpx_logs()
        self._credentials = credentials
        self._url = f"{base_url.rstrip('/')}/v1/projects/{project_id}/messages:send"
        self._client = httpx.AsyncClient(http2=True, verify=verify, timeout=timeout_s)
        # http2 on both clients so they set the same ALPN list on a shared SSLContext (httpcore sets it per connection).
        self._token_client = httpx.Client(http2=True, verify=verify, timeout=timeout_s)
        self._token_request = _HttpxRequest(self._token_client)
        self._token_lock = asyncio.Lock()

    @classmethod
    def from_service_account_file(cls, path: Path, *, project_id: str | None = None,
                                  base_url: str = FCM_BASE_URL, verify: ssl.SSLContext | bool = True,
                                  timeout_s: float = 10.0) -> FcmAdapter:
        info = load_service_account(path)
        credentials = service_account.Credentials.from_service_account_info(info, scopes=[FCM_SCOPE])
        return cls(credentials, project_id or info["project_id"], base_url=base_url, verify=verify,
                   timeout_s=timeout_s)

    async def send(self, target: str, message: PushMessage) -> PushResult:
        body = {"message": _message(target, message)}
        try:
            token = await self._access_token()
            response = await self._post(body, token)
            if response.status_code == 401:
                log.info("FCM refused the access token; fetching a new one")
                token = await self._access_token(stale=token)
                response = await self._post(body, token)
        except auth_exceptions.GoogleAuthError as err:
            return PushResult(False, None, f"no FCM access token: {err}")
        except httpx.HTTPError as err:
            return PushResult(False, None, f"FCM unreachable: {err!r}")
        result = _result(response)
        if not result.ok:
            log.warning("FCM push to %s failed: %s %s", short(target), result.status, result.reason)
        return result

    async def aclose(self) -> None:
        await self._client.aclose()
        self._token_client.close()

    async def _post(self, body: dict[str, Any], token: str) -> httpx.Response:
        return await self._client.post(self._url, json=body, headers={"Authorization": f"Bearer {token}"})

    async def _access_token(self, stale: str | None = None) -> str:
        """The cached token, refreshed when near expiry or when it is `stale` (refused by FCM)."""
        async with self._token_lock:
            creds = self._credentials
            if not creds.valid or (stale is not None and creds.token == stale):
                await asyncio.to_thread(creds.refresh, self._token_request)
            return str(creds.token)


def _message(target: str, message: PushMessage) -> dict[str, Any]:
    android: dict[str, Any] = {"ttl": f"{message.ttl_s}s"}
    if message.collapse_key is not None:
        android["collapse_key"] = message.collapse_key
    return {
        "token": target,
        "notification": {"title": message.title, "body": message.body},
        "data": dict(message.data),
        "android": android,
    }


def _result(response: httpx.Response) -> PushResult:
    status = response.status_code
    if status == 200:
        return PushResult(True, status, str(_json(response).get("name", "sent")))
    error = _json(response).get("error")
    error = error if isinstance(error, dict) else {}
    code = _fcm_error_code(error) or str(error.get("status") or "")
    reason = f"{code or 'HTTP ' + str(status)}: {error.get('message') or response.reason_phrase}"
    retry_after = parse_retry_after(response.headers.get("retry-after"))
    # Only FCM's own UNREGISTERED code drops a token: a bare 404 may be a wrong base URL or project,
    # and treating it as "unregistered" would delete every registration.
    return PushResult(False, status, reason, retry_after_s=retry_after, unregistered=code == "UNREGISTERED")


def _fcm_error_code(error: dict[str, Any]) -> str | None:
    """FCM's own error code (UNREGISTERED, QUOTA_EXCEEDED, ...), more precise than the HTTP status."""
    for detail in error.get("details") or ():
        if isinstance(detail, dict) and str(detail.get("@type", "")).endswith("google.firebase.fcm.v1.FcmError"):
            return str(detail.get("errorCode") or "") or None
    return None


def _json(response: httpx.Response) -> dict[str, Any]:
    try:
        value = response.json()
    except ValueError:
        return {}
    return value if isinstance(value, dict) else {}
