"""Closing ended periods into draft invoices, for a batch of subscriptions at once.

Subscriptions whose periods end together (the common case: every customer of a timezone at a
month's end) share one aggregate query over the rollups; the invoices and their lines are
written with one insert each. The unique (subscription, period_start) constraint makes a second
close of the same period a no-op.
"""

from __future__ import annotations

from collections import defaultdict
from collections.abc import Sequence
from datetime import datetime, timedelta

import sqlalchemy as sa
from sqlalchemy.ext.asyncio import AsyncSession
from sqlalchemy.orm.attributes import set_committed_value

from billing.core import outbox
from billing.core.db.inserts import insert_ignore, insert_rows
from billing.core.db.queries import any_of
from billing.core.ids import new_id
from billing.invoicing import grouped_usage, invoices, item_lines, lines, periods, schedule
from billing.invoicing.catalog import Catalog, load_catalog
from billing.invoicing.fee_tallies import period_fees
from billing.invoicing.handover_late import predecessor_late_lines
from billing.invoicing.late import late_periods
from billing.invoicing.models import Invoice, InvoiceLine, InvoiceStatusChange, Subscription
from billing.invoicing.ports import NO_PAYMENTS_YET
from billing.invoicing.run_tallies import RunTallies
from billing.invoicing.subscriptions import emit as emit_subscription
from billing.invoicing.threshold_billed import already_billed_lines
from billing.metering.models import Meter
from billing.metering.usage_models import UsageEvent
from billing.tenants.models import Tenant


async def close_periods(
    session: AsyncSession,
    tenant: Tenant,
    subscriptions: Sequence[Subscription],
    *,
    at: datetime,
    actor: str,
    tallies: RunTallies,
) -> int:
    """Create the drafts of every period of these (locked) subscriptions that ended by ``at``."""
    catalog = await load_catalog(session, {s.plan_id for s in subscriptions})
    with_late = await _with_unbilled_history(session, tenant.id, subscriptions)
    work: dict[periods.Period, list[Subscription]] = defaultdict(list)
    closing = []
    for sub in subscriptions:
        for period in schedule.ended_periods(sub, at):
            work[period].append(sub)
            if period.end == sub.cancel_at:
                closing.append(sub)
            # In order, so it ends at the last one. _advance writes it for the whole batch at
            # once: the ORM must not also flush an UPDATE per subscription.
            set_committed_value(sub, "billed_through", period.end)
    drafts: list[tuple[dict[str, object], list[lines.LineDraft]]] = []
    for period in sorted(work):
        drafts += await _draft_period(session, tenant, catalog, period, work[period], with_late, tallies, at)
    created = await insert_drafts(session, drafts, actor, at)
    await _advance(session, subscriptions, at)
    for sub in closing:
        topic = "subscription.ended" if sub.end_reason == "replaced" else "subscription.canceled"
        await emit_subscription(session, sub, topic, at)
    return created


async def _advance(session: AsyncSession, subscriptions: Sequence[Subscription], at: datetime) -> None:
    """Store each subscription's new billed_through and next period end: one UPDATE per distinct
    pair (usually one for a whole batch), not one per subscription."""
    groups: dict[tuple[datetime | None, datetime | None], list[str]] = defaultdict(list)
    for sub in subscriptions:
        set_committed_value(sub, "next_period_end", schedule.next_period_end(sub))
        groups[(sub.billed_through, sub.next_period_end)].append(sub.id)
    table = Subscription.__table__
    for (billed_through, next_end), ids in groups.items():
        await session.execute(
            sa.update(table)
            .where(any_of(table.c.id, ids, session.get_bind().dialect.name))
            .values(billed_through=billed_through, next_period_end=next_end, updated_at=at)
        )


async def _draft_period(
    session: AsyncSession,
    tenant: Tenant,
    catalog: Catalog,
    period: periods.Period,
    subscriptions: list[Subscription],
    with_late: set[str],
    run_tallies: RunTallies,
    at: datetime,
) -> list[tuple[dict[str, object], list[lines.LineDraft]]]:
    meters: dict[str, Meter] = {}
    for sub in subscriptions:
        meters.update(catalog.meters_of(catalog.plans[sub.plan_id]))
    tallies = await run_tallies.period(
        session,
        tenant.id,
        [s.customer_id for s in subscriptions],
        list(meters.values()),
        (period.start, period.end),
    )
    groups = await _groups(session, tenant.id, catalog, period, subscriptions)
    fees = await period_fees(
        session,
        tenant.id,
        {s.customer_id: catalog.plans[s.plan_id] for s in subscriptions},
        meters,
        (period.start, period.end),
    )
    drafts = []
    for sub in subscriptions:
        plan = catalog.plans[sub.plan_id]
        plan_meters = catalog.meters_of(plan)
        mine = {m: tallies[(sub.customer_id, m)] for m in plan_meters if (sub.customer_id, m) in tallies}
        grouped = grouped_usage.combined(plan, mine, groups.get(sub.customer_id, {}))
        drafted = lines.period_lines(
            plan, plan_meters, period, sub, {}, grouped=grouped, fees=fees.get(sub.customer_id)
        )
        drafted += await already_billed_lines(session, plan, sub, period)
        if sub.id in with_late:
            late = await late_periods(session, sub, plan, plan_meters, before=period.start)
            drafted += lines.late_lines(plan, plan_meters, sub, late)
            drafted += await predecessor_late_lines(session, sub)
        reason = schedule.billing_reason(sub, period)
        row = draft_row(tenant, sub, plan.currency, period.start, period.end, at, billing_reason=reason)
        drafts.append((row, drafted))
    return drafts


