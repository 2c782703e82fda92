"""What a period's threshold invoices billed (progressive billing): the next threshold invoice
and the invoice that closes the period subtract it in one ``already_billed`` line.

A threshold invoice's subtotal is what it billed for usage: its usage lines to date (capped)
less its own ``already_billed`` line. A voided one bills nothing, so the next invoice of the
period bills its usage again; it still holds its multiple, which is never made twice.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime

import sqlalchemy as sa
from sqlalchemy.ext.asyncio import AsyncSession

from billing.invoicing import lines, periods
from billing.invoicing.models import Invoice, Plan, Subscription

THRESHOLD = "threshold"


@dataclass(frozen=True)
class Billed:
    count: int  # threshold invoices of the period that are not void
    amount: int  # what they billed: the sum of their subtotals
    last_multiple: int  # the highest multiple made in the period, void ones included; 0: none


async def threshold_billed(session: AsyncSession, subscription_id: str, period_start: datetime) -> Billed:
    rows = (
        await session.execute(
            sa.select(Invoice.status, Invoice.subtotal, Invoice.threshold_multiple).where(
                Invoice.subscription_id == subscription_id,
                Invoice.period_start == period_start,
                Invoice.billing_reason == THRESHOLD,
            )
        )
    ).all()
    live = [row for row in rows if row.status != "void"]
    return Billed(
        count=len(live),
        amount=sum(row.subtotal for row in live),
        last_multiple=max((row.threshold_multiple or 0 for row in rows), default=0),
    )


async def already_billed_lines(
    session: AsyncSession, plan: Plan, sub: Subscription, period: periods.Period
) -> list[lines.LineDraft]:
    """For the invoice that closes ``period``: minus every non-void threshold invoice of it."""
    if plan.threshold_amount is None:
        return []
    billed = await threshold_billed(session, sub.id, period.start)
    return [lines.already_billed_line(plan, billed.amount, period)] if billed.count else []
