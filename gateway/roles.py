"""Who may call which endpoint: four roles, each with its own credential, checked on every request.

- **installer** and **marketer**: a named API token (`omnisense access create`), sent as
  `Authorization: Bearer ...`. Only its SHA-256 is stored, in the `api_tokens` table of the
  gateway's database, so a revocation from the command line takes effect on the next request.
- **app**: an app install's own bearer token (`POST /api/app/installs`); it stops working the
  moment the install withdraws consent.
- **node**: HTTP Basic with the node id and its MQTT password, checked by a callable the gateway
  is given (none: node credentials are never accepted).

An endpoint states its roles with `requires(...)`, either for a whole router
(`APIRouter(dependencies=[requires(Role.INSTALLER)])`) or as a parameter that receives the caller
(`principal: Annotated[Principal, Depends(requires(Role.NODE))]`); a public one says so with
`openapi_extra=public()`. `document_roles` writes both into the OpenAPI document (`x-roles`, a
sentence in the description, the 401 and 403 answers), so clients and tests read them from there.

No credential, or one that is unknown, revoked or withdrawn, is a 401 with `WWW-Authenticate`; a
valid credential of a role the endpoint does not accept is a 403 naming the roles it needs.
(No `from __future__ import annotations`: FastAPI reads the checkers' annotations at run time.)
"""

import base64
import binascii
import hashlib
import hmac
import inspect
import os
import re
import secrets
import threading
import time
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from enum import StrEnum
from pathlib import Path
from typing import Annotated, Any

from fastapi import FastAPI, HTTPException, Request, Security, params, status
from fastapi.security import HTTPBasic, HTTPBasicCredentials, HTTPBearer
from fastapi.security.http import HTTPAuthorizationCredentials
from pydantic import BaseModel
from starlette.requests import HTTPConnection

from gateway.installs import InstallRegistry
from gateway.store import open_db

PUBLIC = "public"
TOKEN_PREFIX = "osk_"  # tells an API token from an app install's token in a config file or a log line
SCOPE_KEY = "omnisense.principal"  # the request's authentication result, computed once
NAME = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.@-]{0,63}$")


class Role(StrEnum):
    INSTALLER = "installer"
    MARKETER = "marketer"
    APP = "app"
    NODE = "node"


TOKEN_ROLES = (Role.INSTALLER, Role.MARKETER)  # the roles that hold API tokens


@dataclass(frozen=True)
class Principal:
    """The caller of a request: its role and who it is (token name, install id or node id)."""

    role: Role
    subject: str


def _hash(token: str) -> str:
    return hashlib.sha256(token.encode()).hexdigest()


class ApiTokens:
    """Named API tokens of installers and marketers, in the gateway's SQLite database.

    Safe to use from the gateway and from `omnisense access` at the same time (WAL, busy timeout):
    nothing is cached, so a token created or revoked by either is seen by the other at once.
    """

    def __init__(self, db_path: Path) -> None:
        self.db = open_db(db_path)
        self.db.execute("PRAGMA busy_timeout = 5000")
        os.chmod(db_path, 0o600)  # as InstallRegistry does: the file holds every credential's hash
        self._lock = threading.Lock()
        with self._lock:
            self.db.execute("CREATE TABLE IF NOT EXISTS api_tokens (name TEXT PRIMARY KEY, role TEXT NOT NULL, "
                            "token_hash TEXT NOT NULL UNIQUE, created_at REAL NOT NULL, revoked_at REAL)")

    def close(self) -> None:
        self.db.conn.close()

    def create(self, role: Role, name: str) -> str:
        """A new token for `name`; returned once, only its hash is kept. Names are never reused, so
        the list stays a record of who had access."""
        role = Role(role)
        if role not in TOKEN_ROLES:
            raise ValueError(f"API tokens are for {' and '.join(TOKEN_ROLES)}; {role} has its own credential")
        if not NAME.match(name):
            raise ValueError(f"token name {name!r}: 1-64 letters, digits, '_', '.', '@' or '-', "
                             "starting with a letter or digit")
        token = TOKEN_PREFIX + secrets.token_urlsafe(32)
        with self._lock:
            taken = next(self.db.query("SELECT revoked_at FROM api_tokens WHERE name = ?", [name]), None)
            if taken is not None:
                state = "a revoked token" if taken["revoked_at"] else "an active token"
                raise ValueError(f"the name {name!r} is taken by {state}; names are kept for the record, "
                                 "choose another")
            self.db.execute("INSERT INTO api_tokens (name, role, token_hash, created_at) VALUES (?, ?, ?, ?)",
                            [name, str(role), _hash(token), time.time()])
        return token

    def authenticate(self, token: str) -> Principal | None:
        """The holder of an active token, or None."""
        digest = _hash(token)
        with self._lock:
            row = next(self.db.query("SELECT name, role, token_hash FROM api_tokens "
                                     "WHERE token_hash = ? AND revoked_at IS NULL", [digest]), None)
        # The lookup is by a hash, which tells an attacker nothing; the comparison is constant-time anyway.
        if row is None or not hmac.compare_digest(row["token_hash"], digest):
            return None
        return Principal(Role(row["role"]), row["name"])

    def revoke(self, name: str) -> bool:
        """True if an active token of that name was revoked; it is refused from the next request on."""
        with self._lock:
            cursor = self.db.execute("UPDATE api_tokens SET revoked_at = ? WHERE name = ? AND revoked_at IS NULL",
                                     [time.time(), name])
        return cursor.rowcount > 0

    def list(self) -> list[dict[str, Any]]:
        """Every token ever created, oldest first: name, role, created_at, revoked_at (never the token)."""
        with self._lock:
            return list(self.db.query("SELECT name, role, created_at, revoked_at FROM api_tokens "
                                      "ORDER BY created_at, name"))


