"""Room for a deployment's own key prefix in the masked key (`api_keys.key_hint`, 16 -> 32 characters).

KEYHOUSE_KEY_PREFIX may be up to 20 characters, and the masked key is the prefix, 4 characters, an ellipsis
and 4 more. PostgreSQL refused `acme_live_4fTq…x2M` (19) in a VARCHAR(16). SQLite enforces no VARCHAR's
length: its column is left as it is (a batch would copy api_keys and drop the old table, and with foreign
keys on that deletes every retired secret with it).

Revision ID: 0013
Revises: 0012
"""

import sqlalchemy as sa
from alembic import op

revision = '0013'
down_revision = '0012'
branch_labels = None
depends_on = None


def upgrade() -> None:
    if op.get_bind().dialect.name == "postgresql":
        op.alter_column("api_keys", "key_hint", type_=sa.String(32), existing_type=sa.String(16),
                        existing_nullable=False)


def downgrade() -> None:
    if op.get_bind().dialect.name == "postgresql":
        op.alter_column("api_keys", "key_hint", type_=sa.String(16), existing_type=sa.String(32),
                        existing_nullable=False)
