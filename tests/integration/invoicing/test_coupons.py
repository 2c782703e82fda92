"""Coupons and customer discounts through the API: every rule and bad input of "Coupons and
commitments" (bad input writes nothing), redemption counting under concurrency, and isolation."""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable
from datetime import UTC, datetime, timedelta
from typing import Any

import httpx
import pytest

from billing.core.clock import FrozenClock, format_timestamp
from billing.web.auth import Scope
from tests.conftest import FROZEN_AT, TenantHandle
from tests.integration.web.test_auth import assert_problem

MakeTenant = Callable[..., Awaitable[TenantHandle]]
NOW = format_timestamp(FROZEN_AT)


async def call(
    client: httpx.AsyncClient,
    tenant: TenantHandle,
    method: str,
    path: str,
    body: object = None,
    *,
    status: int = 200,
    scope: Scope = Scope.ADMIN,
) -> Any:
    response = await client.request(method, path, headers=tenant.headers(scope), json=body)
    assert response.status_code == status, response.text
    return response.json()


async def coupon(client: httpx.AsyncClient, tenant: TenantHandle, **body: object) -> dict:
    fields = {"code": "SPRING", "percent_off": "20", "duration": "forever", **body}
    return await call(client, tenant, "POST", "/v1/coupons", fields, status=201)


async def customer(
    client: httpx.AsyncClient, tenant: TenantHandle, external_id: str, **fields: object
) -> dict:
    body = {"external_id": external_id, "timezone": "UTC", **fields}
    return await call(client, tenant, "POST", "/v1/customers", body, status=201)


async def redeem(
    client: httpx.AsyncClient, tenant: TenantHandle, customer_ref: str, code: str
) -> httpx.Response:
    return await client.post(
        f"/v1/customers/{customer_ref}/discounts", headers=tenant.headers(), json={"coupon": code}
    )


async def discounts_of(client: httpx.AsyncClient, tenant: TenantHandle, customer_ref: str) -> list[dict]:
    return (await call(client, tenant, "GET", f"/v1/customers/{customer_ref}/discounts"))["data"]


async def coupons_of(client: httpx.AsyncClient, tenant: TenantHandle) -> list[dict]:
    return (await call(client, tenant, "GET", "/v1/coupons?limit=100"))["data"]


# Coupons


async def test_a_percent_coupon_is_created_and_found_by_id_and_by_code(
    client: httpx.AsyncClient, tenant: TenantHandle
) -> None:
    created = await coupon(
        client,
        tenant,
        code="SPRING_26-a",
        name="Spring sale",
        percent_off="12.5",
        duration="repeating",
        duration_in_periods=3,
        max_redemptions=100,
        expires_at="2026-12-01T01:00:00+01:00",
        metadata={"campaign": "spring"},
    )
    assert created["id"].startswith("cpn_")
    assert {k: v for k, v in created.items() if k != "id"} == {
        "object": "coupon",
        "code": "SPRING_26-a",
        "name": "Spring sale",
        "percent_off": "12.5",
        "amount_off": None,
        "currency": None,
        "duration": "repeating",
        "duration_in_periods": 3,
        "applies_to_plans": None,
        "max_redemptions": 100,
        "times_redeemed": 0,
        "expires_at": "2026-12-01T00:00:00Z",
        "valid": True,
        "metadata": {"campaign": "spring"},
        "deleted_at": None,
        "created_at": NOW,
    }
    assert await call(client, tenant, "GET", f"/v1/coupons/{created['id']}") == created
    assert await call(client, tenant, "GET", "/v1/coupons/SPRING_26-a") == created
    assert await coupons_of(client, tenant) == [created]


