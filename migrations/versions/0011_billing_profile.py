"""billing profile (postcode, city), complete invoices (seller snapshot, due date, reverse charge),
indexes for the customer's activity list

Revision ID: 0011_billing_profile
Revises: 0010_invoice_periods
"""

from datetime import timedelta

import sqlalchemy as sa
from alembic import op

import app.models.base
from app.config import load_config

revision = "0011_billing_profile"
down_revision = "0010_invoice_periods"
branch_labels = None
depends_on = None

UTC = app.models.base.UTCDateTime(timezone=True)
# Invoices issued before due dates existed get the default payment terms.
BACKFILL_TERMS = timedelta(days=14)


def upgrade() -> None:
    op.add_column("users", sa.Column("postcode", sa.String(length=20), nullable=True))
    op.add_column("users", sa.Column("city", sa.String(length=120), nullable=True))
    for column in (
        sa.Column("buyer_postcode", sa.String(length=20), nullable=True),
        sa.Column("buyer_city", sa.String(length=120), nullable=True),
        sa.Column("seller_name", sa.String(length=200), nullable=True),
        sa.Column("seller_address", sa.String(length=500), nullable=True),
        sa.Column("seller_country", sa.String(length=2), nullable=True),
        sa.Column("seller_vat_id", sa.String(length=40), nullable=True),
        sa.Column("reverse_charge", sa.Boolean(), server_default=sa.false(), nullable=False),
        sa.Column("due_at", UTC, nullable=True),
    ):
        op.add_column("invoices", column)
    invoices = sa.table("invoices", sa.column("id", sa.Integer), sa.column("issued_at", UTC),
                        sa.column("due_at", UTC), sa.column("seller_name", sa.String),
                        sa.column("seller_address", sa.String), sa.column("seller_country", sa.String),
                        sa.column("seller_vat_id", sa.String))
    # Invoices issued so far printed the configured seller: freeze what is configured now.
    config = load_config()
    seller = {"seller_name": config["SELLER_NAME"], "seller_address": config["SELLER_ADDRESS"],
              "seller_country": config["SELLER_COUNTRY"], "seller_vat_id": config["SELLER_VAT_ID"]}
    conn = op.get_bind()
    for row in conn.execute(sa.select(invoices.c.id, invoices.c.issued_at).where(invoices.c.issued_at.is_not(None))):
        conn.execute(invoices.update().where(invoices.c.id == row.id)
                     .values(due_at=row.issued_at + BACKFILL_TERMS, **seller))
    op.create_index("ix_ledger_entries_customer_created", "ledger_entries", ["customer_id", "created_at"])
    op.create_index("ix_invoice_payments_customer_created", "invoice_payments", ["customer_id", "created_at"])
    op.create_index("ix_charge_attempts_customer_created", "charge_attempts", ["customer_id", "created_at"])
    op.create_index("ix_card_topups_customer_created", "card_topups", ["customer_id", "created_at"])


def downgrade() -> None:
    op.drop_index("ix_card_topups_customer_created", table_name="card_topups")
    op.drop_index("ix_charge_attempts_customer_created", table_name="charge_attempts")
    op.drop_index("ix_invoice_payments_customer_created", table_name="invoice_payments")
    op.drop_index("ix_ledger_entries_customer_created", table_name="ledger_entries")
    for name in ("due_at", "reverse_charge", "seller_vat_id", "seller_country", "seller_address", "seller_name",
                 "buyer_city", "buyer_postcode"):
        op.drop_column("invoices", name)
    op.drop_column("users", "city")
    op.drop_column("users", "postcode")
