"""Customer emails from subscription events: ``subscription.trial_will_end``.

The event carries the subscription as the API showed it when the notice fell due; the email is
written from that snapshot (only the plan's name is read, which cannot change once the plan has a
subscription), so that it tells the trial end the event's webhook tells.
"""

from __future__ import annotations

import sqlalchemy as sa
import structlog

from billing.core.clock import format_timestamp, parse_timestamp
from billing.core.context import AppContext
from billing.core.outbox import Message
from billing.invoicing.models import Plan
from billing.notifications.queue import queue_notification

CONSUMER = "subscription_emails"
TRIAL_WILL_END = "subscription.trial_will_end"
TOPICS = frozenset({TRIAL_WILL_END})
log = structlog.get_logger("billing.notifications.subscription_events")


def trial_notice_key(subscription_id: str, trial_end: str) -> str:
    """Once per subscription and trial end: a redelivery sends nothing, a moved end sends again."""
    return f"trial_will_end:{subscription_id}:{format_timestamp(parse_timestamp(trial_end))}"


async def on_trial_will_end(ctx: AppContext, message: Message) -> None:
    """Queue the customer's ``trial_will_end`` email, once per subscription and trial end."""
    snapshot = message.payload.get("object") or {}
    trial_end = snapshot.get("trial_end")
    if not trial_end:
        log.warning("trial_will_end_without_trial_end", event_id=message.event_id)
        return
    async with ctx.database.transaction() as session:
        plan_name = await session.scalar(
            sa.select(Plan.name).where(Plan.tenant_id == message.tenant_id, Plan.id == snapshot.get("plan"))
        )
        await queue_notification(
            session,
            tenant_id=message.tenant_id,
            customer_id=message.payload["customer_id"],
            kind="trial_will_end",
            dedupe_key=trial_notice_key(message.payload["subscription_id"], trial_end),
            data={"subscription": snapshot, "plan_name": plan_name},
            at=ctx.clock.now(),
        )
