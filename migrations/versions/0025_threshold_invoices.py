"""Progressive billing: plans' threshold_amount, threshold invoices one per multiple and period

Revision ID: 0025
Revises: 0024
Create Date: 2026-12-08 10:00:00

"""

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

# revision identifiers, used by Alembic.
revision: str = "0025"
down_revision: str | Sequence[str] | None = "0024"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None

NOT_THRESHOLD = sa.text("threshold_multiple IS NULL")


def upgrade() -> None:
    """Upgrade schema."""
    with op.batch_alter_table("plans", schema=None) as batch_op:
        batch_op.add_column(sa.Column("threshold_amount", sa.BigInteger(), nullable=True))
        batch_op.create_check_constraint("threshold_amount", "threshold_amount > 0")

    with op.batch_alter_table("invoices", schema=None) as batch_op:
        batch_op.add_column(sa.Column("threshold_multiple", sa.Integer(), nullable=True))
        batch_op.drop_constraint(op.f("uq_invoices_subscription_id_period_start"), type_="unique")
        batch_op.create_unique_constraint(
            op.f("uq_invoices_subscription_id_period_start_threshold_multiple"),
            ["subscription_id", "period_start", "threshold_multiple"],
        )
        batch_op.create_check_constraint(
            "threshold_multiple", "(billing_reason = 'threshold') = (threshold_multiple IS NOT NULL)"
        )
        batch_op.create_index(
            "uq_invoices_subscription_period",
            ["subscription_id", "period_start"],
            unique=True,
            postgresql_where=NOT_THRESHOLD,
            sqlite_where=NOT_THRESHOLD,
        )


def downgrade() -> None:
    """Downgrade schema."""
    op.execute("DELETE FROM invoices WHERE threshold_multiple IS NOT NULL")
    with op.batch_alter_table("invoices", schema=None) as batch_op:
        batch_op.drop_index("uq_invoices_subscription_period")
        batch_op.drop_constraint(op.f("ck_invoices_threshold_multiple"), type_="check")
        batch_op.drop_constraint(
            op.f("uq_invoices_subscription_id_period_start_threshold_multiple"), type_="unique"
        )
        batch_op.create_unique_constraint(
            op.f("uq_invoices_subscription_id_period_start"), ["subscription_id", "period_start"]
        )
        batch_op.drop_column("threshold_multiple")

    with op.batch_alter_table("plans", schema=None) as batch_op:
        batch_op.drop_constraint(op.f("ck_plans_threshold_amount"), type_="check")
        batch_op.drop_column("threshold_amount")
