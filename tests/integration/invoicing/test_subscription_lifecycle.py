"""The subscription lifecycle through the API: plan and seat changes (now, backdated, at period
end), cancels, trials, statuses, webhooks and concurrent changes, with every amount checked
against an independent Decimal computation."""

from __future__ import annotations

import asyncio
import dataclasses
from collections.abc import Awaitable, Callable
from datetime import UTC, datetime, timedelta
from decimal import Decimal

import httpx
import pytest

from billing.app import create_app
from billing.core.clock import FrozenClock
from billing.core.context import AppContext
from billing.core.settings import Settings
from tests.conftest import TenantHandle
from tests.integration.invoicing.lifecycle_helpers import (
    BASIC_FEE,
    BASIC_UNIT,
    PRO_FEE,
    PRO_UNIT,
    assert_total,
    at,
    cancel,
    fetch,
    invoices,
    invoices_of,
    lines_of,
    make_shop,
    ok,
    outbox_messages,
    patch,
    prorated,
    request,
    run,
    send,
    subscribe,
    usage_amount,
    without_ids,
    z,
)
from tests.integration.web.test_auth import assert_problem

NOV = "2026-11-01T00:00:00Z"
DEC = at("2026-12-01T00:00:00Z")
S = at(NOV)


@pytest.fixture
async def shop(client: httpx.AsyncClient, tenant: TenantHandle) -> TenantHandle:
    await make_shop(client, tenant, {"c1": "UTC", "ist": "Asia/Kolkata"})
    return tenant


def base_fee_amounts(invoice: dict) -> list[tuple[str, int]]:
    return [(line["quantity"], line["amount"]) for line in lines_of(invoice, "base_fee")]


def usage(invoice: dict) -> tuple[str, int]:
    (line,) = lines_of(invoice, "usage")
    return line["quantity"], line["amount"]


# 1. Plan change now


async def test_a_plan_change_now_closes_the_old_period_at_once_and_starts_a_successor_at_t(
    client: httpx.AsyncClient, shop: TenantHandle, clock: FrozenClock
) -> None:
    old = await subscribe(client, shop, "c1", "basic", NOV)
    t = at("2026-11-21T12:00:00Z")
    clock.set(t)
    await send(client, shop, "c1", [("e1", "2026-11-05T00:00:00Z", 4), ("e2", "2026-11-21T11:59:59Z", 3)])
    response = await patch(client, shop, old["id"], {"plan": "pro"})
    assert response.status_code == 200, response.text
    new = response.json()
    assert (new["replaces"], new["starts_at"], new["plan_code"], new["status"]) == (
        old["id"],
        z(t),
        "pro",
        "active",
    )
    assert (new["current_period_start"], new["current_period_end"]) == (z(t), z(DEC))
    ended = await fetch(client, shop, old["id"])
    assert (ended["status"], ended["ended_at"], ended["replaced_by"]) == ("ended", z(t), new["id"])
    for body in ({"plan": "pro"}, {"quantity": 2}, {"plan": "pro", "when": "period_end"}):
        assert_problem(await patch(client, shop, old["id"], body), 409, "invalid_transition")
    assert_problem(await cancel(client, shop, old["id"], {"when": "now"}), 409, "invalid_transition")
    assert await fetch(client, shop, old["id"]) == ended
    (closing,) = await invoices_of(client, shop, old["id"])
    assert (closing["status"], closing["period_start"], closing["period_end"]) == ("draft", NOV, z(t))
    assert closing["billing_reason"] == "subscription_update"
    assert base_fee_amounts(closing) == [("1", prorated(BASIC_FEE, 1, S, t, "UTC"))]
    assert usage(closing) == ("7", usage_amount(Decimal(7), BASIC_UNIT))
    assert_total(closing)
    # An event at exactly T is the successor's; a late one before T still lands on the draft.
    assert await send(client, shop, "c1", [("e3", z(t), 5), ("late", "2026-11-20T00:00:00Z", 1)]) == [
        ("accepted", None),
        ("accepted", None),
    ]
    clock.set(t + timedelta(hours=25))
    assert (await run(client, shop, z(t + timedelta(hours=25))))["invoices_finalized"] == 1
    (closing,) = await invoices_of(client, shop, old["id"])
    assert closing["status"] == "open" and usage(closing) == ("8", usage_amount(Decimal(8), BASIC_UNIT))
    clock.set(at("2026-11-30T00:00:00Z"))
    await send(client, shop, "c1", [("e4", "2026-11-25T00:00:00Z", 2)])
    clock.set(DEC + timedelta(hours=25))
    await run(client, shop, z(DEC))
    await run(client, shop, z(DEC + timedelta(hours=25)))
    (cycle,) = await invoices_of(client, shop, new["id"])
    assert (cycle["period_start"], cycle["period_end"], cycle["status"]) == (z(t), z(DEC), "open")
    assert cycle["billing_reason"] == "subscription_cycle"
    assert base_fee_amounts(cycle) == [("1", prorated(PRO_FEE, 1, t, DEC, "UTC"))]
    assert usage(cycle) == ("7", usage_amount(Decimal(7), PRO_UNIT))
    assert_total(cycle)
    for event, invoice in (("e1", closing), ("e2", closing), ("late", closing), ("e3", cycle), ("e4", cycle)):
        shown = await ok(client, shop, "GET", f"/v1/events/{event}")
        assert (shown["billing_status"], shown["invoice"]) == ("invoiced", invoice["id"]), event


