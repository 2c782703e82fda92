"""How long failed work waits before its next try: one schedule shape for every retrying loop.

Each loop names its own numbers (``outbox.retry_delay``, ``notifications.dispatch.retry_delay``,
``stripe_events.process.retry_delay``, ``webhooks.backoff``, ``payments.attempts.retry_delay``)
and computes them here. How a failed row comes back to be retried is in :mod:`billing.core.work`.
"""

from __future__ import annotations

from datetime import timedelta

# Past this many doublings any cap has been reached; a bound keeps 2 ** n a float.
_MAX_DOUBLINGS = 64


def backoff(attempt: int, *, first: timedelta, cap: timedelta, jitter: float = 0.0) -> timedelta:
    """The wait after failed attempt number ``attempt`` (from 1): ``first``, doubling with each
    attempt, at most ``cap``, then shortened by the fraction ``jitter`` (in [0, 1)) so that a
    burst of failures spreads out."""
    doublings = min(max(attempt - 1, 0), _MAX_DOUBLINGS)
    seconds = min(first.total_seconds() * 2**doublings, cap.total_seconds())
    return timedelta(seconds=seconds * (1 - jitter))
