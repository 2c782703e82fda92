"""Queueing a notification: rendered now, in the caller's transaction, sent later by the dispatcher.

``dedupe_key`` is unique per tenant and the row is inserted with ON CONFLICT DO NOTHING, so a
notification queued twice (a retried handler, a second worker, a rerun) exists once, and the
dispatcher sends each row at most once.

Nobody to write to (a customer without an email address, a tenant without a support address):
the row is still written, with status ``skipped``, so that the notification counts as done
and shows in ``GET /v1/notifications`` with the reason in ``last_error``.
"""

from __future__ import annotations

import functools
from collections.abc import Mapping
from datetime import datetime
from email.headerregistry import Address
from email.utils import formataddr, parseaddr
from types import SimpleNamespace
from typing import Any

import sqlalchemy as sa
from sqlalchemy.ext.asyncio import AsyncSession

from billing.core.db.inserts import insert_ignore
from billing.core.ids import new_id
from billing.customers.models import Customer
from billing.invoicing.models import Invoice
from billing.notifications import content
from billing.notifications.models import QUEUED, SKIPPED, Notification
from billing.notifications.render import Rendered, one_line, render
from billing.tenants.models import Tenant

KINDS = (
    "payment_failed",
    "payment_action_required",
    "final_notice",
    "payment_recovered",
    "card_expiring",
    "card_removed",
    "trial_will_end",
    "credit_note_issued",
    "refund_issued",
    "usage_alert",
)
# Emails about a credit note carry it in data["credit_note"] (and the refund in data["refund"]).
CREDIT_NOTE_KINDS = frozenset({"credit_note_issued", "refund_issued"})
INVOICE_KINDS = frozenset(KINDS[:4]) | CREDIT_NOTE_KINDS
CARD_KINDS = frozenset(KINDS[4:6])
SUBSCRIPTION_KINDS = frozenset({"trial_will_end"})
# Emails about an alert's crossing carry {"alert", "trigger"} as the API shows them.
ALERT_KINDS = frozenset({"usage_alert"})
# Emails to the tenant itself, at its support address.
TENANT_KINDS = ("webhook_endpoint_disabled",)
ALL_KINDS = KINDS + TENANT_KINDS
DEFAULT_FROM = "billing@localhost"
TABLE = Notification.__table__
# What an email needs to know of the customer and the invoice (content.CustomerFacts and
# InvoiceFacts), read in one Core query as plain rows: this runs once per email.
_customers, _invoices = Customer.__table__.c, Invoice.__table__.c
CUSTOMER_FACTS = [_customers.id, _customers.email, _customers.name, _customers.locale, _customers.timezone]
INVOICE_FACTS = [
    _invoices.id,
    _invoices.number,
    _invoices.currency,
    _invoices.total,
    _invoices.amount_due,
    _invoices.amount_paid,
    _invoices.period_start,
    _invoices.period_end,
    _invoices.due_at,
]
_INVOICE_LABELS = [column.label(f"invoice_{column.key}") for column in INVOICE_FACTS]
# Built once (this runs for every email), with the ids as bound parameters.
_CUSTOMER_FACTS = sa.select(*CUSTOMER_FACTS).where(
    _customers.id == sa.bindparam("customer_id"), _customers.tenant_id == sa.bindparam("tenant_id")
)
_CUSTOMER_AND_INVOICE_FACTS = _CUSTOMER_FACTS.add_columns(*_INVOICE_LABELS).outerjoin(
    Invoice.__table__,
    sa.and_(
        _invoices.id == sa.bindparam("invoice_id"),
        _invoices.tenant_id == sa.bindparam("tenant_id"),
        _invoices.customer_id == _customers.id,
    ),
)


async def queue_notification(
    session: AsyncSession,
    *,
    tenant_id: str,
    customer_id: str,
    kind: str,
    dedupe_key: str,
    data: Mapping[str, Any],
    at: datetime,
) -> bool:
    """Render and queue one email in the caller's transaction; False if ``dedupe_key`` was already
    queued (then nothing is written). A customer without an email address gets a ``skipped`` row.

    ``data``: ``invoice_id`` (+ optional ``attempt``, ``next_attempt_at``, ``failure_class``,
    ``decline_code``, ``final_action``, ``final_attempt_at``) for invoice kinds, ``card`` for card kinds,
    ``subscription`` (as the API shows it) and optional ``plan_name`` for subscription kinds,
    ``invoice_id``, ``credit_note`` (as the API shows it) and ``refund`` (``{"amount"}``, for
    refund_issued) for credit note kinds, ``alert`` and ``trigger`` (as the API shows them) and
    optional ``meter_name`` for usage_alert.
    """
    if kind not in KINDS:
        raise ValueError(f"unknown notification kind {kind!r}")
    tenant = await _tenant(session, tenant_id)
    invoice_id = data.get("invoice_id") if kind in INVOICE_KINDS else None
    customer, invoice = await _facts(session, tenant_id, customer_id, invoice_id)
    if kind in INVOICE_KINDS and invoice is None:
        raise ValueError(f"no invoice {invoice_id!r} of customer {customer_id} in tenant {tenant_id}")
    if kind in CARD_KINDS and not isinstance(data.get("card"), Mapping):
        raise ValueError(f"{kind} needs data['card']")
    if kind in SUBSCRIPTION_KINDS and not isinstance(data.get("subscription"), Mapping):
        raise ValueError(f"{kind} needs data['subscription']")
    if kind in CREDIT_NOTE_KINDS and not isinstance(data.get("credit_note"), Mapping):
        raise ValueError(f"{kind} needs data['credit_note']")
    if kind in ALERT_KINDS and not (
        isinstance(data.get("alert"), Mapping) and isinstance(data.get("trigger"), Mapping)
    ):
        raise ValueError(f"{kind} needs data['alert'] and data['trigger']")
    rendered = render(kind, content.customer_context(kind, tenant, customer, invoice, data))
    row = _row(tenant, kind, dedupe_key, _address(customer.email), rendered, at)
    row.update(customer_id=customer.id, invoice_id=invoice.id if invoice else None)
    return await _insert(session, row)


