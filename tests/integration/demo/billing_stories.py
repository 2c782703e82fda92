"""What the demo's credit, coupon, tax and credit-note stories must show through the API, whatever
the roster size: a customer whose launch credit pays its invoices, one with 20% off for three
months, a German business under reverse charge, and one with a credit note on last month's
invoice. Amounts are recomputed here in Decimal from the invoices' own lines."""

from __future__ import annotations

import calendar
from datetime import UTC, datetime, timedelta
from decimal import ROUND_HALF_UP, Decimal
from typing import Any
from zoneinfo import ZoneInfo

import httpx

from billing.demo import roster
from billing.demo.roster import Persona
from tests.integration.demo.lifecycle import FINAL, Api, at, month_bounds

CYCLE = "subscription_cycle"


def round_half_up(value: Decimal) -> int:
    return int(value.quantize(Decimal(1), rounding=ROUND_HALF_UP))


def three_months_after(instant: datetime, timezone: str) -> datetime:
    """The same local time three calendar months later (the month's last day if it is shorter)."""
    local = instant.astimezone(ZoneInfo(timezone))
    month = local.year * 12 + local.month - 1 + 3
    year, month = divmod(month, 12)
    day = min(local.day, calendar.monthrange(year, month + 1)[1])
    return local.replace(year=year, month=month + 1, day=day).astimezone(UTC)


async def assert_billing_stories(
    client: httpx.AsyncClient, info: dict[str, Any], *, customers: int, now: datetime
) -> None:
    api = Api(client, info)
    cast = {p.story: p for p in roster.cast(customers, now=now) if p.story}
    await _promotional_credit(api, cast[roster.PROMO_CREDITS], now)
    await _coupon(api, cast[roster.COUPON])
    await _reverse_charge(api, cast[roster.REVERSE_CHARGE])
    await _credit_note(api, cast[roster.CREDIT_NOTE], now)


async def _promotional_credit(api: Api, persona: Persona, now: datetime) -> None:
    [grant] = (await api.get("/v1/credit-grants", customer=persona.external_id))["data"]
    assert (grant["category"], grant["status"], grant["name"]) == ("promotional", "active", "Launch credit")
    assert at(grant["expires_at"]) > now

    finalized = [i for i in await api.invoices(persona) if i["status"] in FINAL]
    assert len(finalized) >= 2
    for invoice in finalized:  # the credit pays each in full: no charge
        assert invoice["status"] == "paid" and invoice["total"] > 0, invoice["id"]
        assert invoice["credits_applied"] == invoice["total"], invoice["id"]
        assert (invoice["amount_due"], invoice["amount_paid"]) == (0, 0), invoice["id"]
        payments = await api.get("/v1/payments", invoice=invoice["id"])
        assert payments["data"] == [], invoice["id"]

    ledger = (await api.get(f"/v1/customers/{persona.external_id}/credit-ledger"))["data"]
    oldest_first = list(reversed(ledger))
    granted, *applied = oldest_first
    assert (granted["type"], granted["amount"], granted["invoice"]) == ("granted", grant["amount"], None)
    assert [(e["type"], e["invoice"], e["amount"]) for e in applied] == [
        ("applied", i["id"], -i["credits_applied"])
        for i in sorted(finalized, key=lambda i: i["period_start"])
    ]
    running = 0
    for entry in oldest_first:
        running += entry["amount"]
        assert entry["balance_after"] == running, entry["id"]
    assert running == grant["available"] == grant["amount"] - sum(i["credits_applied"] for i in finalized)
    balance = await api.get(f"/v1/customers/{persona.external_id}/credit-balance")
    [usd] = balance["balances"]
    assert usd["available"] == running > 0


