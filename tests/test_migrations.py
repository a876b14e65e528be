"""The migrations make exactly the schema the models describe, and the live-key counter stays true."""

import random
from datetime import UTC

from alembic.autogenerate import compare_metadata
from alembic.runtime.migration import MigrationContext
from sqlalchemy import func, select

from keyhouse import keys
from keyhouse.store import api_keys, credentials
from keyhouse.store.models import ApiKey, Base, LiveKeyCount
from keyhouse.store.session import Store
from tests.conftest import SECRET, database_url, issue_key, migrated


def test_migrations_match_the_models(tmp_path):
    store = Store(migrated(database_url(tmp_path)))
    with store.engine.connect() as connection:
        differences = compare_metadata(MigrationContext.configure(connection), Base.metadata)
    assert differences == []
    catalog = ("SELECT name FROM sqlite_master WHERE type = 'index'" if store.engine.dialect.name == "sqlite"
               else "SELECT indexname FROM pg_indexes WHERE schemaname = current_schema()")
    with store.engine.connect() as connection:
        names = {row[0] for row in connection.exec_driver_sql(catalog)}
    assert {i.name for i in ApiKey.__table__.indexes} <= names
    store.dispose()


def test_the_live_key_counter_follows_creates_revokes_and_reissues(app, world):
    store = app.runtime.store
    org, user = world.acme_admin.organization_id, world.acme_admin.user_id
    rng = random.Random(7)
    with store.session() as s:
        rows = [issue_key(s, organization_id=org, user_id=user, description=f"k{i}")[0]
                for i in range(30)]
        api_keys.revoke_keys(s, rng.sample(rows, 12), actor=None)
        api_keys.revoke_keys(s, rows[:5], actor=None)  # revoking twice counts once
        for row in [r for r in rows if r.revoked_at is not None][:3]:
            new = keys.new(SECRET)
            api_keys.reissue_key(s, api_keys.Hashed(new.hash, new.hint), row, actor=None)
    with store.session() as s:
        counted = s.scalar(select(func.count()).select_from(ApiKey).where(
            ApiKey.organization_id == org, ApiKey.revoked_at.is_(None)))
        assert s.scalar(select(func.sum(LiveKeyCount.live)).where(LiveKeyCount.organization_id == org)) == counted
        total, _ = api_keys.page_keys(s, org, owner_id=None, match=[], order=[("created_at", True)], limit=1, offset=0)
        assert total == counted


def test_0003_keeps_a_grace_window_and_folds_the_keys_already_stored(tmp_path):
    """From 0002: a key inside a reroll's grace keeps its previous secret (now a retired secret, still
    accepted until the window ends), and stored text gets its folded form for the filters."""
    from datetime import datetime, timedelta

    from alembic import command
    from sqlalchemy import text

    from keyhouse.store.models import RetiredSecret
    from keyhouse.store.session import _alembic

    store = Store(database_url(tmp_path))
    with store.engine.begin() as connection:
        command.upgrade(_alembic(connection), "0002")
        until = datetime.now(UTC).replace(tzinfo=None) + timedelta(hours=1)
        connection.execute(text("INSERT INTO organizations (id, name, created_at, live_keys) "
                                "VALUES ('o', 'o', :t, 1)"), {"t": until})
        connection.execute(text("INSERT INTO users (id, organization_id, email, role, created_at) "
                                "VALUES ('u', 'o', 'u@o.test', 'admin', :t)"), {"t": until})
        connection.execute(text(
            "INSERT INTO api_keys (id, organization_id, user_id, description, type, permissions, allow_self_revoke, "
            "key_hash, key_hint, previous_key_hash, previous_valid_until, created_at, updated_at, api_user) "
            "VALUES ('MiXeD', 'o', 'u', 'ÄRGER Straße', 'secret', '[]', false, 'new-hash', 'kh_…', 'old-hash', :t, "
            ":t, :t, 'ÉLODIE')"), {"t": until})
    store.upgrade()
    with store.session() as s:
        key = s.scalars(select(ApiKey)).one()
        assert (key.id_folded, key.description_folded, key.api_user_folded) == ("mixed", "ärger strasse", "élodie")
        assert key.secret_version == 1
        retired = s.scalars(select(RetiredSecret)).one()
        assert (retired.key_hash, retired.key_pk, retired.version) == ("old-hash", key.pk, 0)
        assert retired.valid_until.replace(tzinfo=None) == until.replace(microsecond=retired.valid_until.microsecond)
        credential = credentials.credential_by_hash(s, "old-hash")
        assert credential.key_id == "MiXeD" and credential.retired_until > datetime.now(UTC)
    store.dispose()


def test_the_trails_ids_go_past_32_bits(app, world):
    """Migrations 0009 and 0011: an event can take an id beyond 2**31 (on PostgreSQL the column and its
    sequence are bigint; SQLite's row id always was), and so can its place in the change feed, which the
    feed serves as a cursor (SQLite places a change at its id; PostgreSQL numbers it from a sequence)."""
    from sqlalchemy import text

    from keyhouse.store import trail
    from keyhouse.store.models import AuditEvent, utcnow

    big = 2**31 + 7
    with app.runtime.store.session() as s:
        if s.bind.dialect.name == "postgresql":
            s.execute(text("SELECT setval('audit_events_feed_position_seq', :at)"), {"at": big - 1})
        s.add(AuditEvent(id=big, organization_id=world.acme_admin.organization_id, at=utcnow(),
                         action="key.revoked", target_type="api_key", target_id="k"))
    with app.runtime.store.session() as s:
        found = trail.changes_after(s, world.acme_admin.organization_id, big - 1, 10, utcnow().replace(year=2000))
    assert [row[0] for row in found.rows] == [big]
