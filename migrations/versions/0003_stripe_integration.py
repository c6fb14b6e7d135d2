"""stripe integration: processed events, top-ups, disputes, cash refunds

Revision ID: 0003
Revises: 0002
"""

import sqlalchemy as sa
from alembic import op

import app.models.base

revision = "0003"
down_revision = "0002"
branch_labels = None
depends_on = None

UTC = app.models.base.UTCDateTime(timezone=True)


def upgrade() -> None:
    op.create_table(
        "stripe_events",
        sa.Column("id", sa.String(length=120), nullable=False),
        sa.Column("type", sa.String(length=80), nullable=False),
        sa.Column("created", sa.BigInteger(), nullable=False),
        sa.Column("customer_id", sa.Integer(), nullable=True),
        sa.Column("source", sa.String(length=16), nullable=False),
        sa.Column("processed_at", UTC, nullable=False),
        sa.ForeignKeyConstraint(["customer_id"], ["users.id"], name=op.f("fk_stripe_events_customer_id_users")),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_stripe_events")),
    )
    op.create_index(op.f("ix_stripe_events_created"), "stripe_events", ["created"], unique=False)
    op.create_index(op.f("ix_stripe_events_customer_id"), "stripe_events", ["customer_id"], unique=False)

    op.create_table(
        "topups",
        sa.Column("id", sa.Integer(), nullable=False),
        sa.Column("customer_id", sa.Integer(), nullable=False),
        sa.Column("payment_intent_id", sa.String(length=120), nullable=False),
        sa.Column("checkout_session_id", sa.String(length=120), nullable=True),
        sa.Column("amount_cents", sa.BigInteger(), nullable=False),
        sa.Column("refunded_cents", sa.BigInteger(), nullable=False),
        sa.Column("ledger_entry_id", sa.BigInteger().with_variant(sa.Integer(), "sqlite"), nullable=True),
        sa.Column("disputed_at", UTC, nullable=True),
        sa.Column("created_at", UTC, nullable=False),
        sa.CheckConstraint("amount_cents > 0", name=op.f("ck_topups_positive")),
        sa.CheckConstraint(
            "refunded_cents >= 0 AND refunded_cents <= amount_cents", name=op.f("ck_topups_refunded_range")
        ),
        sa.ForeignKeyConstraint(["customer_id"], ["users.id"], name=op.f("fk_topups_customer_id_users")),
        sa.ForeignKeyConstraint(
            ["ledger_entry_id"], ["ledger_entries.id"], name=op.f("fk_topups_ledger_entry_id_ledger_entries")
        ),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_topups")),
        sa.UniqueConstraint("payment_intent_id", name=op.f("uq_topups_payment_intent_id")),
    )
    op.create_index(op.f("ix_topups_customer_id"), "topups", ["customer_id"], unique=False)

    op.create_table(
        "payment_disputes",
        sa.Column("id", sa.String(length=120), nullable=False),
        sa.Column("customer_id", sa.Integer(), nullable=True),
        sa.Column("charge_id", sa.String(length=120), nullable=True),
        sa.Column("payment_intent_id", sa.String(length=120), nullable=True),
        sa.Column("amount_cents", sa.BigInteger(), nullable=False),
        sa.Column("status", sa.String(length=40), nullable=False),
        sa.Column("reason", sa.String(length=80), nullable=True),
        sa.Column("created_at", UTC, nullable=False),
        sa.Column("closed_at", UTC, nullable=True),
        sa.ForeignKeyConstraint(["customer_id"], ["users.id"], name=op.f("fk_payment_disputes_customer_id_users")),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_payment_disputes")),
    )
    op.create_index(op.f("ix_payment_disputes_customer_id"), "payment_disputes", ["customer_id"], unique=False)
    op.create_index(
        op.f("ix_payment_disputes_payment_intent_id"), "payment_disputes", ["payment_intent_id"], unique=False
    )

    op.create_table(
        "cash_refunds",
        sa.Column("id", sa.Integer(), nullable=False),
        sa.Column("customer_id", sa.Integer(), nullable=False),
        sa.Column("topup_id", sa.Integer(), nullable=False),
        sa.Column("payment_intent_id", sa.String(length=120), nullable=False),
        sa.Column("amount_cents", sa.BigInteger(), nullable=False),
        sa.Column("request_key", sa.String(length=120), nullable=False),
        sa.Column("idempotency_key", sa.String(length=200), nullable=False),
        sa.Column("reason", sa.Text(), nullable=False),
        sa.Column("actor_id", sa.Integer(), nullable=True),
        sa.Column("status", sa.String(length=16), nullable=False),
        sa.Column("stripe_refund_id", sa.String(length=120), nullable=True),
        sa.Column("error_message", sa.Text(), nullable=True),
        sa.Column("created_at", UTC, nullable=False),
        sa.CheckConstraint("amount_cents > 0", name=op.f("ck_cash_refunds_positive")),
        sa.CheckConstraint("status IN ('pending', 'succeeded', 'failed')", name=op.f("ck_cash_refunds_status")),
        sa.ForeignKeyConstraint(["customer_id"], ["users.id"], name=op.f("fk_cash_refunds_customer_id_users")),
        sa.ForeignKeyConstraint(["actor_id"], ["users.id"], name=op.f("fk_cash_refunds_actor_id_users")),
        sa.ForeignKeyConstraint(["topup_id"], ["topups.id"], name=op.f("fk_cash_refunds_topup_id_topups")),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_cash_refunds")),
        sa.UniqueConstraint("idempotency_key", name=op.f("uq_cash_refunds_idempotency_key")),
    )
    op.create_index(op.f("ix_cash_refunds_customer_id"), "cash_refunds", ["customer_id"], unique=False)
    op.create_index(op.f("ix_cash_refunds_topup_id"), "cash_refunds", ["topup_id"], unique=False)
    op.create_index(op.f("ix_cash_refunds_request_key"), "cash_refunds", ["request_key"], unique=False)


def downgrade() -> None:
    op.drop_table("cash_refunds")
    op.drop_table("payment_disputes")
    op.drop_table("topups")
    op.drop_table("stripe_events")
