"""The console's sessions, and the audit trail filtered by what an event is about.

Revision ID: 0007
Revises: 0006
"""

import sqlalchemy as sa
from alembic import op

from keyhouse.store.models import UtcDateTime

revision = '0007'
down_revision = '0006'
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_table(
        "console_sessions",
        sa.Column("token_hash", sa.String(64), primary_key=True),
        sa.Column("key_pk", sa.Integer(), sa.ForeignKey("api_keys.pk", ondelete="CASCADE"), nullable=False),
        sa.Column("organization_id", sa.String(36), nullable=False),
        sa.Column("user_id", sa.String(36), nullable=False),
        sa.Column("key_id", sa.String(50), nullable=False),
        sa.Column("role", sa.String(16), nullable=False),
        sa.Column("secret_version", sa.Integer(), nullable=False),
        sa.Column("permissions", sa.JSON(), nullable=False),
        sa.Column("csrf_token", sa.String(64), nullable=False),
        sa.Column("created_at", UtcDateTime(), nullable=False),
        sa.Column("expires_at", UtcDateTime(), nullable=False),
    )
    op.create_index("ix_console_sessions_key_pk", "console_sessions", ["key_pk"])
    op.create_index("ix_console_sessions_expires_at", "console_sessions", ["expires_at"])
    op.create_index("ix_audit_org_target", "audit_events", ["organization_id", "target_id", "id"])


def downgrade() -> None:
    op.drop_index("ix_audit_org_target", "audit_events")
    op.drop_table("console_sessions")
