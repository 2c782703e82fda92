"""The fee rule of a meter in a plan: the price its group wins decides the fee, and only a
percentage price charges one; checked against fees computed here."""

from __future__ import annotations

from decimal import Decimal

from billing.invoicing.fee_rules import MeterFees
from billing.invoicing.plans import price_of

EU = {
    "meter_id": "m",
    "model": "percentage",
    "rate": "1.5",
    "fixed_amount_per_event": 25,
    "filters": {"region": ["eu"]},
    "maximum_per_event": 1000,
}
EU_CARD = {
    "meter_id": "m",
    "model": "percentage",
    "rate": "0.25",
    "filters": {"region": ["eu"], "method": ["card"]},
}
FLAT = {"meter_id": "m", "model": "per_unit", "unit_amount": "0.02"}


def rule(*stored: dict, currency: str = "USD") -> MeterFees:
    return MeterFees(["region", "method"], [(s, price_of(s)) for s in stored], currency)


def test_the_most_specific_percentage_price_sets_the_fee() -> None:
    fees = rule(EU, FLAT, EU_CARD)
    assert fees(("eu", "sepa"), Decimal("77.77")) == Decimal("77.77") * Decimal("1.5") + 25
    assert fees(("eu", "card"), Decimal("77.77")) == Decimal("77.77") * Decimal("0.25")
    assert fees(("eu", "card"), Decimal("77.77")) == Decimal("77.77") * Decimal("0.25")  # remembered
    assert fees(("eu", None), Decimal("100000")) == 1000


def test_groups_won_by_another_model_or_by_no_price_pay_no_fee() -> None:
    assert rule(EU, FLAT)(("us", "card"), Decimal("10")) is None
    assert rule(EU)((None, "card"), Decimal("10")) is None


def test_the_fee_is_in_the_currency_minor_units() -> None:
    bare = {"meter_id": "m", "model": "percentage", "rate": "2.9", "fixed_amount_per_event": 30}
    assert rule(bare, currency="JPY")((None, None), Decimal("1000")) == Decimal("29") + 30
    assert rule(bare, currency="KWD")((None, None), Decimal("1.5")) == Decimal("1.5") * Decimal("29") + 30
