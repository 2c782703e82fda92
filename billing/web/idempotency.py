"""``Idempotency-Key`` on every POST and PATCH under /v1: a retried request is answered, not run again.

The first request with a key claims it (a row of :mod:`billing.web.idempotency_keys`), runs, and
stores its answer; the same request again (method, path with its query, and body, JSON compared
canonically) gets that answer with ``Idempotent-Replayed: true``. Another request with the key is
409 ``idempotency_key_reused``; any while the first still runs, 409 ``idempotency_key_in_use``.
Answers that say the request was refused before it did anything (400, 401, 403, 422, 429, 503)
are not kept: the key is released, so that the corrected request may use it. Requests without
the header pass straight through, with no database access.

It runs after authentication (it needs the tenant) and around the route's own error handling,
so it sees every answer as the client will.
"""

from __future__ import annotations

import hashlib
import re
from decimal import Decimal
from typing import Any

import msgspec
import structlog
from litestar import Request
from litestar.enums import ScopeType
from litestar.types import ASGIApp, Message, Receive, Scope, Send
from sqlalchemy.exc import SQLAlchemyError

from billing.core.context import AppContext
from billing.core.errors import BadRequest, Conflict
from billing.web.auth import Principal
from billing.web.idempotency_keys import (
    Claimed,
    Fingerprint,
    InUse,
    Replay,
    Reused,
    StoredResponse,
    claim,
    release,
    store,
)

HEADER = b"idempotency-key"
REPLAYED = (b"idempotent-replayed", b"true")
METHODS = frozenset({"POST", "PATCH"})
NOT_KEPT = frozenset({400, 401, 403, 422, 429, 503})
_VALID_KEY = re.compile(rb"[\x20-\x7e]{1,255}")
# Headers that belong to one delivery of an answer, not to the answer.
_NOT_REPLAYED = frozenset({"date", "server", "set-cookie", "x-request-id", "idempotent-replayed"})
_canonical_encoder = msgspec.json.Encoder(decimal_format="number", order="sorted")
_exact_decoder = msgspec.json.Decoder(float_hook=Decimal)
log = structlog.get_logger("billing.web.idempotency")


class InvalidIdempotencyKey(BadRequest):
    code, title = "invalid_idempotency_key", "Invalid idempotency key"


def idempotency_key(scope: Scope) -> str | None:
    """The request's key, None without the header; 400 for one that is not 1..255 printable ASCII."""
    for name, value in scope.get("headers", ()):
        if name == HEADER:
            if not _VALID_KEY.fullmatch(value):
                raise InvalidIdempotencyKey("Idempotency-Key must be 1 to 255 printable ASCII characters")
            return value.decode("ascii")
    return None


def request_hash(body: bytes) -> str:
    """The body's digest: of its canonical form (sorted keys, no spaces, numbers exactly as sent)
    when it is JSON, of its bytes otherwise."""
    try:
        canonical = b"json:" + _canonical_encoder.encode(_exact_decoder.decode(body))
    except (msgspec.DecodeError, msgspec.EncodeError):
        canonical = b"bytes:" + body
    return hashlib.sha256(canonical).hexdigest()


def key_scope(principal: Principal) -> str:
    """Whose keys these are: the tenant's."""
    return principal.tenant_id


class IdempotencyMiddleware:
    def __init__(self, app: ASGIApp) -> None:
        self.app = app

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != ScopeType.HTTP or scope["method"] not in METHODS:
            await self.app(scope, receive, send)
            return
        key = idempotency_key(scope)
        principal = scope.get("auth")
        if key is None or not isinstance(principal, Principal):
            await self.app(scope, receive, send)
            return
        # Read here, the body stays cached in the scope for the handler.
        body = await Request[Any, Any, Any](scope, receive).body()
        fingerprint = Fingerprint(scope["method"], _path(scope), request_hash(body))
        ctx: AppContext = scope["app"].state.ctx
        owner = key_scope(principal)
        outcome = await claim(ctx, owner, key, fingerprint)
        if isinstance(outcome, Reused):
            raise Conflict(
                "This Idempotency-Key was used with another method, path or body",
                code="idempotency_key_reused",
            )
        if isinstance(outcome, InUse):
            raise Conflict(
                "A request with this Idempotency-Key is still running; retry later",
                code="idempotency_key_in_use",
            )
        if isinstance(outcome, Replay):
            await _send(send, outcome.response, replayed=True)
            return
        await self._run(ctx, scope, receive, send, owner, key, outcome)

    async def _run(
        self,
        ctx: AppContext,
        scope: Scope,
        receive: Receive,
        send: Send,
        owner: str,
        key: str,
        claimed: Claimed,
    ) -> None:
        answer = _Recorder()
        try:
            await self.app(scope, receive, answer.record)
        except BaseException:
            await _settle(release(ctx, owner, key, claimed.owner))
            raise
        response = answer.response()
        if response.status in NOT_KEPT:
            await _settle(release(ctx, owner, key, claimed.owner))
        else:
            await _settle(store(ctx, owner, key, claimed.owner, response))
        await _send(send, response, replayed=False)


class _Recorder:
    """Collects the answer instead of sending it: it is stored before the client sees it, so
    that a client that got it and retries gets it again, never ``in_use``."""

    def __init__(self) -> None:
        self.status = 500
        self.headers: list[tuple[str, str]] = []
        self.chunks: list[bytes] = []

    async def record(self, message: Message) -> None:
        if message["type"] == "http.response.start":
            self.status = message["status"]
            self.headers = [
                (name.decode("latin-1"), value.decode("latin-1"))
                for name, value in message.get("headers", ())
            ]
        elif message["type"] == "http.response.body":
            self.chunks.append(message.get("body", b""))

    def response(self) -> StoredResponse:
        headers = [(name, value) for name, value in self.headers if name.lower() not in _NOT_REPLAYED]
        return StoredResponse(self.status, headers, b"".join(self.chunks))


async def _send(send: Send, response: StoredResponse, *, replayed: bool) -> None:
    headers = [(name.encode("latin-1"), value.encode("latin-1")) for name, value in response.headers]
    if replayed:
        headers.append(REPLAYED)
    await send({"type": "http.response.start", "status": response.status, "headers": headers})
    await send({"type": "http.response.body", "body": response.body, "more_body": False})


async def _settle(step: Any) -> None:
    """Record the outcome; if the database fails now, the answer still goes out (the key stays
    in progress until it is abandoned, see ``ABANDONED_AFTER``)."""
    try:
        await step
    except (SQLAlchemyError, OSError) as error:
        log.warning("idempotency_key_not_settled", error_type=type(error).__name__)


def _path(scope: Scope) -> str:
    query = scope.get("query_string", b"")
    return scope["path"] + ("?" + query.decode("latin-1") if query else "")
