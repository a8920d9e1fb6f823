"""The app's side of the gateway API: register with consent, withdraw, receive offers live, redeem.

Every endpoint but registration takes the install's bearer token (`Authorization: Bearer ...`,
checked as the `app` role by `gateway.roles`, or `?token=` on the WebSocket, which browsers cannot
give headers). Registration is public: the explicit consent is what it asks for. Consent must be given as the
literal `true`: an absent or false consent is a 422 that says so, and nothing is stored.
(No `from __future__ import annotations` here: FastAPI must see the dependencies defined inside
`app_router` when it reads the endpoints' annotations.)
"""


import asyncio
import base64
import binascii
import json
from collections.abc import AsyncIterator, Callable
from typing import Annotated, Any, Literal

from fastapi import (
    APIRouter,
    HTTPException,
    Query,
    WebSocket,
    WebSocketDisconnect,
    status,
)
from fastapi.responses import StreamingResponse
from pydantic import BaseModel, ConfigDict, Field, field_validator, model_validator

from gateway.installs import InstallRegistry
from gateway.push.webpush import WebPushSubscription
from gateway.push_hub import CLOSE, PushHub
from gateway.roles import HTTPError, Principal, Role, public, requires

SEGMENT = r"^[A-Za-z0-9_-]{1,64}$"
SSE_KEEPALIVE_S = 15.0


class PushTarget(BaseModel):
    model_config = ConfigDict(extra="forbid")

    platform: Literal["fcm", "apns", "webpush"]
    token: str | None = Field(None, max_length=4096, repr=False, description="FCM registration token or APNs device token.")
    subscription: dict[str, Any] | None = Field(None, repr=False, description="Web Push subscription: endpoint and keys.")

    @model_validator(mode="after")
    def _target_of_platform(self) -> "PushTarget":
        if self.platform == "webpush":
            if self.subscription is None:
                raise ValueError("a webpush target needs 'subscription' (the browser's PushSubscription.toJSON())")
            WebPushSubscription.model_validate(self.subscription)
        elif not self.token:
            raise ValueError(f"a {self.platform} target needs 'token'")
        return self


class RegisterRequest(BaseModel):
    model_config = ConfigDict(extra="forbid")

    consent: Literal[True] = Field(description="Explicit opt-in to proximity offers; must be true.")
    segments: list[Annotated[str, Field(pattern=SEGMENT)]] = Field(default_factory=list, max_length=32)
    x25519_public_key: str | None = Field(
        None, description="Base64 X25519 public key of the app: the identity key is then agreed as Eddystone-EID "
                          "does and never sent. Without it the gateway issues the key.")
    beacon_time: int | None = Field(None, ge=0, le=2**32 - 1,
                                    description="The app's EID clock in seconds, if not Unix time (32 bits, as "
                                                "Eddystone-EID counts).")
    push: PushTarget | None = None

    @field_validator("x25519_public_key")
    @classmethod
    def _key(cls, value: str | None) -> str | None:
        if value is not None:
            try:
                raw = base64.b64decode(value, validate=True)
            except (binascii.Error, ValueError):
                raise ValueError("x25519_public_key must be base64") from None
            if len(raw) != 32:
                raise ValueError(f"x25519_public_key must be 32 bytes, got {len(raw)}")
        return value


class RegisterResponse(BaseModel):
    install_id: str
    token: str = Field(description="Bearer token of this install; shown once.")
    identity_key: str | None = Field(None, description="Base64 EID identity key, when the gateway issued it.")
    resolver_public_key: str | None = Field(None, description="Base64 X25519 key of the gateway, when agreed.")
    rotation_exponent: int = Field(description="The EID changes every 2^K seconds.")


class Redemption(BaseModel):
    decision_id: str
    redeemed_at: float