async def test_a_change_now_right_after_a_period_end_before_the_billing_run_closes_both_periods(
    client: httpx.AsyncClient, shop: TenantHandle, clock: FrozenClock
) -> None:
    old = await subscribe(client, shop, "c1", "basic", "2026-10-01T00:00:00Z")
    t = at("2026-11-01T00:05:00Z")
    clock.set(t)
    response = await patch(client, shop, old["id"], {"plan": "pro"})
    assert response.status_code == 200, response.text
    october, closing = await invoices_of(client, shop, old["id"])
    assert (october["period_start"], october["period_end"]) == ("2026-10-01T00:00:00Z", NOV)
    assert base_fee_amounts(october) == [("1", BASIC_FEE)]
    assert (closing["period_start"], closing["period_end"]) == (NOV, z(t))
    assert base_fee_amounts(closing) == [("1", prorated(BASIC_FEE, 1, S, t, "UTC"))]


# 2. Backdated instants


async def test_a_backdated_change_must_fall_inside_the_earliest_unclosed_period(
    client: httpx.AsyncClient, shop: TenantHandle, clock: FrozenClock, settings: Settings
) -> None:
    old = await subscribe(client, shop, "c1", "basic", "2026-10-15T00:00:00Z")
    clock.set(at("2026-11-10T00:00:00Z"))
    for when in (
        "2026-10-14T23:59:59Z",  # before its start
        "2026-11-01T00:00:00Z",  # at the end of October, still unclosed
        "2026-11-12T00:00:00Z",  # after its end
        "2026-10-20T00:00:00.5Z",  # a fractional second
        "yesterday",
    ):
        body = assert_problem(
            await patch(client, shop, old["id"], {"plan": "pro", "when": when}), 422, "validation_error"
        )
        assert [e["field"] for e in body["errors"]] == ["when"], when
    assert (await fetch(client, shop, old["id"]))["status"] == "active"
    assert await invoices(client, shop) == []
    # No time travel: an instant after now is refused even inside the period.
    strict = create_app(dataclasses.replace(settings, allow_time_travel=False), clock=clock, scheduler=False)
    clock.set(at("2026-10-20T00:00:00Z"))
    try:
        transport = httpx.ASGITransport(app=strict)
        async with httpx.AsyncClient(transport=transport, base_url="http://testserver") as other:
            response = await patch(other, shop, old["id"], {"plan": "pro", "when": "2026-10-25T00:00:00Z"})
            assert_problem(response, 422, "validation_error")
    finally:
        await strict.state.ctx.close()
    clock.set(at("2026-11-10T00:00:00Z"))
    t = at("2026-10-20T06:30:00Z")
    response = await patch(client, shop, old["id"], {"plan": "pro", "when": z(t)})
    assert response.status_code == 200, response.text
    new = response.json()
    assert (new["starts_at"], new["current_period_start"], new["current_period_end"]) == (
        z(t),
        NOV,
        z(DEC),
    )
    (closing,) = await invoices_of(client, shop, old["id"])
    assert (closing["period_start"], closing["period_end"]) == ("2026-10-15T00:00:00Z", z(t))
    assert base_fee_amounts(closing) == [("1", prorated(BASIC_FEE, 1, at("2026-10-15T00:00:00Z"), t, "UTC"))]
    # The successor's October piece [T, Nov 1) closes with the next run.
    await run(client, shop, "2026-11-10T00:00:00Z")
    (first,) = await invoices_of(client, shop, new["id"])
    assert base_fee_amounts(first) == [("1", prorated(PRO_FEE, 1, t, S, "UTC"))]


# 4. Changes at period end


