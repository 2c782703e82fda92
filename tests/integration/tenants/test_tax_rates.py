"""/v1/tax-rates: create, read, list by activity, change only what may change; and the tenant's
default_tax_rates, address and tax id through PATCH /v1/tenant. Bad input changes nothing."""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from datetime import timedelta
from typing import Any

import httpx
import pytest

from billing.core.clock import FrozenClock
from billing.web.auth import Scope
from tests.conftest import TenantHandle
from tests.integration.web.test_auth import assert_problem

VAT = {
    "display_name": "VAT",
    "percentage": "19",
    "inclusive": False,
    "country": "DE",
    "jurisdiction": "Germany",
    "description": "Umsatzsteuer",
}
RATE_FIELDS = {
    "id",
    "object",
    "display_name",
    "description",
    "percentage",
    "inclusive",
    "country",
    "jurisdiction",
    "active",
    "created_at",
    "updated_at",
}
ADDRESS = {
    "line1": "Unter den Linden 1",
    "line2": None,
    "city": "Berlin",
    "postal_code": "10117",
    "state": None,
    "country": "DE",
}


async def create_rate(client: httpx.AsyncClient, tenant: TenantHandle, **fields: Any) -> httpx.Response:
    return await client.post("/v1/tax-rates", headers=tenant.headers(), json={**VAT, **fields})


async def rate_id(client: httpx.AsyncClient, tenant: TenantHandle, **fields: Any) -> str:
    response = await create_rate(client, tenant, **fields)
    assert response.status_code == 201, response.text
    return str(response.json()["id"])


async def rates(client: httpx.AsyncClient, tenant: TenantHandle, query: str = "") -> list[dict[str, Any]]:
    response = await client.get(f"/v1/tax-rates{query}", headers=tenant.headers())
    assert response.status_code == 200, response.text
    return list(response.json()["data"])


async def tenant_settings(client: httpx.AsyncClient, tenant: TenantHandle) -> dict[str, Any]:
    return dict((await client.get("/v1/tenant", headers=tenant.headers())).json())


# --- tax rates ---------------------------------------------------------------------------------


async def test_create_answers_201_with_the_rate(client: httpx.AsyncClient, tenant: TenantHandle) -> None:
    response = await create_rate(client, tenant, percentage="7.2500")

    assert response.status_code == 201, response.text
    body = response.json()
    assert set(body) == RATE_FIELDS
    assert body["id"].startswith("txr_") and body["object"] == "tax_rate"
    assert body["percentage"] == "7.25"
    assert {k: body[k] for k in VAT if k != "percentage"} == {
        k: v for k, v in VAT.items() if k != "percentage"
    }
    assert body["active"] is True
    assert body["created_at"] == body["updated_at"] == "2026-11-21T12:00:00Z"
    got = await client.get(f"/v1/tax-rates/{body['id']}", headers=tenant.headers(Scope.FINANCE))
    assert got.status_code == 200 and got.json() == body


async def test_only_the_required_fields_are_needed(client: httpx.AsyncClient, tenant: TenantHandle) -> None:
    body = {"display_name": "Sales tax", "percentage": "8.875", "inclusive": False}
    response = await client.post("/v1/tax-rates", headers=tenant.headers(), json=body)

    assert response.status_code == 201, response.text
    created = response.json()
    assert created["country"] is created["jurisdiction"] is created["description"] is None
    assert created["percentage"] == "8.875"


@pytest.mark.parametrize("value", ["0", "100", "0.0001", "99.9999"])
async def test_percentage_edges_are_accepted(
    client: httpx.AsyncClient, tenant: TenantHandle, value: str
) -> None:
    response = await create_rate(client, tenant, percentage=value)
    assert response.status_code == 201, response.text
    assert response.json()["percentage"] == value


