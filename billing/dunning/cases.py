"""Dunning cases: opened by an invoice's first failed charge, moved on by each outcome.

Failures and payments arrive as outbox events (``invoice.payment_failed``, ``invoice.paid``),
whichever path reported them (the charge or Stripe's webhook): the payments layer records each
failure once, and a case ignores an attempt it has already seen, so a redelivered event never
repeats a step. Emails are queued in the same transaction as the step that causes them, with
dedupe keys that make a second queueing a no-op.
"""

from __future__ import annotations

from collections import defaultdict
from collections.abc import Sequence
from datetime import datetime
from typing import Any

import msgspec
import sqlalchemy as sa
from sqlalchemy.ext.asyncio import AsyncSession

from billing.core import outbox
from billing.core.db.inserts import insert_ignore
from billing.core.db.queries import rowcount
from billing.core.errors import NotFound
from billing.core.ids import new_id
from billing.core.pagination import PageRequest, fetch_page
from billing.customers.service import update_payment_status
from billing.dunning.decide import Case, Email, Policy, Step, after_failure
from billing.dunning.models import DunningCase
from billing.dunning.policy import get_policy
from billing.dunning.schemas import CaseNotificationOut, CaseOut, case_notification_out, case_out
from billing.dunning.summary import customer_snapshot
from billing.invoicing import invoices
from billing.invoicing.models import Invoice
from billing.invoicing.subscriptions import set_past_due
from billing.notifications.models import Notification
from billing.notifications.queue import queue_notification
from billing.payments.declines import FailureClass
from billing.payments.models import Payment
from billing.payments.schemas import PaymentOut, payment_out
from billing.payments.views import PAYMENTS

ACTOR = "dunning"


async def open_case(session: AsyncSession, invoice: Invoice, *, at: datetime) -> DunningCase:
    """The invoice's case, opened now if it has none (the unique invoice id decides), locked."""
    policy = await get_policy(session, invoice.tenant_id)
    row = {
        "id": new_id("dun"),
        "tenant_id": invoice.tenant_id,
        "invoice_id": invoice.id,
        "customer_id": invoice.customer_id,
        "status": "active",
        "retry_schedule_days": list(policy.retry_schedule_days),
        "first_failed_at": at,
        "next_slot": 0,
        "final_notice_sent": False,
        "failures": 0,
        "last_attempt": 0,
        "retries": 0,
        "created_at": at,
        "updated_at": at,
    }
    inserted = await insert_ignore(
        session, DunningCase.__table__, [row], returning=[DunningCase.__table__.c.id]
    )
    query = sa.select(DunningCase).where(DunningCase.invoice_id == invoice.id).with_for_update()
    case = (await session.scalars(query.execution_options(populate_existing=True))).one()
    if inserted:
        await sync_past_due(session, invoice, at=at)
    return case


async def sync_past_due(session: AsyncSession, invoice: Invoice, *, at: datetime) -> None:
    """The invoice's subscription is past due while an invoice of it has an active case."""
    if invoice.subscription_id is None:
        return
    active = await session.scalar(
        sa.select(DunningCase.id)
        .join(Invoice, Invoice.id == DunningCase.invoice_id)
        .where(Invoice.subscription_id == invoice.subscription_id, DunningCase.status == "active")
        .limit(1)
    )
    await set_past_due(session, invoice.subscription_id, active is not None, at=at)


def case_policy(policy: Policy, case: DunningCase) -> Policy:
    return Policy(
        retry_schedule_days=tuple(case.retry_schedule_days),
        final_action=policy.final_action,
        suspend_customer=policy.suspend_customer,
        expiring_card_notice=policy.expiring_card_notice,
    )


def case_state(case: DunningCase) -> Case:
    return Case(case.first_failed_at, case.next_slot, case.final_notice_sent)


