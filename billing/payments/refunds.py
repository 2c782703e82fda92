"""Refunds of paid invoices, full or partial, through the provider that took the money.

Like charges, a refund is a committed row before it is a provider call, with an idempotency key of
its own. Pending refunds count against what is left to refund, so two refunds at once can never
return more than was paid.
"""

from __future__ import annotations

from collections import defaultdict
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import datetime, timedelta

import sqlalchemy as sa
from sqlalchemy.ext.asyncio import AsyncSession

from billing.core.context import AppContext
from billing.core.db.claims import new_claim_token
from billing.core.errors import Conflict, FieldError, ValidationFailed
from billing.core.ids import new_id
from billing.invoicing.invoices import get_invoice, lock_invoice
from billing.invoicing.models import Invoice
from billing.payments.attempts import call_lease, reschedule_check
from billing.payments.models import Payment, Refund
from billing.payments.provider import Outcome, RefundRequest, RefundResult
from billing.payments.registry import open_provider
from billing.tenants.models import Tenant

_STATUS = {Outcome.SUCCEEDED: "succeeded", Outcome.DECLINED: "failed"}


async def refund_invoice(
    ctx: AppContext, tenant_id: str, invoice_id: str, amount: int | None, *, actor: str
) -> list[Refund]:
    """Refund ``amount`` (None: all that is left) of a paid invoice; return the refunds made."""
    at = ctx.clock.now()
    async with ctx.database.transaction() as session:
        invoice = await get_invoice(session, tenant_id, invoice_id, lock=True)
        tenant = await session.get_one(Tenant, tenant_id)
        refunds = await open_refunds(
            session, tenant, invoice, amount, actor=actor, at=at, lease=call_lease(ctx.settings)
        )
        calls = await refund_calls(session, refunds)
    return await send_refunds(ctx, tenant, calls)


@dataclass(frozen=True)
class RefundCall:
    """A refund row committed and claimed, and the provider call that carries it out."""

    refund_id: str
    provider: str
    token: str | None
    request: RefundRequest


async def refund_calls(session: AsyncSession, refunds: Sequence[Refund]) -> list[RefundCall]:
    return [
        RefundCall(
            refund.id,
            refund.provider,
            refund.claimed_by,
            refund_request(refund, await session.get_one(Payment, refund.payment_id)),
        )
        for refund in refunds
    ]


async def send_refunds(ctx: AppContext, tenant: Tenant, calls: Sequence[RefundCall]) -> list[Refund]:
    """Call the provider for refunds opened (and committed) by ``open_refunds``; record each
    outcome and return the refunds as they are then."""
    for call in calls:
        async with open_provider(ctx, tenant, call.provider) as provider:
            result = await provider.refund(call.request)
        async with ctx.database.transaction() as session:
            await record_refund_outcome(session, call.refund_id, result, at=ctx.clock.now(), token=call.token)
    ids = [call.refund_id for call in calls]
    async with ctx.database.read() as session:
        return list(await session.scalars(sa.select(Refund).where(Refund.id.in_(ids)).order_by(Refund.id)))


async def open_refunds(
    session: AsyncSession,
    tenant: Tenant,
    invoice: Invoice,
    amount: int | None,
    *,
    actor: str,
    at: datetime,
    lease: timedelta,
) -> list[Refund]:
    """Refund rows (pending, claimed) for ``amount`` (None: all that is left) of the locked paid
    invoice, newest payment first; the caller commits them before calling the provider."""
    if invoice.status != "paid":
        raise Conflict(
            f"Only a paid invoice can be refunded; this one is {invoice.status}", code="invalid_transition"
        )
    left = await refundable(session, invoice.id)
    total_left = sum(left.values())
    if total_left == 0:
        raise Conflict(
            "Everything paid on this invoice is refunded or being refunded", code="invalid_transition"
        )
    wanted = total_left if amount is None else amount
    if wanted > total_left:
        raise ValidationFailed(
            f"amount: at most {total_left} can be refunded",
            code="amount_too_large",
            errors=[FieldError("amount", f"at most {total_left} can be refunded")],
        )
    token = new_claim_token()
    refunds = []
    for payment, available in left.items():
        share = min(available, wanted)
        if share == 0:
            continue
        refunds.append(_refund_row(tenant, payment, share, token=token, actor=actor, at=at, lease=lease))
        wanted -= share
    session.add_all(refunds)
    await session.flush()
    return refunds


async def refundable(session: AsyncSession, invoice_id: str) -> dict[Payment, int]:
    """Each succeeded payment of the invoice, newest first, with what is left to refund of it."""
    payments = list(
        await session.scalars(
            sa.select(Payment)
            .where(Payment.invoice_id == invoice_id, Payment.status == "succeeded")
            .order_by(Payment.attempt.desc())
        )
    )
    taken: dict[str, int] = defaultdict(int)
    rows = await session.execute(
        sa.select(Refund.payment_id, sa.func.sum(Refund.amount))
        .where(Refund.invoice_id == invoice_id, Refund.status.in_(("pending", "succeeded")))
        .group_by(Refund.payment_id)
    )
    for payment_id, amount in rows.all():
        taken[payment_id] = int(amount)
    return {payment: payment.amount - taken[payment.id] for payment in payments}


def _refund_row(
    tenant: Tenant, payment: Payment, amount: int, *, token: str, actor: str, at: datetime, lease: timedelta
) -> Refund:
    refund_id = new_id("rfd")
    return Refund(
        id=refund_id,
        tenant_id=tenant.id,
        invoice_id=payment.invoice_id,
        payment_id=payment.id,
        provider=payment.provider,
        idempotency_key=f"{payment.id}:refund:{refund_id}",
        amount=amount,
        currency=payment.currency,
        status="pending",
        checks=0,
        actor=actor,
        claimed_by=token,
        claim_expires_at=at + lease,
        created_at=at,
        updated_at=at,
    )


def refund_request(refund: Refund, payment: Payment) -> RefundRequest:
    return RefundRequest(
        refund_id=refund.id,
        provider_payment_id=payment.provider_payment_id or "",
        amount=refund.amount,
        currency=refund.currency,
        idempotency_key=refund.idempotency_key,
    )


async def record_refund_outcome(
    session: AsyncSession, refund_id: str, result: RefundResult, *, at: datetime, token: str | None
) -> bool:
    """Write ``result`` on a refund still pending; a success counts on the invoice."""
    refund = await session.get_one(Refund, refund_id)
    invoice = await lock_invoice(session, refund.invoice_id)
    await session.refresh(refund)
    if refund.status != "pending":
        return False
    refund.provider_refund_id = result.provider_refund_id or refund.provider_refund_id
    refund.updated_at = at
    status = _STATUS.get(result.outcome)
    if status is None:
        return reschedule_check(refund, result.message or result.outcome.value, at=at, token=token)
    refund.status = status
    refund.completed_at = at
    refund.claimed_by = refund.claim_expires_at = None
    if status == "succeeded":
        invoice.amount_refunded += refund.amount
        invoice.updated_at = at
    else:
        refund.failure_code = result.failure_code
        refund.failure_message = (result.message or "")[:500] or None
    await session.flush()
    return True
