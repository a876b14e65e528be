"""Scale: a live-key counter per organization, and indexes for every sort and filter of the lists.

Revision ID: 0002
Revises: 0001
"""

import sqlalchemy as sa
from alembic import op

revision = '0002'
down_revision = '0001'
branch_labels = None
depends_on = None

SORTED = ("created_at", "updated_at", "description", "type", "api_user")
FILTERED = ("id", "description", "api_user")


def upgrade() -> None:
    with op.batch_alter_table("organizations") as batch:
        batch.add_column(sa.Column("live_keys", sa.Integer(), nullable=False, server_default="0"))
    op.execute("UPDATE organizations SET live_keys = (SELECT count(*) FROM api_keys "
               "WHERE api_keys.organization_id = organizations.id AND api_keys.revoked_at IS NULL)")
    for column in SORTED:
        op.create_index(f"ix_api_keys_live_{column}", "api_keys", ["organization_id", column, "pk"],
                        postgresql_where=sa.text("revoked_at IS NULL"), sqlite_where=sa.text("revoked_at IS NULL"))
    for column in FILTERED:
        op.create_index(f"ix_api_keys_lower_{column}", "api_keys", [sa.text("organization_id"),
                                                                    sa.text(f"lower({column})")])


def downgrade() -> None:
    for column in FILTERED:
        op.drop_index(f"ix_api_keys_lower_{column}", table_name="api_keys")
    for column in SORTED:
        op.drop_index(f"ix_api_keys_live_{column}", table_name="api_keys")
    with op.batch_alter_table("organizations") as batch:
        batch.drop_column("live_keys")
