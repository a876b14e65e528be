"""The command line, run as a user runs it."""

import json
import os
import subprocess
import sys

import pytest

from keyhouse.app import create_app
from keyhouse.config import Settings
from keyhouse.store.session import Store
from tests.conftest import database_url


@pytest.fixture
def db(tmp_path):
    return database_url(tmp_path)


def keyhouse(tmp_path, db, *args):
    env = {**os.environ, "KEYHOUSE_DATABASE_URL": db, "KEYHOUSE_SECRET_FILE": str(tmp_path / "secret")}
    done = subprocess.run([sys.executable, "-m", "keyhouse.cli", *args], env=env, capture_output=True, text=True,
                          timeout=60)
    return done.returncode, json.loads(done.stdout.strip().splitlines()[-1])


def test_bootstrap_then_users_create_then_the_keys_work(tmp_path, db):
    code, boot = keyhouse(tmp_path, db, "bootstrap", "--organization", "acme", "--email", "root@acme.test")
    assert code == 0 and set(boot) == {"organization_id", "user_id", "key"}
    code, member = keyhouse(tmp_path, db, "users", "create", "--organization", boot["organization_id"],
                            "--email", "m@acme.test", "--role", "member")
    assert code == 0 and member["role"] == "member" and member["organization_id"] == boot["organization_id"]

    secret = (tmp_path / "secret").read_bytes().strip()
    assert oct((tmp_path / "secret").stat().st_mode & 0o777) == "0o600"
    app = create_app(Settings(database_url=db, secret=secret))
    with app.test_client() as client:
        r = client.get(f"/api/v1/users/{member['user_id']}/auth/keys",
                       headers={"Authorization": f"ApiKey {boot['key']}"})
        assert r.status_code == 200 and len(r.json()["keys"]) == 1
        r = client.get("/api/v1/user/api-keys", headers={"Authorization": f"Bearer {member['key']}"})
        assert r.status_code == 200


@pytest.mark.parametrize("args, message", [
    (("users", "create", "--organization", "nope", "--email", "x@y", "--role", "admin"), "no organization"),
])
def test_cli_errors_are_json_and_nonzero(tmp_path, db, args, message):
    keyhouse(tmp_path, db, "db", "upgrade")
    code, out = keyhouse(tmp_path, db, *args)
    assert code == 1 and message in out["error"]


def test_duplicate_email_is_refused(tmp_path, db):
    keyhouse(tmp_path, db, "bootstrap", "--organization", "acme", "--email", "root@acme.test")
    code, out = keyhouse(tmp_path, db, "bootstrap", "--organization", "other", "--email", "root@acme.test")
    assert code == 1 and "already exists" in out["error"]


def test_db_upgrade_brings_an_empty_database_to_head(tmp_path, db):
    code, out = keyhouse(tmp_path, db, "db", "upgrade")
    assert code == 0 and out == {"revision": Store.head()}
    assert keyhouse(tmp_path, db, "db", "upgrade") == (0, {"revision": Store.head()})  # idempotent


def test_serve_and_users_refuse_an_out_of_date_schema(tmp_path, db):
    code, out = keyhouse(tmp_path, db, "serve", "--port", "1")
    assert code == 1 and "keyhouse db upgrade" in out["error"] and "has no keyhouse schema" in out["error"]
    code, out = keyhouse(tmp_path, db, "users", "create", "--organization", "o", "--email", "e@x", "--role", "admin")
    assert code == 1 and "keyhouse db upgrade" in out["error"]


def test_bootstrap_refuses_an_older_schema_but_fills_an_empty_one(tmp_path, db):
    store = Store(db)
    store.upgrade()
    with store.engine.begin() as connection:  # pretend the database was made by an older keyhouse
        connection.exec_driver_sql("UPDATE alembic_version SET version_num = 'older'")
    store.dispose()
    code, out = keyhouse(tmp_path, db, "bootstrap", "--organization", "acme", "--email", "root@acme.test")
    assert code == 1 and "is at schema revision older" in out["error"]


def test_the_app_refuses_an_out_of_date_schema(tmp_path, db):
    from keyhouse.store.session import SchemaOutOfDate

    with pytest.raises(SchemaOutOfDate, match="keyhouse db upgrade"):
        create_app(Settings(database_url=db, secret=b"s"))


def test_keys_load_bulk_inserts_counted_unusable_keys(tmp_path, db):
    code, boot = keyhouse(tmp_path, db, "bootstrap", "--organization", "acme", "--email", "root@acme.test")
    code, out = keyhouse(tmp_path, db, "keys", "load", "--organization", boot["organization_id"], "--user",
                         boot["user_id"], "--count", "2500", "--batch", "1000")
    assert code == 0 and out["loaded"] == 2500
    secret = (tmp_path / "secret").read_bytes().strip()
    app = create_app(Settings(database_url=db, secret=secret))
    with app.test_client() as client:
        r = client.get("/api/v1/api-keys?limit=3&sort=description", headers={"REB-APIKEY": boot["key"]})
        assert r.headers["Pagination-Total"] == "2501"
        assert [k["description"] for k in r.json()] == ["first key of root@acme.test", "synthetic 0000000",
                                                         "synthetic 0000001"]
        filtered = client.get("/api/v1/api-keys?filter=type:publishable&limit=0", headers={"REB-APIKEY": boot["key"]})
        assert filtered.headers["Pagination-Total"] == "250"
    code, out = keyhouse(tmp_path, db, "keys", "load", "--organization", boot["organization_id"], "--user", "nobody",
                         "--count", "1")
    assert code == 1 and "no user" in out["error"]


def test_several_workers_without_redis_are_refused_unless_allowed(tmp_path, db):
    """Without Redis each worker counts every limit on its own (refused credentials per address too):
    `serve --workers 2` says so and does not start, unless told that is what is wanted."""
    keyhouse(tmp_path, db, "db", "upgrade")
    env = {**os.environ, "KEYHOUSE_DATABASE_URL": db, "KEYHOUSE_SECRET_FILE": str(tmp_path / "secret")}
    env.pop("KEYHOUSE_REDIS_URL", None)
    refused = subprocess.run([sys.executable, "-m", "keyhouse.cli", "serve", "--workers", "2", "--port", "1"],
                             env=env, capture_output=True, text=True, timeout=60)
    assert refused.returncode == 1
    assert "KEYHOUSE_REDIS_URL" in json.loads(refused.stdout)["error"]
    assert "--allow-unshared-limits" in json.loads(refused.stdout)["error"]
