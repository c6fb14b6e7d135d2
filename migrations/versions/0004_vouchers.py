"""vouchers: batches, vouchers (hashed codes), redemptions

Revision ID: 0004
Revises: 0003
"""

import sqlalchemy as sa
from alembic import op

import app.models.base

revision = "0004"
down_revision = "0003"
branch_labels = None
depends_on = None

UTC = app.models.base.UTCDateTime(timezone=True)
LEDGER_ID = sa.BigInteger().with_variant(sa.Integer(), "sqlite")


def upgrade() -> None:
    op.create_table(
        "voucher_batches",
        sa.Column("id", sa.Integer(), nullable=False),
        sa.Column("request_key", sa.String(length=64), nullable=False),
        sa.Column("count", sa.Integer(), nullable=False),
        sa.Column("value_cents", sa.BigInteger(), nullable=False),
        sa.Column("max_redemptions", sa.Integer(), nullable=False),
        sa.Column("expires_at", UTC, nullable=True),
        sa.Column("note", sa.String(length=500), nullable=True),
        sa.Column("created_by", sa.Integer(), nullable=True),
        sa.Column("created_at", UTC, nullable=False),
        sa.CheckConstraint("count > 0", name=op.f("ck_voucher_batches_count_positive")),
        sa.CheckConstraint("value_cents > 0", name=op.f("ck_voucher_batches_value_positive")),
        sa.CheckConstraint("max_redemptions > 0", name=op.f("ck_voucher_batches_max_redemptions_positive")),
        sa.ForeignKeyConstraint(["created_by"], ["users.id"], name=op.f("fk_voucher_batches_created_by_users")),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_voucher_batches")),
        sa.UniqueConstraint("request_key", name=op.f("uq_voucher_batches_request_key")),
    )

    op.create_table(
        "vouchers",
        sa.Column("id", sa.Integer(), nullable=False),
        sa.Column("batch_id", sa.Integer(), nullable=False),
        sa.Column("code_hash", sa.String(length=64), nullable=False),
        sa.Column("code_prefix", sa.String(length=8), nullable=False),
        sa.Column("value_cents", sa.BigInteger(), nullable=False),
        sa.Column("max_redemptions", sa.Integer(), nullable=False),
        sa.Column("redemptions_count", sa.Integer(), nullable=False),
        sa.Column("expires_at", UTC, nullable=True),
        sa.Column("note", sa.String(length=500), nullable=True),
        sa.Column("disabled_at", UTC, nullable=True),
        sa.Column("disabled_by", sa.Integer(), nullable=True),
        sa.Column("created_at", UTC, nullable=False),
        sa.CheckConstraint("value_cents > 0", name=op.f("ck_vouchers_value_positive")),
        sa.CheckConstraint("max_redemptions > 0", name=op.f("ck_vouchers_max_redemptions_positive")),
        sa.CheckConstraint(
            "redemptions_count >= 0 AND redemptions_count <= max_redemptions", name=op.f("ck_vouchers_count_range")
        ),
        sa.ForeignKeyConstraint(["batch_id"], ["voucher_batches.id"], name=op.f("fk_vouchers_batch_id_voucher_batches")),
        sa.ForeignKeyConstraint(["disabled_by"], ["users.id"], name=op.f("fk_vouchers_disabled_by_users")),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_vouchers")),
        sa.UniqueConstraint("code_hash", name=op.f("uq_vouchers_code_hash")),
    )
    op.create_index(op.f("ix_vouchers_batch_id"), "vouchers", ["batch_id"], unique=False)

    op.create_table(
        "voucher_redemptions",
        sa.Column("id", sa.Integer(), nullable=False),
        sa.Column("voucher_id", sa.Integer(), nullable=False),
        sa.Column("customer_id", sa.Integer(), nullable=False),
        sa.Column("amount_cents", sa.BigInteger(), nullable=False),
        sa.Column("ledger_entry_id", LEDGER_ID, nullable=True),
        sa.Column("created_at", UTC, nullable=False),
        sa.ForeignKeyConstraint(["voucher_id"], ["vouchers.id"], name=op.f("fk_voucher_redemptions_voucher_id_vouchers")),
        sa.ForeignKeyConstraint(["customer_id"], ["users.id"], name=op.f("fk_voucher_redemptions_customer_id_users")),
        sa.ForeignKeyConstraint(
            ["ledger_entry_id"], ["ledger_entries.id"], name=op.f("fk_voucher_redemptions_ledger_entry_id_ledger_entries")
        ),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_voucher_redemptions")),
        sa.UniqueConstraint(
            "voucher_id", "customer_id", name=op.f("uq_voucher_redemptions_voucher_id_customer_id")
        ),
    )
    op.create_index(op.f("ix_voucher_redemptions_voucher_id"), "voucher_redemptions", ["voucher_id"], unique=False)
    op.create_index(op.f("ix_voucher_redemptions_customer_id"), "voucher_redemptions", ["customer_id"], unique=False)


def downgrade() -> None:
    op.drop_table("voucher_redemptions")
    op.drop_table("vouchers")
    op.drop_table("voucher_batches")
