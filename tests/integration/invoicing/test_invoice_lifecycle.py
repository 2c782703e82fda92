"""The invoice lifecycle through the API: late events, transitions, numbers, actors, filters and CSV,
outbox events, time travel, and concurrent finalizations and billing runs (PostgreSQL)."""

from __future__ import annotations

import asyncio
import csv
import dataclasses
import io
import json
from collections import Counter
from collections.abc import Awaitable, Callable
from datetime import UTC, datetime
from typing import Any

import httpx
import pytest
import sqlalchemy as sa

from billing import jobs
from billing.app import create_app
from billing.core import outbox
from billing.core.clock import FrozenClock
from billing.core.context import AppContext
from billing.core.settings import Settings
from billing.web.auth import Scope
from tests.conftest import TenantHandle, subscribe
from tests.integration.web.test_auth import assert_problem

TIERS = [
    {"up_to": "10", "unit_amount": "8", "flat_amount": 0},
    {"up_to": None, "unit_amount": "6", "flat_amount": 0},
]
PER_UNIT = [{"meter": "units", "model": "per_unit", "unit_amount": "1"}]
MakeTenant = Callable[..., Awaitable[TenantHandle]]


async def call(
    client: httpx.AsyncClient,
    tenant: TenantHandle,
    path: str,
    body: object = None,
    *,
    status: int = 200,
    scope: Scope = Scope.ADMIN,
    method: str = "POST",
) -> Any:
    response = await client.request(method, path, headers=tenant.headers(scope), json=body)
    assert response.status_code == status, response.text
    return response.json()


async def run(client: httpx.AsyncClient, tenant: TenantHandle, at: str) -> dict:
    return await call(client, tenant, "/v1/billing/run", {"at": at})


async def act(client: httpx.AsyncClient, tenant: TenantHandle, invoice_id: str, action: str) -> dict:
    """finalize / void / mark-uncollectible with the finance key."""
    return await call(client, tenant, f"/v1/invoices/{invoice_id}/{action}", scope=Scope.FINANCE)


async def listed(client: httpx.AsyncClient, tenant: TenantHandle, **params: str) -> list[dict]:
    response = await client.get("/v1/invoices", headers=tenant.headers(), params={"limit": 100, **params})
    assert response.status_code == 200, response.text
    return response.json()["data"]


async def get_invoice(client: httpx.AsyncClient, tenant: TenantHandle, invoice_id: str) -> dict:
    return await call(client, tenant, f"/v1/invoices/{invoice_id}", method="GET")


async def send(client: httpx.AsyncClient, tenant: TenantHandle, *events: tuple[str, ...]) -> None:
    """Events as (id, customer, timestamp, value[, meter]); all must be accepted."""
    body = {
        "events": [
            {
                "id": e[0],
                "customer": e[1],
                "timestamp": e[2],
                "value": e[3],
                "meter": e[4] if e[4:] else "units",
            }
            for e in events
        ]
    }
    result = await call(client, tenant, "/v1/events/batch", body, scope=Scope.INGEST)
    assert result["accepted"] == len(events), result


async def billing_of(
    client: httpx.AsyncClient, tenant: TenantHandle, event_id: str
) -> tuple[str, str | None]:
    body = await call(client, tenant, f"/v1/events/{event_id}", method="GET")
    return body["billing_status"], body["invoice"]


async def setup(
    client: httpx.AsyncClient,
    tenant: TenantHandle,
    customers: list[str],
    *,
    starts_at: str,
    prices: list[dict] | None = None,
    base_fee: int = 0,
    meters: tuple[str, ...] = ("units",),
) -> list[dict]:
    """Meters, a plan "metered", customers in UTC, and their subscriptions."""
    for meter in meters:
        await call(client, tenant, "/v1/meters", {"key": meter, "aggregation": "sum"}, status=201)
    plan = {"code": "metered", "name": "Metered", "base_fee": base_fee, "prices": prices or []}
    await call(client, tenant, "/v1/plans", plan, status=201)
    for customer in customers:
        await call(client, tenant, "/v1/customers", {"external_id": customer, "timezone": "UTC"}, status=201)
    return await subscribe(client, tenant, customers, starts_at=starts_at, plan="metered")


def line(invoice: dict, kind: str, meter: str | None = "units") -> dict:
    (found,) = [x for x in invoice["lines"] if x["kind"] == kind and x["meter"] == meter]
    return found


def of_customer(invoices: list[dict], external_id: str) -> dict:
    (found,) = [i for i in invoices if i["customer_external_id"] == external_id]
    return found


def numbers(prefix: str, first: int, last: int) -> list[str]:
    return [f"{prefix}-{n:06d}" for n in range(first, last + 1)]


# Late events


