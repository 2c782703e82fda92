"""/v1/plans: create, address by id or code, list, validation that creates nothing, immutability once used."""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from datetime import timedelta
from typing import Any

import httpx
import pytest

from billing.core.clock import FrozenClock
from billing.web.auth import Scope
from tests.conftest import TenantHandle, subscribe
from tests.integration.web.test_auth import assert_problem

PRO = {
    "code": "pro",
    "name": "Pro",
    "currency": "USD",
    "interval": "month",
    "base_fee": 4900,
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
        {
            "meter": "seats",
            "model": "volume",
            "tiers": [{"up_to": "10", "unit_amount": "8"}, {"up_to": None, "unit_amount": "6"}],
        },
        {"meter": "exports", "model": "package", "package_size": "100", "package_amount": 500},
    ],
}
PLAN_FIELDS = {
    "id",
    "object",
    "code",
    "name",
    "currency",
    "interval",
    "base_fee",
    "prices",
    "trial_days",
    "minimum_amount",
    "threshold_amount",
    "created_at",
    "updated_at",
}


@pytest.fixture
async def metered(client: httpx.AsyncClient, tenant: TenantHandle) -> TenantHandle:
    for key in ("api_calls", "storage", "seats", "exports"):
        response = await client.post(
            "/v1/meters", headers=tenant.headers(), json={"key": key, "aggregation": "sum"}
        )
        assert response.status_code == 201, response.text
    return tenant


async def create(client: httpx.AsyncClient, tenant: TenantHandle, **fields: Any) -> httpx.Response:
    return await client.post("/v1/plans", headers=tenant.headers(), json={**PRO, **fields})


async def get(
    client: httpx.AsyncClient, tenant: TenantHandle, ref: str, scope: Scope = Scope.ADMIN
) -> httpx.Response:
    return await client.get(f"/v1/plans/{ref}", headers=tenant.headers(scope))


async def listed(client: httpx.AsyncClient, tenant: TenantHandle, query: str = "") -> dict:
    response = await client.get(f"/v1/plans{query}", headers=tenant.headers())
    assert response.status_code == 200, response.text
    return response.json()


def fields_of(problem: dict) -> set[str]:
    return {error["field"] for error in problem["errors"]}


async def test_create_answers_201_with_the_plan_and_every_price_model(
    client: httpx.AsyncClient, metered: TenantHandle
) -> None:
    response = await create(client, metered)
    assert response.status_code == 201, response.text
    plan = response.json()
    assert set(plan) == PLAN_FIELDS
    assert plan["id"].startswith("plan_")
    assert (plan["code"], plan["name"], plan["currency"], plan["interval"], plan["base_fee"]) == (
        "pro",
        "Pro",
        "USD",
        "month",
        4900,
    )
    assert plan["created_at"] == plan["updated_at"] == "2026-11-21T12:00:00Z"
    meters = {
        m["key"]: m["id"] for m in (await client.get("/v1/meters", headers=metered.headers())).json()["data"]
    }
    assert [(p["meter"], p["meter_id"], p["model"]) for p in plan["prices"]] == [
        (p["meter"], meters[p["meter"]], p["model"]) for p in PRO["prices"]
    ]
    per_unit, graduated, volume, package = plan["prices"]
    assert per_unit["unit_amount"] == "0.002" and "tiers" not in per_unit
    assert graduated["tiers"] == PRO["prices"][1]["tiers"]
    assert volume["tiers"] == [
        {"up_to": "10", "unit_amount": "8", "flat_amount": 0},
        {"up_to": None, "unit_amount": "6", "flat_amount": 0},
    ]
    assert (package["package_size"], package["package_amount"]) == ("100", 500)
    assert "unit_amount" not in package


async def test_a_plan_is_found_by_id_and_by_code(client: httpx.AsyncClient, metered: TenantHandle) -> None:
    plan = (await create(client, metered)).json()
    by_id, by_code = await get(client, metered, plan["id"]), await get(client, metered, "pro")
    assert by_id.status_code == by_code.status_code == 200
    assert by_id.json() == by_code.json() == plan
    assert_problem(await get(client, metered, "nope"), 404, "not_found")


async def test_defaults_name_from_code_currency_from_tenant_and_no_prices(
    client: httpx.AsyncClient, make_tenant: Callable[..., Awaitable[TenantHandle]]
) -> None:
    euro = await make_tenant(name="Euro", currency="EUR")
    response = await client.post("/v1/plans", headers=euro.headers(), json={"code": "basic"})
    assert response.status_code == 201, response.text
    plan = response.json()
    assert (plan["name"], plan["currency"], plan["interval"], plan["base_fee"], plan["prices"]) == (
        "basic",
        "EUR",
        "month",
        0,
        [],
    )


