"""What the customer routes ask of the domains above customers, filled in by the composition root.

A customer carries a summary of its open dunning case, and a new default payment method sets
dunning retrying at once; customers know nothing of dunning beyond this interface.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable, Sequence
from datetime import datetime
from typing import Any, Protocol

from sqlalchemy.ext.asyncio import AsyncSession

# Each customer's open dunning case, summarised, by customer id (none: no entry).
Summaries = Callable[[AsyncSession, Sequence[str]], Awaitable[dict[str, dict[str, Any]]]]


class CustomerPorts(Protocol):
    async def summaries(
        self, session: AsyncSession, customer_ids: Sequence[str]
    ) -> dict[str, dict[str, Any]]:
        """Each customer's open dunning case, summarised, by customer id (none: no entry)."""
        ...

    async def payment_method_changed(self, session: AsyncSession, customer_id: str, *, at: datetime) -> None:
        """The customer has a new default payment method, in the caller's transaction."""
        ...
