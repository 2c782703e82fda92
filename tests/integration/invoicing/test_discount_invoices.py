"""Discounts on invoices, black-box: every amount (the discount line, each line's share by largest
remainder, the totals) against the small Decimal oracle below, never against billing/, in USD,
JPY and KWD: repeating, once and forever coupons, amounts off clamped at zero, plan-scoped
coupons beside invoice items, and removal (drafts lose the discount, finalized invoices keep it).
"""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from decimal import ROUND_FLOOR, ROUND_HALF_UP, Decimal

import httpx
import pytest

from billing.core.clock import FrozenClock
from billing.web.auth import Scope
from tests.conftest import TenantHandle
from tests.integration.invoicing.test_coupons import call, discounts_of

MakeTenant = Callable[..., Awaitable[TenantHandle]]
EXPONENT = {"USD": 2, "JPY": 0, "KWD": 3}
CURRENCIES = list(EXPONENT)
START = datetime(2026, 1, 1, tzinfo=UTC)
BASE_FEE = 999  # minor units, in every currency
UNIT = Decimal("0.0137")  # major units per unit
# 1234 units: 16.9058 major units, rounded once to the minor unit.
QUANTITIES = ["1234", "2047", "311", "5000"]
AMOUNT_OFF = {"USD": ("$10.00", 1000), "JPY": ("¥1,000", 1000), "KWD": ("KWD1.500", 1500)}

# --- oracle ---------------------------------------------------------------------------------------


def half_up(value: Decimal) -> int:
    return int(value.quantize(Decimal(1), rounding=ROUND_HALF_UP))


def usage_amount(quantity: str, currency: str) -> int:
    return half_up(Decimal(quantity) * UNIT * Decimal(10) ** EXPONENT[currency])


@dataclass(frozen=True)
class Expected:
    discount: int
    shares: list[int]  # per line, in line order

    def total(self, amounts: list[int]) -> int:
        return sum(amounts) - self.discount


def oracle(
    amounts: list[int], eligible: list[bool], *, percent: str | None = None, amount_off: int | None = None
) -> Expected:
    """The discount of API.md's "Discount line": one rounding on the eligible sum (negatives
    included), clamped to [0, min(eligible, subtotal)], spread over the eligible positive lines
    by largest remainder, ties to the earlier line."""
    base = sum(a for a, ok in zip(amounts, eligible, strict=True) if ok)
    wanted = half_up(Decimal(base) * Decimal(percent) / 100) if percent is not None else amount_off or 0
    discount = max(0, min(wanted, base, sum(amounts)))
    takers = [i for i, (a, ok) in enumerate(zip(amounts, eligible, strict=True)) if ok and a > 0]
    weight = sum(amounts[i] for i in takers)
    exact = {i: Decimal(discount) * amounts[i] / weight for i in takers} if weight else {}
    shares = [0] * len(amounts)
    for i, value in exact.items():
        shares[i] = int(value.to_integral_value(rounding=ROUND_FLOOR))
    left = discount - sum(shares)
    for i in sorted(exact, key=lambda i: (-(exact[i] - shares[i]), i))[:left]:
        shares[i] += 1
    return Expected(discount, shares)


def check(invoice: dict, expected: Expected, discount_id: str | None, description: str | None) -> None:
    """Every amount of ``invoice`` as the oracle has it (no tax, no credits here)."""
    lines = [line for line in invoice["lines"] if line["kind"] != "discount"]
    amounts = [line["amount"] for line in lines]
    for line, share in zip(lines, expected.shares, strict=True):
        wanted = [{"discount": discount_id, "amount": share}] if share else []
        assert line["discount_amounts"] == wanted, (line, expected)
    discount_lines = [line for line in invoice["lines"] if line["kind"] == "discount"]
    if expected.discount:
        assert invoice["lines"][-1] == discount_lines[0]
        (shown,) = discount_lines
        assert (shown["amount"], shown["discount"], shown["description"]) == (
            -expected.discount,
            discount_id,
            description,
        )
        assert (shown["discount_amounts"], shown["tax_amounts"]) == ([], [])
    else:
        assert discount_lines == []
    assert invoice["subtotal"] == sum(amounts)
    assert invoice["discount_total"] == expected.discount
    assert invoice["total"] == invoice["total_excluding_tax"] == expected.total(amounts)
    assert invoice["amount_due"] == max(expected.total(amounts), 0)
    assert invoice["tax_total"] == invoice["credits_applied"] == 0


# --- API helpers ----------------------------------------------------------------------------------


def iso(at: datetime) -> str:
    return at.astimezone(UTC).strftime("%Y-%m-%dT%H:%M:%SZ")


