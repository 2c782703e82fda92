"""Credit note amounts against an independent Decimal computation of API.md's rules."""

from __future__ import annotations

from decimal import ROUND_HALF_UP, Decimal

import pytest
from hypothesis import given
from hypothesis import strategies as st

from billing.core.errors import ValidationFailed
from billing.credit_notes.amounts import InvoiceLineFacts, Tax, by_amount, by_lines, check_invoice_room, split


def half_up(value: Decimal) -> int:
    return int(value.quantize(Decimal(1), rounding=ROUND_HALF_UP))


def line(net: int, *taxes: Tax, credited: int = 0, public_id: str = "il_1") -> InvoiceLineFacts:
    return InvoiceLineFacts(public_id, "API calls", net, taxes, credited)


def test_a_line_credit_reverses_each_rate_in_proportion_to_the_net() -> None:
    # 19% exclusive and 7% exclusive on a net of 3333: 633.27 -> 633 and 233.31 -> 233.
    vat, reduced = Tax("txr_vat", 633, False), Tax("txr_red", 233, False)
    note = by_lines([(line(3333, vat, reduced), 1111)])
    expected_vat = half_up(Decimal(633) * 1111 / 3333)
    expected_reduced = half_up(Decimal(233) * 1111 / 3333)
    assert [(t.tax_rate, t.amount) for t in note.lines[0].taxes] == [
        ("txr_vat", expected_vat),
        ("txr_red", expected_reduced),
    ]
    assert (expected_vat, expected_reduced) == (211, 78)
    assert note.subtotal == 1111
    assert note.tax_total == 211 + 78
    assert note.total == 1111 + 211 + 78


def test_inclusive_tax_is_reversed_inside_the_amount() -> None:
    # 19% inclusive in a net of 1190: 190 of tax; crediting 595 reverses 95.
    note = by_lines([(line(1190, Tax("txr_vat", 190, True)), 595)])
    assert note.lines[0].taxes[0].amount == half_up(Decimal(190) * 595 / 1190) == 95
    assert (note.subtotal, note.tax_total, note.total) == (595, 95, 595)


def test_halves_round_away_from_zero() -> None:
    # 5 * 1 / 2 = 2.5 -> 3
    assert by_lines([(line(2, Tax("txr", 5, False)), 1)]).lines[0].taxes[0].amount == 3


def test_a_line_credit_is_at_most_its_net_less_earlier_notes() -> None:
    assert by_lines([(line(1000, credited=400), 600)]).total == 600
    with pytest.raises(ValidationFailed) as refused:
        by_lines(
            [
                (line(1000, credited=400, public_id="il_a"), 1),
                (line(1000, credited=400, public_id="il_b"), 601),
            ]
        )
    assert refused.value.error_code == "credit_note_exceeds_line"
    assert [e.field for e in refused.value.errors] == ["lines[1].amount"]


def test_a_discount_line_or_a_negative_net_cannot_be_credited() -> None:
    with pytest.raises(ValidationFailed):
        by_lines([(line(-200), 1)])


def test_a_whole_invoice_amount_is_the_total_and_each_rate_takes_its_share() -> None:
    # Invoice: total 11900 with 1900 of exclusive VAT. A note of 5950 reverses 950 of it.
    note = by_amount(5950, 11900, [Tax("txr_vat", 1900, False)], "Credit")
    tax = half_up(Decimal(5950) * 1900 / 11900)
    assert (note.lines[0].amount, note.tax_total, note.total, note.subtotal) == (
        5950 - tax,
        tax,
        5950,
        5950 - tax,
    )
    assert note.lines[0].invoice_line is None


def test_a_whole_invoice_amount_with_inclusive_tax_keeps_the_line_at_the_amount() -> None:
    note = by_amount(1000, 2380, [Tax("txr_vat", 380, True)], "Credit")
    assert (note.lines[0].amount, note.tax_total, note.total) == (
        1000,
        half_up(Decimal(1000) * 380 / 2380),
        1000,
    )


@given(
    total=st.integers(1, 10**9),
    tax_share=st.integers(0, 100),
    amount_share=st.integers(1, 100),
    inclusive=st.booleans(),
)
def test_a_whole_invoice_note_totals_its_amount(
    total: int, tax_share: int, amount_share: int, inclusive: bool
) -> None:
    invoice_tax = total * tax_share // 200
    amount = max(total * amount_share // 100, 1)
    note = by_amount(amount, total, [Tax("txr", invoice_tax, inclusive)], "Credit")
    tax = half_up(Decimal(amount) * invoice_tax / total)
    assert note.total == amount and note.tax_total == tax
    assert note.subtotal == (amount if inclusive else amount - tax)


def test_notes_together_never_exceed_the_invoice() -> None:
    check_invoice_room(600, 400, 1000)
    with pytest.raises(ValidationFailed) as refused:
        check_invoice_room(601, 400, 1000)
    assert refused.value.error_code == "credit_note_exceeds_invoice"


def test_on_an_open_invoice_a_note_first_takes_off_what_is_due() -> None:
    assert split(300, invoice_open=True, amount_due=1000) == (300, 0)
    assert split(1000, invoice_open=True, amount_due=400) == (400, 600)
    assert split(300, invoice_open=False, amount_due=0) == (0, 300)


def test_an_invoice_without_a_positive_total_has_no_tax_to_share() -> None:
    note = by_amount(100, 0, [Tax("txr", 0, False)], "Credit")
    assert (note.total, note.tax_total) == (100, 0)
    with pytest.raises(ValidationFailed):
        check_invoice_room(note.total, 0, 0)
