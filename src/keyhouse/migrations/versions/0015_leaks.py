"""Leak reports: each organization's policy for a key found in public (`organizations.leak_policy`:
revoke, the default, or notify), and `key.leaked` in the change feed, so that gateways' caches drop a
leaked key even when it is kept working.

Migration 0011's triggers place the feed's changes, and list its actions: they are made again here with
`key.leaked` among them (tests/test_store.py holds the list to keyhouse.store.trail.FEED_ACTIONS).

Revision ID: 0015
Revises: 0014
"""

import sqlalchemy as sa
from alembic import op

revision = '0015'
down_revision = '0014'
branch_labels = None
depends_on = None

BEFORE = ("key.revoked", "key.rerolled", "key.updated", "key.credits_exhausted", "api.redefined", "api.deleted")
FEED_ACTIONS = (*BEFORE, "key.leaked")


def _place_changes_of(actions: tuple[str, ...]) -> None:
    """The trigger that places each change of the feed (migration 0011's), for these actions."""
    in_feed = "action IN (" + ", ".join(f"'{action}'" for action in actions) + ")"
    if op.get_bind().dialect.name == "postgresql":
        op.execute("DROP TRIGGER keyhouse_place_change ON audit_events")
        op.execute(f"""
            CREATE CONSTRAINT TRIGGER keyhouse_place_change AFTER INSERT ON audit_events
            DEFERRABLE INITIALLY DEFERRED FOR EACH ROW WHEN (NEW.{in_feed})
            EXECUTE FUNCTION keyhouse_place_change()""")
    else:
        op.execute("DROP TRIGGER keyhouse_place_change")
        op.execute(f"""
            CREATE TRIGGER keyhouse_place_change AFTER INSERT ON audit_events
            FOR EACH ROW WHEN NEW.{in_feed}
            BEGIN
                UPDATE audit_events SET feed_position = NEW.id WHERE id = NEW.id;
            END""")


def upgrade() -> None:
    op.add_column("organizations", sa.Column("leak_policy", sa.String(16), nullable=False, server_default="revoke"))
    _place_changes_of(FEED_ACTIONS)


def downgrade() -> None:
    _place_changes_of(BEFORE)
    op.drop_column("organizations", "leak_policy")
