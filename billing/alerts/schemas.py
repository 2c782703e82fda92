"""Alert shapes on the wire: thresholds and values are decimal strings for usage_units and
integer minor units for spend_amount."""

from __future__ import annotations

from collections.abc import Mapping
from datetime import datetime
from decimal import Decimal
from typing import Annotated, Literal

import msgspec

from billing.alerts.models import Alert, AlertTrigger
from billing.core import money

AlertType = Literal["usage_units", "spend_amount"]
Threshold = str | int


class AlertCreate(msgspec.Struct, forbid_unknown_fields=True):
    type: AlertType
    thresholds: list[Threshold]
    name: Annotated[str, msgspec.Meta(max_length=200)] | None = None
    customer: Annotated[str, msgspec.Meta(min_length=1, max_length=128)] | None = None
    meter: Annotated[str, msgspec.Meta(min_length=1, max_length=128)] | None = None
    currency: str | None = None
    recurrence: Literal["per_period"] = "per_period"
    email: bool = False


class AlertOut(msgspec.Struct):
    id: str
    name: str | None
    customer: str | None
    meter: str | None
    type: str
    thresholds: list[Threshold]
    currency: str | None
    recurrence: str
    email: bool
    status: str
    created_at: datetime
    archived_at: datetime | None
    object: str = "alert"


class TriggerOut(msgspec.Struct):
    id: str
    alert: str
    customer: str
    threshold: Threshold
    value: Threshold
    period_start: datetime
    period_end: datetime
    triggered_at: datetime
    object: str = "alert_trigger"


def alert_out(alert: Alert, meter_keys: Mapping[str, str]) -> AlertOut:
    return AlertOut(
        id=alert.id,
        name=alert.name,
        customer=alert.customer_id,
        meter=meter_keys.get(alert.meter_id) if alert.meter_id else None,
        type=alert.type,
        thresholds=list(alert.thresholds),
        currency=alert.currency,
        recurrence=alert.recurrence,
        email=alert.email,
        status=alert.status,
        created_at=alert.created_at,
        archived_at=alert.archived_at,
    )


def wire_number(alert_type: str, value: Decimal) -> Threshold:
    """A threshold or value as the alert's type shows it."""
    return int(value) if alert_type == "spend_amount" else money.format_decimal(value)


def trigger_out(trigger: AlertTrigger, alert_type: str) -> TriggerOut:
    return TriggerOut(
        id=trigger.id,
        alert=trigger.alert_id,
        customer=trigger.customer_id,
        threshold=wire_number(alert_type, trigger.threshold),
        value=wire_number(alert_type, trigger.value),
        period_start=trigger.period_start,
        period_end=trigger.period_end,
        triggered_at=trigger.triggered_at,
    )
