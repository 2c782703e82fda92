"""The ``dunning`` summary a customer carries: its open case, if any."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import msgspec
import sqlalchemy as sa
from sqlalchemy.ext.asyncio import AsyncSession

from billing.customers import service
from billing.customers.models import Customer
from billing.customers.schemas import CustomerOut
from billing.dunning.models import DunningCase


async def open_cases(session: AsyncSession, customer_ids: Sequence[str]) -> dict[str, dict[str, Any]]:
    """Each customer's active case (the oldest, when several invoices are unpaid), summarised."""
    query = (
        sa.select(DunningCase)
        .where(DunningCase.customer_id.in_(customer_ids), DunningCase.status == "active")
        .order_by(DunningCase.id.desc())
    )
    summaries = {}
    for case in await session.scalars(query):
        summaries[case.customer_id] = {
            "id": case.id,
            "invoice": case.invoice_id,
            "status": case.status,
            "failures": case.failures,
            "retries": case.retries,
            "next_action": case.next_action,
            "next_action_at": case.next_action_at,
        }
    return summaries


async def customers_out(session: AsyncSession, customers: Sequence[Customer]) -> list[CustomerOut]:
    """The wire shape of customers, each with its open case."""
    return await service.customers_out(session, customers, open_cases)


async def customer_snapshot(session: AsyncSession, customer_id: str) -> Any:
    """The customer as it is now, with its open case, as an event carries it (``data`` of an
    outgoing webhook)."""
    await session.flush()
    (out,) = await customers_out(session, [await session.get_one(Customer, customer_id)])
    return msgspec.to_builtins(out)
