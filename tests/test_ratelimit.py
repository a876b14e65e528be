"""Rate limits per key and per organization: 429 in each family's envelope, shared through Redis."""

import os

import pytest

from tests.conftest import add_actor, add_organization, make_app

API = "/api/v1"
REDIS_URL = os.environ.get("KEYHOUSE_TEST_REDIS_URL")


@pytest.fixture
def limited(tmp_path):
    app = make_app(tmp_path, rate_limit="3/minute", organization_rate_limit="5/minute")
    org = add_organization(app, "acme")
    yield app, add_actor(app, org, "a@acme.test", "admin"), add_actor(app, org, "b@acme.test", "admin")
    app.runtime.store.dispose()


def test_the_key_limit_is_429_with_headers_in_every_family(limited):
    app, a, b = limited
    with app.test_client() as client:
        for _ in range(3):
            assert client.get(f"{API}/api-keys", headers=a.billing).status_code == 200
        billing = client.get(f"{API}/api-keys", headers=a.billing)
        cloud = client.get(f"{API}/users/auth/keys", headers=a.cloud)
        workspace = client.get(f"{API}/user/api-keys", headers=a.bearer)
        for r in (billing, cloud, workspace):
            assert r.status_code == 429
            assert r.headers["X-RateLimit-Limit"] == "3" and r.headers["X-RateLimit-Remaining"] == "0"
            assert 1 <= int(r.headers["Retry-After"]) <= 60
        assert billing.json()["status"] == 429
        assert cloud.headers["x-cloud-error-codes"] == "root.rate_limited"
        assert workspace.json()["type"] == "rate_limited"
        # another key of the organization still has its own allowance
        assert client.get(f"{API}/api-keys", headers=b.billing).status_code == 200


def test_the_organization_limit_binds_all_its_keys(limited):
    app, a, b = limited
    with app.test_client() as client:
        statuses = [client.get(f"{API}/api-keys", headers=k.billing).status_code for k in (a, b, a, b, a)]
        assert statuses == [200] * 5
        r = client.get(f"{API}/api-keys", headers=b.billing)
        assert r.status_code == 429 and r.headers["X-RateLimit-Limit"] == "5"


def test_verify_says_rate_limited_when_the_verified_key_is_spent(limited):
    app, a, b = limited
    with app.test_client() as client:
        for _ in range(3):
            client.get(f"{API}/api-keys", headers=b.billing)
        r = client.post(f"{API}/keys/verify", json={"key": b.key}, headers=a.bearer)
        assert r.status_code == 200 and r.json()["code"] == "RATE_LIMITED" and r.json()["valid"] is False


@pytest.mark.skipif(not REDIS_URL, reason="needs Redis (KEYHOUSE_TEST_REDIS_URL); scripts/test sets it, CI requires it")
def test_workers_share_limits_through_redis(tmp_path):
    from keyhouse.app import create_app
    from keyhouse.config import Settings
    from tests.conftest import SECRET

    first = make_app(tmp_path, rate_limit="4/minute", redis_url=REDIS_URL)
    second = create_app(Settings(database_url=str(first.runtime.store.engine.url.render_as_string(hide_password=False)),
                                 secret=SECRET, rate_limit="4/minute", redis_url=REDIS_URL))
    actor = add_actor(first, add_organization(first, "shared"), "s@x.test", "admin")
    with first.test_client() as one, second.test_client() as two:
        statuses = [c.get(f"{API}/api-keys", headers=actor.billing).status_code for c in (one, two, one, two)]
        assert statuses == [200] * 4
        assert two.get(f"{API}/api-keys", headers=actor.billing).status_code == 429
        assert one.get(f"{API}/api-keys", headers=actor.billing).status_code == 429


def test_an_unreachable_redis_fails_open(tmp_path):
    app = make_app(tmp_path, rate_limit="1/minute", redis_url="redis://127.0.0.1:1")
    actor = add_actor(app, add_organization(app, "o"), "o@x.test", "admin")
    with app.test_client() as client:
        for _ in range(3):
            assert client.get(f"{API}/api-keys", headers=actor.billing).status_code == 200


def test_a_client_guessing_keys_is_stopped_before_the_database(tmp_path, monkeypatch):
    from keyhouse import keys
    from keyhouse.store import queries

    app = make_app(tmp_path, refused_credential_limit="5/minute")
    actor = add_actor(app, add_organization(app, "guessed"), "g@guessed.test", "admin")
    lookups = []
    real = queries.credential_by_hash
    monkeypatch.setattr(queries, "credential_by_hash", lambda db, digest: lookups.append(digest) or real(db, digest))
    with app.test_client() as client:
        for _ in range(5):  # well-formed guesses: each is looked up, and refused
            assert client.get("/api/v1/api-keys", headers={"REB-APIKEY": keys.generate()}).status_code == 401
        assert len(lookups) == 5
        refused = client.get("/api/v1/api-keys", headers={"REB-APIKEY": keys.generate()})
        assert refused.status_code == 429 and int(refused.headers["Retry-After"]) >= 1
        assert "refused credentials" in refused.json()["detail"]
        assert len(lookups) == 5  # the sixth guess never reached the database
        # The address is refused whatever it presents, until the window passes; requests without a
        # credential are not counted, nor stopped (they are 401 at no cost).
        assert client.get("/api/v1/api-keys", headers={"REB-APIKEY": actor.key}).status_code == 429
        assert client.get("/api/v1/api-keys").status_code == 401