async def test_list_pages_newest_first_with_starting_after(
    client: httpx.AsyncClient, metered: TenantHandle
) -> None:
    created = [(await create(client, metered, code=f"plan-{i}")).json()["id"] for i in range(5)]
    first = await listed(client, metered, "?limit=2")
    second = await listed(client, metered, f"?limit=2&starting_after={first['data'][-1]['id']}")
    third = await listed(client, metered, f"?limit=2&starting_after={second['data'][-1]['id']}")
    assert (first["has_more"], second["has_more"], third["has_more"]) == (True, True, False)
    pages = first["data"] + second["data"] + third["data"]
    assert [p["id"] for p in pages] == list(reversed(created))
    assert [p["id"] for p in (await listed(client, metered))["data"]] == list(reversed(created))


def tiered(*up_tos: str | None, model: str = "graduated", meter: str = "storage") -> dict:
    return {"meter": meter, "model": model, "tiers": [{"up_to": u, "unit_amount": "1"} for u in up_tos]}


def per_unit(unit_amount: Any = "1", meter: str = "api_calls", **extra: Any) -> dict:
    return {"meter": meter, "model": "per_unit", "unit_amount": unit_amount, **extra}


THIRTEEN = "0.0000000000001"
INVALID_PRICES = [
    ("unknown meter", [per_unit(meter="nope")], "prices[0].meter"),
    ("same meter twice", [per_unit(), per_unit("2")], "prices[1].meter"),
    ("tiers not ascending", [tiered("100", "50", None)], "prices[0].tiers[1].up_to"),
    ("equal up_to", [tiered("100", "100", None, model="volume")], "prices[0].tiers[1].up_to"),
    ("open-ended tier not last", [tiered(None, "100")], "prices[0].tiers[0].up_to"),
    ("no open-ended tier", [tiered("100", "200")], "prices[0].tiers[1].up_to"),
    ("two open-ended tiers", [tiered(None, None)], "prices[0].tiers[0].up_to"),
    ("up_to zero", [tiered("0", None)], "prices[0].tiers[0].up_to"),
    ("13 digits in unit_amount", [per_unit(THIRTEEN)], "prices[0].unit_amount"),
    ("13 digits in up_to", [tiered("1" + THIRTEEN[1:], None)], "prices[0].tiers[0].up_to"),
    (
        "13 digits in package_size",
        [{"meter": "exports", "model": "package", "package_size": THIRTEEN, "package_amount": 1}],
        "prices[0].package_size",
    ),
    ("negative unit_amount", [per_unit("-0.01")], "prices[0].unit_amount"),
    (
        "negative tier unit_amount",
        [{"meter": "seats", "model": "volume", "tiers": [{"up_to": None, "unit_amount": "-1"}]}],
        "prices[0].tiers[0].unit_amount",
    ),
    (
        "negative flat_amount",
        [{"meter": "seats", "model": "graduated", "tiers": [{"up_to": None, "flat_amount": -1}]}],
        "prices[0].tiers[0].flat_amount",
    ),
    (
        "package_size 0",
        [{"meter": "exports", "model": "package", "package_size": "0", "package_amount": 500}],
        "prices[0].package_size",
    ),
    (
        "negative package_amount",
        [{"meter": "exports", "model": "package", "package_size": "10", "package_amount": -500}],
        "prices[0].package_amount",
    ),
    ("per_unit without unit_amount", [{"meter": "api_calls", "model": "per_unit"}], "prices[0].unit_amount"),
    ("per_unit with tiers", [per_unit(tiers=[{"up_to": None, "unit_amount": "1"}])], "prices[0].tiers"),
    ("graduated without tiers", [{"meter": "storage", "model": "graduated"}], "prices[0].tiers"),
    ("volume with empty tiers", [{"meter": "storage", "model": "volume", "tiers": []}], "prices[0].tiers"),
    ("graduated with unit_amount", [{**tiered(None), "unit_amount": "1"}], "prices[0].unit_amount"),
    (
        "package without package_amount",
        [{"meter": "exports", "model": "package", "package_size": "10"}],
        "prices[0].package_amount",
    ),
    ("not a decimal", [per_unit("1,5")], "prices[0].unit_amount"),
    ("NaN", [per_unit("NaN")], "prices[0].unit_amount"),
    ("unknown model", [{"meter": "api_calls", "model": "flat", "unit_amount": "1"}], "prices[0].model"),
]


@pytest.mark.parametrize(
    ("prices", "field"), [c[1:] for c in INVALID_PRICES], ids=[c[0] for c in INVALID_PRICES]
)
async def test_an_invalid_price_answers_422_naming_the_field_and_creates_nothing(
    client: httpx.AsyncClient, metered: TenantHandle, prices: list[dict], field: str
) -> None:
    problem = assert_problem(await create(client, metered, prices=prices), 422, "validation_error")
    assert field in fields_of(problem), problem
    assert (await listed(client, metered))["data"] == []
    assert_problem(await get(client, metered, "pro"), 404, "not_found")


