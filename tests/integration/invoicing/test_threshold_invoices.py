"""Progressive billing through the API: threshold invoices made, finalized and charged when a
period's usage passes a multiple of the plan's threshold_amount, the period-end invoice
subtracting them, tiers never restarted, a decline that never loops, a void billed again, and
runs (concurrent ones on PostgreSQL) that never bill a multiple twice.

Every expected amount comes from the Decimal oracle below, never from billing/.
"""

from __future__ import annotations

import asyncio
from datetime import UTC, datetime
from decimal import ROUND_HALF_UP, Decimal

import httpx
import pytest

from billing.core.clock import FrozenClock
from tests.conftest import TenantHandle
from tests.integration.invoicing.test_invoice_lifecycle import call, listed, run, send
from tests.integration.web.test_auth import assert_problem

NOV, DEC = "2026-11-01T00:00:00Z", "2026-12-01T00:00:00Z"
AFTER_GRACE = "2026-12-02T01:00:00Z"  # the November invoice is finalized and charged by then
BASE_FEE = 2000
# Graduated, in USD: the first 100 units at 0.10, the rest at 0.05 (plus 0.004 to make rounding bite).
TIERS = [
    {"up_to": "100", "unit_amount": "0.10", "flat_amount": 0},
    {"up_to": None, "unit_amount": "0.054", "flat_amount": 0},
]
PER_UNIT = "0.10"

# --- oracle ---------------------------------------------------------------------------------------


def half_up(x: Decimal) -> int:
    return int(x.quantize(Decimal(1), rounding=ROUND_HALF_UP))


def graduated(quantity: int) -> int:
    """The tiers above, cents, rounded once."""
    first = min(quantity, 100)
    rest = max(quantity - 100, 0)
    return half_up((Decimal(first) * Decimal("0.10") + Decimal(rest) * Decimal("0.054")) * 100)


def per_unit(quantity: int) -> int:
    return half_up(Decimal(quantity) * Decimal(PER_UNIT) * 100)


# --- helpers --------------------------------------------------------------------------------------


async def setup(
    client: httpx.AsyncClient,
    tenant: TenantHandle,
    threshold: int,
    *,
    card: str | None = "pm_card_visa",
    tiered: bool = True,
    maximum: int | None = None,
) -> None:
    await call(client, tenant, "/v1/meters", {"key": "units", "aggregation": "sum"}, status=201)
    price: dict = (
        {"meter": "units", "model": "graduated", "tiers": TIERS}
        if tiered
        else {"meter": "units", "model": "per_unit", "unit_amount": PER_UNIT}
    )
    if maximum is not None:
        price["maximum_amount"] = maximum
    plan = {
        "code": "prog",
        "name": "Prog",
        "base_fee": BASE_FEE,
        "prices": [price],
        "threshold_amount": threshold,
    }
    created = await call(client, tenant, "/v1/plans", plan, status=201)
    assert created["threshold_amount"] == threshold
    customer: dict = {"external_id": "c", "email": "c@example.com", "timezone": "UTC"}
    if card is not None:
        customer["default_payment_method"] = card
    await call(client, tenant, "/v1/customers", customer, status=201)
    await call(
        client, tenant, "/v1/subscriptions", {"customer": "c", "plan": "prog", "starts_at": NOV}, status=201
    )


_sent = 0


async def use(client: httpx.AsyncClient, tenant: TenantHandle, units: int, day: int) -> None:
    global _sent
    _sent += 1
    await send(client, tenant, (f"e{_sent}", "c", f"2026-11-{day:02d}T10:00:00Z", str(units)))


async def thresholds(client: httpx.AsyncClient, tenant: TenantHandle) -> list[dict]:
    found = [i for i in await listed(client, tenant, customer="c") if i["billing_reason"] == "threshold"]
    return sorted(found, key=lambda i: i["threshold_multiple"])


async def period_end(client: httpx.AsyncClient, tenant: TenantHandle) -> dict:
    (final,) = [i for i in await listed(client, tenant, customer="c") if i["billing_reason"] != "threshold"]
    return final


