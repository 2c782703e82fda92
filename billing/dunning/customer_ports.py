"""Dunning and invoicing as the customer routes see them (``billing.customers.ports.CustomerPorts``)."""

from __future__ import annotations

from collections.abc import Sequence
from datetime import datetime
from typing import Any

from sqlalchemy.ext.asyncio import AsyncSession

from billing.customers.models import Customer
from billing.dunning.cases import payment_method_changed
from billing.dunning.summary import open_cases
from billing.invoicing.archive import archive_customer
from billing.invoicing.history import has_billing_history


class DunningCustomerPorts:
    """:class:`billing.customers.ports.CustomerPorts` as dunning fills them, over invoicing."""

    async def summaries(
        self, session: AsyncSession, customer_ids: Sequence[str]
    ) -> dict[str, dict[str, Any]]:
        return await open_cases(session, customer_ids)

    async def payment_method_changed(self, session: AsyncSession, customer_id: str, *, at: datetime) -> None:
        await payment_method_changed(session, customer_id, at=at)

    async def has_billing_history(self, session: AsyncSession, customer: Customer) -> bool:
        return await has_billing_history(session, customer)

    async def archive(self, session: AsyncSession, customer: Customer, *, now: datetime) -> None:
        await archive_customer(session, customer, now=now, summaries=open_cases)


CUSTOMER_PORTS = DunningCustomerPorts()
