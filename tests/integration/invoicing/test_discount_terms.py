"""``discount_terms``: which discount an invoice finalized at an instant gets, in bulk, and what
finalizing with a ``once`` discount does. Coupons and discounts are made through the API."""

from __future__ import annotations

from datetime import datetime, timedelta
from decimal import Decimal
from typing import Any

import httpx
import pytest
import sqlalchemy as sa

from billing.core.clock import FrozenClock
from billing.core.context import AppContext
from billing.invoicing.amounts import Discount
from billing.invoicing.discount_terms import Covered, discounts_for, redeemed
from tests.conftest import FROZEN_AT, TenantHandle
from tests.integration.invoicing.test_coupons import call, coupon, customer, discounts_of, redeem

LATER = FROZEN_AT + timedelta(days=40)


async def covering(
    ctx: AppContext, tenant: TenantHandle, invoices: list[Covered], at: datetime
) -> dict[Covered, Discount]:
    async with ctx.database.read() as session:
        return await discounts_for(session, tenant.id, invoices, at=at)


async def discount_of(
    client: httpx.AsyncClient, tenant: TenantHandle, customer_ref: str, code: str
) -> dict[str, Any]:
    response = await redeem(client, tenant, customer_ref, code)
    assert response.status_code == 201, response.text
    return response.json()


def cycle(customer_id: str, period_start: datetime, reason: str = "subscription_cycle") -> Covered:
    return Covered(customer_id=customer_id, period_start=period_start, billing_reason=reason)


async def test_a_forever_percent_discount_covers_every_invoice_but_credit_grants(
    client: httpx.AsyncClient, tenant: TenantHandle, ctx: AppContext
) -> None:
    await coupon(client, tenant, name="Spring", percent_off="12.5")
    person = await customer(client, tenant, "c1")
    discount = await discount_of(client, tenant, "c1", "SPRING")
    invoices = [
        cycle(person["id"], FROZEN_AT - timedelta(days=400)),
        cycle(person["id"], LATER + timedelta(days=4000)),
        cycle(person["id"], FROZEN_AT, "manual"),
        cycle(person["id"], FROZEN_AT, "threshold"),
        cycle(person["id"], FROZEN_AT, "credit_grant"),
    ]
    expected = Discount(id=discount["id"], description="Spring (12.5% off)", percent_off=Decimal("12.5"))
    assert await covering(ctx, tenant, invoices, LATER) == {invoice: expected for invoice in invoices[:4]}
    # Not before it was created.
    assert await covering(ctx, tenant, invoices, FROZEN_AT - timedelta(microseconds=1)) == {}
    assert await covering(ctx, tenant, invoices, FROZEN_AT) == {invoice: expected for invoice in invoices[:4]}


@pytest.mark.parametrize(
    ("amount", "currency", "shown"),
    [(1000, "USD", "$10.00"), (1000, "JPY", "¥1,000"), (1500, "KWD", "KWD1.500")],
)
async def test_an_amount_discount_is_described_in_its_currency(
    client: httpx.AsyncClient, tenant: TenantHandle, ctx: AppContext, amount: int, currency: str, shown: str
) -> None:
    await coupon(client, tenant, code="OFF", percent_off=None, amount_off=amount, currency=currency)
    person = await customer(client, tenant, "c1", currency=currency)
    discount = await discount_of(client, tenant, "c1", "OFF")
    invoice = cycle(person["id"], FROZEN_AT)
    assert await covering(ctx, tenant, [invoice], FROZEN_AT) == {
        invoice: Discount(id=discount["id"], description=f"OFF ({shown} off)", amount_off=amount)
    }


