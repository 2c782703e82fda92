"""Usage cursors: how far alerts and threshold billing have read the accepted events

Revision ID: 0021
Revises: 0020
Create Date: 2026-12-07 23:40:00

"""

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

# revision identifiers, used by Alembic.
revision: str = "0021"
down_revision: str | Sequence[str] | None = "0020"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    """Upgrade schema."""
    op.create_table(
        "usage_cursors",
        sa.Column("name", sa.String(length=40), nullable=False),
        sa.Column("scope", sa.String(length=40), nullable=False),
        sa.Column("high_seq", sa.BigInteger(), nullable=False),
        sa.Column("previous_high_seq", sa.BigInteger(), nullable=False),
        sa.Column("updated_at", sa.DateTime(timezone=True), nullable=False),
        sa.PrimaryKeyConstraint("name", "scope"),
    )


def downgrade() -> None:
    """Downgrade schema."""
    op.drop_table("usage_cursors")
