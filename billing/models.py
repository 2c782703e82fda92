"""Every table of the service, imported in one place for Alembic and the tests."""

from billing.alerts.models import Alert, AlertTrigger
from billing.core.db.types import Base
from billing.core.outbox import OutboxEvent
from billing.credit_notes.models import CreditNote, CreditNoteLine, CreditNoteSequence
from billing.credits.models import CreditBalance, CreditGrant, CreditLedgerEntry
from billing.customers.models import Customer
from billing.dunning.models import DunningCase, DunningPolicy
from billing.finance.models import FinanceSession
from billing.invoicing.coupon_models import Coupon, Discount
from billing.invoicing.models import (
    Invoice,
    InvoiceItem,
    InvoiceLine,
    InvoiceSequence,
    InvoiceStatusChange,
    Plan,
    Subscription,
)
from billing.metering.models import Meter
from billing.metering.usage_models import (
    UsageCursor,
    UsageEvent,
    UsageGroup,
    UsageRollup,
    UsageUniqueValue,
)
from billing.notifications.models import Notification
from billing.payments.models import Payment, Refund
from billing.stripe_events.models import StripeEvent
from billing.tenants.models import ApiKey, TaxRate, Tenant
from billing.web.idempotency_keys import IdempotencyKey
from billing.webhooks.models import WebhookAttempt, WebhookDelivery, WebhookEndpoint

metadata = Base.metadata

__all__ = [
    "Alert",
    "AlertTrigger",
    "ApiKey",
    "Coupon",
    "CreditBalance",
    "CreditGrant",
    "CreditLedgerEntry",
    "CreditNote",
    "CreditNoteLine",
    "CreditNoteSequence",
    "Customer",
    "Discount",
    "DunningCase",
    "DunningPolicy",
    "FinanceSession",
    "IdempotencyKey",
    "Invoice",
    "InvoiceItem",
    "InvoiceLine",
    "InvoiceSequence",
    "InvoiceStatusChange",
    "Meter",
    "Notification",
    "OutboxEvent",
    "Payment",
    "Plan",
    "Refund",
    "StripeEvent",
    "Subscription",
    "TaxRate",
    "Tenant",
    "UsageCursor",
    "UsageEvent",
    "UsageGroup",
    "UsageRollup",
    "UsageUniqueValue",
    "WebhookAttempt",
    "WebhookDelivery",
    "WebhookEndpoint",
    "metadata",
]
