"""a partial index for the settlement sweep's every-5-seconds look for unresolved card attempts

Revision ID: 0017_unresolved_attempts
Revises: 0016_foresight
"""

import sqlalchemy as sa
from alembic import op

revision = "0017_unresolved_attempts"
down_revision = "0016_foresight"
branch_labels = None
depends_on = None

UNRESOLVED = sa.text("status IN ('pending', 'unknown')")


def upgrade() -> None:
    op.create_index(
        "ix_charge_attempts_unresolved", "charge_attempts", ["updated_at"],
        postgresql_where=UNRESOLVED, sqlite_where=UNRESOLVED,
    )


def downgrade() -> None:
    op.drop_index("ix_charge_attempts_unresolved", table_name="charge_attempts")