def kinds(invoice: dict) -> list[tuple[str, int]]:
    assert invoice["subtotal"] == sum(x["amount"] for x in invoice["lines"] if x["kind"] != "discount")
    return [(x["kind"], x["amount"]) for x in invoice["lines"]]


# --- the plan field -------------------------------------------------------------------------------


async def test_threshold_amount_is_stored_shown_patched_and_validated(
    client: httpx.AsyncClient, tenant: TenantHandle
) -> None:
    plain = await call(client, tenant, "/v1/plans", {"code": "plain"}, status=201)
    assert plain["threshold_amount"] is None
    for bad in (0, -5, 10**16):
        response = await client.post(
            "/v1/plans", headers=tenant.headers(), json={"code": f"bad{bad}", "threshold_amount": bad}
        )
        assert_problem(response, 422, "validation_error")
    response = await client.post(
        "/v1/plans", headers=tenant.headers(), json={"code": "x", "threshold_amount": 1.5}
    )
    assert response.status_code in (400, 422)
    assert len((await call(client, tenant, "/v1/plans", method="GET"))["data"]) == 1
    patched = await call(client, tenant, "/v1/plans/plain", {"threshold_amount": 5000}, method="PATCH")
    assert patched["threshold_amount"] == 5000
    assert (await call(client, tenant, "/v1/plans/plain", method="GET"))["threshold_amount"] == 5000
    response = await client.patch("/v1/plans/plain", headers=tenant.headers(), json={"threshold_amount": 0})
    assert_problem(response, 422, "validation_error")
    assert (await call(client, tenant, "/v1/plans/plain", method="GET"))["threshold_amount"] == 5000


# --- threshold invoices ---------------------------------------------------------------------------


async def test_crossing_once_makes_one_invoice_finalized_and_charged_at_once(
    client: httpx.AsyncClient, tenant: TenantHandle
) -> None:
    await setup(client, tenant, 1000)
    await use(client, tenant, 50, 2)
    assert (await run(client, tenant, "2026-11-02T12:00:00Z"))["threshold_invoices"] == 0
    assert await thresholds(client, tenant) == []
    await use(client, tenant, 80, 3)  # 130 units
    done = await run(client, tenant, "2026-11-03T12:00:00Z")
    assert done["threshold_invoices"] == 1
    (invoice,) = await thresholds(client, tenant)
    assert invoice["threshold_multiple"] == 1
    assert kinds(invoice) == [("usage", graduated(130)), ("already_billed", 0)]
    assert invoice["total"] == graduated(130) == 1162  # 10.00 + 30 x 0.054 = 11.62
    assert invoice["number"] is not None and invoice["status"] == "paid"
    assert invoice["finalized_at"] == invoice["due_at"] == "2026-11-03T12:00:00Z"
    assert invoice["period_start"] == NOV and invoice["period_end"] == "2026-11-03T12:00:00Z"
    assert [(p["status"], p["amount"]) for p in invoice["payments"]] == [("succeeded", 1162)]
    assert [t["status"] for t in invoice["status_transitions"]] == ["draft", "open", "paid"]
    for _ in range(2):  # the same run again, and a later one with no new usage: nothing more
        await run(client, tenant, "2026-11-03T12:00:00Z")
    await run(client, tenant, "2026-11-04T12:00:00Z")
    assert len(await thresholds(client, tenant)) == 1
    await run(client, tenant, AFTER_GRACE)
    final = await period_end(client, tenant)
    assert kinds(final) == [
        ("base_fee", BASE_FEE),
        ("usage", graduated(130)),
        ("already_billed", -graduated(130)),
    ]
    assert final["total"] == BASE_FEE


async def test_several_multiples_passed_at_once_make_one_invoice_at_the_highest(
    client: httpx.AsyncClient, tenant: TenantHandle
) -> None:
    await setup(client, tenant, 300)
    await use(client, tenant, 130, 2)  # 1162: three multiples of 300
    await run(client, tenant, "2026-11-02T12:00:00Z")
    (invoice,) = await thresholds(client, tenant)
    assert invoice["threshold_multiple"] == 3 and invoice["total"] == graduated(130)
    await use(client, tenant, 5, 3)  # 135 units: 1189, still below 4 x 300
    await run(client, tenant, "2026-11-03T12:00:00Z")
    assert len(await thresholds(client, tenant)) == 1


