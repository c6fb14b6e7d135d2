"""money bounds: balances, ledger entries, voucher values and invoice totals within 2^53 - 1 minor units

The application refuses anything larger (app.billing.money.MAX_CENTS, the money-input door and the
ledger's guarded balance move); these CHECK constraints make the database refuse it too, so that no
sum can leave 64 bits and no balance can become a float (SQLite turns an overflowing integer into REAL).

Revision ID: 0008_money_bounds
Revises: 0007_credit_notes
"""

from alembic import op

revision = "0008_money_bounds"
down_revision = "0007_credit_notes"
branch_labels = None
depends_on = None

MAX_CENTS = 2**53 - 1

BOUNDS = {
    "users": {
        "cash_max": f"cash_balance_cents <= {MAX_CENTS}",
        "voucher_max": f"voucher_balance_cents <= {MAX_CENTS}",
    },
    "ledger_entries": {"amount_range": f"amount_cents BETWEEN -{MAX_CENTS} AND {MAX_CENTS}"},
    "voucher_batches": {"value_max": f"value_cents <= {MAX_CENTS}"},
    "vouchers": {"value_max": f"value_cents <= {MAX_CENTS}"},
    "invoices": {"total_max": f"total_cents <= {MAX_CENTS} AND subtotal_cents <= {MAX_CENTS}"},
}


def upgrade() -> None:
    for table, checks in BOUNDS.items():
        with op.batch_alter_table(table) as batch:
            for name, condition in checks.items():
                batch.create_check_constraint(name, condition)


def downgrade() -> None:
    for table, checks in BOUNDS.items():
        with op.batch_alter_table(table) as batch:
            for name in checks:
                batch.drop_constraint(op.f(f"ck_{table}_{name}"), type_="check")
