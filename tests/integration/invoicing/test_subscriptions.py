"""/v1/subscriptions: one subscription at a time per customer, periods in a fixed timezone, cancel rules,
and the window in which a customer's usage events are accepted."""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from datetime import UTC, datetime
from typing import Any

import httpx
import pytest

from billing.core.clock import FrozenClock
from billing.web.auth import Scope
from tests.conftest import TenantHandle
from tests.integration.web.test_auth import assert_problem

NOW = "2026-11-21T12:00:00Z"
SUB_FIELDS = {
    "id",
    "object",
    "customer",
    "customer_external_id",
    "plan",
    "plan_code",
    "status",
    "timezone",
    "starts_at",
    "cancel_at",
    "canceled_at",
    "current_period_start",
    "current_period_end",
    "created_at",
    "quantity",
    "metadata",
    "trial_start",
    "trial_end",
    "cancel_at_period_end",
    "ended_at",
    "pending_change",
    "replaces",
    "replaced_by",
}


async def call(
    client: httpx.AsyncClient, tenant: TenantHandle, path: str, body: Any = None, method: str = "POST"
) -> httpx.Response:
    return await client.request(method, path, headers=tenant.headers(), json=body)


async def ok(client: httpx.AsyncClient, tenant: TenantHandle, path: str, body: Any = None, **kw: Any) -> dict:
    response = await call(client, tenant, path, body, **kw)
    assert response.status_code in (200, 201), response.text
    return response.json()


@pytest.fixture
async def shop(client: httpx.AsyncClient, tenant: TenantHandle) -> TenantHandle:
    for external_id, timezone in (("utc-1", "UTC"), ("ist-1", "Asia/Kolkata"), ("none-1", None)):
        await ok(client, tenant, "/v1/customers", {"external_id": external_id, "timezone": timezone})
    await ok(client, tenant, "/v1/meters", {"key": "api_calls", "aggregation": "sum"})
    await ok(client, tenant, "/v1/plans", {"code": "pro", "base_fee": 3000})
    return tenant


async def create(
    client: httpx.AsyncClient, tenant: TenantHandle, customer: str = "utc-1", plan: str = "pro", **fields: Any
) -> httpx.Response:
    return await call(client, tenant, "/v1/subscriptions", {"customer": customer, "plan": plan, **fields})


async def sub(
    client: httpx.AsyncClient, tenant: TenantHandle, customer: str = "utc-1", **fields: Any
) -> dict:
    response = await create(client, tenant, customer, **fields)
    assert response.status_code == 201, response.text
    return response.json()


async def cancel(
    client: httpx.AsyncClient, tenant: TenantHandle, sub_id: str, at: str | None
) -> httpx.Response:
    return await call(client, tenant, f"/v1/subscriptions/{sub_id}/cancel", {"at": at})


async def fetch(client: httpx.AsyncClient, tenant: TenantHandle, sub_id: str) -> dict:
    return await ok(client, tenant, f"/v1/subscriptions/{sub_id}", method="GET")


async def listed(client: httpx.AsyncClient, tenant: TenantHandle, query: str = "") -> dict:
    return await ok(client, tenant, f"/v1/subscriptions{query}", method="GET")


def period(subscription: dict) -> tuple[str | None, str | None]:
    return subscription["current_period_start"], subscription["current_period_end"]


async def test_create_by_external_id_and_plan_code_answers_201_with_the_subscription(
    client: httpx.AsyncClient, shop: TenantHandle
) -> None:
    created = await sub(client, shop, starts_at="2026-11-01T00:00:00Z")
    customer = await ok(client, shop, "/v1/customers/utc-1", method="GET")
    plan = await ok(client, shop, "/v1/plans/pro", method="GET")
    assert set(created) == SUB_FIELDS and created["id"].startswith("sub_")
    assert (created["customer"], created["customer_external_id"]) == (customer["id"], "utc-1")
    assert (created["plan"], created["plan_code"]) == (plan["id"], "pro")
    assert (created["status"], created["timezone"], created["starts_at"]) == (
        "active",
        "UTC",
        "2026-11-01T00:00:00Z",
    )
    assert (created["cancel_at"], created["canceled_at"], created["created_at"]) == (None, None, NOW)
    assert period(created) == ("2026-11-01T00:00:00Z", "2026-12-01T00:00:00Z")
    assert await fetch(client, shop, created["id"]) == created


