"""What invoicing asks of the credits domain (``invoicing.credit_terms``): the grants an invoice
may use at an instant in burn order, the ``applied`` entries of a finalization, ``restored``
ones on void, and a negative total turned into a grant. Grants are made through the API."""

from __future__ import annotations

from datetime import timedelta

import httpx
import pytest
import sqlalchemy as sa

from billing import jobs
from billing.core.context import AppContext
from billing.credits.expiry import expire_grants
from billing.credits.models import CreditGrant
from billing.invoicing import credit_terms
from billing.invoicing.amounts import Grant
from billing.invoicing.models import Invoice
from billing.metering.models import Meter
from tests.conftest import FROZEN_AT, TenantHandle, listening
from tests.integration.credits.helpers import (
    assert_ledger_consistent,
    balance,
    customer,
    get_grant,
    grant,
    ledger,
    meter,
    set_low_threshold,
    void,
)
from tests.integration.invoicing.test_invoice_lifecycle import call

LATER = FROZEN_AT + timedelta(days=1)


def invoice(number: str = "ACME-000001", **fields: object) -> Invoice:
    """An invoice as the ledger sees it (only its id, reason, totals and number matter)."""
    values = {"id": f"inv_{number.lower()}", "billing_reason": "subscription_cycle", "number": number}
    return Invoice(**(values | fields))


async def test_grants_for_answers_each_customers_usable_grants_in_burn_order(
    client: httpx.AsyncClient, tenant: TenantHandle, ctx: AppContext
) -> None:
    c1, c2 = await customer(client, tenant, "c1"), await customer(client, tenant, "c2")
    await customer(client, tenant, "c3")
    api = await meter(client, tenant, "api_calls")
    late = await grant(client, tenant, "c1", amount=100, expires_at="2026-12-01T00:00:00Z")
    scoped = await grant(client, tenant, "c1", amount=200, priority=5, applies_to_meters=["api_calls"])
    forever = await grant(client, tenant, "c1", amount=300)
    early = await grant(client, tenant, "c1", amount=400, expires_at="2026-11-25T00:00:00Z")
    voided = await grant(client, tenant, "c1", amount=500, priority=0)
    await void(client, tenant, voided["id"])
    await grant(client, tenant, "c1", category="paid", amount=600, priority=0)  # pending
    other = await grant(client, tenant, "c2", amount=700)
    async with ctx.database.read() as session:
        api_id = await session.scalar(sa.select(Meter.id).where(Meter.key == api["key"]))
        found = await credit_terms.grants_for(session, tenant.id, [c1["id"], c2["id"]], at=LATER)
        before_created = await credit_terms.grants_for(
            session, tenant.id, [c1["id"]], at=FROZEN_AT - timedelta(microseconds=1)
        )
        at_expiry = await credit_terms.grants_for(
            session, tenant.id, [c1["id"]], at=FROZEN_AT.replace(day=25, hour=0)
        )
    assert found == {
        (c1["id"], "USD"): (
            Grant(scoped["id"], 200, frozenset({api_id})),
            Grant(early["id"], 400),
            Grant(late["id"], 100),
            Grant(forever["id"], 300),
        ),
        (c2["id"], "USD"): (Grant(other["id"], 700),),
    }
    assert before_created == {}
    # A grant is no longer usable at its expiry instant, before the job has expired it.
    assert [g.id for g in at_expiry[(c1["id"], "USD")]] == [scoped["id"], late["id"], forever["id"]]


@pytest.mark.postgres_only
async def test_grants_for_with_lock_holds_the_rows_until_commit(
    client: httpx.AsyncClient, tenant: TenantHandle, ctx: AppContext
) -> None:
    c1 = await customer(client, tenant, "c1")
    held = await grant(client, tenant, "c1", amount=100)
    async with ctx.database.transaction() as first:
        await credit_terms.grants_for(first, tenant.id, [c1["id"]], at=LATER, lock=True)
        async with ctx.database.transaction() as second:
            await second.execute(sa.text("SET LOCAL lock_timeout = '200ms'"))
            with pytest.raises(sa.exc.DBAPIError):
                await second.execute(
                    sa.select(CreditGrant).where(CreditGrant.id == held["id"]).with_for_update()
                )


async def test_apply_takes_from_each_grant_and_depletes_at_zero(
    client: httpx.AsyncClient, tenant: TenantHandle, ctx: AppContext
) -> None:
    await customer(client, tenant, "c1")
    a = await grant(client, tenant, "c1", amount=300)
    b = await grant(client, tenant, "c1", amount=500)
    async with ctx.database.transaction() as session:
        await credit_terms.apply(session, invoice(), [(a["id"], 300), (b["id"], 120)], at=LATER)
    assert (
        (await get_grant(client, tenant, a["id"]))["status"],
        (await get_grant(client, tenant, a["id"]))["available"],
    ) == ("depleted", 0)
    assert (await get_grant(client, tenant, b["id"]))["available"] == 380
    entries = await ledger(client, tenant, "c1")
    assert [(e["type"], e["amount"], e["balance_after"], e["invoice"]) for e in entries[:2]] == [
        ("applied", -120, 380, "inv_acme-000001"),
        ("applied", -300, 500, "inv_acme-000001"),
    ]
    assert_ledger_consistent(entries, 380)
    (usd,) = (await balance(client, tenant, "c1"))["balances"]
    assert (usd["available"], [g["credit_grant"] for g in usd["grants"]]) == (380, [b["id"]])
    with pytest.raises(ValueError):
        async with ctx.database.transaction() as session:
            await credit_terms.apply(session, invoice("ACME-000002"), [(b["id"], 381)], at=LATER)
    assert len(await ledger(client, tenant, "c1")) == 4