async def test_a_late_event_in_the_grace_period_changes_the_draft_and_is_invoiced_by_it(
    client: httpx.AsyncClient, tenant: TenantHandle
) -> None:
    await setup(client, tenant, ["c1"], starts_at="2026-09-01T00:00:00Z", prices=PER_UNIT)
    await send(client, tenant, ("e1", "c1", "2026-09-10T00:00:00Z", "5"))
    assert (await run(client, tenant, "2026-10-01T00:00:00Z"))["invoices_created"] == 1
    (draft,) = await listed(client, tenant)
    assert line(draft, "usage")["quantity"] == "5"
    await send(client, tenant, ("late", "c1", "2026-09-30T23:59:59Z", "3"))
    result = await run(client, tenant, "2026-10-01T06:00:00Z")
    assert result["drafts_recomputed"] >= 1
    assert (result["invoices_created"], result["invoices_finalized"]) == (0, 0)
    recomputed = await get_invoice(client, tenant, draft["id"])
    assert recomputed["status"] == "draft"
    assert (line(recomputed, "usage")["quantity"], line(recomputed, "usage")["amount"]) == ("8", 800)
    assert recomputed["total"] == 800
    assert await billing_of(client, tenant, "late") == ("pending", None)
    assert (await run(client, tenant, "2026-10-02T00:00:00Z"))["invoices_finalized"] == 1
    final = await get_invoice(client, tenant, draft["id"])
    assert (final["status"], final["total"]) == ("open", 800)
    assert [x["kind"] for x in final["lines"]] == ["usage"]
    for event_id in ("e1", "late"):
        assert await billing_of(client, tenant, event_id) == ("invoiced", draft["id"])


async def test_late_usage_after_finalization_is_billed_marginally_on_the_next_invoice(
    client: httpx.AsyncClient, tenant: TenantHandle
) -> None:
    prices = [
        {"meter": "vol", "model": "volume", "tiers": TIERS},
        {"meter": "grad", "model": "graduated", "tiers": TIERS},
    ]
    await setup(
        client, tenant, ["c1"], starts_at="2026-09-01T00:00:00Z", prices=prices, meters=("vol", "grad")
    )
    await send(
        client,
        tenant,
        ("v1", "c1", "2026-09-10T00:00:00Z", "8", "vol"),
        ("g1", "c1", "2026-09-10T00:00:00Z", "8", "grad"),
    )
    result = await run(client, tenant, "2026-10-02T00:00:00Z")
    assert (result["invoices_created"], result["invoices_finalized"]) == (1, 1)
    (september,) = await listed(client, tenant)
    assert (line(september, "usage", "vol")["amount"], line(september, "usage", "grad")["amount"]) == (
        6400,
        6400,
    )
    await send(
        client,
        tenant,
        ("late-v", "c1", "2026-09-29T00:00:00Z", "4", "vol"),
        ("late-g", "c1", "2026-09-29T00:00:00Z", "4", "grad"),
    )
    assert (await run(client, tenant, "2026-11-01T00:00:00Z"))["invoices_created"] == 1
    (october,) = await listed(client, tenant, status="draft")
    assert october["period_start"] == "2026-10-01T00:00:00Z"
    late_vol, late_grad = line(october, "late_usage", "vol"), line(october, "late_usage", "grad")
    for late in (late_vol, late_grad):
        assert (late["period_start"], late["period_end"]) == ("2026-09-01T00:00:00Z", "2026-10-01T00:00:00Z")
        assert late["quantity"] == "4" and "2026-09-01" in late["description"]
    assert late_vol["amount"] == 7200 - 6400  # 12 units all at 6 now, minus 8 at 8 billed
    assert late_grad["amount"] == 8000 + 1200 - 6400  # 10 at 8 + 2 at 6, minus 8 at 8 billed
    assert line(october, "usage", "vol")["quantity"] == "0"
    assert october["total"] == 800 + 2800
    assert await billing_of(client, tenant, "late-v") == ("pending", None)
    assert (await run(client, tenant, "2026-11-02T00:00:00Z"))["invoices_finalized"] == 1
    assert (await get_invoice(client, tenant, october["id"]))["status"] == "open"
    for event_id in ("late-v", "late-g"):
        assert await billing_of(client, tenant, event_id) == ("invoiced", october["id"])
    assert await billing_of(client, tenant, "v1") == ("invoiced", september["id"])
    assert (await get_invoice(client, tenant, september["id"]))["total"] == 12800


async def test_a_late_event_of_a_canceled_subscription_gets_an_invoice_of_its_own(
    client: httpx.AsyncClient, tenant: TenantHandle
) -> None:
    (sub,) = await setup(client, tenant, ["c1"], starts_at="2026-10-01T00:00:00Z", prices=PER_UNIT)
    await send(client, tenant, ("e1", "c1", "2026-10-05T00:00:00Z", "2"))
    canceled = await call(client, tenant, f"/v1/subscriptions/{sub['id']}/cancel", {"at": None})
    assert (canceled["status"], canceled["cancel_at"]) == ("canceled", "2026-11-21T12:00:00Z")
    result = await run(client, tenant, "2026-11-23T00:00:00Z")
    # Canceling now closed both periods at once; the run finalizes them.
    assert (result["invoices_created"], result["invoices_finalized"]) == (0, 2)
    await send(client, tenant, ("late", "c1", "2026-11-10T00:00:00Z", "5"))
    result = await run(client, tenant, "2026-11-24T00:00:00Z")
    assert result["invoices_created"] + result["drafts_recomputed"] == 1
    (own,) = await listed(client, tenant, status="draft")
    assert own["period_start"] == own["period_end"] == "2026-11-24T00:00:00Z"
    (late,) = own["lines"]
    assert (late["kind"], late["quantity"], late["amount"]) == ("late_usage", "5", 500)
    assert (late["period_start"], late["period_end"]) == ("2026-11-01T00:00:00Z", "2026-11-21T12:00:00Z")
    assert await billing_of(client, tenant, "late") == ("pending", None)
    assert (await run(client, tenant, "2026-11-25T00:00:00Z"))["invoices_finalized"] == 1
    final = await get_invoice(client, tenant, own["id"])
    assert (final["status"], final["number"], final["total"]) == ("open", "ACME-000003", 500)
    assert await billing_of(client, tenant, "late") == ("invoiced", own["id"])
    again = await run(client, tenant, "2026-11-26T00:00:00Z")
    assert (again["invoices_created"], again["drafts_recomputed"], again["invoices_finalized"]) == (0, 0, 0)


