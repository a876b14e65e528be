"""The store: what is kept, and what queries return."""

import time
from pathlib import Path

import pytest
from sqlalchemy import select

from keyhouse.store import api_keys, credentials, organizations
from keyhouse.store.models import ApiKey
from tests.conftest import SECRET, issue_key


def _everything_stored(app, tmp_path) -> bytes:
    store = app.runtime.store
    if store.engine.dialect.name == "sqlite":
        store.dispose()  # flush the WAL into the file
        database = Path(store.engine.url.database)
        return b"".join(p.read_bytes() for p in database.parent.glob(database.name + "*"))
    from sqlalchemy import inspect, text

    with store.engine.connect() as connection:
        tables = inspect(connection).get_table_names()
        rows = [str(row) for table in tables for row in connection.execute(text(f'SELECT t::text FROM "{table}" t'))]
    return "\n".join(rows).encode()


def test_plaintext_is_never_written_to_the_database(app, world, tmp_path):
    with app.runtime.store.session() as s:
        _, plaintext = issue_key(s, organization_id=world.acme_admin.organization_id,
                                         user_id=world.acme_admin.user_id, description="probe")
    raw = _everything_stored(app, tmp_path)
    assert world.acme_admin.key_id.encode() in raw  # the probe reads what is stored
    for key in (plaintext, world.acme_admin.key, world.globex_admin.key):
        assert key.encode() not in raw
        assert key[3:].encode() not in raw


def test_credential_lookup_by_hash(app, world):
    from keyhouse import keys

    with app.runtime.store.session() as s:
        found = credentials.credential_by_hash(s, keys.hash_key(SECRET, world.acme_member.key))
        missing = credentials.credential_by_hash(s, keys.hash_key(SECRET, keys.generate()))
    assert found.user_id == world.acme_member.user_id and found.role == "member"
    assert missing is None


def test_users_of_another_organization_do_not_exist(app, world):
    with app.runtime.store.session() as s:
        assert organizations.get_user(s, world.acme_admin.organization_id, world.acme_member.user_id) is not None
        assert organizations.get_user(s, world.acme_admin.organization_id, world.globex_admin.user_id) is None


def test_page_keys_counts_the_collection_not_the_page(app, world):
    org, user = world.acme_admin.organization_id, world.acme_admin.user_id
    with app.runtime.store.session() as s:
        for i in range(5):
            issue_key(s, organization_id=org, user_id=user, description=f"k{i}",
                              type="publishable" if i % 2 else "secret")
    with app.runtime.store.session() as s:
        total, rows = api_keys.page_keys(s, org, owner_id=None, match=[("type", ["PUBLISHABLE"])],
                                        order=[("description", False)], limit=1, offset=1)
    assert total == 2
    assert [r.description for r in rows] == ["k3"]


def test_one_statement_reads_run_without_a_transaction_and_the_others_within_one(app, world):
    """The hot lookups skip BEGIN and ROLLBACK (SQLite) or run in autocommit (PostgreSQL); a read of
    several statements keeps its snapshot."""
    from sqlalchemy import event

    from keyhouse import keys

    store, seen = app.runtime.store, []

    sqlite = store.engine.dialect.name == "sqlite"

    def statement(connection, _cursor, sql, *_args):
        driver = connection.connection.dbapi_connection
        seen.append((sql.split()[0].upper(), driver.in_transaction if sqlite else not driver.autocommit))

    event.listen(store.engine, "before_cursor_execute", statement)
    try:
        digest = keys.hash_key(SECRET, world.acme_member.key)
        found = store._read(credentials.credential_by_hash, digest)  # what `read` runs
        assert found is not None and found.user_id == world.acme_member.user_id
        one = list(seen)
        seen.clear()
        store._read(lambda c: [credentials.credential_by_hash(c, digest), credentials.credential_by_hash(c, digest)])
        several = list(seen)
    finally:
        event.remove(store.engine, "before_cursor_execute", statement)
    assert one == [("SELECT", False)]  # no BEGIN before it, no transaction around it
    # SQLite's BEGIN is keyhouse's own statement; psycopg begins implicitly.
    assert several == ([("BEGIN", False)] if sqlite else []) + [("SELECT", True), ("SELECT", True)]


