"""Prices with filters, group_by and the percentage model through /v1/plans: what is stored and
echoed, every 422 with its code and field, nothing written on a refusal; and the usage lines of
an invoice naming their price.

Meters have no ``group_by`` in this build, so every filter and group_by is refused here;
filters and group_by that a meter's keys allow, and ``ambiguous_prices``, are tested on the
validators (tests/unit/test_price_match.py)."""

from __future__ import annotations

import csv
import io
from decimal import ROUND_HALF_UP, Decimal
from typing import Any

import httpx
import pytest

from billing.web.auth import Scope
from tests.conftest import TenantHandle
from tests.integration.invoicing.test_invoice_lifecycle import call, listed, run, send, setup
from tests.integration.web.test_auth import assert_problem

PAYMENTS = {
    "meter": "payments",
    "model": "percentage",
    "rate": "2.90",
    "fixed_amount_per_event": 30,
    "free_units": 100,
    "minimum_per_event": 50,
    "maximum_per_event": 1000,
}


@pytest.fixture
async def metered(client: httpx.AsyncClient, tenant: TenantHandle) -> TenantHandle:
    for key, aggregation in (
        ("calls", "sum"),
        ("payments", "sum"),
        ("transfers", "sum"),
        ("logins", "count"),
    ):
        await call(client, tenant, "/v1/meters", {"key": key, "aggregation": aggregation}, status=201)
    return tenant


def per_unit(meter: str = "calls", **extra: Any) -> dict:
    return {"meter": meter, "model": "per_unit", "unit_amount": "1", **extra}


async def refused(client: httpx.AsyncClient, tenant: TenantHandle, prices: list[dict], code: str) -> set[str]:
    """The fields of the 422 with ``code``, after checking that nothing was created."""
    response = await client.post(
        "/v1/plans", headers=tenant.headers(), json={"code": "bad", "prices": prices}
    )
    problem = assert_problem(response, 422, code)
    assert (await call(client, tenant, "/v1/plans", method="GET"))["data"] == []
    return {error["field"] for error in problem["errors"]}


async def test_a_percentage_price_is_stored_canonically_and_echoed(
    client: httpx.AsyncClient, metered: TenantHandle
) -> None:
    body = {
        "code": "pay",
        "prices": [per_unit(), PAYMENTS, {"meter": "transfers", "model": "percentage", "rate": 1}],
    }
    created = await call(client, metered, "/v1/plans", body, status=201)
    calls, payments, bare = created["prices"]
    assert (calls["filters"], calls["group_by"], calls["unit_amount"]) == ({}, [], "1")
    assert "rate" not in calls and "fixed_amount_per_event" not in calls
    assert {k: payments[k] for k in PAYMENTS} == {**PAYMENTS, "rate": "2.9"}
    assert (payments["filters"], payments["group_by"], payments["minimum_amount"]) == ({}, [], None)
    assert "unit_amount" not in payments and "tiers" not in payments
    assert (bare["rate"], bare["fixed_amount_per_event"]) == ("1", 0)
    assert not {"free_units", "minimum_per_event", "maximum_per_event"} & set(bare)
    assert await call(client, metered, "/v1/plans/pay", method="GET") == created


INVALID = [
    (
        "filters on a meter without group_by",
        [per_unit(filters={"region": ["eu"]})],
        "prices[0].filters.region",
    ),
    ("an empty filter list", [per_unit(filters={"region": []})], "prices[0].filters.region"),
    ("group_by on a meter without group_by", [per_unit(group_by=["region"])], "prices[0].group_by[0]"),
    ("a second unfiltered price", [per_unit(), per_unit(unit_amount="2")], "prices[1].meter"),
    ("percentage without rate", [{**PAYMENTS, "rate": None}], "prices[0].rate"),
    ("rate above 100", [{**PAYMENTS, "rate": "100.01"}], "prices[0].rate"),
    ("negative rate", [{**PAYMENTS, "rate": "-0.5"}], "prices[0].rate"),
    ("five decimals in rate", [{**PAYMENTS, "rate": "2.90001"}], "prices[0].rate"),
    ("rate not a number", [{**PAYMENTS, "rate": "2,9"}], "prices[0].rate"),
    (
        "negative fixed amount",
        [{**PAYMENTS, "fixed_amount_per_event": -1}],
        "prices[0].fixed_amount_per_event",
    ),
    ("negative free units", [{**PAYMENTS, "free_units": -1}], "prices[0].free_units"),
    ("negative minimum per event", [{**PAYMENTS, "minimum_per_event": -1}], "prices[0].minimum_per_event"),
    ("huge maximum per event", [{**PAYMENTS, "maximum_per_event": 10**16}], "prices[0].maximum_per_event"),
    ("percentage with unit_amount", [{**PAYMENTS, "unit_amount": "1"}], "prices[0].unit_amount"),
    ("percentage with tiers", [{**PAYMENTS, "tiers": [{"up_to": None}]}], "prices[0].tiers"),
    ("per_unit with rate", [per_unit(rate="1")], "prices[0].rate"),
    ("per_unit with free units", [per_unit(free_units=1)], "prices[0].free_units"),
]


