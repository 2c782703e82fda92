"""Failures reported by the provider's webhooks rather than by the charge call itself.

Both paths write through :func:`record_outcome`, which only closes a payment that is still
pending: whichever path arrives first records the failure and hands it to dunning, the other
finds it recorded and does nothing.
"""

from __future__ import annotations

from datetime import datetime

import sqlalchemy as sa
from sqlalchemy.ext.asyncio import AsyncSession

from billing.invoicing.models import Invoice
from billing.payments.attempts import record_outcome
from billing.payments.declines import failed_charge
from billing.payments.models import Payment

RECORDED, ALREADY_RECORDED, SKIPPED = "recorded", "already_recorded", "skipped"


async def record_webhook_failure(
    session: AsyncSession,
    *,
    tenant_id: str,
    invoice_id: str,
    payment_id: str | None,
    provider_payment_id: str,
    failure_code: str | None,
    decline_code: str | None,
    message: str | None,
    at: datetime,
) -> str:
    """Record a failed charge reported by the provider: ``recorded``, ``already_recorded`` (the
    charge path got there first) or ``skipped`` (not our payment, or its invoice is settled)."""
    payment = await _find(session, tenant_id, invoice_id, payment_id, provider_payment_id)
    if payment is None:
        return SKIPPED
    invoice = await session.get_one(Invoice, payment.invoice_id)
    if payment.status in ("failed", "requires_action"):
        return ALREADY_RECORDED
    if payment.status != "pending" or invoice.status not in ("open", "uncollectible"):
        return SKIPPED  # succeeded since, or the invoice was paid or voided: an event out of order
    result = failed_charge(provider_payment_id, failure_code, decline_code, message)
    recorded = await record_outcome(session, payment.id, result, at=at, token=None, source="webhook")
    return RECORDED if recorded else ALREADY_RECORDED


async def _find(
    session: AsyncSession, tenant_id: str, invoice_id: str, payment_id: str | None, provider_payment_id: str
) -> Payment | None:
    match = Payment.provider_payment_id == provider_payment_id
    if payment_id:
        match = sa.or_(Payment.id == payment_id, match)
    query = sa.select(Payment).where(Payment.tenant_id == tenant_id, Payment.invoice_id == invoice_id, match)
    return (await session.scalars(query.order_by(Payment.attempt.desc()).limit(1))).first()
