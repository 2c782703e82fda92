"""Meter shapes on the wire."""

from __future__ import annotations

from datetime import datetime
from decimal import Decimal
from typing import Any, Literal

import msgspec
from msgspec import UNSET, UnsetType

from billing.core import money
from billing.metering.models import Meter
from billing.metering.usage_models import UsageEvent

Aggregation = Literal["sum", "count", "max", "unique_count", "latest"]


class MeterCreate(msgspec.Struct, forbid_unknown_fields=True):
    """A new meter; ``name`` defaults to the key, ``unique_property`` is for unique_count only."""

    key: str
    aggregation: Aggregation
    name: str | None = None
    unique_property: str | None = None
    unit: str | None = None
    group_by: list[str] = msgspec.field(default_factory=list)
    allow_negative: bool = False


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
    group_by: list[str]
    allow_negative: bool
    created_at: datetime
    object: str = "meter"


class EventOut(msgspec.Struct):
    id: str
    customer: str
    customer_external_id: str
    meter: str
    timestamp: datetime
    value: str
    properties: dict[str, Any] | None
    received_at: datetime
    billing_status: str
    invoice: str | None
    object: str = "event"


class UsageBucket(msgspec.Struct):
    start: datetime
    value: str | None


class UsageGroup(msgspec.Struct):
    group: dict[str, str | None]
    buckets: list[UsageBucket]


class UsageOut(msgspec.Struct, omit_defaults=True):
    """``buckets``, or with ``group_by`` the buckets of each group instead."""

    customer: str
    meter: str
    aggregation: str
    granularity: str
    timezone: str
    buckets: list[UsageBucket] | UnsetType = UNSET
    group_by: list[str] | UnsetType = UNSET
    groups: list[UsageGroup] | UnsetType = UNSET


def meter_out(meter: Meter) -> MeterOut:
    return MeterOut(
        id=meter.id,
        key=meter.key,
        name=meter.name,
        aggregation=meter.aggregation,
        unique_property=meter.unique_property,
        unit=meter.unit,
        group_by=list(meter.group_by),
        allow_negative=meter.allow_negative,
        created_at=meter.created_at,
    )


def event_out(event: UsageEvent, customer_external_id: str, meter_key: str) -> EventOut:
    return EventOut(
        id=event.event_id,
        customer=event.customer_id,
        customer_external_id=customer_external_id,
        meter=meter_key,
        timestamp=event.timestamp,
        value=money.format_decimal(event.value),
        properties=event.properties,
        received_at=event.received_at,
        billing_status="invoiced" if event.invoice_id else "pending",
        invoice=event.invoice_id,
    )


def usage_out(
    customer_id: str,
    meter: Meter,
    *,
    granularity: str,
    timezone: str,
    buckets: list[tuple[datetime, Decimal | None]] | None = None,
    group_by: list[str] | None = None,
    groups: list[tuple[dict[str, str | None], list[tuple[datetime, Decimal | None]]]] | None = None,
) -> UsageOut:
    out = UsageOut(
        customer=customer_id,
        meter=meter.key,
        aggregation=meter.aggregation,
        granularity=granularity,
        timezone=timezone,
    )
    if group_by is None:
        out.buckets = _usage_buckets(buckets or [])
    else:
        out.group_by = group_by
        out.groups = [UsageGroup(group, _usage_buckets(found)) for group, found in groups or []]
    return out


def _usage_buckets(buckets: list[tuple[datetime, Decimal | None]]) -> list[UsageBucket]:
    return [UsageBucket(start, _decimal_text(value)) for start, value in buckets]


def _decimal_text(value: Decimal | None) -> str | None:
    return None if value is None else money.format_decimal(value)