async def test_an_amount_coupon_names_its_currency_and_the_name_defaults_to_the_code(
    client: httpx.AsyncClient, tenant: TenantHandle
) -> None:
    created = await coupon(client, tenant, code="TEN", percent_off=None, amount_off=1000, currency="USD")
    assert (created["name"], created["percent_off"], created["amount_off"], created["currency"]) == (
        "TEN",
        None,
        1000,
        "USD",
    )
    assert (created["duration"], created["duration_in_periods"]) == ("forever", None)


async def test_percent_off_is_kept_as_an_exact_decimal_string(
    client: httpx.AsyncClient, tenant: TenantHandle
) -> None:
    shown = [
        (await coupon(client, tenant, code=f"P{n}", percent_off=value))["percent_off"]
        for n, value in enumerate(["100", "0.01", "33.30", 7])
    ]
    assert shown == ["100", "0.01", "33.3", "7"]


async def test_a_coupon_lists_page_newest_first(client: httpx.AsyncClient, tenant: TenantHandle) -> None:
    ids = [(await coupon(client, tenant, code=f"C{n}"))["id"] for n in range(3)]
    first = await call(client, tenant, "GET", "/v1/coupons?limit=2")
    assert ([c["id"] for c in first["data"]], first["has_more"]) == ([ids[2], ids[1]], True)
    rest = await call(client, tenant, "GET", f"/v1/coupons?limit=2&starting_after={ids[1]}")
    assert ([c["id"] for c in rest["data"]], rest["has_more"]) == ([ids[0]], False)


async def test_applies_to_plans_takes_codes_or_ids_and_shows_codes(
    client: httpx.AsyncClient, tenant: TenantHandle
) -> None:
    pro = await call(client, tenant, "POST", "/v1/plans", {"code": "pro"}, status=201)
    await call(client, tenant, "POST", "/v1/plans", {"code": "team"}, status=201)
    created = await coupon(client, tenant, applies_to_plans=[pro["id"], "team", "pro"])
    assert created["applies_to_plans"] == ["pro", "team"]


BAD_COUPONS: list[tuple[dict[str, object], str]] = [
    ({"code": "has space"}, "code"),
    ({"code": ""}, "code"),
    ({"code": "x" * 65}, "code"),
    ({"code": "dot.ted"}, "code"),
    ({"percent_off": "150"}, "percent_off"),
    ({"percent_off": "100.01"}, "percent_off"),
    ({"percent_off": "0"}, "percent_off"),
    ({"percent_off": "-5"}, "percent_off"),
    ({"percent_off": "12.345"}, "percent_off"),
    ({"percent_off": "abc"}, "percent_off"),
    ({"percent_off": 20.5}, "percent_off"),
    ({"percent_off": None}, "percent_off"),
    ({"amount_off": 1000, "currency": "USD"}, "percent_off"),
    ({"currency": "USD"}, "currency"),
    ({"percent_off": None, "amount_off": 0, "currency": "USD"}, "amount_off"),
    ({"percent_off": None, "amount_off": -100, "currency": "USD"}, "amount_off"),
    ({"percent_off": None, "amount_off": 10**16, "currency": "USD"}, "amount_off"),
    ({"percent_off": None, "amount_off": 100}, "currency"),
    ({"percent_off": None, "amount_off": 100, "currency": "usd"}, "currency"),
    ({"percent_off": None, "amount_off": 100, "currency": "ZZZ"}, "currency"),
    ({"duration": "weekly"}, "duration"),
    ({"duration": "repeating"}, "duration_in_periods"),
    ({"duration": "repeating", "duration_in_periods": 0}, "duration_in_periods"),
    ({"duration": "repeating", "duration_in_periods": 121}, "duration_in_periods"),
    ({"duration": "once", "duration_in_periods": 3}, "duration_in_periods"),
    ({"duration": "forever", "duration_in_periods": 3}, "duration_in_periods"),
    ({"applies_to_plans": ["nope"]}, "applies_to_plans[0]"),
    ({"applies_to_plans": []}, "applies_to_plans"),
    ({"max_redemptions": 0}, "max_redemptions"),
    ({"max_redemptions": -1}, "max_redemptions"),
    ({"expires_at": NOW}, "expires_at"),
    ({"expires_at": "2026-11-01T00:00:00Z"}, "expires_at"),
    ({"expires_at": "2026-12-01T00:00:00"}, "expires_at"),
    ({"name": "   "}, "name"),
    ({"surprise": 1}, "surprise"),
]


