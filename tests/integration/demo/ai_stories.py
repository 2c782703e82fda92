"""What the demo's AI Platform must show through the API, whatever the roster size: tokens priced
per model and direction (lines per price, one per model under the grouped price), a percentage
fee on payments, threshold invoices charged at once and netted on the period-end invoice, and a
spend alert that fired and emailed. Amounts are recomputed here in Decimal from the plan's prices.

Percentage fees are not checked beyond their line and its quantity: their amounts are someone
else's work in progress."""

from __future__ import annotations

from collections import defaultdict
from datetime import datetime
from decimal import ROUND_HALF_UP, Decimal
from typing import Any

import httpx

from billing.demo import roster
from billing.demo.roster import Persona
from tests.integration.demo.lifecycle import Api

CYCLE, THRESHOLD = "subscription_cycle", "threshold"
CENTS = Decimal(100)


def cents(value: Decimal) -> int:
    return int(value.quantize(Decimal(1), rounding=ROUND_HALF_UP))


async def assert_ai_stories(
    client: httpx.AsyncClient, info: dict[str, Any], *, customers: int, now: datetime
) -> None:
    api = Api(client, info)
    plan = await _ai_plan(api)
    cast = {p.story: p for p in roster.cast(customers, now=now) if p.story}
    await _threshold(api, plan, cast[roster.THRESHOLD])
    await _spend_alert(api, cast[roster.SPEND_ALERT])


async def _ai_plan(api: Api) -> dict[str, Any]:
    meters = {m["key"]: m for m in (await api.get("/v1/meters"))["data"]}
    assert (meters["ai_tokens"]["aggregation"], meters["ai_tokens"]["group_by"]) == (
        "sum",
        ["model", "direction"],
    )
    assert (meters["payment_volume"]["aggregation"], meters["payment_volume"]["unit"]) == ("sum", "USD")
    [plan] = [p for p in (await api.get("/v1/plans"))["data"] if p["code"] == "ai"]
    assert plan["threshold_amount"] == 50_000
    tokens = [p for p in plan["prices"] if p["meter"] == "ai_tokens"]
    assert any(len(p["filters"]) == 2 for p in tokens)  # the most filter keys win
    assert any(p["filters"] == {} and p["group_by"] == ["model"] for p in tokens)
    [fee] = [p for p in plan["prices"] if p["meter"] == "payment_volume"]
    assert (fee["model"], fee["rate"], fee["fixed_amount_per_event"]) == ("percentage", "2.9", 30)
    assert fee["maximum_per_event"] is not None
    return dict(plan)


async def _threshold(api: Api, plan: dict[str, Any], persona: Persona) -> None:
    invoices = await api.invoices(persona)
    by_period: dict[str, list[dict[str, Any]]] = defaultdict(list)
    for invoice in sorted(invoices, key=lambda i: i["period_end"]):
        if invoice["billing_reason"] == THRESHOLD:
            by_period[invoice["period_start"]].append(invoice)
    assert by_period, "no threshold invoice"
    netted = 0
    for period_start, made in by_period.items():
        billed = 0
        for invoice in made:
            _assert_threshold_invoice(plan, invoice, billed)
            payments = (await api.get("/v1/payments", invoice=invoice["id"]))["data"]
            assert [p["status"] for p in payments] == ["succeeded"], invoice["id"]
            billed += invoice["subtotal"]
        closing = [i for i in invoices if i["billing_reason"] == CYCLE and i["period_start"] == period_start]
        if closing:  # the period has ended: its invoice lists it whole, less the threshold invoices
            [line] = [line for line in closing[0]["lines"] if line["kind"] == "already_billed"]
            assert line["amount"] == -billed, closing[0]["id"]
            _assert_token_lines(plan, closing[0])
            netted += 1
    assert netted >= 1, "no period-end invoice after a threshold invoice"


def _assert_threshold_invoice(plan: dict[str, Any], invoice: dict[str, Any], billed_before: int) -> None:
    assert (invoice["status"], invoice["billing_reason"]) == ("paid", THRESHOLD), invoice["id"]
    assert invoice["number"] and invoice["amount_paid"] == invoice["total"] > 0, invoice["id"]
    usage = [line for line in invoice["lines"] if line["kind"] == "usage"]
    [already] = [line for line in invoice["lines"] if line["kind"] == "already_billed"]
    assert {line["kind"] for line in invoice["lines"]} == {"usage", "already_billed"}, invoice["id"]
    assert already["amount"] == -billed_before, invoice["id"]
    accrued = sum(line["amount"] for line in usage)
    assert accrued >= invoice["threshold_multiple"] * plan["threshold_amount"], invoice["id"]
    assert invoice["subtotal"] == accrued - billed_before, invoice["id"]
    _assert_token_lines(plan, invoice)


def _assert_token_lines(plan: dict[str, Any], invoice: dict[str, Any]) -> None:
    """Each token line at its price's unit amount; the unfiltered price's lines one per open model;
    the payments line there with its volume."""
    prices = plan["prices"]
    tokens = [line for line in invoice["lines"] if line["meter"] == "ai_tokens" and line["kind"] == "usage"]
    for line in tokens:
        unit = Decimal(prices[line["price"]]["unit_amount"])
        assert line["amount"] == cents(Decimal(line["quantity"]) * unit * CENTS), (invoice["id"], line)
    grouped = [line for line in tokens if prices[line["price"]]["group_by"]]
    assert sorted(line["group"]["model"] for line in grouped) == ["llama-3.1-70b", "mistral-large"]
    assert all(list(line["group"]) == ["model"] for line in grouped)
    filtered = {line["price"] for line in tokens if line["group"] is None}
    assert {len(prices[n]["filters"]) for n in filtered} == {1, 2}, invoice["id"]
    [payments] = [line for line in invoice["lines"] if line["meter"] == "payment_volume"]
    assert prices[payments["price"]]["model"] == "percentage" and Decimal(payments["quantity"]) > 0


async def _spend_alert(api: Api, persona: Persona) -> None:
    customer = await api.get(f"/v1/customers/{persona.external_id}")
    [alert] = (await api.get("/v1/alerts", customer=persona.external_id))["data"]
    assert (alert["type"], alert["status"], alert["email"]) == ("spend_amount", "active", True)
    assert alert["thresholds"] == roster.SPEND_ALERT_SETUP.thresholds
    triggers = (await api.get(f"/v1/alerts/{alert['id']}/triggers"))["data"]
    assert len(triggers) >= 2
    invoices = await api.invoices(persona)
    for trigger in triggers:
        assert trigger["customer"] == customer["id"] and trigger["value"] >= trigger["threshold"]
        # The spend watched is the period's usage so far: its invoice bills at least that much.
        [closing] = [
            i
            for i in invoices
            if i["billing_reason"] == CYCLE and i["period_start"] == trigger["period_start"]
        ] or [await api.get(f"/v1/customers/{persona.external_id}/upcoming-invoice")]
        usage = sum(line["amount"] for line in closing["lines"] if line["kind"] == "usage")
        assert usage >= trigger["value"], trigger["id"]
    emails = [
        email
        for email in (await api.get("/v1/notifications", customer=customer["id"]))["data"]
        if email["kind"] == "usage_alert"
    ]
    assert len(emails) == len(triggers) and {email["status"] for email in emails} == {"sent"}
