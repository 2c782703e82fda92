"""Emails to the tenant about its own account, from outbox events: ``webhook_endpoint.disabled``."""

from __future__ import annotations

from billing.core.clock import format_timestamp
from billing.core.context import AppContext
from billing.core.outbox import Message
from billing.notifications.queue import queue_tenant_notification

CONSUMER = "notifications"
ENDPOINT_DISABLED = "webhook_endpoint.disabled"
TOPICS = frozenset({ENDPOINT_DISABLED})


async def on_endpoint_disabled(ctx: AppContext, message: Message) -> None:
    """Email the tenant's support address, once per endpoint and time it was disabled."""
    # The event is emitted when the endpoint is disabled; its payload may also say when.
    disabled_at = message.payload.get("disabled_at") or format_timestamp(message.created_at)
    endpoint_id = message.payload.get("endpoint_id")
    async with ctx.database.transaction() as session:
        await queue_tenant_notification(
            session,
            tenant_id=message.tenant_id,
            kind="webhook_endpoint_disabled",
            dedupe_key=f"webhook_endpoint_disabled:{endpoint_id}:{disabled_at}",
            data={**message.payload, "disabled_at": disabled_at},
            at=ctx.clock.now(),
        )
