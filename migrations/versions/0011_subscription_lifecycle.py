"""Subscription lifecycle: seats, metadata, trials, ends by cancel or plan change, past due

Revision ID: 0011
Revises: 0010
Create Date: 2026-12-07 18:10:00

"""

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op
from sqlalchemy.dialects import postgresql

revision: str = "0011"
down_revision: str | Sequence[str] | None = "0010"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None

JSON = sa.JSON().with_variant(postgresql.JSONB(astext_type=sa.Text()), "postgresql")

OLD_KINDS = "kind IN ('base_fee', 'usage', 'late_usage')"
NEW_KINDS = "kind IN ('base_fee', 'usage', 'late_usage', 'trial')"


def upgrade() -> None:
    with op.batch_alter_table("plans", schema=None) as batch_op:
        batch_op.add_column(sa.Column("trial_days", sa.Integer(), server_default="0", nullable=False))
    with op.batch_alter_table("subscriptions", schema=None) as batch_op:
        batch_op.add_column(sa.Column("quantities", JSON, server_default="[]", nullable=False))
        batch_op.add_column(sa.Column("metadata", JSON, server_default="{}", nullable=False))
        batch_op.add_column(sa.Column("trial_end", sa.DateTime(timezone=True), nullable=True))
        batch_op.add_column(sa.Column("trial_notice_for", sa.DateTime(timezone=True), nullable=True))
        batch_op.add_column(sa.Column("end_reason", sa.String(length=16), nullable=True))
        batch_op.add_column(sa.Column("close_reason", sa.String(length=32), nullable=True))
        batch_op.add_column(
            sa.Column("cancel_at_period_end", sa.Boolean(), server_default=sa.false(), nullable=False)
        )
        batch_op.add_column(sa.Column("replaces", sa.String(length=40), nullable=True))
        batch_op.add_column(sa.Column("replaced_by", sa.String(length=40), nullable=True))
        batch_op.add_column(sa.Column("past_due", sa.Boolean(), server_default=sa.false(), nullable=False))
        batch_op.create_index("ix_subscriptions_trial_end", ["trial_end"], unique=False)
        batch_op.create_check_constraint("end_reason", "end_reason IN ('canceled', 'replaced')")
    with op.batch_alter_table("invoice_lines", schema=None) as batch_op:
        batch_op.drop_constraint("kind", type_="check")
        batch_op.create_check_constraint("kind", NEW_KINDS)


def downgrade() -> None:
    with op.batch_alter_table("invoice_lines", schema=None) as batch_op:
        batch_op.drop_constraint("kind", type_="check")
        batch_op.create_check_constraint("kind", OLD_KINDS)
    with op.batch_alter_table("subscriptions", schema=None) as batch_op:
        batch_op.drop_constraint("end_reason", type_="check")
        batch_op.drop_index("ix_subscriptions_trial_end")
        for column in (
            "past_due",
            "replaced_by",
            "replaces",
            "cancel_at_period_end",
            "close_reason",
            "end_reason",
            "trial_notice_for",
            "trial_end",
            "metadata",
            "quantities",
        ):
            batch_op.drop_column(column)
    with op.batch_alter_table("plans", schema=None) as batch_op:
        batch_op.drop_column("trial_days")