async def test_create_by_customer_id_and_plan_id_and_starts_now_by_default(
    client: httpx.AsyncClient, shop: TenantHandle
) -> None:
    customer = await ok(client, shop, "/v1/customers/utc-1", method="GET")
    plan = await ok(client, shop, "/v1/plans/pro", method="GET")
    created = await sub(client, shop, customer["id"], plan=plan["id"])
    assert (created["customer_external_id"], created["plan_code"]) == ("utc-1", "pro")
    assert (created["starts_at"], created["status"]) == (NOW, "active")
    assert period(created) == (NOW, "2026-12-01T00:00:00Z")


async def test_a_subscription_starting_later_is_scheduled_until_it_starts(
    client: httpx.AsyncClient, shop: TenantHandle, clock: FrozenClock
) -> None:
    created = await sub(client, shop, starts_at="2027-01-15T00:00:00Z")
    assert created["status"] == "scheduled" and period(created) == (None, None)
    clock.set(datetime(2027, 1, 15, tzinfo=UTC))
    started = await fetch(client, shop, created["id"])
    assert started["status"] == "active"
    assert period(started) == ("2027-01-15T00:00:00Z", "2027-02-01T00:00:00Z")


async def test_periods_are_calendar_months_in_the_customers_timezone(
    client: httpx.AsyncClient, shop: TenantHandle
) -> None:
    utc = await sub(client, shop, "utc-1", starts_at="2026-10-15T00:00:00Z")
    ist = await sub(client, shop, "ist-1", starts_at="2026-10-15T00:00:00Z")
    assert (utc["timezone"], ist["timezone"]) == ("UTC", "Asia/Kolkata")
    assert period(utc) == ("2026-11-01T00:00:00Z", "2026-12-01T00:00:00Z")
    assert period(ist) == ("2026-10-31T18:30:00Z", "2026-11-30T18:30:00Z")


async def test_the_timezone_is_fixed_at_creation_from_the_customer_else_the_tenant(
    client: httpx.AsyncClient, shop: TenantHandle
) -> None:
    await ok(client, shop, "/v1/tenant", {"billing_timezone": "America/New_York"}, method="PATCH")
    fallback = await sub(client, shop, "none-1", starts_at="2026-11-01T04:00:00Z")
    own = await sub(client, shop, "ist-1", starts_at="2026-11-01T00:00:00Z")
    assert (fallback["timezone"], own["timezone"]) == ("America/New_York", "Asia/Kolkata")
    assert period(fallback) == ("2026-11-01T04:00:00Z", "2026-12-01T05:00:00Z")

    await ok(client, shop, "/v1/customers/none-1", {"timezone": "Asia/Tokyo"}, method="PATCH")
    await ok(client, shop, "/v1/customers/ist-1", {"timezone": "UTC"}, method="PATCH")
    await ok(client, shop, "/v1/tenant", {"billing_timezone": "UTC"}, method="PATCH")
    assert await fetch(client, shop, fallback["id"]) == fallback
    assert await fetch(client, shop, own["id"]) == own


async def test_an_open_ended_subscription_refuses_any_later_one(
    client: httpx.AsyncClient, shop: TenantHandle
) -> None:
    first = await sub(client, shop, starts_at="2026-10-01T00:00:00Z")
    for starts_at in ("2026-10-01T00:00:00Z", "2026-12-01T00:00:00Z", "2030-01-01T00:00:00Z", None):
        assert_problem(await create(client, shop, starts_at=starts_at), 409, "subscription_overlap")
    assert [s["id"] for s in (await listed(client, shop))["data"]] == [first["id"]]


async def test_a_subscription_may_start_at_or_after_the_previous_ones_cancel_at(
    client: httpx.AsyncClient, shop: TenantHandle
) -> None:
    first = await sub(client, shop, starts_at="2026-10-01T00:00:00Z")
    assert (await cancel(client, shop, first["id"], "2026-12-15T00:00:00Z")).status_code == 200
    for starts_at in ("2026-10-01T00:00:00Z", "2026-12-14T23:59:59Z", None):
        assert_problem(await create(client, shop, starts_at=starts_at), 409, "subscription_overlap")
    second = await sub(client, shop, starts_at="2026-12-15T00:00:00Z")
    assert (second["starts_at"], second["status"]) == ("2026-12-15T00:00:00Z", "scheduled")
    assert_problem(await create(client, shop, starts_at="2027-06-01T00:00:00Z"), 409, "subscription_overlap")


