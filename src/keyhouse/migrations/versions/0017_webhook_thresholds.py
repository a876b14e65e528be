"""What each webhook endpoint counts as soon: how long before a key expires it is told (`key.expiring`, a
week unless it chooses), and how few credits left are low (`key.credits_low`, 10 unless it chooses).

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
    op.add_column("webhooks", sa.Column("credits_low_threshold", sa.Integer(), nullable=False, server_default="10"))


def downgrade() -> None:
    op.drop_column("webhooks", "credits_low_threshold")
    op.drop_column("webhooks", "expiring_lead_seconds")