async def test_a_change_at_period_end_waits_and_switches_at_the_boundary_without_proration(
    client: httpx.AsyncClient, shop: TenantHandle, clock: FrozenClock
) -> None:
    old = await subscribe(client, shop, "c1", "basic", NOV)
    response = await patch(client, shop, old["id"], {"plan": "pro", "quantity": 2, "when": "period_end"})
    assert response.status_code == 200, response.text
    pro = await ok(client, shop, "GET", "/v1/plans/pro")
    shown = response.json()
    assert shown["id"] == old["id"] and shown["status"] == "active"
    expected = {"plan": pro["id"], "plan_code": "pro", "quantity": 2, "effective_at": z(DEC)}
    assert shown["pending_change"] == expected
    assert (await fetch(client, shop, old["id"]))["pending_change"] == expected
    assert_problem(
        await patch(client, shop, old["id"], {"plan": "pro", "when": "period_end"}),
        409,
        "pending_change_exists",
    )
    assert_problem(await patch(client, shop, old["id"], {"quantity": 5}), 409, "pending_change_exists")
    assert_problem(await cancel(client, shop, old["id"], {"when": "period_end"}), 409, "invalid_transition")
    deleted = await request(client, shop, "DELETE", f"/v1/subscriptions/{old['id']}/pending-change")
    assert deleted.status_code == 200, deleted.text
    assert deleted.json()["pending_change"] is None and deleted.json()["cancel_at"] is None
    again = await request(client, shop, "DELETE", f"/v1/subscriptions/{old['id']}/pending-change")
    assert_problem(again, 404, "not_found")
    listed = await ok(client, shop, "GET", "/v1/subscriptions?customer=c1")
    assert [s["id"] for s in listed["data"]] == [old["id"]]
    response = await patch(client, shop, old["id"], {"plan": "pro", "when": "period_end"})
    assert response.status_code == 200, response.text
    await send(client, shop, "c1", [("e1", "2026-11-20T00:00:00Z", 3)])
    clock.set(DEC + timedelta(hours=1))
    await send(client, shop, "c1", [("e2", z(DEC), 4)])
    await run(client, shop, z(DEC))
    (cycle,) = await invoices_of(client, shop, old["id"])
    assert (cycle["period_start"], cycle["period_end"]) == (NOV, z(DEC))
    assert base_fee_amounts(cycle) == [("1", BASIC_FEE)] and usage(cycle) == ("3", 300)
    ended = await fetch(client, shop, old["id"])
    assert (ended["status"], ended["ended_at"]) == ("ended", z(DEC))
    new = await fetch(client, shop, ended["replaced_by"])
    assert (new["status"], new["starts_at"], new["plan_code"], new["quantity"]) == (
        "active",
        z(DEC),
        "pro",
        1,
    )
    await run(client, shop, "2027-01-01T00:00:00Z")
    (january,) = await invoices_of(client, shop, new["id"])
    assert base_fee_amounts(january) == [("1", PRO_FEE)] and usage(january) == ("4", 800)


async def test_a_pending_seat_change_shows_and_can_be_deleted(
    client: httpx.AsyncClient, shop: TenantHandle
) -> None:
    old = await subscribe(client, shop, "c1", "basic", NOV, quantity=2)
    response = await patch(client, shop, old["id"], {"quantity": 5, "when": "period_end"})
    assert response.status_code == 200, response.text
    basic = await ok(client, shop, "GET", "/v1/plans/basic")
    assert response.json()["quantity"] == 2
    assert response.json()["pending_change"] == {
        "plan": basic["id"],
        "plan_code": "basic",
        "quantity": 5,
        "effective_at": z(DEC),
    }
    deleted = await request(client, shop, "DELETE", f"/v1/subscriptions/{old['id']}/pending-change")
    assert deleted.status_code == 200 and deleted.json()["pending_change"] is None
    await run(client, shop, "2027-01-01T00:00:00Z")
    _november, december = await invoices_of(client, shop, old["id"])
    assert base_fee_amounts(december) == [("2", BASIC_FEE * 2)]


# 5. Cancel


