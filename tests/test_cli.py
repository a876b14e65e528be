"""The command line, run as a user runs it."""

import json
import os
import subprocess
import sys

import pytest

from keyhouse.app import create_app
from keyhouse.config import Settings


def keyhouse(tmp_path, *args):
    env = {**os.environ, "KEYHOUSE_DATABASE_URL": f"sqlite:///{tmp_path}/cli.db",
           "KEYHOUSE_SECRET_FILE": str(tmp_path / "secret")}
    done = subprocess.run([sys.executable, "-m", "keyhouse.cli", *args], env=env, capture_output=True, text=True,
                          timeout=60)
    return done.returncode, json.loads(done.stdout.strip().splitlines()[-1])


def test_bootstrap_then_users_create_then_the_keys_work(tmp_path):
    code, boot = keyhouse(tmp_path, "bootstrap", "--organization", "acme", "--email", "root@acme.test")
    assert code == 0 and set(boot) == {"organization_id", "user_id", "key"}
    code, member = keyhouse(tmp_path, "users", "create", "--organization", boot["organization_id"],
                            "--email", "m@acme.test", "--role", "member")
    assert code == 0 and member["role"] == "member" and member["organization_id"] == boot["organization_id"]

    secret = (tmp_path / "secret").read_bytes().strip()
    assert oct((tmp_path / "secret").stat().st_mode & 0o777) == "0o600"
    app = create_app(Settings(database_url=f"sqlite:///{tmp_path}/cli.db", secret=secret))
    with app.test_client() as client:
        r = client.get(f"/api/v1/users/{member['user_id']}/auth/keys", headers={"Authorization": f"ApiKey {boot['key']}"})
        assert r.status_code == 200 and len(r.json()["keys"]) == 1
        r = client.get("/api/v1/user/api-keys", headers={"Authorization": f"Bearer {member['key']}"})
        assert r.status_code == 200


@pytest.mark.parametrize("args, message", [
    (("users", "create", "--organization", "nope", "--email", "x@y", "--role", "admin"), "no organization"),
])
def test_cli_errors_are_json_and_nonzero(tmp_path, args, message):
    code, out = keyhouse(tmp_path, *args)
    assert code == 1 and message in out["error"]


def test_duplicate_email_is_refused(tmp_path):
    keyhouse(tmp_path, "bootstrap", "--organization", "acme", "--email", "root@acme.test")
    code, out = keyhouse(tmp_path, "bootstrap", "--organization", "other", "--email", "root@acme.test")
    assert code == 1 and "already exists" in out["error"]
