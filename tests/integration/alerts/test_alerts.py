"""Usage and spend alerts through the API: each threshold fires once per customer and period, in
ascending order, with its webhook and (when asked) one email; spend is the rated usage, checked
against the Decimal oracle of helpers; archived alerts and closed periods never fire."""

from __future__ import annotations

from datetime import UTC, datetime
from decimal import Decimal
from typing import Any

import httpx
import pytest

from billing import jobs
from billing.core.clock import FrozenClock
from billing.core.context import AppContext
from billing.web.auth import Scope
from tests.conftest import TenantHandle, listening
from tests.fakes.webhook_receiver import running_receiver
from tests.integration.alerts.helpers import (
    NOW,
    PERIOD,
    api_calls_cents,
    create_alert,
    emails,
    events,
    run,
    set_up,
    storage_cents,
    triggers,
)
from tests.integration.invoicing.test_invoice_lifecycle import call
from tests.integration.web.test_auth import assert_problem

T1, T2 = "2026-11-21T10:00:00Z", "2026-11-21T11:00:00Z"


async def test_a_crossing_fires_once_and_more_usage_fires_nothing_again(
    client: httpx.AsyncClient, tenant: TenantHandle
) -> None:
    await set_up(client, tenant)
    alert = await create_alert(
        client, tenant, customer="acme", meter="api_calls", type="usage_units", thresholds=["100", "1000"]
    )
    assert alert["id"].startswith("alr_") and alert["status"] == "active"
    assert (alert["thresholds"], alert["meter"], alert["email"], alert["recurrence"]) == (
        ["100", "1000"],
        "api_calls",
        False,
        "per_period",
    )
    await events(client, tenant, "acme", ("api_calls", "60", T1), ("api_calls", "40.5", T2))
    assert (await run(client, tenant))["at"] == NOW

    (fired,) = await triggers(client, tenant, alert["id"])
    customer = (await call(client, tenant, "/v1/customers/acme", method="GET"))["id"]
    assert fired["id"].startswith("atr_")
    assert {k: fired[k] for k in fired if k != "id"} == {
        "alert": alert["id"],
        "customer": customer,
        "threshold": "100",
        "value": "100.5",
        "period_start": PERIOD[0],
        "period_end": PERIOD[1],
        "triggered_at": NOW,
        "object": "alert_trigger",
    }
    await events(client, tenant, "acme", ("api_calls", "5", T2))
    await run(client, tenant)
    await run(client, tenant)
    assert [t["id"] for t in await triggers(client, tenant, alert["id"])] == [fired["id"]]


async def test_thresholds_crossed_by_one_batch_fire_in_ascending_order(
    client: httpx.AsyncClient, tenant: TenantHandle
) -> None:
    await set_up(client, tenant)
    alert = await create_alert(
        client,
        tenant,
        customer="acme",
        meter="api_calls",
        type="usage_units",
        thresholds=["1", "2.5", "7", "8"],
    )
    await events(client, tenant, "acme", *[("api_calls", "1.5", T1)] * 5)  # 7.5
    with listening({"alert.triggered"}) as seen:
        await run(client, tenant)
    assert [m.payload["object"]["trigger"]["threshold"] for m in seen] == ["1", "2.5", "7"]
    listed = await triggers(client, tenant, alert["id"])
    assert [t["threshold"] for t in listed] == ["7", "2.5", "1"]  # newest first
    assert {t["value"] for t in listed} == {"7.5"}


async def test_the_next_period_fires_again_and_late_events_of_a_closed_one_never(
    client: httpx.AsyncClient, tenant: TenantHandle, clock: FrozenClock
) -> None:
    await set_up(client, tenant)
    alert = await create_alert(
        client, tenant, customer="acme", meter="api_calls", type="usage_units", thresholds=["10", "20"]
    )
    await events(client, tenant, "acme", ("api_calls", "12", T1))
    await run(client, tenant)

    december = "2026-12-02T12:00:00Z"
    clock.set(datetime(2026, 12, 2, 12, tzinfo=UTC))
    # November's late usage passes 20 there; December has 11 so far: only December's 10 fires.
    late, current = ("api_calls", "15", "2026-11-30T23:00:00Z"), ("api_calls", "11", "2026-12-02T08:00:00Z")
    await events(client, tenant, "acme", late, current)
    await run(client, tenant, december)
    listed = await triggers(client, tenant, alert["id"])
    assert [(t["threshold"], t["value"], t["period_start"], t["period_end"]) for t in listed] == [
        ("10", "11", "2026-12-01T00:00:00Z", "2027-01-01T00:00:00Z"),
        ("10", "12", PERIOD[0], PERIOD[1]),
    ]