async def test_cancel_now_closes_the_last_period_at_once(
    client: httpx.AsyncClient, shop: TenantHandle, clock: FrozenClock
) -> None:
    created = await subscribe(client, shop, "c1", "basic", NOV, quantity=2)
    t = at("2026-11-21T12:00:00Z")
    await send(client, shop, "c1", [("e1", "2026-11-05T00:00:00Z", 9)])
    response = await cancel(client, shop, created["id"], {"when": "now"})
    assert response.status_code == 200, response.text
    canceled = response.json()
    assert (canceled["status"], canceled["ended_at"], canceled["canceled_at"]) == ("canceled", z(t), z(t))
    (final,) = await invoices_of(client, shop, created["id"])
    assert (final["status"], final["period_end"], final["billing_reason"]) == (
        "draft",
        z(t),
        "subscription_cancel",
    )
    assert base_fee_amounts(final) == [("2", prorated(BASIC_FEE, 2, S, t, "UTC"))]
    assert usage(final) == ("9", 900)
    assert_total(final)
    assert await send(client, shop, "c1", [("after", z(t), 1)]) == [("rejected", "no_subscription")]
    for body in ({"when": "now"}, {"when": "period_end"}):
        assert_problem(await cancel(client, shop, created["id"], body), 409, "invalid_transition")
    assert_problem(await patch(client, shop, created["id"], {"plan": "pro"}), 409, "invalid_transition")
    assert_problem(await patch(client, shop, created["id"], {"quantity": 3}), 409, "invalid_transition")
    assert await fetch(client, shop, created["id"]) == canceled
    assert len(await invoices(client, shop)) == 1


async def test_cancel_at_period_end_is_scheduled_and_can_be_undone(
    client: httpx.AsyncClient, shop: TenantHandle, clock: FrozenClock
) -> None:
    created = await subscribe(client, shop, "c1", "basic", NOV)
    assert_problem(
        await cancel(client, shop, created["id"], {"when": "now", "at": None}), 422, "validation_error"
    )
    response = await cancel(client, shop, created["id"], {"when": "period_end"})
    assert response.status_code == 200, response.text
    scheduled = response.json()
    assert (scheduled["status"], scheduled["cancel_at"], scheduled["cancel_at_period_end"]) == (
        "active",
        z(DEC),
        True,
    )
    assert_problem(
        await patch(client, shop, created["id"], {"plan": "pro", "when": "period_end"}),
        409,
        "invalid_transition",
    )
    undone = await patch(client, shop, created["id"], {"cancel_at_period_end": False})
    assert undone.status_code == 200, undone.text
    assert (undone.json()["cancel_at"], undone.json()["cancel_at_period_end"]) == (None, False)
    assert_problem(
        await patch(client, shop, created["id"], {"cancel_at_period_end": False}), 422, "validation_error"
    )
    await cancel(client, shop, created["id"], {"when": "period_end"})
    clock.set(DEC)
    await run(client, shop, z(DEC))
    assert (await fetch(client, shop, created["id"]))["status"] == "canceled"
    (last,) = await invoices_of(client, shop, created["id"])
    assert base_fee_amounts(last) == [("1", BASIC_FEE)]


# 6. Trials


async def test_a_trial_bills_zero_then_converts_at_trial_end_into_a_prorated_first_period(
    client: httpx.AsyncClient, shop: TenantHandle, clock: FrozenClock
) -> None:
    starts = at("2026-11-21T12:00:00Z")
    created = await subscribe(client, shop, "c1", "trial", z(starts), quantity=3)
    trial_end = starts + timedelta(days=14)
    assert (created["status"], created["trial_start"], created["trial_end"]) == (
        "trialing",
        z(starts),
        z(trial_end),
    )
    assert (created["current_period_start"], created["current_period_end"]) == (z(starts), z(DEC))
    await send(client, shop, "c1", [("t1", "2026-11-21T12:00:00Z", 5)])
    clock.set(at("2026-12-10T00:00:00Z"))
    await send(client, shop, "c1", [("t2", "2026-12-04T00:00:00Z", 6), ("p1", z(trial_end), 7)])
    assert (await fetch(client, shop, created["id"]))["status"] == "active"
    await run(client, shop, "2027-01-02T00:00:00Z")
    november, december_trial, december = await invoices_of(client, shop, created["id"])
    for invoice, used in ((november, "5"), (december_trial, "6")):
        assert {line["kind"] for line in invoice["lines"]} == {"trial"}
        assert sorted(
            (line["meter"] or "", line["quantity"], line["amount"]) for line in invoice["lines"]
        ) == [
            ("", "3", 0),
            ("units", used, 0),
        ]
        assert (invoice["total"], invoice["status"]) == (0, "paid")
    assert (december["period_start"], december["period_end"]) == (z(trial_end), "2027-01-01T00:00:00Z")
    assert base_fee_amounts(december) == [
        ("3", prorated(BASIC_FEE, 3, trial_end, at("2027-01-01T00:00:00Z"), "UTC"))
    ]
    assert usage(december) == ("7", 700)


