"""Which tax rates apply to a customer's invoices, and the tax data an invoice freezes.

(Filled in with tax rates: the customer's ``tax_rates`` if set, else the tenant's defaults
matching the customer's country; ``tax_exempt``; address and tax ids.)
"""

from __future__ import annotations

from collections.abc import Collection
from dataclasses import dataclass, field
from typing import Any

from sqlalchemy.ext.asyncio import AsyncSession

from billing.invoicing.amounts import TaxRate


@dataclass(frozen=True)
class CustomerTaxes:
    rates: tuple[TaxRate, ...] = ()
    exempt: str = "none"  # none | exempt | reverse
    address: dict[str, Any] | None = None
    tax_ids: list[dict[str, Any]] = field(default_factory=list)


NO_TAXES = CustomerTaxes()


async def customer_taxes(
    session: AsyncSession, tenant_id: str, customer_ids: Collection[str]
) -> dict[str, CustomerTaxes]:
    """Per customer id; a customer missing from the answer pays no tax."""
    return {}
