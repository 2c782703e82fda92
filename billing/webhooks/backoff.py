"""When to try a failed delivery again: exponential from 10 s, with jitter, never more than an hour
apart, for three days after the event (the delays are :func:`billing.core.backoff.backoff`'s)."""

from __future__ import annotations

import secrets
from datetime import datetime, timedelta

from billing.core.backoff import backoff

FIRST_DELAY = timedelta(seconds=10)
# Below an hour, so that the gap between two tries stays under one hour even counting the
# scheduler's tick (5 s) and a request that runs into its timeout (10 s).
MAX_DELAY = timedelta(minutes=59)
JITTER = 0.2  # each delay is shortened by up to 20 %, so that a burst of failures spreads out
RETRY_WINDOW = timedelta(days=3)


def retry_delay(attempt: int, jitter: float) -> timedelta:
    """The wait after failed attempt number ``attempt`` (from 1); ``jitter`` is in [0, 1)."""
    return backoff(attempt, first=FIRST_DELAY, cap=MAX_DELAY, jitter=JITTER * jitter)


def next_attempt_at(
    attempted_at: datetime, attempt: int, retry_until: datetime, jitter: float
) -> datetime | None:
    """When to try again after attempt ``attempt`` started at ``attempted_at`` failed; None to give up.

    The last try happens at ``retry_until`` itself, so a delivery is retried for the whole window.
    """
    if attempted_at >= retry_until:
        return None
    return min(attempted_at + retry_delay(attempt, jitter), retry_until)


def random_jitter() -> float:
    return secrets.randbelow(1_000_000) / 1_000_000