@pytest.mark.parametrize(("prices", "field"), [c[1:] for c in INVALID], ids=[c[0] for c in INVALID])
async def test_an_invalid_dimension_or_percentage_is_a_422_naming_the_field(
    client: httpx.AsyncClient, metered: TenantHandle, prices: list[dict], field: str
) -> None:
    assert field in await refused(client, metered, prices, "validation_error")


async def test_a_percentage_on_a_meter_that_does_not_sum_is_an_invalid_model(
    client: httpx.AsyncClient, metered: TenantHandle
) -> None:
    prices = [per_unit(), {**PAYMENTS, "meter": "logins"}]
    assert await refused(client, metered, prices, "invalid_model") == {"prices[1].model"}


async def test_a_minimum_per_event_above_the_maximum_is_refused_with_its_code(
    client: httpx.AsyncClient, metered: TenantHandle
) -> None:
    prices = [{**PAYMENTS, "minimum_per_event": 1001}]
    assert await refused(client, metered, prices, "minimum_exceeds_maximum") == {
        "prices[0].minimum_per_event"
    }
    equal = {**PAYMENTS, "minimum_per_event": 1000}
    assert (await call(client, metered, "/v1/plans", {"code": "ok", "prices": [equal]}, status=201))[
        "prices"
    ][0]["minimum_per_event"] == 1000


async def test_a_patch_with_an_invalid_percentage_changes_nothing(
    client: httpx.AsyncClient, metered: TenantHandle
) -> None:
    created = await call(client, metered, "/v1/plans", {"code": "pay", "prices": [PAYMENTS]}, status=201)
    for prices, code in (
        ([{**PAYMENTS, "meter": "logins"}], "invalid_model"),
        ([{**PAYMENTS, "rate": "101"}], "validation_error"),
        ([per_unit(group_by=["region"])], "validation_error"),
    ):
        response = await client.patch("/v1/plans/pay", headers=metered.headers(), json={"prices": prices})
        assert_problem(response, 422, code)
    assert await call(client, metered, "/v1/plans/pay", method="GET") == created


def half_up(x: Decimal) -> int:
    return int(x.quantize(Decimal(1), rounding=ROUND_HALF_UP))


async def test_usage_lines_name_their_price_and_the_export_shows_it(
    client: httpx.AsyncClient, tenant: TenantHandle
) -> None:
    prices = [
        {"meter": "units", "model": "per_unit", "unit_amount": "0.25", "maximum_amount": 1000},
        {"meter": "other", "model": "package", "package_size": "10", "package_amount": 300},
    ]
    await setup(
        client,
        tenant,
        ["c1"],
        starts_at="2026-09-01T00:00:00Z",
        prices=prices,
        base_fee=500,
        meters=("units", "other"),
    )
    await send(
        client,
        tenant,
        ("e1", "c1", "2026-09-05T00:00:00Z", "50"),
        ("e2", "c1", "2026-09-06T00:00:00Z", "21", "other"),
    )
    await run(client, tenant, "2026-10-01T00:00:00Z")
    (invoice,) = await listed(client, tenant)
    units = half_up(Decimal(50) * Decimal("0.25") * 100)
    packages = -(-21 // 10) * 300
    assert [
        (x["kind"], x["price"], x["group"], x["unpriced_quantity"], x["amount"]) for x in invoice["lines"]
    ] == [
        ("base_fee", None, None, None, 500),
        ("usage", 0, None, None, units),
        ("price_maximum", 0, None, None, 1000 - units),
        ("usage", 1, None, None, packages),
    ]
    response = await client.get("/v1/invoices/export.csv", headers=tenant.headers(Scope.FINANCE))
    rows = list(csv.DictReader(io.StringIO(response.text, newline="")))
    assert [(r["kind"], r["price"], r["group"], r["unpriced_quantity"]) for r in rows] == [
        ("base_fee", "", "", ""),
        ("usage", "0", "", ""),
        ("price_maximum", "0", "", ""),
        ("usage", "1", "", ""),
    ]
