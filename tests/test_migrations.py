"""The migrations make exactly the schema the models describe, and the live-key counter stays true."""

import random

import pytest

from alembic.autogenerate import compare_metadata
from alembic.runtime.migration import MigrationContext
from sqlalchemy import func, select

from keyhouse.store import queries
from keyhouse.store.models import ApiKey, Base, Organization
from keyhouse.store.session import Store
from tests.conftest import SECRET, database_url, migrated


@pytest.mark.filterwarnings("ignore:Skipped unsupported reflection of expression-based index")
def test_migrations_match_the_models(tmp_path):
    store = Store(migrated(database_url(tmp_path)))
    with store.engine.connect() as connection:
        differences = compare_metadata(MigrationContext.configure(connection), Base.metadata)
    # Expression indexes (lower(...)) cannot be compared by reflection; everything else must match.
    differences = [d for d in differences if not (d[0] in ("add_index", "remove_index") and "lower" in d[1].name)]
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
        rows = [queries.issue_key(s, SECRET, organization_id=org, user_id=user, description=f"k{i}")[0]
                for i in range(30)]
        queries.revoke_keys(s, rng.sample(rows, 12), actor={})
        queries.revoke_keys(s, rows[:5], actor={})  # revoking twice counts once
        for row in [r for r in rows if r.revoked_at is not None][:3]:
            queries.reissue_key(s, SECRET, row)
    with store.session() as s:
        counted = s.scalar(select(func.count()).select_from(ApiKey).where(
            ApiKey.organization_id == org, ApiKey.revoked_at.is_(None)))
        assert s.scalar(select(Organization.live_keys).where(Organization.id == org)) == counted
        total, _ = queries.page_keys(s, org, owner_id=None, match=[], order=[("created_at", True)], limit=1, offset=0)
        assert total == counted
