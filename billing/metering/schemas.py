"""Customer and meter shapes on the wire."""

from __future__ import annotations

from datetime import datetime
from typing import Annotated, Any, Literal

import msgspec
from msgspec import UNSET, UnsetType

Aggregation = Literal["sum", "count", "max", "unique_count", "latest"]


class Card(msgspec.Struct, forbid_unknown_fields=True):
    """The customer's default card as the provider describes it, for expiry notices."""

    id: Annotated[str, msgspec.Meta(min_length=1, max_length=255)]
    brand: Annotated[str, msgspec.Meta(min_length=1, max_length=32)]
    last4: Annotated[str, msgspec.Meta(pattern="^[0-9]{4}$")]
    exp_month: Annotated[int, msgspec.Meta(ge=1, le=12)]
    exp_year: Annotated[int, msgspec.Meta(ge=2000, le=2200)]


class CustomerCreate(msgspec.Struct, forbid_unknown_fields=True):
    """A new customer; ``currency`` defaults to the tenant's, ``timezone`` to its billing_timezone."""

    external_id: str
    email: str | None = None
    name: str | None = None
    currency: str | None = None
    timezone: str | None = None
    locale: str | None = None
    provider_customer_id: str | None = None
    default_payment_method: str | None = None
    card: Card | None = None
    metadata: dict[str, str] | None = None


class CustomerPatch(msgspec.Struct, forbid_unknown_fields=True, omit_defaults=True):
    """Only the fields present change; ``null`` clears an optional field; metadata is replaced whole.

    ``external_id`` and ``currency`` are fixed at creation (sending them is a 422).
    """

    email: str | UnsetType | None = UNSET
    name: str | UnsetType | None = UNSET
    timezone: str | UnsetType | None = UNSET
    locale: str | UnsetType = UNSET
    provider_customer_id: str | UnsetType | None = UNSET
    default_payment_method: str | UnsetType | None = UNSET
    card: Card | UnsetType | None = UNSET
    metadata: dict[str, str] | UnsetType | None = UNSET


class CustomerOut(msgspec.Struct):
    id: str
    external_id: str
    email: str | None
    name: str | None
    currency: str
    timezone: str | None
    locale: str
    provider_customer_id: str | None
    default_payment_method: str | None
    card: Card | None
    metadata: dict[str, str]
    payment_status: str
    # The open dunning case, summarised; filled in once dunning exists.
    dunning: dict[str, Any] | None
    created_at: datetime
    updated_at: datetime
    object: str = "customer"


class MeterCreate(msgspec.Struct, forbid_unknown_fields=True):
    """A new meter; ``name`` defaults to the key, ``unique_property`` is for unique_count only."""

    key: str
    aggregation: Aggregation
    name: str | None = None
    unique_property: str | None = None
    unit: str | None = None


class MeterPatch(msgspec.Struct, forbid_unknown_fields=True, omit_defaults=True):
    """Only ``name`` and ``unit`` change: the key and the aggregation are what usage was recorded under."""

    name: str | UnsetType = UNSET
    unit: str | UnsetType | None = UNSET


class MeterOut(msgspec.Struct):
    id: str
    key: str
    name: str
    aggregation: str
    unique_property: str | None
    unit: str | None
    created_at: datetime
    object: str = "meter"
