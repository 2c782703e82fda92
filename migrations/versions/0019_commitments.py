"""Commitments: a plan's minimum per period (its prices' floors and caps live in their JSON)

Revision ID: 0019
Revises: 0018
Create Date: 2026-12-07 21:00:00

"""

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

# revision identifiers, used by Alembic.
revision: str = "0019"
down_revision: str | Sequence[str] | None = "0018"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    """Upgrade schema."""
    with op.batch_alter_table("plans", schema=None) as batch_op:
        batch_op.add_column(sa.Column("minimum_amount", sa.BigInteger(), nullable=True))
        batch_op.create_check_constraint("minimum_amount", "minimum_amount >= 0")


def downgrade() -> None:
    """Downgrade schema."""
    with op.batch_alter_table("plans", schema=None) as batch_op:
        batch_op.drop_constraint("minimum_amount", type_="check")
        batch_op.drop_column("minimum_amount")
