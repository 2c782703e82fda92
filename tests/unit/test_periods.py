from __future__ import annotations

from datetime import UTC, datetime, time, timedelta, timezone, tzinfo
from fractions import Fraction
from zoneinfo import ZoneInfo

import pytest
from hypothesis import given
from hypothesis import strategies as st

from billing.invoicing import periods as periods_module
from billing.invoicing.periods import (
    Period,
    covered_share,
    ended_periods,
    first_period,
    month_start,
    next_month_start,
    next_period,
    period_containing,
    prorated_fee,
)

US = timedelta(microseconds=1)
HOUR = timedelta(hours=1)
TIMEZONES = [
    "UTC",
    "Europe/Berlin",
    "America/New_York",
    "Asia/Kolkata",
    "Asia/Kathmandu",
    "Australia/Lord_Howe",
    "America/Santiago",
    "Asia/Tehran",
    "Pacific/Chatham",
]


def utc(*args: int) -> datetime:
    return datetime(*args, tzinfo=UTC)


def local(at: datetime, tz: str) -> datetime:
    return at.astimezone(ZoneInfo(tz)).replace(tzinfo=None)


def is_local_month_start(at: datetime, tz: str) -> bool:
    """The local date is a 1st, the instant before is on an earlier date, and the clock shows 00:00
    or has just jumped (a transition at this very instant)."""
    zone = ZoneInfo(tz)
    wall, before = local(at, tz), local(at - US, tz)
    jumped = at.astimezone(zone).utcoffset() != (at - US).astimezone(zone).utcoffset()
    return wall.day == 1 and before.date() < wall.date() and (wall.time() == time(0) or jumped)


def month_length(year: int, month: int, tz: str) -> timedelta:
    start = month_start(datetime(year, month, 15, tzinfo=ZoneInfo(tz)), tz)
    return next_month_start(start, tz) - start


def walk(starts_at: datetime, ends_at: datetime | None, tz: str, horizon: datetime) -> list[Period]:
    """Every period, by first_period/next_period, up to the first one that ends after `horizon`."""
    periods: list[Period] = []
    period = first_period(starts_at, ends_at, tz)
    while period is not None:
        periods.append(period)
        if period.end > horizon:
            break
        period = next_period(period, ends_at, tz)
    return periods


# --- month starts ----------------------------------------------------------------------------


def test_utc_first_period_runs_to_the_next_month() -> None:
    assert first_period(utc(2026, 1, 15, 12), None, "UTC") == Period(utc(2026, 1, 15, 12), utc(2026, 2, 1))


def test_berlin_month_starts_follow_dst() -> None:
    assert month_start(utc(2026, 3, 10), "Europe/Berlin") == utc(2026, 2, 28, 23)
    assert next_month_start(utc(2026, 3, 10), "Europe/Berlin") == utc(2026, 3, 31, 22)
    assert month_length(2026, 3, "Europe/Berlin") == (31 * 24 - 1) * HOUR
    assert month_length(2026, 10, "Europe/Berlin") == (31 * 24 + 1) * HOUR
    assert month_length(2026, 6, "Europe/Berlin") == 30 * 24 * HOUR


def test_new_york_november_has_721_hours() -> None:
    assert month_start(utc(2026, 11, 15), "America/New_York") == utc(2026, 11, 1, 4)
    assert next_month_start(utc(2026, 11, 15), "America/New_York") == utc(2026, 12, 1, 5)
    assert month_length(2026, 11, "America/New_York") == 721 * HOUR


def test_month_start_is_at_the_local_midnight_of_the_1st() -> None:
    # The instant just before local midnight belongs to the earlier month.
    assert month_start(utc(2026, 5, 1, 0), "Asia/Kolkata") == utc(2026, 4, 30, 18, 30)
    assert month_start(utc(2026, 4, 30, 18, 29, 59, 999999), "Asia/Kolkata") == utc(2026, 3, 31, 18, 30)
    assert month_start(utc(2026, 5, 1, 0), "Asia/Kathmandu") == utc(2026, 4, 30, 18, 15)
    assert month_start(utc(2026, 6, 10), "Asia/Tehran") == utc(2026, 5, 31, 20, 30)
    assert month_start(utc(2026, 6, 10), "Pacific/Chatham") == utc(2026, 5, 31, 11, 15)


