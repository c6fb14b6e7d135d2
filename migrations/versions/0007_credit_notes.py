"""credit notes: documents with their own number series; card refunds of credit notes

Revision ID: 0007_credit_notes
Revises: 0006
"""

import sqlalchemy as sa
from alembic import op

import app.models.base

revision = "0007_credit_notes"
down_revision = "0006"
branch_labels = None
depends_on = None

UTC = app.models.base.UTCDateTime(timezone=True)


def upgrade() -> None:
    op.create_table(
        "credit_note_number_counters",
        sa.Column("year", sa.Integer(), autoincrement=False, nullable=False),
        sa.Column("last_seq", sa.Integer(), nullable=False),
        sa.PrimaryKeyConstraint("year", name=op.f("pk_credit_note_number_counters")),
    )
    op.create_table(
        "credit_notes",
        sa.Column("id", sa.Integer(), nullable=False),
        sa.Column("invoice_id", sa.Integer(), nullable=False),
        sa.Column("customer_id", sa.Integer(), nullable=False),
        sa.Column("number", sa.String(length=24), nullable=False),
        sa.Column("number_year", sa.Integer(), nullable=False),
        sa.Column("number_seq", sa.Integer(), nullable=False),
        sa.Column("request_key", sa.String(length=120), nullable=False),
        sa.Column("currency", sa.String(length=3), nullable=False),
        sa.Column("subtotal_cents", sa.BigInteger(), nullable=False),
        sa.Column("tax_rate", sa.Numeric(6, 4), nullable=False),
        sa.Column("tax_cents", sa.BigInteger(), nullable=False),
        sa.Column("total_cents", sa.BigInteger(), nullable=False),
        sa.Column("reason", sa.Text(), nullable=False),
        sa.Column("memo", sa.Text(), nullable=True),
        sa.Column("applied_to_due_cents", sa.BigInteger(), nullable=False),
        sa.Column("returned_voucher_cents", sa.BigInteger(), nullable=False),
        sa.Column("returned_cash_cents", sa.BigInteger(), nullable=False),
        sa.Column("returned_card_cents", sa.BigInteger(), nullable=False),
        sa.Column("card_refund", sa.Boolean(), nullable=False),
        sa.Column("actor_id", sa.Integer(), nullable=True),
        sa.Column("issued_at", UTC, nullable=False),
        sa.CheckConstraint("total_cents > 0", name=op.f("ck_credit_notes_positive")),
        sa.CheckConstraint(
            "applied_to_due_cents + returned_voucher_cents + returned_cash_cents + returned_card_cents = total_cents",
            name=op.f("ck_credit_notes_allocated"),
        ),
        sa.ForeignKeyConstraint(["invoice_id"], ["invoices.id"], name=op.f("fk_credit_notes_invoice_id_invoices")),
        sa.ForeignKeyConstraint(["customer_id"], ["users.id"], name=op.f("fk_credit_notes_customer_id_users")),
        sa.ForeignKeyConstraint(["actor_id"], ["users.id"], name=op.f("fk_credit_notes_actor_id_users")),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_credit_notes")),
        sa.UniqueConstraint("number", name=op.f("uq_credit_notes_number")),
        sa.UniqueConstraint("request_key", name=op.f("uq_credit_notes_request_key")),
        sa.UniqueConstraint("number_year", "number_seq", name=op.f("uq_credit_notes_number_year_number_seq")),
    )
    op.create_index(op.f("ix_credit_notes_invoice_id"), "credit_notes", ["invoice_id"])
    op.create_index(op.f("ix_credit_notes_customer_id"), "credit_notes", ["customer_id"])
    op.create_index(op.f("ix_credit_notes_issued_at"), "credit_notes", ["issued_at"])
    op.create_table(
        "credit_note_lines",
        sa.Column("id", sa.Integer(), nullable=False),
        sa.Column("credit_note_id", sa.Integer(), nullable=False),
        sa.Column("position", sa.Integer(), nullable=False),
        sa.Column("invoice_line_id", sa.Integer(), nullable=True),
        sa.Column("description", sa.String(length=300), nullable=False),
        sa.Column("seconds", sa.BigInteger(), nullable=True),
        sa.Column("hourly_price", sa.Numeric(18, 6), nullable=True),
        sa.Column("amount_cents", sa.BigInteger(), nullable=False),
        sa.CheckConstraint("amount_cents > 0", name=op.f("ck_credit_note_lines_positive")),
        sa.ForeignKeyConstraint(
            ["credit_note_id"], ["credit_notes.id"], name=op.f("fk_credit_note_lines_credit_note_id_credit_notes")
        ),
        sa.ForeignKeyConstraint(
            ["invoice_line_id"], ["invoice_lines.id"], name=op.f("fk_credit_note_lines_invoice_line_id_invoice_lines")
        ),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_credit_note_lines")),
    )
    op.create_index(op.f("ix_credit_note_lines_credit_note_id"), "credit_note_lines", ["credit_note_id"])
    op.create_index(op.f("ix_credit_note_lines_invoice_line_id"), "credit_note_lines", ["invoice_line_id"])
    with op.batch_alter_table("cash_refunds") as batch:
        batch.alter_column("topup_id", existing_type=sa.Integer(), nullable=True)
        batch.add_column(sa.Column("credit_note_id", sa.Integer(), nullable=True))
        batch.create_foreign_key(
            op.f("fk_cash_refunds_credit_note_id_credit_notes"), "credit_notes", ["credit_note_id"], ["id"]
        )
        batch.create_index(op.f("ix_cash_refunds_credit_note_id"), ["credit_note_id"])


def downgrade() -> None:
    with op.batch_alter_table("cash_refunds") as batch:
        batch.drop_index(op.f("ix_cash_refunds_credit_note_id"))
        batch.drop_constraint(op.f("fk_cash_refunds_credit_note_id_credit_notes"), type_="foreignkey")
        batch.drop_column("credit_note_id")
        batch.alter_column("topup_id", existing_type=sa.Integer(), nullable=False)
    op.drop_table("credit_note_lines")
    op.drop_table("credit_notes")
    op.drop_table("credit_note_number_counters")