async def test_a_subscription_before_a_scheduled_one_is_refused(
    client: httpx.AsyncClient, shop: TenantHandle
) -> None:
    await sub(client, shop, starts_at="2027-01-01T00:00:00Z")
    assert_problem(await create(client, shop, starts_at="2026-12-01T00:00:00Z"), 409, "subscription_overlap")


async def test_plan_currency_must_match_the_customers(client: httpx.AsyncClient, shop: TenantHandle) -> None:
    await ok(client, shop, "/v1/plans", {"code": "pro-jpy", "currency": "JPY", "base_fee": 1000})
    problem = assert_problem(await create(client, shop, plan="pro-jpy"), 422, "validation_error")
    assert [e["field"] for e in problem["errors"]] == ["plan"]
    assert (await listed(client, shop))["data"] == []
    await ok(client, shop, "/v1/customers", {"external_id": "jp-1", "currency": "JPY"})
    assert (await sub(client, shop, "jp-1", plan="pro-jpy"))["plan_code"] == "pro-jpy"


async def test_unknown_or_foreign_customer_plan_and_subscription_answer_404(
    client: httpx.AsyncClient, shop: TenantHandle, make_tenant: Callable[..., Awaitable[TenantHandle]]
) -> None:
    other = await make_tenant(name="Other")
    await ok(client, other, "/v1/customers", {"external_id": "theirs"})
    theirs_plan = await ok(client, other, "/v1/plans", {"code": "theirs-plan"})
    theirs = await sub(client, other, "theirs", plan="theirs-plan")
    for customer, plan in (
        ("nobody", "pro"),
        ("utc-1", "nothing"),
        ("theirs", "pro"),
        ("utc-1", theirs_plan["id"]),
    ):
        assert_problem(await create(client, shop, customer, plan), 404, "not_found")
    assert_problem(
        await call(client, shop, f"/v1/subscriptions/{theirs['id']}", method="GET"), 404, "not_found"
    )
    assert_problem(await cancel(client, shop, theirs["id"], None), 404, "not_found")
    assert_problem(await cancel(client, shop, "sub_nope", None), 404, "not_found")
    assert (await listed(client, shop))["data"] == []
    assert (await fetch(client, other, theirs["id"]))["cancel_at"] is None


async def test_cancel_now_ends_the_subscription_and_a_second_cancel_answers_409(
    client: httpx.AsyncClient, shop: TenantHandle
) -> None:
    created = await sub(client, shop, starts_at="2026-11-01T00:00:00Z")
    response = await cancel(client, shop, created["id"], None)
    assert response.status_code == 200, response.text
    canceled = response.json()
    assert (canceled["status"], canceled["cancel_at"], canceled["canceled_at"]) == ("canceled", NOW, NOW)
    assert period(canceled) == (None, None)
    for at in (None, "2026-12-01T00:00:00Z"):
        assert_problem(await cancel(client, shop, created["id"], at), 409, "invalid_transition")
    assert await fetch(client, shop, created["id"]) == canceled


async def test_cancel_later_stays_active_until_then_and_ends_the_current_period_there(
    client: httpx.AsyncClient, shop: TenantHandle, clock: FrozenClock
) -> None:
    created = await sub(client, shop, starts_at="2026-11-01T00:00:00Z")
    response = await cancel(client, shop, created["id"], "2026-11-25T05:00:00Z")
    assert response.status_code == 200, response.text
    pending = response.json()
    assert (pending["status"], pending["cancel_at"], pending["canceled_at"]) == (
        "active",
        "2026-11-25T05:00:00Z",
        NOW,
    )
    assert period(pending) == ("2026-11-01T00:00:00Z", "2026-11-25T05:00:00Z")
    clock.set(datetime(2026, 11, 25, 4, 59, 59, tzinfo=UTC))
    assert (await fetch(client, shop, created["id"]))["status"] == "active"
    clock.set(datetime(2026, 11, 25, 5, tzinfo=UTC))
    assert (await fetch(client, shop, created["id"]))["status"] == "canceled"
    assert_problem(await cancel(client, shop, created["id"], None), 409, "invalid_transition")