def test_lord_howe_half_hour_dst() -> None:
    # +11:00 in summer, +10:30 in winter; DST ended on 2026-04-05, so April is 720.5 hours long.
    assert month_start(utc(2026, 1, 10), "Australia/Lord_Howe") == utc(2025, 12, 31, 13)
    assert month_start(utc(2026, 4, 10), "Australia/Lord_Howe") == utc(2026, 3, 31, 13)
    assert month_start(utc(2026, 5, 10), "Australia/Lord_Howe") == utc(2026, 4, 30, 13, 30)
    assert month_length(2026, 4, "Australia/Lord_Howe") == 720 * HOUR + HOUR / 2


@pytest.mark.parametrize(
    ("tz", "day1", "expected", "wall"),
    [
        # Paraguay: DST began at 00:00 on 2023-10-01, the clock jumping from 00:00 to 01:00.
        ("America/Asuncion", datetime(2023, 10, 1), utc(2023, 10, 1, 4), time(1)),
        # Cuba: DST began at 00:00 on 2012-04-01.
        ("America/Havana", datetime(2012, 4, 1), utc(2012, 4, 1, 5), time(1)),
        # Nepal moved from +05:30 to +05:45 at 00:00 on 1986-01-01: 15 minutes never existed.
        ("Asia/Kathmandu", datetime(1986, 1, 1), utc(1985, 12, 31, 18, 30), time(0, 15)),
    ],
)
def test_nonexistent_midnight_starts_the_month_at_the_transition(
    tz: str, day1: datetime, expected: datetime, wall: time
) -> None:
    zone = ZoneInfo(tz)
    # 00:00 does not exist: it does not survive a round trip through UTC, whatever the fold.
    for fold in (0, 1):
        assert local(day1.replace(tzinfo=zone, fold=fold).astimezone(UTC), tz) != day1
    assert month_start(expected + timedelta(days=3), tz) == expected
    assert next_month_start(expected - US, tz) == expected
    assert local(expected, tz) == datetime.combine(day1.date(), wall)
    assert local(expected - US, tz) == day1 - US
    assert is_local_month_start(expected, tz)


def test_twice_existing_midnight_starts_the_month_at_the_earlier_one() -> None:
    # Cuba: DST ended at 01:00 on 2020-11-01, the clock going back to 00:00.
    tz = "America/Havana"
    first, second = utc(2020, 11, 1, 4), utc(2020, 11, 1, 5)
    assert local(first, tz) == local(second, tz) == datetime(2020, 11, 1)
    assert month_start(second, tz) == first
    assert month_start(first + HOUR / 2, tz) == first
    assert next_month_start(first - US, tz) == first
    assert month_length(2020, 10, tz) == 31 * 24 * HOUR
    assert month_length(2020, 11, tz) == 721 * HOUR


class OneTransition(tzinfo):
    """A made-up zone with one offset change at `at` (UTC), with PEP 495 folds, for shapes that tzdata
    lacks on a 1st: a jump that starts before midnight, and a fall back from after midnight to before it."""

    def __init__(self, at: datetime, before: timedelta, after: timedelta) -> None:
        self.at, self.before, self.after = at.replace(tzinfo=None), before, after
        self.low, self.high = sorted((self.at + before, self.at + after))  # the gap or the repeated hour

    def utcoffset(self, dt: datetime | None) -> timedelta:
        assert dt is not None
        wall = dt.replace(tzinfo=None, fold=0)
        if self.low <= wall < self.high:
            return self.before if dt.fold == 0 else self.after
        return self.before if wall < self.low else self.after

    def fromutc(self, dt: datetime) -> datetime:
        instant = dt.replace(tzinfo=None)
        if instant < self.at:
            return (instant + self.before).replace(tzinfo=self)
        wall = instant + self.after
        fold = int(self.after < self.before and self.low <= wall < self.high)
        return wall.replace(tzinfo=self, fold=fold)

    def dst(self, dt: datetime | None) -> None:
        return None

    def tzname(self, dt: datetime | None) -> str:
        return "SYN"


