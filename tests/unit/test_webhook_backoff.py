"""The retry schedule: exponential from 10 s with jitter, under an hour apart, for three days."""

from __future__ import annotations

import itertools
from datetime import UTC, datetime, timedelta

from hypothesis import given
from hypothesis import strategies as st

from billing.webhooks.backoff import (
    MAX_DELAY,
    RETRY_WINDOW,
    next_attempt_at,
    random_jitter,
    retry_delay,
)

START = datetime(2026, 11, 21, 12, 0, tzinfo=UTC)
HOUR = timedelta(hours=1)


def test_delays_double_from_ten_seconds_up_to_59_minutes_without_jitter() -> None:
    delays = [retry_delay(attempt, 0.0).total_seconds() for attempt in range(1, 13)]
    assert delays == [10, 20, 40, 80, 160, 320, 640, 1280, 2560, 3540, 3540, 3540]
    assert MAX_DELAY < HOUR
    assert retry_delay(10_000, 0.0) == MAX_DELAY


@given(st.integers(min_value=1, max_value=500), st.floats(min_value=0, max_value=1, exclude_max=True))
def test_jitter_shortens_a_delay_by_at_most_a_fifth(attempt: int, jitter: float) -> None:
    plain = retry_delay(attempt, 0.0)
    delay = retry_delay(attempt, jitter)
    assert plain * 0.8 <= delay <= plain < HOUR


def test_random_jitter_is_in_the_unit_interval_and_varies() -> None:
    values = {random_jitter() for _ in range(50)}
    assert all(0 <= v < 1 for v in values) and len(values) > 1


def schedule(jitters: list[float]) -> list[datetime]:
    """Every attempt of a delivery that always fails, from the event at START."""
    retry_until = START + RETRY_WINDOW
    attempts, at = [START], START
    while (
        at := next_attempt_at(at, len(attempts), retry_until, jitters[len(attempts) % len(jitters)])
    ) is not None:
        attempts.append(at)
    return attempts


@given(st.lists(st.floats(min_value=0, max_value=1, exclude_max=True), min_size=1, max_size=20))
def test_a_failing_delivery_is_tried_for_three_days_never_an_hour_apart(jitters: list[float]) -> None:
    attempts = schedule(jitters)
    gaps = [b - a for a, b in itertools.pairwise(attempts)]
    assert attempts[-1] == START + RETRY_WINDOW  # the last try is at the end of the window
    assert all(timedelta(0) < gap < HOUR for gap in gaps)
    assert 82 <= len(attempts) <= 101  # 82 with full delays, 101 with the shortest


def test_the_first_retries_back_off_exponentially() -> None:
    gaps = [b - a for a, b in zip(schedule([0.0]), schedule([0.0])[1:], strict=False)]
    assert [g.total_seconds() for g in gaps[:10]] == [10, 20, 40, 80, 160, 320, 640, 1280, 2560, 3540]


def test_no_retry_once_the_window_is_over() -> None:
    end = START + RETRY_WINDOW
    assert next_attempt_at(end, 50, end, 0.0) is None
    assert next_attempt_at(end + timedelta(seconds=1), 1, end, 0.0) is None
    assert next_attempt_at(end - timedelta(seconds=5), 50, end, 0.0) == end
