"""A customer's tax settings through /v1/customers (address, tax_exempt, tax_ids, tax_rates,
credit_balance_low_threshold), and the rates its invoices get (``tax_terms.customer_taxes``)."""

from __future__ import annotations

from collections.abc import Awaitable, Callable, Iterator
from contextlib import contextmanager
from decimal import Decimal
from typing import Any

import httpx
import pytest
import sqlalchemy as sa

from billing.core.context import AppContext
from billing.invoicing.amounts import TaxRate
from billing.invoicing.tax_terms import customer_taxes
from tests.conftest import TenantHandle
from tests.integration.tenants.test_tax_rates import rate_id
from tests.integration.web.test_auth import assert_problem

DE_VAT = "DE136695976"
ADDRESS_DE = {"line1": "Hauptstr. 1", "city": "Berlin", "postal_code": "10115", "country": "DE"}
FULL_ADDRESS_DE = {"line2": None, "state": None, **ADDRESS_DE}


async def create(client: httpx.AsyncClient, tenant: TenantHandle, **fields: Any) -> httpx.Response:
    return await client.post(
        "/v1/customers", headers=tenant.headers(), json={"external_id": "acme", **fields}
    )


async def customer(client: httpx.AsyncClient, tenant: TenantHandle, ref: str = "acme") -> dict[str, Any]:
    response = await client.get(f"/v1/customers/{ref}", headers=tenant.headers())
    assert response.status_code == 200, response.text
    return dict(response.json())


async def patch(client: httpx.AsyncClient, tenant: TenantHandle, body: dict[str, Any]) -> httpx.Response:
    return await client.patch("/v1/customers/acme", headers=tenant.headers(), json=body)


async def test_a_new_customer_has_no_tax_settings(client: httpx.AsyncClient, tenant: TenantHandle) -> None:
    body = (await create(client, tenant)).json()

    assert body["address"] is None and body["tax_exempt"] == "none" and body["tax_ids"] == []
    assert body["tax_rates"] is None  # the tenant's defaults apply
    assert body["credit_balance_low_threshold"] is None


async def test_create_takes_every_tax_setting(client: httpx.AsyncClient, tenant: TenantHandle) -> None:
    vat = await rate_id(client, tenant)
    body = {
        "address": ADDRESS_DE,
        "tax_exempt": "reverse",
        "tax_ids": [{"type": "eu_vat", "value": "de 136.695.976"}, {"type": "us_ein", "value": "04-2103594"}],
        "tax_rates": [vat],
        "credit_balance_low_threshold": 5000,
    }

    response = await create(client, tenant, **body)

    assert response.status_code == 201, response.text
    assert response.json() == await customer(client, tenant)
    created = response.json()
    assert created["address"] == FULL_ADDRESS_DE
    assert created["tax_exempt"] == "reverse"
    assert created["tax_ids"] == [
        {"type": "eu_vat", "value": DE_VAT, "country": "DE"},
        {"type": "us_ein", "value": "042103594", "country": "US"},
    ]
    assert created["tax_rates"] == [vat]
    assert created["credit_balance_low_threshold"] == 5000


async def test_patch_sets_and_clears_them(client: httpx.AsyncClient, tenant: TenantHandle) -> None:
    vat = await rate_id(client, tenant)
    await create(client, tenant)
    body = {
        "address": {"country": "GR", "city": "Athens"},
        "tax_exempt": "exempt",
        "tax_ids": [{"type": "eu_vat", "value": "EL094259216"}],
        "tax_rates": [vat],
        "credit_balance_low_threshold": 0,
    }

    changed = (await patch(client, tenant, body)).json()

    assert changed == await customer(client, tenant)
    assert changed["address"]["country"] == "GR" and changed["tax_exempt"] == "exempt"
    assert changed["tax_ids"] == [{"type": "eu_vat", "value": "EL094259216", "country": "GR"}]
    assert (changed["tax_rates"], changed["credit_balance_low_threshold"]) == ([vat], 0)
    none = {
        "address": None,
        "tax_exempt": "none",
        "tax_ids": [],
        "tax_rates": [],
        "credit_balance_low_threshold": None,
    }
    cleared = (await patch(client, tenant, none)).json()
    assert {k: cleared[k] for k in none} == none  # [] rates: no tax at all
    assert (await patch(client, tenant, {"tax_rates": None})).json()["tax_rates"] is None  # back to defaults
    assert (await patch(client, tenant, {"name": "Only the name"})).json()["tax_exempt"] == "none"


