"""Prometheus metrics of the Stripe webhook receiver and its processing."""

from __future__ import annotations

from typing import Any

from prometheus_client import Counter, Histogram

DELIVERIES = Counter(
    "billing_stripe_webhook_deliveries_total",
    "Stripe webhook deliveries by event type and outcome "
    "(received, duplicate, ignored, invalid_signature, invalid_payload, failed)",
    ["type", "outcome"],
)
PROCESSED = Counter(
    "billing_stripe_events_processed_total",
    "Stripe event processing attempts by type and outcome (processed, skipped, retry, failed)",
    ["type", "outcome"],
)
LAG = Histogram(
    "billing_stripe_event_processing_lag_seconds",
    "Seconds from receipt of a Stripe event to its final outcome",
    buckets=(0.5, 1, 2.5, 5, 10, 30, 60, 300, 900, 3600, 4 * 3600, 24 * 3600),
)
# Labels are bounded: unverified or unhandled deliveries never name their claimed type.
UNVERIFIED, UNKNOWN, OTHER = "unverified", "unknown", "other"


def count_delivery(type_: str, outcome: str) -> None:
    # ``labels()`` costs more than the increment: keep the children.
    child = _delivery_children.get((type_, outcome))
    if child is None:
        child = _delivery_children[(type_, outcome)] = DELIVERIES.labels(type_, outcome)
    child.inc()


_delivery_children: dict[tuple[str, str], Any] = {}
