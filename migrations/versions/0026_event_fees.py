"""Percentage prices: each event's fee, computed at ingestion, and its sum in the hourly rollups

Revision ID: 0026
Revises: 0025
Create Date: 2026-12-09 10:00:00

"""

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

# revision identifiers, used by Alembic.
revision: str = "0026"
down_revision: str | Sequence[str] | None = "0025"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None

EXACT = sa.Numeric().with_variant(sa.String(length=64), "sqlite")


def upgrade() -> None:
    """Upgrade schema."""
    with op.batch_alter_table("usage_events", schema=None) as batch_op:
        batch_op.add_column(sa.Column("fee", EXACT, nullable=True))
    with op.batch_alter_table("usage_rollups", schema=None) as batch_op:
        batch_op.add_column(sa.Column("fee_sum", EXACT, server_default=sa.text("'0'"), nullable=False))


def downgrade() -> None:
    """Downgrade schema."""
    with op.batch_alter_table("usage_rollups", schema=None) as batch_op:
        batch_op.drop_column("fee_sum")
    with op.batch_alter_table("usage_events", schema=None) as batch_op:
        batch_op.drop_column("fee")
