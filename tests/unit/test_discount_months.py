"""A repeating discount's end: N calendar months on the customer's wall clock."""

from __future__ import annotations

import calendar
from datetime import UTC, datetime
from zoneinfo import ZoneInfo

import pytest
from hypothesis import given
from hypothesis import strategies as st

from billing.invoicing.discounts import add_months


@pytest.mark.parametrize(
    ("start", "months", "timezone", "end"),
    [
        (datetime(2026, 1, 31, 12, tzinfo=UTC), 1, "UTC", datetime(2026, 2, 28, 12, tzinfo=UTC)),
        (datetime(2028, 1, 31, 12, tzinfo=UTC), 1, "UTC", datetime(2028, 2, 29, 12, tzinfo=UTC)),
        (datetime(2026, 12, 15, tzinfo=UTC), 1, "UTC", datetime(2027, 1, 15, tzinfo=UTC)),
        (datetime(2026, 3, 31, tzinfo=UTC), 11, "UTC", datetime(2027, 2, 28, tzinfo=UTC)),
        # Winter to summer time: the same wall time, an hour less of UTC.
        (datetime(2026, 2, 10, 5, tzinfo=UTC), 3, "America/New_York", datetime(2026, 5, 10, 4, tzinfo=UTC)),
        (datetime(2026, 7, 1, 22, tzinfo=UTC), 6, "Europe/Berlin", datetime(2027, 1, 1, 23, tzinfo=UTC)),
        # The local date, not the UTC one, picks the day: Feb 28 23:30 UTC is Mar 1 in Kolkata.
        (
            datetime(2026, 2, 28, 23, 30, tzinfo=UTC),
            1,
            "Asia/Kolkata",
            datetime(2026, 3, 31, 23, 30, tzinfo=UTC),
        ),
    ],
)
def test_months_are_added_on_the_local_calendar(
    start: datetime, months: int, timezone: str, end: datetime
) -> None:
    assert add_months(start, months, timezone) == end


@given(
    start=st.datetimes(min_value=datetime(2000, 1, 1), max_value=datetime(2090, 1, 1)),
    months=st.integers(1, 120),
    timezone=st.sampled_from(["UTC", "Asia/Tokyo", "Asia/Kolkata"]),
)
def test_without_clock_changes_the_wall_time_stays_and_the_day_is_clipped(
    start: datetime, months: int, timezone: str
) -> None:
    zone = ZoneInfo(timezone)
    local = start.replace(tzinfo=zone)
    end = add_months(local.astimezone(UTC), months, timezone).astimezone(zone)
    total = local.year * 12 + local.month - 1 + months
    assert (end.year, end.month) == (total // 12, total % 12 + 1)
    assert end.day == min(local.day, calendar.monthrange(end.year, end.month)[1])
    assert end.time() == local.time()
    assert end.tzinfo is not None and add_months(local, months, timezone).tzinfo == UTC
