"""What a customer's page shows of its billing terms: credit balance, active discount, tax status.

Five queries at most, whatever the number of grants or rates: balances and grants, the active
discount and its coupon, and the tax rates (with the tenant's defaults when the customer has none).
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime
from typing import Any

import sqlalchemy as sa
from sqlalchemy.ext.asyncio import AsyncSession

from billing.core import money
from billing.credits.balance import credit_balance
from billing.credits.schemas import CurrencyBalanceOut
from billing.customers.models import Customer
from billing.invoicing.coupon_models import Coupon, Discount
from billing.invoicing.discount_terms import description
from billing.invoicing.discounts import active_discount
from billing.tenants.models import TaxRate
from billing.tenants.service import get_tenant


@dataclass(frozen=True)
class ActiveDiscount:
    discount: Discount
    coupon: Coupon

    @property
    def label(self) -> str:
        """``SPRING (20% off)``, as the discount line of an invoice reads."""
        return description(self.coupon)


@dataclass(frozen=True)
class CustomerTerms:
    balances: list[CurrencyBalanceOut]
    discount: ActiveDiscount | None
    tax_exempt: str
    tax_ids: list[dict[str, Any]]
    # "VAT 19%" per rate that applies; the tenant's defaults when ``tax_rates_are_tenants``.
    tax_rates: list[str]
    tax_rates_are_tenants: bool

    @property
    def shown_balances(self) -> list[CurrencyBalanceOut]:
        """The currencies with something available or pending (none: the customer has no credit)."""
        return [b for b in self.balances if b.available or b.pending]


async def load_terms(session: AsyncSession, customer: Customer, now: datetime) -> CustomerTerms:
    balance = await credit_balance(session, customer)
    discount = await active_discount(session, customer, now)
    coupon = await session.get(Coupon, discount.coupon_id) if discount is not None else None
    tenants = customer.tax_rates is None
    ids = (await get_tenant(session, customer.tenant_id)).default_tax_rates if tenants else customer.tax_rates
    return CustomerTerms(
        balances=balance.balances,
        discount=ActiveDiscount(discount, coupon) if discount is not None and coupon is not None else None,
        tax_exempt=customer.tax_exempt,
        tax_ids=list(customer.tax_ids or []),
        tax_rates=await _rate_labels(session, customer, list(ids or [])),
        tax_rates_are_tenants=tenants,
    )


async def _rate_labels(session: AsyncSession, customer: Customer, ids: list[str]) -> list[str]:
    if not ids:
        return []
    query = sa.select(TaxRate).where(TaxRate.tenant_id == customer.tenant_id, TaxRate.id.in_(ids))
    rates = {rate.id: rate for rate in await session.scalars(query)}
    return [_label(rates[rate_id]) for rate_id in ids if rate_id in rates]


def _label(rate: TaxRate) -> str:
    text = f"{rate.display_name} {money.format_decimal(rate.percentage)}%"
    if rate.inclusive:
        text += " (inclusive)"
    if rate.country:
        text += f", {rate.country} only"
    return text
