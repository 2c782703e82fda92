"""Webhook endpoints and deliveries on the wire."""

from __future__ import annotations

from datetime import datetime
from typing import Annotated, Literal

import msgspec
from msgspec import UNSET, UnsetType

from billing.webhooks.events import EventType

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
