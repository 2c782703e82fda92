"""The order of an invoice's amounts, in one function: lines, subtotal, discount, tax, total,
credits applied, amount due (API.md, "Invoice computation").

Everything here is in integer minor units, and each amount is rounded once: the discount once
per invoice, tax once per line and rate. Totals are sums of rounded parts, so the lines' tax
always sums to ``tax_total`` and ``total = subtotal - discount_total + exclusive tax`` exactly.
Every draft, preview and finalization goes through ``compute``; what is stored is what it gave.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Sequence
from dataclasses import dataclass
from decimal import Decimal, localcontext

from billing.core import money
from billing.invoicing.lines import LineDraft

# Kinds a meter-scoped credit grant covers.
METERED_KINDS = frozenset({"usage", "late_usage", "price_minimum", "price_maximum"})
# What a plan-scoped discount never covers, and what no discount ever covers.
_NOT_PLAN_LINES = frozenset({"invoice_item", "credit_purchase", "discount"})
_NEVER_DISCOUNTED = frozenset({"credit_purchase", "discount"})
TAX_STATUSES = ("none", "exempt", "reverse")


@dataclass(frozen=True)
class TaxRate:
    id: str
    percentage: Decimal
    inclusive: bool


@dataclass(frozen=True)
class Discount:
    """A customer's discount as it applies to one invoice: percent or amount off, maybe
    limited to the lines of some plans (plan ids)."""

    id: str
    description: str
    percent_off: Decimal | None = None
    amount_off: int | None = None
    plan_ids: frozenset[str] | None = None


@dataclass(frozen=True)
class Grant:
    """A credit grant's balance, in burn order; ``meter_ids`` limits it to those meters' lines."""

    id: str
    available: int
    meter_ids: frozenset[str] | None = None


@dataclass(frozen=True)
class Terms:
    """What sits between an invoice's lines and its charge, as of one instant."""

    tax_rates: tuple[TaxRate, ...] = ()
    tax_exempt: str = "none"
    discount: Discount | None = None
    grants: tuple[Grant, ...] = ()


NO_TERMS = Terms()


@dataclass(frozen=True)
class Amounts:
    lines: list[LineDraft]  # the input lines with discount and tax amounts, then the discount line
    subtotal: int
    discount_total: int
    tax_total: int
    total_tax_amounts: list[dict[str, object]]  # [{"tax_rate", "amount", "inclusive"}] per rate
    total_excluding_tax: int
    total: int
    credits_applied: int
    credit_applications: list[tuple[str, int]]  # (grant id, amount) in burn order, non-zero only
    amount_due: int


def compute(
    lines: Sequence[LineDraft],
    terms: Terms,
    currency: str,
    *,
    amount_paid: int = 0,
    pre_payment_credit_notes: int = 0,
    credits: bool = True,
) -> Amounts:
    """Steps 2 to 7 of "Invoice computation" over lines already rated (step 1)."""
    rated = [line for line in lines if line.kind != "discount"]
    subtotal = sum(line.amount for line in rated)
    discount_line, shares = _discount(rated, terms.discount, subtotal)
    rates = () if terms.tax_exempt != "none" else terms.tax_rates
    discount_id = discount_line.discount_id if discount_line else None
    taxed = [_taxed(line, share, discount_id, rates) for line, share in zip(rated, shares, strict=True)]
    exclusive = sum(_tax(line, inclusive=False) for line in taxed)
    inclusive = sum(_tax(line, inclusive=True) for line in taxed)
    discount_total = -discount_line.amount if discount_line else 0
    total = subtotal - discount_total + exclusive
    applications = _credits(taxed, terms.grants, total) if credits else []
    credits_applied = sum(amount for _, amount in applications)
    return Amounts(
        lines=[*taxed, discount_line] if discount_line else taxed,
        subtotal=subtotal,
        discount_total=discount_total,
        tax_total=exclusive + inclusive,
        total_tax_amounts=_per_rate(taxed, rates),
        total_excluding_tax=subtotal - discount_total - inclusive,
        total=total,
        credits_applied=credits_applied,
        credit_applications=applications,
        amount_due=max(total - credits_applied - pre_payment_credit_notes - amount_paid, 0),
    )


