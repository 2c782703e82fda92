"""The one backoff function: doubling from ``first``, capped, optionally shortened by jitter."""

from __future__ import annotations

from datetime import timedelta

from hypothesis import given
from hypothesis import strategies as st

from billing.core.backoff import backoff

SECOND = timedelta(seconds=1)
HOUR = timedelta(hours=1)


def test_doubles_from_first_up_to_the_cap() -> None:
    delays = [backoff(attempt, first=10 * SECOND, cap=HOUR) for attempt in range(1, 12)]
    assert [d.total_seconds() for d in delays] == [10, 20, 40, 80, 160, 320, 640, 1280, 2560, 3600, 3600]


def test_attempts_before_the_first_wait_the_first_delay() -> None:
    assert backoff(0, first=30 * SECOND, cap=HOUR) == 30 * SECOND
    assert backoff(-3, first=30 * SECOND, cap=HOUR) == 30 * SECOND


def test_a_huge_attempt_number_is_the_cap() -> None:
    assert backoff(10**9, first=SECOND, cap=timedelta(minutes=59)) == timedelta(minutes=59)


def test_jitter_takes_its_fraction_off_the_delay() -> None:
    assert backoff(3, first=10 * SECOND, cap=HOUR, jitter=0.25) == 30 * SECOND
    assert backoff(50, first=10 * SECOND, cap=HOUR, jitter=0.5) == HOUR / 2


@given(
    st.integers(min_value=1, max_value=200),
    st.integers(min_value=1, max_value=600),
    st.integers(min_value=1, max_value=86_400),
    st.floats(min_value=0, max_value=1, exclude_max=True),
)
def test_a_delay_never_shrinks_as_attempts_grow_and_stays_within_its_bounds(
    attempt: int, first_seconds: int, cap_seconds: int, jitter: float
) -> None:
    first, cap = timedelta(seconds=first_seconds), timedelta(seconds=max(cap_seconds, first_seconds))
    delay = backoff(attempt, first=first, cap=cap)
    assert first <= delay <= cap
    assert backoff(attempt + 1, first=first, cap=cap) >= delay
    assert (
        delay * (1 - jitter) - timedelta(microseconds=1)
        <= backoff(attempt, first=first, cap=cap, jitter=jitter)
        <= delay
    )