def test_a_jump_over_midnight_that_starts_before_it(monkeypatch: pytest.MonkeyPatch) -> None:
    # 23:30 on 31 March jumps to 00:30 on 1 April: April starts at the jump, when the clock shows 00:30.
    zone = OneTransition(utc(2030, 3, 31, 23, 30), timedelta(0), HOUR)
    monkeypatch.setattr(periods_module, "_zone", lambda name: zone)
    tz = "Test/JumpBeforeMidnight"
    assert month_start(utc(2030, 4, 10), tz) == utc(2030, 3, 31, 23, 30)
    assert next_month_start(utc(2030, 3, 31, 23, 29, 59, 999999), tz) == utc(2030, 3, 31, 23, 30)
    assert month_start(utc(2030, 3, 10), tz) == utc(2030, 3, 1)
    assert month_start(utc(2030, 5, 10), tz) == utc(2030, 4, 30, 23)


def test_a_fall_back_over_midnight(monkeypatch: pytest.MonkeyPatch) -> None:
    # 00:30 on 1 April goes back to 23:30 on 31 March: April starts at the first 00:00, and the
    # repeated half hour of 31 March after it belongs to April too.
    zone = OneTransition(utc(2030, 3, 31, 23, 30), HOUR, timedelta(0))
    monkeypatch.setattr(periods_module, "_zone", lambda name: zone)
    tz = "Test/FallBackOverMidnight"
    april, may = utc(2030, 3, 31, 23), utc(2030, 5, 1)
    repeated = utc(2030, 3, 31, 23, 45)
    assert repeated.astimezone(zone).replace(tzinfo=None) == datetime(2030, 3, 31, 23, 45)
    assert month_start(repeated, tz) == april
    assert next_month_start(repeated, tz) == may
    assert next_month_start(april - US, tz) == april
    assert period_containing(utc(2030, 3, 15), None, tz, repeated) == Period(april, may)
    assert covered_share(Period(repeated, may), tz) == Fraction((may - repeated) // US, (may - april) // US)


def test_naive_datetimes_are_refused() -> None:
    naive = datetime(2026, 1, 1)
    with pytest.raises(ValueError, match="aware"):
        month_start(naive, "UTC")
    with pytest.raises(ValueError, match="aware"):
        next_month_start(naive, "UTC")
    with pytest.raises(ValueError, match="aware"):
        first_period(naive, None, "UTC")
    with pytest.raises(ValueError, match="aware"):
        first_period(utc(2026, 1, 1), naive, "UTC")
    with pytest.raises(ValueError, match="aware"):
        period_containing(utc(2026, 1, 1), None, "UTC", naive)
    with pytest.raises(ValueError, match="aware"):
        ended_periods(utc(2026, 1, 1), None, "UTC", after=naive, until=utc(2026, 3, 1))
    with pytest.raises(ValueError, match="aware"):
        Period(naive, utc(2026, 2, 1))


def test_results_are_utc_whatever_the_input_offset() -> None:
    ist = timezone(timedelta(hours=5, minutes=30))
    period = first_period(datetime(2026, 1, 15, 17, 30, tzinfo=ist), None, "UTC")
    assert period == Period(utc(2026, 1, 15, 12), utc(2026, 2, 1))
    assert period is not None and period.start.tzinfo is UTC and period.end.tzinfo is UTC
    assert month_start(datetime(2026, 2, 1, 1, tzinfo=ist), "UTC").tzinfo is UTC


# --- periods ----------------------------------------------------------------------------------


def test_periods_of_a_cancelled_subscription() -> None:
    starts, ends = utc(2026, 1, 15, 12), utc(2026, 3, 10)
    assert walk(starts, ends, "UTC", utc(2030, 1, 1)) == [
        Period(starts, utc(2026, 2, 1)),
        Period(utc(2026, 2, 1), utc(2026, 3, 1)),
        Period(utc(2026, 3, 1), ends),
    ]
    assert first_period(starts, starts, "UTC") is None
    assert first_period(starts, starts - US, "UTC") is None
    assert next_period(Period(utc(2026, 3, 1), ends), ends, "UTC") is None
    # Cancelled exactly at a month start: the last period is a whole month.
    assert next_period(Period(utc(2026, 2, 1), utc(2026, 3, 1)), utc(2026, 3, 1), "UTC") is None


def test_period_containing_examples() -> None:
    starts, ends = utc(2026, 1, 15, 12), utc(2026, 3, 10)
    assert period_containing(starts, ends, "UTC", starts - US) is None
    assert period_containing(starts, ends, "UTC", starts) == Period(starts, utc(2026, 2, 1))
    assert period_containing(starts, ends, "UTC", utc(2026, 2, 1)) == Period(utc(2026, 2, 1), utc(2026, 3, 1))
    assert period_containing(starts, ends, "UTC", ends - US) == Period(utc(2026, 3, 1), ends)
    assert period_containing(starts, ends, "UTC", ends) is None
    assert period_containing(starts, None, "UTC", utc(2040, 5, 5)) == Period(utc(2040, 5, 1), utc(2040, 6, 1))


def test_ended_periods_examples() -> None:
    starts = utc(2026, 1, 15, 12)
    jan, feb, mar = (
        Period(starts, utc(2026, 2, 1)),
        Period(utc(2026, 2, 1), utc(2026, 3, 1)),
        Period(utc(2026, 3, 1), utc(2026, 4, 1)),
    )
    assert ended_periods(starts, None, "UTC", after=None, until=utc(2026, 2, 1) - US) == []
    assert ended_periods(starts, None, "UTC", after=None, until=utc(2026, 2, 1)) == [jan]
    assert ended_periods(starts, None, "UTC", after=None, until=utc(2026, 4, 2)) == [jan, feb, mar]
    assert ended_periods(starts, None, "UTC", after=jan.end, until=utc(2026, 4, 2)) == [feb, mar]
    assert ended_periods(starts, None, "UTC", after=mar.end, until=utc(2026, 4, 2)) == []
    assert ended_periods(starts, utc(2026, 2, 10), "UTC", after=jan.end, until=utc(2026, 4, 2)) == [
        Period(utc(2026, 2, 1), utc(2026, 2, 10))
    ]


# --- proration --------------------------------------------------------------------------------


def test_full_month_is_the_full_fee() -> None:
    period = Period(utc(2026, 2, 1), utc(2026, 3, 1))
    assert covered_share(period, "UTC") == 1
    assert prorated_fee(999, period, "UTC") == 999
    berlin_march = Period(utc(2026, 2, 28, 23), utc(2026, 3, 31, 22))
    assert covered_share(berlin_march, "Europe/Berlin") == 1
    assert prorated_fee(4999, berlin_march, "Europe/Berlin") == 4999


def test_half_of_a_30_day_month() -> None:
    period = Period(utc(2026, 4, 16), utc(2026, 5, 1))
    assert covered_share(period, "UTC") == Fraction(1, 2)
    assert prorated_fee(1000, period, "UTC") == 500
    assert prorated_fee(3, period, "UTC") == 2  # 1.5 rounds up
    assert prorated_fee(1, period, "UTC") == 1  # 0.5 rounds up
    assert prorated_fee(-1, period, "UTC") == -1  # half away from zero, as decimal.ROUND_HALF_UP
    assert prorated_fee(0, period, "UTC") == 0


def test_start_and_cancel_in_the_same_month() -> None:
    period = first_period(utc(2026, 4, 10, 12), utc(2026, 4, 20, 12), "UTC")
    assert period == Period(utc(2026, 4, 10, 12), utc(2026, 4, 20, 12))
    assert covered_share(period, "UTC") == Fraction(1, 3)
    assert prorated_fee(1000, period, "UTC") == 333
    assert prorated_fee(2000, period, "UTC") == 667


def test_berlin_march_share_uses_743_hours() -> None:
    # From local 2026-03-16 00:00 (CET) to 2026-04-01 00:00 (CEST): 16 days less the DST hour.
    period = first_period(utc(2026, 3, 15, 23), None, "Europe/Berlin")
    assert period == Period(utc(2026, 3, 15, 23), utc(2026, 3, 31, 22))
    assert covered_share(period, "Europe/Berlin") == Fraction(16 * 24 - 1, 743)
    assert prorated_fee(74300, period, "Europe/Berlin") == 38300
    assert prorated_fee(1000, period, "Europe/Berlin") == 515  # 515.47...


def test_share_of_a_period_spanning_two_months_is_refused() -> None:
    with pytest.raises(ValueError, match="spans"):
        covered_share(Period(utc(2026, 1, 15), utc(2026, 2, 15)), "UTC")


def test_fee_must_be_an_int() -> None:
    period = Period(utc(2026, 2, 1), utc(2026, 3, 1))
    with pytest.raises(TypeError):
        prorated_fee(9.99, period, "UTC")  # type: ignore[arg-type]


# --- properties -------------------------------------------------------------------------------

timezones = st.sampled_from(TIMEZONES)
instants = st.datetimes(
    min_value=datetime(2000, 1, 1), max_value=datetime(2040, 1, 1), timezones=st.just(UTC)
)
# Up to about three years, so that walks stay short.
spans = st.integers(min_value=0, max_value=3 * 366 * 24 * 3600 * 10**6).map(lambda us: us * US)


@st.composite
def instants_in(draw: st.DrawFn, tz: str) -> datetime:
    """Arbitrary instants, month starts, and their neighbours."""
    at = draw(instants)
    kind = draw(st.sampled_from(["any", "start", "before_start", "after_start"]))
    if kind == "any":
        return at
    start = month_start(at, tz)
    return {"start": start, "before_start": start - US, "after_start": start + US}[kind]


@st.composite
def subscriptions(draw: st.DrawFn) -> tuple[str, datetime, datetime | None]:
    tz = draw(timezones)
    starts_at = draw(instants_in(tz))
    if draw(st.booleans()):
        return tz, starts_at, None
    ends_at = draw(st.one_of(spans.map(lambda span: starts_at + span), instants_in(tz)))
    return tz, starts_at, ends_at


def horizon_of(starts_at: datetime, ends_at: datetime | None) -> datetime:
    return ends_at if ends_at is not None else starts_at + timedelta(days=3 * 366)


@given(subscriptions())
def test_periods_are_contiguous_local_months(sub: tuple[str, datetime, datetime | None]) -> None:
    tz, starts_at, ends_at = sub
    periods = walk(starts_at, ends_at, tz, horizon_of(starts_at, ends_at))
    if ends_at is not None and ends_at <= starts_at:
        assert periods == []
        return
    assert periods[0].start == starts_at
    if ends_at is not None:
        assert periods[-1].end == ends_at
    for index, period in enumerate(periods):
        assert period.start < period.end
        assert period.start.tzinfo is UTC and period.end.tzinfo is UTC
        if index > 0:
            assert period.start == periods[index - 1].end
            assert is_local_month_start(period.start, tz)
        if index < len(periods) - 1:
            # Ends at the start of the following local month: a whole month unless it is the first.
            assert is_local_month_start(period.end, tz)
            start_month, end_month = local(period.start, tz), local(period.end, tz)
            assert (end_month.year * 12 + end_month.month) - (start_month.year * 12 + start_month.month) == 1
            if index > 0:
                assert covered_share(period, tz) == 1
        share = covered_share(period, tz)
        assert 0 < share <= 1


@given(subscriptions(), spans, st.data())
def test_every_instant_lies_in_exactly_one_period(
    sub: tuple[str, datetime, datetime | None], offset: timedelta, data: st.DataObject
) -> None:
    tz, starts_at, ends_at = sub
    at = data.draw(st.sampled_from([starts_at + offset, starts_at, starts_at - US, starts_at + US]))
    if ends_at is not None:
        at = data.draw(st.sampled_from([at, ends_at, ends_at - US]))
    periods = walk(starts_at, ends_at, tz, at)
    containing = [period for period in periods if period.start <= at < period.end]
    found = period_containing(starts_at, ends_at, tz, at)
    if at < starts_at or (ends_at is not None and at >= ends_at):
        assert containing == []
        assert found is None
    else:
        assert containing == [found]


@given(timezones, instants)
def test_month_start_brackets_the_instant(tz: str, at: datetime) -> None:
    start, following = month_start(at, tz), next_month_start(at, tz)
    assert start <= at < following
    assert start.tzinfo is UTC and following.tzinfo is UTC
    assert is_local_month_start(start, tz) and is_local_month_start(following, tz)
    assert month_start(start, tz) == start
    assert month_start(following, tz) == following
    assert next_month_start(start, tz) == following
    assert next_month_start(start - US, tz) == start
    assert month_start(following - US, tz) == start
    # A local month lasts 28 to 31 days, give or take at most a few hours of offset change.
    assert timedelta(days=27) < following - start < timedelta(days=32)


@given(timezones, instants, st.integers(min_value=1, max_value=24), st.integers(min_value=0, max_value=10**9))
def test_consecutive_full_months_sum_to_the_fee(tz: str, at: datetime, months: int, fee: int) -> None:
    start = next_month_start(at, tz)
    periods = walk(start, None, tz, start)
    while len(periods) < months:
        following = next_period(periods[-1], None, tz)
        assert following is not None
        periods.append(following)
    assert all(covered_share(period, tz) == 1 for period in periods)
    assert sum(prorated_fee(fee, period, tz) for period in periods) == months * fee


@given(timezones, instants, st.data(), st.integers(min_value=-(10**9), max_value=10**9))
def test_split_month_shares_sum_to_one_and_fees_round_half_up(
    tz: str, at: datetime, data: st.DataObject, fee: int
) -> None:
    start, end = month_start(at, tz), next_month_start(at, tz)
    cut = start + data.draw(st.integers(min_value=1, max_value=(end - start) // US - 1)) * US
    before, after = Period(start, cut), Period(cut, end)
    shares = covered_share(before, tz), covered_share(after, tz)
    assert all(0 < share < 1 for share in shares)
    assert sum(shares) == 1
    assert shares[0] == Fraction((cut - start) // US, (end - start) // US)
    for period, share in zip((before, after), shares, strict=True):
        exact, rounded = fee * share, prorated_fee(fee, period, tz)
        assert abs(exact - rounded) <= Fraction(1, 2)
        if abs(exact - rounded) == Fraction(1, 2):
            assert abs(rounded) > abs(exact)  # ties go away from zero


@given(subscriptions(), spans, st.data())
def test_ended_periods_are_those_ended_by_until(
    sub: tuple[str, datetime, datetime | None], offset: timedelta, data: st.DataObject
) -> None:
    tz, starts_at, ends_at = sub
    until = starts_at + offset
    periods = walk(starts_at, ends_at, tz, until)
    candidates: list[datetime | None] = [None, starts_at - US, starts_at, until]
    candidates += [period.end for period in periods] + [period.start + US for period in periods]
    after = data.draw(st.sampled_from(candidates))
    expected = [
        period for period in periods if period.end <= until and (after is None or period.start >= after)
    ]
    assert ended_periods(starts_at, ends_at, tz, after=after, until=until) == expected
