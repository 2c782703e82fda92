"""Customer verbs; a session is the first argument, no HTTP in here.

A customer is addressed by its ``cus_`` id or by the tenant's own ``external_id``; when one text
is both (a tenant's external_id that equals another customer's id), the id wins.
"""

from __future__ import annotations

from collections.abc import Sequence
from datetime import datetime
from typing import Any

import sqlalchemy as sa
from msgspec import UNSET
from sqlalchemy.ext.asyncio import AsyncSession

from billing.core import validation
from billing.core.db.inserts import insert_row_ignore
from billing.core.db.queries import find_by_id_or_key
from billing.core.errors import Conflict, NotFound, ValidationFailed
from billing.core.ids import new_id
from billing.core.pagination import PageRequest, fetch_page
from billing.customers.models import Customer
from billing.customers.ports import BillingHistory, Summaries
from billing.customers.schemas import Card, CustomerCreate, CustomerOut, CustomerPatch, customer_out
from billing.customers.tax_settings import new_tax_settings, tax_setting_changes
from billing.tenants.service import get_tenant

EXTERNAL_ID_MAX_LENGTH = 128
NAME_MAX_LENGTH = 200
PROVIDER_REFERENCE_MAX_LENGTH = 255
DEFAULT_LOCALE = "en"
NET_TERMS_MAX_DAYS = 365


async def create_customer(
    session: AsyncSession, tenant_id: str, data: CustomerCreate, *, now: datetime
) -> Customer:
    """Create a customer; a second one with the same external_id is a Conflict.

    The unique constraint decides (insert-ignore), so concurrent creates cannot both succeed.
    """
    if data.currency is not None:
        currency = validation.currency("currency", data.currency)
    else:
        currency = (await get_tenant(session, tenant_id)).currency
    customer = Customer(
        id=new_id("cus"),
        tenant_id=tenant_id,
        external_id=_external_id(data.external_id),
        email=_email(data.email),
        name=_name(data.name),
        currency=currency,
        timezone=_timezone(data.timezone),
        locale=validation.locale("locale", data.locale if data.locale is not None else DEFAULT_LOCALE),
        provider_customer_id=_provider_reference("provider_customer_id", data.provider_customer_id),
        default_payment_method=_provider_reference("default_payment_method", data.default_payment_method),
        metadata_=validation.validate_metadata("metadata", data.metadata or {}),
        net_terms_days=_net_terms(data.net_terms_days),
        **card_columns(data.card),
        **await new_tax_settings(session, tenant_id, data),
        payment_status="ok",
        created_at=now,
        updated_at=now,
    )
    if not await insert_row_ignore(session, customer):
        raise Conflict(f"A customer with external_id '{customer.external_id}' already exists")
    return customer


async def get_customer(session: AsyncSession, tenant_id: str, ref: str) -> Customer:
    """The tenant's customer with this id or external_id (the id wins); NotFound otherwise."""
    customer = await find_by_id_or_key(session, Customer, tenant_id, Customer.external_id, ref)
    if customer is None:
        raise NotFound(f"No customer {ref}")
    return customer


async def filter_customer_id(session: AsyncSession, tenant_id: str, ref: str | None) -> str | None:
    """The id of the customer a list is filtered by (its id or external_id; NotFound otherwise),
    or None when the list is not filtered by customer."""
    return (await get_customer(session, tenant_id, ref)).id if ref else None


async def lock_customer(session: AsyncSession, customer: Customer) -> Customer:
    """Lock the customer's row for the transaction and read it afresh (archive, currency changes
    and new subscriptions are serialised on it). FOR NO KEY UPDATE: rows inserted meanwhile with
    a foreign key to the customer (ledger entries of a finalization) do not wait on it, so a
    transaction holding it never deadlocks with one that inserts them."""
    await session.refresh(customer, with_for_update={"key_share": True})
    return customer


async def customers_by_reference(session: AsyncSession, tenant_id: str, refs: set[str]) -> dict[str, str]:
    """Each given id or external_id that names one of the tenant's customers, mapped to the
    customer's id (an id match wins over an external_id match); one query.

    References that match nothing are left out. Keep ``refs`` to a batch (a few thousand):
    every reference is two bound parameters.
    """
    if not refs:
        return {}
    rows = (
        await session.execute(
            sa.select(Customer.id, Customer.external_id).where(
                Customer.tenant_id == tenant_id,
                sa.or_(Customer.id.in_(refs), Customer.external_id.in_(refs)),
            )
        )
    ).all()
    ids = {row.id for row in rows}
    by_external_id = {row.external_id: row.id for row in rows}
    found = {ref: ref if ref in ids else by_external_id.get(ref) for ref in refs}
    return {ref: customer_id for ref, customer_id in found.items() if customer_id is not None}


