"""The customer discount that covers an invoice, and what finalizing an invoice does to it.

A discount covers an invoice finalized at ``at`` when it was created at or before ``at``, was not
removed by then, and the invoice's period starts before the discount's ``end`` (none: no end),
except credit-grant invoices. A ``once`` discount covers invoices until one is finalized with it.
Should two cover one invoice (a repeating one past its end, and the one that followed it), the
later one applies: an invoice has one discount.
"""

from __future__ import annotations

from collections.abc import Collection
from dataclasses import dataclass
from datetime import datetime

import sqlalchemy as sa
from sqlalchemy.ext.asyncio import AsyncSession

from billing.core import money
from billing.core.db.queries import any_of
from billing.customers.models import Customer
from billing.invoicing.amounts import Discount
from billing.invoicing.coupon_models import Coupon
from billing.invoicing.coupon_models import Discount as DiscountRow

# Customers per query: every id is a bound parameter on SQLite.
_BATCH = 2000


@dataclass(frozen=True)
class Covered:
    """What the covering rule needs to know of an invoice."""

    customer_id: str
    period_start: datetime
    billing_reason: str


@dataclass(frozen=True)
class _Candidate:
    row: DiscountRow
    terms: Discount


async def discounts_for(
    session: AsyncSession, tenant_id: str, invoices: Collection[Covered], *, at: datetime, lock: bool = False
) -> dict[Covered, Discount]:
    """The discount each invoice gets if it is finalized at ``at``; none: not in the answer.
    ``lock`` (finalization): the discounts stay locked until commit, so that two invoices
    finalized at once never both use a ``once`` discount."""
    wanted = [invoice for invoice in invoices if invoice.billing_reason != "credit_grant"]
    customers = {invoice.customer_id for invoice in wanted}
    candidates = await _candidates(session, tenant_id, customers, at, lock=lock)
    answer: dict[Covered, Discount] = {}
    for invoice in wanted:
        covering = [c for c in candidates.get(invoice.customer_id, ()) if covers(c.row, invoice.period_start)]
        if covering:
            answer[invoice] = max(covering, key=lambda c: (c.row.start, c.row.id)).terms
    return answer


def covers(discount: DiscountRow, period_start: datetime) -> bool:
    return discount.end is None or period_start < discount.end


async def redeemed(session: AsyncSession, discount_id: str, *, invoice_id: str, at: datetime) -> None:
    """An invoice finalized at ``at`` carries the discount (a ``once`` discount ends here)."""
    discount = await session.get_one(DiscountRow, discount_id)
    coupon = await session.get_one(Coupon, discount.coupon_id)
    if coupon.duration == "once" and discount.invoice_id is None:
        discount.invoice_id = invoice_id
        discount.ended_at = discount.updated_at = at


def description(coupon: Coupon) -> str:
    """``SPRING (20% off)``, ``SPRING ($10.00 off)``."""
    if coupon.percent_off is not None:
        return f"{coupon.name} ({money.format_decimal(coupon.percent_off)}% off)"
    assert coupon.amount_off is not None and coupon.currency is not None
    return f"{coupon.name} ({money.format_money(coupon.amount_off, coupon.currency)} off)"


def terms_of(discount: DiscountRow, coupon: Coupon) -> Discount:
    return Discount(
        id=discount.id,
        description=description(coupon),
        percent_off=coupon.percent_off,
        amount_off=coupon.amount_off,
        plan_ids=None if coupon.plan_ids is None else frozenset(coupon.plan_ids),
    )


async def _candidates(
    session: AsyncSession, tenant_id: str, customer_ids: set[str], at: datetime, *, lock: bool
) -> dict[str, list[_Candidate]]:
    """Per customer, the discounts that may cover its invoices finalized at ``at``: a few queries
    for any number of customers."""
    found: dict[str, list[_Candidate]] = {}
    dialect = session.get_bind().dialect.name
    ordered = sorted(customer_ids)
    for first in range(0, len(ordered), _BATCH):
        batch = ordered[first : first + _BATCH]
        query = (
            sa.select(DiscountRow, Coupon)
            .join(Coupon, Coupon.id == DiscountRow.coupon_id)
            .join(Customer, Customer.id == DiscountRow.customer_id)
            .where(
                DiscountRow.tenant_id == tenant_id,
                any_of(DiscountRow.__table__.c.customer_id, batch, dialect),
                DiscountRow.start <= at,
                sa.or_(DiscountRow.removed_at.is_(None), DiscountRow.removed_at > at),
                # A once discount already used by an invoice covers no other.
                sa.or_(Coupon.duration != "once", DiscountRow.invoice_id.is_(None)),
                # An amount off in another currency than the customer's (changed since) takes nothing.
                sa.or_(Coupon.currency.is_(None), Coupon.currency == Customer.currency),
            )
        )
        if lock:
            # A once discount another finalization just used is then read as it committed, and
            # left out by the conditions above.
            query = query.with_for_update(of=DiscountRow)
        for discount, coupon in await session.execute(query):
            found.setdefault(discount.customer_id, []).append(
                _Candidate(discount, terms_of(discount, coupon))
            )
    return found
