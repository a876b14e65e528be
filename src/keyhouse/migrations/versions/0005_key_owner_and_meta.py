"""Who a key is for (an owner id in the organization's platform), and free-form data for its gateway.

Revision ID: 0005
Revises: 0004
"""

import sqlalchemy as sa
from alembic import op

revision = '0005'
down_revision = '0004'
branch_labels = None
depends_on = None


def upgrade() -> None:
    # Plain ADD COLUMNs (no batch copy of api_keys: see 0003 on what a copy would cascade to).
    op.add_column("api_keys", sa.Column("owner_id", sa.String(length=128), nullable=True))
    op.add_column("api_keys", sa.Column("meta", sa.JSON(), nullable=True))
    op.create_index("ix_api_keys_org_owner", "api_keys", ["organization_id", "owner_id"])


def downgrade() -> None:
    op.drop_index("ix_api_keys_org_owner", table_name="api_keys")
    with op.batch_alter_table("api_keys") as batch:
        batch.drop_column("meta")
        batch.drop_column("owner_id")
