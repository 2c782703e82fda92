"""Invoice amounts between rating and charging: discount, tax and credit totals on invoices,
ids, discount and tax amounts on lines, and the customer's tax data frozen at finalization

Revision ID: 0015
Revises: 0014
Create Date: 2026-12-07 20:30:00

"""

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op
from sqlalchemy.dialects import postgresql

# revision identifiers, used by Alembic.
revision: str = "0015"
down_revision: str | Sequence[str] | None = "0014"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None

JSON = sa.JSON().with_variant(postgresql.JSONB(astext_type=sa.Text()), "postgresql")
EMPTY_LIST = sa.text("'[]'")
INVOICE_AMOUNTS = (
    "discount_total",
    "tax_total",
    "total_excluding_tax",
    "credits_applied",
    "pre_payment_credit_notes_amount",
    "post_payment_credit_notes_amount",
)


def upgrade() -> None:
    """Upgrade schema."""
    with op.batch_alter_table("invoices", schema=None) as batch_op:
        for name in INVOICE_AMOUNTS:
            batch_op.add_column(sa.Column(name, sa.BigInteger(), server_default="0", nullable=False))
        batch_op.add_column(sa.Column("total_tax_amounts", JSON, server_default=EMPTY_LIST, nullable=False))
        batch_op.add_column(sa.Column("credit_applications", JSON, server_default=EMPTY_LIST, nullable=False))
        batch_op.add_column(sa.Column("discount_id", sa.String(length=40), nullable=True))
        batch_op.add_column(sa.Column("tax_exempt", sa.String(length=16), nullable=True))
        batch_op.add_column(sa.Column("customer_address", JSON, nullable=True))
        batch_op.add_column(sa.Column("customer_tax_ids", JSON, server_default=EMPTY_LIST, nullable=False))
        batch_op.add_column(sa.Column("legal_notes", JSON, server_default=EMPTY_LIST, nullable=False))
    # Totals so far had neither discount nor tax: everything was excluding tax.
    op.execute("UPDATE invoices SET total_excluding_tax = total")

    with op.batch_alter_table("invoice_lines", schema=None) as batch_op:
        batch_op.add_column(sa.Column("public_id", sa.String(length=40), nullable=True))
        batch_op.add_column(sa.Column("plan_id", sa.String(length=40), nullable=True))
        batch_op.add_column(sa.Column("discount_amounts", JSON, server_default=EMPTY_LIST, nullable=False))
        batch_op.add_column(sa.Column("tax_amounts", JSON, server_default=EMPTY_LIST, nullable=False))
        batch_op.add_column(sa.Column("discount_id", sa.String(length=40), nullable=True))
        batch_op.create_unique_constraint("uq_invoice_lines_public_id", ["public_id"])


def downgrade() -> None:
    """Downgrade schema."""
    with op.batch_alter_table("invoice_lines", schema=None) as batch_op:
        batch_op.drop_constraint("uq_invoice_lines_public_id", type_="unique")
        for name in ("discount_id", "tax_amounts", "discount_amounts", "plan_id", "public_id"):
            batch_op.drop_column(name)
    with op.batch_alter_table("invoices", schema=None) as batch_op:
        for name in (
            "legal_notes",
            "customer_tax_ids",
            "customer_address",
            "tax_exempt",
            "discount_id",
            "credit_applications",
            "total_tax_amounts",
            *reversed(INVOICE_AMOUNTS),
        ):
            batch_op.drop_column(name)