@pytest.mark.parametrize(
    ("unit_amount", "message"),
    [
        ("1,5", "'1,5' is not a decimal number"),
        ("NaN", "'NaN' is not a decimal number"),
        ("1E+30", "1E+30 is larger in magnitude than 1000000000000000"),
        (THIRTEEN, f"{THIRTEEN} has 13 fractional digits; at most 12 are allowed"),
    ],
)
async def test_an_invalid_decimal_is_named_as_it_was_written(
    client: httpx.AsyncClient, metered: TenantHandle, unit_amount: str, message: str
) -> None:
    response = await create(client, metered, prices=[per_unit(unit_amount)])
    problem = assert_problem(response, 422, "validation_error")
    assert problem["errors"] == [{"field": "prices[0].unit_amount", "message": message}]


@pytest.mark.parametrize(
    ("fields", "field"),
    [
        ({"currency": "XYZ"}, "currency"),
        ({"currency": "usd"}, "currency"),
        ({"base_fee": -1}, "base_fee"),
        ({"code": ""}, "code"),
        ({"code": "has space"}, "code"),
        ({"interval": "year"}, "interval"),
        ({"name": "   "}, "name"),
    ],
)
async def test_an_invalid_plan_field_answers_422_and_creates_nothing(
    client: httpx.AsyncClient, metered: TenantHandle, fields: dict, field: str
) -> None:
    problem = assert_problem(await create(client, metered, **fields), 422, "validation_error")
    assert field in fields_of(problem), problem
    assert (await listed(client, metered))["data"] == []


async def test_every_problem_of_every_price_is_reported_at_once(
    client: httpx.AsyncClient, metered: TenantHandle
) -> None:
    prices = [
        per_unit("-1"),
        tiered("5", "5", None),
        per_unit(meter="nope"),
        per_unit("1", meter="api_calls"),
    ]
    problem = assert_problem(await create(client, metered, prices=prices), 422, "validation_error")
    assert fields_of(problem) >= {
        "prices[0].unit_amount",
        "prices[1].tiers[1].up_to",
        "prices[2].meter",
        "prices[3].meter",
    }


async def test_decimals_are_stored_exactly_in_canonical_form(
    client: httpx.AsyncClient, metered: TenantHandle
) -> None:
    prices = [
        per_unit("0.000000000001"),
        {
            "meter": "storage",
            "model": "graduated",
            "tiers": [
                {"up_to": "1E+3", "unit_amount": "0.50000000000000"},
                {"up_to": None, "unit_amount": "2.5e-3"},
            ],
        },
        {"meter": "exports", "model": "package", "package_size": "0.100", "package_amount": 7},
    ]
    response = await create(client, metered, prices=prices)
    assert response.status_code == 201, response.text
    first, second, third = response.json()["prices"]
    assert first["unit_amount"] == "0.000000000001"
    assert [(t["up_to"], t["unit_amount"]) for t in second["tiers"]] == [("1000", "0.5"), (None, "0.0025")]
    assert third["package_size"] == "0.1"


async def test_json_integers_are_read_exactly_and_json_floats_are_refused(
    client: httpx.AsyncClient, metered: TenantHandle
) -> None:
    """A JSON number with a fraction would be a binary float: the service refuses it instead of guessing."""
    problem = assert_problem(await create(client, metered, prices=[per_unit(0.5)]), 422, "validation_error")
    assert fields_of(problem) == {"prices[0].unit_amount"}
    assert (await listed(client, metered))["data"] == []
    big = 123456789012345
    response = await create(client, metered, prices=[per_unit(2), tiered(big, None, meter="storage")])
    assert response.status_code == 201, response.text
    prices = response.json()["prices"]
    assert prices[0]["unit_amount"] == "2"
    assert prices[1]["tiers"][0]["up_to"] == str(big)


async def test_a_reused_code_answers_409_and_keeps_the_first_plan(
    client: httpx.AsyncClient, metered: TenantHandle
) -> None:
    first = (await create(client, metered)).json()
    assert_problem(await create(client, metered, name="Other", base_fee=1), 409, "conflict")
    assert (await listed(client, metered))["data"] == [first]


async def test_two_tenants_may_use_the_same_code_and_never_see_each_others_plans(
    client: httpx.AsyncClient, metered: TenantHandle, make_tenant: Callable[..., Awaitable[TenantHandle]]
) -> None:
    plan = (await create(client, metered, prices=[])).json()
    other = await make_tenant(name="Other")
    theirs = await create(client, other, prices=[])
    assert theirs.status_code == 201, theirs.text
    assert_problem(await get(client, other, plan["id"]), 404, "not_found")
    assert (await get(client, other, "pro")).json()["id"] == theirs.json()["id"]
    assert_problem(
        await client.patch(f"/v1/plans/{plan['id']}", headers=other.headers(), json={"name": "X"}),
        404,
        "not_found",
    )
    assert [p["id"] for p in (await listed(client, other))["data"]] == [theirs.json()["id"]]
    assert (await get(client, metered, plan["id"])).json() == plan


