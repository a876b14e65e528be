"""How long before a key expires each webhook endpoint is told of it (`key.expiring`): its own lead time,
a week unless it chooses.

Revision ID: 0017
Revises: 0016
"""

import sqlalchemy as sa
from alembic import op

revision = '0017'
down_revision = '0016'
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.add_column("webhooks", sa.Column("expiring_lead_seconds", sa.Integer(), nullable=False,
                                        server_default=str(7 * 86400)))


def downgrade() -> None:
    op.drop_column("webhooks", "expiring_lead_seconds")
