"""A customer's credit balance per currency, and its ledger newest first."""

from __future__ import annotations

from collections import defaultdict

import sqlalchemy as sa
from sqlalchemy.ext.asyncio import AsyncSession

from billing.core.errors import NotFound
from billing.core.pagination import PageRequest
from billing.credits import ledger
from billing.credits.models import CreditGrant, CreditLedgerEntry
from billing.credits.schemas import (
    CreditBalanceOut,
    CurrencyBalanceOut,
    balance_grant_out,
)
from billing.customers.models import Customer


async def credit_balance(session: AsyncSession, customer: Customer) -> CreditBalanceOut:
    """Per currency (the customer's first): what is available, what is pending (paid grants whose
    invoice is unpaid), and the grants with something to give, in burn order."""
    available = await ledger.balances(session, customer.id)
    query = (
        sa.select(CreditGrant)
        .where(CreditGrant.customer_id == customer.id, CreditGrant.status.in_(("pending", "active")))
        .order_by(*ledger.burn_order())
    )
    grants: dict[str, list[CreditGrant]] = defaultdict(list)
    for grant in await session.scalars(query):
        grants[grant.currency].append(grant)
    currencies = [customer.currency, *sorted((set(available) | set(grants)) - {customer.currency})]
    return CreditBalanceOut(
        customer=customer.id,
        balances=[
            CurrencyBalanceOut(
                currency=currency,
                available=available.get(currency, 0),
                pending=sum(g.amount for g in grants[currency] if g.status == "pending"),
                grants=[balance_grant_out(g) for g in grants[currency]],
            )
            for currency in currencies
        ],
    )


async def ledger_entries(
    session: AsyncSession,
    customer: Customer,
    page: PageRequest,
    *,
    currency: str | None = None,
    credit_grant: str | None = None,
) -> tuple[list[CreditLedgerEntry], bool]:
    """Entries newest first: in the order they were written (``seq``), not by their date, since an
    expiry is dated at its instant however late the job writes it."""
    query = sa.select(CreditLedgerEntry).where(CreditLedgerEntry.customer_id == customer.id)
    if currency is not None:
        query = query.where(CreditLedgerEntry.currency == currency)
    if credit_grant is not None:
        owner = await session.scalar(
            sa.select(CreditGrant.customer_id).where(
                CreditGrant.id == credit_grant, CreditGrant.tenant_id == customer.tenant_id
            )
        )
        if owner != customer.id:
            raise NotFound(f"No credit grant {credit_grant} of customer {customer.id}")
        query = query.where(CreditLedgerEntry.credit_grant_id == credit_grant)
    if page.starting_after is not None:
        last = await session.scalar(
            sa.select(CreditLedgerEntry).where(
                CreditLedgerEntry.id == page.starting_after, CreditLedgerEntry.customer_id == customer.id
            )
        )
        if last is None:
            raise NotFound(f"No ledger entry {page.starting_after}")
        query = query.where(
            sa.or_(
                CreditLedgerEntry.seq < last.seq,
                sa.and_(CreditLedgerEntry.seq == last.seq, CreditLedgerEntry.currency < last.currency),
            )
        )
    query = query.order_by(CreditLedgerEntry.seq.desc(), CreditLedgerEntry.currency.desc()).limit(
        page.limit + 1
    )
    rows = list(await session.scalars(query))
    return rows[: page.limit], len(rows) > page.limit
