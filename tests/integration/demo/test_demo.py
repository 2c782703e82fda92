"""The demo tenant of ``billing demo``: built through the service's own verbs, it shows every
invoice status and dunning outcome, the subscription lifecycle (a trial, an upgrade, seats, a
pending downgrade), a launch credit, a coupon, reverse charge, a credit note, and an AI plan with
dimensions, a percentage fee, threshold invoices and a spend alert; its emails are in
the ``.eml`` outbox, and it is built once."""

from __future__ import annotations

import json
import stat
from collections import Counter
from typing import Any

import httpx
import pytest
import sqlalchemy as sa

from billing import demo, jobs
from billing.core.context import AppContext
from billing.customers.models import Customer
from billing.demo.roster import MIN_CUSTOMERS
from billing.models import metadata
from billing.notifications.delivery import OUTBOX_DIR
from billing.tenants import service
from billing.web.auth import Scope
from tests.integration.demo.ai_stories import assert_ai_stories
from tests.integration.demo.billing_stories import assert_billing_stories
from tests.integration.demo.lifecycle import assert_lifecycle_stories
from tests.integration.invoicing.test_invoice_lifecycle import MakeTenant


def bearer(key: str) -> dict[str, str]:
    return {"Authorization": f"Bearer {key}"}


async def every_page(client: httpx.AsyncClient, path: str, key: str, **params: str) -> list[dict[str, Any]]:
    items: list[dict[str, Any]] = []
    query: dict[str, str] = {"limit": "100", **params}
    while True:
        response = await client.get(path, headers=bearer(key), params=query)
        assert response.status_code == 200, response.text
        page = response.json()
        items.extend(page["data"])
        if not page["has_more"]:
            return items
        query["starting_after"] = items[-1]["id"]


async def row_counts(ctx: AppContext) -> dict[str, int]:
    async with ctx.database.read() as session:
        return {
            table.name: int(await session.scalar(sa.select(sa.func.count()).select_from(table)) or 0)
            for table in metadata.sorted_tables
        }


async def test_the_demo_shows_every_invoice_status_and_dunning_outcome_and_a_second_run_adds_nothing(
    ctx: AppContext, client: httpx.AsyncClient
) -> None:
    info = await demo.ensure(ctx, billing_run=jobs.billing_run)
    assert info["created"] is True
    admin, finance = info["admin_key"], info["finance_key"]

    plans = await every_page(client, "/v1/plans", admin)
    assert {price["model"] for plan in plans for price in plan["prices"]} == {
        "per_unit",
        "graduated",
        "volume",
        "package",
        "percentage",
    }
    async with ctx.database.read() as session:
        customers = await session.scalar(
            sa.select(sa.func.count()).select_from(Customer).where(Customer.tenant_id == info["tenant_id"])
        )
    assert customers == demo.DEFAULT_CUSTOMERS >= 30

    invoices = await every_page(client, "/v1/invoices", finance)
    assert {"draft", "open", "paid", "void", "uncollectible"} <= {i["status"] for i in invoices}
    for invoice in invoices:
        assert invoice["total"] == sum(line["amount"] for line in invoice["lines"]), invoice["id"]
    for invoice in (i for i in invoices if i["status"] == "paid"):  # by a charge, credit or credit note
        settled = (
            invoice["amount_paid"] + invoice["credits_applied"] + invoice["pre_payment_credit_notes_amount"]
        )
        assert (settled, invoice["amount_due"]) == (invoice["total"], 0), invoice["id"]
    assert any(i["amount_paid"] == 0 < i["credits_applied"] for i in invoices if i["status"] == "paid")
    assert any(line["kind"] == "late_usage" for i in invoices for line in i["lines"])
    numbers = sorted(i["number"] for i in invoices if i["number"])
    assert numbers == [f"DEMO-{n:06d}" for n in range(1, len(numbers) + 1)]  # gapless

    cases = Counter(case["status"] for case in await every_page(client, "/v1/dunning/cases", finance))
    assert cases["recovered"] >= 1 and cases["exhausted"] >= 1 and cases["active"] >= 1

    emails = await every_page(client, "/v1/notifications", finance)
    kinds = {email["kind"] for email in emails}
    assert {
        "payment_failed",
        "final_notice",
        "payment_recovered",
        "card_expiring",
        "credit_note_issued",
        "usage_alert",
    } <= kinds
    assert all(email["status"] == "sent" for email in emails)
    await assert_lifecycle_stories(client, info, customers=demo.DEFAULT_CUSTOMERS, now=ctx.clock.now())
    await assert_billing_stories(client, info, customers=demo.DEFAULT_CUSTOMERS, now=ctx.clock.now())
    await assert_ai_stories(client, info, customers=demo.DEFAULT_CUSTOMERS, now=ctx.clock.now())
    eml_files = sorted(path.stem for path in (ctx.settings.data_dir / OUTBOX_DIR).glob("*.eml"))
    assert eml_files == sorted(email["id"] for email in emails)

    saved = ctx.settings.data_dir / demo.DEMO_TENANT_FILE
    assert stat.S_IMODE(saved.stat().st_mode) == 0o600
    before = await row_counts(ctx)
    again = await demo.ensure(ctx, billing_run=jobs.billing_run)
    assert again == info | {"created": False}
    assert await row_counts(ctx) == before


@pytest.mark.sqlite_only  # the key check is one portable query; a second build would only add time
async def test_a_saved_demo_whose_key_no_longer_works_is_built_again(
    ctx: AppContext, client: httpx.AsyncClient, make_tenant: MakeTenant
) -> None:
    old = await make_tenant("Old demo")
    saved = ctx.settings.data_dir / demo.DEMO_TENANT_FILE
    keys = {"admin_key": old.keys[Scope.ADMIN], "finance_key": old.keys[Scope.FINANCE]}
    saved.write_text(json.dumps({"tenant_id": old.id, **keys, "customers": MIN_CUSTOMERS}))
    async with ctx.database.transaction() as session:
        await service.revoke_api_key(session, old.key_ids[Scope.FINANCE], now=ctx.clock.now())

    new = await demo.ensure(ctx, billing_run=jobs.billing_run, customers=MIN_CUSTOMERS)
    assert new["created"] is True and new["tenant_id"] != old.id
    assert json.loads(saved.read_text()) == {k: v for k, v in new.items() if k != "created"}
    response = await client.get("/v1/tenant", headers=bearer(new["admin_key"]))
    assert response.status_code == 200 and response.json()["id"] == new["tenant_id"]
    invoices = await every_page(client, "/v1/invoices", new["finance_key"])
    assert {"draft", "open", "paid", "void", "uncollectible"} <= {i["status"] for i in invoices}
    await assert_lifecycle_stories(client, new, customers=MIN_CUSTOMERS, now=ctx.clock.now())
    await assert_billing_stories(client, new, customers=MIN_CUSTOMERS, now=ctx.clock.now())
    await assert_ai_stories(client, new, customers=MIN_CUSTOMERS, now=ctx.clock.now())