async def test_tiers_are_never_restarted_across_threshold_invoices_and_the_final_invoice(
    client: httpx.AsyncClient, tenant: TenantHandle
) -> None:
    await setup(client, tenant, 600)
    steps = [(70, 2), (60, 3), (100, 4), (10, 5)]  # 70, 130, 230, 240 units: 700, 1162, 1702, 1756
    for units, day in steps:
        await use(client, tenant, units, day)
        await run(client, tenant, f"2026-11-{day:02d}T12:00:00Z")
    first, second = await thresholds(client, tenant)
    assert (first["threshold_multiple"], second["threshold_multiple"]) == (1, 2)
    assert kinds(first) == [("usage", graduated(70)), ("already_billed", 0)]
    assert kinds(second) == [("usage", graduated(230)), ("already_billed", -graduated(70))]
    upcoming = await call(client, tenant, "/v1/customers/c/upcoming-invoice", method="GET")
    assert kinds(upcoming)[-1] == ("already_billed", -graduated(230))
    await run(client, tenant, AFTER_GRACE)
    final = await period_end(client, tenant)
    billed_before = first["subtotal"] + second["subtotal"]
    assert billed_before == graduated(230)
    assert kinds(final) == [
        ("base_fee", BASE_FEE),
        ("usage", graduated(240)),
        ("already_billed", -billed_before),
    ]
    everything = [first, second, final]
    assert sum(i["total"] for i in everything) == BASE_FEE + graduated(240)
    # Restarting the tiers on each invoice would have billed this instead:
    assert graduated(70) + graduated(230 - 70) + graduated(240 - 230) != graduated(240)
    assert final["status"] == "paid" and [p["status"] for p in final["payments"]] == ["succeeded"]


async def test_a_cap_holds_across_threshold_invoices_and_floors_wait_for_the_period_end(
    client: httpx.AsyncClient, tenant: TenantHandle
) -> None:
    await setup(client, tenant, 500, tiered=False, maximum=1500)
    await use(client, tenant, 60, 2)  # 600
    await run(client, tenant, "2026-11-02T12:00:00Z")
    await use(client, tenant, 200, 3)  # 2600, capped at 1500: multiple 3
    await run(client, tenant, "2026-11-03T12:00:00Z")
    first, second = await thresholds(client, tenant)
    assert kinds(second) == [
        ("usage", per_unit(260)),
        ("price_maximum", 1500 - per_unit(260)),
        ("already_billed", -per_unit(60)),
    ]
    assert second["threshold_multiple"] == 3 and second["total"] == 1500 - per_unit(60)
    await use(client, tenant, 100, 4)  # still capped: no new multiple
    await run(client, tenant, "2026-11-04T12:00:00Z")
    assert len(await thresholds(client, tenant)) == 2
    await run(client, tenant, AFTER_GRACE)
    final = await period_end(client, tenant)
    assert final["total"] == BASE_FEE and first["total"] + second["total"] == 1500


async def test_a_declined_threshold_charge_goes_to_dunning_and_never_loops(
    client: httpx.AsyncClient, tenant: TenantHandle
) -> None:
    await setup(client, tenant, 500, card="pm_card_chargeDeclined", tiered=False)
    await use(client, tenant, 60, 2)  # 600: multiple 1
    await run(client, tenant, "2026-11-02T12:00:00Z")
    (failed,) = await thresholds(client, tenant)
    assert failed["status"] == "open" and failed["total"] == per_unit(60)
    assert [(p["status"], p["failure_code"]) for p in failed["payments"]] == [("failed", "card_declined")]
    (case,) = (await call(client, tenant, "/v1/dunning/cases", method="GET"))["data"]
    assert case["invoice"] == failed["id"] and case["status"] == "active"
    await use(client, tenant, 30, 3)  # 900: below the next multiple
    for day in (3, 4, 6):
        await run(client, tenant, f"2026-11-{day:02d}T12:00:00Z")
    assert [i["id"] for i in await thresholds(client, tenant)] == [failed["id"]]
    await use(client, tenant, 20, 7)  # 1100: multiple 2
    for _ in range(2):
        await run(client, tenant, "2026-11-07T12:00:00Z")
    first, second = await thresholds(client, tenant)
    assert first["id"] == failed["id"] and second["threshold_multiple"] == 2
    assert kinds(second) == [("usage", per_unit(110)), ("already_billed", -per_unit(60))]
    assert second["total"] == per_unit(110) - per_unit(60)
    assert len(second["payments"]) == 1


