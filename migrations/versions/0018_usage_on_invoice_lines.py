"""billed usage lives on the invoice lines (usage_charges dropped); users and deployments are never deleted

A usage charge was a copy of its invoice line (deployment, invoice, seconds, amount, the invoice's
period), written for every line. The line now is the record: a deployment's billed seconds are the
seconds of its invoice lines, one line per deployment and invoice (unique), the line references the
deployment (foreign key). The upgrade refuses to run if any charge differs from its line, or a
deployment's line has no charge, instead of guessing which one is right.

Users and deployments are referenced by invoices, lines, payments and the ledger, and are never
deleted (a deleted deployment is a state, a customer's data is kept for the books): the database
refuses a DELETE of either, and a change of their id, in every session (also in replica mode). So a
row written by the monthly run cannot lose its customer or deployment before it commits, without
locking them. (TRUNCATE is left to maintenance: it waits for every open transaction on the table.)

Revision ID: 0018_usage_on_lines
Revises: 0017_unresolved_attempts
"""

import sqlalchemy as sa
from alembic import op

import app.models.base

revision = "0018_usage_on_lines"
down_revision = "0017_unresolved_attempts"
branch_labels = None
depends_on = None

UTC = app.models.base.UTCDateTime(timezone=True)
BIGID = sa.BigInteger().with_variant(sa.Integer(), "sqlite")
KEPT = ("users", "deployments")

MISMATCHES = """
SELECT (SELECT count(*) FROM usage_charges c
        LEFT JOIN invoice_lines l ON l.id = c.invoice_line_id
        LEFT JOIN invoices i ON i.id = l.invoice_id
        WHERE l.id IS NULL OR l.invoice_id <> c.invoice_id OR l.deployment_id IS NULL
           OR l.deployment_id <> c.deployment_id OR l.seconds IS NULL OR l.seconds <> c.seconds
           OR l.amount_cents <> c.amount_cents OR i.billing_period IS NULL OR i.billing_period <> c.billing_period)
     + (SELECT count(*) FROM invoice_lines l WHERE l.deployment_id IS NOT NULL
        AND NOT EXISTS (SELECT 1 FROM usage_charges c WHERE c.invoice_line_id = l.id))
"""

PG_FUNCTION = """
CREATE FUNCTION paydesk_refuse_removal() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
    RAISE EXCEPTION '% rows are never deleted and keep their id: invoices and the ledger reference them',
        TG_TABLE_NAME USING ERRCODE = 'restrict_violation';
END $$
"""


def upgrade() -> None:
    bind = op.get_bind()
    mismatches = bind.execute(sa.text(MISMATCHES)).scalar_one()
    if mismatches:
        raise RuntimeError(
            f"{mismatches} usage charges differ from their invoice lines (or a deployment's line has no charge); "
            "nothing migrated: reconcile them first"
        )
    with op.batch_alter_table("invoice_lines") as batch:
        batch.drop_index("ix_invoice_lines_deployment_id")
        # lookups by deployment (billed seconds) use this index: it leads with deployment_id
        batch.create_unique_constraint("uq_invoice_lines_deployment_id_invoice_id", ["deployment_id", "invoice_id"])
        batch.create_foreign_key(
            "fk_invoice_lines_deployment_id_deployments", "deployments", ["deployment_id"], ["id"]
        )
    op.drop_table("usage_charges")
    if bind.dialect.name == "postgresql":
        op.execute(PG_FUNCTION)
        for table in KEPT:
            op.execute(f"CREATE TRIGGER {table}_never_deleted BEFORE DELETE ON {table} "
                       "FOR EACH STATEMENT EXECUTE FUNCTION paydesk_refuse_removal()")
            op.execute(f"CREATE TRIGGER {table}_id_kept BEFORE UPDATE OF id ON {table} FOR EACH ROW "
                       "WHEN (OLD.id IS DISTINCT FROM NEW.id) EXECUTE FUNCTION paydesk_refuse_removal()")
            # also for sessions in replica mode (session_replication_role), which skip ordinary triggers
            op.execute(f"ALTER TABLE {table} ENABLE ALWAYS TRIGGER {table}_never_deleted")
            op.execute(f"ALTER TABLE {table} ENABLE ALWAYS TRIGGER {table}_id_kept")
    else:
        for table in KEPT:
            message = f"{table} rows are never deleted and keep their id: invoices and the ledger reference them"
            op.execute(f"CREATE TRIGGER {table}_never_deleted BEFORE DELETE ON {table} "
                       f"BEGIN SELECT RAISE(ABORT, '{message}'); END")
            op.execute(f"CREATE TRIGGER {table}_id_kept BEFORE UPDATE OF id ON {table} "
                       f"WHEN OLD.id IS NOT NEW.id BEGIN SELECT RAISE(ABORT, '{message}'); END")


def downgrade() -> None:
    bind = op.get_bind()
    for table in KEPT:
        op.execute(f"DROP TRIGGER {table}_never_deleted" + (f" ON {table}" if bind.dialect.name == "postgresql" else ""))
        op.execute(f"DROP TRIGGER {table}_id_kept" + (f" ON {table}" if bind.dialect.name == "postgresql" else ""))
    if bind.dialect.name == "postgresql":
        op.execute("DROP FUNCTION paydesk_refuse_removal()")
    op.create_table(
        "usage_charges",
        sa.Column("id", BIGID, nullable=False),
        sa.Column("deployment_id", sa.Integer(), nullable=False),
        sa.Column("invoice_id", sa.Integer(), nullable=False),
        sa.Column("invoice_line_id", sa.Integer(), nullable=False),
        sa.Column("billing_period", sa.String(length=7), nullable=False),
        sa.Column("seconds", sa.BigInteger(), nullable=False),
        sa.Column("amount_cents", sa.BigInteger(), nullable=False),
        sa.Column("created_at", UTC, nullable=False),
        sa.ForeignKeyConstraint(
            ["deployment_id"], ["deployments.id"], name="fk_usage_charges_deployment_id_deployments"
        ),
        sa.ForeignKeyConstraint(["invoice_id"], ["invoices.id"], name="fk_usage_charges_invoice_id_invoices"),
        sa.ForeignKeyConstraint(
            ["invoice_line_id"], ["invoice_lines.id"], name="fk_usage_charges_invoice_line_id_invoice_lines"
        ),
        sa.PrimaryKeyConstraint("id", name="pk_usage_charges"),
        sa.UniqueConstraint("deployment_id", "invoice_id", name="uq_usage_charges_deployment_id_invoice_id"),
        sa.UniqueConstraint("invoice_line_id", name="uq_usage_charges_invoice_line_id"),
    )
    op.create_index("ix_usage_charges_invoice_id", "usage_charges", ["invoice_id"])
    op.execute("""
        INSERT INTO usage_charges (deployment_id, invoice_id, invoice_line_id, billing_period, seconds, amount_cents,
                                   created_at)
        SELECT l.deployment_id, l.invoice_id, l.id, i.billing_period, l.seconds, l.amount_cents, i.created_at
        FROM invoice_lines l JOIN invoices i ON i.id = l.invoice_id WHERE l.deployment_id IS NOT NULL
    """)
    with op.batch_alter_table("invoice_lines") as batch:
        batch.drop_constraint("fk_invoice_lines_deployment_id_deployments", type_="foreignkey")
        batch.drop_constraint("uq_invoice_lines_deployment_id_invoice_id", type_="unique")
        batch.create_index("ix_invoice_lines_deployment_id", ["deployment_id"])
