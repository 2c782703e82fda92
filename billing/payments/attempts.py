"""A payment attempt's row: opened (and committed) before the provider call, closed by its outcome.

The row carries the idempotency key of its call and the exact request, so whoever resolves it
later (the reconciliation tick after a timeout or a crash) repeats the very same request. Every
outcome is written only while the row is still ``pending``: the charge path and the Stripe webhook
may both report one failure, and only the first is recorded and handed to dunning.
"""

from __future__ import annotations

from datetime import datetime, timedelta

import sqlalchemy as sa
import structlog
from prometheus_client import Counter
from sqlalchemy.ext.asyncio import AsyncSession

from billing.core import outbox
from billing.core.backoff import backoff
from billing.core.db.claims import new_claim_token
from billing.core.db.inserts import insert_ignore
from billing.core.ids import new_id
from billing.core.settings import Settings
from billing.customers.models import Customer
from billing.invoicing.invoices import (
    event_payload,
    invoices_out,
    lock_invoice,
    record_status,
    settle_amount_due,
)
from billing.invoicing.models import Invoice
from billing.payments.declines import FailureClass, classify
from billing.payments.models import Payment, Refund
from billing.payments.provider import ChargeRequest, ChargeResult, Outcome
from billing.payments.views import PAYMENTS
from billing.tenants.models import Tenant

log = structlog.get_logger("billing.payments")
OUTCOMES = Counter("billing_payment_outcomes_total", "Payment attempt outcomes", ["provider", "outcome"])
NO_PAYMENT_METHOD = ChargeResult(
    Outcome.DECLINED,
    failure_code="payment_method_missing",
    decline_type=FailureClass.HARD.value,
    message="The customer has no default payment method.",
)
_STATUS = {
    Outcome.SUCCEEDED: "succeeded",
    Outcome.DECLINED: "failed",
    Outcome.ACTION_REQUIRED: "requires_action",
}


def call_lease(settings: Settings) -> timedelta:
    """How long one provider call may take, the SDK's retries and their back-off included:
    the caller's claim on a pending payment lasts that long before reconciliation may take over."""
    tries = settings.stripe_max_network_retries + 1
    return timedelta(seconds=settings.stripe_timeout_seconds * tries + 2 * tries + 30)


def idempotency_key(invoice_id: str, attempt: int) -> str:
    return f"{invoice_id}:attempt:{attempt}"


async def open_attempt(
    session: AsyncSession,
    tenant: Tenant,
    invoice: Invoice,
    customer: Customer,
    *,
    attempt: int,
    reason: str,
    at: datetime,
    lease: timedelta,
) -> tuple[Payment, str] | None:
    """Insert the pending row of ``attempt`` claimed by a new token; None if that attempt exists."""
    token = new_claim_token()
    row = {
        "id": new_id("pay"),
        "tenant_id": tenant.id,
        "invoice_id": invoice.id,
        "customer_id": customer.id,
        "attempt": attempt,
        "reason": reason,
        "provider": tenant.payment_provider,
        "idempotency_key": idempotency_key(invoice.id, attempt),
        "amount": invoice.amount_due,
        "currency": invoice.currency,
        "provider_customer_id": customer.provider_customer_id,
        "payment_method": customer.default_payment_method,
        "status": "pending",
        "checks": 0,
        "claimed_by": token,
        "claim_expires_at": at + lease,
        "created_at": at,
        "updated_at": at,
    }
    inserted = await insert_ignore(session, Payment.__table__, [row], returning=[Payment.__table__.c.id])
    if not inserted:
        return None
    return await session.get_one(Payment, row["id"]), token


async def next_attempt(session: AsyncSession, invoice_id: str) -> int:
    last = await session.scalar(
        sa.select(sa.func.max(Payment.attempt)).where(Payment.invoice_id == invoice_id)
    )
    return (last or 0) + 1


def charge_request(payment: Payment, invoice_number: str | None) -> ChargeRequest:
    """The provider request of ``payment``: the same for every repeat, as idempotency requires."""
    return ChargeRequest(
        payment_id=payment.id,
        tenant_id=payment.tenant_id,
        invoice_id=payment.invoice_id,
        amount=payment.amount,
        currency=payment.currency,
        customer=payment.provider_customer_id,
        payment_method=payment.payment_method,
        idempotency_key=payment.idempotency_key,
        description=f"Invoice {invoice_number}" if invoice_number else "",
    )


