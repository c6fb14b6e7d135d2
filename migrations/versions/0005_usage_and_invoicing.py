"""usage and invoicing: plans, price versions, deployments, lifecycle events, usage charges

Revision ID: 0005
Revises: 0004
"""

import sqlalchemy as sa
from alembic import op

import app.models.base

revision = "0005"
down_revision = "0004"
branch_labels = None
depends_on = None

UTC = app.models.base.UTCDateTime(timezone=True)
BIGID = sa.BigInteger().with_variant(sa.Integer(), "sqlite")


def upgrade() -> None:
    op.create_table(
        "plans",
        sa.Column("id", sa.Integer(), nullable=False),
        sa.Column("name", sa.String(length=60), nullable=False),
        sa.Column("kind", sa.String(length=10), nullable=False),
        sa.Column("size", sa.String(length=20), nullable=False),
        sa.Column("public_ip", sa.Boolean(), nullable=False),
        sa.Column("created_at", UTC, nullable=False),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_plans")),
        sa.UniqueConstraint("name", name=op.f("uq_plans_name")),
        sa.UniqueConstraint("kind", "size", "public_ip", name=op.f("uq_plans_kind_size_public_ip")),
    )
    op.create_table(
        "plan_prices",
        sa.Column("id", sa.Integer(), nullable=False),
        sa.Column("plan_id", sa.Integer(), nullable=False),
        sa.Column("hourly_price", sa.Numeric(18, 6), nullable=False),
        sa.Column("effective_at", UTC, nullable=False),
        sa.Column("created_by", sa.Integer(), nullable=True),
        sa.Column("created_at", UTC, nullable=False),
        sa.CheckConstraint("hourly_price >= 0", name=op.f("ck_plan_prices_not_negative")),
        sa.ForeignKeyConstraint(["plan_id"], ["plans.id"], name=op.f("fk_plan_prices_plan_id_plans")),
        sa.ForeignKeyConstraint(["created_by"], ["users.id"], name=op.f("fk_plan_prices_created_by_users")),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_plan_prices")),
    )
    op.create_index("ix_plan_prices_plan_effective", "plan_prices", ["plan_id", "effective_at"])
    op.create_table(
        "deployments",
        sa.Column("id", sa.Integer(), nullable=False),
        sa.Column("external_id", sa.String(length=120), nullable=False),
        sa.Column("customer_id", sa.Integer(), nullable=False),
        sa.Column("name", sa.String(length=200), nullable=False),
        sa.Column("plan_id", sa.Integer(), nullable=False),
        sa.Column("plan_name", sa.String(length=60), nullable=False),
        sa.Column("hourly_price", sa.Numeric(18, 6), nullable=False),
        sa.Column("state", sa.String(length=16), nullable=False),
        sa.Column("created_at", UTC, nullable=False),
        sa.Column("last_event_at", UTC, nullable=False),
        sa.Column("marked_for_deletion_at", UTC, nullable=True),
        sa.Column("deletion_reason", sa.String(length=500), nullable=True),
        sa.CheckConstraint(
            "state IN ('in_progress', 'running', 'failed', 'suspended', 'deleted')",
            name=op.f("ck_deployments_state"),
        ),
        sa.ForeignKeyConstraint(["customer_id"], ["users.id"], name=op.f("fk_deployments_customer_id_users")),
        sa.ForeignKeyConstraint(["plan_id"], ["plans.id"], name=op.f("fk_deployments_plan_id_plans")),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_deployments")),
        sa.UniqueConstraint("external_id", name=op.f("uq_deployments_external_id")),
    )
    op.create_index(op.f("ix_deployments_customer_id"), "deployments", ["customer_id"])
    op.create_table(
        "deployment_events",
        sa.Column("id", BIGID, nullable=False),
        sa.Column("event_id", sa.String(length=120), nullable=False),
        sa.Column("deployment_id", sa.Integer(), nullable=False),
        sa.Column("kind", sa.String(length=16), nullable=False),
        sa.Column("occurred_at", UTC, nullable=False),
        sa.Column("received_at", UTC, nullable=False),
        sa.Column("payload", sa.JSON(), nullable=True),
        sa.CheckConstraint(
            "kind IN ('created', 'succeeded', 'failed', 'suspended', 'resumed', 'deleted')",
            name=op.f("ck_deployment_events_kind"),
        ),
        sa.ForeignKeyConstraint(
            ["deployment_id"], ["deployments.id"], name=op.f("fk_deployment_events_deployment_id_deployments")
        ),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_deployment_events")),
        sa.UniqueConstraint("event_id", name=op.f("uq_deployment_events_event_id")),
    )
    op.create_index(
        "ix_deployment_events_deployment_occurred", "deployment_events", ["deployment_id", "occurred_at"]
    )
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
            ["deployment_id"], ["deployments.id"], name=op.f("fk_usage_charges_deployment_id_deployments")
        ),
        sa.ForeignKeyConstraint(["invoice_id"], ["invoices.id"], name=op.f("fk_usage_charges_invoice_id_invoices")),
        sa.ForeignKeyConstraint(
            ["invoice_line_id"], ["invoice_lines.id"], name=op.f("fk_usage_charges_invoice_line_id_invoice_lines")
        ),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_usage_charges")),
        sa.UniqueConstraint("deployment_id", "invoice_id", name=op.f("uq_usage_charges_deployment_id_invoice_id")),
        sa.UniqueConstraint("invoice_line_id", name=op.f("uq_usage_charges_invoice_line_id")),
    )
    # no separate index on deployment_id: uq_usage_charges_deployment_id_invoice_id leads with it
    op.create_index(op.f("ix_usage_charges_invoice_id"), "usage_charges", ["invoice_id"])


def downgrade() -> None:
    op.drop_table("usage_charges")
    op.drop_table("deployment_events")
    op.drop_table("deployments")
    op.drop_table("plan_prices")
    op.drop_table("plans")
