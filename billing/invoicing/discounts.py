"""Discount verbs: redeeming a coupon for a customer, listing and removing discounts.

Locks are taken in one order, the customer first (one active discount per customer), then the
subscriptions of its drafts (as finalizing takes them), then the coupon (its redemption count):
so a redemption never deadlocks with a finalization or another redemption.
"""

from __future__ import annotations

import calendar
from collections.abc import Sequence
from datetime import UTC, datetime
from zoneinfo import ZoneInfo

import sqlalchemy as sa
from sqlalchemy.ext.asyncio import AsyncSession

from billing.core.errors import Conflict, NotFound, ValidationFailed
from billing.core.ids import new_id
from billing.core.pagination import PageRequest, fetch_page
from billing.customers.archived import ensure_not_archived
from billing.customers.models import Customer
from billing.customers.service import lock_customer
from billing.invoicing.coupon_models import Coupon, Discount
from billing.invoicing.coupon_schemas import DiscountOut, discount_out, discount_status, is_valid
from billing.invoicing.coupons import coupons_out, get_coupon
from billing.invoicing.models import Invoice, Subscription
from billing.invoicing.recompute import refresh_draft
from billing.invoicing.subscriptions import get_subscription
from billing.tenants.service import get_tenant


async def create_discount(
    session: AsyncSession, customer: Customer, coupon_ref: str, *, now: datetime
) -> Discount:
    """Redeem the coupon for the customer: counted at once, under the coupon row's lock."""
    await lock_customer(session, customer)
    ensure_not_archived(customer)
    drafts = await lock_drafts(session, customer)
    coupon = await get_coupon(session, customer.tenant_id, coupon_ref, lock=True)
    if not is_valid(coupon, now):
        raise Conflict(
            f"Coupon {coupon.code} is deleted, expired or fully redeemed", code="coupon_not_redeemable"
        )
    if coupon.currency is not None and coupon.currency != customer.currency:
        raise ValidationFailed(
            f"Coupon {coupon.code} is in {coupon.currency}; the customer is billed in {customer.currency}",
            code="currency_mismatch",
        )
    active = await active_discount(session, customer, now)
    if active is not None:
        raise Conflict(f"Customer {customer.id} already has discount {active.id}", code="discount_exists")
    discount = Discount(
        id=new_id("dis"),
        tenant_id=customer.tenant_id,
        customer_id=customer.id,
        coupon_id=coupon.id,
        start=now,
        end=await _end(session, customer, coupon, now),
        created_at=now,
        updated_at=now,
    )
    coupon.times_redeemed += 1
    coupon.updated_at = now
    session.add(discount)
    await session.flush()
    await _refresh(session, drafts, now)
    return discount


async def active_discount(session: AsyncSession, customer: Customer, now: datetime) -> Discount | None:
    query = sa.select(Discount).where(
        Discount.tenant_id == customer.tenant_id,
        Discount.customer_id == customer.id,
        Discount.removed_at.is_(None),
        Discount.ended_at.is_(None),
    )
    live = [row for row in await session.scalars(query) if discount_status(row, now) == "active"]
    return live[0] if live else None


async def get_discount(session: AsyncSession, customer: Customer, discount_id: str) -> Discount:
    query = sa.select(Discount).where(
        Discount.tenant_id == customer.tenant_id,
        Discount.customer_id == customer.id,
        Discount.id == discount_id,
    )
    discount = (await session.scalars(query)).first()
    if discount is None:
        raise NotFound(f"No discount {discount_id} for customer {customer.id}")
    return discount


async def list_discounts(
    session: AsyncSession, customer: Customer, page: PageRequest
) -> tuple[list[Discount], bool]:
    query = sa.select(Discount).where(
        Discount.tenant_id == customer.tenant_id, Discount.customer_id == customer.id
    )
    return await fetch_page(session, query, Discount.id, page)