async def test_a_plan_change_does_not_restart_the_period(
    client: httpx.AsyncClient, tenant: TenantHandle
) -> None:
    await set_up(client, tenant)
    await call(
        client,
        tenant,
        "/v1/plans",
        {"code": "other", "prices": [{"meter": "api_calls", "model": "per_unit", "unit_amount": "1"}]},
        status=201,
    )
    alert = await create_alert(
        client, tenant, customer="acme", meter="api_calls", type="usage_units", thresholds=["100", "200"]
    )
    await events(client, tenant, "acme", ("api_calls", "150", "2026-11-10T00:00:00Z"))
    await run(client, tenant)
    subs = await call(client, tenant, "/v1/subscriptions?customer=acme", method="GET")
    await call(
        client, tenant, f"/v1/subscriptions/{subs['data'][0]['id']}", {"plan": "other"}, method="PATCH"
    )
    await events(client, tenant, "acme", ("api_calls", "60", T2))
    await run(client, tenant)
    listed = await triggers(client, tenant, alert["id"])
    assert [(t["threshold"], t["value"], t["period_start"]) for t in listed] == [
        ("200", "210", PERIOD[0]),
        ("100", "150", PERIOD[0]),
    ]


async def test_spend_is_the_rated_usage_with_caps_and_without_floors_or_base_fee(
    client: httpx.AsyncClient, tenant: TenantHandle
) -> None:
    await set_up(client, tenant)
    everything = await create_alert(
        client, tenant, customer="acme", type="spend_amount", thresholds=[1000, 2500, 5000]
    )
    assert everything["currency"] == "USD" and everything["thresholds"] == [1000, 2500, 5000]
    storage = await create_alert(
        client, tenant, customer="acme", meter="storage", type="spend_amount", thresholds=[400, 600]
    )
    await events(client, tenant, "acme", ("api_calls", "1500.5", T1), ("storage", "200", T1))
    await run(client, tenant)
    spent = api_calls_cents(Decimal("1500.5")) + storage_cents(Decimal(200))
    assert spent == 1025  # the api_calls floor of $20 and the $49 base fee do not count
    (first,) = await triggers(client, tenant, everything["id"])
    assert (first["threshold"], first["value"]) == (1000, spent)
    (capped,) = await triggers(client, tenant, storage["id"])
    assert (capped["threshold"], capped["value"]) == (400, storage_cents(Decimal(200)))

    await events(client, tenant, "acme", ("api_calls", "13000", T2), ("storage", "1000", T2))
    await run(client, tenant)
    spent = api_calls_cents(Decimal("14500.5")) + storage_cents(Decimal(1200))
    assert 2500 <= spent < 5000
    latest, _ = await triggers(client, tenant, everything["id"])
    assert (latest["threshold"], latest["value"]) == (2500, spent)
    assert len(await triggers(client, tenant, storage["id"])) == 1  # the cap never reaches 600


async def test_a_tenant_wide_spend_alert_watches_only_customers_of_its_currency(
    client: httpx.AsyncClient, tenant: TenantHandle
) -> None:
    await set_up(client, tenant, ("dollar",))
    await set_up(client, tenant, ("euro",), currency="EUR")
    alert = await create_alert(client, tenant, type="spend_amount", currency="EUR", thresholds=[100])
    usage = await create_alert(client, tenant, meter="api_calls", type="usage_units", thresholds=["1000"])
    assert alert["customer"] is None and usage["customer"] is None
    for customer in ("dollar", "euro"):
        await events(client, tenant, customer, ("api_calls", "1000", T1))
    await run(client, tenant)
    euro = (await call(client, tenant, "/v1/customers/euro", method="GET"))["id"]
    assert [(t["customer"], t["value"]) for t in await triggers(client, tenant, alert["id"])] == [
        (euro, api_calls_cents(Decimal(1000)))
    ]
    assert len(await triggers(client, tenant, usage["id"])) == 2  # usage alerts watch everyone


async def test_an_email_only_when_asked_and_once_per_crossing(
    client: httpx.AsyncClient, tenant: TenantHandle
) -> None:
    await set_up(client, tenant, ("quiet", "told"))
    await create_alert(
        client, tenant, customer="quiet", meter="api_calls", type="usage_units", thresholds=["5"]
    )
    told = await create_alert(
        client,
        tenant,
        name="Budget",
        customer="told",
        type="spend_amount",
        thresholds=[300],
        email=True,
    )
    for customer in ("quiet", "told"):
        await events(client, tenant, customer, ("api_calls", "1000", T1))
    await run(client, tenant)
    await events(client, tenant, "told", ("api_calls", "10", T2))
    await run(client, tenant)

    (email,) = await emails(client, tenant)
    (fired,) = await triggers(client, tenant, told["id"])
    assert (email["to"], email["customer"]) == ("told@example.com", fired["customer"])
    assert email["dedupe_key"] == f"usage_alert:{told['id']}:{fired['customer']}:{PERIOD[0]}:300"
    assert email["subject"] == "Acme: Budget: $4.00 this period, past $3.00"


