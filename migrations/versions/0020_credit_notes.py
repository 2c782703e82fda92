"""Credit notes, their lines, their per-tenant number sequence; the invoice's list of them

Revision ID: 0020
Revises: 0019
Create Date: 2026-12-07 20:15:53.937525

"""

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op
from sqlalchemy.dialects import postgresql

# revision identifiers, used by Alembic.
revision: str = "0020"
down_revision: str | Sequence[str] | None = "0019"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None

JSON = sa.JSON().with_variant(postgresql.JSONB(astext_type=sa.Text()), "postgresql")
REASONS = "reason IN ('duplicate', 'fraudulent', 'order_change', 'product_unsatisfactory', 'other')"


def upgrade() -> None:
    """Upgrade schema."""
    op.create_table(
        "credit_note_sequences",
        sa.Column("tenant_id", sa.String(length=40), nullable=False),
        sa.Column("last_number", sa.BigInteger(), nullable=False),
        sa.ForeignKeyConstraint(
            ["tenant_id"],
            ["tenants.id"],
            name=op.f("fk_credit_note_sequences_tenant_id_tenants"),
            ondelete="CASCADE",
        ),
        sa.PrimaryKeyConstraint("tenant_id", name=op.f("pk_credit_note_sequences")),
    )
    op.create_table(
        "credit_notes",
        sa.Column("id", sa.String(length=40), nullable=False),
        sa.Column("tenant_id", sa.String(length=40), nullable=False),
        sa.Column("invoice_id", sa.String(length=40), nullable=False),
        sa.Column("customer_id", sa.String(length=40), nullable=False),
        sa.Column("number", sa.String(length=40), nullable=False),
        sa.Column("currency", sa.String(length=3), nullable=False),
        sa.Column("reason", sa.String(length=32), nullable=False),
        sa.Column("refund", sa.String(length=16), nullable=False),
        sa.Column("memo", sa.Text(), nullable=True),
        sa.Column("status", sa.String(length=16), nullable=False),
        sa.Column("subtotal", sa.BigInteger(), nullable=False),
        sa.Column("tax_total", sa.BigInteger(), nullable=False),
        sa.Column("total", sa.BigInteger(), nullable=False),
        sa.Column("pre_payment_amount", sa.BigInteger(), nullable=False),
        sa.Column("post_payment_amount", sa.BigInteger(), nullable=False),
        sa.Column("refund_id", sa.String(length=40), nullable=True),
        sa.Column("credit_grant_id", sa.String(length=40), nullable=True),
        sa.Column("created_at", sa.DateTime(timezone=True), nullable=False),
        sa.CheckConstraint(REASONS, name=op.f("ck_credit_notes_reason")),
        sa.CheckConstraint(
            "refund IN ('none', 'provider', 'credit_balance')", name=op.f("ck_credit_notes_refund")
        ),
        sa.CheckConstraint("status IN ('issued')", name=op.f("ck_credit_notes_status")),
        sa.CheckConstraint(
            "pre_payment_amount + post_payment_amount = total", name=op.f("ck_credit_notes_split")
        ),
        sa.CheckConstraint("total > 0", name=op.f("ck_credit_notes_total")),
        sa.ForeignKeyConstraint(
            ["customer_id"],
            ["customers.id"],
            name=op.f("fk_credit_notes_customer_id_customers"),
            ondelete="CASCADE",
        ),
        sa.ForeignKeyConstraint(
            ["invoice_id"],
            ["invoices.id"],
            name=op.f("fk_credit_notes_invoice_id_invoices"),
            ondelete="CASCADE",
        ),
        sa.ForeignKeyConstraint(
            ["tenant_id"], ["tenants.id"], name=op.f("fk_credit_notes_tenant_id_tenants"), ondelete="CASCADE"
        ),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_credit_notes")),
        sa.UniqueConstraint("tenant_id", "number", name=op.f("uq_credit_notes_tenant_id_number")),
    )
    with op.batch_alter_table("credit_notes", schema=None) as batch_op:
        batch_op.create_index("ix_credit_notes_invoice_id", ["invoice_id"], unique=False)
        batch_op.create_index(
            "ix_credit_notes_tenant_id_customer_id", ["tenant_id", "customer_id"], unique=False
        )
        batch_op.create_index("ix_credit_notes_tenant_id_id", ["tenant_id", "id"], unique=False)

    op.create_table(
        "credit_note_lines",
        sa.Column("id", sa.Integer(), autoincrement=True, nullable=False),
        sa.Column("credit_note_id", sa.String(length=40), nullable=False),
        sa.Column("position", sa.Integer(), nullable=False),
        sa.Column("invoice_line", sa.String(length=40), nullable=True),
        sa.Column("description", sa.String(length=500), nullable=False),
        sa.Column("amount", sa.BigInteger(), nullable=False),
        sa.Column("tax_amounts", JSON, nullable=False),
        sa.ForeignKeyConstraint(
            ["credit_note_id"],
            ["credit_notes.id"],
            name=op.f("fk_credit_note_lines_credit_note_id_credit_notes"),
            ondelete="CASCADE",
        ),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_credit_note_lines")),
        sa.UniqueConstraint(
            "credit_note_id", "position", name=op.f("uq_credit_note_lines_credit_note_id_position")
        ),
    )
    with op.batch_alter_table("credit_note_lines", schema=None) as batch_op:
        batch_op.create_index(
            batch_op.f("ix_credit_note_lines_credit_note_id"), ["credit_note_id"], unique=False
        )
        batch_op.create_index(batch_op.f("ix_credit_note_lines_invoice_line"), ["invoice_line"], unique=False)

    with op.batch_alter_table("invoices", schema=None) as batch_op:
        batch_op.add_column(
            sa.Column("credit_note_ids", JSON, server_default=sa.text("'[]'"), nullable=False)
        )


def downgrade() -> None:
    """Downgrade schema."""
    with op.batch_alter_table("invoices", schema=None) as batch_op:
        batch_op.drop_column("credit_note_ids")
    op.drop_table("credit_note_lines")
    op.drop_table("credit_notes")
    op.drop_table("credit_note_sequences")
