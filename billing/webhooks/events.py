"""The event types a tenant can subscribe an endpoint to, and where each one comes from."""

from __future__ import annotations

from typing import Final, Literal

INVOICE_TOPICS: Final = (
    "invoice.created",
    "invoice.finalized",
    "invoice.paid",
    "invoice.payment_failed",
    "invoice.uncollectible",
    "invoice.voided",
    "invoice.overdue",
)
CARD_TOPICS: Final = (
    "customer.payment_method_expiring",
    "customer.payment_method_removed",
    "customer.payment_method_updated",
)
# Emitted by archiving, with the customer.
CUSTOMER_TOPICS: Final = ("customer.archived",)
# Emitted by dunning: the customer for customer.*, the unpaid invoice for dunning.*.
DUNNING_CUSTOMER_TOPICS: Final = ("customer.suspended",)
DUNNING_INVOICE_TOPICS: Final = ("dunning.recovered", "dunning.exhausted")
SUBSCRIPTION_TOPICS: Final = (
    "subscription.created",
    "subscription.updated",
    "subscription.canceled",
    "subscription.ended",
    "subscription.trial_will_end",
)
# Emitted by the credits domain: the grant for credit_grant.*, {customer, currency, available,
# threshold} for credit_balance.low.
CREDIT_TOPICS: Final = (
    "credit_grant.created",
    "credit_grant.activated",
    "credit_grant.voided",
    "credit_grant.expired",
    "credit_balance.low",
)
# Emitted by credit notes, with the credit note.
CREDIT_NOTE_TOPICS: Final = ("credit_note.created",)
# Emitted by alerts, with {trigger, alert}.
ALERT_TOPICS: Final = ("alert.triggered",)
TOPICS: Final = frozenset(
    INVOICE_TOPICS
    + CARD_TOPICS
    + CUSTOMER_TOPICS
    + DUNNING_CUSTOMER_TOPICS
    + DUNNING_INVOICE_TOPICS
    + SUBSCRIPTION_TOPICS
    + CREDIT_TOPICS
    + CREDIT_NOTE_TOPICS
    + ALERT_TOPICS
)
ALL = "*"
# The outbox topic that tells the notifications work to email the tenant's support address.
ENDPOINT_DISABLED = "webhook_endpoint.disabled"

EventType = Literal[
    "*",
    "invoice.created",
    "invoice.finalized",
    "invoice.paid",
    "invoice.payment_failed",
    "invoice.uncollectible",
    "invoice.voided",
    "invoice.overdue",
    "customer.payment_method_expiring",
    "customer.payment_method_removed",
    "customer.payment_method_updated",
    "customer.archived",
    "customer.suspended",
    "dunning.recovered",
    "dunning.exhausted",
    "subscription.created",
    "subscription.updated",
    "subscription.canceled",
    "subscription.ended",
    "subscription.trial_will_end",
    "credit_grant.created",
    "credit_grant.activated",
    "credit_grant.voided",
    "credit_grant.expired",
    "credit_balance.low",
    "credit_note.created",
    "alert.triggered",
]


def subscribed(events: list[str], topic: str) -> bool:
    return topic in events or ALL in events
