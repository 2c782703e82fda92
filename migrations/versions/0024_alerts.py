"""Usage alerts and their triggers

Revision ID: 0024
Revises: 0023
Create Date: 2026-12-07 23:19:08

"""

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op
from sqlalchemy.dialects import postgresql

# revision identifiers, used by Alembic.
revision: str = "0024"
down_revision: str | Sequence[str] | None = "0023"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None

JSON = sa.JSON().with_variant(postgresql.JSONB(astext_type=sa.Text()), "postgresql")
DECIMAL = sa.Numeric().with_variant(sa.String(length=64), "sqlite")


def upgrade() -> None:
    """Upgrade schema."""
    op.create_table(
        "alerts",
        sa.Column("id", sa.String(length=40), nullable=False),
        sa.Column("tenant_id", sa.String(length=40), nullable=False),
        sa.Column("customer_id", sa.String(length=40), nullable=True),
        sa.Column("meter_id", sa.String(length=40), nullable=True),
        sa.Column("name", sa.String(length=200), nullable=True),
        sa.Column("type", sa.String(length=16), nullable=False),
        sa.Column("thresholds", JSON, nullable=False),
        sa.Column("currency", sa.String(length=3), nullable=True),
        sa.Column("recurrence", sa.String(length=16), nullable=False),
        sa.Column("email", sa.Boolean(), nullable=False),
        sa.Column("status", sa.String(length=16), nullable=False),
        sa.Column("created_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("archived_at", sa.DateTime(timezone=True), nullable=True),
        sa.CheckConstraint("recurrence IN ('per_period')", name=op.f("ck_alerts_recurrence")),
        sa.CheckConstraint("status IN ('active', 'archived')", name=op.f("ck_alerts_status")),
        sa.CheckConstraint("type IN ('usage_units', 'spend_amount')", name=op.f("ck_alerts_type")),
        sa.ForeignKeyConstraint(
            ["customer_id"],
            ["customers.id"],
            name=op.f("fk_alerts_customer_id_customers"),
            ondelete="CASCADE",
        ),
        sa.ForeignKeyConstraint(
            ["meter_id"], ["meters.id"], name=op.f("fk_alerts_meter_id_meters"), ondelete="CASCADE"
        ),
        sa.ForeignKeyConstraint(
            ["tenant_id"], ["tenants.id"], name=op.f("fk_alerts_tenant_id_tenants"), ondelete="CASCADE"
        ),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_alerts")),
    )
    with op.batch_alter_table("alerts", schema=None) as batch_op:
        batch_op.create_index("ix_alerts_tenant_id_id", ["tenant_id", "id"], unique=False)
        batch_op.create_index("ix_alerts_tenant_id_status", ["tenant_id", "status"], unique=False)

    op.create_table(
        "alert_triggers",
        sa.Column("id", sa.String(length=40), nullable=False),
        sa.Column("tenant_id", sa.String(length=40), nullable=False),
        sa.Column("alert_id", sa.String(length=40), nullable=False),
        sa.Column("customer_id", sa.String(length=40), nullable=False),
        sa.Column("threshold", DECIMAL, nullable=False),
        sa.Column("value", DECIMAL, nullable=False),
        sa.Column("period_start", sa.DateTime(timezone=True), nullable=False),
        sa.Column("period_end", sa.DateTime(timezone=True), nullable=False),
        sa.Column("triggered_at", sa.DateTime(timezone=True), nullable=False),
        sa.ForeignKeyConstraint(
            ["alert_id"], ["alerts.id"], name=op.f("fk_alert_triggers_alert_id_alerts"), ondelete="CASCADE"
        ),
        sa.ForeignKeyConstraint(
            ["customer_id"],
            ["customers.id"],
            name=op.f("fk_alert_triggers_customer_id_customers"),
            ondelete="CASCADE",
        ),
        sa.ForeignKeyConstraint(
            ["tenant_id"],
            ["tenants.id"],
            name=op.f("fk_alert_triggers_tenant_id_tenants"),
            ondelete="CASCADE",
        ),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_alert_triggers")),
        sa.UniqueConstraint(
            "alert_id",
            "customer_id",
            "period_start",
            "threshold",
            name=op.f("uq_alert_triggers_alert_id_customer_id_period_start_threshold"),
        ),
    )
    with op.batch_alter_table("alert_triggers", schema=None) as batch_op:
        batch_op.create_index("ix_alert_triggers_alert_id_id", ["alert_id", "id"], unique=False)


def downgrade() -> None:
    """Downgrade schema."""
    op.drop_table("alert_triggers")
    op.drop_table("alerts")
