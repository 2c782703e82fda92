from __future__ import annotations

import zoneinfo
from datetime import UTC, datetime, timedelta, timezone

import pytest
from hypothesis import given
from hypothesis import strategies as st

from billing.core.clock import (
    Clock,
    FrozenClock,
    InvalidTimestamp,
    SystemClock,
    assume_utc,
    ensure_utc,
    format_timestamp,
    monotonic_ns,
    parse_timestamp,
    wall_time_ns,
)

IST = timezone(timedelta(hours=5, minutes=30))
NAIVE = datetime(2026, 11, 21, 13, 0, 0)
EPOCH = datetime(1970, 1, 1, tzinfo=UTC)

# RFC 3339 offsets: whole minutes, strictly less than a day.
offsets = st.integers(-(24 * 60 - 1), 24 * 60 - 1).map(lambda minutes: timezone(timedelta(minutes=minutes)))
# A day's margin at both ends so that converting to UTC cannot leave datetime's range.
aware_datetimes = st.datetimes(
    min_value=datetime(1, 1, 2), max_value=datetime(9999, 12, 30), timezones=offsets
)


# --- clocks ---------------------------------------------------------------------------------


def from_epoch_ns(ns: int) -> datetime:
    return EPOCH + timedelta(microseconds=ns // 1000)


def test_system_clock_reads_the_current_utc_time() -> None:
    before = from_epoch_ns(wall_time_ns())
    now = SystemClock().now()
    after = from_epoch_ns(wall_time_ns())
    assert now.tzinfo is UTC
    assert before - timedelta(milliseconds=50) <= now <= after + timedelta(milliseconds=50)


def test_frozen_clock_stands_still_until_told_to_move() -> None:
    clock = FrozenClock(datetime(2026, 11, 21, 13, 0, tzinfo=UTC))
    assert clock.now() == clock.now() == datetime(2026, 11, 21, 13, 0, tzinfo=UTC)


def test_frozen_clock_normalises_to_utc() -> None:
    clock = FrozenClock(datetime(2026, 11, 21, 18, 30, tzinfo=IST))
    assert clock.now() == datetime(2026, 11, 21, 13, 0, tzinfo=UTC)
    assert clock.now().tzinfo is UTC


def test_frozen_clock_refuses_naive_datetimes() -> None:
    with pytest.raises(ValueError, match="naive"):
        FrozenClock(NAIVE)
    clock = FrozenClock(datetime(2026, 1, 1, tzinfo=UTC))
    with pytest.raises(ValueError, match="naive"):
        clock.set(NAIVE)
    assert clock.now() == datetime(2026, 1, 1, tzinfo=UTC)


def test_frozen_clock_set_jumps_to_the_given_instant_in_utc() -> None:
    clock = FrozenClock(datetime(2026, 1, 1, tzinfo=UTC))
    clock.set(datetime(2026, 2, 1, 5, 30, tzinfo=IST))
    assert clock.now() == datetime(2026, 2, 1, 0, 0, tzinfo=UTC)
    assert clock.now().tzinfo is UTC


@given(
    st.datetimes(min_value=datetime(1900, 1, 1), max_value=datetime(2100, 1, 1), timezones=offsets),
    st.lists(st.timedeltas(min_value=timedelta(days=-1), max_value=timedelta(days=1)), max_size=20),
)
def test_frozen_clock_advances_by_the_sum_of_its_steps(start: datetime, steps: list[timedelta]) -> None:
    clock = FrozenClock(start)
    for step in steps:
        before = clock.now()
        assert clock.advance(step) == before + step == clock.now()
    assert clock.now() == start + sum(steps, timedelta())
    assert clock.now().tzinfo is UTC


def test_both_clocks_satisfy_the_clock_protocol() -> None:
    clocks: list[Clock] = [SystemClock(), FrozenClock(datetime(2026, 1, 1, tzinfo=UTC))]
    for clock in clocks:
        assert clock.now().utcoffset() == timedelta(0)


def test_wall_time_ns_is_nanoseconds_since_the_epoch() -> None:
    clock = SystemClock()
    before = clock.now()
    value = from_epoch_ns(wall_time_ns())
    after = clock.now()
    assert before - timedelta(milliseconds=50) <= value <= after + timedelta(milliseconds=50)


def test_monotonic_ns_never_goes_backwards() -> None:
    readings = [monotonic_ns() for _ in range(1000)]
    assert readings == sorted(readings)


# --- ensure_utc / assume_utc ----------------------------------------------------------------


def test_ensure_utc_converts_aware_datetimes_to_utc() -> None:
    converted = ensure_utc(datetime(2026, 11, 21, 18, 35, 9, tzinfo=IST))
    assert converted == datetime(2026, 11, 21, 13, 5, 9, tzinfo=UTC)
    assert converted.tzinfo is UTC


def test_ensure_utc_refuses_naive_datetimes() -> None:
    with pytest.raises(ValueError, match="naive"):
        ensure_utc(NAIVE)


def test_assume_utc_reads_naive_datetimes_as_utc() -> None:
    assert assume_utc(NAIVE) == datetime(2026, 11, 21, 13, 0, 0, tzinfo=UTC)
    assert assume_utc(NAIVE).tzinfo is UTC


def test_assume_utc_converts_aware_datetimes_to_utc() -> None:
    converted = assume_utc(datetime(2026, 11, 21, 18, 30, tzinfo=IST))
    assert converted == datetime(2026, 11, 21, 13, 0, tzinfo=UTC)
    assert converted.tzinfo is UTC


# --- RFC 3339 -------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("2026-11-21T13:05:09Z", datetime(2026, 11, 21, 13, 5, 9, tzinfo=UTC)),
        ("2026-11-21t13:05:09z", datetime(2026, 11, 21, 13, 5, 9, tzinfo=UTC)),
        ("2026-11-21T18:35:09+05:30", datetime(2026, 11, 21, 13, 5, 9, tzinfo=UTC)),
        ("2026-11-21T08:05:09-05:00", datetime(2026, 11, 21, 13, 5, 9, tzinfo=UTC)),
        ("2026-11-21T13:05:09+00:00", datetime(2026, 11, 21, 13, 5, 9, tzinfo=UTC)),
        ("2026-11-21T13:05:09-00:00", datetime(2026, 11, 21, 13, 5, 9, tzinfo=UTC)),
        ("2026-11-22T00:05:09+11:00", datetime(2026, 11, 21, 13, 5, 9, tzinfo=UTC)),
        ("2026-11-21T13:05:09.5Z", datetime(2026, 11, 21, 13, 5, 9, 500000, tzinfo=UTC)),
        ("2026-11-21T13:05:09.123456Z", datetime(2026, 11, 21, 13, 5, 9, 123456, tzinfo=UTC)),
        ("2026-11-21T13:05:09.123456789Z", datetime(2026, 11, 21, 13, 5, 9, 123456, tzinfo=UTC)),
        ("2026-11-21T23:59:59.9999999Z", datetime(2026, 11, 21, 23, 59, 59, 999999, tzinfo=UTC)),
    ],
)
def test_parse_timestamp_accepts_rfc3339_with_any_offset(text: str, expected: datetime) -> None:
    parsed = parse_timestamp(text)
    assert parsed == expected
    assert parsed.tzinfo is UTC