@pytest.mark.parametrize(("change", "field"), BAD_COUPONS)
async def test_a_bad_coupon_is_422_naming_the_field_and_nothing_is_written(
    client: httpx.AsyncClient, tenant: TenantHandle, change: dict[str, object], field: str
) -> None:
    body = {"code": "SPRING", "percent_off": "20", "duration": "forever", **change}
    body = {key: value for key, value in body.items() if value is not None}
    problem = assert_problem(
        await client.post("/v1/coupons", headers=tenant.headers(), json=body), 422, "validation_error"
    )
    assert field in [error["field"] for error in problem["errors"]], problem
    assert await coupons_of(client, tenant) == []


async def test_malformed_json_is_400_and_a_taken_code_409(
    client: httpx.AsyncClient, tenant: TenantHandle
) -> None:
    headers = {**tenant.headers(), "Content-Type": "application/json"}
    assert_problem(await client.post("/v1/coupons", headers=headers, content=b"{"), 400, "malformed_json")
    first = await coupon(client, tenant)
    taken = await client.post(
        "/v1/coupons",
        headers=tenant.headers(),
        json={"code": "SPRING", "amount_off": 5, "currency": "USD", "duration": "once"},
    )
    assert_problem(taken, 409, "conflict")
    assert await coupons_of(client, tenant) == [first]
    # Codes are case-sensitive, as Stripe's coupon ids.
    await coupon(client, tenant, code="spring")


async def test_a_coupon_is_renamed_and_its_metadata_replaced_but_nothing_else_changes(
    client: httpx.AsyncClient, tenant: TenantHandle, make_tenant: MakeTenant
) -> None:
    created = await coupon(client, tenant, metadata={"a": "1", "b": "2"})
    renamed = await call(client, tenant, "PATCH", "/v1/coupons/SPRING", {"name": "Spring 26"})
    assert renamed == {**created, "name": "Spring 26"}
    replaced = await call(client, tenant, "PATCH", f"/v1/coupons/{created['id']}", {"metadata": {"c": "3"}})
    assert replaced == {**renamed, "metadata": {"c": "3"}}
    for body in ({"name": " "}, {"percent_off": "50"}, {"name": "ok", "metadata": {"k": 5}}):
        response = await client.patch("/v1/coupons/SPRING", headers=tenant.headers(), json=body)
        assert_problem(response, 422, "validation_error")
    assert await call(client, tenant, "GET", "/v1/coupons/SPRING") == replaced
    other = await make_tenant(name="Other")
    response = await client.patch("/v1/coupons/SPRING", headers=other.headers(), json={"name": "Mine"})
    assert_problem(response, 404, "not_found")
    assert await call(client, tenant, "GET", "/v1/coupons/SPRING") == replaced


async def test_only_an_admin_key_creates_or_deletes_coupons(
    client: httpx.AsyncClient, tenant: TenantHandle
) -> None:
    body = {"code": "SPRING", "percent_off": "20", "duration": "forever"}
    forbidden = await client.post("/v1/coupons", headers=tenant.headers(Scope.FINANCE), json=body)
    assert_problem(forbidden, 403, "forbidden")
    created = await coupon(client, tenant)
    gone = await client.delete(f"/v1/coupons/{created['id']}", headers=tenant.headers(Scope.FINANCE))
    assert_problem(gone, 403, "forbidden")
    assert await call(client, tenant, "GET", "/v1/coupons/SPRING", scope=Scope.FINANCE) == created


