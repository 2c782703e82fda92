"""What the customer routes ask of the domains above customers, filled in by the composition root.

A customer carries a summary of its open dunning case, a new default payment method sets dunning
retrying at once, its currency is fixed once it has billing history, and archiving it ends what
it has running; customers know nothing of dunning or invoicing beyond this interface.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable, Sequence
from datetime import datetime
from typing import Any, Protocol

from sqlalchemy.ext.asyncio import AsyncSession

from billing.customers.models import Customer

# Each customer's open dunning case, summarised, by customer id (none: no entry).
Summaries = Callable[[AsyncSession, Sequence[str]], Awaitable[dict[str, dict[str, Any]]]]
# Whether the customer has billing history (an invoice, a subscription...).
BillingHistory = Callable[[AsyncSession, Customer], Awaitable[bool]]


class CustomerPorts(Protocol):
    async def summaries(
        self, session: AsyncSession, customer_ids: Sequence[str]
    ) -> dict[str, dict[str, Any]]:
        """Each customer's open dunning case, summarised, by customer id (none: no entry)."""
        ...

    async def payment_method_changed(self, session: AsyncSession, customer_id: str, *, at: datetime) -> None:
        """The customer has a new default payment method, in the caller's transaction."""
        ...

    async def has_billing_history(self, session: AsyncSession, customer: Customer) -> bool:
        """Whether the customer has anything billed in its currency (then the currency is locked)."""
        ...

    async def archive(self, session: AsyncSession, customer: Customer, *, now: datetime) -> None:
        """Archive the customer in the caller's transaction, ending what it has running first;
        an archived customer stays as it is."""
        ...
