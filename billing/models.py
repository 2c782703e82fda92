"""Every table of the service, imported in one place for Alembic and the tests."""

from billing.db import Base
from billing.outbox import OutboxEvent
from billing.tenants.models import ApiKey, Tenant

metadata = Base.metadata

__all__ = ["ApiKey", "OutboxEvent", "Tenant", "metadata"]
