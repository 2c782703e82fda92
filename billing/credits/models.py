"""Credit grants, their append-only ledger, and the per-customer-and-currency balance row.

A grant's ``available`` is 0 while it is pending (its invoice unpaid): the customer's balance is
the sum of every grant's ``available``, and each ledger entry moves it by exactly its amount.
"""

from __future__ import annotations

from datetime import datetime

import sqlalchemy as sa
from sqlalchemy.orm import Mapped, mapped_column

from billing.core.db.types import Base, JSONType, UTCDateTime, one_of

CATEGORIES = ("paid", "promotional")
GRANT_STATUSES = ("pending", "active", "depleted", "expired", "voided")
ENTRY_TYPES = ("granted", "applied", "restored", "expired", "voided")


class CreditGrant(Base):
    __tablename__ = "credit_grants"

    id: Mapped[str] = mapped_column(sa.String(40), primary_key=True)
    tenant_id: Mapped[str] = mapped_column(sa.ForeignKey("tenants.id", ondelete="CASCADE"))
    customer_id: Mapped[str] = mapped_column(sa.ForeignKey("customers.id", ondelete="CASCADE"))
    name: Mapped[str] = mapped_column(sa.String(200))
    amount: Mapped[int] = mapped_column(sa.BigInteger)
    currency: Mapped[str] = mapped_column(sa.String(3))
    category: Mapped[str] = mapped_column(sa.String(16))
    priority: Mapped[int] = mapped_column(sa.Integer)
    expires_at: Mapped[datetime | None] = mapped_column(UTCDateTime())
    # Meter ids; None: every line.
    applies_to_meters: Mapped[list[str] | None] = mapped_column(JSONType)
    status: Mapped[str] = mapped_column(sa.String(16))
    available: Mapped[int] = mapped_column(sa.BigInteger)
    # The credit_grant invoice of a paid grant (invoicing's table, named here only as a string).
    invoice_id: Mapped[str | None] = mapped_column(sa.String(40))
    effective_at: Mapped[datetime | None] = mapped_column(UTCDateTime())
    voided_at: Mapped[datetime | None] = mapped_column(UTCDateTime())
    created_at: Mapped[datetime] = mapped_column(UTCDateTime())
    updated_at: Mapped[datetime] = mapped_column(UTCDateTime())
    metadata_: Mapped[dict[str, str]] = mapped_column("metadata", JSONType, key="metadata_", default=dict)

    __table_args__ = (
        sa.Index("ix_credit_grants_tenant_id_id", "tenant_id", "id"),
        sa.Index("ix_credit_grants_customer", "customer_id", "currency", "status"),
        sa.Index("ix_credit_grants_expiring", "status", "expires_at"),
        sa.Index("ix_credit_grants_invoice_id", "invoice_id"),
        sa.CheckConstraint(one_of("category", CATEGORIES), name="category"),
        sa.CheckConstraint(one_of("status", GRANT_STATUSES), name="status"),
        sa.CheckConstraint("amount > 0", name="amount"),
        sa.CheckConstraint("priority BETWEEN 0 AND 100", name="priority"),
        sa.CheckConstraint("available >= 0 AND available <= amount", name="available"),
    )


class CreditLedgerEntry(Base):
    """One movement of a grant's balance; never updated nor deleted."""

    __tablename__ = "credit_ledger_entries"

    id: Mapped[str] = mapped_column(sa.String(40), primary_key=True)
    tenant_id: Mapped[str] = mapped_column(sa.ForeignKey("tenants.id", ondelete="CASCADE"))
    customer_id: Mapped[str] = mapped_column(sa.ForeignKey("customers.id", ondelete="CASCADE"))
    credit_grant_id: Mapped[str] = mapped_column(sa.ForeignKey("credit_grants.id", ondelete="CASCADE"))
    currency: Mapped[str] = mapped_column(sa.String(3))
    type: Mapped[str] = mapped_column(sa.String(16))
    # + granted / restored, - applied / expired / voided.
    amount: Mapped[int] = mapped_column(sa.BigInteger)
    # The customer's balance in this currency after the entry.
    balance_after: Mapped[int] = mapped_column(sa.BigInteger)
    invoice_id: Mapped[str | None] = mapped_column(sa.String(40))
    credit_note_id: Mapped[str | None] = mapped_column(sa.String(40))
    created_at: Mapped[datetime] = mapped_column(UTCDateTime())
    # Entries in the order they were written (ids made in one millisecond are not ordered).
    seq: Mapped[int] = mapped_column(sa.BigInteger)

    __table_args__ = (
        sa.UniqueConstraint("customer_id", "currency", "seq"),
        sa.Index("ix_credit_ledger_entries_tenant_id_id", "tenant_id", "id"),
        sa.Index("ix_credit_ledger_entries_grant", "credit_grant_id"),
        sa.Index("ix_credit_ledger_entries_invoice_id", "invoice_id"),
        sa.CheckConstraint(one_of("type", ENTRY_TYPES), name="type"),
        sa.CheckConstraint("amount <> 0", name="amount"),
        sa.CheckConstraint("balance_after >= 0", name="balance_after"),
    )


class CreditBalance(Base):
    """A customer's balance in one currency: the row every ledger write locks, so entries get
    their ``balance_after`` one at a time without locking the customer (which subscription
    changes lock before their subscription, and finalization only after it)."""

    __tablename__ = "credit_balances"

    customer_id: Mapped[str] = mapped_column(
        sa.ForeignKey("customers.id", ondelete="CASCADE"), primary_key=True
    )
    currency: Mapped[str] = mapped_column(sa.String(3), primary_key=True)
    tenant_id: Mapped[str] = mapped_column(sa.ForeignKey("tenants.id", ondelete="CASCADE"))
    available: Mapped[int] = mapped_column(sa.BigInteger)
    # The number of ledger entries written so far (the last entry's seq).
    entries: Mapped[int] = mapped_column(sa.BigInteger)
    updated_at: Mapped[datetime] = mapped_column(UTCDateTime())

    __table_args__ = (sa.CheckConstraint("available >= 0", name="available"),)
