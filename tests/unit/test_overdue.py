"""When an invoice is overdue: open, something due, and strictly past its due date."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

import pytest

from billing.invoicing.models import Invoice
from billing.invoicing.schemas import is_overdue

DUE = datetime(2026, 12, 1, tzinfo=UTC)
AFTER = DUE + timedelta(microseconds=1)


def invoice(status: str = "open", amount_due: int = 100, due_at: datetime | None = DUE) -> Invoice:
    return Invoice(status=status, amount_due=amount_due, due_at=due_at)


@pytest.mark.parametrize(
    ("row", "now", "expected"),
    [
        (invoice(), AFTER, True),
        (invoice(), DUE, False),
        (invoice(), DUE - timedelta(days=1), False),
        (invoice(amount_due=0), AFTER, False),
        (invoice(status="paid"), AFTER, False),
        (invoice(status="draft", due_at=None), AFTER, False),
        (invoice(status="uncollectible"), AFTER, False),
    ],
)
def test_overdue_at_an_instant(row: Invoice, now: datetime, expected: bool) -> None:
    assert is_overdue(row, now) is expected


def test_without_an_instant_an_invoice_is_overdue_once_the_overdue_job_noticed_it() -> None:
    row = invoice()
    assert is_overdue(row, None) is False
    row.overdue_notified_at = AFTER
    assert is_overdue(row, None) is True
    row.status = "paid"
    assert is_overdue(row, None) is False
