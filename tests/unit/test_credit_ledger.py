"""The credit ledger's pure rules: a grant's status after each kind of entry, and when the balance
counts as having fallen below the customer's low threshold."""

from __future__ import annotations

from datetime import UTC, datetime

import pytest
from hypothesis import given
from hypothesis import strategies as st

from billing.credits.ledger import Movement, _move, fell_below
from billing.credits.models import CreditGrant

AT = datetime(2026, 11, 21, tzinfo=UTC)
EARLIER = datetime(2026, 11, 1, tzinfo=UTC)


def grant(status: str, available: int, amount: int = 100, voided_at: datetime | None = None) -> CreditGrant:
    return CreditGrant(id="crg_x", status=status, available=available, amount=amount, voided_at=voided_at)


@pytest.mark.parametrize(
    ("status", "available", "type_", "amount", "after"),
    [
        ("pending", 0, "granted", 100, ("active", 100)),
        ("active", 100, "applied", -40, ("active", 60)),
        ("active", 40, "applied", -40, ("depleted", 0)),
        ("depleted", 0, "restored", 40, ("active", 40)),
        ("expired", 0, "restored", 40, ("expired", 40)),  # its expired entry follows
        ("active", 60, "expired", -60, ("expired", 0)),
        ("active", 60, "voided", -60, ("voided", 0)),
    ],
)
def test_each_entry_moves_the_grant(
    status: str, available: int, type_: str, amount: int, after: tuple[str, int]
) -> None:
    moved = grant(status, available)
    _move(Movement(moved, type_, amount), at=AT)
    assert (moved.status, moved.available) == after


def test_granting_sets_the_effective_instant_and_a_second_void_keeps_the_first() -> None:
    granted = grant("pending", 0)
    _move(Movement(granted, "granted", 100), at=AT)
    assert granted.effective_at == AT
    voided = grant("voided", 30, voided_at=EARLIER)
    _move(Movement(voided, "voided", -30), at=AT)
    assert (voided.voided_at, voided.available) == (EARLIER, 0)


@pytest.mark.parametrize(
    ("before", "after", "threshold", "fell"),
    [
        (700, 400, 500, True),
        (500, 499, 500, True),
        (500, 500, 500, False),
        (400, 0, 500, False),  # already below: no second alert
        (600, 500, 500, False),
        (300, 700, 500, False),
        (700, 0, None, False),
        (0, 0, 0, False),
    ],
)
def test_falling_below_the_threshold(before: int, after: int, threshold: int | None, fell: bool) -> None:
    assert fell_below(before, after, threshold) is fell


@given(
    st.lists(st.integers(min_value=-1000, max_value=1000), max_size=40),
    st.integers(min_value=0, max_value=3000),
)
def test_alerts_alternate_with_recoveries(moves: list[int], threshold: int) -> None:
    """Over any walk of the balance, between two alerts it was back at or above the threshold."""
    balance, armed = threshold, True
    for move in moves:
        after = max(balance + move, 0)
        if fell_below(balance, after, threshold):
            assert armed
            armed = False
        if after >= threshold:
            armed = True
        balance = after
