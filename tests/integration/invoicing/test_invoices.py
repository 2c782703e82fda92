"""Invoicing through the public API: drafts at period end, finalization, numbers, transitions."""

from __future__ import annotations

import httpx
import pytest

from billing.web.auth import Scope
from tests.conftest import TenantHandle, subscribe
from tests.integration.web.test_auth import assert_problem


async def post(
    client: httpx.AsyncClient, tenant: TenantHandle, path: str, body: object, status: int = 200
) -> dict:
    response = await client.post(path, headers=tenant.headers(), json=body)
    assert response.status_code == status, response.text
    return response.json()


async def run(client: httpx.AsyncClient, tenant: TenantHandle, at: str) -> dict:
    return await post(client, tenant, "/v1/billing/run", {"at": at})


async def invoices(client: httpx.AsyncClient, tenant: TenantHandle, **params: str) -> list[dict]:
    response = await client.get("/v1/invoices", headers=tenant.headers(), params=params)
    assert response.status_code == 200, response.text
    return response.json()["data"]


async def send(client: httpx.AsyncClient, tenant: TenantHandle, events: list[dict]) -> dict:
    body = await post(client, tenant, "/v1/events/batch", {"events": events})
    assert body["accepted"] == len(events), body
    return body


@pytest.fixture
async def priced(client: httpx.AsyncClient, tenant: TenantHandle) -> TenantHandle:
    await post(client, tenant, "/v1/customers", {"external_id": "acme-1", "timezone": "UTC"}, 201)
    await post(client, tenant, "/v1/meters", {"key": "api_calls", "aggregation": "sum"}, 201)
    await post(client, tenant, "/v1/meters", {"key": "storage", "aggregation": "sum"}, 201)
    plan = {
        "code": "pro",
        "name": "Pro",
        "base_fee": 3100,
        "prices": [
            {"meter": "api_calls", "model": "per_unit", "unit_amount": "0.002"},
            {
                "meter": "storage",
                "model": "graduated",
                "tiers": [
                    {"up_to": "1000", "unit_amount": "0", "flat_amount": 0},
                    {"up_to": None, "unit_amount": "0.0015", "flat_amount": 100},
                ],
            },
        ],
    }
    await post(client, tenant, "/v1/plans", plan, 201)
    await subscribe(client, tenant, ["acme-1"], starts_at="2026-10-15T00:00:00Z", plan="pro")
    return tenant


async def test_a_period_closes_into_a_draft_then_finalizes_after_grace(
    client: httpx.AsyncClient, priced: TenantHandle
) -> None:
    await send(
        client,
        priced,
        [
            {
                "id": "e1",
                "customer": "acme-1",
                "meter": "api_calls",
                "timestamp": "2026-10-20T10:00:00Z",
                "value": "12000",
            },
            {
                "id": "e2",
                "customer": "acme-1",
                "meter": "storage",
                "timestamp": "2026-10-20T10:00:00Z",
                "value": "1500",
            },
            {
                "id": "e3",
                "customer": "acme-1",
                "meter": "api_calls",
                "timestamp": "2026-11-01T00:00:00Z",
                "value": "5",
            },
        ],
    )
    result = await run(client, priced, "2026-11-01T00:00:00Z")
    assert result["invoices_created"] == 1
    (draft,) = await invoices(client, priced)
    assert draft["status"] == "draft" and draft["number"] is None
    assert (draft["period_start"], draft["period_end"]) == ("2026-10-15T00:00:00Z", "2026-11-01T00:00:00Z")
    by_kind = {(line["kind"], line["meter"]): line for line in draft["lines"]}
    assert by_kind[("base_fee", None)]["amount"] == 1700  # 17 of 31 days of 3100
    assert by_kind[("usage", "api_calls")]["amount"] == 2400
    assert by_kind[("usage", "storage")]["amount"] == 175  # 500 x 0.0015 = 0.75 + 1.00 flat
    assert draft["total"] == 1700 + 2400 + 175
    again = await run(client, priced, "2026-11-01T00:00:00Z")
    assert again["invoices_created"] == 0
    await run(client, priced, "2026-11-02T00:00:00Z")
    (final,) = await invoices(client, priced)
    assert final["status"] == "open"
    assert final["number"].endswith("-000001")
    assert final["total"] == draft["total"]
    event = (await client.get("/v1/events/e1", headers=priced.headers())).json()
    assert (event["billing_status"], event["invoice"]) == ("invoiced", final["id"])
    later = (await client.get("/v1/events/e3", headers=priced.headers())).json()
    assert later["billing_status"] == "pending"
    assert [t["status"] for t in final["status_transitions"]] == ["draft", "open"]


