"""Charging open invoices: the first charge after finalization, and ``POST /v1/invoices/{id}/pay``.

The order is fixed: commit the pending Payment row, call the provider outside any transaction,
commit the outcome. A crash between the call and the last commit leaves the row pending with an
expiring claim, and reconciliation repeats the same request (same idempotency key).
"""

from __future__ import annotations

import asyncio
from datetime import datetime

import sqlalchemy as sa
import structlog
from prometheus_client import Counter
from sqlalchemy.ext.asyncio import AsyncSession

from billing.core.context import AppContext
from billing.core.errors import Conflict
from billing.customers.models import Customer
from billing.invoicing.invoices import get_invoice, lock_invoice
from billing.invoicing.models import Invoice
from billing.payments.attempts import (
    NO_PAYMENT_METHOD,
    call_lease,
    charge_request,
    next_attempt,
    open_attempt,
    record_outcome,
)
from billing.payments.models import Payment
from billing.payments.provider import ChargeResult, Outcome
from billing.payments.registry import ProviderUnavailable, open_provider
from billing.payments.views import PAYMENTS
from billing.tenants.models import Tenant

BATCH = 500
CONCURRENCY = 8
log = structlog.get_logger("billing.payments.charge")
FAILURES = Counter(
    "billing_charge_failures_total", "Charges that failed unexpectedly and were left for later"
)


async def charge_due(ctx: AppContext, *, at: datetime, tenant_id: str | None = None) -> int:
    """Make the first charge of every open invoice with something due, past its due date (the
    net terms), and no attempt yet."""
    done = 0
    limit = asyncio.Semaphore(CONCURRENCY)

    async def first_charge(invoice_id: str) -> bool:
        async with limit:
            return await charge_invoice(ctx, invoice_id, attempt=1, reason="finalized", at=at) is not None

    while True:
        async with ctx.database.read() as session:
            ids = list(await session.scalars(_uncharged(tenant_id, at).limit(BATCH)))
        if not ids:
            return done
        results = await asyncio.gather(
            *(first_charge(invoice_id) for invoice_id in ids), return_exceptions=True
        )
        for invoice_id, result in zip(ids, results, strict=True):
            if isinstance(result, BaseException):
                log.error("charging an invoice failed", invoice=invoice_id, exc_info=result)
                FAILURES.inc()
        done += sum(result is True for result in results)
        if not any(result is True for result in results):  # every one was taken by another worker meanwhile
            return done


async def charge_first(ctx: AppContext, invoice_id: str, *, at: datetime) -> bool:
    """The first charge of one invoice just finalized and due (a threshold invoice), now; False
    when there is nothing to charge or another worker took it. One that fails unexpectedly is
    left to ``charge_due``."""
    try:
        return await charge_invoice(ctx, invoice_id, attempt=1, reason="finalized", at=at) is not None
    except Exception:
        log.exception("charging an invoice failed; left to the next charge pass", invoice=invoice_id)
        FAILURES.inc()
        return False


def _uncharged(tenant_id: str | None, at: datetime) -> sa.Select[str]:
    attempted = sa.exists().where(Payment.invoice_id == Invoice.id)
    query = (
        sa.select(Invoice.id)
        .where(Invoice.status == "open", Invoice.amount_due > 0, Invoice.due_at <= at, ~attempted)
        .order_by(Invoice.id)
    )
    return query if tenant_id is None else query.where(Invoice.tenant_id == tenant_id)


async def pay_now(ctx: AppContext, tenant_id: str, invoice_id: str) -> Payment:
    """Charge an open invoice now, as its next attempt; 409 while another attempt is pending."""
    async with ctx.database.read() as session:
        invoice = await get_invoice(session, tenant_id, invoice_id)
    payment = await charge_invoice(
        ctx, invoice.id, attempt=None, reason="manual", at=ctx.clock.now(), strict=True
    )
    if payment is None:
        raise Conflict("Another payment of this invoice started at the same time", code="payment_in_progress")
    return payment


async def charge_invoice(
    ctx: AppContext, invoice_id: str, *, attempt: int | None, reason: str, at: datetime, strict: bool = False
) -> Payment | None:
    """Open attempt ``attempt`` (default: the next one) and charge it. None if that attempt exists or
    the invoice cannot be charged now (not open, or another attempt pending); ``strict`` raises instead."""
    async with ctx.database.transaction() as session:
        invoice = await lock_invoice(session, invoice_id)
        if not await _chargeable(session, invoice, strict=strict):
            return None
        tenant = await session.get_one(Tenant, invoice.tenant_id)
        customer = await session.get_one(Customer, invoice.customer_id)
        number = attempt or await next_attempt(session, invoice.id)
        opened = await open_attempt(
            session,
            tenant,
            invoice,
            customer,
            attempt=number,
            reason=reason,
            at=at,
            lease=call_lease(ctx.settings),
        )
        if opened is None:
            return None
        payment, token = opened
    result = await call_provider(ctx, tenant, payment, invoice.number)
    async with ctx.database.transaction() as session:
        await record_outcome(session, payment.id, result, at=at, token=token)
        return await session.get_one(Payment, payment.id)


async def _chargeable(session: AsyncSession, invoice: Invoice, *, strict: bool) -> bool:
    if invoice.status == "open" and invoice.amount_due > 0:
        pending = await PAYMENTS.pending_payment(session, invoice.id)
        if pending is None:
            return True
        if strict:
            raise Conflict(f"Payment {pending} of this invoice is still pending", code="payment_in_progress")
        return False
    if strict:
        state = "has nothing due" if invoice.status == "open" else f"is {invoice.status}"
        raise Conflict(f"Only an open invoice can be paid; this one {state}", code="invalid_transition")
    return False


async def call_provider(
    ctx: AppContext, tenant: Tenant, payment: Payment, invoice_number: str | None, *, lookup: bool = False
) -> ChargeResult:
    """Charge through the provider the payment was opened with, or with ``lookup`` ask it what
    became of the charge; a failure to even try is an unknown."""
    if payment.payment_method is None:
        return NO_PAYMENT_METHOD
    request = charge_request(payment, invoice_number)
    try:
        async with open_provider(ctx, tenant, payment.provider) as provider:
            if lookup:
                return await provider.retrieve(request, payment.provider_payment_id)
            return await provider.charge(request)
    except ProviderUnavailable as exc:
        return ChargeResult(Outcome.UNKNOWN, message=f"provider unavailable: {exc}")
