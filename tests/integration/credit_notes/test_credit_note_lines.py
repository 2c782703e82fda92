"""Credit notes by invoice line and on taxed invoices, through the API, against a Decimal oracle
of API.md's "Taxes" and "Credit notes" rules."""

from __future__ import annotations

from decimal import ROUND_HALF_UP, Decimal
from typing import Any

import httpx

from tests.conftest import TenantHandle
from tests.integration.credit_notes.test_credit_notes import issue, notes, open_invoice
from tests.integration.invoicing.test_invoice_lifecycle import call, get_invoice
from tests.integration.web.test_auth import assert_problem

VAT = ("VAT", Decimal(19))
REDUCED = ("Reduced", Decimal(7))


def half_up(value: Decimal) -> int:
    return int(value.quantize(Decimal(1), rounding=ROUND_HALF_UP))


async def taxed_invoice(
    client: httpx.AsyncClient,
    tenant: TenantHandle,
    taxes: list[tuple[str, Decimal]],
    *amounts: int,
    inclusive: bool = False,
    external_id: str = "c1",
) -> tuple[dict[str, Any], dict[str, str]]:
    """A finalized invoice of one item per amount for a new customer taxed at ``taxes``, and the
    tax rate id of each rate's name."""
    ids = {}
    for name, percentage in taxes:
        body = {"display_name": name, "percentage": str(percentage), "inclusive": inclusive}
        ids[name] = (await call(client, tenant, "/v1/tax-rates", body, status=201))["id"]
    customer = {"external_id": external_id, "timezone": "UTC", "tax_rates": list(ids.values())}
    await call(client, tenant, "/v1/customers", customer, status=201)
    items = [{"description": f"Item {n}", "amount": amount} for n, amount in enumerate(amounts, 1)]
    draft = await call(client, tenant, "/v1/invoices", {"customer": external_id, "items": items}, status=201)
    return dict(await call(client, tenant, f"/v1/invoices/{draft['id']}/finalize")), ids


def line_taxes(net: int, taxes: list[tuple[str, Decimal]], *, inclusive: bool) -> dict[str, int]:
    """API.md "Taxes": per rate on the line's net, exclusive or inclusive."""
    whole = sum(p for _, p in taxes)
    return {
        rate: half_up(Decimal(net) * p / (100 + whole) if inclusive else Decimal(net) * p / 100)
        for rate, p in taxes
    }


def reversed_taxes(line_tax: dict[str, int], amount: int, net: int) -> dict[str, int]:
    return {rate: half_up(Decimal(tax) * amount / net) for rate, tax in line_tax.items()}


def taxes_of(entries: list[dict[str, Any]], ids: dict[str, str]) -> dict[str, int]:
    """Tax amounts by rate name."""
    names = {rate_id: name for name, rate_id in ids.items()}
    return {names[entry["tax_rate"]]: entry["amount"] for entry in entries}


async def test_a_line_credit_with_exclusive_tax_reverses_each_rate_and_lowers_what_is_due(
    client: httpx.AsyncClient, tenant: TenantHandle
) -> None:
    invoice, ids = await taxed_invoice(client, tenant, [VAT, REDUCED], 3333, 1000)
    first, second = invoice["lines"]
    expected_first = line_taxes(3333, [VAT, REDUCED], inclusive=False)
    assert taxes_of(first["tax_amounts"], ids) == expected_first == {"VAT": 633, "Reduced": 233}
    expected_total = (
        4333 + sum(expected_first.values()) + sum(line_taxes(1000, [VAT, REDUCED], inclusive=False).values())
    )
    assert invoice["total"] == invoice["amount_due"] == expected_total

    note = await issue(client, tenant, invoice["id"], lines=[{"invoice_line": first["id"], "amount": 1111}])
    reversed_ = reversed_taxes(expected_first, 1111, 3333)
    assert reversed_ == {"VAT": 211, "Reduced": 78}
    (line,) = note["lines"]
    assert (line["invoice_line"], line["description"], line["amount"]) == (first["id"], "Item 1", 1111)
    assert taxes_of(line["tax_amounts"], ids) == reversed_
    assert (note["subtotal"], note["tax_total"], note["total"]) == (1111, 289, 1111 + 289)
    lowered = await get_invoice(client, tenant, invoice["id"])
    assert lowered["pre_payment_credit_notes_amount"] == 1400
    assert lowered["amount_due"] == expected_total - 1400

    # What is left of the first line's net, and not one minor unit more.
    too_much = await client.post(
        f"/v1/invoices/{invoice['id']}/credit-notes",
        headers=tenant.headers(),
        json={"lines": [{"invoice_line": first["id"], "amount": 2223}], "reason": "other", "refund": "none"},
    )
    assert_problem(too_much, 422, "credit_note_exceeds_line")
    both = await issue(
        client,
        tenant,
        invoice["id"],
        lines=[{"invoice_line": first["id"], "amount": 2222}, {"invoice_line": second["id"], "amount": 1000}],
    )
    rest = reversed_taxes(expected_first, 2222, 3333)
    whole_second = line_taxes(1000, [VAT, REDUCED], inclusive=False)
    assert [taxes_of(x["tax_amounts"], ids) for x in both["lines"]] == [rest, whole_second]
    assert both["total"] == 3222 + sum(rest.values()) + sum(whole_second.values())
    settled = await get_invoice(client, tenant, invoice["id"])
    # Reversals rounded per note may leave a minor unit of tax on the invoice.
    left = expected_total - 1400 - both["total"]
    assert (settled["amount_due"], settled["status"]) == (left, "open" if left else "paid")


