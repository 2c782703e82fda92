"""Late usage of a subscription replaced by a plan change, billed on its successor's invoices.

An event for the replaced subscription that arrives after its closing invoice is final is a
``late_usage`` line on the customer's next invoice, which is the successor's, priced under the
old plan and its old period's tiers (API.md, plan change rule 6). The successor takes it only
while the replaced subscription has no draft left (a draft takes its own late events) and only
for its direct predecessor. A subscription replaced twice, or one whose successor has ended
too, bills its late events on an invoice of its own, as a canceled one does.
"""

from __future__ import annotations

import sqlalchemy as sa
from sqlalchemy.ext.asyncio import AsyncSession

from billing.invoicing import lines
from billing.invoicing.catalog import load_catalog
from billing.invoicing.late import late_periods, mark_events
from billing.invoicing.models import Invoice, Subscription


async def predecessor_late_lines(
    session: AsyncSession, sub: Subscription, *, invoice_id: str | None = None
) -> list[lines.LineDraft]:
    """The late lines of the subscription ``sub`` replaced. With ``invoice_id`` (finalizing),
    its unbilled events are put on that invoice first and counted exactly."""
    predecessor = await _settled_predecessor(session, sub)
    if predecessor is None or predecessor.cancel_at is None:
        return []
    catalog = await load_catalog(session, [predecessor.plan_id])
    plan = catalog.plans[predecessor.plan_id]
    meters = catalog.meters_of(plan)
    if invoice_id is not None:
        await mark_events(session, predecessor, invoice_id, predecessor.cancel_at)
    late = await late_periods(
        session, predecessor, plan, meters, before=predecessor.cancel_at, invoice_id=invoice_id
    )
    return lines.late_lines(plan, meters, predecessor, late)


async def waive_predecessor_events(session: AsyncSession, sub: Subscription, invoice_id: str) -> None:
    """A voided draft of ``sub`` keeps the predecessor's late events it showed, as its own."""
    predecessor = await _settled_predecessor(session, sub)
    if predecessor is not None and predecessor.cancel_at is not None:
        await mark_events(session, predecessor, invoice_id, predecessor.cancel_at)


async def successor_taking_late(session: AsyncSession, sub: Subscription) -> Subscription | None:
    """The running successor that bills this replaced subscription's late events, if any."""
    if sub.end_reason != "replaced" or sub.replaced_by is None or await _has_drafts(session, sub.id):
        return None
    successor = await session.get(Subscription, sub.replaced_by)
    if successor is None:
        return None
    if successor.next_period_end is not None or await _has_drafts(session, successor.id):
        return successor
    return None


async def _settled_predecessor(session: AsyncSession, sub: Subscription) -> Subscription | None:
    if sub.replaces is None:
        return None
    predecessor = await session.get(Subscription, sub.replaces)
    if predecessor is None or predecessor.next_period_end is not None:
        return None
    return None if await _has_drafts(session, predecessor.id) else predecessor


async def _has_drafts(session: AsyncSession, subscription_id: str) -> bool:
    query = sa.select(Invoice.id).where(Invoice.subscription_id == subscription_id, Invoice.status == "draft")
    return (await session.scalar(query.limit(1))) is not None
