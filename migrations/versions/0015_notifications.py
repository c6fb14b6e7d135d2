"""notifications: customer emails recorded once per key (outbox), receipts preference

Revision ID: 0015_notifications
Revises: 0014_customer_external_ref
"""

import sqlalchemy as sa
from alembic import op

import app.models.base

revision = "0015_notifications"
down_revision = "0014_customer_external_ref"
branch_labels = None
depends_on = None

UTC = app.models.base.UTCDateTime(timezone=True)


def upgrade() -> None:
    with op.batch_alter_table("users") as batch:
        batch.add_column(sa.Column("email_receipts", sa.Boolean(), server_default=sa.true(), nullable=False))
    op.create_table(
        "notifications",
        sa.Column("id", sa.Integer(), nullable=False),
        sa.Column("customer_id", sa.Integer(), nullable=False),
        sa.Column("kind", sa.String(length=40), nullable=False),
        sa.Column("key", sa.String(length=200), nullable=False),
        sa.Column("subject", sa.String(length=300), nullable=False),
        sa.Column("template", sa.String(length=80), nullable=False),
        sa.Column("context", sa.JSON(), nullable=False),
        sa.Column("attachment", sa.JSON(), nullable=True),
        sa.Column("status", sa.String(length=16), nullable=False),
        sa.Column("to_email", sa.String(length=254), nullable=True),
        sa.Column("message_id", sa.String(length=200), nullable=True),
        sa.Column("created_at", UTC, nullable=False),
        sa.Column("next_attempt_at", UTC, nullable=False),
        sa.Column("claimed_until", UTC, nullable=True),
        sa.Column("attempts", sa.Integer(), nullable=False),
        sa.Column("last_error", sa.String(length=500), nullable=True),
        sa.Column("sent_at", UTC, nullable=True),
        sa.Column("skipped_at", UTC, nullable=True),
        sa.CheckConstraint(
            "status IN ('pending', 'sending', 'sent', 'skipped', 'cancelled')", name=op.f("ck_notifications_status")
        ),
        sa.ForeignKeyConstraint(["customer_id"], ["users.id"], name=op.f("fk_notifications_customer_id_users")),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_notifications")),
        sa.UniqueConstraint("key", name=op.f("uq_notifications_key")),
    )
    op.create_index(op.f("ix_notifications_customer_id"), "notifications", ["customer_id"], unique=False)
    op.create_index("ix_notifications_status_next_attempt", "notifications", ["status", "next_attempt_at"], unique=False)


def downgrade() -> None:
    op.drop_table("notifications")
    with op.batch_alter_table("users") as batch:
        batch.drop_column("email_receipts")
