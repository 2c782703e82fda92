"""Every table of the service, imported in one place for Alembic and the tests."""

from billing.db import Base
from billing.metering.models import Customer, Meter
from billing.metering.usage_models import UsageEvent, UsageRollup, UsageUniqueValue
from billing.outbox import OutboxEvent
from billing.tenants.models import ApiKey, Tenant

metadata = Base.metadata

__all__ = [
    "ApiKey",
    "Customer",
    "Meter",
    "OutboxEvent",
    "Tenant",
    "UsageEvent",
    "UsageRollup",
    "UsageUniqueValue",
    "metadata",
]