async def test_a_line_credit_with_inclusive_tax_keeps_the_tax_inside_the_amount(
    client: httpx.AsyncClient, tenant: TenantHandle
) -> None:
    invoice, ids = await taxed_invoice(client, tenant, [VAT], 1190, inclusive=True)
    (first,) = invoice["lines"]
    line_tax = line_taxes(1190, [VAT], inclusive=True)
    assert taxes_of(first["tax_amounts"], ids) == line_tax == {"VAT": 190}
    assert invoice["total"] == 1190
    note = await issue(client, tenant, invoice["id"], lines=[{"invoice_line": first["id"], "amount": 595}])
    assert (
        taxes_of(note["lines"][0]["tax_amounts"], ids) == reversed_taxes(line_tax, 595, 1190) == {"VAT": 95}
    )
    assert (note["subtotal"], note["tax_total"], note["total"]) == (595, 95, 595)
    assert (await get_invoice(client, tenant, invoice["id"]))["amount_due"] == 595


async def test_a_whole_invoice_amount_splits_its_tax_per_rate_as_the_invoice_does(
    client: httpx.AsyncClient, tenant: TenantHandle
) -> None:
    invoice, ids = await taxed_invoice(client, tenant, [VAT, REDUCED], 3333, 1000)
    by_rate = {
        rate: sum(taxes_of(x["tax_amounts"], ids)[rate] for x in invoice["lines"])
        for rate, _ in (VAT, REDUCED)
    }
    assert taxes_of(invoice["total_tax_amounts"], ids) == by_rate
    note = await issue(client, tenant, invoice["id"], amount=2500)
    expected = {rate: half_up(Decimal(2500) * tax / invoice["total"]) for rate, tax in by_rate.items()}
    (line,) = note["lines"]
    assert line["invoice_line"] is None and taxes_of(line["tax_amounts"], ids) == expected
    assert (note["total"], note["tax_total"], note["subtotal"]) == (
        2500,
        sum(expected.values()),
        2500 - sum(expected.values()),
    )
    # Whole-invoice notes count against the invoice total, not against any line.
    rest = invoice["total"] - 2500
    assert (await issue(client, tenant, invoice["id"], amount=rest))["total"] == rest
    assert (await get_invoice(client, tenant, invoice["id"]))["status"] == "paid"


async def test_lines_of_other_invoices_and_tenants_and_twice_named_lines_are_refused(
    client: httpx.AsyncClient, tenant: TenantHandle, make_tenant: Any
) -> None:
    other = await make_tenant("Globex")
    invoice = await open_invoice(client, tenant, 1000, 500, external_id="c1")
    sibling = await open_invoice(client, tenant, 1000, external_id="c2")
    foreign = await open_invoice(client, other, 1000, external_id="c1")
    path = f"/v1/invoices/{invoice['id']}/credit-notes"
    ok = {"reason": "other", "refund": "none"}

    def credit(*line_ids: str) -> dict[str, Any]:
        return {**ok, "lines": [{"invoice_line": line_id, "amount": 100} for line_id in line_ids]}

    mine = invoice["lines"][0]["id"]
    response = await client.post(path, headers=tenant.headers(), json=credit(mine, sibling["lines"][0]["id"]))
    body = assert_problem(response, 422, "invoice_line_not_on_invoice")
    assert [e["field"] for e in body["errors"]] == ["lines[1].invoice_line"]
    foreign_line = foreign["lines"][0]["id"]
    assert_problem(
        await client.post(path, headers=tenant.headers(), json=credit(mine, foreign_line)), 404, "not_found"
    )
    assert_problem(
        await client.post(path, headers=tenant.headers(), json=credit(mine, mine)), 422, "validation_error"
    )
    assert await notes(client, tenant) == []
    assert (await get_invoice(client, tenant, invoice["id"]))["amount_due"] == 1500
    # Earlier notes on a line count against it, whichever note took them.
    await issue(client, tenant, invoice["id"], lines=[{"invoice_line": mine, "amount": 900}])
    response = await client.post(
        path, headers=tenant.headers(), json={**ok, "lines": [{"invoice_line": mine, "amount": 101}]}
    )
    assert_problem(response, 422, "credit_note_exceeds_line")
    await issue(client, tenant, invoice["id"], lines=[{"invoice_line": mine, "amount": 100}])
    assert (await get_invoice(client, tenant, invoice["id"]))["amount_due"] == 500