def _discount(
    lines: Sequence[LineDraft], discount: Discount | None, subtotal: int
) -> tuple[LineDraft | None, list[int]]:
    """One discount, rounded once on the eligible amount, clamped so that it never exceeds what
    is eligible nor takes the invoice below zero, and spread over the eligible positive lines."""
    shares = [0] * len(lines)
    if discount is None:
        return None, shares
    eligible = [i for i, line in enumerate(lines) if _discountable(line, discount)]
    base = sum(lines[i].amount for i in eligible)
    if discount.percent_off is not None:
        wanted = int(money.round_half_up(Decimal(base) * discount.percent_off / 100, 0))
    else:
        wanted = discount.amount_off or 0
    amount = max(0, min(wanted, base, subtotal))
    if amount == 0:
        return None, shares
    positive = [i for i in eligible if lines[i].amount > 0]
    for i, share in zip(positive, spread(amount, [lines[i].amount for i in positive]), strict=True):
        shares[i] = share
    first, last = min(line.period_start for line in lines), max(line.period_end for line in lines)
    line = LineDraft(
        kind="discount",
        meter_id=None,
        description=discount.description,
        quantity=Decimal(1),
        amount=-amount,
        period_start=first,
        period_end=last,
        discount_id=discount.id,
    )
    return line, shares


def _discountable(line: LineDraft, discount: Discount) -> bool:
    if line.kind in _NEVER_DISCOUNTED:
        return False
    if discount.plan_ids is None:
        return True
    return line.kind not in _NOT_PLAN_LINES and line.plan_id in discount.plan_ids


def spread(amount: int, weights: Sequence[int]) -> list[int]:
    """``amount`` split in proportion to positive ``weights`` by largest remainder, ties to the
    earlier one; the parts sum to ``amount`` exactly."""
    whole = sum(weights)
    if not weights or whole <= 0:
        return [0] * len(weights)
    parts = [amount * weight // whole for weight in weights]
    remainders = [amount * weight % whole for weight in weights]
    by_remainder = sorted(range(len(weights)), key=lambda i: (-remainders[i], i))
    for i in by_remainder[: amount - sum(parts)]:
        parts[i] += 1
    return parts


def _taxed(line: LineDraft, discount: int, discount_id: str | None, rates: Sequence[TaxRate]) -> LineDraft:
    net = line.amount - discount
    taxes = [] if line.kind == "credit_purchase" else [_tax_amount(net, rate, rates) for rate in rates]
    return dataclasses.replace(
        line,
        discount_amounts=[{"discount": discount_id, "amount": discount}] if discount else [],
        tax_amounts=taxes,
    )


def _tax_amount(net: int, rate: TaxRate, rates: Sequence[TaxRate]) -> dict[str, object]:
    with localcontext() as context:
        # Enough digits that the one rounding below sees the exact side of every half.
        context.prec = 60
        if rate.inclusive:
            share = Decimal(net) * rate.percentage / (100 + sum(r.percentage for r in rates))
        else:
            share = Decimal(net) * rate.percentage / 100
    amount = int(money.round_half_up(share, 0))
    return {"tax_rate": rate.id, "amount": amount, "taxable_amount": net, "inclusive": rate.inclusive}


def _tax(line: LineDraft, *, inclusive: bool) -> int:
    return sum(int(str(tax["amount"])) for tax in line.tax_amounts if tax["inclusive"] is inclusive)


def _per_rate(lines: Sequence[LineDraft], rates: Sequence[TaxRate]) -> list[dict[str, object]]:
    return [
        {
            "tax_rate": rate.id,
            "amount": sum(_tax_of(line, rate.id) for line in lines),
            "inclusive": rate.inclusive,
        }
        for rate in rates
    ]


def _tax_of(line: LineDraft, rate_id: str) -> int:
    return sum(int(str(tax["amount"])) for tax in line.tax_amounts if tax["tax_rate"] == rate_id)


def payable(line: LineDraft) -> int:
    """What a line asks the customer to pay: its amount less its discount plus exclusive tax."""
    discount = sum(int(str(share["amount"])) for share in line.discount_amounts)
    return line.amount - discount + _tax(line, inclusive=False)


def _credits(lines: Sequence[LineDraft], grants: Sequence[Grant], total: int) -> list[tuple[str, int]]:
    """Grants in burn order, each on the positive payable amount left on its lines, never more
    than it holds nor than the total left: no two grants cover the same minor unit."""
    left = [payable(line) for line in lines]
    total_left = total
    applied = []
    for grant in grants:
        available = min(grant.available, total_left)
        taken = 0
        for i, line in enumerate(lines):
            if available - taken <= 0:
                break
            if left[i] <= 0 or not _covers(grant, line):
                continue
            take = min(left[i], available - taken)
            left[i] -= take
            taken += take
        if taken:
            applied.append((grant.id, taken))
            total_left -= taken
    return applied


def _covers(grant: Grant, line: LineDraft) -> bool:
    if line.kind == "credit_purchase":
        return False
    return grant.meter_ids is None or (line.kind in METERED_KINDS and line.meter_id in grant.meter_ids)
