"""Dunning's work: the outbox events it consumes, and the due steps (scheduled retries, passing
slots, exhaustion) that the billing run and the dunning tick perform.

A due case is claimed, then marked ``charging`` before its retry is made, and the retry is a
payment attempt with the reason ``dunning <n>``: a crash before the charge retries it, a crash
after it finds that attempt and does not charge again. Its outcome comes back as an outbox event
like any other charge's. A step that fails is taken again once its claim lapses (see
:mod:`billing.core.work`).
"""

from __future__ import annotations

from datetime import datetime
from functools import partial
from typing import Any

import sqlalchemy as sa
import structlog
from prometheus_client import Counter

from billing.core import work
from billing.core.context import AppContext
from billing.core.outbox import Message
from billing.dunning import cases
from billing.dunning.cards import on_card_expiring, on_card_removed
from billing.dunning.decide import at_waiting_slot
from billing.dunning.models import DunningCase
from billing.dunning.policy import get_policy
from billing.invoicing.invoices import lock_invoice
from billing.invoicing.models import Invoice
from billing.payments.attempts import call_lease
from billing.payments.charge import charge_invoice
from billing.payments.models import Payment

CLAIM_BATCH = 50
log = structlog.get_logger("billing.dunning")
FAILURES = Counter(
    "billing_dunning_step_failures_total", "Dunning steps that failed and wait for their claim to lapse"
)


async def on_payment_failed(ctx: AppContext, message: Message) -> None:
    async with ctx.database.transaction() as session:
        invoice = await lock_invoice(session, message.payload["invoice_id"])
        await cases.record_failure(session, invoice, message.payload["payment"], at=message.created_at)


async def on_invoice_paid(ctx: AppContext, message: Message) -> None:
    async with ctx.database.transaction() as session:
        invoice = await lock_invoice(session, message.payload["invoice_id"])
        # Settled by a credit note, not by a payment: the case ends recovered, but there was no
        # payment to thank the customer for.
        quiet = message.payload.get("paid_by") == "credit_note"
        await cases.record_payment(session, invoice, at=message.created_at, notify_customer=not quiet)


async def on_invoice_closed(ctx: AppContext, message: Message) -> None:
    async with ctx.database.transaction() as session:
        invoice = await lock_invoice(session, message.payload["invoice_id"])
        await cases.cancel(session, invoice, at=message.created_at)


HANDLERS = {
    "invoice.payment_failed": on_payment_failed,
    "invoice.paid": on_invoice_paid,
    "invoice.voided": on_invoice_closed,
    "invoice.uncollectible": on_invoice_closed,
    "customer.payment_method_expiring": on_card_expiring,
    "customer.payment_method_removed": on_card_removed,
}


async def handle(ctx: AppContext, message: Message) -> None:
    await HANDLERS[message.topic](ctx, message)


TOPICS = frozenset(HANDLERS)


async def run_dunning(ctx: AppContext, *, at: datetime, tenant_id: str | None = None) -> int:
    """Take every dunning step due by ``at``; return how many cases moved."""
    table = DunningCase.__table__
    due = sa.and_(table.c.status == "active", table.c.next_action_at <= at)
    if tenant_id is not None:
        due = sa.and_(due, table.c.tenant_id == tenant_id)
    batch = partial(
        work.claim_and_handle,
        ctx,
        table,
        due=due,
        order_by=[table.c.next_action_at, table.c.id],
        limit=CLAIM_BATCH,
        lease=call_lease(ctx.settings),
        now=at,
        handle=partial(_step, ctx, at),
        on_error=_step_failed,
    )
    return await work.drain(batch, full=CLAIM_BATCH)


def _step_failed(row: sa.Row[Any]) -> None:
    log.exception("dunning step failed; retried when its claim lapses", case=row.id)
    FAILURES.inc()


async def _step(ctx: AppContext, at: datetime, row: sa.Row[Any], token: str) -> None:
    case_id = row.id
    async with ctx.database.transaction() as session:
        case = await session.get_one(DunningCase, case_id, populate_existing=True)
        if case.claimed_by != token or case.status != "active":
            return
        if case.next_action == "wait":
            invoice = await session.get_one(Invoice, case.invoice_id, with_for_update=True)
            policy = cases.case_policy(await get_policy(session, case.tenant_id), case)
            await cases.apply_step(
                session, case, invoice, policy, at_waiting_slot(policy, cases.case_state(case), at), at=at
            )
            await work.finish(session, DunningCase.__table__, case.id, token)
            return
        if case.next_action != "charging":
            case.retries += 1
            case.next_slot += case.next_action == "retry"
            case.next_action = "charging"
        case.next_action_at = at + call_lease(ctx.settings)
        reason, invoice_id = f"dunning {case.retries}", case.invoice_id
    if not await _attempted(ctx, invoice_id, reason):
        await charge_invoice(ctx, invoice_id, attempt=None, reason=reason, at=at)
    async with ctx.database.transaction() as session:
        await session.execute(
            sa.update(DunningCase)
            .where(DunningCase.id == case_id, DunningCase.next_action == "charging")
            .values(next_action=None, next_action_at=None, updated_at=at)
        )
        await work.finish(session, DunningCase.__table__, case_id, token)


async def _attempted(ctx: AppContext, invoice_id: str, reason: str) -> bool:
    async with ctx.database.read() as session:
        query = sa.select(Payment.id).where(Payment.invoice_id == invoice_id, Payment.reason == reason)
        return (await session.scalar(query.limit(1))) is not None
