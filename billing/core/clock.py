"""Time: the only module that reads the wall clock, plus RFC 3339 parsing and formatting.

All datetimes handed out are timezone-aware and in UTC.
"""

from __future__ import annotations

import re
import time
from datetime import UTC, datetime, timedelta, timezone
from typing import Final, Protocol

# RFC 3339 section 5.6 date-time. Up to 9 fractional digits (nanosecond sources); digits past
# the 6th are truncated, which keeps every instant on the same side of any microsecond boundary.
_RFC3339: Final = re.compile(
    r"(?P<year>[0-9]{4})-(?P<month>[0-9]{2})-(?P<day>[0-9]{2})[Tt]"
    r"(?P<hour>[0-9]{2}):(?P<minute>[0-9]{2}):(?P<second>[0-9]{2})(?:\.(?P<fraction>[0-9]{1,9}))?"
    r"(?:(?P<utc>[Zz])|(?P<sign>[+-])(?P<offset_hours>[0-9]{2}):(?P<offset_minutes>[0-9]{2}))"
)


class InvalidTimestamp(ValueError):
    """Text is not an RFC 3339 timestamp with a UTC offset."""


class Clock(Protocol):
    def now(self) -> datetime:
        """The current instant, timezone-aware in UTC."""
        ...


class SystemClock:
    """The real wall clock."""

    def now(self) -> datetime:
        return datetime.now(UTC)


class FrozenClock:
    """A clock that only moves when told to; for tests and replays."""

    def __init__(self, at: datetime) -> None:
        self._now = ensure_utc(at)

    def now(self) -> datetime:
        return self._now

    def advance(self, delta: timedelta) -> datetime:
        """Move the clock by ``delta`` and return the new time."""
        self._now += delta
        return self._now

    def set(self, at: datetime) -> None:
        self._now = ensure_utc(at)


def wall_time_ns() -> int:
    """Nanoseconds since the Unix epoch; for id generation, not for business time."""
    return time.time_ns()


def monotonic_ns() -> int:
    """Nanoseconds from a clock that never goes backwards; for measuring durations."""
    return time.monotonic_ns()


def ensure_utc(dt: datetime) -> datetime:
    """``dt`` converted to UTC; naive datetimes are refused."""
    if not _is_aware(dt):
        raise ValueError(f"naive datetime {dt.isoformat()} has no UTC offset")
    return dt.astimezone(UTC)


def assume_utc(dt: datetime) -> datetime:
    """``dt`` in UTC, reading a naive value (as SQLite returns them) as already UTC."""
    return dt.replace(tzinfo=UTC) if not _is_aware(dt) else dt.astimezone(UTC)


def parse_timestamp(text: str) -> datetime:
    """RFC 3339 timestamp with any UTC offset -> aware UTC datetime."""
    match = _RFC3339.fullmatch(text)
    if match is None:
        raise InvalidTimestamp(f"'{text}' is not an RFC 3339 timestamp with a UTC offset")
    try:
        return _datetime_from_match(match).astimezone(UTC)
    except (ValueError, OverflowError) as error:
        raise InvalidTimestamp(f"'{text}' is not a valid timestamp: {error}") from None


def format_timestamp(dt: datetime) -> str:
    """RFC 3339 in UTC with a "Z", microseconds only when non-zero."""
    utc = ensure_utc(dt).replace(tzinfo=None)
    timespec = "microseconds" if utc.microsecond else "seconds"
    return f"{utc.isoformat(timespec=timespec)}Z"


def _is_aware(dt: datetime) -> bool:
    return dt.tzinfo is not None and dt.utcoffset() is not None


def _datetime_from_match(match: re.Match[str]) -> datetime:
    fields = match.groupdict()
    microsecond = int((fields["fraction"] or "0")[:6].ljust(6, "0"))
    return datetime(
        int(fields["year"]),
        int(fields["month"]),
        int(fields["day"]),
        int(fields["hour"]),
        int(fields["minute"]),
        int(fields["second"]),
        microsecond,
        tzinfo=_offset(fields),
    )


def _offset(fields: dict[str, str | None]) -> timezone:
    if fields["utc"]:
        return UTC
    hours, minutes = int(fields["offset_hours"] or "0"), int(fields["offset_minutes"] or "0")
    if hours > 23 or minutes > 59:
        raise ValueError("UTC offset out of range")
    offset = timedelta(hours=hours, minutes=minutes)
    return timezone(-offset if fields["sign"] == "-" else offset)
