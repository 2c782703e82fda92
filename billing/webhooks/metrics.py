"""Prometheus counters of webhook attempts and final outcomes, per endpoint and event type."""

from __future__ import annotations

from prometheus_client import Counter, Histogram

ATTEMPTS = Counter(
    "billing_webhook_attempts_total",
    "Webhook delivery attempts by endpoint, event type and outcome (success, failure)",
    ["endpoint", "type", "outcome"],
)
DELIVERIES = Counter(
    "billing_webhook_deliveries_total",
    "Webhook deliveries that reached a final status (delivered, failed) by endpoint and event type",
    ["endpoint", "type", "status"],
)
DURATION = Histogram(
    "billing_webhook_attempt_duration_seconds",
    "Duration of webhook delivery attempts by outcome",
    ["outcome"],
    buckets=(0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10),
)
DISABLED = Counter("billing_webhook_endpoints_disabled_total", "Endpoints disabled after failing for 3 days")