async def test_a_deleted_coupon_is_not_valid_and_stops_new_redemptions_but_discounts_run_on(
    client: httpx.AsyncClient, tenant: TenantHandle, clock: FrozenClock
) -> None:
    created = await coupon(client, tenant)
    await customer(client, tenant, "c1")
    await customer(client, tenant, "c2")
    kept = await redeem(client, tenant, "c1", "SPRING")
    assert kept.status_code == 201, kept.text
    clock.advance(timedelta(hours=1))
    deleted = await call(client, tenant, "DELETE", f"/v1/coupons/{created['id']}")
    assert (deleted["valid"], deleted["deleted_at"], deleted["times_redeemed"]) == (
        False,
        format_timestamp(FROZEN_AT + timedelta(hours=1)),
        1,
    )
    assert await call(client, tenant, "DELETE", "/v1/coupons/SPRING") == deleted  # again: no change
    assert await call(client, tenant, "GET", "/v1/coupons/SPRING") == deleted
    assert_problem(await redeem(client, tenant, "c2", "SPRING"), 409, "coupon_not_redeemable")
    assert await discounts_of(client, tenant, "c2") == []
    (running,) = await discounts_of(client, tenant, "c1")
    assert (running["id"], running["status"], running["coupon"]["valid"]) == (
        kept.json()["id"],
        "active",
        False,
    )
    # The code stays taken.
    taken = await client.post(
        "/v1/coupons",
        headers=tenant.headers(),
        json={"code": "SPRING", "percent_off": "5", "duration": "once"},
    )
    assert_problem(taken, 409, "conflict")


async def test_an_expired_coupon_is_not_valid_and_not_redeemable(
    client: httpx.AsyncClient, tenant: TenantHandle, clock: FrozenClock
) -> None:
    expires = FROZEN_AT + timedelta(hours=1)
    await coupon(client, tenant, expires_at=format_timestamp(expires))
    await customer(client, tenant, "c1")
    clock.set(expires)
    assert (await call(client, tenant, "GET", "/v1/coupons/SPRING"))["valid"] is False
    assert_problem(await redeem(client, tenant, "c1", "SPRING"), 409, "coupon_not_redeemable")
    assert await discounts_of(client, tenant, "c1") == []
    assert (await call(client, tenant, "GET", "/v1/coupons/SPRING"))["times_redeemed"] == 0


async def test_max_redemptions_counts_at_redemption_and_removal_does_not_give_one_back(
    client: httpx.AsyncClient, tenant: TenantHandle
) -> None:
    await coupon(client, tenant, max_redemptions=2)
    for name in ("c1", "c2", "c3"):
        await customer(client, tenant, name)
    first = (await redeem(client, tenant, "c1", "SPRING")).json()
    assert (await call(client, tenant, "GET", "/v1/coupons/SPRING"))["times_redeemed"] == 1
    await call(client, tenant, "DELETE", f"/v1/customers/c1/discounts/{first['id']}")
    assert (await redeem(client, tenant, "c2", "SPRING")).status_code == 201
    full = await call(client, tenant, "GET", "/v1/coupons/SPRING")
    assert (full["times_redeemed"], full["valid"]) == (2, False)
    assert_problem(await redeem(client, tenant, "c3", "SPRING"), 409, "coupon_not_redeemable")
    assert await discounts_of(client, tenant, "c3") == []
    assert (await call(client, tenant, "GET", "/v1/coupons/SPRING"))["times_redeemed"] == 2


async def test_two_concurrent_redemptions_of_the_last_one_give_one_201_and_one_409(
    client: httpx.AsyncClient, tenant: TenantHandle
) -> None:
    for round_ in range(3):
        code = f"LAST{round_}"
        await coupon(client, tenant, code=code, max_redemptions=1)
        names = [f"r{round_}a", f"r{round_}b"]
        for name in names:
            await customer(client, tenant, name)
        answers = await asyncio.gather(*(redeem(client, tenant, name, code) for name in names))
        assert sorted(answer.status_code for answer in answers) == [201, 409], [a.text for a in answers]
        (refused,) = [answer for answer in answers if answer.status_code == 409]
        assert_problem(refused, 409, "coupon_not_redeemable")
        assert (await call(client, tenant, "GET", f"/v1/coupons/{code}"))["times_redeemed"] == 1
        assert sum([len(await discounts_of(client, tenant, name)) for name in names]) == 1


