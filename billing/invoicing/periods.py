"""Billing periods: calendar months in the customer's timezone, and proration of a base fee.

A subscription's first period runs from its ``starts_at`` (any instant) to the start of the next
calendar month in the customer's IANA timezone; then come whole calendar months; the last period
ends at ``ends_at`` (the cancel time) when that falls inside a month. Every datetime taken must be
timezone-aware (any offset); every datetime handed out is aware and in UTC.

The start of a local calendar month is the first instant of the local date that is its 1st day:

* normally local midnight (00:00) of the 1st, converted to UTC - exact for offsets that are not
  whole hours (Asia/Kolkata +05:30, Asia/Kathmandu +05:45, Australia/Lord_Howe's 30-minute DST);
* if 00:00 does not exist on that day (the clock jumps over it, e.g. America/Asuncion on
  2023-10-01 or America/Havana on 2012-04-01 went from 00:00 straight to 01:00), the instant of
  that transition, when the local clock first shows the 1st;
* if 00:00 exists twice (the clock goes back over it, e.g. America/Havana on 2020-11-01 went
  from 01:00 back to 00:00), the earlier one (``fold=0``).

Month ``m`` is then the half-open interval ``[start(m), start(m + 1))`` of UTC instants.

A period's share of its month is measured in exact microseconds (``Fraction``, never floats);
the fee is rounded half up to whole minor units exactly once.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from fractions import Fraction
from functools import lru_cache
from zoneinfo import ZoneInfo

_MICROSECOND = timedelta(microseconds=1)


@dataclass(frozen=True, order=True)
class Period:
    """A billing period: ``[start, end)``, both aware (handed out in UTC)."""

    start: datetime  # inclusive
    end: datetime  # exclusive

    def __post_init__(self) -> None:
        _require_aware(self.start, "start")
        _require_aware(self.end, "end")
        if self.end <= self.start:
            raise ValueError(f"empty period: end {self.end} is not after start {self.start}")


def month_start(at: datetime, timezone: str) -> datetime:
    """UTC instant of the start of the local calendar month containing `at`."""
    year, month = _month_of(_utc(at, "at"), timezone)
    return _start_of(year, month, timezone)


def next_month_start(at: datetime, timezone: str) -> datetime:
    """UTC instant of the start of the local calendar month after the one containing `at`."""
    year, month = _month_of(_utc(at, "at"), timezone)
    return _start_of(*_following(year, month), timezone)


def period_containing(
    starts_at: datetime,
    ends_at: datetime | None,
    timezone: str,
    at: datetime,
    *,
    split: datetime | None = None,
) -> Period | None:
    """The billing period that contains `at`, None if `at` < starts_at or (ends_at and at >= ends_at).

    ``split`` (a trial's end) is a period boundary too: a month it falls inside is cut there.
    """
    starts_at, ends_at, at = _utc(starts_at, "starts_at"), _optional_utc(ends_at, "ends_at"), _utc(at, "at")
    if at < starts_at or (ends_at is not None and at >= ends_at):
        return None
    year, month = _month_of(at, timezone)
    start = max(starts_at, _start_of(year, month, timezone))
    if split is not None and start < split <= at:
        start = split
    return _clipped(start, _start_of(*_following(year, month), timezone), ends_at, split)


def first_period(
    starts_at: datetime, ends_at: datetime | None, timezone: str, *, split: datetime | None = None
) -> Period | None:
    """The first billing period; None if the subscription ended before it started (ends_at <= starts_at)."""
    starts_at, ends_at = _utc(starts_at, "starts_at"), _optional_utc(ends_at, "ends_at")
    if ends_at is not None and ends_at <= starts_at:
        return None
    return _clipped(starts_at, next_month_start(starts_at, timezone), ends_at, split)


def next_period(
    previous: Period, ends_at: datetime | None, timezone: str, *, split: datetime | None = None
) -> Period | None:
    """The period after `previous`, or None if the subscription ended at previous.end.

    That is when ends_at <= previous.end.
    """
    start, ends_at = _utc(previous.end, "previous.end"), _optional_utc(ends_at, "ends_at")
    if ends_at is not None and ends_at <= start:
        return None
    return _clipped(start, next_month_start(start, timezone), ends_at, split)


def ended_periods(
    starts_at: datetime,
    ends_at: datetime | None,
    timezone: str,
    *,
    after: datetime | None,
    until: datetime,
    split: datetime | None = None,
) -> list[Period]:
    """Periods whose end is <= until, in order, skipping those whose start < after.

    `after` is the end of the last period already closed, or None for all periods.
    """
    starts_at, ends_at = _utc(starts_at, "starts_at"), _optional_utc(ends_at, "ends_at")
    after, until = _optional_utc(after, "after"), _utc(until, "until")
    if after is None or after <= starts_at:
        period = first_period(starts_at, ends_at, timezone, split=split)
    else:
        period = period_containing(starts_at, ends_at, timezone, after, split=split)
        if period is not None and period.start < after:
            period = next_period(period, ends_at, timezone, split=split)
    periods: list[Period] = []
    while period is not None and period.end <= until:
        periods.append(period)
        period = next_period(period, ends_at, timezone, split=split)
    return periods


@lru_cache(maxsize=4096)  # a billing run asks it for thousands of subscriptions sharing a period
def covered_share(period: Period, timezone: str) -> Fraction:
    """Covered seconds / seconds of the calendar month that contains period.start (1 for a full month).

    Raises ValueError if the period reaches past the end of that month.
    """
    start, end = _utc(period.start, "period.start"), _utc(period.end, "period.end")
    year, month = _month_of(start, timezone)
    month_begins, month_ends = _start_of(year, month, timezone), _start_of(*_following(year, month), timezone)
    if end > month_ends:
        raise ValueError(f"period {start}..{end} spans more than the local month starting {month_begins}")
    return Fraction((end - start) // _MICROSECOND, (month_ends - month_begins) // _MICROSECOND)


def prorated_fee(base_fee: int, period: Period, timezone: str) -> int:
    """base_fee x covered_share, rounded half up to an int (exact integer arithmetic).

    Half up as in ``decimal.ROUND_HALF_UP``: a tie goes away from zero.
    """
    if isinstance(base_fee, bool) or not isinstance(base_fee, int):
        raise TypeError(f"base_fee must be an int number of minor units, got {base_fee!r}")
    share = covered_share(period, timezone)
    numerator, denominator = abs(base_fee) * share.numerator, share.denominator
    quotient, remainder = divmod(numerator, denominator)
    if 2 * remainder >= denominator:
        quotient += 1
    return -quotient if base_fee < 0 else quotient


# --- helpers --------------------------------------------------------------------------------


def _require_aware(value: datetime, name: str) -> None:
    if not isinstance(value, datetime):
        raise TypeError(f"{name} must be a datetime, got {value!r}")
    if value.tzinfo is None or value.utcoffset() is None:
        raise ValueError(f"{name} must be timezone-aware, got naive {value!r}")


def _utc(value: datetime, name: str) -> datetime:
    _require_aware(value, name)
    return value.astimezone(UTC)


def _optional_utc(value: datetime | None, name: str) -> datetime | None:
    return None if value is None else _utc(value, name)


def _clipped(
    start: datetime, month_end: datetime, ends_at: datetime | None, split: datetime | None
) -> Period:
    end = month_end if ends_at is None else min(month_end, ends_at)
    if split is not None and start < split < end:
        end = split
    return Period(start, end)


def _following(year: int, month: int) -> tuple[int, int]:
    return (year + 1, 1) if month == 12 else (year, month + 1)


def _preceding(year: int, month: int) -> tuple[int, int]:
    return (year - 1, 12) if month == 1 else (year, month - 1)


@lru_cache(maxsize=1024)
def _zone(timezone: str) -> ZoneInfo:
    return ZoneInfo(timezone)


def _local(at: datetime, timezone: str) -> datetime:
    """The naive local wall time of the UTC instant `at`."""
    return at.astimezone(_zone(timezone)).replace(tzinfo=None)


def _month_of(at: datetime, timezone: str) -> tuple[int, int]:
    """(year, month) of the local month ``[start(m), start(m + 1))`` that contains the UTC instant `at`.

    Usually the month of the local date; it differs only when the clock goes back over the
    midnight that starts a month, during the repeated hour before that midnight.
    """
    local = _local(at, timezone)
    year, month = local.year, local.month
    while at < _start_of(year, month, timezone):
        year, month = _preceding(year, month)
    while at >= _start_of(*_following(year, month), timezone):
        year, month = _following(year, month)
    return year, month


@lru_cache(maxsize=4096)
def _start_of(year: int, month: int, timezone: str) -> datetime:
    """UTC instant when the local date first is the 1st of `month` (see the module docstring)."""
    zone = _zone(timezone)
    midnight = datetime(year, month, 1)
    candidates = [midnight.replace(tzinfo=zone, fold=fold).astimezone(UTC) for fold in (0, 1)]
    existing = [utc for utc in candidates if _local(utc, timezone) == midnight]
    if existing:  # exists once, or twice (then the earlier is fold=0)
        return min(existing)
    # 00:00 falls in a gap. Read with the offset after the jump it is before the transition, read
    # with the offset before it, at or after: find the first microsecond whose wall time is >= 00:00.
    low, high = min(candidates), max(candidates)  # _local(low) < midnight <= _local(high)
    while high - low > _MICROSECOND:
        middle = low + (high - low) // 2
        if _local(middle, timezone) >= midnight:
            high = middle
        else:
            low = middle
    return high
