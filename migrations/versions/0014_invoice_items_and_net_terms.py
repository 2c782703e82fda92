"""Invoice items, standalone invoices (no subscription), billing reasons, memo and metadata,
net terms and overdue notices

Revision ID: 0014
Revises: 0013
Create Date: 2026-12-07 17:43:58.612083

"""

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op
from sqlalchemy.dialects import postgresql

from billing.core.db.types import one_of

# revision identifiers, used by Alembic.
revision: str = "0014"
down_revision: str | Sequence[str] | None = "0013"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None

JSON = sa.JSON().with_variant(postgresql.JSONB(astext_type=sa.Text()), "postgresql")
BILLING_REASONS = (
    "subscription_cycle",
    "subscription_create",
    "subscription_update",
    "subscription_cancel",
    "threshold",
    "manual",
    "credit_grant",
)
OLD_LINE_KINDS = ("base_fee", "usage", "late_usage", "trial")
LINE_KINDS = (
    *OLD_LINE_KINDS,
    "proration",
    "invoice_item",
    "minimum_commitment",
    "price_minimum",
    "price_maximum",
    "already_billed",
    "discount",
    "credit_purchase",
)
NET_TERMS = "net_terms_days BETWEEN 0 AND 365"


def upgrade() -> None:
    """Upgrade schema."""
    with op.batch_alter_table("tenants", schema=None) as batch_op:
        batch_op.add_column(sa.Column("net_terms_days", sa.Integer(), server_default="0", nullable=False))
        batch_op.create_check_constraint("net_terms_days", NET_TERMS)

    with op.batch_alter_table("customers", schema=None) as batch_op:
        batch_op.add_column(sa.Column("net_terms_days", sa.Integer(), nullable=True))
        batch_op.create_check_constraint("net_terms_days", NET_TERMS)

    with op.batch_alter_table("invoices", schema=None) as batch_op:
        batch_op.add_column(
            sa.Column(
                "billing_reason", sa.String(length=32), server_default="subscription_cycle", nullable=False
            )
        )
        batch_op.add_column(sa.Column("memo", sa.Text(), nullable=True))
        batch_op.add_column(sa.Column("metadata", JSON, server_default=sa.text("'{}'"), nullable=False))
        batch_op.add_column(
            sa.Column("auto_finalize", sa.Boolean(), server_default=sa.true(), nullable=False)
        )
        batch_op.add_column(sa.Column("overdue_notified_at", sa.DateTime(timezone=True), nullable=True))
        batch_op.alter_column("subscription_id", existing_type=sa.String(length=40), nullable=True)
        batch_op.create_index("ix_invoices_open_due", ["status", "due_at"], unique=False)
        batch_op.create_check_constraint("billing_reason", one_of("billing_reason", BILLING_REASONS))

    with op.batch_alter_table("invoice_lines", schema=None) as batch_op:
        batch_op.add_column(sa.Column("invoice_item_id", sa.String(length=40), nullable=True))
        batch_op.alter_column(
            "kind", existing_type=sa.String(length=16), type_=sa.String(length=32), existing_nullable=False
        )
        batch_op.drop_constraint(op.f("ck_invoice_lines_kind"), type_="check")
        batch_op.create_check_constraint("kind", one_of("kind", LINE_KINDS))

    op.create_table(
        "invoice_items",
        sa.Column("id", sa.String(length=40), nullable=False),
        sa.Column("tenant_id", sa.String(length=40), nullable=False),
        sa.Column("customer_id", sa.String(length=40), nullable=False),
        sa.Column("invoice_id", sa.String(length=40), nullable=True),
        sa.Column("status", sa.String(length=16), nullable=False),
        sa.Column("description", sa.String(length=500), nullable=False),
        sa.Column("amount", sa.BigInteger(), nullable=False),
        sa.Column("currency", sa.String(length=3), nullable=False),
        sa.Column("period_start", sa.DateTime(timezone=True), nullable=False),
        sa.Column("period_end", sa.DateTime(timezone=True), nullable=False),
        sa.Column("metadata", JSON, nullable=False),
        sa.Column("created_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("updated_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("deleted_at", sa.DateTime(timezone=True), nullable=True),
        sa.CheckConstraint(
            "status IN ('pending', 'invoiced', 'deleted')", name=op.f("ck_invoice_items_status")
        ),
        sa.CheckConstraint("amount <> 0", name=op.f("ck_invoice_items_amount")),
        sa.CheckConstraint("period_start <= period_end", name=op.f("ck_invoice_items_period")),
        sa.ForeignKeyConstraint(
            ["customer_id"],
            ["customers.id"],
            name=op.f("fk_invoice_items_customer_id_customers"),
            ondelete="CASCADE",
        ),
        sa.ForeignKeyConstraint(
            ["invoice_id"],
            ["invoices.id"],
            name=op.f("fk_invoice_items_invoice_id_invoices"),
            ondelete="SET NULL",
        ),
        sa.ForeignKeyConstraint(
            ["tenant_id"], ["tenants.id"], name=op.f("fk_invoice_items_tenant_id_tenants"), ondelete="CASCADE"
        ),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_invoice_items")),
    )
    with op.batch_alter_table("invoice_items", schema=None) as batch_op:
        batch_op.create_index("ix_invoice_items_invoice_id", ["invoice_id"], unique=False)
        batch_op.create_index(
            "ix_invoice_items_pending", ["tenant_id", "customer_id", "status"], unique=False
        )
        batch_op.create_index("ix_invoice_items_tenant_id_id", ["tenant_id", "id"], unique=False)


def downgrade() -> None:
    """Downgrade schema."""
    with op.batch_alter_table("invoice_items", schema=None) as batch_op:
        batch_op.drop_index("ix_invoice_items_tenant_id_id")
        batch_op.drop_index("ix_invoice_items_pending")
        batch_op.drop_index("ix_invoice_items_invoice_id")
    op.drop_table("invoice_items")

    op.execute("DELETE FROM invoice_lines WHERE kind NOT IN ('base_fee', 'usage', 'late_usage', 'trial')")
    with op.batch_alter_table("invoice_lines", schema=None) as batch_op:
        batch_op.drop_constraint(op.f("ck_invoice_lines_kind"), type_="check")
        batch_op.create_check_constraint("kind", one_of("kind", OLD_LINE_KINDS))
        batch_op.alter_column(
            "kind", existing_type=sa.String(length=32), type_=sa.String(length=16), existing_nullable=False
        )
        batch_op.drop_column("invoice_item_id")

    op.execute("DELETE FROM invoices WHERE subscription_id IS NULL")
    with op.batch_alter_table("invoices", schema=None) as batch_op:
        batch_op.drop_constraint(op.f("ck_invoices_billing_reason"), type_="check")
        batch_op.drop_index("ix_invoices_open_due")
        batch_op.alter_column("subscription_id", existing_type=sa.String(length=40), nullable=False)
        batch_op.drop_column("overdue_notified_at")
        batch_op.drop_column("auto_finalize")
        batch_op.drop_column("metadata")
        batch_op.drop_column("memo")
        batch_op.drop_column("billing_reason")

    with op.batch_alter_table("customers", schema=None) as batch_op:
        batch_op.drop_constraint(op.f("ck_customers_net_terms_days"), type_="check")
        batch_op.drop_column("net_terms_days")

    with op.batch_alter_table("tenants", schema=None) as batch_op:
        batch_op.drop_constraint(op.f("ck_tenants_net_terms_days"), type_="check")
        batch_op.drop_column("net_terms_days")