# Discounts


async def test_a_redemption_shows_the_coupon_the_customer_and_an_active_status(
    client: httpx.AsyncClient, tenant: TenantHandle
) -> None:
    created = await coupon(client, tenant)
    person = await customer(client, tenant, "c1")
    response = await redeem(client, tenant, "c1", created["id"])
    assert response.status_code == 201, response.text
    discount = response.json()
    assert discount["id"].startswith("dis_")
    assert {k: v for k, v in discount.items() if k not in ("id", "coupon")} == {
        "object": "discount",
        "customer": person["id"],
        "status": "active",
        "start": NOW,
        "end": None,
        "invoice": None,
        "ended_at": None,
        "removed_at": None,
        "created_at": NOW,
    }
    assert discount["coupon"] == {**created, "times_redeemed": 1}
    assert await discounts_of(client, tenant, person["id"]) == [discount]
    assert await call(client, tenant, "GET", f"/v1/customers/c1/discounts/{discount['id']}") == discount


async def test_a_second_active_discount_is_409_until_the_first_is_removed(
    client: httpx.AsyncClient, tenant: TenantHandle, clock: FrozenClock
) -> None:
    await coupon(client, tenant)
    await coupon(client, tenant, code="OTHER", percent_off="5")
    await customer(client, tenant, "c1")
    first = (await redeem(client, tenant, "c1", "SPRING")).json()
    assert_problem(await redeem(client, tenant, "c1", "OTHER"), 409, "discount_exists")
    assert_problem(await redeem(client, tenant, "c1", "SPRING"), 409, "discount_exists")
    assert (await call(client, tenant, "GET", "/v1/coupons/OTHER"))["times_redeemed"] == 0
    assert [d["id"] for d in await discounts_of(client, tenant, "c1")] == [first["id"]]
    clock.advance(timedelta(minutes=5))
    removed = await call(client, tenant, "DELETE", f"/v1/customers/c1/discounts/{first['id']}")
    assert (removed["status"], removed["removed_at"]) == ("removed", format_timestamp(clock.now()))
    clock.advance(timedelta(minutes=5))
    again = await call(client, tenant, "DELETE", f"/v1/customers/c1/discounts/{first['id']}")
    assert again == removed
    second = await redeem(client, tenant, "c1", "OTHER")
    assert second.status_code == 201, second.text
    assert [(d["id"], d["status"]) for d in await discounts_of(client, tenant, "c1")] == [
        (second.json()["id"], "active"),
        (first["id"], "removed"),
    ]


async def test_an_amount_coupon_in_another_currency_is_422_currency_mismatch(
    client: httpx.AsyncClient, tenant: TenantHandle
) -> None:
    await coupon(client, tenant, code="EUR5", percent_off=None, amount_off=500, currency="EUR")
    await coupon(client, tenant, code="USD5", percent_off=None, amount_off=500, currency="USD")
    await customer(client, tenant, "c1", currency="USD")
    assert_problem(await redeem(client, tenant, "c1", "EUR5"), 422, "currency_mismatch")
    assert await discounts_of(client, tenant, "c1") == []
    assert (await call(client, tenant, "GET", "/v1/coupons/EUR5"))["times_redeemed"] == 0
    assert (await redeem(client, tenant, "c1", "USD5")).status_code == 201