async def test_an_event_outside_any_subscription_is_rejected(
    client: httpx.AsyncClient, priced: TenantHandle
) -> None:
    body = await post(
        client,
        priced,
        "/v1/events/batch",
        {
            "events": [
                {
                    "id": "early",
                    "customer": "acme-1",
                    "meter": "api_calls",
                    "timestamp": "2026-10-14T23:59:59Z",
                }
            ]
        },
    )
    assert body["results"][0]["code"] == "no_subscription"


async def test_a_late_event_after_finalization_goes_on_the_next_invoice(
    client: httpx.AsyncClient, priced: TenantHandle
) -> None:
    await send(
        client,
        priced,
        [
            {
                "id": "e1",
                "customer": "acme-1",
                "meter": "storage",
                "timestamp": "2026-10-20T10:00:00Z",
                "value": "900",
            }
        ],
    )
    await run(client, priced, "2026-11-02T00:00:00Z")
    (first,) = await invoices(client, priced)
    assert first["status"] == "open"
    # 200 more units in October: 100 still free, 100 at 0.0015, plus the second tier's flat 100.
    await send(
        client,
        priced,
        [
            {
                "id": "late",
                "customer": "acme-1",
                "meter": "storage",
                "timestamp": "2026-10-31T23:59:59Z",
                "value": "200",
            }
        ],
    )
    await run(client, priced, "2026-12-01T00:00:00Z")
    drafts = await invoices(client, priced, status="draft")
    (december,) = drafts
    (late,) = [line for line in december["lines"] if line["kind"] == "late_usage"]
    assert late["period_start"] == "2026-10-15T00:00:00Z"
    assert (late["quantity"], late["amount"]) == ("200", 115)
    await post(client, priced, f"/v1/invoices/{december['id']}/finalize", None)
    event = (await client.get("/v1/events/late", headers=priced.headers())).json()
    assert event["invoice"] == december["id"]


async def test_transitions_that_are_not_allowed_answer_409(
    client: httpx.AsyncClient, priced: TenantHandle
) -> None:
    await run(client, priced, "2026-11-01T00:00:00Z")
    (draft,) = await invoices(client, priced)
    finance = priced.headers(Scope.FINANCE)
    response = await client.post(f"/v1/invoices/{draft['id']}/mark-uncollectible", headers=finance)
    assert_problem(response, 409, "invoice_not_draft")
    assert (await client.post(f"/v1/invoices/{draft['id']}/finalize", headers=finance)).status_code == 200
    assert_problem(
        await client.post(f"/v1/invoices/{draft['id']}/finalize", headers=finance), 409, "invoice_not_draft"
    )
    assert (await client.post(f"/v1/invoices/{draft['id']}/void", headers=finance)).status_code == 200
    assert_problem(
        await client.post(f"/v1/invoices/{draft['id']}/void", headers=finance), 409, "invalid_transition"
    )


async def test_export_csv_has_one_row_per_line(client: httpx.AsyncClient, priced: TenantHandle) -> None:
    await run(client, priced, "2026-11-01T00:00:00Z")
    response = await client.get("/v1/invoices/export.csv", headers=priced.headers(Scope.FINANCE))
    assert response.status_code == 200
    rows = response.text.strip().split("\r\n")
    assert len(rows) == 1 + 3


async def test_upcoming_invoice_previews_the_current_period(
    client: httpx.AsyncClient, priced: TenantHandle
) -> None:
    await send(
        client,
        priced,
        [
            {
                "id": "now",
                "customer": "acme-1",
                "meter": "api_calls",
                "timestamp": "2026-11-21T11:00:00Z",
                "value": "1000",
            }
        ],
    )
    response = await client.get("/v1/customers/acme-1/upcoming-invoice", headers=priced.headers())
    assert response.status_code == 200, response.text
    body = response.json()
    assert body["status"] == "upcoming" and body["id"] is None
    assert body["period_start"] == "2026-11-01T00:00:00Z"
    assert body["total"] == 3100 + 200
