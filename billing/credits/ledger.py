"""The only writer of the credit ledger and of grants' balances.

Every write locks the customer's balance row for its currency (``credit_balances``) after the
grants it touches, so that entries get their ``balance_after`` one at a time. Grants are always
locked in burn order (``lock_grants``), so two writers never wait on each other in a circle.
``credit_balance.low`` is decided here, once per write: it fires when the write takes the balance
from at or above the customer's threshold to below it.
"""

from __future__ import annotations

from collections.abc import Collection, Sequence
from dataclasses import dataclass
from datetime import datetime
from typing import Any

import sqlalchemy as sa
from sqlalchemy.ext.asyncio import AsyncSession

from billing.core import outbox
from billing.core.db.inserts import insert_ignore
from billing.core.ids import new_id
from billing.credits.models import CreditBalance, CreditGrant, CreditLedgerEntry
from billing.customers.models import Customer

LOW_BALANCE = "credit_balance.low"


@dataclass(frozen=True)
class Movement:
    """One entry to write: ``amount`` is signed (what the grant's ``available`` changes by)."""

    grant: CreditGrant
    type: str
    amount: int
    invoice_id: str | None = None
    credit_note_id: str | None = None
    at: datetime | None = None  # the entry's date when not the write's (an expiry instant)


def burn_order() -> tuple[Any, ...]:
    """Priority ascending, then expiry ascending with none last, then oldest first."""
    return (
        CreditGrant.priority,
        sa.case((CreditGrant.expires_at.is_(None), 1), else_=0),
        CreditGrant.expires_at,
        CreditGrant.created_at,
        CreditGrant.id,
    )


async def lock_grants(session: AsyncSession, grant_ids: Collection[str]) -> list[CreditGrant]:
    """The grants, locked until commit and read afresh, in burn order."""
    if not grant_ids:
        return []
    query = (
        sa.select(CreditGrant)
        .where(CreditGrant.id.in_(list(grant_ids)))
        .order_by(*burn_order())
        .with_for_update()
        .execution_options(populate_existing=True)
    )
    return list(await session.scalars(query))


async def write(
    session: AsyncSession, movements: Sequence[Movement], *, at: datetime
) -> list[CreditLedgerEntry]:
    """Write the entries of one customer's grants in one currency, in order, moving each grant's
    ``available`` and status; the caller locked the grants (``lock_grants``)."""
    if not movements:
        return []
    first = movements[0].grant
    balance = await _lock_balance(session, first, at=at)
    before = balance.available
    entries = []
    for movement in movements:
        _move(movement, at=at)
        balance.available += movement.amount
        balance.entries += 1
        entries.append(_entry(movement, balance, at=at))
    balance.updated_at = at
    session.add_all(entries)
    await session.flush()
    await _check_low(session, first, before, balance.available, at=at)
    return entries


def _move(movement: Movement, *, at: datetime) -> None:
    grant = movement.grant
    grant.available += movement.amount
    grant.updated_at = at
    if movement.type == "granted":
        grant.status, grant.effective_at = "active", at
    elif movement.type == "voided":
        grant.voided_at = grant.voided_at or at
        grant.status = "voided"
    elif movement.type == "expired":
        grant.status = "expired"
    elif grant.status in ("active", "depleted"):
        grant.status = "depleted" if grant.available == 0 else "active"


def _entry(movement: Movement, balance: CreditBalance, *, at: datetime) -> CreditLedgerEntry:
    grant = movement.grant
    return CreditLedgerEntry(
        id=new_id("cbt"),
        tenant_id=grant.tenant_id,
        customer_id=grant.customer_id,
        credit_grant_id=grant.id,
        currency=grant.currency,
        type=movement.type,
        amount=movement.amount,
        balance_after=balance.available,
        invoice_id=movement.invoice_id,
        credit_note_id=movement.credit_note_id,
        created_at=movement.at or at,
        seq=balance.entries,
    )


async def _lock_balance(session: AsyncSession, grant: CreditGrant, *, at: datetime) -> CreditBalance:
    row = {
        "customer_id": grant.customer_id,
        "currency": grant.currency,
        "tenant_id": grant.tenant_id,
        "available": 0,
        "entries": 0,
        "updated_at": at,
    }
    await insert_ignore(session, CreditBalance.__table__, [row])
    query = (
        sa.select(CreditBalance)
        .where(CreditBalance.customer_id == grant.customer_id, CreditBalance.currency == grant.currency)
        .with_for_update()
        .execution_options(populate_existing=True)
    )
    return (await session.scalars(query)).one()


def fell_below(before: int, after: int, threshold: int | None) -> bool:
    """A write that took the balance from at or above ``threshold`` to below it: once per
    crossing, and again only after the balance is back at or above it."""
    return threshold is not None and before >= threshold > after


async def _check_low(
    session: AsyncSession, grant: CreditGrant, before: int, after: int, *, at: datetime
) -> None:
    customer = await session.get_one(Customer, grant.customer_id)
    threshold = customer.credit_balance_low_threshold
    if not fell_below(before, after, threshold):
        return
    balance = {
        "customer": grant.customer_id,
        "currency": grant.currency,
        "available": after,
        "threshold": threshold,
    }
    payload = {"customer_id": grant.customer_id, "object": balance}
    await outbox.emit(session, tenant_id=grant.tenant_id, topic=LOW_BALANCE, payload=payload, now=at)


async def balances(session: AsyncSession, customer_id: str) -> dict[str, int]:
    """The customer's available balance per currency, as the ledger has it."""
    query = sa.select(CreditBalance.currency, CreditBalance.available).where(
        CreditBalance.customer_id == customer_id
    )
    return {currency: available for currency, available in (await session.execute(query)).all()}
