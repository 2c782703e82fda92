"""The ``alerts_evaluate`` job: for each customer with new usage, the active alerts watching them
fire every threshold their value has reached in the current period, once.

Which customers to look at comes from the metering's new-usage window (``recent_usage``), so
ingestion writes nothing for alerts. A crossing is a row with a unique key (alert, customer,
period start, threshold) inserted with ON CONFLICT DO NOTHING: whichever pass inserts it emits
``alert.triggered`` and queues the email in the same transaction, and any other pass, replica or
re-read window finds it there and does nothing. Only the period holding ``at`` is evaluated, so
late events of a closed period never fire.
"""

from __future__ import annotations

from datetime import datetime
from decimal import Decimal
from typing import Any

import msgspec
import sqlalchemy as sa
from sqlalchemy.ext.asyncio import AsyncSession

from billing.alerts.measure import Measures
from billing.alerts.models import Alert, AlertTrigger
from billing.alerts.period import current_period
from billing.alerts.schemas import alert_out, trigger_out
from billing.core import outbox
from billing.core.clock import format_timestamp
from billing.core.context import AppContext
from billing.core.db.inserts import insert_ignore
from billing.core.ids import new_id
from billing.customers.models import Customer
from billing.invoicing.periods import Period
from billing.metering.models import Meter
from billing.metering.recent_usage import advance, new_usage
from billing.notifications.queue import queue_notification

CURSOR = "alerts"
TOPIC = "alert.triggered"
EMAIL = "usage_alert"
TRIGGERS = AlertTrigger.__table__


async def evaluate_due(ctx: AppContext, *, at: datetime, tenant_id: str | None = None) -> int:
    """Evaluate the alerts of every customer with usage since the last pass (of one tenant or
    all); return how many thresholds fired."""
    async with ctx.database.transaction() as session:
        window = await new_usage(session, CURSOR, tenant_id, at)
        alerting = await _tenants_with_alerts(session, {tenant for tenant, _ in window.customers})
    fired = 0
    for tenant, customer_id in window.customers:
        if tenant not in alerting:
            continue
        async with ctx.database.transaction() as session:
            fired += await evaluate_customer(session, tenant, customer_id, at)
    async with ctx.database.transaction() as session:
        await advance(session, window, at)
    return fired


async def _tenants_with_alerts(session: AsyncSession, tenant_ids: set[str]) -> set[str]:
    """Of these tenants, those with an active alert: the others' customers need no look."""
    if not tenant_ids:
        return set()
    query = sa.select(Alert.tenant_id).where(Alert.tenant_id.in_(tenant_ids), Alert.status == "active")
    return set(await session.scalars(query.distinct()))


async def evaluate_customer(session: AsyncSession, tenant_id: str, customer_id: str, at: datetime) -> int:
    customer = await session.get(Customer, customer_id)
    if customer is None or customer.tenant_id != tenant_id:
        return 0
    alerts = await _watching(session, customer)
    watched = await current_period(session, tenant_id, customer_id, at) if alerts else None
    if watched is None:
        return 0
    meters = await _meters(session, alerts)
    measures = Measures(tenant_id, customer_id, watched)
    fired: list[tuple[Alert, AlertTrigger]] = []
    for alert in alerts:
        value = await measures.value(session, alert, meters.get(alert.meter_id or ""))
        if value is not None:
            crossed = [Decimal(t) for t in alert.thresholds if Decimal(t) <= value]
            fired += [
                (alert, t) for t in await _fire(session, alert, customer, watched.period, crossed, value, at)
            ]
    await _announce(session, customer, fired, {m.id: m for m in meters.values()}, at)
    return len(fired)


async def _watching(session: AsyncSession, customer: Customer) -> list[Alert]:
    """The active alerts of the customer, and the tenant-wide ones (of their currency, for spend)."""
    tenant_wide = sa.and_(
        Alert.customer_id.is_(None),
        sa.or_(Alert.type == "usage_units", Alert.currency == customer.currency),
    )
    query = sa.select(Alert).where(
        Alert.tenant_id == customer.tenant_id,
        Alert.status == "active",
        sa.or_(Alert.customer_id == customer.id, tenant_wide),
    )
    return list(await session.scalars(query.order_by(Alert.id)))


async def _meters(session: AsyncSession, alerts: list[Alert]) -> dict[str, Meter]:
    ids = {alert.meter_id for alert in alerts if alert.meter_id}
    if not ids:
        return {}
    return {meter.id: meter for meter in await session.scalars(sa.select(Meter).where(Meter.id.in_(ids)))}


async def _fire(
    session: AsyncSession,
    alert: Alert,
    customer: Customer,
    period: Period,
    crossed: list[Decimal],
    value: Decimal,
    at: datetime,
) -> list[AlertTrigger]:
    """Insert the crossings not yet recorded; return the ones this pass inserted, ascending."""
    if not crossed:
        return []
    # Ids made within one millisecond are random: sorted, they list in threshold order.
    ids = sorted(new_id("atr") for _ in crossed)
    rows = [
        {
            "id": trigger_id,
            "tenant_id": alert.tenant_id,
            "alert_id": alert.id,
            "customer_id": customer.id,
            "threshold": threshold,
            "value": value,
            "period_start": period.start,
            "period_end": period.end,
            "triggered_at": at,
        }
        for trigger_id, threshold in zip(ids, crossed, strict=True)
    ]
    inserted = {row.id for row in await insert_ignore(session, TRIGGERS, rows, returning=[TRIGGERS.c.id])}
    return [AlertTrigger(**row) for row in rows if row["id"] in inserted]


async def _announce(
    session: AsyncSession,
    customer: Customer,
    fired: list[tuple[Alert, AlertTrigger]],
    meters: dict[str, Meter],
    at: datetime,
) -> None:
    """``alert.triggered`` for each crossing, in order, and the emails of the alerts that send them."""
    if not fired:
        return
    keys = {meter.id: meter.key for meter in meters.values()}
    events = []
    for alert, trigger in fired:
        snapshot = _snapshot(alert, trigger, keys)
        payload = {
            "alert_id": alert.id,
            "trigger_id": trigger.id,
            "customer_id": customer.id,
            "object": snapshot,
        }
        events.append((alert.tenant_id, TOPIC, payload))
        if alert.email:
            meter = meters.get(alert.meter_id or "")
            await queue_notification(
                session,
                tenant_id=alert.tenant_id,
                customer_id=customer.id,
                kind=EMAIL,
                dedupe_key=_dedupe_key(trigger),
                data={**snapshot, "meter_name": meter.name if meter else None},
                at=at,
            )
    await outbox.emit_many(session, events, now=at)


def _snapshot(alert: Alert, trigger: AlertTrigger, meter_keys: dict[str, str]) -> dict[str, Any]:
    wire = {"trigger": trigger_out(trigger, alert.type), "alert": alert_out(alert, meter_keys)}
    snapshot: dict[str, Any] = msgspec.to_builtins(wire)
    return snapshot


def _dedupe_key(trigger: AlertTrigger) -> str:
    period = format_timestamp(trigger.period_start)
    return f"{EMAIL}:{trigger.alert_id}:{trigger.customer_id}:{period}:{format(trigger.threshold, 'f')}"