async def test_trial_days_on_the_subscription_override_the_plan_and_are_bounded(
    client: httpx.AsyncClient, shop: TenantHandle
) -> None:
    too_long = await request(
        client, shop, "POST", "/v1/subscriptions", {"customer": "c1", "plan": "basic", "trial_days": 731}
    )
    assert_problem(too_long, 422, "validation_error")
    plan = await request(client, shop, "POST", "/v1/plans", {"code": "long", "trial_days": 731})
    assert_problem(plan, 422, "validation_error")
    created = await subscribe(client, shop, "c1", "basic", NOV, trial_days=30)
    assert (created["status"], created["trial_end"]) == ("trialing", "2026-12-01T00:00:00Z")
    ended = await patch(client, shop, created["id"], {"trial_end": "now"})
    assert ended.status_code == 200, ended.text
    assert (ended.json()["status"], ended.json()["trial_end"]) == ("active", "2026-11-21T12:00:00Z")
    await run(client, shop, z(DEC))
    trial, paid = await invoices_of(client, shop, created["id"])
    assert (trial["period_end"], trial["total"]) == ("2026-11-21T12:00:00Z", 0)
    t = at("2026-11-21T12:00:00Z")
    assert base_fee_amounts(paid) == [("1", prorated(BASIC_FEE, 1, t, DEC, "UTC"))]
    none = await subscribe(client, shop, "ist", "trial", NOV, trial_days=0)
    assert (none["status"], none["trial_end"]) == ("active", None)


async def test_a_plan_change_in_a_trial_keeps_trial_end_and_closes_with_trial_lines_only(
    client: httpx.AsyncClient, shop: TenantHandle
) -> None:
    created = await subscribe(client, shop, "c1", "trial", "2026-11-15T00:00:00Z")
    await send(client, shop, "c1", [("t1", "2026-11-16T00:00:00Z", 4)])
    response = await patch(client, shop, created["id"], {"plan": "pro"})
    assert response.status_code == 200, response.text
    new = response.json()
    assert (new["status"], new["trial_end"]) == ("trialing", created["trial_end"])
    (closing,) = await invoices_of(client, shop, created["id"])
    assert {line["kind"] for line in closing["lines"]} == {"trial"} and closing["total"] == 0
    await run(client, shop, "2027-01-01T00:00:00Z")
    trial, paid, december = await invoices_of(client, shop, new["id"])
    assert {line["kind"] for line in trial["lines"]} == {"trial"} and trial["period_start"] == new[
        "starts_at"
    ]
    trial_end = at(created["trial_end"])
    assert (paid["period_start"], base_fee_amounts(paid)) == (
        z(trial_end),
        [("1", prorated(PRO_FEE, 1, trial_end, DEC, "UTC"))],
    )
    assert base_fee_amounts(december) == [("1", PRO_FEE)]


# 7. Seats


async def test_seats_multiply_the_base_fee_and_a_change_now_cuts_segments(
    client: httpx.AsyncClient, shop: TenantHandle, clock: FrozenClock
) -> None:
    created = await subscribe(client, shop, "ist", "basic", "2026-10-31T18:30:00Z", quantity=3)
    zone = "Asia/Kolkata"
    start = at("2026-10-31T18:30:00Z")  # 2026-11-01 00:00 in Kolkata
    end = at("2026-11-30T18:30:00Z")
    assert created["current_period_end"] == z(end)
    assert_problem(await patch(client, shop, created["id"], {"quantity": 0}), 422, "validation_error")
    assert_problem(
        await patch(client, shop, created["id"], {"quantity": 3, "plan": "basic"}), 422, "validation_error"
    )
    t = at("2026-11-21T12:00:00Z")
    response = await patch(client, shop, created["id"], {"quantity": 5})
    assert response.status_code == 200, response.text
    assert (response.json()["id"], response.json()["quantity"]) == (created["id"], 5)
    assert await invoices(client, shop) == []
    clock.set(end)
    await run(client, shop, z(end))
    (cycle,) = await invoices_of(client, shop, created["id"])
    assert base_fee_amounts(cycle) == [
        ("3", prorated(BASIC_FEE, 3, start, t, zone)),
        ("5", prorated(BASIC_FEE, 5, t, end, zone)),
    ]
    assert_total(cycle)


# 8. Bad input changes nothing


