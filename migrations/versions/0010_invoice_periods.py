"""invoice periods: several usage invoices per customer and period (month to date, then the rest)

One invoice per customer, period and end (`period_end`) instead of one per customer and period: an
invoice issued during its period bills up to then, the next one for the same period the rest.

Revision ID: 0010_invoice_periods
Revises: 0009_card_topups
"""

from alembic import op

revision = "0010_invoice_periods"
down_revision = "0009_card_topups"
branch_labels = None
depends_on = None


def upgrade() -> None:
    with op.batch_alter_table("invoices") as batch:
        batch.drop_constraint("uq_invoices_customer_id_billing_period", type_="unique")
        batch.create_unique_constraint(
            "uq_invoices_billing_period_customer_id_period_end", ["billing_period", "customer_id", "period_end"]
        )


def downgrade() -> None:
    with op.batch_alter_table("invoices") as batch:
        batch.drop_constraint("uq_invoices_billing_period_customer_id_period_end", type_="unique")
        batch.create_unique_constraint("uq_invoices_customer_id_billing_period", ["customer_id", "billing_period"])
