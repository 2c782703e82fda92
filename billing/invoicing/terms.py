"""What an invoice's amounts are computed with at one instant: the customer's tax rates and tax
status, the discount that covers it, and the credit grants it may use (``amounts.Terms``).

Loaded in bulk for many invoices at once (the billing run closes thousands of periods in one
go): one query per kind of term, whatever the number of invoices.
"""

from __future__ import annotations

from collections.abc import Collection, Mapping
from dataclasses import dataclass
from datetime import datetime
from typing import Any

import sqlalchemy as sa
from sqlalchemy.ext.asyncio import AsyncSession

from billing.invoicing import credit_terms, discount_terms, tax_terms
from billing.invoicing.amounts import NO_TERMS, Terms
from billing.invoicing.models import Invoice
from billing.invoicing.tax_terms import NO_TAXES, CustomerTaxes

# Credit-grant invoices carry no discount, no tax and take no credits.
_BARE_REASONS = frozenset({"credit_grant"})
REVERSE_CHARGE_NOTE = "Reverse charge"


@dataclass(frozen=True)
class Subject:
    """What the terms of an invoice depend on."""

    customer_id: str
    currency: str
    period_start: datetime
    billing_reason: str

    @classmethod
    def of(cls, invoice: Any) -> Subject:
        """Of an ``Invoice`` or of an invoice row (a dict) about to be inserted."""
        values = [
            _field(invoice, key) for key in ("customer_id", "currency", "period_start", "billing_reason")
        ]
        return cls(*values)


@dataclass(frozen=True)
class InvoiceTerms:
    terms: Terms
    taxes: CustomerTaxes

    @property
    def legal_notes(self) -> list[str]:
        return [REVERSE_CHARGE_NOTE] if self.taxes.exempt == "reverse" else []


BARE = InvoiceTerms(NO_TERMS, NO_TAXES)


async def terms_for(
    session: AsyncSession, tenant_id: str, subjects: Collection[Subject], *, at: datetime, lock: bool = False
) -> dict[Subject, InvoiceTerms]:
    """The terms of each invoice if it were finalized at ``at``. ``lock`` (finalization): the
    grants used stay locked until commit."""
    priced = [subject for subject in set(subjects) if subject.billing_reason not in _BARE_REASONS]
    if not priced:
        return dict.fromkeys(subjects, BARE)
    customers = {subject.customer_id for subject in priced}
    taxes = await tax_terms.customer_taxes(session, tenant_id, customers)
    covered = {subject: _covered(subject) for subject in priced}
    discounts = await discount_terms.discounts_for(
        session, tenant_id, set(covered.values()), at=at, lock=lock
    )
    grants = await credit_terms.grants_for(session, tenant_id, customers, at=at, lock=lock)
    answer = dict.fromkeys(subjects, BARE)
    for subject in priced:
        customer_taxes = taxes.get(subject.customer_id, NO_TAXES)
        terms = Terms(
            tax_rates=customer_taxes.rates,
            tax_exempt=customer_taxes.exempt,
            discount=discounts.get(covered[subject]),
            grants=grants.get((subject.customer_id, subject.currency), ()),
        )
        answer[subject] = InvoiceTerms(terms, customer_taxes)
    return answer


async def terms_of_drafts(
    session: AsyncSession, tenant_id: str, subscription_ids: Collection[str], *, at: datetime
) -> dict[Subject, InvoiceTerms]:
    """The terms of every draft of these subscriptions, in bulk (recomputing a batch of them)."""
    rows = await session.execute(
        sa.select(Invoice.customer_id, Invoice.currency, Invoice.period_start, Invoice.billing_reason).where(
            Invoice.tenant_id == tenant_id,
            Invoice.subscription_id.in_(list(subscription_ids)),
            Invoice.status == "draft",
        )
    )
    return await terms_for(session, tenant_id, [Subject(*row) for row in rows], at=at)


async def terms_of(session: AsyncSession, invoice: Any, *, at: datetime, lock: bool = False) -> InvoiceTerms:
    subject = Subject.of(invoice)
    tenant_id = _field(invoice, "tenant_id")
    return (await terms_for(session, tenant_id, [subject], at=at, lock=lock))[subject]


def _covered(subject: Subject) -> discount_terms.Covered:
    return discount_terms.Covered(subject.customer_id, subject.period_start, subject.billing_reason)


def _field(invoice: Any, key: str) -> Any:
    return invoice[key] if isinstance(invoice, Mapping) else getattr(invoice, key)