async def test_bad_changes_answer_problems_and_change_nothing(
    client: httpx.AsyncClient, shop: TenantHandle, make_tenant: Callable[..., Awaitable[TenantHandle]]
) -> None:
    created = await subscribe(client, shop, "c1", "basic", NOV)
    other = await make_tenant("Other")
    await make_shop(client, other, {"x1": "UTC"})
    theirs = await subscribe(client, other, "x1", "basic", NOV)
    their_plan = await ok(client, other, "GET", "/v1/plans/pro")
    assert_problem(await patch(client, shop, created["id"], {"plan": "euro"}), 422, "currency_mismatch")
    assert_problem(await patch(client, shop, created["id"], {"plan": their_plan["id"]}), 404, "not_found")
    assert_problem(await patch(client, shop, theirs["id"], {"plan": "pro"}), 404, "not_found")
    assert_problem(await cancel(client, shop, theirs["id"], {"when": "now"}), 404, "not_found")
    assert_problem(await patch(client, shop, created["id"], {}), 422, "validation_error")
    assert_problem(await patch(client, shop, created["id"], {"plan": "basic"}), 422, "validation_error")
    assert await fetch(client, shop, created["id"]) == created
    assert await fetch(client, other, theirs["id"]) == theirs
    assert await invoices(client, shop) == [] and await invoices(client, other) == []


# 9. Concurrency


async def test_two_concurrent_plan_changes_make_one_closing_invoice(
    client: httpx.AsyncClient, shop: TenantHandle
) -> None:
    created = await subscribe(client, shop, "c1", "basic", NOV)
    await ok(client, shop, "POST", "/v1/plans", {"code": "max", "base_fee": 50000})
    responses = await asyncio.gather(
        patch(client, shop, created["id"], {"plan": "pro"}),
        patch(client, shop, created["id"], {"plan": "max"}),
    )
    statuses = sorted(r.status_code for r in responses)
    assert statuses == [200, 409], [r.text for r in responses]
    (loser,) = [r for r in responses if r.status_code == 409]
    assert loser.json()["code"] == "invalid_transition"
    assert len(await invoices_of(client, shop, created["id"])) == 1
    listed = await ok(client, shop, "GET", "/v1/subscriptions?customer=c1")
    assert sorted(s["status"] for s in listed["data"]) == ["active", "ended"]


# 10. Webhooks


async def test_subscription_events_carry_the_subscription_snapshot(
    client: httpx.AsyncClient, shop: TenantHandle, ctx: AppContext, clock: FrozenClock
) -> None:
    created = await subscribe(client, shop, "c1", "basic", NOV)
    await patch(client, shop, created["id"], {"metadata": {"team": "blue"}})
    await patch(client, shop, created["id"], {"quantity": 2})
    await patch(client, shop, created["id"], {"plan": "pro", "when": "period_end"})
    await request(client, shop, "DELETE", f"/v1/subscriptions/{created['id']}/pending-change")
    new = (await patch(client, shop, created["id"], {"plan": "pro"})).json()
    clock.set(at("2026-11-22T00:00:00Z"))
    await cancel(client, shop, new["id"], {"when": "now"})
    scheduled = await subscribe(client, shop, "ist", "basic", "2027-01-01T00:00:00Z")
    await cancel(client, shop, scheduled["id"], {"when": "now"})
    messages = await outbox_messages(ctx, "subscription.")
    mine = [(topic, p) for topic, p in messages if p["subscription_id"] == created["id"]]
    assert [topic for topic, _ in mine] == [
        "subscription.created",
        "subscription.updated",
        "subscription.updated",
        "subscription.updated",
        "subscription.updated",
        "subscription.ended",
    ]
    assert mine[1][1]["object"]["metadata"] == {"team": "blue"}
    assert mine[2][1]["object"]["quantity"] == 2
    assert mine[3][1]["object"]["pending_change"]["plan_code"] == "pro"
    assert mine[4][1]["object"]["pending_change"] is None
    assert mine[5][1]["object"]["status"] == "ended" and mine[5][1]["object"]["replaced_by"] == new["id"]
    theirs = [topic for topic, p in messages if p["subscription_id"] == new["id"]]
    assert theirs == ["subscription.created", "subscription.canceled"]
    never_started = [
        (topic, p["object"]["status"]) for topic, p in messages if p["subscription_id"] == scheduled["id"]
    ]
    assert never_started == [("subscription.created", "scheduled"), ("subscription.canceled", "canceled")]
    closing = {i["id"] for i in await invoices(client, shop)}
    created_invoices = {p["invoice_id"] for _, p in await outbox_messages(ctx, "invoice.created")}
    assert len(closing) == 2 and created_invoices == closing


# 11. Status filter