@pytest.mark.parametrize(
    ("fields", "code", "field"),
    [
        ({"tax_exempt": "partial"}, "validation_error", "tax_exempt"),
        ({"tax_exempt": None}, "validation_error", "tax_exempt"),
        ({"address": {"country": "Germany"}}, "validation_error", "address.country"),
        ({"address": {"country": "EL"}}, "validation_error", "address.country"),
        ({"address": {"zip": "10115"}}, "validation_error", "address"),
        ({"address": {"line1": "x" * 201}}, "validation_error", "address.line1"),
        ({"tax_ids": [{"type": "eu_vat", "value": "DE136695977"}]}, "invalid_tax_id", "tax_ids[0]"),
        (
            {"tax_ids": [{"type": "eu_vat", "value": DE_VAT}, {"type": "gb_vat", "value": "GB980780685"}]},
            "invalid_tax_id",
            "tax_ids[1]",
        ),
        ({"tax_ids": [{"type": "ch_vat", "value": "CHE-107.787.578 IVA"}]}, "invalid_tax_id", "tax_ids[0]"),
        ({"tax_ids": [{"type": "no_vat", "value": "995525829MVA"}]}, "invalid_tax_id", "tax_ids[0]"),
        ({"tax_ids": [{"type": "au_abn", "value": "51824753557"}]}, "invalid_tax_id", "tax_ids[0]"),
        ({"tax_ids": [{"type": "in_gst", "value": "27AAPFU0939F1ZW"}]}, "invalid_tax_id", "tax_ids[0]"),
        ({"tax_ids": [{"type": "us_ein", "value": "07-2103594"}]}, "invalid_tax_id", "tax_ids[0]"),
        ({"tax_ids": [{"type": "br_cnpj", "value": "1"}]}, "validation_error", "tax_ids[0].type"),
        ({"tax_ids": [{"type": "au_abn", "value": "51824753556"}] * 6}, "validation_error", "tax_ids"),
        (
            {"tax_ids": [{"type": "eu_vat", "value": DE_VAT}, {"type": "eu_vat", "value": "de136695976"}]},
            "validation_error",
            "tax_ids[1]",
        ),
        (
            {"address": {"country": "AT"}, "tax_ids": [{"type": "eu_vat", "value": DE_VAT}]},
            "tax_id_country_mismatch",
            "tax_ids[0]",
        ),
        (
            {"address": {"country": "EL"}, "tax_ids": [{"type": "eu_vat", "value": "EL094259216"}]},
            "validation_error",
            "address.country",
        ),
        ({"credit_balance_low_threshold": -1}, "validation_error", "credit_balance_low_threshold"),
        ({"credit_balance_low_threshold": 1.5}, "validation_error", "credit_balance_low_threshold"),
        ({"tax_rates": "txr_x"}, "validation_error", "tax_rates"),
        ({"tax_rates": ["RATE", "RATE"]}, "validation_error", "tax_rates[1]"),
        ({"tax_rates": ["RATE"] * 6}, "validation_error", "tax_rates"),
    ],
)
async def test_bad_tax_settings_answer_422_and_write_nothing(
    client: httpx.AsyncClient, tenant: TenantHandle, fields: dict[str, Any], code: str, field: str
) -> None:
    rate = await rate_id(client, tenant)
    if isinstance(fields.get("tax_rates"), list):
        fields = {**fields, "tax_rates": [rate for _ in fields["tax_rates"]]}

    created = assert_problem(await create(client, tenant, **fields), 422, code)
    assert field in {error["field"] for error in created["errors"]}, created
    assert (await client.get("/v1/customers/acme", headers=tenant.headers())).status_code == 404

    before = (await create(client, tenant, name="Before")).json()
    patched = assert_problem(await patch(client, tenant, {"name": "After", **fields}), 422, code)
    assert field in {error["field"] for error in patched["errors"]}, patched
    assert await customer(client, tenant) == before