async def test_a_plan_scoped_discount_names_the_plan_ids(
    client: httpx.AsyncClient, tenant: TenantHandle, ctx: AppContext
) -> None:
    pro = await call(client, tenant, "POST", "/v1/plans", {"code": "pro"}, status=201)
    team = await call(client, tenant, "POST", "/v1/plans", {"code": "team"}, status=201)
    await coupon(client, tenant, applies_to_plans=["pro", "team"])
    person = await customer(client, tenant, "c1")
    await discount_of(client, tenant, "c1", "SPRING")
    invoice = cycle(person["id"], FROZEN_AT)
    (terms,) = (await covering(ctx, tenant, [invoice], FROZEN_AT)).values()
    assert terms.plan_ids == frozenset({pro["id"], team["id"]})


async def test_a_repeating_discount_covers_periods_that_start_before_its_end(
    client: httpx.AsyncClient, tenant: TenantHandle, ctx: AppContext
) -> None:
    await coupon(client, tenant, duration="repeating", duration_in_periods=3)
    person = await customer(client, tenant, "c1")
    discount = await discount_of(client, tenant, "c1", "SPRING")
    end = datetime.fromisoformat(discount["end"])
    inside, at_end = cycle(person["id"], end - timedelta(microseconds=1)), cycle(person["id"], end)
    # Finalized long after the end, an invoice of a period begun before it still has it.
    found = await covering(ctx, tenant, [inside, at_end], end + timedelta(days=20))
    assert list(found) == [inside]
    assert found[inside].id == discount["id"]


async def test_a_removed_discount_covers_only_what_is_finalized_before_its_removal(
    client: httpx.AsyncClient, tenant: TenantHandle, ctx: AppContext, clock: FrozenClock
) -> None:
    await coupon(client, tenant)
    person = await customer(client, tenant, "c1")
    discount = await discount_of(client, tenant, "c1", "SPRING")
    clock.advance(timedelta(days=2))
    await call(client, tenant, "DELETE", f"/v1/customers/c1/discounts/{discount['id']}")
    invoice = cycle(person["id"], FROZEN_AT)
    assert list(await covering(ctx, tenant, [invoice], clock.now() - timedelta(seconds=1))) == [invoice]
    assert await covering(ctx, tenant, [invoice], clock.now()) == {}


async def test_the_later_of_two_covering_discounts_applies(
    client: httpx.AsyncClient, tenant: TenantHandle, ctx: AppContext, clock: FrozenClock
) -> None:
    await coupon(client, tenant, duration="repeating", duration_in_periods=1)
    await coupon(client, tenant, code="NEXT", percent_off="50")
    person = await customer(client, tenant, "c1")
    first = await discount_of(client, tenant, "c1", "SPRING")
    clock.set(datetime.fromisoformat(first["end"]))
    second = await discount_of(client, tenant, "c1", "NEXT")
    before_end = cycle(person["id"], clock.now() - timedelta(days=1))
    after_end = cycle(person["id"], clock.now())
    found = await covering(ctx, tenant, [before_end, after_end], clock.now())
    assert {invoice: terms.id for invoice, terms in found.items()} == {
        before_end: second["id"],
        after_end: second["id"],
    }
    assert await covering(ctx, tenant, [before_end], clock.now() - timedelta(seconds=1)) == {
        before_end: Discount(id=first["id"], description="SPRING (20% off)", percent_off=Decimal(20))
    }


async def test_a_once_discount_ends_on_the_first_invoice_finalized_with_it(
    client: httpx.AsyncClient, tenant: TenantHandle, ctx: AppContext, clock: FrozenClock
) -> None:
    await coupon(client, tenant, duration="once")
    person = await customer(client, tenant, "c1")
    discount = await discount_of(client, tenant, "c1", "SPRING")
    invoices = [cycle(person["id"], FROZEN_AT), cycle(person["id"], LATER)]
    assert len(await covering(ctx, tenant, invoices, LATER)) == 2
    async with ctx.database.transaction() as session:
        await redeemed(session, discount["id"], invoice_id="inv_first", at=LATER)
    async with ctx.database.transaction() as session:
        await redeemed(session, discount["id"], invoice_id="inv_second", at=LATER + timedelta(days=1))
    assert await covering(ctx, tenant, invoices, LATER) == {}
    (shown,) = await discounts_of(client, tenant, "c1")
    assert (shown["status"], shown["invoice"], shown["ended_at"]) == (
        "ended",
        "inv_first",
        LATER.strftime("%Y-%m-%dT%H:%M:%SZ"),
    )
    # An ended discount makes room for a new one.
    await coupon(client, tenant, code="NEXT")
    assert (await redeem(client, tenant, "c1", "NEXT")).status_code == 201