async def test_every_accepted_event_ends_on_exactly_one_invoice(
    client: httpx.AsyncClient, tenant: TenantHandle
) -> None:
    await setup(client, tenant, ["c1"], starts_at="2026-08-01T00:00:00Z", prices=PER_UNIT)
    values: dict[str, int] = {}

    async def add(event_id: str, timestamp: str, value: int) -> None:
        await send(client, tenant, (event_id, "c1", timestamp, str(value)))
        values[event_id] = value

    await add("a1", "2026-08-03T00:00:00Z", 1)
    await add("a2", "2026-08-20T00:00:00Z", 2)
    await add("s1", "2026-09-05T00:00:00Z", 4)
    await add("o1", "2026-10-07T00:00:00Z", 8)
    await add("n1", "2026-11-02T00:00:00Z", 16)
    await run(client, tenant, "2026-09-01T00:00:00Z")
    await add("a3", "2026-08-31T00:00:00Z", 32)  # in the grace period: changes the August draft
    await run(client, tenant, "2026-09-02T00:00:00Z")
    await add("a4", "2026-08-15T00:00:00Z", 64)  # after finalization: late usage on September
    await run(client, tenant, "2026-10-01T00:00:00Z")
    (september,) = await listed(client, tenant, status="draft")
    assert line(september, "late_usage")["quantity"] == "64"
    assert (await act(client, tenant, september["id"], "void"))["status"] == "void"
    await add("s2", "2026-09-30T00:00:00Z", 128)  # late for a voided period
    await run(client, tenant, "2026-11-02T00:00:00Z")
    await run(client, tenant, "2026-12-02T00:00:00Z")
    everything = await listed(client, tenant)
    by_start = {i["period_start"][:7]: i for i in everything}
    assert sorted(by_start) == ["2026-08", "2026-09", "2026-10", "2026-11"]
    # c1 has no payment method: dunning gave up on August and October (7 days after their first charge).
    statuses = ["uncollectible", "void", "uncollectible", "open"]
    assert [by_start[m]["status"] for m in sorted(by_start)] == statuses
    expected = {
        "a1": "08",
        "a2": "08",
        "a3": "08",
        "a4": "09",
        "s1": "09",
        "s2": "10",
        "o1": "10",
        "n1": "11",
    }
    for event_id, month in expected.items():
        assert await billing_of(client, tenant, event_id) == ("invoiced", by_start[f"2026-{month}"]["id"])
    billed = sum(
        int(x["quantity"]) for i in everything for x in i["lines"] if x["kind"] in ("usage", "late_usage")
    )
    assert billed == sum(values.values())  # each event counted on exactly one invoice
    assert line(by_start["2026-10"], "late_usage")["quantity"] == "128"


async def test_voiding_a_later_draft_leaves_the_earlier_drafts_events_to_it(
    client: httpx.AsyncClient, tenant: TenantHandle
) -> None:
    """Voiding marks the events the voided draft bills; those of an earlier draft stay with it."""
    await call(client, tenant, "/v1/tenant", {"grace_period_hours": 744}, method="PATCH")
    await setup(client, tenant, ["c1"], starts_at="2026-10-15T00:00:00Z", prices=PER_UNIT)
    await send(
        client, tenant, ("oct", "c1", "2026-10-20T00:00:00Z", "3"), ("nov", "c1", "2026-11-05T00:00:00Z", "7")
    )
    result = await run(client, tenant, "2026-12-01T00:00:00Z")
    assert (result["invoices_created"], result["invoices_finalized"]) == (2, 0)
    drafts = {i["period_start"][:7]: i for i in await listed(client, tenant, status="draft")}
    assert line(drafts["2026-10"], "usage")["quantity"] == "3"
    await act(client, tenant, drafts["2026-11"]["id"], "void")
    october = await act(client, tenant, drafts["2026-10"]["id"], "finalize")
    assert (line(october, "usage")["quantity"], october["total"]) == ("3", 300)
    assert await billing_of(client, tenant, "oct") == ("invoiced", october["id"])
    assert await billing_of(client, tenant, "nov") == ("invoiced", drafts["2026-11"]["id"])


# Lifecycle