def app_router(registry: InstallRegistry, hub: PushHub,
               redeem: Callable[[str, str], Redemption | None]) -> APIRouter:
    """`redeem(install_id, decision_id)` records a redemption; None when no such offer was sent to it."""
    router = APIRouter(prefix="/api/app", tags=["app"])

    Install = Annotated[Principal, requires(Role.APP)]  # .subject is the install id

    @router.post("/installs", status_code=201, response_model=RegisterResponse,
                 summary="Register an app install that consents to proximity offers",
                 description="Public: an install has no credential before this call; the explicit consent in "
                             "the body is what it takes.", openapi_extra=public())
    def register(body: RegisterRequest) -> RegisterResponse:
        key = base64.b64decode(body.x25519_public_key) if body.x25519_public_key else None
        reg = registry.register(body.segments, key, body.beacon_time,
                                body.push.model_dump(exclude_none=True) if body.push else None)
        return RegisterResponse(
            install_id=reg.install_id, token=reg.token, rotation_exponent=reg.rotation_exponent,
            identity_key=base64.b64encode(reg.identity_key).decode() if reg.identity_key else None,
            resolver_public_key=base64.b64encode(reg.resolver_public_key).decode() if reg.resolver_public_key else None,
        )

    @router.delete("/installs/me", status_code=204, summary="Withdraw consent: keys deleted, no further push")
    def withdraw(install: Install) -> None:
        registry.withdraw(install.subject)
        hub.close(install.subject)

    @router.put("/installs/me/push", status_code=204, summary="Set or clear the background push target")
    def set_push(install: Install, target: PushTarget | None = None) -> None:
        registry.set_push(install.subject, target.model_dump(exclude_none=True) if target else None)

    @router.post("/offers/{decision_id}/redeem", response_model=Redemption, summary="Redeem an offer that was sent",
                 responses={404: {"model": HTTPError, "description": "No such offer was sent to this install."}})
    def redeem_offer(decision_id: str, install: Install) -> Redemption:
        done = redeem(install.subject, decision_id)
        if done is None:
            raise HTTPException(status.HTTP_404_NOT_FOUND, f"no offer {decision_id!r} was sent to this install")
        return done

    @router.websocket("/ws")
    async def offers_ws(websocket: WebSocket, token: Annotated[str, Query()] = "") -> None:
        install_id = await asyncio.to_thread(registry.authenticate, token) if token else None
        if install_id is None:
            await websocket.close(code=4401, reason="unknown token, or consent was withdrawn")
            return
        await websocket.accept()
        queue = hub.connect(install_id)
        receiving: asyncio.Future[Any] = asyncio.ensure_future(websocket.receive())
        getting: asyncio.Future[Any] | None = None
        try:
            while True:
                getting = asyncio.ensure_future(queue.get())
                done, _ = await asyncio.wait({receiving, getting}, return_when=asyncio.FIRST_COMPLETED)
                if receiving in done:
                    getting.cancel()
                    if receiving.result().get("type") == "websocket.disconnect":
                        return
                    receiving = asyncio.ensure_future(websocket.receive())
                    continue
                item = getting.result()
                if item is CLOSE:
                    receiving.cancel()
                    await websocket.close(code=4403, reason="consent withdrawn")
                    return
                await websocket.send_text(json.dumps(item))
        except WebSocketDisconnect:
            return
        finally:
            for future in (receiving, getting):
                if future is not None and not future.done():
                    future.cancel()
            hub.disconnect(install_id, queue)

    @router.get("/stream", summary="Offers as Server-Sent Events (fallback where WebSockets are blocked)",
                response_class=StreamingResponse)
    async def offers_sse(install: Install) -> StreamingResponse:
        install_id = install.subject
        queue = hub.connect(install_id)

        async def events() -> AsyncIterator[bytes]:
            try:
                yield b": connected\n\n"
                while True:
                    try:
                        item = await asyncio.wait_for(queue.get(), SSE_KEEPALIVE_S)
                    except TimeoutError:
                        yield b": keep-alive\n\n"
                        continue
                    if item is CLOSE:
                        return
                    yield f"event: offer\nid: {item.get('decision_id', '')}\ndata: {json.dumps(item)}\n\n".encode()
            finally:
                hub.disconnect(install_id, queue)

        return StreamingResponse(events(), media_type="text/event-stream", headers={"Cache-Control": "no-store"})

    return router