async def test_moving_the_address_away_from_a_vat_number_is_a_mismatch(
    client: httpx.AsyncClient, tenant: TenantHandle
) -> None:
    before = (
        await create(client, tenant, address=ADDRESS_DE, tax_ids=[{"type": "eu_vat", "value": DE_VAT}])
    ).json()

    assert_problem(
        await patch(client, tenant, {"address": {"country": "FR"}}), 422, "tax_id_country_mismatch"
    )
    assert_problem(
        await patch(client, tenant, {"tax_ids": [{"type": "eu_vat", "value": "FR40303265045"}]}),
        422,
        "tax_id_country_mismatch",
    )
    assert await customer(client, tenant) == before
    both = {"address": {"country": "FR"}, "tax_ids": [{"type": "eu_vat", "value": "FR40303265045"}]}
    assert (await patch(client, tenant, both)).status_code == 200
    assert (await patch(client, tenant, {"address": None})).status_code == 200  # no country: nothing to match


async def test_mixed_rates_answer_tax_rates_mixed(client: httpx.AsyncClient, tenant: TenantHandle) -> None:
    exclusive, inclusive = await rate_id(client, tenant), await rate_id(client, tenant, inclusive=True)
    mixed = [exclusive, inclusive]

    assert_problem(await create(client, tenant, tax_rates=mixed), 422, "tax_rates_mixed")
    before = (await create(client, tenant, tax_rates=[exclusive])).json()
    assert_problem(await patch(client, tenant, {"tax_rates": mixed}), 422, "tax_rates_mixed")
    assert await customer(client, tenant) == before


async def test_an_inactive_rate_cannot_be_newly_attached_but_stays(
    client: httpx.AsyncClient, tenant: TenantHandle
) -> None:
    kept, other = await rate_id(client, tenant), await rate_id(client, tenant, display_name="City tax")
    await create(client, tenant, external_id="keeper", tax_rates=[kept])
    for rate in (kept, other):
        await client.patch(f"/v1/tax-rates/{rate}", headers=tenant.headers(), json={"active": False})

    assert_problem(await create(client, tenant, tax_rates=[kept]), 422, "tax_rate_inactive")
    body = assert_problem(
        await client.patch(
            "/v1/customers/keeper", headers=tenant.headers(), json={"tax_rates": [kept, other]}
        ),
        422,
        "tax_rate_inactive",
    )
    assert body["errors"][0]["field"] == "tax_rates[1]"
    assert (await customer(client, tenant, "keeper"))["tax_rates"] == [kept]
    same = await client.patch(
        "/v1/customers/keeper", headers=tenant.headers(), json={"tax_rates": [kept], "name": "K"}
    )
    assert same.status_code == 200 and same.json()["tax_rates"] == [kept]


async def test_another_tenants_rate_answers_404(
    client: httpx.AsyncClient, tenant: TenantHandle, make_tenant: Callable[..., Awaitable[TenantHandle]]
) -> None:
    theirs = await rate_id(client, await make_tenant(name="Other"))

    assert_problem(await create(client, tenant, tax_rates=[theirs]), 404, "not_found")
    assert (await client.get("/v1/customers/acme", headers=tenant.headers())).status_code == 404
    before = (await create(client, tenant)).json()
    assert_problem(await patch(client, tenant, {"tax_rates": [theirs]}), 404, "not_found")
    assert await customer(client, tenant) == before


# --- which rates an invoice gets ---------------------------------------------------------------


@contextmanager
def counting_queries(ctx: AppContext) -> Iterator[list[str]]:
    statements: list[str] = []

    def count(_conn: Any, _cursor: Any, statement: str, *_args: Any) -> None:
        statements.append(statement)

    engine = ctx.database.engine.sync_engine
    sa.event.listen(engine, "before_cursor_execute", count)
    try:
        yield statements
    finally:
        sa.event.remove(engine, "before_cursor_execute", count)