async def test_a_second_billing_run_changes_nothing(client: httpx.AsyncClient, tenant: TenantHandle) -> None:
    await setup(client, tenant, ["c1", "c2"], starts_at="2026-09-01T00:00:00Z", base_fee=1000)
    first = await run(client, tenant, "2026-11-02T00:00:00Z")
    assert (first["invoices_created"], first["invoices_finalized"]) == (4, 4)

    def summary(invoices: list[dict]) -> list[tuple]:
        return sorted(
            (i["id"], i["number"], i["status"], i["total"], len(i["status_transitions"])) for i in invoices
        )

    before = summary(await listed(client, tenant))
    for at in ("2026-11-02T00:00:00Z", "2026-10-02T00:00:00Z"):
        again = await run(client, tenant, at)
        assert (again["invoices_created"], again["drafts_recomputed"], again["invoices_finalized"]) == (
            0,
            0,
            0,
        )
        assert summary(await listed(client, tenant)) == before


async def test_a_zero_total_invoice_is_paid_on_finalization(
    client: httpx.AsyncClient, tenant: TenantHandle
) -> None:
    await call(client, tenant, "/v1/customers", {"external_id": "c1"}, status=201)
    await subscribe(client, tenant, ["c1"], starts_at="2026-10-01T00:00:00Z")
    await run(client, tenant, "2026-11-01T00:00:00Z")
    (draft,) = await listed(client, tenant)
    assert (draft["status"], draft["total"], draft["lines"]) == ("draft", 0, [])
    paid = await act(client, tenant, draft["id"], "finalize")
    assert (paid["status"], paid["number"], paid["amount_due"]) == ("paid", "ACME-000001", 0)
    assert paid["paid_at"] == paid["finalized_at"] == "2026-11-21T12:00:00Z"
    assert [t["status"] for t in paid["status_transitions"]] == ["draft", "open", "paid"]


async def test_invoice_numbers_are_gapless_per_tenant_and_independent_between_tenants(
    client: httpx.AsyncClient, tenant: TenantHandle, make_tenant: MakeTenant
) -> None:
    customers = [f"c{n}" for n in range(1, 6)]
    await setup(client, tenant, customers, starts_at="2026-10-01T00:00:00Z", base_fee=1000)
    globex = await make_tenant("Globex")
    await setup(client, globex, ["g1", "g2", "g3"], starts_at="2026-10-01T00:00:00Z", base_fee=500)
    assert (await run(client, tenant, "2026-11-01T00:00:00Z"))["invoices_created"] == 5
    assert (await run(client, globex, "2026-11-01T00:00:00Z"))["invoices_created"] == 3
    manual = of_customer(await listed(client, tenant), "c3")
    assert (await act(client, tenant, manual["id"], "finalize"))["number"] == "ACME-000001"
    assert (await run(client, tenant, "2026-11-02T00:00:00Z"))["invoices_finalized"] == 4
    assert (await run(client, tenant, "2026-12-02T00:00:00Z"))["invoices_finalized"] == 5
    acme = await listed(client, tenant)
    october = sorted(i["number"] for i in acme if i["period_start"].startswith("2026-10"))
    november = sorted(i["number"] for i in acme if i["period_start"].startswith("2026-11"))
    assert october + november == numbers("ACME", 1, 10)
    assert (await run(client, globex, "2026-11-02T00:00:00Z"))["invoices_finalized"] == 3
    assert sorted(i["number"] for i in await listed(client, globex)) == numbers("GLOBEX", 1, 3)


async def test_allowed_transitions_and_every_forbidden_one(
    client: httpx.AsyncClient, tenant: TenantHandle
) -> None:
    await setup(client, tenant, ["c2", "c3", "c4"], starts_at="2026-10-01T00:00:00Z", base_fee=1000)
    await call(client, tenant, "/v1/customers", {"external_id": "zero"}, status=201)
    await subscribe(client, tenant, ["zero"], starts_at="2026-10-01T00:00:00Z")
    await run(client, tenant, "2026-11-01T00:00:00Z")
    drafts = await listed(client, tenant)
    ids = {i["customer_external_id"]: i["id"] for i in drafts}
    finance = tenant.headers(Scope.FINANCE)

    async def refused(invoice_id: str, action: str, code: str) -> None:
        response = await client.post(f"/v1/invoices/{invoice_id}/{action}", headers=finance)
        assert_problem(response, 409, code)

    await refused(ids["c4"], "mark-uncollectible", "invoice_not_draft")
    assert (await act(client, tenant, ids["c2"], "finalize"))["status"] == "open"
    voided_open = await act(client, tenant, ids["c2"], "void")
    assert (voided_open["status"], voided_open["amount_due"]) == ("void", 0)
    assert voided_open["voided_at"] == "2026-11-21T12:00:00Z"
    assert [t["status"] for t in voided_open["status_transitions"]] == ["draft", "open", "void"]
    await act(client, tenant, ids["c3"], "finalize")
    lost = await act(client, tenant, ids["c3"], "mark-uncollectible")
    assert (lost["status"], lost["marked_uncollectible_at"]) == ("uncollectible", "2026-11-21T12:00:00Z")
    await act(client, tenant, ids["c4"], "finalize")
    await refused(ids["c4"], "finalize", "invoice_not_draft")
    assert (await act(client, tenant, ids["zero"], "finalize"))["status"] == "paid"
    ended = {"c2": "void", "c3": "uncollectible", "zero": "paid"}
    for customer, status in ended.items():
        await refused(ids[customer], "finalize", "invoice_not_draft")
        await refused(ids[customer], "void", "invalid_transition")
        await refused(ids[customer], "mark-uncollectible", "invalid_transition")
        assert (await get_invoice(client, tenant, ids[customer]))["status"] == status
    assert (await get_invoice(client, tenant, ids["c4"]))["status"] == "open"