@pytest.mark.parametrize(
    ("currency", "unit_amount", "base_fee"), [("JPY", "0.5", 1000), ("KWD", "0.001", 4500)]
)
async def test_plans_in_currencies_with_zero_and_three_decimals(
    client: httpx.AsyncClient, metered: TenantHandle, currency: str, unit_amount: str, base_fee: int
) -> None:
    prices = [per_unit(unit_amount)]
    response = await create(
        client, metered, code=f"pro-{currency}", currency=currency, base_fee=base_fee, prices=prices
    )
    assert response.status_code == 201, response.text
    plan = (await get(client, metered, f"pro-{currency}")).json()
    assert (plan["currency"], plan["base_fee"], plan["prices"][0]["unit_amount"]) == (
        currency,
        base_fee,
        unit_amount,
    )


async def test_patch_changes_a_plan_no_subscription_uses(
    client: httpx.AsyncClient, metered: TenantHandle, clock: FrozenClock
) -> None:
    plan = (await create(client, metered)).json()
    clock.advance(timedelta(hours=1))
    patch = {"name": "Pro 2", "base_fee": 5900, "prices": [per_unit("0.003")]}
    response = await client.patch(f"/v1/plans/{plan['id']}", headers=metered.headers(), json=patch)
    assert response.status_code == 200, response.text
    after = (await get(client, metered, plan["id"])).json()
    assert after == response.json()
    assert (after["name"], after["base_fee"], after["code"], after["currency"]) == (
        "Pro 2",
        5900,
        "pro",
        "USD",
    )
    assert [(p["meter"], p["unit_amount"]) for p in after["prices"]] == [("api_calls", "0.003")]
    assert (after["created_at"], after["updated_at"]) == ("2026-11-21T12:00:00Z", "2026-11-21T13:00:00Z")
    renamed = await client.patch("/v1/plans/pro", headers=metered.headers(), json={"name": "Pro 3"})
    assert renamed.status_code == 200 and renamed.json()["base_fee"] == 5900


@pytest.mark.parametrize(
    ("patch", "field"),
    [
        ({"name": "Renamed", "base_fee": -1}, "base_fee"),
        ({"name": "Renamed", "prices": [per_unit("-1")]}, "prices[0].unit_amount"),
        ({"prices": [tiered(None, None)]}, "prices[0].tiers[0].up_to"),
        ({"code": "new"}, "code"),
    ],
)
async def test_an_invalid_patch_answers_422_and_changes_nothing(
    client: httpx.AsyncClient, metered: TenantHandle, patch: dict, field: str
) -> None:
    plan = (await create(client, metered)).json()
    response = await client.patch(f"/v1/plans/{plan['id']}", headers=metered.headers(), json=patch)
    assert field in fields_of(assert_problem(response, 422, "validation_error"))
    assert (await get(client, metered, plan["id"])).json() == plan


async def test_a_plan_used_by_a_subscription_is_immutable(
    client: httpx.AsyncClient, metered: TenantHandle
) -> None:
    plan = (await create(client, metered)).json()
    await client.post("/v1/customers", headers=metered.headers(), json={"external_id": "acme-1"})
    await subscribe(client, metered, ["acme-1"], starts_at="2026-11-01T00:00:00Z", plan="pro")
    for patch in ({"name": "Renamed"}, {"base_fee": 1}, {"prices": []}, {}):
        response = await client.patch(f"/v1/plans/{plan['id']}", headers=metered.headers(), json=patch)
        assert_problem(response, 409, "plan_in_use")
    assert (await get(client, metered, "pro")).json() == plan


ROUTES = [
    ("POST", "/v1/plans", {"code": "new"}),
    ("PATCH", "/v1/plans/pro", {"name": "X"}),
    ("GET", "/v1/plans", None),
    ("GET", "/v1/plans/pro", None),
]


@pytest.mark.parametrize(("method", "path", "body"), ROUTES)
@pytest.mark.parametrize("scope", [Scope.FINANCE, Scope.INGEST])
async def test_finance_reads_ingest_gets_403_and_forbidden_writes_change_nothing(
    client: httpx.AsyncClient, metered: TenantHandle, scope: Scope, method: str, path: str, body: Any
) -> None:
    plan = (await create(client, metered)).json()
    response = await client.request(method, path, headers=metered.headers(scope), json=body)
    if scope is Scope.FINANCE and method == "GET":
        assert response.status_code == 200, response.text
    else:
        assert_problem(response, 403, "forbidden")
    assert (await listed(client, metered))["data"] == [plan]