class BadCredential(Exception):
    """A credential that was sent but is not valid; the message says what to fix."""

    def __init__(self, message: str, scheme: str) -> None:
        super().__init__(message)
        self.scheme = scheme  # "bearer", "basic" or "" (neither)


class Authenticator:
    """Turns an `Authorization` header into a Principal, whatever role it belongs to.

    `node_password_ok(node_id, password)` must compare in constant time; without it, node
    credentials are never accepted.
    """

    def __init__(self, tokens: ApiTokens, installs: InstallRegistry,
                 node_password_ok: Callable[[str, str], bool] | None = None) -> None:
        self.tokens = tokens
        self.installs = installs
        self.node_password_ok = node_password_ok

    def bearer(self, token: str) -> Principal | None:
        """An API token or an app install's token (the prefix only saves a lookup, it decides nothing)."""
        principal = self.tokens.authenticate(token) if token.startswith(TOKEN_PREFIX) else None
        if principal is not None:
            return principal
        install_id = self.installs.authenticate(token)
        return None if install_id is None else Principal(Role.APP, install_id)

    def basic(self, node_id: str, password: str) -> Principal | None:
        if self.node_password_ok is None or not node_id or not password:
            return None
        return Principal(Role.NODE, node_id) if self.node_password_ok(node_id, password) else None

    def authenticate(self, authorization: str | None) -> Principal | None:
        """None when no credential was sent; BadCredential when one was sent and is not valid."""
        if not authorization or not authorization.strip():
            return None
        scheme, _, value = authorization.strip().partition(" ")
        value = value.strip()
        if not value and scheme.lower() in ("bearer", "basic"):
            return None  # the scheme without a credential: answered like no header, with what to send
        if scheme.lower() == "bearer" and value:
            principal = self.bearer(value)
            if principal is None:
                raise BadCredential("unknown or revoked token", "bearer")
            return principal
        if scheme.lower() == "basic" and value:
            try:
                node_id, colon, password = base64.b64decode(value, validate=True).decode().partition(":")
            except (binascii.Error, ValueError):
                raise BadCredential("malformed Basic credential: base64 of 'node_id:password'", "basic") from None
            if not colon:
                raise BadCredential("malformed Basic credential: base64 of 'node_id:password'", "basic")
            principal = self.basic(node_id, password)
            if principal is None:
                raise BadCredential("unknown node or wrong password", "basic")
            return principal
        raise BadCredential("unsupported Authorization header: send 'Bearer <token>' or HTTP Basic", "")


# --- FastAPI: the dependency and the OpenAPI document -------------------------------------------

class _Documented:
    """Mixin: the scheme appears in the OpenAPI document, the Authenticator reads the header.

    FastAPI's own classes would answer a malformed Basic header with their own 401 before the
    role check had a say; returning None leaves every decision to one place."""

    async def __call__(self, request: HTTPConnection) -> None:  # type: ignore[override]
        return None