async def remove_discount(
    session: AsyncSession, customer: Customer, discount_id: str, *, now: datetime
) -> Discount:
    """Set ``removed``: the customer's drafts are recomputed without it, finalized invoices keep
    it. Removing it again is no change."""
    await lock_customer(session, customer)
    discount = await get_discount(session, customer, discount_id)
    if discount.removed_at is not None:
        return discount
    drafts = await lock_drafts(session, customer)
    discount.removed_at = discount.updated_at = now
    await session.flush()
    await _refresh(session, drafts, now)
    return discount


async def end_discounts(session: AsyncSession, customer: Customer, *, now: datetime) -> None:
    """Archiving: the customer's discount ends now; invoices of periods begun before still have it."""
    query = sa.select(Discount).where(
        Discount.tenant_id == customer.tenant_id,
        Discount.customer_id == customer.id,
        Discount.removed_at.is_(None),
        Discount.ended_at.is_(None),
    )
    for discount in await session.scalars(query):
        if discount.end is None or discount.end > now:
            discount.end = now
        discount.ended_at = discount.updated_at = now
    await session.flush()


async def discounts_out(
    session: AsyncSession, discounts: Sequence[Discount], now: datetime
) -> list[DiscountOut]:
    coupon_ids = {discount.coupon_id for discount in discounts}
    coupons = (
        list(await session.scalars(sa.select(Coupon).where(Coupon.id.in_(coupon_ids)))) if coupon_ids else []
    )
    shown = dict(zip([c.id for c in coupons], await coupons_out(session, coupons, now), strict=True))
    return [discount_out(discount, shown[discount.coupon_id], now) for discount in discounts]


def add_months(start: datetime, months: int, timezone: str) -> datetime:
    """``start`` plus calendar months on the local wall clock (Jan 31 + 1 month: the last day of
    February), as UTC."""
    zone = ZoneInfo(timezone)
    local = start.astimezone(zone)
    year, month = divmod(local.month - 1 + months, 12)
    year, month = local.year + year, month + 1
    day = min(local.day, calendar.monthrange(year, month)[1])
    wall = local.replace(tzinfo=None, year=year, month=month, day=day)
    return wall.replace(tzinfo=zone).astimezone(UTC)


async def _end(session: AsyncSession, customer: Customer, coupon: Coupon, start: datetime) -> datetime | None:
    if coupon.duration != "repeating" or coupon.duration_in_periods is None:
        return None
    timezone = customer.timezone or (await get_tenant(session, customer.tenant_id)).billing_timezone
    return add_months(start, coupon.duration_in_periods, timezone)


async def lock_drafts(session: AsyncSession, customer: Customer) -> list[tuple[Invoice, Subscription | None]]:
    """The customer's drafts, locked as finalizing locks them (the subscription, or the invoice
    row of a standalone one), each with its subscription."""
    query = (
        sa.select(Invoice)
        .where(
            Invoice.tenant_id == customer.tenant_id,
            Invoice.customer_id == customer.id,
            Invoice.status == "draft",
        )
        .order_by(Invoice.subscription_id, Invoice.period_start, Invoice.id)
    )
    locked: list[tuple[Invoice, Subscription | None]] = []
    subscriptions: dict[str, Subscription] = {}
    for invoice in list(await session.scalars(query)):
        sub = None
        if invoice.subscription_id is None:
            await session.refresh(invoice, with_for_update=True)
        else:
            sub = subscriptions.get(invoice.subscription_id)
            if sub is None:
                sub = await get_subscription(session, customer.tenant_id, invoice.subscription_id, lock=True)
                subscriptions[sub.id] = sub
            await session.refresh(invoice)
        if invoice.status == "draft":
            locked.append((invoice, sub))
    return locked


async def _refresh(
    session: AsyncSession, drafts: list[tuple[Invoice, Subscription | None]], now: datetime
) -> None:
    for invoice, sub in drafts:
        await refresh_draft(session, invoice, sub, at=now)
