"""The customer list and a customer's page: payment and dunning state, what is due, usage so far.

"Usage this period" is each customer's usage in the billing period of its subscription that
contains now, from the hourly rollups through the usage queries. A filter that does not parse is
reported beside its field and shows no customers, as on the invoice list.
"""

from __future__ import annotations

import dataclasses
from collections import defaultdict
from collections.abc import Mapping, Sequence
from datetime import datetime
from decimal import Decimal
from typing import Any

import sqlalchemy as sa
from sqlalchemy.ext.asyncio import AsyncSession

from billing.core import money
from billing.core.context import AppContext
from billing.customers.models import PAYMENT_STATUSES, Customer
from billing.customers.service import get_customer
from billing.dunning.models import DunningCase
from billing.dunning.summary import open_cases
from billing.finance.customer_terms import CustomerTerms, load_terms
from billing.invoicing import periods, schedule
from billing.invoicing.models import Invoice, Subscription
from billing.invoicing.schemas import SubscriptionOut
from billing.invoicing.subscriptions import subscriptions_out
from billing.metering import usage
from billing.metering.models import Meter
from billing.tenants.service import get_tenant

PAGE_SIZE = 50
NO_VALUE = "\N{EN DASH}"
INVOICES_SHOWN = 50
FIELDS = ("q", "payment_status", "dunning")
DUNNING_FILTERS = {
    "active": "In dunning",
    "exhausted": "Dunning exhausted",
    "none": "Not in dunning",
}


@dataclasses.dataclass
class CustomerQuery:
    params: dict[str, str]
    errors: dict[str, str]
    page: int


@dataclasses.dataclass(frozen=True)
class Dunning:
    active: int
    exhausted: int
    next_action: str | None = None
    next_action_at: datetime | None = None


@dataclasses.dataclass(frozen=True)
class PeriodUsage:
    start: datetime
    end: datetime
    values: list[tuple[Meter, Decimal | None]]

    @property
    def shown(self) -> list[tuple[Meter, str]]:
        """Every meter with its value as text (a dash for a max or latest without any event)."""
        return [
            (meter, NO_VALUE if value is None else money.format_decimal(value))
            for meter, value in self.values
        ]

    @property
    def recorded(self) -> list[tuple[Meter, str]]:
        """The meters that counted something (the list shows only these)."""
        return [(meter, money.format_decimal(value)) for meter, value in self.values if value]


@dataclasses.dataclass(frozen=True)
class Row:
    customer: Customer
    dunning: Dunning
    due: list[tuple[str, int]]  # (currency, amount due on open invoices)
    usage: PeriodUsage | None


