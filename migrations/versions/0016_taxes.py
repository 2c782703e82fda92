"""Taxes: tax rates; a tenant's default rates, address and tax id; a customer's address, tax
exemption, tax ids, tax rates and low-balance threshold

Revision ID: 0016
Revises: 0015
Create Date: 2026-12-07 21:00:00

"""

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op
from sqlalchemy.dialects import postgresql

from billing.core.db.types import one_of

# revision identifiers, used by Alembic.
revision: str = "0016"
down_revision: str | Sequence[str] | None = "0015"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None

JSON = sa.JSON().with_variant(postgresql.JSONB(astext_type=sa.Text()), "postgresql")
EXACT_DECIMAL = sa.Numeric().with_variant(sa.String(length=64), "sqlite")
EMPTY_LIST = sa.text("'[]'")
TAX_EXEMPT = ("none", "exempt", "reverse")


def upgrade() -> None:
    """Upgrade schema."""
    op.create_table(
        "tax_rates",
        sa.Column("id", sa.String(length=40), nullable=False),
        sa.Column("tenant_id", sa.String(length=40), nullable=False),
        sa.Column("display_name", sa.String(length=50), nullable=False),
        sa.Column("description", sa.String(length=500), nullable=True),
        sa.Column("percentage", EXACT_DECIMAL, nullable=False),
        sa.Column("inclusive", sa.Boolean(), nullable=False),
        sa.Column("country", sa.String(length=2), nullable=True),
        sa.Column("jurisdiction", sa.String(length=50), nullable=True),
        sa.Column("active", sa.Boolean(), nullable=False),
        sa.Column("created_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("updated_at", sa.DateTime(timezone=True), nullable=False),
        sa.ForeignKeyConstraint(
            ["tenant_id"], ["tenants.id"], name=op.f("fk_tax_rates_tenant_id_tenants"), ondelete="CASCADE"
        ),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_tax_rates")),
    )
    with op.batch_alter_table("tax_rates", schema=None) as batch_op:
        batch_op.create_index("ix_tax_rates_tenant_id_id", ["tenant_id", "id"], unique=False)

    with op.batch_alter_table("tenants", schema=None) as batch_op:
        batch_op.add_column(sa.Column("default_tax_rates", JSON, server_default=EMPTY_LIST, nullable=False))
        batch_op.add_column(sa.Column("address", JSON, nullable=True))
        batch_op.add_column(sa.Column("tax_id", JSON, nullable=True))

    with op.batch_alter_table("customers", schema=None) as batch_op:
        batch_op.add_column(sa.Column("address", JSON, nullable=True))
        batch_op.add_column(
            sa.Column("tax_exempt", sa.String(length=16), server_default="none", nullable=False)
        )
        batch_op.add_column(sa.Column("tax_ids", JSON, server_default=EMPTY_LIST, nullable=False))
        batch_op.add_column(sa.Column("tax_rates", JSON, nullable=True))
        batch_op.add_column(sa.Column("credit_balance_low_threshold", sa.BigInteger(), nullable=True))
        batch_op.create_check_constraint("tax_exempt", one_of("tax_exempt", TAX_EXEMPT))
        batch_op.create_check_constraint("credit_balance_low_threshold", "credit_balance_low_threshold >= 0")


def downgrade() -> None:
    """Downgrade schema."""
    with op.batch_alter_table("customers", schema=None) as batch_op:
        batch_op.drop_constraint(op.f("ck_customers_credit_balance_low_threshold"), type_="check")
        batch_op.drop_constraint(op.f("ck_customers_tax_exempt"), type_="check")
        for name in ("credit_balance_low_threshold", "tax_rates", "tax_ids", "tax_exempt", "address"):
            batch_op.drop_column(name)
    with op.batch_alter_table("tenants", schema=None) as batch_op:
        for name in ("tax_id", "address", "default_tax_rates"):
            batch_op.drop_column(name)
    with op.batch_alter_table("tax_rates", schema=None) as batch_op:
        batch_op.drop_index("ix_tax_rates_tenant_id_id")
    op.drop_table("tax_rates")
