"""The order of an invoice's amounts (invoicing.amounts.compute) against a Decimal oracle
written here, and its invariants over random lines, coupons, rates and grants."""

from __future__ import annotations

from datetime import UTC, datetime
from decimal import ROUND_HALF_UP, Decimal

from hypothesis import given, settings
from hypothesis import strategies as st

from billing.invoicing.amounts import Discount, Grant, TaxRate, Terms, compute, spread
from billing.invoicing.lines import LineDraft

T = datetime(2026, 11, 1, tzinfo=UTC)
KINDS = ("base_fee", "usage", "late_usage", "invoice_item", "minimum_commitment")


def line(kind: str, amount: int, meter: str | None = None, plan: str = "plan_a") -> LineDraft:
    return LineDraft(kind, meter, kind, Decimal(1), amount, T, T, plan_id=plan)


def half_up(value: Decimal) -> int:
    return int(value.quantize(Decimal(1), rounding=ROUND_HALF_UP))


def test_exclusive_vat_after_a_percent_discount_and_two_grants() -> None:
    lines = [line("base_fee", 1000), line("usage", 333, "m1"), line("invoice_item", -200)]
    terms = Terms(
        tax_rates=(TaxRate("txr_de", Decimal("19"), False),),
        discount=Discount("dis_1", "SPRING (20% off)", percent_off=Decimal(20)),
        grants=(Grant("crg_m1", 500, frozenset({"m1"})), Grant("crg_all", 10_000)),
    )
    result = compute(lines, terms, "USD")
    discount = half_up(Decimal(1133) * 20 / 100)  # 226.6 -> 227
    # 227 over 1000 and 333: 170.29... and 56.70...: the larger remainder takes the extra cent.
    assert [x.discount_amounts for x in result.lines[:2]] == [
        [{"discount": "dis_1", "amount": 170}],
        [{"discount": "dis_1", "amount": 57}],
    ]
    nets = [1000 - 170, 333 - 57, -200]
    taxes = [half_up(Decimal(n) * Decimal("0.19")) for n in nets]
    assert [x.tax_amounts[0]["amount"] for x in result.lines[:3]] == taxes
    assert result.lines[-1].kind == "discount" and result.lines[-1].amount == -discount
    assert result.subtotal == 1133 and result.discount_total == discount
    assert result.tax_total == sum(taxes)
    assert result.total == 1133 - discount + sum(taxes)
    # The meter grant takes only its line's payable amount; the other takes the rest.
    assert result.credit_applications == [
        ("crg_m1", 276 + taxes[1]),
        ("crg_all", result.total - 276 - taxes[1]),
    ]
    assert result.amount_due == 0


def test_inclusive_rates_stay_inside_the_amount() -> None:
    lines = [line("base_fee", 1190), line("usage", 1)]
    rates = (TaxRate("a", Decimal("19"), True), TaxRate("b", Decimal("1.5"), True))
    result = compute(lines, Terms(tax_rates=rates), "EUR")
    for drafted, amount in zip(result.lines, (1190, 1), strict=True):
        expected = [half_up(Decimal(amount) * p / Decimal("120.5")) for p in (Decimal(19), Decimal("1.5"))]
        assert [t["amount"] for t in drafted.tax_amounts] == expected
    assert result.total == 1191  # inclusive tax adds nothing
    assert result.total_excluding_tax == 1191 - result.tax_total


def test_reverse_charge_and_exempt_tax_nothing() -> None:
    rates = (TaxRate("a", Decimal("19"), False),)
    for status in ("exempt", "reverse"):
        result = compute([line("base_fee", 999)], Terms(tax_rates=rates, tax_exempt=status), "EUR")
        assert (result.tax_total, result.total, result.lines[0].tax_amounts) == (0, 999, [])


def test_an_amount_off_is_clamped_so_the_invoice_never_goes_below_zero() -> None:
    lines = [line("base_fee", 300), line("invoice_item", -100)]
    result = compute(lines, Terms(discount=Discount("d", "BIG", amount_off=5000)), "JPY")
    assert (result.discount_total, result.total, result.amount_due) == (200, 0, 0)