async def record_failure(
    session: AsyncSession, invoice: Invoice, payment: dict[str, Any], *, at: datetime
) -> DunningCase | None:
    """Move the invoice's case on after the failed ``payment`` (the outbox payload's); None if ignored."""
    if invoice.status != "open":
        return None
    case = await open_case(session, invoice, at=at)
    if case.status != "active" or payment["attempt"] <= case.last_attempt:
        return None
    failure = FailureClass(payment["failure_class"])
    policy = case_policy(await get_policy(session, invoice.tenant_id), case)
    step = after_failure(policy, case_state(case), failure, at)
    case.failures += 1
    case.last_attempt = payment["attempt"]
    case.last_failure_class = failure.value
    case.last_failure_code = payment.get("decline_code") or payment.get("failure_code")
    if failure is not FailureClass.SOFT:
        await update_payment_status(session, invoice.customer_id, "action_required", at=at)
    email_data = {"attempt": payment["attempt"], "failure_class": failure.value}
    await apply_step(session, case, invoice, policy, step, at=at, data=email_data)
    return case


async def apply_step(
    session: AsyncSession,
    case: DunningCase,
    invoice: Invoice,
    policy: Policy,
    step: Step,
    *,
    at: datetime,
    data: dict[str, Any] | None = None,
) -> None:
    """Queue the step's email, schedule its next action, or take the final action."""
    case.next_slot = step.next_slot
    case.next_action_at = step.next_action_at
    case.next_action = step.action.value if step.action else None
    case.updated_at = at
    if step.email is not None:
        details = dict(data or {})
        details |= {
            "next_attempt_at": step.next_action_at if step.action and step.action.value == "retry" else None
        }
        if step.email is Email.FINAL_NOTICE:
            case.final_notice_sent = True
            details |= {"final_action": policy.final_action, "final_attempt_at": step.next_action_at}
        await notify(
            session, case, step.email.value, _dedupe_key(step.email, invoice.id, details), details, at=at
        )
    if step.exhausted:
        await _exhaust(session, case, invoice, policy, at=at)


def _dedupe_key(email: Email, invoice_id: str, details: dict[str, Any]) -> str:
    if email is Email.FINAL_NOTICE:
        return f"final_notice:{invoice_id}"
    return f"{email.value}:{invoice_id}:{details.get('attempt', 0)}"


async def notify(
    session: AsyncSession,
    case: DunningCase,
    kind: str,
    dedupe_key: str,
    data: dict[str, Any],
    *,
    at: datetime,
) -> bool:
    return await queue_notification(
        session,
        tenant_id=case.tenant_id,
        customer_id=case.customer_id,
        kind=kind,
        dedupe_key=dedupe_key,
        data={"invoice_id": case.invoice_id, **data},
        at=at,
    )


async def _exhaust(
    session: AsyncSession, case: DunningCase, invoice: Invoice, policy: Policy, *, at: datetime
) -> None:
    case.status = "exhausted"
    case.closed_at = at
    case.next_action = case.next_action_at = None
    if policy.final_action == "mark_uncollectible" and invoice.status == "open":
        await invoices.mark_uncollectible(session, invoice, at=at, actor=ACTOR, payments=PAYMENTS)
    event = {"case_id": case.id, "invoice_id": invoice.id, "customer_id": case.customer_id}
    if policy.suspend_customer:
        await update_payment_status(session, case.customer_id, "delinquent", at=at)
        suspended = event | {"object": await customer_snapshot(session, case.customer_id)}
        await outbox.emit(
            session, tenant_id=case.tenant_id, topic="customer.suspended", payload=suspended, now=at
        )
    event["object"] = await invoice_snapshot(session, invoice, at=at)
    await outbox.emit(session, tenant_id=case.tenant_id, topic="dunning.exhausted", payload=event, now=at)
    await sync_past_due(session, invoice, at=at)