async def queue_tenant_notification(
    session: AsyncSession,
    *,
    tenant_id: str,
    kind: str,
    dedupe_key: str,
    data: Mapping[str, Any],
    at: datetime,
) -> bool:
    """Like :func:`queue_notification`, for an email to the tenant's support address."""
    if kind not in TENANT_KINDS:
        raise ValueError(f"unknown tenant notification kind {kind!r}")
    tenant = await _tenant(session, tenant_id)
    rendered = render(kind, content.tenant_context(kind, tenant, data, at))
    row = _row(tenant, kind, dedupe_key, _address(tenant.support_email), rendered, at)
    return await _insert(session, row)


async def _tenant(session: AsyncSession, tenant_id: str) -> Tenant:
    """The tenant, loaded once per session: the session's identity map holds objects weakly, and
    a transaction that queues many emails would otherwise load it for each."""
    held: dict[str, Tenant] = session.info.setdefault("notifications.tenants", {})
    tenant = held.get(tenant_id) or await session.get(Tenant, tenant_id)
    if tenant is None:
        raise ValueError(f"no tenant {tenant_id}")
    held[tenant_id] = tenant
    return tenant


async def _facts(
    session: AsyncSession, tenant_id: str, customer_id: str, invoice_id: Any
) -> tuple[sa.Row[Any], SimpleNamespace | None]:
    """The customer's facts and, when ``invoice_id`` is given, the facts of that invoice of theirs."""
    query = _CUSTOMER_AND_INVOICE_FACTS if invoice_id is not None else _CUSTOMER_FACTS
    if session.new or session.dirty:
        await session.flush()  # a Core query does not autoflush: read the caller's changes too
    params = {"tenant_id": tenant_id, "customer_id": customer_id, "invoice_id": invoice_id}
    row = (await session.execute(query, params)).first()
    if row is None:
        raise ValueError(f"no customer {customer_id} in tenant {tenant_id}")
    if invoice_id is None or row.invoice_id is None:
        return row, None
    return row, SimpleNamespace(
        **{column.key: getattr(row, f"invoice_{column.key}") for column in INVOICE_FACTS}
    )


def _row(
    tenant: Tenant, kind: str, dedupe_key: str, to: str | None, rendered: Rendered, at: datetime
) -> dict[str, Any]:
    return {
        "id": new_id("ntf"),
        "tenant_id": tenant.id,
        "customer_id": None,
        "invoice_id": None,
        "kind": kind,
        "dedupe_key": dedupe_key,
        "to_address": to,
        "from_address": sender(tenant),
        "reply_to": _address(tenant.support_email),
        "subject": rendered.subject,
        "html": rendered.html,
        "text": rendered.text,
        "status": QUEUED if to else SKIPPED,
        "attempts": 0,
        "last_error": None if to else "no email address to send to",
        "created_at": at,
        "next_attempt_at": at if to else None,
        "sent_at": None,
    }


async def _insert(session: AsyncSession, row: dict[str, Any]) -> bool:
    return bool(await insert_ignore(session, TABLE, [row], returning=[TABLE.c.id]))


def sender(tenant: Tenant) -> str:
    """``"Acme" <billing@acme.example>``: the tenant's from address, or its support address,
    under the tenant's name unless the address carries a name of its own."""
    return _sender(tenant.name, tenant.email_from, tenant.support_email)


@functools.lru_cache(maxsize=1024)
def _sender(tenant_name: str, email_from: str | None, support_email: str | None) -> str:
    name, address = parseaddr(email_from or "")
    address = _address(address) or _address(support_email) or DEFAULT_FROM
    return formataddr((one_line(name or tenant_name), address))


@functools.lru_cache(maxsize=4096)
def _address(value: str | None) -> str | None:
    """A bare address that an email header can carry, or None (no address, or not a valid one)."""
    if not value:
        return None
    _, address = parseaddr(value)
    try:
        Address(addr_spec=address)
    except (ValueError, IndexError):
        return None
    # ASCII only: an internationalised address needs SMTPUTF8, which we do not rely on.
    return address if "@" in address and address.isascii() else None