async def test_the_webhook_carries_the_trigger_and_the_alert(
    client: httpx.AsyncClient, tenant: TenantHandle
) -> None:
    await set_up(client, tenant)
    alert = await create_alert(
        client, tenant, customer="acme", meter="api_calls", type="usage_units", thresholds=["3"]
    )
    with running_receiver() as receiver:
        endpoint = {"url": receiver.url, "events": ["alert.triggered"]}
        receiver.secrets.append(
            (await call(client, tenant, "/v1/webhook-endpoints", endpoint, status=201))["secret"]
        )
        await events(client, tenant, "acme", ("api_calls", "3", T1))
        await run(client, tenant)
        (received,) = receiver.received
    body = received.json()
    (fired,) = await triggers(client, tenant, alert["id"])
    assert body["type"] == "alert.triggered" and body["id"] == received.webhook_id
    assert body["data"] == {"trigger": fired, "alert": alert}


async def test_an_archived_alert_fires_no_more(client: httpx.AsyncClient, tenant: TenantHandle) -> None:
    await set_up(client, tenant)
    alert = await create_alert(
        client, tenant, customer="acme", meter="api_calls", type="usage_units", thresholds=["1", "10"]
    )
    await events(client, tenant, "acme", ("api_calls", "2", T1))
    await run(client, tenant)
    archived = await call(client, tenant, f"/v1/alerts/{alert['id']}/archive")
    assert (archived["status"], archived["archived_at"]) == ("archived", NOW)
    assert (await call(client, tenant, f"/v1/alerts/{alert['id']}/archive"))["status"] == "archived"
    await events(client, tenant, "acme", ("api_calls", "20", T2))
    await run(client, tenant)
    assert [t["threshold"] for t in await triggers(client, tenant, alert["id"])] == ["1"]
    listed = await call(client, tenant, "/v1/alerts?status=active", method="GET")
    assert listed == {"data": [], "has_more": False}


async def test_alerts_list_and_page_newest_first(client: httpx.AsyncClient, tenant: TenantHandle) -> None:
    await set_up(client, tenant)
    made = [
        await create_alert(client, tenant, meter="api_calls", type="usage_units", thresholds=[str(n)])
        for n in range(1, 4)
    ]
    first = await call(client, tenant, "/v1/alerts?limit=2", method="GET", scope=Scope.FINANCE)
    assert [a["id"] for a in first["data"]] == [made[2]["id"], made[1]["id"]] and first["has_more"]
    rest = await call(client, tenant, f"/v1/alerts?limit=2&starting_after={made[1]['id']}", method="GET")
    assert [a["id"] for a in rest["data"]] == [made[0]["id"]] and not rest["has_more"]
    assert await call(client, tenant, f"/v1/alerts/{made[0]['id']}", method="GET") == made[0]


BAD: list[tuple[dict[str, Any], str, str]] = [
    ({"type": "usage_units", "meter": "api_calls", "thresholds": []}, "validation_error", "thresholds"),
    (
        {"type": "usage_units", "meter": "api_calls", "thresholds": [str(n) for n in range(1, 22)]},
        "validation_error",
        "thresholds",
    ),
    ({"type": "usage_units", "meter": "api_calls", "thresholds": ["0"]}, "validation_error", "thresholds[0]"),
    (
        {"type": "usage_units", "meter": "api_calls", "thresholds": ["-1"]},
        "validation_error",
        "thresholds[0]",
    ),
    (
        {"type": "usage_units", "meter": "api_calls", "thresholds": ["2", "2"]},
        "validation_error",
        "thresholds[1]",
    ),
    (
        {"type": "usage_units", "meter": "api_calls", "thresholds": ["5", "3"]},
        "validation_error",
        "thresholds[1]",
    ),
    (
        {"type": "usage_units", "meter": "api_calls", "thresholds": ["lots"]},
        "validation_error",
        "thresholds[0]",
    ),
    ({"type": "usage_units", "meter": "api_calls", "thresholds": [10]}, "validation_error", "thresholds[0]"),
    ({"type": "usage_units", "thresholds": ["10"]}, "validation_error", "meter"),
    ({"type": "usage_units", "meter": "nope", "thresholds": ["10"]}, "unknown_meter", "meter"),
    (
        {"type": "usage_units", "meter": "api_calls", "currency": "USD", "thresholds": ["1"]},
        "validation_error",
        "currency",
    ),
    ({"type": "spend_amount", "customer": "acme", "thresholds": ["10"]}, "validation_error", "thresholds[0]"),
    ({"type": "spend_amount", "thresholds": [10]}, "validation_error", "currency"),
    ({"type": "spend_amount", "currency": "usd", "thresholds": [10]}, "validation_error", "currency"),
    (
        {"type": "spend_amount", "customer": "acme", "currency": "EUR", "thresholds": [10]},
        "currency_mismatch",
        "currency",
    ),
]