async def record_payment(
    session: AsyncSession, invoice: Invoice, *, at: datetime, notify_customer: bool = True
) -> DunningCase | None:
    """The invoice was paid: its case (if any, active or exhausted) is recovered, the customer told
    once (unless not ``notify_customer``)."""
    query = sa.select(DunningCase).where(DunningCase.invoice_id == invoice.id).with_for_update()
    case = (await session.scalars(query)).first()
    if case is None or case.status not in ("active", "exhausted"):
        return None
    case.status = "recovered"
    case.closed_at = case.updated_at = at
    case.next_action = case.next_action_at = None
    if notify_customer:
        await notify(session, case, "payment_recovered", f"payment_recovered:{invoice.id}", {}, at=at)
    if not await _has_unpaid_cases(session, case.customer_id, other_than=case.id):
        await update_payment_status(session, case.customer_id, "ok", at=at)
    event = {
        "case_id": case.id,
        "invoice_id": invoice.id,
        "customer_id": case.customer_id,
        "object": await invoice_snapshot(session, invoice, at=at),
    }
    await outbox.emit(session, tenant_id=case.tenant_id, topic="dunning.recovered", payload=event, now=at)
    await sync_past_due(session, invoice, at=at)
    return case


async def cancel(session: AsyncSession, invoice: Invoice, *, at: datetime) -> None:
    """The invoice was voided or given up by finance: its active case stops, silently."""
    await session.execute(
        sa.update(DunningCase)
        .where(DunningCase.invoice_id == invoice.id, DunningCase.status == "active")
        .values(status="canceled", closed_at=at, updated_at=at, next_action=None, next_action_at=None)
    )
    await sync_past_due(session, invoice, at=at)


async def payment_method_changed(session: AsyncSession, customer_id: str, *, at: datetime) -> int:
    """A new payment method: every active case of the customer retries at once, then on schedule."""
    result = await session.execute(
        sa.update(DunningCase)
        .where(
            DunningCase.customer_id == customer_id,
            DunningCase.status == "active",
            DunningCase.next_action.in_(("wait", "retry")),
        )
        .values(next_action="retry_now", next_action_at=at, updated_at=at),
        execution_options={"synchronize_session": False},
    )
    return rowcount(result)


async def _has_unpaid_cases(session: AsyncSession, customer_id: str, *, other_than: str) -> bool:
    query = (
        sa.select(DunningCase.id)
        .join(Invoice, Invoice.id == DunningCase.invoice_id)
        .where(
            DunningCase.customer_id == customer_id,
            DunningCase.id != other_than,
            DunningCase.status.in_(("active", "exhausted")),
            Invoice.status != "paid",
        )
        .limit(1)
    )
    return (await session.scalar(query)) is not None


async def invoice_snapshot(session: AsyncSession, invoice: Invoice, *, at: datetime) -> Any:
    """The invoice as it is at ``at``, as an event carries it (``data`` of an outgoing webhook)."""
    await session.flush()
    (out,) = await invoices.invoices_out(session, [invoice], PAYMENTS, now=at)
    return msgspec.to_builtins(out)


async def list_cases(
    session: AsyncSession, tenant_id: str, page: PageRequest, *, status: str | None = None
) -> tuple[list[DunningCase], bool]:
    query = sa.select(DunningCase).where(DunningCase.tenant_id == tenant_id)
    if status is not None:
        query = query.where(DunningCase.status == status)
    return await fetch_page(session, query, DunningCase.id, page)


async def get_case(session: AsyncSession, tenant_id: str, case_id: str) -> DunningCase:
    case = await session.get(DunningCase, case_id)
    if case is None or case.tenant_id != tenant_id:
        raise NotFound(f"No dunning case {case_id}")
    return case


async def cases_out(session: AsyncSession, cases: Sequence[DunningCase]) -> list[CaseOut]:
    """Cases with their payment attempts and notifications, in three queries."""
    invoice_ids = [case.invoice_id for case in cases]
    attempts: dict[str, list[PaymentOut]] = defaultdict(list)
    for payment in await session.scalars(
        sa.select(Payment).where(Payment.invoice_id.in_(invoice_ids)).order_by(Payment.attempt)
    ):
        attempts[payment.invoice_id].append(payment_out(payment))
    notes: dict[str, list[CaseNotificationOut]] = defaultdict(list)
    for note in await session.scalars(
        sa.select(Notification).where(Notification.invoice_id.in_(invoice_ids)).order_by(Notification.id)
    ):
        if note.invoice_id is not None:
            notes[note.invoice_id].append(case_notification_out(note))
    return [case_out(case, attempts[case.invoice_id], notes[case.invoice_id]) for case in cases]
