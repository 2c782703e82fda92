"""``POST /webhooks/stripe/{tenant_id}``: verify, filter, store, then acknowledge.

Public: outside the ``/v1`` router, so API keys play no part; the signature is the only
credential. Nothing is parsed before the signature verifies, and an unknown tenant, a tenant
without secrets and a bad signature get the very same answer.
"""

from __future__ import annotations

import contextlib
from datetime import UTC, datetime
from typing import Any

import msgspec
import structlog
from litestar import Controller, Request, Response, post
from litestar.params import FromPath

from billing.core.context import AppContext
from billing.core.errors import BadRequest, ServiceUnavailable
from billing.core.ids import has_prefix, new_id
from billing.stripe_events import inbox, signature
from billing.stripe_events.handlers import handled_types
from billing.stripe_events.metrics import OTHER, UNKNOWN, UNVERIFIED, count_delivery
from billing.stripe_events.models import RECEIVED
from billing.stripe_events.schemas import DeliveryAnswer, Envelope

log = structlog.get_logger("billing.stripe_events")
_decoder = msgspec.json.Decoder(Envelope)
_ANSWERS = {
    status: msgspec.json.encode(DeliveryAnswer(status)) for status in ("received", "duplicate", "ignored")
}
# Verified against when the tenant is unknown, so that its answer takes the same path.
_DECOY_SECRETS = (b"whsec_decoy-for-unknown-tenants",)
# A PATCH of the secrets racing a delivery: decide again, a few times at most.
RETRIES_ON_STALE = 3


class InvalidSignature(BadRequest):
    code, title = "invalid_signature", "Invalid signature"

    def __init__(self) -> None:
        super().__init__("The Stripe-Signature header does not verify this request")


class InvalidPayload(BadRequest):
    code, title = "invalid_payload", "Invalid payload"

    def __init__(self) -> None:
        super().__init__("The body is not a Stripe event")


class EventNotStored(ServiceUnavailable):
    code = "event_not_stored"

    def __init__(self, label: str = UNKNOWN) -> None:
        super().__init__("The event could not be stored; Stripe will retry", headers={"Retry-After": "10"})
        self.label = label


class _Stale(Exception):
    """The keys a decision was made with are no longer current: decide again with fresh ones."""


async def _fresh_keys(ctx: AppContext, tenant_id: str) -> inbox.TenantKeys | None:
    if not has_prefix(tenant_id, "ten") or len(tenant_id) > 40:
        return None
    try:
        return await inbox.tenant_keys(ctx.database, ctx.box, tenant_id)
    except inbox.KeysUnavailable as exc:
        raise EventNotStored() from exc


def _decode(body: bytes) -> Envelope:
    try:
        body.decode("utf-8")  # msgspec leaves the parts it skips or keeps raw unchecked
        envelope = _decoder.decode(body)
    except (UnicodeDecodeError, msgspec.DecodeError) as exc:  # DecodeError covers ValidationError
        raise InvalidPayload() from exc
    if not bytes(envelope.data.object).startswith(b"{"):
        raise InvalidPayload()
    return envelope


def _row(tenant_id: str, envelope: Envelope, body: bytes, now: datetime) -> dict[str, Any]:
    return {
        "id": new_id("ste"),
        "tenant_id": tenant_id,
        "stripe_event_id": envelope.id,
        "type": envelope.type,
        "livemode": envelope.livemode,
        "api_version": envelope.api_version,
        "created_at": datetime.fromtimestamp(envelope.created, UTC),
        "payload": body,
        "status": RECEIVED,
        "attempts": 0,
        "received_at": now,
        "next_attempt_at": now,
    }


async def _decide(
    ctx: AppContext,
    keys: inbox.TenantKeys | None,
    body: bytes,
    header: str | None,
    now: datetime,
    *,
    cached: bool,
) -> tuple[str, str]:
    """(type label, outcome) with these keys. With ``cached`` keys only storing is decided here:
    any other answer raises :class:`_Stale`, to be given with keys read afresh."""
    secrets = keys.secrets if keys is not None else _DECOY_SECRETS
    if not signature.verify(body, header, secrets, now=now.timestamp()) or keys is None:
        raise _Stale() if cached else InvalidSignature()
    try:
        envelope = _decode(body)
    except InvalidPayload:
        if cached:
            raise _Stale() from None
        raise
    if envelope.type not in handled_types(keys.payment_method_events) or envelope.livemode != keys.livemode:
        if cached:
            raise _Stale()
        return (envelope.type if envelope.type in handled_types(True) else OTHER), "ignored"
    try:
        stored = await inbox.store(ctx.database, ctx.box, _row(keys.tenant_id, envelope, body, now), keys)
    except inbox.StorageFailed:
        raise EventNotStored(envelope.type) from None
    if stored == inbox.STALE:
        raise _Stale()
    return envelope.type, "received" if stored == inbox.NEW else "duplicate"


async def _outcome(ctx: AppContext, tenant_id: str, body: bytes, header: str | None) -> tuple[str, str]:
    now = ctx.clock.now()
    cached = inbox.cached_keys(ctx.database, ctx.box, tenant_id)
    if cached is not None:
        with contextlib.suppress(_Stale):
            return await _decide(ctx, cached, body, header, now, cached=True)
    for _ in range(RETRIES_ON_STALE):
        keys = await _fresh_keys(ctx, tenant_id)
        with contextlib.suppress(_Stale):
            return await _decide(ctx, keys, body, header, now, cached=False)
    log.error("stripe_webhook_keys_kept_changing", tenant_id=tenant_id)
    raise EventNotStored()


async def receive(ctx: AppContext, tenant_id: str, body: bytes, header: str | None) -> str:
    """Store a verified delivery; answer ``received``, ``duplicate`` or ``ignored``."""
    try:
        label, outcome = await _outcome(ctx, tenant_id, body, header)
    except InvalidSignature:
        count_delivery(UNVERIFIED, "invalid_signature")
        raise
    except InvalidPayload:
        count_delivery(UNKNOWN, "invalid_payload")
        raise
    except EventNotStored as exc:
        count_delivery(exc.label, "failed")
        raise
    count_delivery(label, outcome)
    return outcome


def _signature_header(request: Request[Any, Any, Any]) -> str | None:
    """The one Stripe-Signature header (None if absent or repeated), read off the raw ASGI headers."""
    found = [value for name, value in request.scope["headers"] if name == b"stripe-signature"]
    return found[0].decode("latin-1") if len(found) == 1 else None


class StripeWebhookController(Controller):
    path = "/webhooks/stripe"
    include_in_schema = False

    @post("/{tenant_id:str}", status_code=200, summary="Receive a Stripe event (Stripe-Signature only)")
    async def receive_stripe_event(
        self, request: Request[Any, Any, Any], tenant_id: FromPath[str]
    ) -> Response[bytes]:
        # The hot path of the service: the context straight from the app state, no dependency injection.
        ctx: AppContext = request.app.state.ctx
        body = await request.body()
        outcome = await receive(ctx, tenant_id, body, _signature_header(request))
        return Response(_ANSWERS[outcome], status_code=200, media_type="application/json")
