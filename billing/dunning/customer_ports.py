"""Dunning as the customer routes see it (``billing.customers.ports.CustomerPorts``)."""

from __future__ import annotations

from collections.abc import Sequence
from datetime import datetime
from typing import Any

from sqlalchemy.ext.asyncio import AsyncSession

from billing.dunning.cases import payment_method_changed
from billing.dunning.summary import open_cases


class DunningCustomerPorts:
    """:class:`billing.customers.ports.CustomerPorts` as dunning fills them."""

    async def summaries(
        self, session: AsyncSession, customer_ids: Sequence[str]
    ) -> dict[str, dict[str, Any]]:
        return await open_cases(session, customer_ids)

    async def payment_method_changed(self, session: AsyncSession, customer_id: str, *, at: datetime) -> None:
        await payment_method_changed(session, customer_id, at=at)


CUSTOMER_PORTS = DunningCustomerPorts()