async def test_a_draft_can_be_voided_and_keeps_its_events(
    client: httpx.AsyncClient, tenant: TenantHandle
) -> None:
    await setup(client, tenant, ["c1"], starts_at="2026-10-01T00:00:00Z", prices=PER_UNIT, base_fee=1000)
    await send(client, tenant, ("e1", "c1", "2026-10-05T00:00:00Z", "3"))
    await run(client, tenant, "2026-11-01T00:00:00Z")
    (draft,) = await listed(client, tenant)
    voided = await act(client, tenant, draft["id"], "void")
    assert (voided["status"], voided["voided_at"], voided["amount_due"]) == (
        "void",
        "2026-11-21T12:00:00Z",
        0,
    )
    actors = [(t["status"], t["actor"]) for t in voided["status_transitions"]]
    assert actors == [("draft", tenant.key_ids[Scope.ADMIN]), ("void", tenant.key_ids[Scope.FINANCE])]
    assert await billing_of(client, tenant, "e1") == ("invoiced", draft["id"])
    for action, code in (
        ("finalize", "invoice_not_draft"),
        ("void", "invalid_transition"),
        ("mark-uncollectible", "invalid_transition"),
    ):
        response = await client.post(
            f"/v1/invoices/{draft['id']}/{action}", headers=tenant.headers(Scope.FINANCE)
        )
        assert_problem(response, 409, code)
    assert (await run(client, tenant, "2026-11-02T00:00:00Z"))["invoices_finalized"] == 0
    assert (await get_invoice(client, tenant, draft["id"]))["status"] == "void"


async def test_keys_scopes_and_actors_of_status_changes(
    client: httpx.AsyncClient, tenant: TenantHandle
) -> None:
    await setup(client, tenant, ["c1", "c2"], starts_at="2026-10-01T00:00:00Z", base_fee=1000)
    for scope in (Scope.FINANCE, Scope.INGEST):
        response = await client.post("/v1/billing/run", headers=tenant.headers(scope), json={"at": None})
        assert_problem(response, 403, "forbidden")
    await run(client, tenant, "2026-11-01T00:00:00Z")
    ids = {i["customer_external_id"]: i["id"] for i in await listed(client, tenant)}
    ingest = tenant.headers(Scope.INGEST)
    for action in ("finalize", "void", "mark-uncollectible"):
        assert_problem(
            await client.post(f"/v1/invoices/{ids['c1']}/{action}", headers=ingest), 403, "forbidden"
        )
    for path in ("/v1/invoices", "/v1/invoices/export.csv", f"/v1/invoices/{ids['c1']}"):
        assert_problem(await client.get(path, headers=ingest), 403, "forbidden")
    export = await client.get("/v1/invoices/export.csv", headers=tenant.headers(Scope.FINANCE))
    assert export.status_code == 200 and export.text.count("\r\n") == 1 + 2
    admin, finance = tenant.key_ids[Scope.ADMIN], tenant.key_ids[Scope.FINANCE]
    await call(client, tenant, f"/v1/invoices/{ids['c1']}/finalize")  # the admin key may too
    voided = await act(client, tenant, ids["c1"], "void")
    await act(client, tenant, ids["c2"], "finalize")
    lost = await act(client, tenant, ids["c2"], "mark-uncollectible")
    actors = [(t["status"], t["actor"]) for t in voided["status_transitions"]]
    assert actors == [("draft", admin), ("open", admin), ("void", finance)]
    actors = [(t["status"], t["actor"]) for t in lost["status_transitions"]]
    assert actors == [("draft", admin), ("open", finance), ("uncollectible", finance)]
    assert voided["status_transitions"][0]["at"] == "2026-11-01T00:00:00Z"  # the run's `at`
    assert voided["status_transitions"][2]["at"] == "2026-11-21T12:00:00Z"  # the clock


async def test_the_scheduler_records_itself_as_the_actor(
    client: httpx.AsyncClient, tenant: TenantHandle, ctx: AppContext
) -> None:
    await setup(client, tenant, ["c1"], starts_at="2026-10-01T00:00:00Z", base_fee=1000)
    done = await jobs.run_jobs(ctx, jobs.Run(at=datetime(2026, 11, 2, tzinfo=UTC)))
    assert (done["close_periods"], done["finalize_drafts"]) == (1, 1)
    (invoice,) = await listed(client, tenant)
    transitions = [(t["status"], t["actor"], t["at"]) for t in invoice["status_transitions"]]
    assert transitions == [
        ("draft", "scheduler", "2026-11-02T00:00:00Z"),
        ("open", "scheduler", "2026-11-02T00:00:00Z"),
    ]


# Filters and CSV