@pytest.mark.parametrize(
    ("fields", "field"),
    [
        ({"percentage": "100.0001"}, "percentage"),
        ({"percentage": "-1"}, "percentage"),
        ({"percentage": "1e2"}, "percentage"),
        ({"percentage": "NaN"}, "percentage"),
        ({"percentage": "Infinity"}, "percentage"),
        ({"percentage": "19.00001"}, "percentage"),
        ({"percentage": ""}, "percentage"),
        ({"percentage": 19}, "percentage"),
        ({"percentage": 19.5}, "percentage"),
        ({"percentage": None}, "percentage"),
        ({"display_name": ""}, "display_name"),
        ({"display_name": "   "}, "display_name"),
        ({"display_name": "x" * 51}, "display_name"),
        ({"country": "de"}, "country"),
        ({"country": "DEU"}, "country"),
        ({"country": "EL"}, "country"),
        ({"country": "EU"}, "country"),
        ({"jurisdiction": "x" * 51}, "jurisdiction"),
        ({"description": "x" * 501}, "description"),
        ({"inclusive": "no"}, "inclusive"),
        ({"active": False}, "active"),
        ({"tax_type": "vat"}, "tax_type"),
    ],
)
async def test_bad_input_answers_422_naming_the_field_and_creates_nothing(
    client: httpx.AsyncClient, tenant: TenantHandle, fields: dict[str, Any], field: str
) -> None:
    body = assert_problem(await create_rate(client, tenant, **fields), 422, "validation_error")

    assert field in {error["field"] for error in body["errors"]}
    assert await rates(client, tenant) == []


async def test_a_missing_required_field_answers_422(client: httpx.AsyncClient, tenant: TenantHandle) -> None:
    for missing in ("display_name", "percentage", "inclusive"):
        body = {k: v for k, v in VAT.items() if k != missing}
        response = await client.post("/v1/tax-rates", headers=tenant.headers(), json=body)
        assert missing in assert_problem(response, 422, "validation_error")["detail"]
    assert await rates(client, tenant) == []


async def test_list_pages_newest_first_and_filters_by_active(
    client: httpx.AsyncClient, tenant: TenantHandle
) -> None:
    created = [await rate_id(client, tenant, display_name=f"VAT {i}") for i in range(5)]
    for inactive in created[1::2]:
        response = await client.patch(
            f"/v1/tax-rates/{inactive}", headers=tenant.headers(), json={"active": False}
        )
        assert response.status_code == 200, response.text

    first = (await client.get("/v1/tax-rates?limit=2", headers=tenant.headers(Scope.FINANCE))).json()
    rest = (
        await client.get(f"/v1/tax-rates?starting_after={first['data'][-1]['id']}", headers=tenant.headers())
    ).json()

    assert first["has_more"] is True and rest["has_more"] is False
    assert [r["id"] for r in first["data"] + rest["data"]] == created[::-1]
    assert [r["id"] for r in await rates(client, tenant, "?active=true")] == [
        created[4],
        created[2],
        created[0],
    ]
    assert [r["id"] for r in await rates(client, tenant, "?active=false")] == [created[3], created[1]]
    assert_problem(
        await client.get("/v1/tax-rates?active=maybe", headers=tenant.headers()), 422, "validation_error"
    )


async def test_patch_changes_the_name_description_and_activity_only(
    client: httpx.AsyncClient, tenant: TenantHandle, clock: FrozenClock
) -> None:
    created = (await create_rate(client, tenant)).json()
    clock.advance(timedelta(seconds=60))

    response = await client.patch(
        f"/v1/tax-rates/{created['id']}",
        headers=tenant.headers(),
        json={"display_name": "MwSt", "description": None, "active": False},
    )

    assert response.status_code == 200, response.text
    body = response.json()
    assert (body["display_name"], body["description"], body["active"]) == ("MwSt", None, False)
    assert body["updated_at"] == "2026-11-21T12:01:00Z"
    unchanged = {k: created[k] for k in ("percentage", "inclusive", "country", "jurisdiction", "created_at")}
    assert {k: body[k] for k in unchanged} == unchanged
    reactivated = await client.patch(
        f"/v1/tax-rates/{created['id']}", headers=tenant.headers(), json={"active": True}
    )
    assert reactivated.json()["active"] is True


@pytest.mark.parametrize(
    "fields",
    [
        {"percentage": "20"},
        {"inclusive": True},
        {"country": "FR"},
        {"jurisdiction": "France"},
        {"display_name": "MwSt", "percentage": "20"},
        {"display_name": ""},
        {"display_name": None},
        {"active": None},
        {"active": "no"},
    ],
)
async def test_patch_of_anything_else_answers_422_and_changes_nothing(
    client: httpx.AsyncClient, tenant: TenantHandle, fields: dict[str, Any]
) -> None:
    created = (await create_rate(client, tenant)).json()

    response = await client.patch(f"/v1/tax-rates/{created['id']}", headers=tenant.headers(), json=fields)

    body = assert_problem(response, 422, "validation_error")
    assert body["errors"]
    assert (await client.get(f"/v1/tax-rates/{created['id']}", headers=tenant.headers())).json() == created


