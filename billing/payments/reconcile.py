"""Learning the outcome of charges and refunds left pending by a timeout, an outage or a crash.

A pending row whose claim has expired is claimed here and its request repeated with the same
idempotency key: the provider answers what it did the first time, or does it now, once. Stripe
keeps idempotency keys for at least 24 hours, so after 23 hours a charge is looked up instead
(by its PaymentIntent id, or by our payment id in its metadata) and never sent again. Anything
still pending after a day is flagged for finance by the sweep.

An answer that is not final yet leaves the row pending and makes its next check the claim's expiry,
:func:`~billing.payments.attempts.retry_delay` later; a check that raises waits for its claim to
lapse (see :mod:`billing.core.work`).
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from datetime import datetime, timedelta
from functools import partial
from typing import Any

import sqlalchemy as sa
import structlog
from prometheus_client import Counter

from billing.core import work
from billing.core.context import AppContext
from billing.invoicing.models import Invoice
from billing.payments.attempts import call_lease, record_outcome
from billing.payments.charge import call_provider
from billing.payments.declines import FailureClass
from billing.payments.models import Payment, Refund
from billing.payments.provider import ChargeResult, Outcome
from billing.payments.refunds import record_refund_outcome, refund_request
from billing.payments.registry import open_provider
from billing.tenants.models import Tenant

REPEAT_WINDOW = timedelta(hours=23)
STALE_AFTER = timedelta(days=1)
CLAIM_BATCH = 50
log = structlog.get_logger("billing.payments.reconcile")
FAILURES = Counter(
    "billing_reconciliation_failures_total", "Reconciliations that failed and wait for their claim to lapse"
)
FLAGGED = Counter("billing_payments_flagged_total", "Charges and refunds still pending after a day", ["kind"])
NOT_FOUND = ChargeResult(
    Outcome.DECLINED,
    failure_code="charge_not_found",
    decline_type=FailureClass.SOFT.value,
    message="The provider has no record of this charge: it was never made.",
)

Resolver = Callable[[AppContext, datetime, sa.Row[Any], str], Awaitable[None]]


async def reconcile_due(ctx: AppContext, *, at: datetime, tenant_id: str | None = None) -> int:
    """Resolve every pending charge and refund whose claim has expired; return how many were checked."""
    done = 0
    refunds = Refund.__table__
    # Past the key's lifetime a repeated refund could refund twice: those wait for finance.
    repeatable = refunds.c.created_at > at - REPEAT_WINDOW
    kinds: list[tuple[sa.Table, sa.ColumnElement[bool], Resolver]] = [
        (Payment.__table__, sa.true(), _resolve_payment),
        (refunds, repeatable, _resolve_refund),
    ]
    for table, condition, resolve in kinds:
        due = sa.and_(table.c.status == "pending", condition)
        if tenant_id is not None:
            due = sa.and_(due, table.c.tenant_id == tenant_id)
        batch = partial(
            work.claim_and_handle,
            ctx,
            table,
            due=due,
            order_by=[table.c.claim_expires_at, table.c.id],
            limit=CLAIM_BATCH,
            lease=call_lease(ctx.settings),
            now=at,
            handle=partial(resolve, ctx, at),
            on_error=_failed,
        )
        done += await work.drain(batch, full=CLAIM_BATCH)
    return done


def _failed(row: sa.Row[Any]) -> None:
    # The claim expires and the next tick tries again.
    log.exception("reconciliation failed", row=row.id)
    FAILURES.inc()


async def _resolve_payment(ctx: AppContext, at: datetime, row: sa.Row[Any], token: str) -> None:
    async with ctx.database.read() as session:
        payment = await session.get_one(Payment, row.id)
        tenant = await session.get_one(Tenant, payment.tenant_id)
        number = await session.scalar(sa.select(Invoice.number).where(Invoice.id == payment.invoice_id))
    result = await call_provider(
        ctx, tenant, payment, number, lookup=at - payment.created_at >= REPEAT_WINDOW
    )
    if result.outcome is Outcome.NOT_FOUND:
        result = NOT_FOUND
    async with ctx.database.transaction() as session:
        await record_outcome(session, payment.id, result, at=at, token=token, source="reconciliation")


async def _resolve_refund(ctx: AppContext, at: datetime, row: sa.Row[Any], token: str) -> None:
    async with ctx.database.read() as session:
        refund = await session.get_one(Refund, row.id)
        tenant = await session.get_one(Tenant, refund.tenant_id)
        payment = await session.get_one(Payment, refund.payment_id)
    async with open_provider(ctx, tenant, refund.provider) as provider:
        result = await provider.refund(refund_request(refund, payment))
    async with ctx.database.transaction() as session:
        await record_refund_outcome(session, refund.id, result, at=at, token=token)


async def flag_stale(ctx: AppContext, *, at: datetime) -> int:
    """Flag charges and refunds pending for more than a day, once each, for finance to look at."""
    flagged = 0
    for kind, model in (("payment", Payment), ("refund", Refund)):
        async with ctx.database.transaction() as session:
            ids = list(
                await session.scalars(
                    sa.update(model)
                    .where(
                        model.status == "pending",
                        model.created_at <= at - STALE_AFTER,
                        model.flagged_at.is_(None),
                    )
                    .values(flagged_at=at)
                    .returning(model.id),
                    execution_options={"synchronize_session": False},
                )
            )
        for row_id in ids:
            log.warning("still pending after a day; flagged for finance", kind=kind, id=row_id)
        FLAGGED.labels(kind).inc(len(ids))
        flagged += len(ids)
    return flagged