async def list_customers(
    session: AsyncSession,
    tenant_id: str,
    page: PageRequest,
    *,
    email: str | None = None,
    external_id: str | None = None,
    archived: bool | None = None,
) -> tuple[list[Customer], bool]:
    """A page of the tenant's customers, newest first, optionally filtered by exact email or
    external_id, and by being archived or not (both when ``archived`` is None)."""
    stmt = sa.select(Customer).where(Customer.tenant_id == tenant_id)
    if archived is not None:
        is_archived = Customer.archived_at.is_not(None)
        stmt = stmt.where(is_archived if archived else ~is_archived)
    if email is not None:
        stmt = stmt.where(Customer.email == validation.email("email", email))
    if external_id is not None:
        stmt = stmt.where(Customer.external_id == external_id)
    return await fetch_page(session, stmt, Customer.id, page)


async def customers_out(
    session: AsyncSession, customers: Sequence[Customer], summaries: Summaries
) -> list[CustomerOut]:
    """The wire shape, each customer with its open dunning case (one call of ``summaries``)."""
    cases = await summaries(session, [row.id for row in customers])
    return [customer_out(row, cases.get(row.id)) for row in customers]


async def update_customer(
    session: AsyncSession,
    customer: Customer,
    patch: CustomerPatch,
    *,
    now: datetime,
    billing_history: BillingHistory,
) -> Customer:
    """Apply a patch, validating every field before any of them changes.

    The currency changes only while the customer has no billing history (as Stripe); the same
    currency again is no change.
    """
    changes: dict[str, object] = {}
    if patch.currency is not UNSET:
        currency = validation.currency("currency", patch.currency)
        if currency != customer.currency:
            changes["currency"] = currency
    if patch.email is not UNSET:
        changes["email"] = _email(patch.email)
    if patch.name is not UNSET:
        changes["name"] = _name(patch.name)
    if patch.timezone is not UNSET:
        changes["timezone"] = _timezone(patch.timezone)
    if patch.locale is not UNSET:
        changes["locale"] = validation.locale("locale", patch.locale)
    if patch.provider_customer_id is not UNSET:
        changes["provider_customer_id"] = _provider_reference(
            "provider_customer_id", patch.provider_customer_id
        )
    if patch.default_payment_method is not UNSET:
        changes["default_payment_method"] = _provider_reference(
            "default_payment_method", patch.default_payment_method
        )
    if patch.card is not UNSET:
        changes |= card_columns(patch.card)
    if patch.metadata is not UNSET:
        changes["metadata_"] = validation.validate_metadata("metadata", patch.metadata or {})
    changes |= await tax_setting_changes(session, customer, patch)
    if "currency" in changes and await billing_history(session, customer):
        raise Conflict(
            f"Customer {customer.id} has billing history in {customer.currency}; its currency is fixed",
            code="currency_locked",
        )
    if patch.net_terms_days is not UNSET:
        changes["net_terms_days"] = _net_terms(patch.net_terms_days)
    for attribute, value in changes.items():
        setattr(customer, attribute, value)
    customer.updated_at = now
    await session.flush()
    return customer


# --- field checks -----------------------------------------------------------------------------


def _external_id(value: str) -> str:
    # It is a path segment of /v1/customers/{id or external_id}: a "/" or a dot segment could not be.
    if "/" in value or value in {".", ".."}:
        raise ValidationFailed.field("external_id", "must not contain '/' or be '.' or '..'")
    return validation.reference("external_id", value, max_length=EXTERNAL_ID_MAX_LENGTH)


def _email(value: str | None) -> str | None:
    return None if value is None else validation.email("email", value)


def _name(value: str | None) -> str | None:
    return None if value is None else validation.text("name", value, max_length=NAME_MAX_LENGTH)


def _net_terms(value: int | None) -> int | None:
    return None if value is None else validation.int_range("net_terms_days", value, 0, NET_TERMS_MAX_DAYS)


def _timezone(value: str | None) -> str | None:
    return None if value is None else validation.timezone("timezone", value)


def _provider_reference(field: str, value: str | None) -> str | None:
    return (
        None
        if value is None
        else validation.reference(field, value, max_length=PROVIDER_REFERENCE_MAX_LENGTH)
    )


def card_columns(card: Card | None) -> dict[str, Any]:
    return {
        "card_id": card and card.id,
        "card_brand": card and card.brand,
        "card_last4": card and card.last4,
        "card_exp_month": card and card.exp_month,
        "card_exp_year": card and card.exp_year,
    }


def set_payment_status(customer: Customer, status: str, *, at: datetime) -> bool:
    """The one place a customer's payment status changes; whether it did.

    A delinquent customer stays delinquent until what is owed is paid: a lost card or a payment
    that needs action does not make things better, only ``ok`` (paid) lifts it.
    """
    if customer.payment_status == "delinquent" and status == "action_required":
        return False
    if customer.payment_status == status:
        return False
    customer.payment_status = status
    customer.updated_at = at
    return True


async def update_payment_status(
    session: AsyncSession, customer_id: str, status: str, *, at: datetime
) -> bool:
    """:func:`set_payment_status` for a customer known by id."""
    return set_payment_status(await session.get_one(Customer, customer_id), status, at=at)
