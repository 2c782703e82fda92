"""Credit grants: creating, activating and voiding them, reading them, and their events.

A ``promotional`` grant is active at once. A ``paid`` one waits, ``pending``, for its invoice
(made by invoicing, which calls :func:`activate_for_invoice` when the invoice is paid and
:func:`void_for_invoice` when it is voided or marked uncollectible).
"""

from __future__ import annotations

from collections.abc import Collection, Sequence
from datetime import datetime

import msgspec
import sqlalchemy as sa
from sqlalchemy.ext.asyncio import AsyncSession

from billing.core import outbox, validation
from billing.core.clock import ensure_utc
from billing.core.errors import Conflict, FieldError, NotFound, ValidationFailed
from billing.core.ids import new_id
from billing.core.pagination import PageRequest, fetch_page
from billing.credits import ledger
from billing.credits.ledger import Movement
from billing.credits.models import CreditGrant
from billing.credits.schemas import CreditGrantCreate, CreditGrantOut, credit_grant_out
from billing.customers.models import Customer
from billing.metering.meters import meters_by_key
from billing.metering.models import Meter

NAME_MAX_LENGTH = 200
DEFAULT_PRIORITY = 50
CREATED, ACTIVATED, VOIDED, EXPIRED = (
    "credit_grant.created",
    "credit_grant.activated",
    "credit_grant.voided",
    "credit_grant.expired",
)


async def new_grant(
    session: AsyncSession,
    customer: Customer,
    data: CreditGrantCreate,
    *,
    now: datetime,
    invoice_id: str | None = None,
) -> CreditGrant:
    """A validated grant for ``customer`` (not yet written); every field is checked first."""
    if data.amount <= 0:
        raise ValidationFailed.field("amount", "must be a positive integer (minor units)")
    if data.currency is not None and validation.currency("currency", data.currency) != customer.currency:
        raise ValidationFailed(
            f"The customer is billed in {customer.currency}, not {data.currency}", code="currency_mismatch"
        )
    if data.expires_at is not None and data.expires_at <= now:
        raise ValidationFailed.field("expires_at", "must be in the future")
    return CreditGrant(
        id=new_id("crg"),
        tenant_id=customer.tenant_id,
        customer_id=customer.id,
        name=validation.text("name", data.name, max_length=NAME_MAX_LENGTH),
        amount=data.amount,
        currency=customer.currency,
        category=data.category,
        priority=validation.int_range("priority", data.priority, 0, 100),
        expires_at=None if data.expires_at is None else ensure_utc(data.expires_at),
        applies_to_meters=await _meter_ids(session, customer.tenant_id, data.applies_to_meters),
        status="pending",
        available=0,
        invoice_id=invoice_id,
        metadata_=validation.validate_metadata("metadata", data.metadata or {}),
        created_at=now,
        updated_at=now,
    )


async def _meter_ids(session: AsyncSession, tenant_id: str, keys: list[str] | None) -> list[str] | None:
    if keys is None:
        return None
    if not keys:
        raise ValidationFailed.field("applies_to_meters", "must name at least one meter, or be left out")
    found = await meters_by_key(session, tenant_id, set(keys))
    unknown = [key for key in keys if key not in found]
    if unknown:
        raise ValidationFailed(
            f"No meter {', '.join(sorted(set(unknown)))}",
            code="unknown_meter",
            errors=[FieldError("applies_to_meters", f"no meter {key}") for key in unknown],
        )
    return list(dict.fromkeys(found[key].id for key in keys))


async def add_grant(session: AsyncSession, grant: CreditGrant, *, now: datetime) -> CreditGrant:
    """Write a new grant and its ``credit_grant.created``; a promotional one is granted at once."""
    session.add(grant)
    await session.flush()
    await emit(session, grant, CREATED, now=now)
    if grant.category == "promotional":
        await _activate(session, grant, invoice_id=None, at=now)
    return grant


async def _activate(
    session: AsyncSession, grant: CreditGrant, *, invoice_id: str | None, at: datetime
) -> None:
    await ledger.write(session, [Movement(grant, "granted", grant.amount, invoice_id=invoice_id)], at=at)
    await emit(session, grant, ACTIVATED, now=at)


async def activate_for_invoice(session: AsyncSession, invoice_id: str, *, at: datetime) -> None:
    """The grant bought by this invoice, now paid, becomes active with its ``granted`` entry."""
    for grant in await _grants_of_invoice(session, invoice_id):
        if grant.status == "pending":
            await _activate(session, grant, invoice_id=invoice_id, at=at)


async def void_for_invoice(session: AsyncSession, invoice_id: str, *, at: datetime) -> None:
    """The grant bought by this invoice, voided or uncollectible, is voided while still pending."""
    for grant in await _grants_of_invoice(session, invoice_id):
        if grant.status == "pending":
            await _void(session, grant, at=at)


