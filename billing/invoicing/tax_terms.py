"""Which tax rates apply to a customer's invoices, and the tax data an invoice freezes.

The customer's ``tax_rates`` if set (``[]``: none), else the tenant's ``default_tax_rates``
where a rate with a country applies only to customers whose address is there.
"""

from __future__ import annotations

from collections.abc import Collection, Iterator, Sequence
from dataclasses import dataclass, field
from typing import Any

import sqlalchemy as sa
from sqlalchemy.ext.asyncio import AsyncSession

from billing.customers.models import Customer
from billing.invoicing.amounts import TaxRate
from billing.tenants.models import TaxRate as TaxRateRow
from billing.tenants.models import Tenant
from billing.tenants.tax_rates import rates_by_id

# Customers per query: each is one bound parameter.
CHUNK = 1000


@dataclass(frozen=True)
class CustomerTaxes:
    # In the order the customer's tax_rates, or else the tenant's defaults, list them.
    rates: tuple[TaxRate, ...] = ()
    exempt: str = "none"  # none | exempt | reverse
    address: dict[str, Any] | None = None
    tax_ids: list[dict[str, Any]] = field(default_factory=list)


NO_TAXES = CustomerTaxes()


async def customer_taxes(
    session: AsyncSession, tenant_id: str, customer_ids: Collection[str]
) -> dict[str, CustomerTaxes]:
    """Per customer id; a customer missing from the answer pays no tax.

    Two queries plus one per thousand customers, whatever their number: the billing run asks
    for every customer it closes at once.
    """
    customers = [
        row
        for chunk in _chunks(sorted(set(customer_ids)))
        for row in await _customers(session, tenant_id, chunk)
    ]
    if not customers:
        return {}
    defaults = await session.scalar(sa.select(Tenant.default_tax_rates).where(Tenant.id == tenant_id)) or []
    wanted = {rate_id for row in customers for rate_id in row.tax_rates or ()} | set(defaults)
    # A rate deactivated while attached keeps applying (as Stripe): inactive only stops new attachments.
    rates = await rates_by_id(session, tenant_id, wanted)
    return {row.id: _taxes(row, defaults, rates) for row in customers}


def _taxes(customer: Any, defaults: Sequence[str], rates: dict[str, TaxRateRow]) -> CustomerTaxes:
    country = (customer.address or {}).get("country")
    if customer.tax_rates is not None:
        chosen = [rates[rate_id] for rate_id in customer.tax_rates if rate_id in rates]
    else:
        chosen = [rates[rate_id] for rate_id in defaults if rate_id in rates]
        chosen = [rate for rate in chosen if rate.country is None or rate.country == country]
    return CustomerTaxes(
        rates=tuple(TaxRate(rate.id, rate.percentage, rate.inclusive) for rate in chosen),
        exempt=customer.tax_exempt,
        address=customer.address,
        tax_ids=list(customer.tax_ids),
    )


async def _customers(session: AsyncSession, tenant_id: str, ids: list[str]) -> Sequence[Any]:
    columns = (Customer.id, Customer.tax_rates, Customer.tax_exempt, Customer.address, Customer.tax_ids)
    stmt = sa.select(*columns).where(Customer.tenant_id == tenant_id, Customer.id.in_(ids))
    return (await session.execute(stmt)).all()


def _chunks(ids: list[str]) -> Iterator[list[str]]:
    for start in range(0, len(ids), CHUNK):
        yield ids[start : start + CHUNK]
