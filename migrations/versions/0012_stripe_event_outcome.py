"""stripe events: outcome (applied | ignored) and a note, so malformed events are recorded as ignored

Revision ID: 0012_stripe_event_outcome
Revises: 0011_billing_profile
"""

import sqlalchemy as sa
from alembic import op

revision = "0012_stripe_event_outcome"
down_revision = "0011_billing_profile"
branch_labels = None
depends_on = None


def upgrade() -> None:
    with op.batch_alter_table("stripe_events") as batch:
        batch.add_column(sa.Column("outcome", sa.String(length=16), server_default="applied", nullable=False))
        batch.add_column(sa.Column("note", sa.String(length=300), nullable=True))
        batch.create_check_constraint(op.f("ck_stripe_events_outcome"), "outcome IN ('applied', 'ignored')")


def downgrade() -> None:
    with op.batch_alter_table("stripe_events") as batch:
        batch.drop_constraint(op.f("ck_stripe_events_outcome"), type_="check")
        batch.drop_column("note")
        batch.drop_column("outcome")