async def test_cancel_at_a_past_time_answers_422_and_changes_nothing(
    client: httpx.AsyncClient, shop: TenantHandle
) -> None:
    created = await sub(client, shop, starts_at="2026-11-01T00:00:00Z")
    problem = assert_problem(
        await cancel(client, shop, created["id"], "2026-11-21T11:59:59Z"), 422, "validation_error"
    )
    assert [e["field"] for e in problem["errors"]] == ["at"]
    assert await fetch(client, shop, created["id"]) == created


async def test_cancel_before_an_invoiced_period_end_answers_409(
    client: httpx.AsyncClient, shop: TenantHandle
) -> None:
    created = await sub(client, shop, starts_at="2026-10-15T00:00:00Z")
    run = await ok(client, shop, "/v1/billing/run", {"at": "2027-01-01T00:00:00Z"})
    assert run["invoices_created"] == 3
    before = await fetch(client, shop, created["id"])
    for at in (None, "2026-12-15T00:00:00Z", "2026-12-31T23:59:59Z"):
        assert_problem(await cancel(client, shop, created["id"], at), 409, "invalid_transition")
    assert await fetch(client, shop, created["id"]) == before
    response = await cancel(client, shop, created["id"], "2027-01-01T00:00:00Z")
    assert response.status_code == 200 and response.json()["cancel_at"] == "2027-01-01T00:00:00Z"


async def test_list_filters_by_customer_and_pages_newest_first(
    client: httpx.AsyncClient, shop: TenantHandle
) -> None:
    customer = await ok(client, shop, "/v1/customers/utc-1", method="GET")
    old = await sub(client, shop, "utc-1", starts_at="2026-09-01T00:00:00Z")
    await cancel(client, shop, old["id"], NOW)
    new = await sub(client, shop, "utc-1")
    other = await sub(client, shop, "ist-1")
    for ref in ("utc-1", customer["id"]):
        assert [s["id"] for s in (await listed(client, shop, f"?customer={ref}"))["data"]] == [
            new["id"],
            old["id"],
        ]
    assert (await listed(client, shop, "?customer=none-1"))["data"] == []
    first = await listed(client, shop, "?limit=2")
    rest = await listed(client, shop, f"?limit=2&starting_after={first['data'][-1]['id']}")
    assert (first["has_more"], rest["has_more"]) == (True, False)
    assert [s["id"] for s in first["data"] + rest["data"]] == [other["id"], new["id"], old["id"]]
    assert_problem(
        await call(client, shop, "/v1/subscriptions?customer=nobody", method="GET"), 404, "not_found"
    )


ROUTES = [
    ("GET", "/v1/subscriptions", None, True),
    ("GET", "/v1/subscriptions/{id}", None, True),
    ("POST", "/v1/subscriptions", {"customer": "ist-1", "plan": "pro"}, False),
    ("POST", "/v1/subscriptions/{id}/cancel", {"at": None}, False),
]


@pytest.mark.parametrize(("method", "path", "body", "readable"), ROUTES)
@pytest.mark.parametrize("scope", [Scope.FINANCE, Scope.INGEST])
async def test_finance_reads_ingest_gets_403_and_forbidden_writes_change_nothing(
    client: httpx.AsyncClient,
    shop: TenantHandle,
    scope: Scope,
    method: str,
    path: str,
    body: Any,
    readable: bool,
) -> None:
    created = await sub(client, shop)
    url = path.format(id=created["id"])
    response = await client.request(method, url, headers=shop.headers(scope), json=body)
    if readable and scope is Scope.FINANCE:
        assert response.status_code == 200, response.text
    else:
        assert_problem(response, 403, "forbidden")
    assert (await listed(client, shop))["data"] == [created]


async def send(
    client: httpx.AsyncClient, tenant: TenantHandle, timestamps: list[str], prefix: str = "e"
) -> list:
    events = [
        {"id": f"{prefix}{i}", "customer": "utc-1", "meter": "api_calls", "timestamp": t}
        for i, t in enumerate(timestamps)
    ]
    body = await ok(client, tenant, "/v1/events/batch", {"events": events})
    return [(r["status"], r.get("code")) for r in body["results"]]


