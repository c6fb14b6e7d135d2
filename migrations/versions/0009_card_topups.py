"""card_topups: top-ups charged off-session to a saved card (attempt recorded before Stripe is called)

Revision ID: 0009_card_topups
Revises: 0008_money_bounds
"""

import sqlalchemy as sa
from alembic import op

import app.models.base

revision = "0009_card_topups"
down_revision = "0008_money_bounds"
branch_labels = None
depends_on = None

UTC = app.models.base.UTCDateTime(timezone=True)


def upgrade() -> None:
    op.create_table(
        "card_topups",
        sa.Column("id", sa.Integer(), nullable=False),
        sa.Column("customer_id", sa.Integer(), nullable=False),
        sa.Column("card_id", sa.Integer(), nullable=False),
        sa.Column("amount_cents", sa.BigInteger(), nullable=False),
        sa.Column("currency", sa.String(length=3), nullable=False),
        sa.Column("idempotency_key", sa.String(length=200), nullable=False),
        sa.Column("status", sa.String(length=20), nullable=False),
        sa.Column("payment_intent_id", sa.String(length=120), nullable=True),
        sa.Column("error_code", sa.String(length=80), nullable=True),
        sa.Column("error_message", sa.Text(), nullable=True),
        sa.Column("created_at", UTC, nullable=False),
        sa.Column("updated_at", UTC, nullable=False),
        sa.CheckConstraint("amount_cents > 0", name=op.f("ck_card_topups_positive")),
        sa.CheckConstraint(
            "status IN ('pending', 'succeeded', 'declined', 'requires_action', 'failed', 'unknown')",
            name=op.f("ck_card_topups_status"),
        ),
        sa.ForeignKeyConstraint(["customer_id"], ["users.id"], name=op.f("fk_card_topups_customer_id_users")),
        sa.ForeignKeyConstraint(["card_id"], ["cards.id"], name=op.f("fk_card_topups_card_id_cards")),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_card_topups")),
        sa.UniqueConstraint("idempotency_key", name=op.f("uq_card_topups_idempotency_key")),
    )
    op.create_index(op.f("ix_card_topups_customer_id"), "card_topups", ["customer_id"], unique=False)
    op.create_index(op.f("ix_card_topups_status"), "card_topups", ["status"], unique=False)
    op.create_index(op.f("ix_card_topups_payment_intent_id"), "card_topups", ["payment_intent_id"], unique=False)


def downgrade() -> None:
    op.drop_table("card_topups")