async def test_a_voided_threshold_invoice_is_billed_again(
    client: httpx.AsyncClient, tenant: TenantHandle
) -> None:
    await setup(client, tenant, 500, card=None, tiered=False)  # no card: invoices stay open
    await use(client, tenant, 60, 2)  # 600: multiple 1
    await run(client, tenant, "2026-11-02T12:00:00Z")
    (voided,) = await thresholds(client, tenant)
    assert voided["status"] == "open"
    await call(client, tenant, f"/v1/invoices/{voided['id']}/void")
    await use(client, tenant, 50, 3)  # 1100: multiple 2, the voided usage included again
    await run(client, tenant, "2026-11-03T12:00:00Z")
    _, second = await thresholds(client, tenant)
    assert kinds(second) == [("usage", per_unit(110)), ("already_billed", 0)]
    await call(client, tenant, f"/v1/invoices/{second['id']}/void")
    await use(client, tenant, 10, 4)  # 1200: no new multiple
    await run(client, tenant, AFTER_GRACE)
    final = await period_end(client, tenant)
    assert kinds(final) == [("base_fee", BASE_FEE), ("usage", per_unit(120))]
    assert final["total"] == BASE_FEE + per_unit(120)


async def test_the_final_invoice_subtracts_only_the_non_void_threshold_invoices(
    client: httpx.AsyncClient, tenant: TenantHandle, clock: FrozenClock
) -> None:
    clock.set(datetime(2026, 12, 1, tzinfo=UTC))
    await setup(client, tenant, 500, card=None, tiered=False)
    # Late in the month, so that dunning has not given the invoices up when one is voided.
    for units, day in [(60, 28), (50, 29), (60, 30)]:  # 600, 1100, 1700: multiples 1, 2, 3
        await use(client, tenant, units, day)
        await run(client, tenant, f"2026-11-{day:02d}T12:00:00Z")
    first, second, third = await thresholds(client, tenant)
    await run(client, tenant, "2026-12-01T00:00:01Z")  # the draft
    draft = await period_end(client, tenant)
    every = -(first["subtotal"] + second["subtotal"] + third["subtotal"])
    assert every == -per_unit(170)
    assert kinds(draft) == [("base_fee", BASE_FEE), ("usage", per_unit(170)), ("already_billed", every)]
    await call(client, tenant, f"/v1/invoices/{second['id']}/void")
    await run(client, tenant, "2026-12-01T00:00:02Z")  # the draft recomputed
    draft = await period_end(client, tenant)
    expected = -(first["subtotal"] + third["subtotal"])
    assert expected == -(per_unit(60) + per_unit(170) - per_unit(110))
    assert kinds(draft) == [("base_fee", BASE_FEE), ("usage", per_unit(170)), ("already_billed", expected)]
    await run(client, tenant, AFTER_GRACE)
    final = await period_end(client, tenant)
    assert final["status"] == "open" and kinds(final)[-1] == ("already_billed", expected)
    billed = first["total"] + third["total"] + final["total"]
    assert billed == BASE_FEE + per_unit(170)


@pytest.mark.postgres_only
async def test_concurrent_runs_bill_a_multiple_once(client: httpx.AsyncClient, tenant: TenantHandle) -> None:
    await setup(client, tenant, 500, tiered=False)
    await use(client, tenant, 60, 2)
    results = await asyncio.gather(*(run(client, tenant, "2026-11-02T12:00:00Z") for _ in range(4)))
    assert sum(r["threshold_invoices"] for r in results) == 1
    (invoice,) = await thresholds(client, tenant)
    assert invoice["status"] == "paid" and len(invoice["payments"]) == 1
