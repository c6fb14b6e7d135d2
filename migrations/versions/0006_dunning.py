"""dunning: reminder/warning notices, per-customer dunning state, outgoing platform webhooks

Revision ID: 0006
Revises: 0005
"""

import sqlalchemy as sa
from alembic import op

import app.models.base

revision = "0006"
down_revision = "0005"
branch_labels = None
depends_on = None

UTC = app.models.base.UTCDateTime(timezone=True)


def upgrade() -> None:
    op.create_table(
        "dunning_accounts",
        sa.Column("customer_id", sa.Integer(), autoincrement=False, nullable=False),
        sa.Column("last_reminder_at", UTC, nullable=True),
        sa.Column("last_runway_warning_at", UTC, nullable=True),
        sa.Column("grace_extended_until", UTC, nullable=True),
        sa.Column("deletion_requested_at", UTC, nullable=True),
        sa.Column("updated_at", UTC, nullable=False),
        sa.ForeignKeyConstraint(["customer_id"], ["users.id"], name=op.f("fk_dunning_accounts_customer_id_users")),
        sa.PrimaryKeyConstraint("customer_id", name=op.f("pk_dunning_accounts")),
    )
    op.create_table(
        "dunning_notices",
        sa.Column("id", sa.Integer(), nullable=False),
        sa.Column("customer_id", sa.Integer(), nullable=False),
        sa.Column("kind", sa.String(length=24), nullable=False),
        sa.Column("window_key", sa.String(length=64), nullable=False),
        sa.Column("status", sa.String(length=16), nullable=False),
        sa.Column("to_email", sa.String(length=254), nullable=False),
        sa.Column("invoice_ids", sa.JSON(), nullable=True),
        sa.Column("details", sa.JSON(), nullable=True),
        sa.Column("reserved_at", UTC, nullable=False),
        sa.Column("next_attempt_at", UTC, nullable=False),
        sa.Column("claimed_until", UTC, nullable=True),
        sa.Column("attempts", sa.Integer(), nullable=False),
        sa.Column("last_error", sa.String(length=500), nullable=True),
        sa.Column("sent_at", UTC, nullable=True),
        sa.Column("cancelled_at", UTC, nullable=True),
        sa.CheckConstraint(
            "kind IN ('reminder', 'deletion_warning', 'runway_warning')", name=op.f("ck_dunning_notices_kind")
        ),
        sa.CheckConstraint(
            "status IN ('pending', 'sending', 'sent', 'cancelled')", name=op.f("ck_dunning_notices_status")
        ),
        sa.ForeignKeyConstraint(["customer_id"], ["users.id"], name=op.f("fk_dunning_notices_customer_id_users")),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_dunning_notices")),
        sa.UniqueConstraint(
            "customer_id", "kind", "window_key", name=op.f("uq_dunning_notices_customer_id_kind_window_key")
        ),
    )
    op.create_index(op.f("ix_dunning_notices_customer_id"), "dunning_notices", ["customer_id"], unique=False)
    op.create_index(
        "ix_dunning_notices_status_next_attempt", "dunning_notices", ["status", "next_attempt_at"], unique=False
    )
    op.create_table(
        "platform_webhook_deliveries",
        sa.Column("id", sa.Integer(), nullable=False),
        sa.Column("event_id", sa.String(length=64), nullable=False),
        sa.Column("event_type", sa.String(length=80), nullable=False),
        sa.Column("customer_id", sa.Integer(), nullable=False),
        sa.Column("payload", sa.JSON(), nullable=False),
        sa.Column("status", sa.String(length=16), nullable=False),
        sa.Column("created_at", UTC, nullable=False),
        sa.Column("next_attempt_at", UTC, nullable=False),
        sa.Column("claimed_until", UTC, nullable=True),
        sa.Column("attempts", sa.Integer(), nullable=False),
        sa.Column("last_status_code", sa.Integer(), nullable=True),
        sa.Column("last_error", sa.String(length=500), nullable=True),
        sa.Column("delivered_at", UTC, nullable=True),
        sa.CheckConstraint(
            "status IN ('pending', 'sending', 'delivered')", name=op.f("ck_platform_webhook_deliveries_status")
        ),
        sa.ForeignKeyConstraint(
            ["customer_id"], ["users.id"], name=op.f("fk_platform_webhook_deliveries_customer_id_users")
        ),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_platform_webhook_deliveries")),
        sa.UniqueConstraint("event_id", name=op.f("uq_platform_webhook_deliveries_event_id")),
    )
    op.create_index(
        op.f("ix_platform_webhook_deliveries_customer_id"), "platform_webhook_deliveries", ["customer_id"], unique=False
    )
    op.create_index(
        "ix_platform_webhook_deliveries_status_next_attempt",
        "platform_webhook_deliveries",
        ["status", "next_attempt_at"],
        unique=False,
    )


def downgrade() -> None:
    op.drop_table("platform_webhook_deliveries")
    op.drop_table("dunning_notices")
    op.drop_table("dunning_accounts")