def test_credentials_are_kept_between_commits_and_a_commit_anywhere_drops_them(client, world, app):
    """The lookups of presented keys are answered from memory until something that can change them
    commits: a second request runs no lookup, and a revocation written by anyone (here: another
    connection, straight to the database, as by hand in SQL) drops them. SQLite tells at once (PRAGMA
    data_version, read before each answer); PostgreSQL tells by the NOTIFY a trigger sends as the write
    commits (migration 0010), dropped as the listener hears it."""
    from sqlalchemy import create_engine, event, update

    from keyhouse.store.models import ApiKey, utcnow

    admin = world.acme_admin
    sqlite = app.runtime.store.engine.dialect.name == "sqlite"
    lookups = []

    def seen(_conn, _cursor, statement, *_):
        if "FROM api_keys" in statement and "key_hash" in statement:
            lookups.append(statement)

    if not sqlite:  # the listener first proves it hears the store's NOTIFYs
        _until(lambda: app.runtime.changes.state == "listening", "the listener to hear its probe")
    assert client.get("/api/v1/api-keys", headers=admin.billing).status_code == 200
    engines = [app.runtime.store.engine] + [e.sync_engine for e in (app.runtime.store._loop_engine or ())[1:]]  # noqa: SLF001
    for engine in engines:
        event.listen(engine, "before_cursor_execute", seen)
    other = create_engine(app.runtime.store.engine.url)  # another engine: another process, as far as we know
    try:
        assert client.get("/api/v1/api-keys", headers=admin.billing).status_code == 200
        assert lookups == []
        with other.begin() as connection:
            connection.execute(update(ApiKey).where(ApiKey.id == admin.key_id).values(revoked_at=utcnow()))
        written = time.monotonic()
        if sqlite:
            assert client.get("/api/v1/api-keys", headers=admin.billing).status_code == 401
        else:
            _until(lambda: client.get("/api/v1/api-keys", headers=admin.billing).status_code == 401,
                   "the revocation to be seen")
            assert time.monotonic() - written < 0.5
        assert len(lookups) >= 1
    finally:
        for engine in engines:
            event.remove(engine, "before_cursor_execute", seen)
        other.dispose()


def _until(condition, what: str, seconds: float = 5.0) -> None:
    deadline = time.monotonic() + seconds
    while not condition():
        assert time.monotonic() < deadline, f"waited {seconds} s for {what}"
        time.sleep(0.005)


def test_the_trigger_names_every_column_a_credential_is_read_from():
    """Migration 0010's NOTIFY fires on an UPDATE of the columns it names: every api_keys column the
    credential lookups read must be among them, or a change to it would leave credentials kept."""
    import importlib

    from keyhouse.store import credentials

    trigger = importlib.import_module("keyhouse.migrations.versions.0010_credential_write_notify")
    read = {column.name for query in (credentials._CREDENTIAL_BY_HASH, credentials._RETIRED_BY_HASH,  # noqa: SLF001
                                      credentials._CREDENTIAL_BY_ID)  # noqa: SLF001
            for column in query.selected_columns if getattr(column, "table", None) is ApiKey.__table__}
    assert read and read <= set(trigger.KEY_COLUMNS), read - set(trigger.KEY_COLUMNS)
    assert set(trigger.TRIGGERS) >= {"api_keys", "users", "retired_secrets"}


def test_a_worker_opens_no_more_connections_to_a_server_database_than_its_budget(tmp_path):
    """KEYHOUSE_DATABASE_POOL_SIZE and KEYHOUSE_DATABASE_MAX_OVERFLOW bound each worker's connections."""
    from tests.conftest import POSTGRES_URL, make_app

    if not POSTGRES_URL:
        pytest.skip("a connection pool of a server database: the PostgreSQL leg runs this")
    app = make_app(tmp_path, database_pool_size=3, database_max_overflow=2)
    pool = app.runtime.store.engine.pool
    assert (pool.size(), pool._max_overflow) == (3, 2)  # noqa: SLF001 - QueuePool exposes no getter for it
    app.runtime.store.dispose()