async def test_the_list_filters_on_status(
    client: httpx.AsyncClient, shop: TenantHandle, clock: FrozenClock
) -> None:
    for external_id in ("t", "a", "c", "e", "s"):
        await ok(client, shop, "POST", "/v1/customers", {"external_id": external_id, "timezone": "UTC"})
    trialing = await subscribe(client, shop, "t", "trial", "2026-11-15T00:00:00Z")
    active = await subscribe(client, shop, "a", "basic", NOV)
    canceled = await subscribe(client, shop, "c", "basic", NOV)
    await cancel(client, shop, canceled["id"], {"when": "now"})
    replaced = await subscribe(client, shop, "e", "basic", NOV)
    successor = (await patch(client, shop, replaced["id"], {"plan": "pro"})).json()
    scheduled = await subscribe(client, shop, "s", "basic", "2027-01-01T00:00:00Z")
    expected = {
        "trialing": {trialing["id"]},
        "active": {active["id"], successor["id"]},
        "canceled": {canceled["id"]},
        "ended": {replaced["id"]},
        "scheduled": {scheduled["id"]},
    }
    for status, ids in expected.items():
        page = await ok(client, shop, "GET", f"/v1/subscriptions?status={status}&limit=100")
        assert {s["id"] for s in page["data"]} == ids, status
        assert {s["status"] for s in page["data"]} == {status}
    clock.set(datetime(2027, 1, 1, tzinfo=UTC))
    page = await ok(client, shop, "GET", "/v1/subscriptions?status=scheduled")
    assert page["data"] == []


async def test_a_change_exactly_at_a_closed_period_end_leaves_nothing_to_close_and_announces_the_end(
    client: httpx.AsyncClient, shop: TenantHandle, clock: FrozenClock, ctx: AppContext
) -> None:
    old = await subscribe(client, shop, "c1", "basic", "2026-10-01T00:00:00Z")
    clock.set(S)
    await run(client, shop, NOV)
    response = await patch(client, shop, old["id"], {"plan": "pro"})
    assert response.status_code == 200, response.text
    new = response.json()
    assert (new["starts_at"], new["current_period_end"]) == (NOV, z(DEC))
    assert len(await invoices_of(client, shop, old["id"])) == 1  # October's, nothing for [Nov 1, Nov 1)
    ended = [t for t, p in await outbox_messages(ctx, "subscription.") if p["subscription_id"] == old["id"]]
    assert sorted(ended) == ["subscription.created", "subscription.ended"]
    await run(client, shop, z(DEC))
    (november,) = await invoices_of(client, shop, new["id"])
    assert base_fee_amounts(november) == [("1", PRO_FEE)]


async def test_a_late_event_of_the_replaced_subscription_is_billed_under_its_plan(
    client: httpx.AsyncClient, shop: TenantHandle, clock: FrozenClock
) -> None:
    old = await subscribe(client, shop, "c1", "basic", NOV)
    t = at("2026-11-21T12:00:00Z")
    new = (await patch(client, shop, old["id"], {"plan": "pro"})).json()
    assert new["starts_at"] == z(t)
    clock.set(t + timedelta(hours=25))
    await run(client, shop, z(t + timedelta(hours=25)))
    (closing,) = await invoices_of(client, shop, old["id"])
    assert closing["status"] == "open"
    assert await send(client, shop, "c1", [("late", "2026-11-21T11:00:00Z", 6)]) == [("accepted", None)]
    clock.set(DEC + timedelta(hours=25))
    await run(client, shop, z(DEC))
    await run(client, shop, z(DEC + timedelta(hours=25)))
    late_lines = [
        (i["subscription"], line["quantity"], line["amount"])
        for i in await invoices(client, shop)
        for line in lines_of(i, "late_usage")
    ]
    # On the customer's next invoice, the successor's, priced under the old plan.
    assert late_lines == [(new["id"], "6", usage_amount(Decimal(6), BASIC_UNIT))]
    (cycle,) = await invoices_of(client, shop, new["id"])
    shown = await ok(client, shop, "GET", "/v1/events/late")
    assert (shown["billing_status"], shown["invoice"]) == ("invoiced", cycle["id"])
    assert usage(cycle) == ("0", 0)
    assert_total(cycle)
    assert len(await invoices_of(client, shop, old["id"])) == 1