def test_a_plan_scoped_discount_leaves_items_and_other_plans_alone() -> None:
    lines = [line("base_fee", 1000), line("usage", 500, plan="plan_b"), line("invoice_item", 700)]
    scoped = Discount("d", "PRO", percent_off=Decimal(10), plan_ids=frozenset({"plan_a"}))
    result = compute(lines, Terms(discount=scoped), "KWD")
    assert result.discount_total == 100
    assert [x.discount_amounts for x in result.lines[:3]] == [[{"discount": "d", "amount": 100}], [], []]


def test_half_cents_round_away_from_zero_on_negative_lines() -> None:
    result = compute([line("invoice_item", -250)], Terms(tax_rates=(TaxRate("a", Decimal(1), False),)), "USD")
    assert result.tax_total == -3  # -2.5 -> -3
    assert result.total == -253 and result.amount_due == 0


def test_spread_sums_exactly_and_breaks_ties_to_the_earlier_line() -> None:
    assert spread(1, [100, 100]) == [1, 0]
    assert spread(10, [1, 1, 1]) == [4, 3, 3]


amounts = st.integers(min_value=-50_000, max_value=500_000)
lines_strategy = st.lists(
    st.builds(
        line,
        st.sampled_from(KINDS),
        amounts,
        st.sampled_from([None, "m1", "m2"]),
        st.sampled_from(["plan_a", "plan_b"]),
    ),
    min_size=1,
    max_size=12,
)
percent = st.decimals(min_value=Decimal("0.01"), max_value=Decimal(100), places=2)
discounts = st.one_of(
    st.none(),
    st.builds(Discount, st.just("d"), st.just("D"), percent_off=percent),
    st.builds(Discount, st.just("d"), st.just("D"), amount_off=st.integers(1, 1_000_000)),
    st.builds(
        Discount, st.just("d"), st.just("D"), percent_off=percent, plan_ids=st.just(frozenset({"plan_b"}))
    ),
)
rate_percent = st.decimals(min_value=Decimal(0), max_value=Decimal(100), places=4)
rate_sets = st.one_of(
    st.lists(
        st.builds(TaxRate, st.sampled_from(["r1", "r2", "r3"]), rate_percent, st.just(False)),
        max_size=3,
        unique_by=lambda r: r.id,
    ),
    st.lists(
        st.builds(TaxRate, st.sampled_from(["r1", "r2", "r3"]), rate_percent, st.just(True)),
        max_size=3,
        unique_by=lambda r: r.id,
    ),
)
grants = st.lists(
    st.builds(
        Grant,
        st.uuids().map(str),
        st.integers(0, 400_000),
        st.sampled_from([None, frozenset({"m1"}), frozenset({"m2", "m1"})]),
    ),
    max_size=4,
)


@settings(max_examples=400, deadline=None)
@given(lines_strategy, discounts, rate_sets, st.sampled_from(["none", "exempt", "reverse"]), grants)
def test_the_totals_always_add_up(lines, discount, rates, exempt, grant_list) -> None:
    terms = Terms(tax_rates=tuple(rates), tax_exempt=exempt, discount=discount, grants=tuple(grant_list))
    result = compute(lines, terms, "USD")
    assert result.subtotal == sum(x.amount for x in lines)
    assert result.total == result.subtotal - result.discount_total + sum(
        t["amount"] for x in result.lines for t in x.tax_amounts if not t["inclusive"]
    )
    assert result.tax_total == sum(t["amount"] for x in result.lines for t in x.tax_amounts)
    assert result.tax_total == sum(t["amount"] for t in result.total_tax_amounts)
    assert 0 <= result.discount_total <= max(result.subtotal, 0)
    assert sum(share["amount"] for x in result.lines for share in x.discount_amounts) == result.discount_total
    assert sum(x.amount for x in result.lines) == result.subtotal - result.discount_total
    assert result.credits_applied == sum(amount for _, amount in result.credit_applications)
    assert result.credits_applied <= max(result.total, 0)
    for grant_id, amount in result.credit_applications:
        assert 0 < amount <= next(g.available for g in grant_list if g.id == grant_id)
    assert result.amount_due == max(result.total - result.credits_applied, 0) >= 0
    if exempt == "none":
        for drafted in result.lines:
            net = drafted.amount - sum(share["amount"] for share in drafted.discount_amounts)
            for tax, rate in zip(
                drafted.tax_amounts, rates if drafted.kind != "discount" else [], strict=True
            ):
                base = 100 + sum(r.percentage for r in rates) if rate.inclusive else Decimal(100)
                assert tax["amount"] == half_up(Decimal(net) * rate.percentage / base)