async def _groups(
    session: AsyncSession,
    tenant_id: str,
    catalog: Catalog,
    period: periods.Period,
    subscriptions: list[Subscription],
) -> grouped_usage.ByCustomer:
    """The period's usage per group, of the customers whose plans' prices need groups."""
    needed: dict[str, set[str]] = {}
    for sub in subscriptions:
        if wanted := grouped_usage.grouped_meters(catalog.plans[sub.plan_id]):
            needed[sub.customer_id] = wanted
    meters = [catalog.meters[meter_id] for meter_id in sorted(set().union(*needed.values()))]
    return await grouped_usage.read_groups(
        session, tenant_id, sorted(needed), meters, (period.start, period.end)
    )


def draft_row(
    tenant: Tenant,
    sub: Subscription,
    currency: str,
    start: datetime,
    end: datetime,
    at: datetime,
    *,
    billing_reason: str = "subscription_cycle",
) -> dict[str, object]:
    return {
        "id": new_id("inv"),
        "tenant_id": tenant.id,
        "customer_id": sub.customer_id,
        "subscription_id": sub.id,
        "billing_reason": billing_reason,
        "number": None,
        "status": "draft",
        "currency": currency,
        "period_start": start,
        "period_end": end,
        "amount_paid": 0,
        "grace_ends_at": end + timedelta(hours=tenant.grace_period_hours),
        "computed_at": at,
        "created_at": at,
        "updated_at": at,
    }


async def insert_drafts(
    session: AsyncSession,
    drafts: Sequence[tuple[dict[str, object], list[lines.LineDraft]]],
    actor: str,
    at: datetime,
    *,
    pending_items: bool = True,
) -> int:
    """Write drafts with their lines; skip any whose (subscription, period) already has an invoice.
    With ``pending_items``, the customers' pending invoice items go onto their drafts."""
    assigned = await item_lines.attach_pending(session, drafts) if pending_items else {}
    for row, drafted in drafts:
        start = row["period_start"]
        assert isinstance(start, datetime)
        drafted[:] = lines.in_invoice_order(drafted, start)
    await invoices.set_amounts_of_rows(session, drafts, at)
    table = Invoice.__table__
    inserted = {
        row.id
        for row in await insert_ignore(session, table, [row for row, _ in drafts], returning=[table.c.id])
    }
    if assigned:
        await item_lines.claim(session, assigned, inserted, drafts, at)
    new = [(row, drafted) for row, drafted in drafts if row["id"] in inserted]
    line_rows = [line for row, drafted in new for line in invoices.line_rows(str(row["id"]), drafted)]
    await insert_rows(session, InvoiceLine.__table__, line_rows)
    await insert_rows(
        session,
        InvoiceStatusChange.__table__,
        [{"invoice_id": row["id"], "status": "draft", "at": at, "actor": actor} for row, _ in new],
    )
    created = [Invoice(**row) for row, _ in new]  # as inserted; never added to the session
    snapshots = await invoices.invoices_out(session, created, NO_PAYMENTS_YET, now=at)
    await outbox.emit_many(
        session,
        [
            (invoice.tenant_id, "invoice.created", invoices.event_payload(invoice, snapshot))
            for invoice, snapshot in zip(created, snapshots, strict=True)
        ],
        now=at,
    )
    return len(new)


async def _with_unbilled_history(
    session: AsyncSession, tenant_id: str, subscriptions: Sequence[Subscription]
) -> set[str]:
    """Subscriptions with unbilled events before their last closed period's end, or before their
    start when they replaced another: maybe late usage (for the periods about to be closed, the
    draft counts them)."""
    ends = {sub.id: end for sub in subscriptions if (end := _history_end(sub)) is not None}
    if not ends:
        return set()
    closed = [sub for sub in subscriptions if sub.id in ends]
    events = UsageEvent.__table__
    rows = await session.execute(
        sa.select(events.c.customer_id, sa.func.min(events.c.timestamp).label("first"))
        .where(
            events.c.tenant_id == tenant_id,
            events.c.customer_id.in_([sub.customer_id for sub in closed]),
            events.c.invoice_id.is_(None),
            events.c.timestamp < max(ends.values()),
        )
        .group_by(events.c.customer_id)
    )
    first = dict(rows.all())
    # An event from before starts_at (a previous subscription's) only costs a look that finds nothing.
    return {sub.id for sub in closed if sub.customer_id in first and first[sub.customer_id] < ends[sub.id]}


def _history_end(sub: Subscription) -> datetime | None:
    return sub.billed_through or (sub.starts_at if sub.replaces else None)