async def export(client: httpx.AsyncClient, tenant: TenantHandle, **params: str) -> list[dict[str, str]]:
    response = await client.get(
        "/v1/invoices/export.csv", headers=tenant.headers(Scope.FINANCE), params=params
    )
    assert response.status_code == 200, response.text
    assert response.headers["content-type"].startswith("text/csv")
    text = response.text
    assert text.endswith("\r\n") and "\n" not in text.replace("\r\n", "")
    header = text.split("\r\n", 1)[0]
    assert header == (
        "invoice_id,number,status,customer,customer_external_id,subscription,billing_reason,currency,"
        "invoice_period_start,invoice_period_end,invoice_subtotal,discount_total,tax_total,invoice_total,"
        "credits_applied,credit_notes_amount,amount_due,finalized_at,due_at,overdue,line,kind,meter,"
        "description,quantity,amount,amount_decimal,line_id,discount,tax,line_period_start,line_period_end,"
        "price,group,unpriced_quantity"
    )
    return list(csv.DictReader(io.StringIO(text, newline="")))


def major(amount: int, exponent: int) -> str:
    if exponent == 0:
        return str(amount)
    sign, digits = ("-" if amount < 0 else ""), str(abs(amount)).rjust(exponent + 1, "0")
    return f"{sign}{digits[:-exponent]}.{digits[-exponent:]}"


def assert_rows_match(rows: list[dict[str, str]], invoices: list[dict], exponent: int = 2) -> None:
    expected = {(i["id"], str(n)): (i, x) for i in invoices for n, x in enumerate(i["lines"])}
    assert len(rows) == len(expected)
    assert {(r["invoice_id"], r["line"]) for r in rows} == set(expected)
    for row in rows:
        invoice, item = expected[(row["invoice_id"], row["line"])]
        assert row == {
            "invoice_id": invoice["id"],
            "number": invoice["number"] or "",
            "status": invoice["status"],
            "customer": invoice["customer"],
            "customer_external_id": invoice["customer_external_id"],
            "subscription": invoice["subscription"] or "",
            "billing_reason": invoice["billing_reason"],
            "currency": invoice["currency"],
            "invoice_period_start": invoice["period_start"],
            "invoice_period_end": invoice["period_end"],
            "invoice_subtotal": str(invoice["subtotal"]),
            "discount_total": str(invoice["discount_total"]),
            "tax_total": str(invoice["tax_total"]),
            "invoice_total": str(invoice["total"]),
            "credits_applied": str(invoice["credits_applied"]),
            "credit_notes_amount": str(
                invoice["pre_payment_credit_notes_amount"] + invoice["post_payment_credit_notes_amount"]
            ),
            "amount_due": str(invoice["amount_due"]),
            "finalized_at": invoice["finalized_at"] or "",
            "due_at": invoice["due_at"] or "",
            "overdue": "true" if invoice["overdue"] else "false",
            "line": row["line"],
            "kind": item["kind"],
            "meter": item["meter"] or "",
            "description": item["description"],
            "quantity": item["quantity"],
            "amount": str(item["amount"]),
            "amount_decimal": major(item["amount"], exponent),
            "line_id": item["id"],
            "discount": str(sum(share["amount"] for share in item["discount_amounts"])),
            "tax": str(sum(tax["amount"] for tax in item["tax_amounts"])),
            "line_period_start": item["period_start"],
            "line_period_end": item["period_end"],
            "price": "" if item["price"] is None else str(item["price"]),
            "group": "" if item["group"] is None else json.dumps(item["group"], separators=(",", ":")),
            "unpriced_quantity": item["unpriced_quantity"] or "",
        }


async def test_list_filters_and_the_csv_export_agree(client: httpx.AsyncClient, tenant: TenantHandle) -> None:
    prices = [{"meter": "units", "model": "per_unit", "unit_amount": "0.01"}]
    await setup(client, tenant, ["c1", "c2"], starts_at="2026-09-01T00:00:00Z", prices=prices, base_fee=3100)
    policy = {"retry_schedule_days": [3], "final_action": "leave_open", "suspend_customer": False}
    await call(client, tenant, "/v1/dunning/policy", policy | {"expiring_card_notice": True}, method="PUT")
    await send(
        client,
        tenant,
        ("e1", "c1", "2026-09-05T00:00:00Z", "1234"),
        ("e2", "c2", "2026-10-05T00:00:00Z", "7"),
    )
    await run(client, tenant, "2026-10-02T00:00:00Z")
    await run(client, tenant, "2026-11-01T00:00:00Z")
    everything = await listed(client, tenant)
    c2_id = of_customer([i for i in everything if i["status"] == "open"], "c2")["customer"]
    cases: list[tuple[dict[str, str], int, Callable[[dict], bool]]] = [
        ({}, 4, lambda i: True),
        ({"status": "draft"}, 2, lambda i: i["status"] == "draft"),
        ({"status": "open"}, 2, lambda i: i["status"] == "open" and i["number"] is not None),
        ({"customer": "c1"}, 2, lambda i: i["customer_external_id"] == "c1"),
        ({"period_start_gte": "2026-10-01T00:00:00Z"}, 2, lambda i: i["period_start"] >= "2026-10"),
        ({"period_start_lt": "2026-10-01T00:00:00Z"}, 2, lambda i: i["period_start"] < "2026-10"),
        ({"customer": c2_id, "status": "open"}, 1, lambda i: i["customer"] == c2_id),
        (
            {"period_start_gte": "2026-09-01T00:00:00Z", "period_start_lt": "2026-09-02T00:00:00Z"},
            2,
            lambda i: i["period_start"] == "2026-09-01T00:00:00Z",
        ),
        ({"status": "void"}, 0, lambda i: False),
    ]
    for params, count, holds in cases:
        found = await listed(client, tenant, **params)
        assert len(found) == count and all(holds(i) for i in found), params
        assert_rows_match(await export(client, tenant, **params), found)
    rows = {r["kind"]: r for r in await export(client, tenant, customer="c1", status="open")}
    assert (rows["usage"]["amount"], rows["usage"]["amount_decimal"]) == ("1234", "12.34")
    assert (rows["base_fee"]["amount"], rows["base_fee"]["amount_decimal"]) == ("3100", "31.00")