async def test_an_archived_customer_gets_no_discount(client: httpx.AsyncClient, tenant: TenantHandle) -> None:
    await coupon(client, tenant)
    await customer(client, tenant, "c1")
    await call(client, tenant, "DELETE", "/v1/customers/c1")
    assert_problem(await redeem(client, tenant, "c1", "SPRING"), 409, "customer_archived")
    assert await discounts_of(client, tenant, "c1") == []
    assert (await call(client, tenant, "GET", "/v1/coupons/SPRING"))["times_redeemed"] == 0


async def test_archiving_a_customer_ends_its_discount(
    client: httpx.AsyncClient, tenant: TenantHandle, clock: FrozenClock
) -> None:
    await coupon(client, tenant, duration="repeating", duration_in_periods=6)
    await customer(client, tenant, "c1")
    discount = (await redeem(client, tenant, "c1", "SPRING")).json()
    clock.advance(timedelta(days=3))
    await call(client, tenant, "DELETE", "/v1/customers/c1")
    (ended,) = await discounts_of(client, tenant, "c1")
    archived_at = format_timestamp(clock.now())
    assert (ended["id"], ended["status"], ended["ended_at"], ended["end"]) == (
        discount["id"],
        "ended",
        archived_at,
        archived_at,
    )


@pytest.mark.parametrize(
    ("start", "timezone", "months", "end"),
    [
        # 07:00 EST on Jan 31 -> 07:00 EDT on Apr 30 (the last day of April): 11:00 UTC.
        ("2026-01-31T12:00:00Z", "America/New_York", 3, "2026-04-30T11:00:00Z"),
        ("2026-11-21T12:00:00Z", "UTC", 1, "2026-12-21T12:00:00Z"),
        # 00:30 on Jan 1 in Berlin -> 00:30 on Jan 1 a year later, whatever the offsets between.
        ("2025-12-31T23:30:00Z", "Europe/Berlin", 12, "2026-12-31T23:30:00Z"),
        ("2028-01-30T00:00:00Z", "UTC", 1, "2028-02-29T00:00:00Z"),
        ("2026-08-31T18:15:00Z", "Asia/Kolkata", 120, "2036-08-31T18:15:00Z"),
    ],
)
async def test_a_repeating_discount_ends_n_calendar_months_later_in_the_customers_timezone(
    client: httpx.AsyncClient,
    tenant: TenantHandle,
    clock: FrozenClock,
    start: str,
    timezone: str,
    months: int,
    end: str,
) -> None:
    await coupon(client, tenant, duration="repeating", duration_in_periods=months)
    await customer(client, tenant, "c1", timezone=timezone)
    clock.set(datetime.fromisoformat(start))
    discount = (await redeem(client, tenant, "c1", "SPRING")).json()
    assert (discount["start"], discount["end"], discount["status"]) == (start, end, "active")


async def test_without_its_own_timezone_a_customer_counts_months_in_the_tenants(
    client: httpx.AsyncClient, tenant: TenantHandle, clock: FrozenClock
) -> None:
    await call(client, tenant, "PATCH", "/v1/tenant", {"billing_timezone": "Asia/Tokyo"})
    await coupon(client, tenant, duration="repeating", duration_in_periods=1)
    await call(client, tenant, "POST", "/v1/customers", {"external_id": "c1"}, status=201)
    # 2026-01-31 20:00 in Tokyo -> 2026-02-28 20:00 in Tokyo (no DST there).
    clock.set(datetime(2026, 1, 31, 11, tzinfo=UTC))
    discount = (await redeem(client, tenant, "c1", "SPRING")).json()
    assert discount["end"] == "2026-02-28T11:00:00Z"