def retry_delay(checks: int) -> timedelta:
    """Back-off between reconciliation checks: one minute after the first, doubling, at most an hour."""
    return backoff(checks + 1, first=timedelta(minutes=1), cap=timedelta(hours=1))


async def record_outcome(
    session: AsyncSession,
    payment_id: str,
    result: ChargeResult,
    *,
    at: datetime,
    token: str | None,
    source: str = "charge",
) -> bool:
    """Write ``result`` on a payment still pending; True if it was written.

    An unknown or still-processing outcome only schedules the next check, and only while the
    caller's claim (``token``) holds. A final one closes the payment, settles the invoice on
    success and queues ``invoice.paid`` or ``invoice.payment_failed``.
    """
    payment = await session.get_one(Payment, payment_id)
    invoice = await lock_invoice(session, payment.invoice_id)
    await session.refresh(payment)
    if payment.status != "pending":
        return False
    payment.provider_payment_id = result.provider_payment_id or payment.provider_payment_id
    payment.updated_at = at
    if result.outcome not in _STATUS:
        return reschedule_check(payment, result.message or result.outcome.value, at=at, token=token)
    payment.status = _STATUS[result.outcome]
    payment.completed_at = at
    payment.claimed_by = payment.claim_expires_at = None
    OUTCOMES.labels(payment.provider, payment.status).inc()
    if result.outcome is Outcome.SUCCEEDED:
        await _settle(session, invoice, payment, at=at)
    else:
        await _fail(session, invoice, payment, result, at=at, source=source)
    await session.flush()
    return True


def reschedule_check(row: Payment | Refund, error: str, *, at: datetime, token: str | None) -> bool:
    """Leave a charge or refund pending and release it until its next check, while the caller's
    claim (``token``; None for callers without one) still holds it."""
    if token is not None and row.claimed_by != token:
        return False
    row.claimed_by = None
    row.claim_expires_at = at + retry_delay(row.checks)
    row.checks += 1
    row.last_error = error[:500]
    log.warning(
        "outcome_unknown",
        id=row.id,
        error=row.last_error,
        checks=row.checks,
        next_check_at=row.claim_expires_at,
    )
    return True


async def _settle(session: AsyncSession, invoice: Invoice, payment: Payment, *, at: datetime) -> None:
    invoice.amount_paid += payment.amount
    settle_amount_due(invoice)
    invoice.updated_at = at
    if invoice.amount_due == 0 and invoice.status in ("open", "uncollectible"):
        invoice.paid_at = at
        await record_status(session, invoice, "paid", at=at, actor=f"payment:{payment.id}", payments=PAYMENTS)
    elif invoice.status not in ("open", "paid", "uncollectible"):
        # Voids wait for pending payments, so this is a charge that outlived its invoice.
        log.error("payment_succeeded_on_closed_invoice", payment=payment.id, invoice=invoice.id)


async def _fail(
    session: AsyncSession,
    invoice: Invoice,
    payment: Payment,
    result: ChargeResult,
    *,
    at: datetime,
    source: str,
) -> None:
    payment.failure_code = result.failure_code
    payment.decline_code = result.decline_code
    payment.decline_type = result.decline_type
    payment.failure_message = (result.message or "")[:500] or None
    await outbox.emit(
        session,
        tenant_id=invoice.tenant_id,
        topic="invoice.payment_failed",
        payload={
            **event_payload(invoice, (await invoices_out(session, [invoice], PAYMENTS, now=at))[0]),
            "payment": failure_payload(payment),
            "source": source,
        },
        now=at,
    )


def failure_payload(payment: Payment) -> dict[str, object]:
    """What dunning needs to decide the next step: which attempt failed, and how."""
    return {
        "id": payment.id,
        "attempt": payment.attempt,
        "reason": payment.reason,
        "amount": payment.amount,
        "payment_method": payment.payment_method,
        "failure_code": payment.failure_code,
        "decline_code": payment.decline_code,
        "failure_class": failure_class(payment).value,
        "message": payment.failure_message,
    }


def failure_class(payment: Payment) -> FailureClass:
    if payment.status == "requires_action":
        return FailureClass.ACTION_REQUIRED
    if payment.decline_type:
        return FailureClass(payment.decline_type)
    return classify(payment.failure_code, payment.decline_code)
