"""The change feed's order taken as each change commits, by the database, instead of by locking the
organization's row for the whole writing transaction.

The feed (`GET /keys/changes`) serves an organization's changes in the order they committed, and a
client that has read up to a cursor must never later find a change before it. Until now the cursor was
the event's id, so an organization's changes had to take their ids in commit order: each verdict-changing
write locked the organization's row from its event to its commit, and one busy organization's writers
queued behind each other, Python's time between statements included (about 110 writes/s across three
hosts, 8 of 12 writers waiting on that lock).

Now each change of the feed gets its place, `feed_position`, while its transaction commits:

- PostgreSQL: a deferred constraint trigger runs at COMMIT, takes the organization's advisory lock
  (transaction-scoped: released only once the commit is done and visible) and numbers the event from
  a sequence. Changes of one organization are numbered in the order they become visible, so a reader
  can never see a position before one that is still to come; the lock is held only for the commit
  itself, inside the server. Two changes to one key were already serialized by the key's row lock.
- SQLite runs one writer at a time: a change's place is its id, set by a trigger as it is inserted.

A trigger, not the application, so that every writer is placed (the CLI, a hand-written INSERT). Events
outside the feed keep a NULL position. The feed actions are listed here as they were at this revision;
tests/test_store.py holds them to keyhouse.store.trail.FEED_ACTIONS (a new feed action needs a migration
that recreates the triggers). Existing cursors stay valid: a change already in the feed is placed at its
id, and new positions continue above every id.

Revision ID: 0011
Revises: 0010
"""

import sqlalchemy as sa
from alembic import op

revision = '0011'
down_revision = '0010'
branch_labels = None
depends_on = None

FEED_ACTIONS = ("key.revoked", "key.rerolled", "key.updated", "key.credits_exhausted", "api.redefined",
                "api.deleted")
# The first key of PostgreSQL's two-key advisory locks that order an organization's changes (the second
# is a hash of the organization's id): "kh" in ASCII, so as not to meet another application's locks.
LOCK_NAMESPACE = 0x6B68
_IN_FEED = "action IN (" + ", ".join(f"'{action}'" for action in FEED_ACTIONS) + ")"


def upgrade() -> None:
    op.add_column("audit_events", sa.Column("feed_position", sa.BigInteger(), nullable=True))
    op.execute(f"UPDATE audit_events SET feed_position = id WHERE {_IN_FEED}")
    op.create_index("ix_audit_org_feed", "audit_events", ["organization_id", "feed_position"],
                    postgresql_where=sa.text("feed_position IS NOT NULL"),
                    sqlite_where=sa.text("feed_position IS NOT NULL"))
    if op.get_bind().dialect.name == "postgresql":
        op.execute("CREATE SEQUENCE audit_events_feed_position_seq AS bigint")
        op.execute("SELECT setval('audit_events_feed_position_seq', "
                   "greatest((SELECT max(id) FROM audit_events), 1))")
        op.execute(f"""
            CREATE FUNCTION keyhouse_place_change() RETURNS trigger LANGUAGE plpgsql AS $$
            BEGIN
                PERFORM pg_advisory_xact_lock({LOCK_NAMESPACE}, hashtext(coalesce(NEW.organization_id, '')));
                UPDATE audit_events SET feed_position = nextval('audit_events_feed_position_seq')
                 WHERE id = NEW.id;
                RETURN NULL;
            END $$""")
        op.execute(f"""
            CREATE CONSTRAINT TRIGGER keyhouse_place_change AFTER INSERT ON audit_events
            DEFERRABLE INITIALLY DEFERRED FOR EACH ROW WHEN (NEW.{_IN_FEED})
            EXECUTE FUNCTION keyhouse_place_change()""")
    else:
        op.execute(f"""
            CREATE TRIGGER keyhouse_place_change AFTER INSERT ON audit_events
            FOR EACH ROW WHEN NEW.{_IN_FEED}
            BEGIN
                UPDATE audit_events SET feed_position = NEW.id WHERE id = NEW.id;
            END""")


def downgrade() -> None:
    op.execute("DROP TRIGGER keyhouse_place_change" +
               (" ON audit_events" if op.get_bind().dialect.name == "postgresql" else ""))
    if op.get_bind().dialect.name == "postgresql":
        op.execute("DROP FUNCTION keyhouse_place_change()")
        op.execute("DROP SEQUENCE audit_events_feed_position_seq")
    op.drop_index("ix_audit_org_feed", table_name="audit_events")
    op.drop_column("audit_events", "feed_position")
