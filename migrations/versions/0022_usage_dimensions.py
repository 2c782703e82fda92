"""Usage dimensions: meters' group_by and allow_negative, the group key in the rollups and
distinct values, and the groups opened per customer, meter and subscription period

Revision ID: 0022
Revises: 0021
Create Date: 2026-12-08 09:00:00

"""

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op
from sqlalchemy.dialects import postgresql

# revision identifiers, used by Alembic.
revision: str = "0022"
down_revision: str | Sequence[str] | None = "0021"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None

JSON = sa.JSON().with_variant(postgresql.JSONB(astext_type=sa.Text()), "postgresql")
ROLLUP_KEY = ["tenant_id", "customer_id", "meter_id", "hour"]


def upgrade() -> None:
    """Upgrade schema."""
    with op.batch_alter_table("meters", schema=None) as batch_op:
        batch_op.add_column(sa.Column("group_by", JSON, server_default=sa.text("'[]'"), nullable=False))
        batch_op.add_column(
            sa.Column("allow_negative", sa.Boolean(), server_default=sa.false(), nullable=False)
        )
    # The group key joins the primary keys: on SQLite the batch rebuilds the tables.
    with op.batch_alter_table("usage_rollups", schema=None) as batch_op:
        batch_op.add_column(sa.Column("group_key", sa.Text(), server_default=sa.text("''"), nullable=False))
        batch_op.drop_constraint("pk_usage_rollups", type_="primary")
        batch_op.create_primary_key("pk_usage_rollups", [*ROLLUP_KEY, "group_key"])
    with op.batch_alter_table("usage_unique_values", schema=None) as batch_op:
        batch_op.add_column(sa.Column("group_key", sa.Text(), server_default=sa.text("''"), nullable=False))
        batch_op.drop_constraint("pk_usage_unique_values", type_="primary")
        batch_op.create_primary_key("pk_usage_unique_values", [*ROLLUP_KEY, "group_key", "value"])
    op.create_table(
        "usage_groups",
        sa.Column("tenant_id", sa.String(length=40), nullable=False),
        sa.Column("customer_id", sa.String(length=40), nullable=False),
        sa.Column("meter_id", sa.String(length=40), nullable=False),
        sa.Column("period_start", sa.DateTime(timezone=True), nullable=False),
        sa.Column("group_key", sa.Text(), nullable=False),
        sa.PrimaryKeyConstraint(
            "tenant_id", "customer_id", "meter_id", "period_start", "group_key", name=op.f("pk_usage_groups")
        ),
    )


def downgrade() -> None:
    """Downgrade schema. The rollup rows of grouped meters' groups are dropped (one row per hour
    cannot hold them apart): their hours read as empty until their events are rolled up again."""
    op.drop_table("usage_groups")
    op.execute("DELETE FROM usage_unique_values WHERE group_key <> ''")
    op.execute("DELETE FROM usage_rollups WHERE group_key <> ''")
    with op.batch_alter_table("usage_unique_values", schema=None) as batch_op:
        batch_op.drop_constraint("pk_usage_unique_values", type_="primary")
        batch_op.create_primary_key("pk_usage_unique_values", [*ROLLUP_KEY, "value"])
        batch_op.drop_column("group_key")
    with op.batch_alter_table("usage_rollups", schema=None) as batch_op:
        batch_op.drop_constraint("pk_usage_rollups", type_="primary")
        batch_op.create_primary_key("pk_usage_rollups", ROLLUP_KEY)
        batch_op.drop_column("group_key")
    with op.batch_alter_table("meters", schema=None) as batch_op:
        batch_op.drop_column("allow_negative")
        batch_op.drop_column("group_by")