async def test_csv_amounts_use_the_currency_exponent(
    client: httpx.AsyncClient, make_tenant: MakeTenant
) -> None:
    nippon = await make_tenant("Nippon", currency="JPY")
    await setup(client, nippon, ["j1"], starts_at="2026-10-01T00:00:00Z", prices=PER_UNIT)
    await send(client, nippon, ("e1", "j1", "2026-10-05T00:00:00Z", "1234"))
    await run(client, nippon, "2026-11-02T00:00:00Z")
    (invoice,) = await listed(client, nippon)
    assert (invoice["currency"], invoice["total"], invoice["number"]) == ("JPY", 1234, "NIPPON-000001")
    rows = await export(client, nippon)
    assert [(r["amount"], r["amount_decimal"]) for r in rows] == [("1234", "1234")]
    assert_rows_match(rows, [invoice], exponent=0)


# Outbox


async def outbox_rows(ctx: AppContext) -> Counter[tuple[str, str]]:
    table = outbox.OutboxEvent.__table__
    async with ctx.database.read() as session:
        rows = await session.execute(
            sa.select(table.c.topic, table.c.payload).where(table.c.consumer == outbox.FAN_OUT)
        )
        return Counter((row.topic, row.payload["invoice_id"]) for row in rows if "invoice_id" in row.payload)


async def test_status_changes_are_written_to_the_outbox(
    client: httpx.AsyncClient, tenant: TenantHandle, ctx: AppContext
) -> None:
    await setup(client, tenant, ["c1", "c2"], starts_at="2026-10-01T00:00:00Z", base_fee=1000)
    await call(client, tenant, "/v1/customers", {"external_id": "zero"}, status=201)
    await subscribe(client, tenant, ["zero"], starts_at="2026-10-01T00:00:00Z")
    await run(client, tenant, "2026-11-01T00:00:00Z")
    ids = {i["customer_external_id"]: i["id"] for i in await listed(client, tenant)}
    assert await outbox_rows(ctx) == Counter(("invoice.created", i) for i in ids.values())
    await act(client, tenant, ids["zero"], "finalize")
    await act(client, tenant, ids["c1"], "finalize")
    await act(client, tenant, ids["c1"], "void")
    await act(client, tenant, ids["c2"], "finalize")
    await act(client, tenant, ids["c2"], "mark-uncollectible")
    expected = Counter(("invoice.created", i) for i in ids.values())
    expected.update(
        [
            ("invoice.finalized", ids["zero"]),
            ("invoice.paid", ids["zero"]),
            ("invoice.finalized", ids["c1"]),
            ("invoice.voided", ids["c1"]),
            ("invoice.finalized", ids["c2"]),
            ("invoice.uncollectible", ids["c2"]),
        ]
    )
    assert await outbox_rows(ctx) == expected
    table = outbox.OutboxEvent.__table__
    async with ctx.database.read() as session:
        rows = await session.execute(
            sa.select(table.c.payload).where(
                table.c.consumer == outbox.FAN_OUT, table.c.topic == "invoice.paid"
            )
        )
        (paid,) = [row.payload for row in rows]
    assert (paid["status"], paid["total"], paid["amount_due"]) == ("paid", 0, 0)
    assert paid["number"] == "ACME-000001" and paid["currency"] == "USD"


# Time travel


async def test_a_future_at_needs_time_travel_and_a_past_at_is_accepted(
    client: httpx.AsyncClient, tenant: TenantHandle, settings: Settings, clock: FrozenClock
) -> None:
    await setup(client, tenant, ["c1"], starts_at="2026-10-01T00:00:00Z", base_fee=1000)
    app2 = create_app(dataclasses.replace(settings, allow_time_travel=False), clock=clock, scheduler=False)
    try:
        transport = httpx.ASGITransport(app=app2)
        async with httpx.AsyncClient(transport=transport, base_url="http://testserver") as strict:
            response = await strict.post(
                "/v1/billing/run", headers=tenant.headers(), json={"at": "2026-11-21T12:10:00Z"}
            )
            body = assert_problem(response, 422, "validation_error")
            assert [e["field"] for e in body["errors"]] == ["at"]
            assert await listed(client, tenant) == []
            response = await strict.post(
                "/v1/billing/run", headers=tenant.headers(), json={"at": "2026-11-01T00:00:00Z"}
            )
            assert response.status_code == 200, response.text
            assert (response.json()["at"], response.json()["invoices_created"]) == ("2026-11-01T00:00:00Z", 1)
            response = await strict.post("/v1/billing/run", headers=tenant.headers(), json={"at": None})
            assert response.status_code == 200, response.text
            assert response.json()["at"] == "2026-11-21T12:00:00Z"
    finally:
        await app2.state.ctx.close()
    assert (await run(client, tenant, "2026-12-02T00:00:00Z"))["invoices_created"] == 1  # time travel on


