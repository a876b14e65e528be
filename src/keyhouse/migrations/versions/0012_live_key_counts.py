"""An organization's live keys counted in several rows (`live_key_counts`) instead of one column of its row.

Every create, reissue and revoke adds to the count in its own transaction. On the organization's row,
each of them held that row's lock until it committed, and one busy organization's creates and revokes
queued behind each other. Now each unit of work adds to one of LIVE_KEY_SHARDS rows chosen at random
(keyhouse.store.api_keys), and the billing list's total is their sum.

Revision ID: 0012
Revises: 0011
"""

import sqlalchemy as sa
from alembic import op

revision = '0012'
down_revision = '0011'
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_table(
        "live_key_counts",
        sa.Column("organization_id", sa.String(36), sa.ForeignKey("organizations.id", ondelete="CASCADE"),
                  primary_key=True),
        sa.Column("shard", sa.SmallInteger(), primary_key=True, autoincrement=False),
        sa.Column("live", sa.Integer(), nullable=False),
    )
    op.execute("INSERT INTO live_key_counts (organization_id, shard, live) SELECT id, 0, live_keys FROM organizations")
    # Not a batch (which on SQLite copies the table and drops the old one, and dropping a table that keys
    # and users refer to ON DELETE CASCADE empties them): ALTER TABLE ... DROP COLUMN, SQLite 3.35 and later.
    op.drop_column("organizations", "live_keys")


def downgrade() -> None:
    op.add_column("organizations", sa.Column("live_keys", sa.Integer(), nullable=False, server_default="0"))
    op.execute("UPDATE organizations SET live_keys = coalesce((SELECT sum(live) FROM live_key_counts "
               "WHERE live_key_counts.organization_id = organizations.id), 0)")
    op.drop_table("live_key_counts")