async def test_a_credit_grant_invoice_never_applies_credit(
    client: httpx.AsyncClient, tenant: TenantHandle, ctx: AppContext
) -> None:
    await customer(client, tenant, "c1")
    a = await grant(client, tenant, "c1", amount=300)
    async with ctx.database.transaction() as session:
        await credit_terms.apply(session, invoice(billing_reason="credit_grant"), [(a["id"], 100)], at=LATER)
    assert len(await ledger(client, tenant, "c1")) == 1


async def test_restore_gives_each_grant_its_share_and_an_expired_one_loses_it_again(
    client: httpx.AsyncClient, tenant: TenantHandle, ctx: AppContext
) -> None:
    await customer(client, tenant, "c1")
    a = await grant(client, tenant, "c1", amount=300)
    b = await grant(client, tenant, "c1", amount=500, expires_at="2026-11-23T00:00:00Z")
    c = await grant(client, tenant, "c1", amount=50)
    spent = invoice()
    async with ctx.database.transaction() as session:
        await credit_terms.apply(session, spent, [(a["id"], 300), (b["id"], 200)], at=LATER)
    async with ctx.database.transaction() as session:
        await credit_terms.apply(session, invoice("ACME-000002"), [(c["id"], 50)], at=LATER)
    async with ctx.database.transaction() as session:
        assert await expire_grants(session, FROZEN_AT + timedelta(days=3), tenant.id) == 1
    async with ctx.database.transaction() as session:
        await credit_terms.restore(session, spent, at=FROZEN_AT + timedelta(days=4))
    entries = await ledger(client, tenant, "c1")
    restored_at = "2026-11-25T12:00:00Z"
    assert [
        (e["type"], e["credit_grant"], e["amount"], e["balance_after"], e["created_at"]) for e in entries[:4]
    ] == [
        ("restored", a["id"], 300, 300, restored_at),
        ("expired", b["id"], -200, 0, restored_at),
        ("restored", b["id"], 200, 200, restored_at),
        ("expired", b["id"], -300, 0, "2026-11-23T00:00:00Z"),
    ]
    assert_ledger_consistent(entries, 300)
    assert (
        (await get_grant(client, tenant, a["id"]))["status"],
        (await get_grant(client, tenant, a["id"]))["available"],
    ) == ("active", 300)
    assert (await get_grant(client, tenant, b["id"]))["status"] == "expired"
    async with ctx.database.transaction() as session:
        await credit_terms.restore(session, spent, at=FROZEN_AT + timedelta(days=5))
    assert len(await ledger(client, tenant, "c1")) == len(entries)


async def test_applying_credit_can_cross_the_low_threshold(
    client: httpx.AsyncClient, tenant: TenantHandle, ctx: AppContext, monkeypatch: pytest.MonkeyPatch
) -> None:

    await customer(client, tenant, "c1")
    await set_low_threshold(client, tenant, "c1", 1000, monkeypatch)
    a = await grant(client, tenant, "c1", amount=1500)
    with listening({"credit_balance.low"}) as seen:
        async with ctx.database.transaction() as session:
            await credit_terms.apply(session, invoice(), [(a["id"], 400)], at=LATER)
        async with ctx.database.transaction() as session:
            await credit_terms.apply(session, invoice("ACME-000002"), [(a["id"], 200)], at=LATER)
        async with ctx.database.transaction() as session:
            await credit_terms.apply(session, invoice("ACME-000003"), [(a["id"], 100)], at=LATER)
        await jobs.dispatch_outbox(ctx, at=LATER)
    assert [m.payload["object"]["available"] for m in seen] == [900]


async def test_a_negative_total_becomes_a_promotional_grant_once(
    client: httpx.AsyncClient, tenant: TenantHandle, ctx: AppContext
) -> None:
    c1 = await customer(client, tenant, "c1", currency="KWD")
    negative = invoice("ACME-000007", customer_id=c1["id"], currency="KWD", total=-1234)
    for _ in range(2):
        async with ctx.database.transaction() as session:
            await credit_terms.grant_negative_total(session, negative, at=LATER)
    (made,) = (await call(client, tenant, "/v1/credit-grants", method="GET"))["data"]
    expected = {
        "name": "Credit from ACME-000007",
        "category": "promotional",
        "priority": 0,
        "expires_at": None,
        "amount": 1234,
        "available": 1234,
        "currency": "KWD",
        "status": "active",
        "invoice": negative.id,
    }
    assert {key: made[key] for key in expected} == expected
    async with ctx.database.transaction() as session:
        await credit_terms.grant_negative_total(
            session, invoice("ACME-000008", customer_id=c1["id"], currency="KWD", total=0), at=LATER
        )
    assert len((await call(client, tenant, "/v1/credit-grants", method="GET"))["data"]) == 1