async def _coupon(api: Api, persona: Persona) -> None:
    [discount] = (await api.get(f"/v1/customers/{persona.external_id}/discounts"))["data"]
    coupon = discount["coupon"]
    assert (coupon["code"], coupon["percent_off"], coupon["duration"]) == ("LAUNCH20", "20", "repeating")
    assert coupon["duration_in_periods"] == 3
    start, end = at(discount["start"]), at(discount["end"])
    assert end == three_months_after(start, persona.timezone)

    invoices = sorted(
        (i for i in await api.invoices(persona) if i["billing_reason"] == CYCLE),
        key=lambda i: i["period_start"],
    )
    covered = [i for i in invoices if at(i["period_start"]) < end]
    assert len(covered) >= 2 and covered == invoices[: len(covered)]
    for invoice in covered:
        [line] = [line for line in invoice["lines"] if line["kind"] == "discount"]
        eligible = sum(line["amount"] for line in invoice["lines"] if line["kind"] != "discount")
        expected = min(round_half_up(Decimal(eligible) * Decimal(20) / Decimal(100)), eligible)
        assert expected > 0 and line["amount"] == -expected, invoice["id"]
        assert (line["discount"], invoice["discount_total"]) == (discount["id"], expected), invoice["id"]
        spread = sum(share["amount"] for other in invoice["lines"] for share in other["discount_amounts"])
        assert spread == expected, invoice["id"]
        assert invoice["total"] == invoice["subtotal"] - expected, invoice["id"]
    for invoice in invoices[len(covered) :]:  # a period that starts after the three months
        assert invoice["discount_total"] == 0, invoice["id"]
        assert all(line["kind"] != "discount" for line in invoice["lines"]), invoice["id"]


async def _reverse_charge(api: Api, persona: Persona) -> None:
    customer = await api.get(f"/v1/customers/{persona.external_id}")
    assert customer["tax_exempt"] == "reverse" and customer["address"]["country"] == "DE"
    assert [(t["type"], t["value"]) for t in customer["tax_ids"]] == [("eu_vat", "DE136695976")]
    # The tenant's default VAT would apply to a German customer but for the reverse charge.
    tenant = await api.get("/v1/tenant")
    rates = {rate["id"]: rate for rate in (await api.get("/v1/tax-rates"))["data"]}
    assert any(
        rates[rate]["country"] == "DE" and Decimal(rates[rate]["percentage"]) > 0
        for rate in tenant["default_tax_rates"]
    )

    invoices = await api.invoices(persona)
    assert sum(1 for i in invoices if i["status"] in FINAL) >= 2
    for invoice in invoices:
        assert invoice["legal_notes"] == ["Reverse charge"] and invoice["tax_exempt"] == "reverse", invoice[
            "id"
        ]
        assert invoice["tax_total"] == 0 and invoice["total_tax_amounts"] == [], invoice["id"]
        assert all(line["tax_amounts"] == [] for line in invoice["lines"]), invoice["id"]
        assert invoice["total"] == invoice["subtotal"] - invoice["discount_total"] > 0, invoice["id"]
        assert [t["value"] for t in invoice["customer_tax_ids"]] == ["DE136695976"], invoice["id"]


async def _credit_note(api: Api, persona: Persona, now: datetime) -> None:
    [note] = (await api.get("/v1/credit-notes", customer=persona.external_id))["data"]
    assert (note["reason"], note["refund"], note["status"]) == (
        "product_unsatisfactory",
        "credit_balance",
        "issued",
    )
    invoice = await api.get(f"/v1/invoices/{note['invoice']}")
    # "Last month" is the last one that ended two days or more before now.
    settled, _ = month_bounds(now - timedelta(days=2), persona.timezone)
    last_month = month_bounds(settled - timedelta(days=1), persona.timezone)
    assert (at(invoice["period_start"]), at(invoice["period_end"])) == last_month
    assert (invoice["status"], invoice["billing_reason"], invoice["credit_notes"]) == (
        "paid",
        CYCLE,
        [note["id"]],
    )

    # A whole-invoice amount: its tax share is the invoice's, rounded once.
    total = note["total"]
    tax = round_half_up(Decimal(total) * Decimal(invoice["tax_total"]) / Decimal(invoice["total"]))
    assert 0 < total < invoice["total"] and note["tax_total"] == tax
    assert note["subtotal"] == sum(line["amount"] for line in note["lines"]) == total - tax
    assert (note["post_payment_amount"], note["pre_payment_amount"]) == (total, 0)
    assert invoice["post_payment_credit_notes_amount"] == total and invoice["amount_paid"] == invoice["total"]

    grant = await api.get(f"/v1/credit-grants/{note['credit_grant']}")
    assert (grant["category"], grant["amount"], grant["name"]) == (
        "promotional",
        total,
        f"Credit note {note['number']}",
    )
    ledger = (await api.get(f"/v1/customers/{persona.external_id}/credit-ledger"))["data"]
    assert [(e["type"], e["credit_note"]) for e in ledger if e["credit_grant"] == grant["id"]][-1] == (
        "granted",
        note["id"],
    )
    # The credit waits for the next invoice; the preview already uses it.
    upcoming = await api.get(f"/v1/customers/{persona.external_id}/upcoming-invoice")
    assert upcoming["credits_applied"] == min(grant["available"], upcoming["total"]) > 0