async def test_customer_taxes_picks_own_rates_or_the_defaults_for_the_country(
    client: httpx.AsyncClient, ctx: AppContext, tenant: TenantHandle
) -> None:
    de = await rate_id(client, tenant, percentage="19", country="DE")
    fr = await rate_id(client, tenant, percentage="20", country="FR")
    everywhere = await rate_id(client, tenant, percentage="2.5", country=None)
    special = await rate_id(client, tenant, percentage="7", country="FR")
    await client.patch(
        "/v1/tenant", headers=tenant.headers(), json={"default_tax_rates": [everywhere, de, fr]}
    )
    made = {
        "de": {"address": {"country": "DE"}},
        "fr-reverse": {
            "address": {"country": "FR"},
            "tax_exempt": "reverse",
            "tax_ids": [{"type": "eu_vat", "value": "FR40303265045"}],
        },
        "nowhere": {},
        "own": {"address": {"country": "DE"}, "tax_rates": [special, everywhere]},
        "untaxed": {"address": {"country": "DE"}, "tax_rates": []},
    }
    ids = {
        ref: (await create(client, tenant, external_id=ref, **fields)).json()["id"]
        for ref, fields in made.items()
    }
    # Deactivated while attached: keeps applying (as Stripe).
    await client.patch(f"/v1/tax-rates/{de}", headers=tenant.headers(), json={"active": False})

    async with ctx.database.read() as session:
        taxes = await customer_taxes(session, tenant.id, [*ids.values(), "cus_unknown"])

    def rates(ref: str) -> list[tuple[str, Decimal, bool]]:
        return [(r.id, r.percentage, r.inclusive) for r in taxes[ids[ref]].rates]

    assert set(taxes) == set(ids.values())
    assert rates("de") == [(everywhere, Decimal("2.5"), False), (de, Decimal(19), False)]
    assert rates("fr-reverse") == [(everywhere, Decimal("2.5"), False), (fr, Decimal(20), False)]
    assert rates("nowhere") == [(everywhere, Decimal("2.5"), False)]
    assert rates("own") == [(special, Decimal(7), False), (everywhere, Decimal("2.5"), False)]
    assert rates("untaxed") == []
    reverse = taxes[ids["fr-reverse"]]
    assert reverse.exempt == "reverse" and reverse.address is not None and reverse.address["country"] == "FR"
    assert reverse.tax_ids == [{"type": "eu_vat", "value": "FR40303265045", "country": "FR"}]
    assert all(isinstance(r, TaxRate) for t in taxes.values() for r in t.rates)


async def test_customer_taxes_of_many_customers_takes_a_few_queries(
    client: httpx.AsyncClient, ctx: AppContext, tenant: TenantHandle
) -> None:
    vat = await rate_id(client, tenant)
    await client.patch("/v1/tenant", headers=tenant.headers(), json={"default_tax_rates": [vat]})
    for n in range(30):
        await create(client, tenant, external_id=f"c{n}", address={"country": "DE"})
    async with ctx.database.read() as session:
        ids = list((await session.scalars(sa.text("SELECT id FROM customers"))).all())

        with counting_queries(ctx) as statements:
            taxes = await customer_taxes(session, tenant.id, ids)

    assert len(taxes) == 30 and all([r.id for r in t.rates] == [vat] for t in taxes.values())
    assert len(statements) <= 3, statements


async def test_another_tenants_customers_get_nothing(
    client: httpx.AsyncClient,
    ctx: AppContext,
    tenant: TenantHandle,
    make_tenant: Callable[..., Awaitable[TenantHandle]],
) -> None:
    other = await make_tenant(name="Other")
    theirs = (await create(client, other, tax_rates=[await rate_id(client, other)])).json()["id"]

    async with ctx.database.read() as session:
        assert await customer_taxes(session, tenant.id, [theirs]) == {}
