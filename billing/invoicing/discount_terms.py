"""The customer discount that covers an invoice, and what finalizing an invoice does to it.

(Filled in with coupons and discounts.)
"""

from __future__ import annotations

from collections.abc import Collection
from dataclasses import dataclass
from datetime import datetime

from sqlalchemy.ext.asyncio import AsyncSession

from billing.invoicing.amounts import Discount


@dataclass(frozen=True)
class Covered:
    """What the covering rule needs to know of an invoice."""

    customer_id: str
    period_start: datetime
    billing_reason: str


async def discounts_for(
    session: AsyncSession, tenant_id: str, invoices: Collection[Covered], *, at: datetime
) -> dict[Covered, Discount]:
    """The discount each invoice gets if it is finalized at ``at``; none: not in the answer."""
    return {}


async def redeemed(session: AsyncSession, discount_id: str, *, invoice_id: str, at: datetime) -> None:
    """An invoice finalized at ``at`` carries the discount (a ``once`` discount ends here)."""