@pytest.mark.parametrize(("body", "code", "field"), BAD)
async def test_invalid_alerts_are_422_and_create_nothing(
    client: httpx.AsyncClient, tenant: TenantHandle, body: dict[str, Any], code: str, field: str
) -> None:
    await set_up(client, tenant)
    response = await client.post("/v1/alerts", headers=tenant.headers(), json=body)
    problem = assert_problem(response, 422, code)
    assert field in [error["field"] for error in problem["errors"]], problem
    assert (await call(client, tenant, "/v1/alerts", method="GET"))["data"] == []


async def test_wrong_shapes_are_refused(client: httpx.AsyncClient, tenant: TenantHandle) -> None:
    await set_up(client, tenant)
    for body in (
        {"type": "usage_units", "meter": "api_calls", "thresholds": ["1"], "recurrence": "monthly"},
        {"type": "budget", "thresholds": [1]},
        {"type": "spend_amount", "customer": "acme", "thresholds": [1.5]},
    ):
        response = await client.post("/v1/alerts", headers=tenant.headers(), json=body)
        assert_problem(response, 422, "validation_error")
    missing = {"type": "usage_units", "customer": "nobody", "meter": "api_calls", "thresholds": ["1"]}
    assert_problem(await client.post("/v1/alerts", headers=tenant.headers(), json=missing), 404, "not_found")
    finance = {"type": "usage_units", "meter": "api_calls", "thresholds": ["1"]}
    response = await client.post("/v1/alerts", headers=tenant.headers(Scope.FINANCE), json=finance)
    assert_problem(response, 403, "forbidden")
    assert (await call(client, tenant, "/v1/alerts", method="GET"))["data"] == []


async def test_another_tenant_sees_nothing_and_its_customers_are_not_watched(
    client: httpx.AsyncClient, tenant: TenantHandle, make_tenant: Any
) -> None:
    other = await make_tenant("Other")
    await set_up(client, tenant)
    await set_up(client, other)
    alert = await create_alert(client, tenant, meter="api_calls", type="usage_units", thresholds=["1"])
    await events(client, other, "acme", ("api_calls", "5", T1))
    await run(client, other)
    await run(client, tenant)
    assert await triggers(client, tenant, alert["id"]) == []
    for method, path in (
        ("GET", f"/v1/alerts/{alert['id']}"),
        ("POST", f"/v1/alerts/{alert['id']}/archive"),
        ("GET", f"/v1/alerts/{alert['id']}/triggers"),
    ):
        response = await client.request(method, path, headers=other.headers())
        assert_problem(response, 404, "not_found")
    assert (await call(client, other, "/v1/alerts", method="GET"))["data"] == []
    theirs = (await call(client, other, "/v1/customers/acme", method="GET"))["id"]
    body = {"type": "usage_units", "customer": theirs, "meter": "api_calls", "thresholds": ["1"]}
    assert_problem(await client.post("/v1/alerts", headers=tenant.headers(), json=body), 404, "not_found")


async def test_the_scheduler_fires_within_one_pass_of_its_interval(
    client: httpx.AsyncClient, tenant: TenantHandle, ctx: AppContext
) -> None:
    await set_up(client, tenant)
    alert = await create_alert(
        client, tenant, customer="acme", meter="api_calls", type="usage_units", thresholds=["1"]
    )
    await events(client, tenant, "acme", ("api_calls", "1", T1))
    (job,) = [job for job in jobs.JOBS if job.name == "alerts_evaluate"]
    assert job.every_seconds <= 15
    with listening({"alert.triggered"}) as seen:
        assert await job.run(ctx, jobs.Run()) == 1  # as the scheduler's tick calls it: no at, no tenant
        await jobs.dispatch_outbox(ctx)
    (fired,) = await triggers(client, tenant, alert["id"])
    assert fired["triggered_at"] == NOW and [m.payload["trigger_id"] for m in seen] == [fired["id"]]
    assert await job.run(ctx, jobs.Run()) == 0