class _BearerScheme(_Documented, HTTPBearer):
    pass


class _BasicScheme(_Documented, HTTPBasic):
    pass


BEARER = _BearerScheme(scheme_name="bearer", auto_error=False,
                       description="installer or marketer: an API token from `omnisense access create`; "
                                   "app: the install's token from `POST /api/app/installs`.")
BASIC = _BasicScheme(scheme_name="nodeBasic", auto_error=False,
                     description="node: the node id as user name and its MQTT password.")

_HINTS = {Role.INSTALLER: "an installer's API token as 'Authorization: Bearer ...'",
          Role.MARKETER: "a marketer's API token as 'Authorization: Bearer ...'",
          Role.APP: "the install's token as 'Authorization: Bearer ...'",
          Role.NODE: "the node id and MQTT password as HTTP Basic"}

# Each requirement tags its schemes with one scope naming its whole role set; FastAPI merges the
# scopes of an operation's requirements per scheme, and `document_roles` intersects the sets
# (a router's and an endpoint's requirement both apply) and rewrites them as plain role names.
_TAG = "roles:"


def _ordered(roles: Iterable[Role]) -> list[Role]:
    wanted = set(roles)
    return [r for r in Role if r in wanted]


def _needs(roles: Iterable[Role]) -> str:
    names = [str(r) for r in _ordered(roles)]
    return f"the {names[0]} role" if len(names) == 1 else f"one of the roles {', '.join(names)}"


def _challenge(roles: frozenset[Role]) -> str:
    schemes = []
    if roles - {Role.NODE}:
        schemes.append('Bearer realm="omnisense"')
    if Role.NODE in roles:
        schemes.append('Basic realm="omnisense"')
    return ", ".join(schemes)


def _caller(request: HTTPConnection, roles: frozenset[Role]) -> Principal:
    """Authenticate once per request (a router's and an endpoint's requirement share the result)."""
    if SCOPE_KEY in request.scope:
        found = request.scope[SCOPE_KEY]
    else:
        auth: Authenticator | None = getattr(request.app.state, "auth", None)
        if auth is None:
            raise RuntimeError("the app has no Authenticator at app.state.auth: every role check would fail")
        try:
            found = auth.authenticate(request.headers.get("authorization"))
        except BadCredential as err:
            found = err
        request.scope[SCOPE_KEY] = found
    if found is None or isinstance(found, BadCredential):
        if found is None:
            detail = "send " + " or ".join(_HINTS[r] for r in _ordered(roles))
        elif roles == {Role.APP} and found.scheme == "bearer":
            detail = "unknown token, or consent was withdrawn"  # what the app has always been told
        else:
            detail = str(found)
        raise HTTPException(status.HTTP_401_UNAUTHORIZED, detail, headers={"WWW-Authenticate": _challenge(roles)})
    if found.role not in roles:
        raise HTTPException(status.HTTP_403_FORBIDDEN,
                            f"this endpoint needs {_needs(roles)}; the credential sent is of the {found.role} role")
    return found


def _checker(roles: frozenset[Role]) -> Callable[..., Principal]:
    """A dependency whose signature names only the schemes these roles use, for the OpenAPI document."""
    tag = [_TAG + ",".join(_ordered(roles))]
    Bearer = Annotated[HTTPAuthorizationCredentials | None, Security(BEARER, scopes=tag)]
    Basic = Annotated[HTTPBasicCredentials | None, Security(BASIC, scopes=tag)]
    if Role.NODE in roles and roles - {Role.NODE}:
        def check(request: Request, _bearer: Bearer, _basic: Basic) -> Principal:
            return _caller(request, roles)
    elif Role.NODE in roles:
        def check(request: Request, _basic: Basic) -> Principal:  # type: ignore[misc]
            return _caller(request, roles)
    else:
        def check(request: Request, _bearer: Bearer) -> Principal:  # type: ignore[misc]
            return _caller(request, roles)
    check.__doc__ = f"Requires {_needs(roles)}."
    return check