@pytest.mark.parametrize(
    "text",
    [
        "2026-11-21T13:05:09",  # naive: no offset
        "2026-11-21T13:05:09.123",
        "2026-11-21",  # date without time
        "2026-11-21T13:05Z",  # no seconds
        "2026-11-21 13:05:09Z",
        "20261121T130509Z",
        "2026-W47-6T13:05:09Z",
        "2026-11-21T13:05:09+0530",
        "2026-11-21T13:05:09+05",
        "2026-11-21T13:05:09.Z",
        "2026-11-21T13:05:09.1234567890Z",
        " 2026-11-21T13:05:09Z",
        "2026-11-21T13:05:09Z\n",
        "",
        "garbage",
        "1763730309",
    ],
)
def test_parse_timestamp_rejects_anything_but_rfc3339_with_offset(text: str) -> None:
    with pytest.raises(InvalidTimestamp, match="not an RFC 3339 timestamp"):
        parse_timestamp(text)


@pytest.mark.parametrize(
    "text",
    [
        "2026-13-01T00:00:00Z",
        "2026-02-29T00:00:00Z",
        "2026-11-21T24:00:00Z",
        "2026-11-21T13:60:00Z",
        "2026-12-31T23:59:60Z",  # leap seconds cannot be represented
        "2026-11-21T13:05:09+24:00",
        "2026-11-21T13:05:09+05:60",
        "0001-01-01T00:00:00+01:00",  # before datetime.min once in UTC
        "9999-12-31T23:59:59-01:00",
    ],
)
def test_parse_timestamp_rejects_impossible_instants(text: str) -> None:
    with pytest.raises(InvalidTimestamp, match="not a valid timestamp"):
        parse_timestamp(text)


def test_invalid_timestamp_is_a_value_error() -> None:
    with pytest.raises(ValueError):
        parse_timestamp("nope")


@pytest.mark.parametrize(
    ("value", "expected"),
    [
        (datetime(2026, 11, 21, 13, 0, 0, tzinfo=UTC), "2026-11-21T13:00:00Z"),
        (datetime(2026, 11, 21, 13, 0, 0, 123456, tzinfo=UTC), "2026-11-21T13:00:00.123456Z"),
        (datetime(2026, 11, 21, 13, 0, 0, 500000, tzinfo=UTC), "2026-11-21T13:00:00.500000Z"),
        (datetime(2026, 11, 21, 13, 0, 0, 1, tzinfo=UTC), "2026-11-21T13:00:00.000001Z"),
        (datetime(2026, 11, 21, 18, 30, 0, tzinfo=IST), "2026-11-21T13:00:00Z"),
        (datetime(5, 1, 1, tzinfo=UTC), "0005-01-01T00:00:00Z"),
    ],
)
def test_format_timestamp_writes_utc_with_z(value: datetime, expected: str) -> None:
    assert format_timestamp(value) == expected


def test_format_timestamp_refuses_naive_datetimes() -> None:
    with pytest.raises(ValueError, match="naive"):
        format_timestamp(NAIVE)


@given(aware_datetimes)
def test_format_then_parse_round_trips_the_instant(value: datetime) -> None:
    text = format_timestamp(value)
    assert text.endswith("Z")
    parsed = parse_timestamp(text)
    assert parsed == value
    assert parsed.tzinfo is UTC
    assert format_timestamp(parsed) == text


@given(aware_datetimes, offsets)
def test_the_same_instant_parses_equal_whatever_its_offset(value: datetime, offset: timezone) -> None:
    elsewhere = value.astimezone(offset)
    assert parse_timestamp(elsewhere.isoformat()) == parse_timestamp(value.isoformat()) == value


@pytest.mark.skipif(not zoneinfo.available_timezones(), reason="no IANA time zone database installed")
@given(st.datetimes(min_value=datetime(1, 1, 2), max_value=datetime(9999, 12, 30), timezones=st.timezones()))
def test_format_then_parse_keeps_the_instant_of_named_time_zones(value: datetime) -> None:
    # Compared in UTC: Python never equates an ambiguous local time with another zone's.
    assert parse_timestamp(format_timestamp(value)) == value.astimezone(UTC)