async def test_the_subscription_waiting_as_a_pending_change_is_not_canceled_on_its_own(
    client: httpx.AsyncClient, shop: TenantHandle
) -> None:
    old = await subscribe(client, shop, "c1", "basic", NOV)
    assert (await patch(client, shop, old["id"], {"plan": "pro", "when": "period_end"})).status_code == 200
    (waiting,) = (await ok(client, shop, "GET", "/v1/subscriptions?status=scheduled"))["data"]
    assert (waiting["replaces"], waiting["starts_at"]) == (old["id"], z(DEC))
    for body in ({"when": "now"}, {"when": "period_end"}):
        assert_problem(await cancel(client, shop, waiting["id"], body), 409, "invalid_transition")
    assert await fetch(client, shop, waiting["id"]) == waiting
    assert (await fetch(client, shop, old["id"]))["pending_change"]["effective_at"] == z(DEC)


async def test_a_scheduled_subscription_changes_in_place_and_bills_nothing(
    client: httpx.AsyncClient, shop: TenantHandle
) -> None:
    created = await subscribe(client, shop, "c1", "basic", "2027-01-01T00:00:00Z")
    response = await patch(client, shop, created["id"], {"plan": "pro", "quantity": 3})
    assert response.status_code == 200, response.text
    changed = response.json()
    assert (changed["id"], changed["status"], changed["plan_code"], changed["quantity"]) == (
        created["id"],
        "scheduled",
        "pro",
        3,
    )
    assert (changed["replaces"], changed["replaced_by"]) == (None, None)
    assert await invoices(client, shop) == []
    await run(client, shop, "2027-02-01T00:00:00Z")
    (january,) = await invoices_of(client, shop, created["id"])
    assert base_fee_amounts(january) == [("3", PRO_FEE * 3)]


async def test_a_late_event_of_the_replaced_subscription_joins_the_successors_draft(
    client: httpx.AsyncClient, shop: TenantHandle, clock: FrozenClock
) -> None:
    """When the successor's invoice is still a draft, the late event lands on that draft at once."""
    old = await subscribe(client, shop, "c1", "basic", NOV)
    new = (await patch(client, shop, old["id"], {"plan": "pro"})).json()
    clock.set(DEC + timedelta(hours=1))
    await run(client, shop, z(DEC + timedelta(hours=1)))  # the closing invoice is final, December's a draft
    (closing,) = await invoices_of(client, shop, old["id"])
    (draft,) = await invoices_of(client, shop, new["id"])
    assert (closing["status"], draft["status"]) == ("open", "draft")
    assert await send(client, shop, "c1", [("late", "2026-11-10T00:00:00Z", 4)]) == [("accepted", None)]
    await run(client, shop, z(DEC + timedelta(hours=2)))
    (draft,) = await invoices_of(client, shop, new["id"])
    assert [(line["quantity"], line["amount"]) for line in lines_of(draft, "late_usage")] == [
        ("4", usage_amount(Decimal(4), BASIC_UNIT))
    ]
    assert_total(draft)
    clock.set(DEC + timedelta(hours=25))
    await run(client, shop, z(DEC + timedelta(hours=25)))
    (final,) = await invoices_of(client, shop, new["id"])
    # The same lines, under new ids: a draft's lines are written again when it is finalized.
    assert final["status"] == "open" and without_ids(lines_of(final, "late_usage")) == without_ids(
        lines_of(draft, "late_usage")
    )
    shown = await ok(client, shop, "GET", "/v1/events/late")
    assert shown["invoice"] == final["id"]


async def test_voiding_the_successors_draft_waives_the_replaced_subscriptions_late_event(
    client: httpx.AsyncClient, shop: TenantHandle, clock: FrozenClock
) -> None:
    old = await subscribe(client, shop, "c1", "basic", NOV)
    new = (await patch(client, shop, old["id"], {"plan": "pro"})).json()
    clock.set(DEC + timedelta(hours=1))
    await run(client, shop, z(DEC + timedelta(hours=1)))
    assert await send(client, shop, "c1", [("late", "2026-11-10T00:00:00Z", 4)]) == [("accepted", None)]
    await run(client, shop, z(DEC + timedelta(hours=2)))
    (draft,) = await invoices_of(client, shop, new["id"])
    assert len(lines_of(draft, "late_usage")) == 1
    await ok(client, shop, "POST", f"/v1/invoices/{draft['id']}/void")
    shown = await ok(client, shop, "GET", "/v1/events/late")
    assert shown["invoice"] == draft["id"]
    # Nothing bills it again: December's successor invoice and no invoice of its own.
    clock.set(at("2027-01-02T12:00:00Z"))
    await run(client, shop, "2027-01-02T12:00:00Z")
    assert all(not lines_of(i, "late_usage") for i in await invoices(client, shop) if i["id"] != draft["id"])
