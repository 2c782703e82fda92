"""Seat segments and trials cut a period's base fee: one line per quantity segment, each
round_half_up(base_fee x q x seconds / seconds of the local month), the pieces tiling the period;
a trial period has only zero lines."""

from __future__ import annotations

import itertools
from datetime import UTC, datetime, timedelta
from decimal import ROUND_HALF_UP, Decimal
from zoneinfo import ZoneInfo

from hypothesis import given, settings
from hypothesis import strategies as st

from billing.core.clock import format_timestamp
from billing.invoicing import lines, schedule
from billing.invoicing.models import Plan, Subscription

ZONES = ["UTC", "America/New_York", "Asia/Kolkata", "Asia/Kathmandu", "Australia/Lord_Howe"]


def month(year: int, number: int, timezone: str) -> tuple[datetime, datetime]:
    zone = ZoneInfo(timezone)
    start = datetime(year, number, 1, tzinfo=zone)
    end = datetime(year + number // 12, number % 12 + 1, 1, tzinfo=zone)
    return start.astimezone(UTC), end.astimezone(UTC)


def oracle(base_fee: int, quantity: int, start: datetime, end: datetime, whole: timedelta) -> int:
    # One division, last: a quotient rounded to 28 digits first could fall just short of a half.
    seconds = int((end - start).total_seconds())
    exact = Decimal(base_fee * quantity * seconds) / Decimal(int(whole.total_seconds()))
    return int(exact.quantize(Decimal(1), ROUND_HALF_UP))


def subscription(
    starts_at: datetime, timezone: str, seats: list[tuple[datetime, int]], trial_end: datetime | None = None
) -> Subscription:
    return Subscription(
        id="sub_test",
        starts_at=starts_at,
        timezone=timezone,
        cancel_at=None,
        trial_end=trial_end,
        quantities=[{"from": format_timestamp(at), "quantity": q} for at, q in seats],
    )


PLAN = Plan(id="plan_test", name="Pro", base_fee=9999, prices=[], updated_at=datetime(2026, 1, 1, tzinfo=UTC))


@settings(max_examples=200)
@given(
    timezone=st.sampled_from(ZONES),
    when=st.tuples(st.integers(2026, 2027), st.integers(1, 12)),
    cuts=st.lists(st.tuples(st.integers(1, 10**7), st.integers(1, 50)), max_size=5),
    first=st.integers(1, 50),
)
def test_base_fee_lines_follow_the_seat_segments(
    timezone: str, when: tuple[int, int], cuts: list[tuple[int, int]], first: int
) -> None:
    start, end = month(*when, timezone)
    seats = [(start, first)]
    for offset, quantity in sorted(cuts):
        at = start + timedelta(seconds=offset % int((end - start).total_seconds()))
        if at > seats[-1][0]:
            seats.append((at, quantity))
    sub = subscription(start, timezone, seats)
    (period,) = schedule.ended_periods(sub, end)
    drafted = lines.period_lines(PLAN, {}, period, sub, {})
    assert [d.kind for d in drafted] == ["base_fee"] * len(drafted)
    assert drafted[0].period_start == start and drafted[-1].period_end == end
    for before, after in itertools.pairwise(drafted):
        assert before.period_end == after.period_start and before.quantity != after.quantity
    for line in drafted:
        quantity = schedule.quantity_at(sub, line.period_start)
        assert line.quantity == quantity
        assert line.amount == oracle(PLAN.base_fee, quantity, line.period_start, line.period_end, end - start)


@given(timezone=st.sampled_from(ZONES), days=st.integers(1, 60), quantity=st.integers(1, 9))
def test_a_trial_is_a_period_boundary_and_bills_zero(timezone: str, days: int, quantity: int) -> None:
    start, _ = month(2026, 11, timezone)
    starts_at = start + timedelta(hours=7)
    trial_end = starts_at + timedelta(days=days)
    sub = subscription(starts_at, timezone, [(starts_at, quantity)], trial_end)
    ended = schedule.ended_periods(sub, trial_end + timedelta(days=62))
    assert trial_end in {p.start for p in ended} and trial_end in {p.end for p in ended}
    for period in ended:
        drafted = lines.period_lines(PLAN, {}, period, sub, {})
        if period.end <= trial_end:
            assert [(d.kind, d.quantity, d.amount) for d in drafted] == [("trial", quantity, 0)]
        else:
            local = period.start.astimezone(ZoneInfo(timezone))
            month_start, month_end = month(local.year, local.month, timezone)
            expected = oracle(PLAN.base_fee, quantity, period.start, period.end, month_end - month_start)
            assert [(d.kind, d.amount) for d in drafted] == [("base_fee", expected)]