async def test_events_are_accepted_from_starts_at_inclusive_to_cancel_at_exclusive(
    client: httpx.AsyncClient, shop: TenantHandle, clock: FrozenClock
) -> None:
    clock.set(datetime(2026, 11, 10, tzinfo=UTC))
    created = await sub(client, shop, starts_at="2026-11-01T00:00:00Z")
    assert (await cancel(client, shop, created["id"], "2026-11-15T00:00:00Z")).status_code == 200
    clock.set(datetime(2026, 11, 21, 12, tzinfo=UTC))
    rejected, accepted = ("rejected", "no_subscription"), ("accepted", None)
    timestamps = [
        "2026-10-31T23:59:59Z",
        "2026-11-01T00:00:00Z",
        "2026-11-14T23:59:59.999Z",
        "2026-11-15T00:00:00Z",
        "2026-11-20T00:00:00Z",
    ]
    assert await send(client, shop, timestamps) == [rejected, accepted, accepted, rejected, rejected]
    successor = await sub(client, shop, starts_at="2026-11-15T00:00:00Z")
    assert await send(client, shop, timestamps, prefix="again") == [
        rejected,
        accepted,
        accepted,
        accepted,
        accepted,
    ]
    assert (await fetch(client, shop, successor["id"]))["status"] == "active"


async def test_events_before_a_scheduled_subscription_starts_are_rejected(
    client: httpx.AsyncClient, shop: TenantHandle
) -> None:
    await sub(client, shop, starts_at="2026-11-21T12:01:00Z")
    results = await send(client, shop, ["2026-11-21T12:00:59Z", "2026-11-21T12:01:00Z"])
    assert results == [("rejected", "no_subscription"), ("accepted", None)]


# --- behaviour that the service gets wrong (kept failing on purpose; see the report) ---


async def test_timestamps_given_with_an_offset_are_answered_in_utc(
    client: httpx.AsyncClient, shop: TenantHandle
) -> None:
    created = await sub(client, shop, starts_at="2026-11-01T05:30:00+05:30")
    assert created["starts_at"] == "2026-11-01T00:00:00Z"
    canceled = (await cancel(client, shop, created["id"], "2026-11-25T06:00:00+01:00")).json()
    assert canceled["cancel_at"] == "2026-11-25T05:00:00Z"
    assert await fetch(client, shop, created["id"]) == canceled


@pytest.mark.parametrize("field", ["starts_at", "at"])
async def test_a_timestamp_without_utc_offset_answers_422_not_500(
    client: httpx.AsyncClient, shop: TenantHandle, field: str
) -> None:
    if field == "starts_at":
        response = await create(client, shop, starts_at="2026-12-01T00:00:00")
    else:
        created = await sub(client, shop, starts_at="2026-11-01T00:00:00Z")
        response = await cancel(client, shop, created["id"], "2026-12-01T00:00:00")
    problem = assert_problem(response, 422, "validation_error")
    assert [e["field"] for e in problem["errors"]] == [field]


async def test_canceling_a_scheduled_subscription_now_frees_the_customer(
    client: httpx.AsyncClient, shop: TenantHandle
) -> None:
    scheduled = await sub(client, shop, starts_at="2027-01-01T00:00:00Z")
    canceled = (await cancel(client, shop, scheduled["id"], None)).json()
    assert canceled["status"] == "canceled", canceled
    assert_problem(await cancel(client, shop, scheduled["id"], None), 409, "invalid_transition")
    assert (await create(client, shop)).status_code == 201


async def test_moving_a_cancel_later_never_overlaps_the_next_subscription(
    client: httpx.AsyncClient, shop: TenantHandle
) -> None:
    first = await sub(client, shop, starts_at="2026-11-01T00:00:00Z")
    await cancel(client, shop, first["id"], "2026-12-01T00:00:00Z")
    await sub(client, shop, starts_at="2026-12-01T00:00:00Z")
    response = await cancel(client, shop, first["id"], "2027-01-01T00:00:00Z")
    assert response.status_code == 409, response.text
    assert response.json()["code"] in ("subscription_overlap", "invalid_transition")
    assert (await fetch(client, shop, first["id"]))["cancel_at"] == "2026-12-01T00:00:00Z"
