"""users.external_ref: the provisioning platform's own id for a customer (unique when set)

Revision ID: 0014_customer_external_ref
Revises: 0013_security
"""

import sqlalchemy as sa
from alembic import op

revision = "0014_customer_external_ref"
down_revision = "0013_security"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.add_column("users", sa.Column("external_ref", sa.String(length=120), nullable=True))
    # a unique index (not a table constraint) so that SQLite can add it without rebuilding the table
    op.create_index("uq_users_external_ref", "users", ["external_ref"], unique=True)


def downgrade() -> None:
    op.drop_index("uq_users_external_ref", table_name="users")
    op.drop_column("users", "external_ref")
