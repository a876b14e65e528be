"""Per-key usage: verdicts counted per key, granularity (minute, hour, day), moment and outcome; the same
summed per organization; and the client addresses each key was presented from.

Revision ID: 0014
Revises: 0013
"""

import sqlalchemy as sa
from alembic import op

from keyhouse.store.models import UtcDateTime

revision = '0014'
down_revision = '0013'
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_table(
        "key_usage",
        sa.Column("key_pk", sa.Integer(), sa.ForeignKey("api_keys.pk", ondelete="CASCADE"), primary_key=True),
        sa.Column("granularity", sa.String(8), primary_key=True),
        sa.Column("start", UtcDateTime(), primary_key=True),
        sa.Column("outcome", sa.String(32), primary_key=True),
        sa.Column("count", sa.BigInteger(), nullable=False),
    )
    op.create_index("ix_key_usage_start", "key_usage", ["start"])
    op.create_table(
        "organization_usage",
        sa.Column("organization_id", sa.String(36), sa.ForeignKey("organizations.id", ondelete="CASCADE"),
                  primary_key=True),
        sa.Column("granularity", sa.String(8), primary_key=True),
        sa.Column("start", UtcDateTime(), primary_key=True),
        sa.Column("outcome", sa.String(32), primary_key=True),
        sa.Column("count", sa.BigInteger(), nullable=False),
    )
    op.create_table(
        "key_addresses",
        sa.Column("key_pk", sa.Integer(), sa.ForeignKey("api_keys.pk", ondelete="CASCADE"), primary_key=True),
        sa.Column("ip", sa.String(64), primary_key=True),
        sa.Column("count", sa.BigInteger(), nullable=False),
        sa.Column("first_seen_at", UtcDateTime(), nullable=False),
        sa.Column("last_seen_at", UtcDateTime(), nullable=False),
    )
    op.create_index("ix_key_addresses_last_seen", "key_addresses", ["last_seen_at"])


def downgrade() -> None:
    op.drop_index("ix_key_addresses_last_seen", table_name="key_addresses")
    op.drop_table("key_addresses")
    op.drop_table("organization_usage")
    op.drop_index("ix_key_usage_start", table_name="key_usage")
    op.drop_table("key_usage")