async def test_a_repeating_or_forever_discount_runs_on_after_an_invoice(
    client: httpx.AsyncClient, tenant: TenantHandle, ctx: AppContext
) -> None:
    await coupon(client, tenant)
    person = await customer(client, tenant, "c1")
    discount = await discount_of(client, tenant, "c1", "SPRING")
    async with ctx.database.transaction() as session:
        await redeemed(session, discount["id"], invoice_id="inv_first", at=LATER)
    (shown,) = await discounts_of(client, tenant, "c1")
    assert (shown["status"], shown["invoice"]) == ("active", None)
    assert len(await covering(ctx, tenant, [cycle(person["id"], LATER)], LATER)) == 1


async def test_an_amount_discount_in_a_currency_the_customer_left_takes_nothing(
    client: httpx.AsyncClient, tenant: TenantHandle, ctx: AppContext
) -> None:
    await coupon(client, tenant, code="OFF", percent_off=None, amount_off=500, currency="USD")
    person = await customer(client, tenant, "c1", currency="USD")
    await discount_of(client, tenant, "c1", "OFF")
    await call(client, tenant, "PATCH", "/v1/customers/c1", {"currency": "EUR"})
    assert await covering(ctx, tenant, [cycle(person["id"], FROZEN_AT)], FROZEN_AT) == {}


async def test_other_customers_and_tenants_discounts_cover_nothing(
    client: httpx.AsyncClient, tenant: TenantHandle, ctx: AppContext, make_tenant: Any
) -> None:
    other = await make_tenant(name="Other")
    await coupon(client, other)
    theirs = await customer(client, other, "o1")
    await discount_of(client, other, "o1", "SPRING")
    await coupon(client, tenant)
    mine = await customer(client, tenant, "c1")
    plain = await customer(client, tenant, "c2")
    await discount_of(client, tenant, "c1", "SPRING")
    invoices = [cycle(mine["id"], FROZEN_AT), cycle(plain["id"], FROZEN_AT), cycle(theirs["id"], FROZEN_AT)]
    assert list(await covering(ctx, tenant, invoices, FROZEN_AT)) == invoices[:1]


async def test_thousands_of_invoices_are_answered_in_a_few_queries(
    client: httpx.AsyncClient, tenant: TenantHandle, ctx: AppContext
) -> None:
    await coupon(client, tenant)
    people = [await customer(client, tenant, f"c{n}") for n in range(3)]
    for person in people[:2]:
        await discount_of(client, tenant, person["external_id"], "SPRING")
    strangers = [f"cus_unknown{n:05d}" for n in range(4500)]
    invoices = [cycle(p["id"], FROZEN_AT + timedelta(hours=h)) for p in people for h in range(500)]
    invoices += [cycle(stranger, FROZEN_AT) for stranger in strangers]
    statements: list[str] = []

    def count(_conn: Any, _cursor: Any, statement: str, *_: Any) -> None:
        statements.append(statement)

    async with ctx.database.read() as session:
        engine = session.get_bind()
        sa.event.listen(engine, "before_cursor_execute", count)
        try:
            found = await discounts_for(session, tenant.id, invoices, at=FROZEN_AT)
        finally:
            sa.event.remove(engine, "before_cursor_execute", count)
    assert len(found) == 1000
    assert {invoice.customer_id for invoice in found} == {people[0]["id"], people[1]["id"]}
    assert len([s for s in statements if "discounts" in s]) <= 3
