"""PostgreSQL: every write that can change a presented key's credential NOTIFYs `keyhouse_writes`.

Each keyhouse process keeps the credentials it looked up (keyhouse.store.session.Store) while its listener
hears this channel, and drops them all on each notice. A trigger, not the application, sends it, so that
every writer is heard: every worker and host, the CLI, and a change made by hand in SQL. A NOTIFY is
delivered when its transaction commits, and never if it rolls back.

The columns are those the credential lookups read (keyhouse.store.credentials): an UPDATE of anything else
of a key (its last use, written every few seconds) drops nothing. tests/test_store.py holds the list to
the lookups.

Revision ID: 0010
Revises: 0009
"""

from alembic import op

revision = '0010'
down_revision = '0009'
branch_labels = None
depends_on = None

CHANNEL = "keyhouse_writes"
# What the lookups read of a key: a write to any other column changes no credential.
KEY_COLUMNS = ("pk", "id", "key_hash", "secret_version", "organization_id", "user_id", "type", "permissions",
               "allowed_ips", "expires_at", "revoked_at", "description", "owner_id", "meta",
               "credits_remaining", "credits_refill_amount", "credits_refill_seconds", "credits_refilled_at",
               "verify_limit", "verify_window_seconds")
TRIGGERS = {
    "api_keys": f"INSERT OR DELETE OR TRUNCATE OR UPDATE OF {', '.join(KEY_COLUMNS)}",
    "users": "INSERT OR DELETE OR TRUNCATE OR UPDATE",
    "retired_secrets": "INSERT OR DELETE OR TRUNCATE OR UPDATE",
}


def upgrade() -> None:
    if op.get_bind().dialect.name != "postgresql":
        return
    op.execute(f"""
        CREATE FUNCTION keyhouse_notify_write() RETURNS trigger LANGUAGE plpgsql AS $$
        BEGIN
            PERFORM pg_notify('{CHANNEL}', '');
            RETURN NULL;
        END $$""")
    for table, events in TRIGGERS.items():
        op.execute(f"CREATE TRIGGER keyhouse_notify_write AFTER {events} ON {table} "
                   "FOR EACH STATEMENT EXECUTE FUNCTION keyhouse_notify_write()")


def downgrade() -> None:
    if op.get_bind().dialect.name != "postgresql":
        return
    for table in TRIGGERS:
        op.execute(f"DROP TRIGGER keyhouse_notify_write ON {table}")
    op.execute("DROP FUNCTION keyhouse_notify_write()")