async def test_finance_reads_but_only_admin_writes(client: httpx.AsyncClient, tenant: TenantHandle) -> None:
    created = await rate_id(client, tenant)
    for scope in (Scope.FINANCE, Scope.INGEST):
        assert_problem(
            await client.post("/v1/tax-rates", headers=tenant.headers(scope), json=VAT), 403, "forbidden"
        )
        patch = await client.patch(
            f"/v1/tax-rates/{created}", headers=tenant.headers(scope), json={"active": False}
        )
        assert_problem(patch, 403, "forbidden")
    assert_problem(await client.get("/v1/tax-rates", headers=tenant.headers(Scope.INGEST)), 403, "forbidden")
    assert [r["id"] for r in await rates(client, tenant)] == [created]
    assert (await client.get(f"/v1/tax-rates/{created}", headers=tenant.headers())).json()["active"] is True


async def test_another_tenants_rate_is_not_found(
    client: httpx.AsyncClient, tenant: TenantHandle, make_tenant: Callable[..., Awaitable[TenantHandle]]
) -> None:
    other = await make_tenant(name="Other")
    theirs = await rate_id(client, other)

    assert_problem(await client.get(f"/v1/tax-rates/{theirs}", headers=tenant.headers()), 404, "not_found")
    patch = await client.patch(f"/v1/tax-rates/{theirs}", headers=tenant.headers(), json={"active": False})
    assert_problem(patch, 404, "not_found")
    assert await rates(client, tenant) == []
    assert (await client.get(f"/v1/tax-rates/{theirs}", headers=other.headers())).json()["active"] is True


# --- the tenant's tax settings -----------------------------------------------------------------


async def test_a_new_tenant_has_no_tax_settings(client: httpx.AsyncClient, tenant: TenantHandle) -> None:
    body = await tenant_settings(client, tenant)
    assert (body["default_tax_rates"], body["address"], body["tax_id"]) == ([], None, None)


async def test_tenant_sets_default_rates_address_and_tax_id(
    client: httpx.AsyncClient, tenant: TenantHandle
) -> None:
    de, fr = await rate_id(client, tenant), await rate_id(client, tenant, country="FR", percentage="20")
    patch = {
        "default_tax_rates": [fr, de],
        "address": {
            "line1": " Unter den Linden 1 ",
            "line2": "",
            "city": "Berlin",
            "postal_code": "10117",
            "country": "DE",
        },
        "tax_id": {"type": "eu_vat", "value": "de 136 695 976"},
    }

    response = await client.patch("/v1/tenant", headers=tenant.headers(), json=patch)

    assert response.status_code == 200, response.text
    body = await tenant_settings(client, tenant)
    assert body["default_tax_rates"] == [fr, de]
    assert body["address"] == ADDRESS
    assert body["tax_id"] == {"type": "eu_vat", "value": "DE136695976", "country": "DE"}
    cleared = await client.patch(
        "/v1/tenant",
        headers=tenant.headers(),
        json={"default_tax_rates": [], "address": None, "tax_id": None},
    )
    assert cleared.status_code == 200
    assert {k: cleared.json()[k] for k in ("default_tax_rates", "address", "tax_id")} == {
        "default_tax_rates": [],
        "address": None,
        "tax_id": None,
    }


async def bad_tenant_patch(
    client: httpx.AsyncClient, tenant: TenantHandle, patch: dict[str, Any], status: int, code: str
) -> dict[str, Any]:
    before = await tenant_settings(client, tenant)
    body = assert_problem(
        await client.patch("/v1/tenant", headers=tenant.headers(), json=patch), status, code
    )
    assert await tenant_settings(client, tenant) == before
    return body


async def test_defaults_hold_a_rate_per_country(client: httpx.AsyncClient, tenant: TenantHandle) -> None:
    countries = ["AT", "BE", "BG", "CY", "CZ", "DE", "DK", "EE", "ES", "FI", "FR", "GR", "HR", "IE"]
    defaults = [await rate_id(client, tenant, country=country) for country in countries]

    response = await client.patch(
        "/v1/tenant", headers=tenant.headers(), json={"default_tax_rates": defaults}
    )

    assert response.status_code == 200, response.text
    assert (await tenant_settings(client, tenant))["default_tax_rates"] == defaults


async def test_mixed_default_rates_answer_tax_rates_mixed(
    client: httpx.AsyncClient, tenant: TenantHandle
) -> None:
    exclusive, inclusive = await rate_id(client, tenant), await rate_id(client, tenant, inclusive=True)

    body = await bad_tenant_patch(
        client,
        tenant,
        {"name": "Renamed", "default_tax_rates": [exclusive, inclusive]},
        422,
        "tax_rates_mixed",
    )

    assert body["errors"][0]["field"] == "default_tax_rates"


