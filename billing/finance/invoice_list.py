"""The invoice list page's query: filters read from a form, totals per status and currency, pages.

A filter that does not parse is reported beside its field and shows no invoices, rather than
silently showing all of them.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Mapping
from datetime import UTC, date, datetime, timedelta
from typing import Any

import sqlalchemy as sa
import sqlalchemy.orm
from sqlalchemy.ext.asyncio import AsyncSession

from billing.core import money
from billing.core.errors import NotFound
from billing.customers.models import Customer
from billing.customers.service import get_customer
from billing.invoicing.invoices import InvoiceFilters, filtered
from billing.invoicing.models import Invoice
from billing.invoicing.schemas import is_overdue

PAGE_SIZE = 50
STATUSES = ("draft", "open", "paid", "uncollectible", "void")
FIELDS = ("status", "customer", "period_from", "period_to", "total_min", "total_max")


@dataclasses.dataclass
class ListQuery:
    params: dict[str, str]
    filters: InvoiceFilters
    errors: dict[str, str]
    page: int


@dataclasses.dataclass(frozen=True)
class Total:
    """Sums over the invoices of one status and currency: ``total`` is their totals (after
    discounts, with exclusive tax); credits, credit notes and payments are what lowered what
    they ask, ``amount_due`` what they still ask."""

    status: str
    currency: str
    count: int
    total: int
    amount_due: int
    amount_paid: int
    credits_applied: int = 0
    credit_notes: int = 0


async def read_query(
    session: AsyncSession, tenant_id: str, raw: Mapping[str, str], now: datetime
) -> ListQuery:
    """The form's filters; ``now`` is the instant invoices are overdue at."""
    params = {name: raw.get(name, "").strip()[:200] for name in FIELDS}
    errors: dict[str, str] = {}
    values: dict[str, Any] = {}
    if params["status"]:
        if params["status"] in STATUSES:
            values["status"] = params["status"]
        else:
            errors["status"] = "Choose a status from the list."
    if params["customer"]:
        try:
            values["customer_id"] = (await get_customer(session, tenant_id, params["customer"])).id
        except NotFound:
            errors["customer"] = "No customer has this id or external id."
    _read_date(params, "period_from", "period_start_gte", values, errors)
    _read_date(params, "period_to", "period_start_lt", values, errors, next_day=True)
    _read_amount(params, "total_min", values, errors)
    _read_amount(params, "total_max", values, errors)
    return ListQuery(params, InvoiceFilters(**values, now=now), errors, _page_number(raw.get("page", "1")))


def _read_date(
    params: dict[str, str],
    name: str,
    target: str,
    values: dict[str, Any],
    errors: dict[str, str],
    *,
    next_day: bool = False,
) -> None:
    if not params[name]:
        return
    try:
        day = date.fromisoformat(params[name])
    except ValueError:
        errors[name] = "Use a date like 2026-11-01."
        return
    start = datetime(day.year, day.month, day.day, tzinfo=UTC)
    values[target] = start + timedelta(days=1) if next_day else start


def _read_amount(params: dict[str, str], name: str, values: dict[str, Any], errors: dict[str, str]) -> None:
    if not params[name]:
        return
    try:
        amount = money.parse_decimal(params[name].replace(",", ""))
    except money.InvalidDecimal:
        errors[name] = "Use an amount like 1250.00."
        return
    values[name] = amount


def _page_number(text: str) -> int:
    return int(text) if text.isdigit() and 0 < int(text) <= 100_000 else 1


async def totals(session: AsyncSession, tenant_id: str, filters: InvoiceFilters) -> list[Total]:
    rows = filtered(tenant_id, filters).subquery()
    credit_notes = rows.c.pre_payment_credit_notes_amount + rows.c.post_payment_credit_notes_amount
    sums = (rows.c.total, rows.c.amount_due, rows.c.amount_paid, rows.c.credits_applied, credit_notes)
    query = (
        sa.select(
            rows.c.status,
            rows.c.currency,
            sa.func.count(),
            *(sa.func.coalesce(sa.func.sum(column), 0) for column in sums),
        )
        .group_by(rows.c.status, rows.c.currency)
        .order_by(rows.c.currency, rows.c.status)
    )
    return [
        Total(status, currency, *(int(value) for value in values))
        for status, currency, *values in await session.execute(query)
    ]


@dataclasses.dataclass(frozen=True)
class Row:
    invoice: Invoice
    customer_external_id: str
    customer_name: str | None
    overdue: bool


async def page_of(session: AsyncSession, tenant_id: str, query: ListQuery) -> list[Row]:
    invoices = filtered(tenant_id, query.filters).subquery()
    row = sa.orm.aliased(Invoice, invoices)
    stmt = (
        sa.select(row, Customer.external_id, Customer.name)
        .join(Customer, Customer.id == row.customer_id)
        .order_by(row.id.desc())
        .offset((query.page - 1) * PAGE_SIZE)
        .limit(PAGE_SIZE)
    )
    return [
        Row(invoice, external_id, name, is_overdue(invoice, query.filters.now))
        for invoice, external_id, name in (await session.execute(stmt)).all()
    ]