def test_the_trail_is_pruned_past_its_retention_in_small_batches(app, world, monkeypatch):
    from datetime import timedelta

    from sqlalchemy import func, select

    from keyhouse import recorder
    from keyhouse.store import trail
    from keyhouse.store.models import AuditEvent, utcnow

    old, recent = utcnow() - timedelta(days=40), utcnow() - timedelta(days=1)
    event = {"organization_id": world.acme_admin.organization_id, "action": "token.issued", "target_type": "api_key"}
    with app.runtime.store.session() as s:
        trail.insert_events(s, [{**event, "at": old} for _ in range(2500)] + [{**event, "at": recent}] * 3)
    batches = []
    real = trail.prune_events
    monkeypatch.setattr(trail, "prune_events", lambda s, before, batch: batches.append(real(s, before, batch))
                        or batches[-1])
    assert app.runtime.recorder.prune_once(30 * 86_400) == 2500
    assert batches == [recorder.PRUNE_BATCH, recorder.PRUNE_BATCH, 500]
    with app.runtime.store.session() as s:
        left = s.scalars(select(AuditEvent.at).where(AuditEvent.action == "token.issued")).all()
        assert len(left) == 3 and s.scalar(select(func.min(AuditEvent.at))) >= recent - timedelta(seconds=1)


def test_the_feed_places_every_action_the_change_feed_serves(app, world):
    """The database's trigger (migration 0011, remade by every migration that adds a feed action) places
    (numbers, as they commit) the events of the change feed's actions, every one, or a new feed action
    would never be served; and no other event."""
    from keyhouse.store.models import AuditEvent
    from keyhouse.store.trail import FEED_ACTIONS

    organization = world.acme_admin.organization_id
    with app.runtime.store.session() as s:
        for action in [*sorted(FEED_ACTIONS), "key.created", "auth.failed"]:
            s.add(AuditEvent(organization_id=organization, action=action, target_type="api_key", target_id=action))
    with app.runtime.store.session() as s:
        placed = dict(s.execute(select(AuditEvent.action, AuditEvent.feed_position)
                                .where(AuditEvent.organization_id == organization)).all())
    assert {action for action, position in placed.items() if position is not None} == FEED_ACTIONS


def test_the_trail_keeps_at_least_what_the_change_feed_serves():
    from pydantic import ValidationError

    from keyhouse.config import Settings

    with pytest.raises(ValidationError, match="shorter than KEYHOUSE_CHANGE_FEED_RETENTION"):
        Settings(secret=b"s", audit_retention=60, change_feed_retention=3600)
    assert Settings(secret=b"s", audit_retention=86_400).audit_retention == 86_400


def test_expiry_is_decided_by_the_databases_clock_whatever_this_hosts_says(app, world, monkeypatch):
    """A host whose clock runs an hour ahead still takes a key that expires in half an hour (by the
    database's clock, which every host shares) as live, and one that expired a minute ago as expired."""
    from datetime import UTC, datetime, timedelta

    from keyhouse import verifier
    from keyhouse.store import models

    store = app.runtime.store
    if store.reads_inline:
        assert store.measure_clock() is None  # SQLite: the database's clock is this host's
        return
    true_now = datetime.now(UTC)
    monkeypatch.setattr(models, "_system_now", lambda: datetime.now(UTC) + timedelta(hours=1))
    try:
        offset = store.measure_clock()
        assert abs(offset + timedelta(hours=1)) < timedelta(seconds=1)
        assert abs(models.utcnow() - true_now) < timedelta(seconds=2)
        admin = world.acme_admin
        with store.session() as s:
            live, _ = issue_key(s, organization_id=admin.organization_id, user_id=admin.user_id,
                                description="live", expires_at=true_now + timedelta(minutes=30))
            gone, _ = issue_key(s, organization_id=admin.organization_id, user_id=admin.user_id,
                                description="gone", expires_at=true_now - timedelta(minutes=1))
        with store.reading() as s:
            assert verifier.state(credentials.credential_by_id(s, admin.organization_id, live.id),
                                  models.utcnow()) == "VALID"
            assert verifier.state(credentials.credential_by_id(s, admin.organization_id, gone.id),
                                  models.utcnow()) == "EXPIRED"
    finally:
        models.set_clock_offset(timedelta(0))
