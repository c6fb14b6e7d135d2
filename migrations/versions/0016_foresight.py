"""foresight: spending limits, limit alerts sent, price-change notices

Revision ID: 0016_foresight
Revises: 0015_notifications
"""

import sqlalchemy as sa
from alembic import op

import app.models.base

revision = "0016_foresight"
down_revision = "0015_notifications"
branch_labels = None
depends_on = None

UTC = app.models.base.UTCDateTime(timezone=True)


def upgrade() -> None:
    op.create_table(
        "spending_limits",
        sa.Column("customer_id", sa.Integer(), autoincrement=False, nullable=False),
        sa.Column("customer_limit_cents", sa.BigInteger(), nullable=True),
        sa.Column("admin_ceiling_cents", sa.BigInteger(), nullable=True),
        sa.Column("updated_at", UTC, nullable=False),
        sa.CheckConstraint("customer_limit_cents IS NULL OR customer_limit_cents >= 0",
                           name=op.f("ck_spending_limits_customer_limit")),
        sa.CheckConstraint("admin_ceiling_cents IS NULL OR admin_ceiling_cents >= 0",
                           name=op.f("ck_spending_limits_admin_ceiling")),
        sa.ForeignKeyConstraint(["customer_id"], ["users.id"], name=op.f("fk_spending_limits_customer_id_users")),
        sa.PrimaryKeyConstraint("customer_id", name=op.f("pk_spending_limits")),
    )
    op.create_table(
        "spending_alerts",
        sa.Column("id", sa.Integer(), nullable=False),
        sa.Column("customer_id", sa.Integer(), nullable=False),
        sa.Column("period", sa.String(length=7), nullable=False),
        sa.Column("threshold", sa.Integer(), nullable=False),
        sa.Column("spent_cents", sa.BigInteger(), nullable=False),
        sa.Column("limit_cents", sa.BigInteger(), nullable=False),
        sa.Column("created_at", UTC, nullable=False),
        sa.CheckConstraint("threshold IN (50, 80, 100)", name=op.f("ck_spending_alerts_threshold")),
        sa.ForeignKeyConstraint(["customer_id"], ["users.id"], name=op.f("fk_spending_alerts_customer_id_users")),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_spending_alerts")),
        sa.UniqueConstraint("customer_id", "period", "threshold",
                            name=op.f("uq_spending_alerts_customer_id_period_threshold")),
    )
    op.create_index(op.f("ix_spending_alerts_customer_id"), "spending_alerts", ["customer_id"])
    op.create_table(
        "price_change_notices",
        sa.Column("id", sa.Integer(), nullable=False),
        sa.Column("plan_price_id", sa.Integer(), nullable=False),
        sa.Column("customer_id", sa.Integer(), nullable=False),
        sa.Column("before_monthly_cents", sa.BigInteger(), nullable=False),
        sa.Column("after_monthly_cents", sa.BigInteger(), nullable=False),
        sa.Column("created_at", UTC, nullable=False),
        sa.ForeignKeyConstraint(["plan_price_id"], ["plan_prices.id"],
                                name=op.f("fk_price_change_notices_plan_price_id_plan_prices"), ondelete="CASCADE"),
        sa.ForeignKeyConstraint(["customer_id"], ["users.id"], name=op.f("fk_price_change_notices_customer_id_users")),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_price_change_notices")),
        sa.UniqueConstraint("plan_price_id", "customer_id",
                            name=op.f("uq_price_change_notices_plan_price_id_customer_id")),
    )
    op.create_index(op.f("ix_price_change_notices_customer_id"), "price_change_notices", ["customer_id"])


def downgrade() -> None:
    op.drop_index(op.f("ix_price_change_notices_customer_id"), table_name="price_change_notices")
    op.drop_table("price_change_notices")
    op.drop_index(op.f("ix_spending_alerts_customer_id"), table_name="spending_alerts")
    op.drop_table("spending_alerts")
    op.drop_table("spending_limits")
