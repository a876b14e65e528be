"""Webhooks: the endpoints organizations register, their deliveries, and the outbox they are made from
(`audit_events.webhook_pending`, set with each event webhooks may be told of, in its transaction).

Revision ID: 0016
Revises: 0015
"""

import sqlalchemy as sa
from alembic import op

from keyhouse.store.models import UtcDateTime

revision = '0016'
down_revision = '0015'
branch_labels = None
depends_on = None

_PENDING = sa.text("status = 'pending'")


def upgrade() -> None:
    op.add_column("audit_events", sa.Column("webhook_pending", sa.Boolean(), nullable=True))
    op.create_index("ix_audit_webhook_pending", "audit_events", ["id"], postgresql_where=sa.text("webhook_pending"),
                    sqlite_where=sa.text("webhook_pending"))
    op.create_table(
        "webhooks",
        sa.Column("id", sa.String(36), primary_key=True),
        sa.Column("organization_id", sa.String(36), sa.ForeignKey("organizations.id", ondelete="CASCADE"),
                  nullable=False),
        sa.Column("url", sa.String(2048), nullable=False),
        sa.Column("events", sa.JSON(), nullable=False),
        sa.Column("description", sa.String(255), nullable=True),
        sa.Column("secret_sealed", sa.Text(), nullable=False),
        sa.Column("previous_secret_sealed", sa.Text(), nullable=True),
        sa.Column("previous_until", UtcDateTime(), nullable=True),
        sa.Column("created_at", UtcDateTime(), nullable=False),
    )
    op.create_index("ix_webhooks_org", "webhooks", ["organization_id", "created_at"])
    op.create_table(
        "webhook_deliveries",
        sa.Column("id", sa.BigInteger().with_variant(sa.Integer(), "sqlite"), primary_key=True, autoincrement=True),
        sa.Column("webhook_id", sa.String(36), sa.ForeignKey("webhooks.id", ondelete="CASCADE"), nullable=False),
        sa.Column("event_id", sa.BigInteger(), nullable=False),
        sa.Column("event_type", sa.String(32), nullable=False),
        sa.Column("target_id", sa.String(160), nullable=True),
        sa.Column("payload", sa.Text(), nullable=False),
        sa.Column("status", sa.String(16), nullable=False),
        sa.Column("attempts", sa.Integer(), nullable=False),
        sa.Column("next_attempt_at", UtcDateTime(), nullable=False),
        sa.Column("locked_until", UtcDateTime(), nullable=True),
        sa.Column("last_status_code", sa.Integer(), nullable=True),
        sa.Column("last_error", sa.String(255), nullable=True),
        sa.Column("created_at", UtcDateTime(), nullable=False),
        sa.Column("delivered_at", UtcDateTime(), nullable=True),
    )
    op.create_index("ix_webhook_deliveries_due", "webhook_deliveries", ["next_attempt_at"],
                    postgresql_where=_PENDING, sqlite_where=_PENDING)
    op.create_index("ix_webhook_deliveries_order", "webhook_deliveries", ["webhook_id", "target_id", "id"],
                    postgresql_where=_PENDING, sqlite_where=_PENDING)
    op.create_index("ix_webhook_deliveries_webhook", "webhook_deliveries", ["webhook_id", "id"])


def downgrade() -> None:
    op.drop_table("webhook_deliveries")
    op.drop_table("webhooks")
    op.drop_index("ix_audit_webhook_pending", table_name="audit_events")
    op.drop_column("audit_events", "webhook_pending")