async def _grants_of_invoice(session: AsyncSession, invoice_id: str) -> list[CreditGrant]:
    ids = list(await session.scalars(sa.select(CreditGrant.id).where(CreditGrant.invoice_id == invoice_id)))
    return await ledger.lock_grants(session, ids)


async def void_grant(session: AsyncSession, grant: CreditGrant, *, at: datetime) -> CreditGrant:
    """Void what is left (a ``voided`` entry); applied credits stay applied. The caller voids a
    pending grant's invoice (which voids the grant) instead."""
    (grant,) = await ledger.lock_grants(session, [grant.id])
    if grant.status in ("voided", "expired"):
        raise Conflict(f"Credit grant {grant.id} is already {grant.status}", code="invalid_transition")
    await _void(session, grant, at=at)
    return grant


async def _void(session: AsyncSession, grant: CreditGrant, *, at: datetime) -> None:
    if grant.available:
        await ledger.write(session, [Movement(grant, "voided", -grant.available)], at=at)
    else:
        grant.status, grant.voided_at, grant.updated_at = "voided", at, at
    await emit(session, grant, VOIDED, now=at)


async def get_grant(session: AsyncSession, tenant_id: str, grant_id: str) -> CreditGrant:
    query = sa.select(CreditGrant).where(CreditGrant.tenant_id == tenant_id, CreditGrant.id == grant_id)
    grant = (await session.scalars(query)).first()
    if grant is None:
        raise NotFound(f"No credit grant {grant_id}")
    return grant


async def list_grants(
    session: AsyncSession,
    tenant_id: str,
    page: PageRequest,
    *,
    customer_id: str | None = None,
    status: str | None = None,
) -> tuple[list[CreditGrant], bool]:
    query = sa.select(CreditGrant).where(CreditGrant.tenant_id == tenant_id)
    if customer_id is not None:
        query = query.where(CreditGrant.customer_id == customer_id)
    if status is not None:
        query = query.where(CreditGrant.status == status)
    return await fetch_page(session, query, CreditGrant.id, page)


async def usable(
    session: AsyncSession, tenant_id: str, customer_ids: Collection[str], *, at: datetime, lock: bool = False
) -> list[CreditGrant]:
    """The grants an invoice finalized at ``at`` may draw on, in burn order (per customer)."""
    if not customer_ids:
        return []
    query = (
        sa.select(CreditGrant)
        .where(
            CreditGrant.tenant_id == tenant_id,
            CreditGrant.customer_id.in_(list(customer_ids)),
            CreditGrant.status == "active",
            CreditGrant.available > 0,
            CreditGrant.effective_at <= at,
            sa.or_(CreditGrant.expires_at.is_(None), CreditGrant.expires_at > at),
        )
        .order_by(*ledger.burn_order())
    )
    if lock:
        query = query.with_for_update().execution_options(populate_existing=True)
    return list(await session.scalars(query))


async def grants_out(session: AsyncSession, grants: Sequence[CreditGrant]) -> list[CreditGrantOut]:
    """The wire shape of many grants, their meters named by key (one query)."""
    meter_ids = {m for grant in grants for m in grant.applies_to_meters or ()}
    keys: dict[str, str] = {}
    if meter_ids:
        rows = await session.execute(sa.select(Meter.id, Meter.key).where(Meter.id.in_(meter_ids)))
        keys = {meter_id: key for meter_id, key in rows.all()}
    return [credit_grant_out(grant, keys) for grant in grants]


async def emit(session: AsyncSession, grant: CreditGrant, topic: str, *, now: datetime) -> None:
    """Queue ``topic`` with the grant as it is now (``object``, the wire shape)."""
    await session.flush()
    (snapshot,) = await grants_out(session, [grant])
    payload = {
        "credit_grant_id": grant.id,
        "customer_id": grant.customer_id,
        "object": msgspec.to_builtins(snapshot),
    }
    await outbox.emit(session, tenant_id=grant.tenant_id, topic=topic, payload=payload, now=now)


async def grant_negative_total(
    session: AsyncSession,
    invoice_id: str,
    customer: Customer,
    amount: int,
    currency: str,
    number: str | None,
    *,
    at: datetime,
) -> CreditGrant | None:
    """``amount`` owed back by a finalized invoice becomes a promotional grant (priority 0, no
    expiry) linked to it, once per invoice."""
    existing = await session.scalar(sa.select(CreditGrant.id).where(CreditGrant.invoice_id == invoice_id))
    if amount <= 0 or existing is not None:
        return None
    grant = CreditGrant(
        id=new_id("crg"),
        tenant_id=customer.tenant_id,
        customer_id=customer.id,
        name=f"Credit from {number or invoice_id}",
        amount=amount,
        currency=currency,
        category="promotional",
        priority=0,
        expires_at=None,
        applies_to_meters=None,
        status="pending",
        available=0,
        invoice_id=invoice_id,
        metadata_={},
        created_at=at,
        updated_at=at,
    )
    return await add_grant(session, grant, now=at)
