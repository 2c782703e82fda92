"""What a credit note amounts to (API.md, "Credit notes"), from the invoice facts it credits.

Pure: integer minor units in, integer minor units out, each reversed tax rounded once, half away
from zero. A line credit is in terms of the line's net (after discount, before exclusive tax);
a whole-invoice amount is the note's total, tax included, split per rate in proportion to the
invoice's tax.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from decimal import Decimal, localcontext

from billing.core import money
from billing.core.errors import FieldError, ValidationFailed


@dataclass(frozen=True)
class Tax:
    tax_rate: str
    amount: int
    inclusive: bool


@dataclass(frozen=True)
class InvoiceLineFacts:
    """An invoice line as a credit note sees it: its net, its tax per rate, and how much of the
    net earlier credit notes took."""

    public_id: str
    description: str
    net: int
    taxes: tuple[Tax, ...]
    credited: int

    @property
    def creditable(self) -> int:
        return max(self.net - self.credited, 0)


@dataclass(frozen=True)
class NoteLine:
    invoice_line: str | None
    description: str
    amount: int
    taxes: tuple[Tax, ...]


@dataclass(frozen=True)
class NoteAmounts:
    lines: tuple[NoteLine, ...]
    subtotal: int
    tax_total: int
    total: int


def share(value: int, numerator: int, denominator: int) -> int:
    """``round_half_up(value * numerator / denominator)``, exactly."""
    with localcontext() as context:
        context.prec = 60
        exact = Decimal(value) * numerator / denominator
    return int(money.round_half_up(exact, 0))


def by_lines(credits: Sequence[tuple[InvoiceLineFacts, int]]) -> NoteAmounts:
    """One note line per (invoice line, amount of its net); 422 ``credit_note_exceeds_line`` when
    an amount is more than the line's net less earlier credit notes."""
    lines = []
    for index, (line, amount) in enumerate(credits):
        if amount > line.creditable:
            field = f"lines[{index}].amount"
            message = f"at most {line.creditable} of line {line.public_id} is left to credit"
            raise ValidationFailed(
                f"{field}: {message}", code="credit_note_exceeds_line", errors=[FieldError(field, message)]
            )
        taxes = tuple(Tax(t.tax_rate, share(t.amount, amount, line.net), t.inclusive) for t in line.taxes)
        lines.append(NoteLine(line.public_id, line.description, amount, taxes))
    return _totals(lines)


def by_amount(amount: int, invoice_total: int, invoice_taxes: Sequence[Tax], description: str) -> NoteAmounts:
    """One line without an invoice line: ``amount`` is the note's total, of which each rate takes
    its share of the invoice's tax; the line is what is left after the exclusive tax. (An invoice
    whose total is not positive has nothing to credit: ``check_invoice_room`` refuses the note.)"""
    shared = invoice_taxes if invoice_total > 0 else ()
    taxes = tuple(Tax(t.tax_rate, share(amount, t.amount, invoice_total), t.inclusive) for t in shared)
    line_amount = amount - sum(t.amount for t in taxes if not t.inclusive)
    return _totals([NoteLine(None, description, line_amount, taxes)])


def _totals(lines: Sequence[NoteLine]) -> NoteAmounts:
    subtotal = sum(line.amount for line in lines)
    taxes = [tax for line in lines for tax in line.taxes]
    exclusive = sum(tax.amount for tax in taxes if not tax.inclusive)
    return NoteAmounts(
        lines=tuple(lines),
        subtotal=subtotal,
        tax_total=sum(tax.amount for tax in taxes),
        total=subtotal + exclusive,
    )


def check_invoice_room(total: int, credited: int, invoice_total: int) -> None:
    """422 ``credit_note_exceeds_invoice`` when the invoice's notes would together exceed its total."""
    left = max(invoice_total - credited, 0)
    if total > left:
        raise ValidationFailed(
            f"This credit note's total {total} is more than the {left} left to credit on the invoice",
            code="credit_note_exceeds_invoice",
        )


def split(total: int, *, invoice_open: bool, amount_due: int) -> tuple[int, int]:
    """(pre-payment, post-payment): on an open invoice the note first takes off what is due, and
    only what exceeds it is given back outside; on a paid invoice everything is post-payment."""
    pre = min(total, amount_due) if invoice_open else 0
    return pre, total - pre
