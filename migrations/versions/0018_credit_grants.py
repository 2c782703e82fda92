"""Prepaid credits: credit grants, their append-only ledger, and a balance row per customer and
currency

Revision ID: 0018
Revises: 0017
Create Date: 2026-12-07 20:40:00

"""

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op
from sqlalchemy.dialects import postgresql

from billing.core.db.types import one_of

# revision identifiers, used by Alembic.
revision: str = "0018"
down_revision: str | Sequence[str] | None = "0017"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None

JSON = sa.JSON().with_variant(postgresql.JSONB(astext_type=sa.Text()), "postgresql")
TIME = sa.DateTime(timezone=True)
CATEGORIES = ("paid", "promotional")
GRANT_STATUSES = ("pending", "active", "depleted", "expired", "voided")
ENTRY_TYPES = ("granted", "applied", "restored", "expired", "voided")


def _owner_keys(table: str) -> list[sa.ForeignKeyConstraint]:
    return [
        sa.ForeignKeyConstraint(
            ["tenant_id"], ["tenants.id"], name=op.f(f"fk_{table}_tenant_id_tenants"), ondelete="CASCADE"
        ),
        sa.ForeignKeyConstraint(
            ["customer_id"],
            ["customers.id"],
            name=op.f(f"fk_{table}_customer_id_customers"),
            ondelete="CASCADE",
        ),
    ]


def upgrade() -> None:
    """Upgrade schema."""
    op.create_table(
        "credit_grants",
        sa.Column("id", sa.String(length=40), nullable=False),
        sa.Column("tenant_id", sa.String(length=40), nullable=False),
        sa.Column("customer_id", sa.String(length=40), nullable=False),
        sa.Column("name", sa.String(length=200), nullable=False),
        sa.Column("amount", sa.BigInteger(), nullable=False),
        sa.Column("currency", sa.String(length=3), nullable=False),
        sa.Column("category", sa.String(length=16), nullable=False),
        sa.Column("priority", sa.Integer(), nullable=False),
        sa.Column("expires_at", TIME, nullable=True),
        sa.Column("applies_to_meters", JSON, nullable=True),
        sa.Column("status", sa.String(length=16), nullable=False),
        sa.Column("available", sa.BigInteger(), nullable=False),
        sa.Column("invoice_id", sa.String(length=40), nullable=True),
        sa.Column("effective_at", TIME, nullable=True),
        sa.Column("voided_at", TIME, nullable=True),
        sa.Column("created_at", TIME, nullable=False),
        sa.Column("updated_at", TIME, nullable=False),
        sa.Column("metadata", JSON, nullable=False),
        sa.CheckConstraint(one_of("category", CATEGORIES), name=op.f("ck_credit_grants_category")),
        sa.CheckConstraint(one_of("status", GRANT_STATUSES), name=op.f("ck_credit_grants_status")),
        sa.CheckConstraint("amount > 0", name=op.f("ck_credit_grants_amount")),
        sa.CheckConstraint("priority BETWEEN 0 AND 100", name=op.f("ck_credit_grants_priority")),
        sa.CheckConstraint("available >= 0 AND available <= amount", name=op.f("ck_credit_grants_available")),
        *_owner_keys("credit_grants"),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_credit_grants")),
    )
    with op.batch_alter_table("credit_grants", schema=None) as batch_op:
        batch_op.create_index("ix_credit_grants_tenant_id_id", ["tenant_id", "id"], unique=False)
        batch_op.create_index(
            "ix_credit_grants_customer", ["customer_id", "currency", "status"], unique=False
        )
        batch_op.create_index("ix_credit_grants_expiring", ["status", "expires_at"], unique=False)
        batch_op.create_index("ix_credit_grants_invoice_id", ["invoice_id"], unique=False)

    op.create_table(
        "credit_ledger_entries",
        sa.Column("id", sa.String(length=40), nullable=False),
        sa.Column("tenant_id", sa.String(length=40), nullable=False),
        sa.Column("customer_id", sa.String(length=40), nullable=False),
        sa.Column("credit_grant_id", sa.String(length=40), nullable=False),
        sa.Column("currency", sa.String(length=3), nullable=False),
        sa.Column("type", sa.String(length=16), nullable=False),
        sa.Column("amount", sa.BigInteger(), nullable=False),
        sa.Column("balance_after", sa.BigInteger(), nullable=False),
        sa.Column("invoice_id", sa.String(length=40), nullable=True),
        sa.Column("credit_note_id", sa.String(length=40), nullable=True),
        sa.Column("created_at", TIME, nullable=False),
        sa.Column("seq", sa.BigInteger(), nullable=False),
        sa.CheckConstraint(one_of("type", ENTRY_TYPES), name=op.f("ck_credit_ledger_entries_type")),
        sa.CheckConstraint("amount <> 0", name=op.f("ck_credit_ledger_entries_amount")),
        sa.CheckConstraint("balance_after >= 0", name=op.f("ck_credit_ledger_entries_balance_after")),
        *_owner_keys("credit_ledger_entries"),
        sa.ForeignKeyConstraint(
            ["credit_grant_id"],
            ["credit_grants.id"],
            name=op.f("fk_credit_ledger_entries_credit_grant_id_credit_grants"),
            ondelete="CASCADE",
        ),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_credit_ledger_entries")),
        sa.UniqueConstraint(
            "customer_id", "currency", "seq", name=op.f("uq_credit_ledger_entries_customer_id_currency_seq")
        ),
    )
    with op.batch_alter_table("credit_ledger_entries", schema=None) as batch_op:
        batch_op.create_index("ix_credit_ledger_entries_tenant_id_id", ["tenant_id", "id"], unique=False)
        batch_op.create_index("ix_credit_ledger_entries_grant", ["credit_grant_id"], unique=False)
        batch_op.create_index("ix_credit_ledger_entries_invoice_id", ["invoice_id"], unique=False)

    op.create_table(
        "credit_balances",
        sa.Column("customer_id", sa.String(length=40), nullable=False),
        sa.Column("currency", sa.String(length=3), nullable=False),
        sa.Column("tenant_id", sa.String(length=40), nullable=False),
        sa.Column("available", sa.BigInteger(), nullable=False),
        sa.Column("entries", sa.BigInteger(), nullable=False),
        sa.Column("updated_at", TIME, nullable=False),
        sa.CheckConstraint("available >= 0", name=op.f("ck_credit_balances_available")),
        *_owner_keys("credit_balances"),
        sa.PrimaryKeyConstraint("customer_id", "currency", name=op.f("pk_credit_balances")),
    )


def downgrade() -> None:
    """Downgrade schema."""
    op.drop_table("credit_balances")
    with op.batch_alter_table("credit_ledger_entries", schema=None) as batch_op:
        batch_op.drop_index("ix_credit_ledger_entries_invoice_id")
        batch_op.drop_index("ix_credit_ledger_entries_grant")
        batch_op.drop_index("ix_credit_ledger_entries_tenant_id_id")
    op.drop_table("credit_ledger_entries")
    with op.batch_alter_table("credit_grants", schema=None) as batch_op:
        batch_op.drop_index("ix_credit_grants_invoice_id")
        batch_op.drop_index("ix_credit_grants_expiring")
        batch_op.drop_index("ix_credit_grants_customer")
        batch_op.drop_index("ix_credit_grants_tenant_id_id")
    op.drop_table("credit_grants")
