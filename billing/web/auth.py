"""API keys, scopes and tenant resolution.

Keys are shown once and stored as SHA-256 hashes: they carry 256 bits of randomness, so a fast
hash is enough and lookups stay a single indexed equality.
"""

from __future__ import annotations

import hashlib
import secrets
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from enum import StrEnum
from typing import Any

from litestar.connection import ASGIConnection
from litestar.enums import HttpMethod
from litestar.handlers.base import BaseRouteHandler
from litestar.middleware import AbstractAuthenticationMiddleware, AuthenticationResult
from litestar.types import ASGIApp
from sqlalchemy.ext.asyncio import AsyncSession

from billing.core.errors import Forbidden, Unauthorized
from billing.web.options import OPT_ALLOW

KEY_PREFIX = "bk_"
OPT_SCOPES = "scopes"


class Scope(StrEnum):
    ADMIN = "admin"
    INGEST = "ingest"
    FINANCE = "finance"


# Who may call a route, declared on every route through ``opt={"scopes": ...}``.
ADMIN: frozenset[Scope] = frozenset({Scope.ADMIN})
READ: frozenset[Scope] = frozenset({Scope.ADMIN, Scope.FINANCE})
FINANCE: frozenset[Scope] = frozenset({Scope.ADMIN, Scope.FINANCE})
INGEST: frozenset[Scope] = frozenset({Scope.ADMIN, Scope.INGEST})


@dataclass(frozen=True)
class Principal:
    tenant_id: str
    key_id: str
    scope: Scope

    @property
    def actor(self) -> str:
        return self.key_id


@dataclass(frozen=True)
class NewKey:
    plaintext: str
    prefix: str
    digest: str


def hash_key(plaintext: str) -> str:
    return hashlib.sha256(plaintext.encode()).hexdigest()


def generate_key() -> NewKey:
    plaintext = KEY_PREFIX + secrets.token_urlsafe(32)
    return NewKey(plaintext=plaintext, prefix=plaintext[:11], digest=hash_key(plaintext))


def bearer_token(connection: ASGIConnection[Any, Any, Any, Any]) -> str | None:
    header = connection.headers.get("authorization", "")
    scheme, _, token = header.partition(" ")
    if scheme.lower() != "bearer" or not token.strip():
        return None
    return token.strip()


# Finds the live key with this SHA-256 digest: the tenants domain's, handed in by app.py.
KeyLookup = Callable[[AsyncSession, str], Awaitable[Principal | None]]


class ApiKeyMiddleware(AbstractAuthenticationMiddleware):
    """Resolves the bearer key to a :class:`Principal`; unknown or revoked keys answer 401."""

    def __init__(self, app: ASGIApp, *, find_key: KeyLookup) -> None:
        super().__init__(app)
        self.find_key = find_key

    async def authenticate_request(
        self, connection: ASGIConnection[Any, Any, Any, Any]
    ) -> AuthenticationResult:
        token = bearer_token(connection)
        if token is None or not token.startswith(KEY_PREFIX) or len(token) > 200:
            raise Unauthorized()
        database = connection.app.state.database
        async with database.read() as session:
            principal = await self.find_key(session, hash_key(token))
        if principal is None:
            raise Unauthorized("The API key is unknown or revoked")
        connection.scope.setdefault("state", {})["tenant_id"] = principal.tenant_id
        return AuthenticationResult(user=principal, auth=principal)


def scope_guard(connection: ASGIConnection[Any, Any, Any, Any], handler: BaseRouteHandler) -> None:
    """Fail closed: a route that declares no scopes is reachable by nobody.

    OPTIONS needs no key: it is answered with the route's methods and nothing else
    (:mod:`billing.web.options`), and the middleware does not authenticate it (Litestar's
    default), but guards still run for it (litestar#2314).
    """
    if connection.scope.get("method") == HttpMethod.OPTIONS and OPT_ALLOW in handler.opt:
        return
    allowed = handler.opt.get(OPT_SCOPES)
    principal = connection.scope.get("auth")
    if not isinstance(principal, Principal) or not allowed or principal.scope not in allowed:
        scope = principal.scope.value if isinstance(principal, Principal) else "none"
        raise Forbidden(f"A key with scope {scope} may not call this operation")


def scopes(allowed: frozenset[Scope]) -> dict[str, Any]:
    """Route ``opt`` declaring who may call it: ``@get(..., opt=scopes(READ))``."""
    return {OPT_SCOPES: allowed}