class _Requirement(params.Depends):
    """`requires(...)` as both a dependency marker and a callable.

    As a `Depends` it goes straight into `dependencies=[...]` or `Annotated[Principal, requires(...)]`;
    being callable with the checker's signature, `Depends(requires(...))` works as well."""

    @property
    def __signature__(self) -> inspect.Signature:
        return inspect.signature(self.dependency)  # type: ignore[arg-type]

    def __call__(self, *args: Any, **kwargs: Any) -> Principal:
        return self.dependency(*args, **kwargs)  # type: ignore[misc]


def requires(*roles: Role) -> _Requirement:
    """The endpoint accepts callers of these roles; as a parameter it receives the Principal."""
    if not roles:
        raise ValueError("requires() needs at least one role; a public endpoint uses openapi_extra=public()")
    return _Requirement(_checker(frozenset(Role(r) for r in roles)))


def public() -> dict[str, Any]:
    """`openapi_extra` of an endpoint that takes no credential (say why in its description)."""
    return {"x-roles": [PUBLIC]}


class HTTPError(BaseModel):
    """The body of an error FastAPI raises: what was wrong, in words. Use as `responses={404: {"model": HTTPError}}`."""

    detail: str


_ERROR = {"application/json": {"schema": {"$ref": "#/components/schemas/HTTPError"}}}


def _document(path: str, method: str, operation: dict[str, Any]) -> None:
    """Turn the role tags FastAPI collected into `x-roles`, clean security requirements and answers."""
    tagged = [scope for requirement in operation.get("security", []) for scopes in requirement.values()
              for scope in scopes if scope.startswith(_TAG)]
    if not tagged:
        if operation.get("x-roles") == [PUBLIC]:
            _append(operation, "**Public:** no credential needed.")
        return  # neither a requirement nor public(): no x-roles, which tests/test_api_roles.py reports
    if operation.get("x-roles") == [PUBLIC]:
        raise RuntimeError(f"{method.upper()} {path} is marked public() but requires roles")
    roles = frozenset(Role)
    for scope in set(tagged):
        roles &= {Role(name) for name in scope.removeprefix(_TAG).split(",")}
    names = [str(r) for r in _ordered(roles)]
    kept = [{name: [s for s in scopes if not s.startswith(_TAG)]} for requirement in operation["security"]
            for name, scopes in requirement.items() if name not in (BEARER.scheme_name, BASIC.scheme_name)]
    bearer, basic = [n for n in names if n != Role.NODE], [n for n in names if n == Role.NODE]
    operation["security"] = kept + ([{BEARER.scheme_name: bearer}] if bearer else []) + \
        ([{BASIC.scheme_name: basic}] if basic else [])  # OpenAPI 3.1: role names as the "scopes"
    operation["x-roles"] = names
    _append(operation, f"**Roles:** {', '.join(names) or 'none (its requirements exclude each other)'}.")
    responses = operation.setdefault("responses", {})
    responses.setdefault("401", {"description": "No credential, or an unknown, revoked or withdrawn one.",
                                 "headers": {"WWW-Authenticate": {"schema": {"type": "string"}}}, "content": _ERROR})
    responses.setdefault("403", {"description": f"A valid credential of a role other than {' or '.join(names)}.",
                                 "content": _ERROR})


def amend_openapi(app: FastAPI, amend: Callable[[str, str, dict[str, Any]], None]) -> None:
    """Have `amend(path, method, operation)` edit every operation of the app's OpenAPI document, each
    time FastAPI generates it (it does again when routes are added)."""
    generate = app.openapi
    done: list[int] = []  # id of the last document amended

    def openapi() -> dict[str, Any]:
        schema = generate()
        if done and done[-1] == id(schema):
            return schema
        schemas = schema.setdefault("components", {}).setdefault("schemas", {})
        schemas.setdefault("HTTPError", HTTPError.model_json_schema())
        for path, operations in schema.get("paths", {}).items():
            for method, operation in operations.items():
                if isinstance(operation, dict) and "responses" in operation:
                    amend(path, method, operation)
        done.append(id(schema))
        return schema

    app.openapi = openapi  # type: ignore[method-assign]


def document_roles(app: FastAPI) -> None:
    """Write each operation's roles into the app's OpenAPI document: `x-roles`, a sentence in the
    description, security requirements with the role names, and the 401/403 answers."""
    amend_openapi(app, _document)


def _append(operation: dict[str, Any], sentence: str) -> None:
    text = operation.get("description", "")
    operation["description"] = f"{text}\n\n{sentence}" if text else sentence