async def test_an_inactive_rate_cannot_be_newly_attached_but_stays_attached(
    client: httpx.AsyncClient, tenant: TenantHandle
) -> None:
    kept, other = await rate_id(client, tenant), await rate_id(client, tenant, country=None)
    await client.patch("/v1/tenant", headers=tenant.headers(), json={"default_tax_rates": [kept]})
    for rate in (kept, other):
        await client.patch(f"/v1/tax-rates/{rate}", headers=tenant.headers(), json={"active": False})

    body = await bad_tenant_patch(
        client, tenant, {"default_tax_rates": [kept, other]}, 422, "tax_rate_inactive"
    )
    assert body["errors"][0]["field"] == "default_tax_rates[1]"
    again = await client.patch("/v1/tenant", headers=tenant.headers(), json={"default_tax_rates": [kept]})
    assert again.status_code == 200 and again.json()["default_tax_rates"] == [kept]


async def test_another_tenants_or_an_unknown_rate_answers_404(
    client: httpx.AsyncClient, tenant: TenantHandle, make_tenant: Callable[..., Awaitable[TenantHandle]]
) -> None:
    mine, theirs = await rate_id(client, tenant), await rate_id(client, await make_tenant(name="Other"))

    for foreign in (theirs, "txr_doesnotexist0000000000000"):
        body = await bad_tenant_patch(
            client, tenant, {"default_tax_rates": [mine, foreign]}, 404, "not_found"
        )
        assert body["errors"][0]["field"] == "default_tax_rates[1]"


@pytest.mark.parametrize(
    ("patch", "code", "field"),
    [
        ({"default_tax_rates": ["RATE", "RATE"]}, "validation_error", "default_tax_rates[1]"),
        ({"default_tax_rates": ["RATE"] * 101}, "validation_error", "default_tax_rates"),
        ({"default_tax_rates": None}, "validation_error", "default_tax_rates"),
        ({"default_tax_rates": "RATE"}, "validation_error", "default_tax_rates"),
        ({"address": {"country": "Germany"}}, "validation_error", "address.country"),
        ({"address": {"country": "de"}}, "validation_error", "address.country"),
        ({"address": {"city": "x" * 201}}, "validation_error", "address.city"),
        ({"address": {"postal_code": "1" * 33}}, "validation_error", "address.postal_code"),
        ({"address": {"line1": "a\nb"}}, "validation_error", "address.line1"),
        ({"address": {"street": "Main"}}, "validation_error", "address"),
        ({"address": "Berlin"}, "validation_error", "address"),
        ({"tax_id": {"type": "eu_vat", "value": "DE136695977"}}, "invalid_tax_id", "tax_id"),
        ({"tax_id": {"type": "vat", "value": "DE136695976"}}, "validation_error", "tax_id.type"),
        ({"tax_id": {"type": "eu_vat"}}, "validation_error", "tax_id"),
        (
            {"address": {"country": "FR"}, "tax_id": {"type": "eu_vat", "value": "DE136695976"}},
            "tax_id_country_mismatch",
            "tax_id",
        ),
    ],
)
async def test_bad_tenant_tax_settings_answer_422_and_change_nothing(
    client: httpx.AsyncClient, tenant: TenantHandle, patch: dict[str, Any], code: str, field: str
) -> None:
    rate = await rate_id(client, tenant)
    if isinstance(patch.get("default_tax_rates"), list):
        patch = {
            **patch,
            "default_tax_rates": [rate if r == "RATE" else r for r in patch["default_tax_rates"]],
        }
    elif patch.get("default_tax_rates") == "RATE":
        patch = {**patch, "default_tax_rates": rate}

    body = await bad_tenant_patch(client, tenant, {"name": "Renamed", **patch}, 422, code)

    assert field in {error["field"] for error in body["errors"]}, body


async def test_changing_the_address_under_a_tax_id_is_checked_too(
    client: httpx.AsyncClient, tenant: TenantHandle
) -> None:
    patch = {"address": {"country": "GR"}, "tax_id": {"type": "eu_vat", "value": "GR094259216"}}
    response = await client.patch("/v1/tenant", headers=tenant.headers(), json=patch)
    assert response.status_code == 200, response.text
    assert response.json()["tax_id"]["value"] == "EL094259216"

    await bad_tenant_patch(client, tenant, {"address": {"country": "CY"}}, 422, "tax_id_country_mismatch")