@pytest.mark.parametrize(
    ("content", "content_type"),
    [(None, None), (b"", None), (b"", "application/json"), (b"{}", "application/json")],
    ids=["no body", "empty body", "empty JSON body", "empty object"],
)
async def test_a_run_without_a_body_runs_now(
    client: httpx.AsyncClient, tenant: TenantHandle, content: bytes | None, content_type: str | None
) -> None:
    await setup(client, tenant, ["c1"], starts_at="2026-10-01T00:00:00Z", base_fee=1000)
    headers = tenant.headers() | ({"content-type": content_type} if content_type else {})
    response = await client.post("/v1/billing/run", headers=headers, content=content)
    assert response.status_code == 200, response.text
    assert (response.json()["at"], response.json()["invoices_created"]) == ("2026-11-21T12:00:00Z", 1)


@pytest.mark.parametrize(
    ("content", "status", "code", "errors"),
    [
        (b"{", 400, "malformed_json", None),
        (b"   ", 400, "malformed_json", None),
        (b"null", 422, "validation_error", [{"field": "body", "message": "Expected `object`, got `null`"}]),
        (b"[]", 422, "validation_error", [{"field": "body", "message": "Expected `object`, got `array`"}]),
        (
            b'{"at": "soon"}',
            422,
            "validation_error",
            [{"field": "at", "message": "Invalid RFC3339 encoded datetime"}],
        ),
        (
            b'{"when": null}',
            422,
            "validation_error",
            [{"field": "when", "message": "Object contains unknown field `when`"}],
        ),
    ],
)
async def test_a_run_with_a_bad_body_answers_a_problem_and_runs_nothing(
    client: httpx.AsyncClient,
    tenant: TenantHandle,
    content: bytes,
    status: int,
    code: str,
    errors: list[dict] | None,
) -> None:
    await setup(client, tenant, ["c1"], starts_at="2026-10-01T00:00:00Z", base_fee=1000)
    headers = tenant.headers() | {"content-type": "application/json"}
    response = await client.post("/v1/billing/run", headers=headers, content=content)
    body = assert_problem(response, status, code)
    assert body.get("errors") == errors
    assert await listed(client, tenant) == []


# Concurrency (PostgreSQL)


@pytest.mark.postgres_only
async def test_concurrent_finalizations_take_consecutive_numbers(
    client: httpx.AsyncClient, tenant: TenantHandle
) -> None:
    customers = [f"c{n:02d}" for n in range(20)]
    await setup(client, tenant, customers, starts_at="2026-10-01T00:00:00Z", base_fee=1000)
    assert (await run(client, tenant, "2026-11-01T00:00:00Z"))["invoices_created"] == 20
    drafts = await listed(client, tenant, status="draft")
    finance = tenant.headers(Scope.FINANCE)
    responses = await asyncio.gather(
        *(client.post(f"/v1/invoices/{d['id']}/finalize", headers=finance) for d in drafts)
    )
    assert [r.status_code for r in responses] == [200] * 20, [
        r.text for r in responses if r.status_code != 200
    ]
    assert sorted(r.json()["number"] for r in responses) == numbers("ACME", 1, 20)
    after = await listed(client, tenant)
    assert sorted(i["number"] for i in after) == numbers("ACME", 1, 20)
    assert {i["status"] for i in after} == {"open"}


@pytest.mark.postgres_only
async def test_concurrent_billing_runs_do_each_piece_of_work_once(
    client: httpx.AsyncClient, tenant: TenantHandle, ctx: AppContext
) -> None:
    customers = [f"c{n:02d}" for n in range(30)]
    await setup(client, tenant, customers, starts_at="2026-09-01T00:00:00Z", base_fee=1000)
    at = datetime(2026, 11, 2, tzinfo=UTC)
    run = jobs.Run(at=at)
    results = await asyncio.gather(jobs.run_jobs(ctx, run), jobs.run_jobs(ctx, run))
    assert sum(r["close_periods"] for r in results) == 60
    assert sum(r["finalize_drafts"] for r in results) == 60
    everything = await listed(client, tenant)
    assert len(everything) == 60
    per_period = Counter((i["subscription"], i["period_start"]) for i in everything)
    assert set(per_period.values()) == {1} and len(per_period) == 60
    assert {tuple(t["status"] for t in i["status_transitions"]) for i in everything} == {("draft", "open")}
    assert sorted(i["number"] for i in everything) == numbers("ACME", 1, 60)