@dataclasses.dataclass(frozen=True)
class ListPage:
    query: CustomerQuery
    rows: list[Row]
    count: int

    @property
    def pages(self) -> int:
        return max(1, -(-self.count // PAGE_SIZE))


async def load_list(ctx: AppContext, tenant_id: str, raw: Mapping[str, str]) -> ListPage:
    query = read_query(raw)
    if query.errors:
        return ListPage(query, [], 0)
    async with ctx.database.read() as session:
        found = await count(session, tenant_id, query)
        return ListPage(query, await page_of(session, tenant_id, query, ctx.clock.now()), found)


def read_query(raw: Mapping[str, str]) -> CustomerQuery:
    params = {name: raw.get(name, "").strip()[:200] for name in FIELDS}
    errors = {}
    if params["payment_status"] and params["payment_status"] not in PAYMENT_STATUSES:
        errors["payment_status"] = "Choose a payment status from the list."
    if params["dunning"] and params["dunning"] not in DUNNING_FILTERS:
        errors["dunning"] = "Choose a dunning state from the list."
    page = raw.get("page", "1")
    return CustomerQuery(params, errors, int(page) if page.isdigit() and 0 < int(page) <= 100_000 else 1)


def filtered(tenant_id: str, query: CustomerQuery) -> sa.Select[Customer]:
    stmt = sa.select(Customer).where(Customer.tenant_id == tenant_id)
    if text := query.params["q"]:
        stmt = stmt.where(
            sa.or_(
                *(
                    column.icontains(text, autoescape=True)
                    for column in (Customer.name, Customer.external_id, Customer.email)
                )
            )
        )
    if query.params["payment_status"]:
        stmt = stmt.where(Customer.payment_status == query.params["payment_status"])
    dunning = query.params["dunning"]
    if dunning:
        status = "exhausted" if dunning == "exhausted" else "active"
        has_case = (
            sa.select(DunningCase.id)
            .where(DunningCase.customer_id == Customer.id, DunningCase.status == status)
            .exists()
        )
        stmt = stmt.where(~has_case if dunning == "none" else has_case)
    return stmt


async def count(session: AsyncSession, tenant_id: str, query: CustomerQuery) -> int:
    rows = filtered(tenant_id, query).subquery()
    return int(await session.scalar(sa.select(sa.func.count()).select_from(rows)) or 0)


async def page_of(session: AsyncSession, tenant_id: str, query: CustomerQuery, now: datetime) -> list[Row]:
    stmt = (
        filtered(tenant_id, query)
        .order_by(sa.func.lower(sa.func.coalesce(Customer.name, Customer.external_id)), Customer.id)
        .offset((query.page - 1) * PAGE_SIZE)
        .limit(PAGE_SIZE)
    )
    return await rows_of(session, tenant_id, list(await session.scalars(stmt)), now)


async def rows_of(
    session: AsyncSession, tenant_id: str, customers: Sequence[Customer], now: datetime
) -> list[Row]:
    """Each customer with its dunning state, what its open invoices owe, and its usage this period."""
    ids = [customer.id for customer in customers]
    dunning = await _dunning(session, ids)
    due = await _due(session, ids)
    used = await period_usage(session, tenant_id, customers, now)
    return [Row(c, dunning.get(c.id, Dunning(0, 0)), due.get(c.id, []), used.get(c.id)) for c in customers]


async def _dunning(session: AsyncSession, ids: Sequence[str]) -> dict[str, Dunning]:
    query = (
        sa.select(DunningCase.customer_id, DunningCase.status, sa.func.count())
        .where(DunningCase.customer_id.in_(ids), DunningCase.status.in_(("active", "exhausted")))
        .group_by(DunningCase.customer_id, DunningCase.status)
    )
    counts: dict[str, dict[str, int]] = defaultdict(dict)
    for customer_id, status, n in await session.execute(query):
        counts[customer_id][status] = int(n)
    summaries = await open_cases(session, ids)
    result = {}
    for customer_id, by_status in counts.items():
        case = summaries.get(customer_id, {})
        result[customer_id] = Dunning(
            by_status.get("active", 0),
            by_status.get("exhausted", 0),
            case.get("next_action"),
            case.get("next_action_at"),
        )
    return result


async def _due(session: AsyncSession, ids: Sequence[str]) -> dict[str, list[tuple[str, int]]]:
    query = (
        sa.select(Invoice.customer_id, Invoice.currency, sa.func.sum(Invoice.amount_due))
        .where(Invoice.customer_id.in_(ids), Invoice.status == "open")
        .group_by(Invoice.customer_id, Invoice.currency)
        .order_by(Invoice.currency)
    )
    due: dict[str, list[tuple[str, int]]] = defaultdict(list)
    for customer_id, currency, amount in await session.execute(query):
        due[customer_id].append((currency, int(amount)))
    return due


async def period_usage(
    session: AsyncSession, tenant_id: str, customers: Sequence[Customer], now: datetime
) -> dict[str, PeriodUsage]:
    """Each customer's usage per meter in its current billing period (none without a subscription
    in effect); customers that share a period are measured together."""
    subscriptions = await session.scalars(
        sa.select(Subscription).where(
            Subscription.tenant_id == tenant_id, Subscription.customer_id.in_([c.id for c in customers])
        )
    )
    sharing: dict[periods.Period, list[str]] = defaultdict(list)
    for sub in subscriptions:
        period = schedule.period_at(sub, now)
        if period is not None:
            sharing[period].append(sub.customer_id)
    if not sharing:
        return {}
    meters = list(
        await session.scalars(sa.select(Meter).where(Meter.tenant_id == tenant_id).order_by(Meter.key))
    )
    result = {}
    for period, ids in sharing.items():
        tallies = await usage.period_tallies(session, tenant_id, ids, meters, (period.start, period.end))
        for customer_id in ids:
            values = [(m, _value(tallies.get((customer_id, m.id)), m)) for m in meters]
            result[customer_id] = PeriodUsage(period.start, period.end, values)
    return result


def _value(tally: usage.Tally | None, meter: Meter) -> Decimal | None:
    return (tally or usage.Tally()).value(meter.aggregation)


@dataclasses.dataclass(frozen=True)
class CustomerPage:
    row: Row
    timezone: str
    timezone_is_tenants: bool
    invoices: list[Invoice]
    invoice_count: int
    cases: list[DunningCase]
    subscriptions: list[SubscriptionOut]
    terms: CustomerTerms

    @property
    def customer(self) -> Customer:
        return self.row.customer

    def invoice_label(self, invoice_id: str) -> str:
        """The invoice's number when it is among those shown, its id otherwise."""
        numbers = {invoice.id: invoice.number for invoice in self.invoices}
        return numbers.get(invoice_id) or invoice_id


async def load(ctx: AppContext, tenant_id: str, ref: str) -> CustomerPage:
    async with ctx.database.read() as session:
        customer = await get_customer(session, tenant_id, ref)
        (row,) = await rows_of(session, tenant_id, [customer], ctx.clock.now())
        mine: Any = Invoice.customer_id == customer.id
        invoices = await session.scalars(
            sa.select(Invoice)
            .where(mine)
            .order_by(Invoice.period_start.desc(), Invoice.id.desc())
            .limit(INVOICES_SHOWN)
        )
        invoice_count = await session.scalar(sa.select(sa.func.count()).select_from(Invoice).where(mine))
        cases = await session.scalars(
            sa.select(DunningCase)
            .where(DunningCase.customer_id == customer.id)
            .order_by(DunningCase.created_at.desc(), DunningCase.id.desc())
        )
        subs = await session.scalars(
            sa.select(Subscription)
            .where(Subscription.customer_id == customer.id)
            .order_by(Subscription.starts_at.desc(), Subscription.id.desc())
        )
        shown = await subscriptions_out(session, list(subs), ctx.clock.now())
        zone = customer.timezone or (await get_tenant(session, tenant_id)).billing_timezone
        return CustomerPage(
            row,
            zone,
            customer.timezone is None,
            list(invoices),
            int(invoice_count or 0),
            list(cases),
            shown,
            await load_terms(session, customer, ctx.clock.now()),
        )
