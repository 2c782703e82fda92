"""Stripe's shapes as we read them, and ours on the wire.

Stripe's objects are decoded leniently: unknown fields are ignored, fields Stripe may leave out
or null have defaults, and ``request`` may be an object or (very old API versions) a string.
"""

from __future__ import annotations

from datetime import datetime
from typing import Annotated, Any, Literal

import msgspec

from billing.stripe_events.models import RECEIVED, StripeEvent

# Stripe's ``created`` is a Unix time in seconds; the bound keeps it a valid datetime.
UnixTime = Annotated[int, msgspec.Meta(ge=0, le=253_402_300_799)]
EventId = Annotated[str, msgspec.Meta(min_length=5, max_length=255, pattern=r"^evt_[A-Za-z0-9_]+$")]
EventType = Annotated[str, msgspec.Meta(min_length=1, max_length=100, pattern=r"^[a-z0-9_.]+$")]
ApiVersion = Annotated[str, msgspec.Meta(max_length=64)]


class EventRequest(msgspec.Struct):
    id: str | None = None
    idempotency_key: str | None = None


class EventData(msgspec.Struct):
    # Left undecoded on receipt: the handler decodes the shape it needs.
    object: msgspec.Raw
    previous_attributes: dict[str, Any] | None = None


class Envelope(msgspec.Struct):
    """What makes a body a Stripe event; everything else waits for processing."""

    id: EventId
    object: Literal["event"]
    type: EventType
    created: UnixTime
    livemode: bool
    data: EventData
    api_version: ApiVersion | None = None
    request: EventRequest | str | None = None
    pending_webhooks: int | None = None


# --- data.object shapes ------------------------------------------------------------------------


class ObjectKind(msgspec.Struct):
    object: str
    id: str


class PaymentError(msgspec.Struct):
    type: str | None = None
    code: str | None = None
    decline_code: str | None = None
    message: str | None = None


class PaymentIntent(msgspec.Struct):
    id: str
    metadata: dict[str, str] = msgspec.field(default_factory=dict)
    last_payment_error: PaymentError | None = None


class CardDetails(msgspec.Struct):
    brand: str | None = None
    last4: str | None = None
    exp_month: int | None = None
    exp_year: int | None = None


class Card(CardDetails):
    """A legacy Card object (``card_...``), as in ``customer.source.*``."""

    id: str = ""
    customer: str | None = None


class Source(msgspec.Struct):
    """A legacy Source (``src_...``); only those with a nested ``card`` concern us."""

    id: str
    customer: str | None = None
    card: CardDetails | None = None


class PaymentMethod(msgspec.Struct):
    """A PaymentMethod (``pm_...``); ``customer`` is null once it is detached."""

    id: str
    customer: str | None = None
    card: CardDetails | None = None


# --- our wire shapes ---------------------------------------------------------------------------


class DeliveryAnswer(msgspec.Struct):
    status: Literal["received", "duplicate", "ignored"]


class StripeEventOut(msgspec.Struct):
    id: str
    stripe_event_id: str
    type: str
    status: str
    attempts: int
    last_error: str | None
    livemode: bool
    api_version: str | None
    created_at: datetime
    received_at: datetime
    next_attempt_at: datetime | None
    processed_at: datetime | None
    object: str = "stripe_event"


def stripe_event_out(row: StripeEvent) -> StripeEventOut:
    return StripeEventOut(
        id=row.id,
        stripe_event_id=row.stripe_event_id,
        type=row.type,
        status=row.status,
        attempts=row.attempts,
        last_error=row.last_error,
        livemode=row.livemode,
        api_version=row.api_version,
        created_at=row.created_at,
        received_at=row.received_at,
        next_attempt_at=row.next_attempt_at if row.status == RECEIVED else None,
        processed_at=row.handled_at,
    )
