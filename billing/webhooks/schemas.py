"""Webhook endpoints and deliveries on the wire."""

from __future__ import annotations

from datetime import datetime
from typing import Annotated, Literal, TypedDict

import msgspec
from msgspec import UNSET, UnsetType

from billing.webhooks.events import EventType
from billing.webhooks.models import PENDING, WebhookAttempt, WebhookDelivery, WebhookEndpoint

Url = Annotated[str, msgspec.Meta(min_length=1, max_length=2048)]
Events = Annotated[list[EventType], msgspec.Meta(min_length=1, max_length=20)]
Description = Annotated[str, msgspec.Meta(max_length=500)]
DeliveryStatus = Literal["pending", "delivered", "failed"]


class EndpointCreate(msgspec.Struct, forbid_unknown_fields=True):
    url: Url
    events: Events
    description: Description | None = None
    enabled: bool = True


class EndpointPatch(msgspec.Struct, forbid_unknown_fields=True, omit_defaults=True):
    url: Url | UnsetType = UNSET
    events: Events | UnsetType = UNSET
    description: Description | UnsetType | None = UNSET
    enabled: bool | UnsetType = UNSET


class RotateSecretIn(msgspec.Struct, forbid_unknown_fields=True):
    # How long the previous secret keeps signing beside the new one (0: stop at once).
    expire_previous_in_seconds: Annotated[int, msgspec.Meta(ge=0, le=86_400)] = 86_400


class EndpointOut(msgspec.Struct):
    id: str
    url: str
    description: str | None
    events: list[str]
    enabled: bool
    disabled_at: datetime | None
    disabled_reason: str | None
    created_at: datetime
    updated_at: datetime
    object: str = "webhook_endpoint"


class EndpointWithSecret(EndpointOut, kw_only=True):
    """The answer to create and rotate: the only time the signing secret is shown."""

    secret: str


class AttemptOut(msgspec.Struct):
    number: int
    attempted_at: datetime
    succeeded: bool
    status_code: int | None
    duration_ms: int
    error: str | None


class DeliveryOut(msgspec.Struct):
    id: str
    endpoint: str
    event_id: str
    type: str
    status: str
    attempt_count: int
    created_at: datetime
    next_attempt_at: datetime | None
    last_attempt_at: datetime | None
    last_status_code: int | None
    last_error: str | None
    delivered_at: datetime | None
    failed_at: datetime | None
    attempts: list[AttemptOut]
    object: str = "webhook_delivery"


def endpoint_out(endpoint: WebhookEndpoint) -> EndpointOut:
    return EndpointOut(**_fields(endpoint))


def endpoint_with_secret(endpoint: WebhookEndpoint, secret: str) -> EndpointWithSecret:
    return EndpointWithSecret(**_fields(endpoint), secret=secret)


class _Fields(TypedDict):
    """What EndpointOut and EndpointWithSecret show of an endpoint."""

    id: str
    url: str
    description: str | None
    events: list[str]
    enabled: bool
    disabled_at: datetime | None
    disabled_reason: str | None
    created_at: datetime
    updated_at: datetime


def _fields(endpoint: WebhookEndpoint) -> _Fields:
    return {
        "id": endpoint.id,
        "url": endpoint.url,
        "description": endpoint.description,
        "events": list(endpoint.events),
        "enabled": endpoint.enabled,
        "disabled_at": endpoint.disabled_at,
        "disabled_reason": endpoint.disabled_reason,
        "created_at": endpoint.created_at,
        "updated_at": endpoint.updated_at,
    }


def attempt_out(attempt: WebhookAttempt) -> AttemptOut:
    return AttemptOut(
        number=attempt.number,
        attempted_at=attempt.attempted_at,
        succeeded=attempt.succeeded,
        status_code=attempt.status_code,
        duration_ms=attempt.duration_ms,
        error=attempt.error,
    )


def delivery_out(delivery: WebhookDelivery, attempts: list[AttemptOut]) -> DeliveryOut:
    return DeliveryOut(
        id=delivery.id,
        endpoint=delivery.endpoint_id,
        event_id=delivery.event_id,
        type=delivery.event_type,
        status=delivery.status,
        attempt_count=delivery.attempt_count,
        created_at=delivery.created_at,
        next_attempt_at=delivery.next_attempt_at if delivery.status == PENDING else None,
        last_attempt_at=delivery.last_attempt_at,
        last_status_code=delivery.last_status_code,
        last_error=delivery.last_error,
        delivered_at=delivery.delivered_at,
        failed_at=delivery.failed_at,
        attempts=attempts,
    )
