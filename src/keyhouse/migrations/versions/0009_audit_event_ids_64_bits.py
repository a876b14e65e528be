"""The audit trail's (and so the change feed's) ids in 64 bits.

At 1,000 events a second a 32-bit id runs out in about 25 days. SQLite's INTEGER PRIMARY KEY is the row
id, 64 bits already: only PostgreSQL changes (the column, and the sequence that numbers it).

Revision ID: 0009
Revises: 0008
"""

import sqlalchemy as sa
from alembic import op

revision = '0009'
down_revision = '0008'
branch_labels = None
depends_on = None


def upgrade() -> None:
    if op.get_bind().dialect.name != "postgresql":
        return
    op.alter_column("audit_events", "id", type_=sa.BigInteger(), existing_type=sa.Integer(),
                    existing_nullable=False)
    op.execute("ALTER SEQUENCE IF EXISTS audit_events_id_seq AS bigint")


def downgrade() -> None:
    if op.get_bind().dialect.name != "postgresql":
        return
    op.execute("ALTER SEQUENCE IF EXISTS audit_events_id_seq AS integer")
    op.alter_column("audit_events", "id", type_=sa.Integer(), existing_type=sa.BigInteger(),
                    existing_nullable=False)
