"""Creating, reading and archiving alerts, and listing what they fired."""

from __future__ import annotations

from collections.abc import Sequence
from datetime import datetime
from decimal import Decimal

import sqlalchemy as sa
from sqlalchemy.ext.asyncio import AsyncSession

from billing.alerts.models import Alert, AlertTrigger
from billing.alerts.schemas import AlertCreate, AlertOut, Threshold, TriggerOut, alert_out, trigger_out
from billing.core import money, validation
from billing.core.errors import FieldError, NotFound, ValidationFailed
from billing.core.ids import new_id
from billing.core.pagination import PageRequest, fetch_page
from billing.customers.models import Customer
from billing.customers.service import get_customer
from billing.metering.meters import meters_by_key
from billing.metering.models import Meter

MAX_THRESHOLDS = 20


async def create_alert(session: AsyncSession, tenant_id: str, data: AlertCreate, now: datetime) -> Alert:
    customer = await get_customer(session, tenant_id, data.customer) if data.customer else None
    meter = await _meter(session, tenant_id, data.meter)
    if data.type == "usage_units" and meter is None:
        raise ValidationFailed.field("meter", "a usage_units alert watches one meter")
    alert = Alert(
        id=new_id("alr"),
        tenant_id=tenant_id,
        customer_id=customer.id if customer else None,
        meter_id=meter.id if meter else None,
        name=validation.text("name", data.name, max_length=200) if data.name is not None else None,
        type=data.type,
        thresholds=thresholds(data.type, data.thresholds),
        currency=_currency(data, customer),
        recurrence=data.recurrence,
        email=data.email,
        status="active",
        created_at=now,
        archived_at=None,
    )
    session.add(alert)
    await session.flush()
    return alert


def thresholds(alert_type: str, given: Sequence[Threshold]) -> list[Threshold]:
    """1..20 thresholds above zero, strictly ascending: canonical decimal strings for usage,
    integers (minor units) for spend."""
    if not 1 <= len(given) <= MAX_THRESHOLDS:
        raise ValidationFailed.field("thresholds", f"give 1 to {MAX_THRESHOLDS} thresholds")
    parsed = [_threshold(alert_type, n, value) for n, value in enumerate(given)]
    for n in range(1, len(parsed)):
        if parsed[n] <= parsed[n - 1]:
            raise ValidationFailed.field(f"thresholds[{n}]", "thresholds must be strictly ascending")
    if alert_type == "spend_amount":
        return [int(value) for value in parsed]
    return [money.format_decimal(value) for value in parsed]


def _threshold(alert_type: str, n: int, value: Threshold) -> Decimal:
    field = f"thresholds[{n}]"
    if alert_type == "spend_amount":
        if not isinstance(value, int):
            raise ValidationFailed.field(field, "a spend threshold is an integer amount in minor units")
        number = Decimal(value)
    else:
        if not isinstance(value, str):
            raise ValidationFailed.field(field, 'a usage threshold is a decimal string, such as "1000"')
        try:
            number = money.parse_decimal(value)
        except ValueError as exc:
            raise ValidationFailed.field(field, str(exc)) from None
    if number <= 0:
        raise ValidationFailed.field(field, "a threshold must be above zero")
    return number


async def _meter(session: AsyncSession, tenant_id: str, key: str | None) -> Meter | None:
    if key is None:
        return None
    meter = (await meters_by_key(session, tenant_id, {key})).get(key)
    if meter is None:
        raise ValidationFailed(
            f"No meter {key}",
            code="unknown_meter",
            errors=[FieldError("meter", f"no meter with key '{key}'")],
        )
    return meter


def _currency(data: AlertCreate, customer: Customer | None) -> str | None:
    """Spend is counted in the customer's currency; a tenant-wide spend alert names the currency
    whose customers it watches."""
    if data.type == "usage_units":
        if data.currency is not None:
            raise ValidationFailed.field("currency", "only a spend_amount alert has a currency")
        return None
    if customer is None:
        if data.currency is None:
            raise ValidationFailed.field("currency", "a spend alert without a customer needs a currency")
        return validation.currency("currency", data.currency)
    if data.currency is not None and data.currency != customer.currency:
        raise ValidationFailed(
            f"Customer {customer.external_id} is billed in {customer.currency}, not {data.currency}",
            code="currency_mismatch",
            errors=[FieldError("currency", f"the customer's currency is {customer.currency}")],
        )
    return customer.currency


async def get_alert(session: AsyncSession, tenant_id: str, alert_id: str) -> Alert:
    alert = await session.get(Alert, alert_id)
    if alert is None or alert.tenant_id != tenant_id:
        raise NotFound(f"No alert {alert_id}")
    return alert


async def list_alerts(
    session: AsyncSession,
    tenant_id: str,
    page: PageRequest,
    *,
    customer_id: str | None = None,
    status: str | None = None,
) -> tuple[list[Alert], bool]:
    query = sa.select(Alert).where(Alert.tenant_id == tenant_id)
    if customer_id is not None:
        query = query.where(Alert.customer_id == customer_id)
    if status is not None:
        query = query.where(Alert.status == status)
    return await fetch_page(session, query, Alert.id, page)


async def archive_alert(session: AsyncSession, tenant_id: str, alert_id: str, now: datetime) -> Alert:
    """Stop the alert from firing; archiving an archived alert changes nothing."""
    alert = await get_alert(session, tenant_id, alert_id)
    if alert.status == "active":
        alert.status, alert.archived_at = "archived", now
        await session.flush()
    return alert


async def list_triggers(
    session: AsyncSession, alert: Alert, page: PageRequest
) -> tuple[list[AlertTrigger], bool]:
    query = sa.select(AlertTrigger).where(AlertTrigger.alert_id == alert.id)
    return await fetch_page(session, query, AlertTrigger.id, page)


async def alerts_out(session: AsyncSession, alerts: Sequence[Alert]) -> list[AlertOut]:
    meter_ids = {alert.meter_id for alert in alerts if alert.meter_id}
    keys: dict[str, str] = {}
    if meter_ids:
        rows = await session.execute(sa.select(Meter.id, Meter.key).where(Meter.id.in_(meter_ids)))
        keys = {row.id: row.key for row in rows}
    return [alert_out(alert, keys) for alert in alerts]


def triggers_out(alert: Alert, triggers: Sequence[AlertTrigger]) -> list[TriggerOut]:
    return [trigger_out(trigger, alert.type) for trigger in triggers]
