"""What an audit event changed; the console's forms submitted once, and secrets held for one view.

Revision ID: 0008
Revises: 0007
"""

import sqlalchemy as sa
from alembic import op

revision = '0008'
down_revision = '0007'
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.add_column("audit_events", sa.Column("changes", sa.JSON(), nullable=True))
    with op.batch_alter_table("console_sessions") as table:
        # {form token: where its submission led}, the latest few: a form sent again changes nothing.
        table.add_column(sa.Column("submitted", sa.JSON(), nullable=False, server_default="{}"))
        # {reveal id: a new secret sealed under a key derived from the browser's cookie}, until first viewed.
        table.add_column(sa.Column("reveals", sa.JSON(), nullable=False, server_default="{}"))


def downgrade() -> None:
    with op.batch_alter_table("console_sessions") as table:
        table.drop_column("reveals")
        table.drop_column("submitted")
    op.drop_column("audit_events", "changes")
