"""Credits (uses left, with an optional refill) and a verify rate limit of a key's own.

Revision ID: 0006
Revises: 0005
"""

import sqlalchemy as sa
from alembic import op

from keyhouse.store.models import UtcDateTime

revision = '0006'
down_revision = '0005'
branch_labels = None
depends_on = None

COLUMNS = ("credits_remaining", "credits_refill_amount", "credits_refill_seconds", "verify_limit",
           "verify_window_seconds")


def upgrade() -> None:
    # Plain ADD COLUMNs (no batch copy of api_keys: see 0003 on what a copy would cascade to).
    for name in COLUMNS:
        op.add_column("api_keys", sa.Column(name, sa.Integer(), nullable=True))
    op.add_column("api_keys", sa.Column("credits_refilled_at", UtcDateTime(), nullable=True))


def downgrade() -> None:
    with op.batch_alter_table("api_keys") as batch:
        for name in ("credits_refilled_at", *reversed(COLUMNS)):
            batch.drop_column(name)
