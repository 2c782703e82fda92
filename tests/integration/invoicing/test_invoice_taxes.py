"""Tax on invoices, black-box: rates on the customer or the tenant's defaults for its country,
exclusive and inclusive, several rates, reverse charge and exemption, in USD, JPY and KWD.

Every expected amount comes from the small Decimal oracle below (each line rounded once, tax
once per line and rate, ROUND_HALF_UP), never from billing/.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from decimal import ROUND_HALF_UP, Decimal, localcontext
from typing import Any

import httpx
import pytest

from tests.conftest import TenantHandle

MakeTenant = Callable[..., Awaitable[TenantHandle]]
EXPONENTS = {"USD": 2, "JPY": 0, "KWD": 3}
BASE_FEE = 12345  # minor units
UNIT_AMOUNT = "0.0173"  # major units per call
CALLS = ["1234.5", "617.25"]  # two events in October


# --- oracle ---------------------------------------------------------------------------------------


@dataclass(frozen=True)
class Rate:
    id: str
    percentage: Decimal
    inclusive: bool


def half_up(value: Decimal) -> int:
    return int(value.quantize(Decimal(1), rounding=ROUND_HALF_UP))


def line_amounts(exp: int) -> list[int]:
    """The base fee (a whole month) and the usage line, each rounded once."""
    quantity = sum(Decimal(calls) for calls in CALLS)
    return [BASE_FEE, half_up(quantity * Decimal(UNIT_AMOUNT) * Decimal(10) ** exp)]


def line_taxes(net: int, rates: list[Rate]) -> list[int]:
    """Per rate: exclusive n*p/100; inclusive n*p/(100 + sum of the line's rates)."""
    with localcontext() as context:
        context.prec = 50
        together = 100 + sum(r.percentage for r in rates)
        return [half_up(Decimal(net) * r.percentage / (together if r.inclusive else 100)) for r in rates]


def expected(exp: int, rates: list[Rate]) -> dict[str, Any]:
    lines = line_amounts(exp)
    taxes = [line_taxes(net, rates) for net in lines]
    inclusive = sum(t for per_line in taxes for t, r in zip(per_line, rates, strict=True) if r.inclusive)
    exclusive = sum(t for per_line in taxes for t, r in zip(per_line, rates, strict=True) if not r.inclusive)
    subtotal = sum(lines)
    return {
        "lines": lines,
        "line_taxes": taxes,
        "subtotal": subtotal,
        "discount_total": 0,
        "tax_total": inclusive + exclusive,
        "total_excluding_tax": subtotal - inclusive,
        "total": subtotal + exclusive,
        "amount_due": subtotal + exclusive,
        "total_tax_amounts": [
            {"tax_rate": r.id, "amount": sum(per_line[i] for per_line in taxes), "inclusive": r.inclusive}
            for i, r in enumerate(rates)
        ],
    }


# --- API helpers ----------------------------------------------------------------------------------


async def post(client: httpx.AsyncClient, tenant: TenantHandle, path: str, body: object, status: int) -> Any:
    response = await client.post(path, headers=tenant.headers(), json=body)
    assert response.status_code == status, response.text
    return response.json()


async def rate(client: httpx.AsyncClient, tenant: TenantHandle, percentage: str, **fields: Any) -> Rate:
    body = {"display_name": f"Tax {percentage}", "percentage": percentage, "inclusive": False, **fields}
    created = await post(client, tenant, "/v1/tax-rates", body, 201)
    return Rate(created["id"], Decimal(percentage), created["inclusive"])


async def invoice_of(client: httpx.AsyncClient, tenant: TenantHandle, customer: str) -> dict[str, Any]:
    params = {"customer": customer, "limit": 100}
    response = await client.get("/v1/invoices", headers=tenant.headers(), params=params)
    assert response.status_code == 200, response.text
    (invoice,) = response.json()["data"]
    return dict(invoice)


def assert_amounts(invoice: dict[str, Any], want: dict[str, Any], rates: list[Rate]) -> None:
    lines = [line for line in invoice["lines"] if line["kind"] in ("base_fee", "usage")]
    assert [line["kind"] for line in lines] == ["base_fee", "usage"], invoice["lines"]
    assert [line["amount"] for line in lines] == want["lines"]
    for line, taxes in zip(lines, want["line_taxes"], strict=True):
        assert line["tax_amounts"] == [
            {"tax_rate": r.id, "amount": t, "taxable_amount": line["amount"], "inclusive": r.inclusive}
            for r, t in zip(rates, taxes, strict=True)
        ]
    fields = ("subtotal", "discount_total", "tax_total", "total_excluding_tax", "total", "amount_due")
    assert {k: invoice[k] for k in fields} == {k: want[k] for k in fields}
    assert invoice["total_tax_amounts"] == want["total_tax_amounts"]


# --- the scenario ---------------------------------------------------------------------------------


@pytest.mark.parametrize("currency", ["USD", "JPY", "KWD"])
async def test_each_customer_is_taxed_by_its_rates_and_status(
    client: httpx.AsyncClient, make_tenant: MakeTenant, currency: str
) -> None:
    exp = EXPONENTS[currency]
    tenant = await make_tenant(name=f"Tax {currency}", currency=currency)
    de_vat = await rate(client, tenant, "19", country="DE")
    fr_vat = await rate(client, tenant, "20", country="FR")
    gross = await rate(client, tenant, "20", inclusive=True)
    state = await rate(client, tenant, "8.875")
    city = await rate(client, tenant, "2.5")
    patch = {"default_tax_rates": [de_vat.id, fr_vat.id]}
    assert (await client.patch("/v1/tenant", headers=tenant.headers(), json=patch)).status_code == 200
    await post(client, tenant, "/v1/meters", {"key": "calls", "aggregation": "sum"}, 201)
    prices = [{"meter": "calls", "model": "per_unit", "unit_amount": UNIT_AMOUNT}]
    await post(client, tenant, "/v1/plans", {"code": "pro", "base_fee": BASE_FEE, "prices": prices}, 201)
    de_id = [{"type": "eu_vat", "value": "DE136695976"}]
    customers: dict[str, tuple[dict[str, Any], list[Rate]]] = {
        "de": ({"address": {"country": "DE"}}, [de_vat]),
        "fr": ({"address": {"country": "FR", "city": "Paris"}}, [fr_vat]),
        "nowhere": ({"address": {"country": "US"}}, []),
        "gross": ({"address": {"country": "DE"}, "tax_rates": [gross.id]}, [gross]),
        "two": ({"tax_rates": [state.id, city.id]}, [state, city]),
        "reverse": ({"address": {"country": "DE"}, "tax_exempt": "reverse", "tax_ids": de_id}, []),
        "exempt": ({"address": {"country": "DE"}, "tax_exempt": "exempt"}, []),
        "untaxed": ({"address": {"country": "DE"}, "tax_rates": []}, []),
    }
    events = []
    for ref, (fields, _) in customers.items():
        await post(client, tenant, "/v1/customers", {"external_id": ref, **fields}, 201)
        body = {"customer": ref, "plan": "pro", "starts_at": "2026-10-01T00:00:00Z"}
        await post(client, tenant, "/v1/subscriptions", body, 201)
        events += [
            {
                "id": f"{ref}-{n}",
                "customer": ref,
                "meter": "calls",
                "timestamp": f"2026-10-1{n}T00:00:00Z",
                "value": v,
            }
            for n, v in enumerate(CALLS)
        ]
    await post(client, tenant, "/v1/events/batch", {"events": events}, 200)
    await post(client, tenant, "/v1/billing/run", {"at": "2026-11-01T00:00:00Z"}, 200)

    for ref, (_, rates) in customers.items():
        draft = await invoice_of(client, tenant, ref)
        assert draft["status"] == "draft"
        assert_amounts(draft, expected(exp, rates), rates)
        finalized = await post(client, tenant, f"/v1/invoices/{draft['id']}/finalize", None, 200)
        assert_amounts(finalized, expected(exp, rates), rates)
        customer = (await client.get(f"/v1/customers/{ref}", headers=tenant.headers())).json()
        assert finalized["customer_address"] == customer["address"]
        assert finalized["customer_tax_ids"] == customer["tax_ids"]
        assert finalized["tax_exempt"] == customer["tax_exempt"]
        assert finalized["legal_notes"] == (["Reverse charge"] if ref == "reverse" else [])

    reverse = await invoice_of(client, tenant, "reverse")
    assert reverse["customer_tax_ids"] == [{"type": "eu_vat", "value": "DE136695976", "country": "DE"}]
    assert reverse["tax_total"] == 0 and reverse["tax_exempt"] == "reverse"


async def test_an_inclusive_rate_keeps_the_tax_inside_the_line(
    client: httpx.AsyncClient, make_tenant: MakeTenant
) -> None:
    """One inclusive 20% rate on 12345 cents: the tax is n - n/1.2 = 2057.5 -> 2058, inside the total."""
    tenant = await make_tenant(name="Gross", currency="EUR")
    gross = await rate(client, tenant, "20", inclusive=True)
    await post(client, tenant, "/v1/plans", {"code": "flat", "base_fee": BASE_FEE}, 201)
    await post(client, tenant, "/v1/customers", {"external_id": "c", "tax_rates": [gross.id]}, 201)
    body = {"customer": "c", "plan": "flat", "starts_at": "2026-10-01T00:00:00Z"}
    await post(client, tenant, "/v1/subscriptions", body, 201)
    await post(client, tenant, "/v1/billing/run", {"at": "2026-11-01T00:00:00Z"}, 200)

    invoice = await invoice_of(client, tenant, "c")

    assert (invoice["subtotal"], invoice["tax_total"], invoice["total"]) == (12345, 2058, 12345)
    assert invoice["total_excluding_tax"] == 12345 - 2058


async def test_rates_frozen_at_finalization_do_not_follow_later_changes(
    client: httpx.AsyncClient, make_tenant: MakeTenant
) -> None:
    tenant = await make_tenant(name="Frozen", currency="USD")
    vat = await rate(client, tenant, "19")
    await post(client, tenant, "/v1/plans", {"code": "flat", "base_fee": BASE_FEE}, 201)
    customer = {"external_id": "c", "address": {"country": "DE"}, "tax_rates": [vat.id]}
    await post(client, tenant, "/v1/customers", customer, 201)
    body = {"customer": "c", "plan": "flat", "starts_at": "2026-10-01T00:00:00Z"}
    await post(client, tenant, "/v1/subscriptions", body, 201)
    await post(client, tenant, "/v1/billing/run", {"at": "2026-11-01T00:00:00Z"}, 200)
    draft = await invoice_of(client, tenant, "c")
    finalized = await post(client, tenant, f"/v1/invoices/{draft['id']}/finalize", None, 200)

    change = {"tax_rates": [], "tax_exempt": "reverse", "address": {"country": "FR"}}
    assert (await client.patch("/v1/customers/c", headers=tenant.headers(), json=change)).status_code == 200
    await client.patch(f"/v1/tax-rates/{vat.id}", headers=tenant.headers(), json={"active": False})

    again = (await client.get(f"/v1/invoices/{draft['id']}", headers=tenant.headers())).json()
    assert again == finalized
    assert again["tax_total"] == half_up(Decimal(BASE_FEE) * 19 / 100) == 2346
    assert again["customer_address"]["country"] == "DE" and again["legal_notes"] == []
