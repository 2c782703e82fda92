"""Dunning policies and cases; customers' default card, for expiry notices

Revision ID: 0009
Revises: 0008
Create Date: 2026-11-21 10:41:44.129324

"""

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op
from sqlalchemy.dialects import postgresql

# revision identifiers, used by Alembic.
revision: str = "0009"
down_revision: str | Sequence[str] | None = "0008"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    """Upgrade schema."""
    op.create_table(
        "dunning_policies",
        sa.Column("tenant_id", sa.String(length=40), nullable=False),
        sa.Column(
            "retry_schedule_days",
            sa.JSON().with_variant(postgresql.JSONB(astext_type=sa.Text()), "postgresql"),
            nullable=False,
        ),
        sa.Column("final_action", sa.String(length=32), nullable=False),
        sa.Column("suspend_customer", sa.Boolean(), nullable=False),
        sa.Column("expiring_card_notice", sa.Boolean(), nullable=False),
        sa.Column("updated_at", sa.DateTime(timezone=True), nullable=False),
        sa.ForeignKeyConstraint(
            ["tenant_id"],
            ["tenants.id"],
            name=op.f("fk_dunning_policies_tenant_id_tenants"),
            ondelete="CASCADE",
        ),
        sa.PrimaryKeyConstraint("tenant_id", name=op.f("pk_dunning_policies")),
    )
    op.create_table(
        "dunning_cases",
        sa.Column("id", sa.String(length=40), nullable=False),
        sa.Column("tenant_id", sa.String(length=40), nullable=False),
        sa.Column("invoice_id", sa.String(length=40), nullable=False),
        sa.Column("customer_id", sa.String(length=40), nullable=False),
        sa.Column("status", sa.String(length=16), nullable=False),
        sa.Column(
            "retry_schedule_days",
            sa.JSON().with_variant(postgresql.JSONB(astext_type=sa.Text()), "postgresql"),
            nullable=False,
        ),
        sa.Column("first_failed_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("next_slot", sa.Integer(), nullable=False),
        sa.Column("next_action", sa.String(length=16), nullable=True),
        sa.Column("next_action_at", sa.DateTime(timezone=True), nullable=True),
        sa.Column("final_notice_sent", sa.Boolean(), nullable=False),
        sa.Column("failures", sa.Integer(), nullable=False),
        sa.Column("last_attempt", sa.Integer(), nullable=False),
        sa.Column("last_failure_class", sa.String(length=16), nullable=True),
        sa.Column("last_failure_code", sa.String(length=64), nullable=True),
        sa.Column("retries", sa.Integer(), nullable=False),
        sa.Column("created_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("updated_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("closed_at", sa.DateTime(timezone=True), nullable=True),
        sa.Column("claimed_by", sa.String(length=40), nullable=True),
        sa.Column("claim_expires_at", sa.DateTime(timezone=True), nullable=True),
        sa.CheckConstraint(
            "status IN ('active', 'recovered', 'exhausted', 'canceled')", name=op.f("ck_dunning_cases_status")
        ),
        sa.ForeignKeyConstraint(
            ["customer_id"],
            ["customers.id"],
            name=op.f("fk_dunning_cases_customer_id_customers"),
            ondelete="CASCADE",
        ),
        sa.ForeignKeyConstraint(
            ["invoice_id"],
            ["invoices.id"],
            name=op.f("fk_dunning_cases_invoice_id_invoices"),
            ondelete="CASCADE",
        ),
        sa.ForeignKeyConstraint(
            ["tenant_id"], ["tenants.id"], name=op.f("fk_dunning_cases_tenant_id_tenants"), ondelete="CASCADE"
        ),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_dunning_cases")),
        sa.UniqueConstraint("invoice_id", name=op.f("uq_dunning_cases_invoice_id")),
    )
    with op.batch_alter_table("dunning_cases", schema=None) as batch_op:
        batch_op.create_index("ix_dunning_cases_customer_id", ["customer_id"], unique=False)
        batch_op.create_index("ix_dunning_cases_due", ["status", "next_action_at"], unique=False)
        batch_op.create_index("ix_dunning_cases_tenant_id_id", ["tenant_id", "id"], unique=False)
    with op.batch_alter_table("customers", schema=None) as batch_op:
        batch_op.add_column(sa.Column("card_id", sa.String(length=255), nullable=True))
        batch_op.add_column(sa.Column("card_brand", sa.String(length=32), nullable=True))
        batch_op.add_column(sa.Column("card_last4", sa.String(length=4), nullable=True))
        batch_op.add_column(sa.Column("card_exp_month", sa.Integer(), nullable=True))
        batch_op.add_column(sa.Column("card_exp_year", sa.Integer(), nullable=True))
        batch_op.create_index("ix_customers_card_expiry", ["card_exp_year", "card_exp_month"], unique=False)


def downgrade() -> None:
    """Downgrade schema."""
    with op.batch_alter_table("customers", schema=None) as batch_op:
        batch_op.drop_index("ix_customers_card_expiry")
        for column in ("card_exp_year", "card_exp_month", "card_last4", "card_brand", "card_id"):
            batch_op.drop_column(column)

    with op.batch_alter_table("dunning_cases", schema=None) as batch_op:
        batch_op.drop_index("ix_dunning_cases_tenant_id_id")
        batch_op.drop_index("ix_dunning_cases_due")
        batch_op.drop_index("ix_dunning_cases_customer_id")

    op.drop_table("dunning_cases")
    op.drop_table("dunning_policies")
