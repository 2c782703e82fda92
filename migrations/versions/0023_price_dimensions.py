"""Price dimensions on invoice lines: the plan price's index, the line's group, a meter's
unpriced quantity (filters, group_by and the percentage model live in the prices' JSON)

Revision ID: 0023
Revises: 0022
Create Date: 2026-12-08 10:00:00

"""

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op
from sqlalchemy.dialects import postgresql

# revision identifiers, used by Alembic.
revision: str = "0023"
down_revision: str | Sequence[str] | None = "0022"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None

JSON = sa.JSON().with_variant(postgresql.JSONB(astext_type=sa.Text()), "postgresql")
EXACT = sa.Numeric().with_variant(sa.String(length=64), "sqlite")


def upgrade() -> None:
    """Upgrade schema."""
    with op.batch_alter_table("invoice_lines", schema=None) as batch_op:
        batch_op.add_column(sa.Column("price_index", sa.Integer(), nullable=True))
        batch_op.add_column(sa.Column("group_values", JSON, nullable=True))
        batch_op.add_column(sa.Column("unpriced_quantity", EXACT, nullable=True))


def downgrade() -> None:
    """Downgrade schema."""
    with op.batch_alter_table("invoice_lines", schema=None) as batch_op:
        for name in ("unpriced_quantity", "group_values", "price_index"):
            batch_op.drop_column(name)
