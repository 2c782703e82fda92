"""Coupons and discounts

Revision ID: 0017
Revises: 0016
Create Date: 2026-12-07 20:40:00

"""

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op
from sqlalchemy.dialects import postgresql

# revision identifiers, used by Alembic.
revision: str = "0017"
down_revision: str | Sequence[str] | None = "0016"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None

JSON = sa.JSON().with_variant(postgresql.JSONB(astext_type=sa.Text()), "postgresql")
DECIMAL = sa.Numeric().with_variant(sa.String(length=64), "sqlite")
UTC_TIME = sa.DateTime(timezone=True)


def upgrade() -> None:
    """Upgrade schema."""
    op.create_table(
        "coupons",
        sa.Column("id", sa.String(length=40), nullable=False),
        sa.Column("tenant_id", sa.String(length=40), nullable=False),
        sa.Column("code", sa.String(length=64), nullable=False),
        sa.Column("name", sa.String(length=200), nullable=False),
        sa.Column("percent_off", DECIMAL, nullable=True),
        sa.Column("amount_off", sa.BigInteger(), nullable=True),
        sa.Column("currency", sa.String(length=3), nullable=True),
        sa.Column("duration", sa.String(length=16), nullable=False),
        sa.Column("duration_in_periods", sa.Integer(), nullable=True),
        sa.Column("plan_ids", JSON, nullable=True),
        sa.Column("max_redemptions", sa.Integer(), nullable=True),
        sa.Column("times_redeemed", sa.Integer(), server_default="0", nullable=False),
        sa.Column("expires_at", UTC_TIME, nullable=True),
        sa.Column("metadata", JSON, server_default=sa.text("'{}'"), nullable=False),
        sa.Column("deleted_at", UTC_TIME, nullable=True),
        sa.Column("created_at", UTC_TIME, nullable=False),
        sa.Column("updated_at", UTC_TIME, nullable=False),
        sa.CheckConstraint("duration IN ('once', 'repeating', 'forever')", name=op.f("ck_coupons_duration")),
        sa.CheckConstraint(
            "(percent_off IS NULL) <> (amount_off IS NULL) AND (amount_off IS NULL) = (currency IS NULL)",
            name=op.f("ck_coupons_off"),
        ),
        sa.CheckConstraint("amount_off > 0", name=op.f("ck_coupons_amount_off")),
        sa.CheckConstraint(
            "(duration = 'repeating') = (duration_in_periods IS NOT NULL)",
            name=op.f("ck_coupons_duration_in_periods"),
        ),
        sa.CheckConstraint("times_redeemed >= 0", name=op.f("ck_coupons_times_redeemed")),
        sa.ForeignKeyConstraint(
            ["tenant_id"], ["tenants.id"], name=op.f("fk_coupons_tenant_id_tenants"), ondelete="CASCADE"
        ),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_coupons")),
        sa.UniqueConstraint("tenant_id", "code", name=op.f("uq_coupons_tenant_id_code")),
    )
    op.create_index("ix_coupons_tenant_id_id", "coupons", ["tenant_id", "id"], unique=False)

    op.create_table(
        "discounts",
        sa.Column("id", sa.String(length=40), nullable=False),
        sa.Column("tenant_id", sa.String(length=40), nullable=False),
        sa.Column("customer_id", sa.String(length=40), nullable=False),
        sa.Column("coupon_id", sa.String(length=40), nullable=False),
        sa.Column("start", UTC_TIME, nullable=False),
        sa.Column("end", UTC_TIME, nullable=True),
        sa.Column("invoice_id", sa.String(length=40), nullable=True),
        sa.Column("ended_at", UTC_TIME, nullable=True),
        sa.Column("removed_at", UTC_TIME, nullable=True),
        sa.Column("created_at", UTC_TIME, nullable=False),
        sa.Column("updated_at", UTC_TIME, nullable=False),
        sa.ForeignKeyConstraint(
            ["coupon_id"], ["coupons.id"], name=op.f("fk_discounts_coupon_id_coupons"), ondelete="CASCADE"
        ),
        sa.ForeignKeyConstraint(
            ["customer_id"],
            ["customers.id"],
            name=op.f("fk_discounts_customer_id_customers"),
            ondelete="CASCADE",
        ),
        sa.ForeignKeyConstraint(
            ["tenant_id"], ["tenants.id"], name=op.f("fk_discounts_tenant_id_tenants"), ondelete="CASCADE"
        ),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_discounts")),
    )
    op.create_index("ix_discounts_tenant_id_id", "discounts", ["tenant_id", "id"], unique=False)
    op.create_index(
        "ix_discounts_tenant_id_customer_id", "discounts", ["tenant_id", "customer_id"], unique=False
    )
    op.create_index("ix_discounts_coupon_id", "discounts", ["coupon_id"], unique=False)


def downgrade() -> None:
    """Downgrade schema."""
    op.drop_index("ix_discounts_coupon_id", table_name="discounts")
    op.drop_index("ix_discounts_tenant_id_customer_id", table_name="discounts")
    op.drop_index("ix_discounts_tenant_id_id", table_name="discounts")
    op.drop_table("discounts")
    op.drop_index("ix_coupons_tenant_id_id", table_name="coupons")
    op.drop_table("coupons")
