"""Notifications on the wire."""

from __future__ import annotations

from datetime import datetime

import msgspec

from billing.notifications.models import Notification
from billing.notifications.render import Rendered


class NotificationOut(msgspec.Struct):
    id: str
    kind: str
    customer: str | None
    invoice: str | None
    to: str | None
    subject: str
    status: str
    dedupe_key: str
    attempts: int
    last_error: str | None
    created_at: datetime
    next_attempt_at: datetime | None
    sent_at: datetime | None
    object: str = "notification"


class PreviewOut(msgspec.Struct):
    kind: str
    subject: str
    html: str
    text: str


def notification_out(row: Notification) -> NotificationOut:
    return NotificationOut(
        id=row.id,
        kind=row.kind,
        customer=row.customer_id,
        invoice=row.invoice_id,
        to=row.to_address,
        subject=row.subject,
        status=row.status,
        dedupe_key=row.dedupe_key,
        attempts=row.attempts,
        last_error=row.last_error,
        created_at=row.created_at,
        next_attempt_at=row.next_attempt_at,
        sent_at=row.sent_at,
    )


def preview_out(kind: str, rendered: Rendered) -> PreviewOut:
    return PreviewOut(kind, rendered.subject, rendered.html, rendered.text)
