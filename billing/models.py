"""Every table of the service, imported in one place for Alembic and the tests."""

from billing.db import Base
from billing.invoicing.models import (
    Invoice,
    InvoiceLine,
    InvoiceSequence,
    InvoiceStatusChange,
    Plan,
    Subscription,
)
from billing.metering.models import Customer, Meter
from billing.metering.usage_models import UsageEvent, UsageRollup, UsageUniqueValue
from billing.outbox import OutboxEvent
from billing.payments.models import Payment, Refund
from billing.tenants.models import ApiKey, Tenant

metadata = Base.metadata

__all__ = [
    "ApiKey",
    "Customer",
    "Invoice",
    "InvoiceLine",
    "InvoiceSequence",
    "InvoiceStatusChange",
    "Meter",
    "OutboxEvent",
    "Payment",
    "Plan",
    "Refund",
    "Subscription",
    "Tenant",
    "UsageEvent",
    "UsageRollup",
    "UsageUniqueValue",
    "metadata",
]
