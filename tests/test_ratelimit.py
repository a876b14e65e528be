"""Rate limits per key and per organization: 429 in each family's envelope, shared through Redis."""

import os

import pytest

from tests.conftest import add_actor, add_organization, make_app
from tests.helpers import API

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


def test_a_verified_keys_own_requests_do_not_spend_its_verifications(limited):
    """A key's request rate is its calls to keyhouse; being verified by a gateway is counted apart."""
    app, a, b = limited
    with app.test_client() as client:
        for _ in range(3):
            client.get(f"{API}/api-keys", headers=b.billing)
        assert client.get(f"{API}/api-keys", headers=b.billing).status_code == 429
        r = client.post(f"{API}/keys/verify", json={"key": b.key}, headers=a.bearer).json()
        assert (r["code"], r.get("rate_limit")) == ("VALID", None)


def test_gateways_verifying_one_key_share_no_default_limit(tmp_path):
    """Three gateways verifying one key 150 times: the server's per-key request rate (100/second) is each
    gateway's own, and verified keys have no default limit unless one is set."""
    app = make_app(tmp_path)
    org = add_organization(app, "acme")
    gateways = [add_actor(app, org, f"g{i}@acme.test", "admin") for i in range(3)]
    customer = add_actor(app, org, "c@acme.test", "member")
    with app.test_client() as client:
        codes = [client.post(f"{API}/keys/verify", json={"key": customer.key}, headers=g.bearer).json()["code"]
                 for _ in range(50) for g in gateways]
    assert codes == ["VALID"] * 150
    app.runtime.store.dispose()


def test_the_default_for_verified_keys_applies_when_set(tmp_path):
    app = make_app(tmp_path, verified_key_rate_limit="3/minute")
    org = add_organization(app, "acme")
    gateway, customer = add_actor(app, org, "g@acme.test", "admin"), add_actor(app, org, "c@acme.test", "member")
    with app.test_client() as client:
        verdicts = [client.post(f"{API}/keys/verify", json={"key": customer.key}, headers=gateway.bearer).json()
                    for _ in range(4)]
        assert [v["code"] for v in verdicts] == ["VALID"] * 3 + ["RATE_LIMITED"]
        assert [v["rate_limit"]["remaining"] for v in verdicts] == [2, 1, 0, 0]
        assert {v["rate_limit"]["limit"] for v in verdicts} == {3}
        assert client.get(f"{API}/api-keys", headers=customer.billing).status_code == 200  # its requests: apart
    app.runtime.store.dispose()


def _admits(item, previous, previous_expires_in, current, current_expires_in, after):
    """Whether the `limits` sliding window admits one more use `after` seconds from the moment the window
    was read (the storage's arithmetic: the previous window weighs while it overlaps; the current one
    becomes the previous when its window ends)."""
    from math import floor

    expiry = item.get_expiry()
    current_ends = current_expires_in - expiry
    if after < current_ends:
        weight = previous * max(0.0, previous_expires_in - after) / expiry + current
    else:
        weight = current * max(0.0, expiry - (after - current_ends)) / expiry
    return floor(weight) + 1 <= item.amount


def test_admitted_at_is_the_first_moment_the_window_admits_again():
    """Over many windows: at the time a verdict names the limiter admits, and a few milliseconds before it
    (when that is in the future) it still refuses: never early, never much late."""
    import random

    from keyhouse.ratelimit import admitted_at, per_window

    rng = random.Random(7)
    for _ in range(2000):
        limit, window = rng.randint(1, 20), rng.randint(1, 120)
        item = per_window(limit, window)
        current = rng.randint(0, limit)
        previous = rng.randint(0, limit)
        current_ends = rng.uniform(0, window)
        previous_expires_in = current_ends if previous else 0.0
        state = (previous, previous_expires_in, current, current_ends + window)
        at = admitted_at(item, *state, now=1000.0) - 1000.0
        assert _admits(item, *state, at), (limit, window, state, at)
        if at > 0.005:
            assert not _admits(item, *state, at - 0.005), (limit, window, state, at)


@pytest.mark.skipif(not REDIS_URL, reason="needs Redis (KEYHOUSE_TEST_REDIS_URL); scripts/test sets it, CI requires it")
def test_reset_at_in_a_verdict_is_never_early_through_redis(tmp_path):
    """A key limited to 3 per 2 s, in Redis: refused until the verdict's `reset_at` (to the millisecond),
    admitted at it."""
    import time
    from datetime import datetime

    app = make_app(tmp_path, redis_url=REDIS_URL)
    org = add_organization(app, "acme")
    admin = add_actor(app, org, "a@acme.test", "admin")
    with app.test_client() as client:
        key = client.post(f"{API}/keys", json={"name": "k", "rate_limit": {"limit": 3, "window_seconds": 2}},
                          headers=admin.bearer).json()

        def verify():
            return client.post(f"{API}/keys/verify", json={"key": key["key"]}, headers=admin.bearer).json()

        while (refused := verify())["code"] != "RATE_LIMITED":
            pass
        reset_at = refused["rate_limit"]["reset_at"]
        assert len(reset_at) == len("2026-12-05T09:14:23.611Z"), reset_at
        resets = datetime.fromisoformat(reset_at).timestamp()
        while time.time() < resets - 0.05:
            before = time.time()
            again = verify()
            if time.time() < resets:  # answered before the reset: still refused, at the same reset
                assert again["code"] == "RATE_LIMITED", (again, reset_at, before)
            time.sleep(0.1)
        time.sleep(max(0.0, resets - time.time()))
        assert verify()["code"] == "VALID"
    app.runtime.store.dispose()


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
    from keyhouse.store import credentials

    app = make_app(tmp_path, refused_credential_limit="5/minute")
    actor = add_actor(app, add_organization(app, "guessed"), "g@guessed.test", "admin")
    lookups = []
    real = credentials.credential_by_hash
    monkeypatch.setattr(credentials, "credential_by_hash",
                        lambda db, digest: lookups.append(digest) or real(db, digest))
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