async def test_a_repeating_discount_is_ended_after_its_end_and_a_new_one_may_follow(
    client: httpx.AsyncClient, tenant: TenantHandle, clock: FrozenClock
) -> None:
    await coupon(client, tenant, duration="repeating", duration_in_periods=1)
    await coupon(client, tenant, code="NEXT")
    await customer(client, tenant, "c1")
    discount = (await redeem(client, tenant, "c1", "SPRING")).json()
    clock.set(datetime.fromisoformat(discount["end"]) - timedelta(seconds=1))
    assert_problem(await redeem(client, tenant, "c1", "NEXT"), 409, "discount_exists")
    clock.set(datetime.fromisoformat(discount["end"]))
    (shown,) = await discounts_of(client, tenant, "c1")
    assert (shown["status"], shown["ended_at"]) == ("ended", None)
    assert (await redeem(client, tenant, "c1", "NEXT")).status_code == 201


@pytest.mark.parametrize(
    ("body", "status", "code"),
    [
        ({}, 422, "validation_error"),
        ({"coupon": 5}, 422, "validation_error"),
        ({"coupon": "SPRING", "extra": True}, 422, "validation_error"),
        ({"coupon": "NOPE"}, 404, "not_found"),
    ],
)
async def test_a_bad_redemption_writes_nothing(
    client: httpx.AsyncClient, tenant: TenantHandle, body: dict, status: int, code: str
) -> None:
    await coupon(client, tenant)
    await customer(client, tenant, "c1")
    response = await client.post("/v1/customers/c1/discounts", headers=tenant.headers(), json=body)
    assert_problem(response, status, code)
    assert await discounts_of(client, tenant, "c1") == []
    assert (await call(client, tenant, "GET", "/v1/coupons/SPRING"))["times_redeemed"] == 0


async def test_an_unknown_customer_or_discount_is_404(
    client: httpx.AsyncClient, tenant: TenantHandle
) -> None:
    await coupon(client, tenant)
    await customer(client, tenant, "c1")
    await customer(client, tenant, "c2")
    assert_problem(await redeem(client, tenant, "nobody", "SPRING"), 404, "not_found")
    mine = (await redeem(client, tenant, "c1", "SPRING")).json()
    for path in (f"/v1/customers/c2/discounts/{mine['id']}", "/v1/customers/c1/discounts/dis_nope"):
        assert_problem(await client.get(path, headers=tenant.headers()), 404, "not_found")
        assert_problem(await client.delete(path, headers=tenant.headers()), 404, "not_found")
    assert (await discounts_of(client, tenant, "c1"))[0]["status"] == "active"


async def test_another_tenants_coupons_codes_and_discounts_answer_404(
    client: httpx.AsyncClient, tenant: TenantHandle, make_tenant: MakeTenant
) -> None:
    other = await make_tenant(name="Other")
    theirs = await coupon(client, other, code="THEIRS")
    await customer(client, other, "o1")
    their_discount = (await redeem(client, other, "o1", "THEIRS")).json()
    await customer(client, tenant, "c1")
    for ref in (theirs["id"], "THEIRS"):
        assert_problem(await client.get(f"/v1/coupons/{ref}", headers=tenant.headers()), 404, "not_found")
        assert_problem(await client.delete(f"/v1/coupons/{ref}", headers=tenant.headers()), 404, "not_found")
        assert_problem(await redeem(client, tenant, "c1", ref), 404, "not_found")
    assert await coupons_of(client, tenant) == []
    path = f"/v1/customers/{their_discount['customer']}/discounts"
    assert_problem(await client.get(path, headers=tenant.headers()), 404, "not_found")
    assert_problem(await redeem(client, tenant, their_discount["customer"], "THEIRS"), 404, "not_found")
    for mine in ("/v1/customers/c1/discounts", path):
        item = f"{mine}/{their_discount['id']}"
        assert_problem(await client.get(item, headers=tenant.headers()), 404, "not_found")
        assert_problem(await client.delete(item, headers=tenant.headers()), 404, "not_found")
    # Nothing of theirs changed.
    assert await call(client, other, "GET", "/v1/coupons/THEIRS") == {**theirs, "times_redeemed": 1}
    assert (await discounts_of(client, other, "o1"))[0]["status"] == "active"