def month(n: int) -> datetime:
    """The first instant of the n-th month from January 2026 (0-based)."""
    return datetime(2026 + n // 12, n % 12 + 1, 1, tzinfo=UTC)


async def shop(
    client: httpx.AsyncClient, make_tenant: MakeTenant, clock: FrozenClock, currency: str
) -> TenantHandle:
    """A tenant in ``currency`` with plans pro (base fee and usage) and team, and customer c1 on
    pro from START; the clock at START."""
    clock.set(START)
    tenant = await make_tenant(currency=currency)
    await call(client, tenant, "POST", "/v1/meters", {"key": "units", "aggregation": "sum"}, status=201)
    price = {"meter": "units", "model": "per_unit", "unit_amount": str(UNIT)}
    plan = {"code": "pro", "base_fee": BASE_FEE, "prices": [price]}
    await call(client, tenant, "POST", "/v1/plans", plan, status=201)
    await call(client, tenant, "POST", "/v1/plans", {"code": "team", "base_fee": 5}, status=201)
    await call(client, tenant, "POST", "/v1/customers", {"external_id": "c1", "timezone": "UTC"}, status=201)
    body = {"customer": "c1", "plan": "pro", "starts_at": iso(START)}
    await call(client, tenant, "POST", "/v1/subscriptions", body, status=201)
    return tenant


async def redeem(client: httpx.AsyncClient, tenant: TenantHandle, **coupon: object) -> dict:
    body = {"code": "SPRING", "duration": "forever", **coupon}
    await call(client, tenant, "POST", "/v1/coupons", body, status=201)
    return await call(client, tenant, "POST", "/v1/customers/c1/discounts", {"coupon": "SPRING"}, status=201)


async def use(client: httpx.AsyncClient, tenant: TenantHandle, clock: FrozenClock, n: int) -> None:
    """Month n's usage, sent in the middle of it."""
    clock.set(month(n) + timedelta(days=14))
    event = {
        "id": f"e{n}",
        "customer": "c1",
        "meter": "units",
        "timestamp": iso(clock.now()),
        "value": QUANTITIES[n],
    }
    body = await call(client, tenant, "POST", "/v1/events/batch", {"events": [event]}, scope=Scope.INGEST)
    assert body["accepted"] == 1, body


async def run(client: httpx.AsyncClient, tenant: TenantHandle, clock: FrozenClock, at: datetime) -> None:
    clock.set(at)
    await call(client, tenant, "POST", "/v1/billing/run", {"at": iso(at)})


async def invoice_of(client: httpx.AsyncClient, tenant: TenantHandle, n: int) -> dict:
    params = {"customer": "c1", "limit": 100}
    response = await client.get("/v1/invoices", headers=tenant.headers(), params=params)
    assert response.status_code == 200, response.text
    (found,) = [i for i in response.json()["data"] if i["period_start"] == iso(month(n))]
    return found


async def billed_month(client: httpx.AsyncClient, tenant: TenantHandle, clock: FrozenClock, n: int) -> dict:
    """Month n with its usage, closed and finalized (after the 24 h grace period)."""
    await use(client, tenant, clock, n)
    await run(client, tenant, clock, month(n + 1) + timedelta(hours=25))
    invoice = await invoice_of(client, tenant, n)
    assert invoice["status"] != "draft", invoice
    return invoice


def plan_amounts(invoice: dict, currency: str, n: int) -> list[int]:
    """The month's base fee and usage lines, checked against the oracle's own pricing."""
    kinds = [(line["kind"], line["amount"]) for line in invoice["lines"] if line["kind"] != "discount"]
    assert kinds[:2] == [("base_fee", BASE_FEE), ("usage", usage_amount(QUANTITIES[n], currency))], kinds
    return [amount for _, amount in kinds]


# --- tests ----------------------------------------------------------------------------------------


@pytest.mark.parametrize("currency", CURRENCIES)
async def test_a_repeating_discount_covers_its_months_and_not_the_fourth(
    client: httpx.AsyncClient, make_tenant: MakeTenant, clock: FrozenClock, currency: str
) -> None:
    tenant = await shop(client, make_tenant, clock, currency)
    discount = await redeem(client, tenant, percent_off="20", duration="repeating", duration_in_periods=3)
    assert discount["end"] == iso(month(3))
    for n in range(4):
        invoice = await billed_month(client, tenant, clock, n)
        amounts = plan_amounts(invoice, currency, n)
        expected = oracle(amounts, [True, True], percent="20" if n < 3 else "0")
        check(invoice, expected, discount["id"] if n < 3 else None, "SPRING (20% off)")
        assert (expected.discount > 0) is (n < 3)
    (shown,) = await discounts_of(client, tenant, "c1")
    assert shown["status"] == "ended"


@pytest.mark.parametrize("currency", CURRENCIES)
async def test_a_once_discount_takes_the_first_invoice_only_and_ends_there(
    client: httpx.AsyncClient, make_tenant: MakeTenant, clock: FrozenClock, currency: str
) -> None:
    tenant = await shop(client, make_tenant, clock, currency)
    discount = await redeem(client, tenant, name="Welcome", percent_off="33.33", duration="once")
    first = await billed_month(client, tenant, clock, 0)
    check(
        first,
        oracle(plan_amounts(first, currency, 0), [True, True], percent="33.33"),
        discount["id"],
        "Welcome (33.33% off)",
    )
    (shown,) = await discounts_of(client, tenant, "c1")
    assert (shown["status"], shown["invoice"]) == ("ended", first["id"])
    second = await billed_month(client, tenant, clock, 1)
    check(second, oracle(plan_amounts(second, currency, 1), [True, True]), None, None)


@pytest.mark.parametrize("currency", CURRENCIES)
async def test_a_forever_discount_covers_every_month(
    client: httpx.AsyncClient, make_tenant: MakeTenant, clock: FrozenClock, currency: str
) -> None:
    tenant = await shop(client, make_tenant, clock, currency)
    discount = await redeem(client, tenant, percent_off="12.35")
    for n in range(3):
        invoice = await billed_month(client, tenant, clock, n)
        expected = oracle(plan_amounts(invoice, currency, n), [True, True], percent="12.35")
        check(invoice, expected, discount["id"], "SPRING (12.35% off)")
    (shown,) = await discounts_of(client, tenant, "c1")
    assert (shown["status"], shown["invoice"]) == ("active", None)


@pytest.mark.parametrize("currency", CURRENCIES)
async def test_an_amount_off_is_spread_by_largest_remainder_and_clamped_at_zero(
    client: httpx.AsyncClient, make_tenant: MakeTenant, clock: FrozenClock, currency: str
) -> None:
    shown, amount_off = AMOUNT_OFF[currency]
    tenant = await shop(client, make_tenant, clock, currency)
    discount = await redeem(client, tenant, percent_off=None, amount_off=amount_off, currency=currency)
    description = f"SPRING ({shown} off)"
    # January: base fee and usage exceed the amount off, which is taken whole.
    january = await billed_month(client, tenant, clock, 0)
    amounts = plan_amounts(january, currency, 0)
    expected = oracle(amounts, [True, True], amount_off=amount_off)
    check(january, expected, discount["id"], description)
    assert expected.discount == min(amount_off, sum(amounts))
    # February: a credit item leaves a subtotal of 300, below the amount off: the invoice stops at zero.
    goodwill = -(BASE_FEE + usage_amount(QUANTITIES[1], currency) - 300)
    credit = {"customer": "c1", "description": "Goodwill", "amount": goodwill}
    await call(client, tenant, "POST", "/v1/invoice-items", credit, status=201)
    february = await billed_month(client, tenant, clock, 1)
    amounts = plan_amounts(february, currency, 1)
    assert amounts[2:] == [goodwill]
    expected = oracle(amounts, [True, True, True], amount_off=amount_off)
    check(february, expected, discount["id"], description)
    assert expected.discount == sum(amounts) < amount_off
    assert (february["total"], february["amount_due"], february["status"]) == (0, 0, "paid")


@pytest.mark.parametrize("currency", CURRENCIES)
async def test_a_plan_scoped_coupon_leaves_invoice_items_undiscounted(
    client: httpx.AsyncClient, make_tenant: MakeTenant, clock: FrozenClock, currency: str
) -> None:
    tenant = await shop(client, make_tenant, clock, currency)
    discount = await redeem(client, tenant, percent_off="15", applies_to_plans=["pro"])
    item = {"customer": "c1", "description": "Setup", "amount": 777}
    await call(client, tenant, "POST", "/v1/invoice-items", item, status=201)
    invoice = await billed_month(client, tenant, clock, 0)
    amounts = plan_amounts(invoice, currency, 0)
    assert amounts[2:] == [777]
    expected = oracle(amounts, [True, True, False], percent="15")
    check(invoice, expected, discount["id"], "SPRING (15% off)")
    assert expected.shares[2] == 0


@pytest.mark.parametrize("currency", CURRENCIES)
async def test_a_coupon_for_another_plan_discounts_nothing(
    client: httpx.AsyncClient, make_tenant: MakeTenant, clock: FrozenClock, currency: str
) -> None:
    tenant = await shop(client, make_tenant, clock, currency)
    await redeem(client, tenant, percent_off="50", applies_to_plans=["team"])
    await call(
        client,
        tenant,
        "POST",
        "/v1/invoice-items",
        {"customer": "c1", "description": "Setup", "amount": 50},
        status=201,
    )
    invoice = await billed_month(client, tenant, clock, 0)
    check(
        invoice, oracle(plan_amounts(invoice, currency, 0), [False, False, False], percent="50"), None, None
    )


@pytest.mark.parametrize("currency", CURRENCIES)
async def test_removing_a_discount_recomputes_drafts_and_finalized_invoices_keep_it(
    client: httpx.AsyncClient, make_tenant: MakeTenant, clock: FrozenClock, currency: str
) -> None:
    tenant = await shop(client, make_tenant, clock, currency)
    discount = await redeem(client, tenant, percent_off="20")
    january = await billed_month(client, tenant, clock, 0)
    discounted = oracle(plan_amounts(january, currency, 0), [True, True], percent="20")
    check(january, discounted, discount["id"], "SPRING (20% off)")
    # February closes into a draft (still in its grace period), discounted as it stands.
    await use(client, tenant, clock, 1)
    await run(client, tenant, clock, month(2))
    draft = await invoice_of(client, tenant, 1)
    assert draft["status"] == "draft"
    amounts = plan_amounts(draft, currency, 1)
    check(draft, oracle(amounts, [True, True], percent="20"), discount["id"], "SPRING (20% off)")
    clock.set(month(2) + timedelta(hours=1))
    removed = await call(client, tenant, "DELETE", f"/v1/customers/c1/discounts/{discount['id']}")
    assert removed["status"] == "removed"
    check(await invoice_of(client, tenant, 1), oracle(amounts, [True, True]), None, None)
    kept = await invoice_of(client, tenant, 0)
    assert [kept[k] for k in ("lines", "subtotal", "discount_total", "total")] == [
        january[k] for k in ("lines", "subtotal", "discount_total", "total")
    ]
    await run(client, tenant, clock, month(2) + timedelta(hours=25))
    february = await invoice_of(client, tenant, 1)
    assert february["status"] != "draft"
    check(february, oracle(amounts, [True, True]), None, None)


@pytest.mark.parametrize("currency", CURRENCIES)
async def test_a_discount_redeemed_during_the_grace_period_joins_the_draft(
    client: httpx.AsyncClient, make_tenant: MakeTenant, clock: FrozenClock, currency: str
) -> None:
    tenant = await shop(client, make_tenant, clock, currency)
    await use(client, tenant, clock, 0)
    await run(client, tenant, clock, month(1))
    amounts = plan_amounts(await invoice_of(client, tenant, 0), currency, 0)
    clock.set(month(1) + timedelta(hours=2))
    discount = await redeem(client, tenant, percent_off="7.5")
    expected = oracle(amounts, [True, True], percent="7.5")
    check(await invoice_of(client, tenant, 0), expected, discount["id"], "SPRING (7.5% off)")
    await run(client, tenant, clock, month(1) + timedelta(hours=25))
    january = await invoice_of(client, tenant, 0)
    assert january["status"] != "draft"
    check(january, expected, discount["id"], "SPRING (7.5% off)")


def test_the_oracle_spreads_by_largest_remainder_with_ties_to_the_earlier_line() -> None:
    assert oracle([100, 100, 100], [True] * 3, amount_off=100).shares == [34, 33, 33]
    assert oracle([1, 2, -5, 7], [True] * 4, amount_off=100) == Expected(5, [1, 1, 0, 3])
    assert oracle([999, 17], [True, True], percent="20") == Expected(203, [200, 3])


@pytest.mark.parametrize("currency", CURRENCIES)
async def test_the_upcoming_invoice_previews_the_discount(
    client: httpx.AsyncClient, make_tenant: MakeTenant, clock: FrozenClock, currency: str
) -> None:
    tenant = await shop(client, make_tenant, clock, currency)
    discount = await redeem(client, tenant, percent_off="20", applies_to_plans=["pro"])
    await call(
        client,
        tenant,
        "POST",
        "/v1/invoice-items",
        {"customer": "c1", "description": "Setup", "amount": 333},
        status=201,
    )
    await use(client, tenant, clock, 0)
    upcoming = await call(client, tenant, "GET", "/v1/customers/c1/upcoming-invoice")
    lines = [line for line in upcoming["lines"] if line["kind"] != "discount"]
    assert [(line["kind"], line["amount"]) for line in lines][1:] == [
        ("usage", usage_amount(QUANTITIES[0], currency)),
        ("invoice_item", 333),
    ]
    amounts = [line["amount"] for line in lines]
    check(upcoming, oracle(amounts, [True, True, False], percent="20"), discount["id"], "SPRING (20% off)")


@pytest.mark.parametrize("currency", CURRENCIES)
async def test_a_plan_scoped_once_discount_waits_for_an_invoice_with_eligible_lines(
    client: httpx.AsyncClient, make_tenant: MakeTenant, clock: FrozenClock, currency: str
) -> None:
    tenant = await shop(client, make_tenant, clock, currency)
    discount = await redeem(client, tenant, percent_off="50", duration="once", applies_to_plans=["pro"])
    clock.set(START + timedelta(days=3))
    body = {"customer": "c1", "items": [{"description": "Consulting", "amount": 4000}]}
    standalone = await call(client, tenant, "POST", "/v1/invoices", body, status=201)
    finalized = await call(
        client, tenant, "POST", f"/v1/invoices/{standalone['id']}/finalize", scope=Scope.FINANCE
    )
    check(finalized, oracle([4000], [False], percent="50"), None, None)
    (shown,) = await discounts_of(client, tenant, "c1")
    assert (shown["status"], shown["invoice"]) == ("active", None)
    january = await billed_month(client, tenant, clock, 0)
    check(
        january,
        oracle(plan_amounts(january, currency, 0), [True, True], percent="50"),
        discount["id"],
        "SPRING (50% off)",
    )
    (shown,) = await discounts_of(client, tenant, "c1")
    assert (shown["status"], shown["invoice"]) == ("ended", january["id"])


@pytest.mark.parametrize("currency", CURRENCIES)
async def test_archiving_ends_the_discount_but_the_final_invoice_keeps_it(
    client: httpx.AsyncClient, make_tenant: MakeTenant, clock: FrozenClock, currency: str
) -> None:
    tenant = await shop(client, make_tenant, clock, currency)
    discount = await redeem(client, tenant, percent_off="25")
    await use(client, tenant, clock, 0)
    archived_at = START + timedelta(days=20)
    clock.set(archived_at)
    await call(client, tenant, "DELETE", "/v1/customers/c1")
    await run(client, tenant, clock, archived_at + timedelta(hours=25))
    final = await invoice_of(client, tenant, 0)
    assert (final["status"] != "draft", final["period_end"]) == (True, iso(archived_at))
    (fee, usage_line) = [line for line in final["lines"] if line["kind"] != "discount"]
    # The base fee of 20 days of a 31-day month, rounded once.
    assert (fee["kind"], fee["amount"]) == ("base_fee", half_up(Decimal(BASE_FEE) * 20 / 31))
    assert (usage_line["kind"], usage_line["amount"]) == ("usage", usage_amount(QUANTITIES[0], currency))
    expected = oracle([fee["amount"], usage_line["amount"]], [True, True], percent="25")
    check(final, expected, discount["id"], "SPRING (25% off)")
    (shown,) = await discounts_of(client, tenant, "c1")
    assert (shown["status"], shown["end"]) == ("ended", iso(archived_at))


async def test_two_invoices_finalized_at_once_never_both_use_a_once_discount(
    client: httpx.AsyncClient, make_tenant: MakeTenant, clock: FrozenClock
) -> None:
    """The cycle invoice (its subscription locked) and one-off invoices (each its own row locked)."""
    tenant = await shop(client, make_tenant, clock, "USD")
    discount = await redeem(client, tenant, percent_off="10", duration="once")
    await run(client, tenant, clock, month(1))
    for n in range(7):
        body = {"customer": "c1", "items": [{"description": "Consulting", "amount": 4000 + n}]}
        await call(client, tenant, "POST", "/v1/invoices", body, status=201)
    response = await client.get("/v1/invoices", headers=tenant.headers(), params={"status": "draft"})
    drafts = response.json()["data"]
    assert len(drafts) == 8 and all(d["discount_total"] > 0 for d in drafts), drafts
    clock.set(month(1) + timedelta(hours=1))
    finalized = await asyncio.gather(
        *(
            call(client, tenant, "POST", f"/v1/invoices/{d['id']}/finalize", scope=Scope.FINANCE)
            for d in drafts
        )
    )
    used = [invoice["id"] for invoice in finalized if invoice["discount_total"] > 0]
    assert len(used) == 1, [(i["id"], i["discount_total"]) for i in finalized]
    (shown,) = await discounts_of(client, tenant, "c1")
    assert (shown["id"], shown["status"], shown["invoice"]) == (discount["id"], "ended", used[0])
