"""Real threads against a real `keyhouse serve --workers 2`: nothing acknowledged is lost, nothing is
made twice, and what one worker does every other sees at once."""

from concurrent.futures import ThreadPoolExecutor

import httpx
import pytest

THREADS = 24


@pytest.fixture(scope="module")
def serving(served_once):
    """One `serve --workers 2` for the module: starting it is most of a test's time, and each test races
    over objects of its own."""
    key, start = served_once
    return start("--workers", "2", "--allow-unshared-limits", KEYHOUSE_RATE_LIMIT="100000/second"), key


@pytest.fixture
def server(serving):
    base, key = serving
    with httpx.Client(base_url=base, timeout=30) as client:
        yield client, key


def parallel(calls):
    with ThreadPoolExecutor(THREADS) as pool:
        return list(pool.map(lambda call: call(), calls))


def test_parallel_creates_are_all_kept_and_distinct(server):
    client, key = server
    before = int(client.get("/api-keys?limit=0", headers={"REB-APIKEY": key}).headers["Pagination-Total"])
    made = parallel([lambda i=i: client.post("/api-keys", json={"description": f"p{i}"}, headers={"REB-APIKEY": key})
                     for i in range(60)])
    assert [r.status_code for r in made] == [201] * 60
    ids = {r.json()["id"] for r in made}
    secrets = {r.json()["secretKey"] for r in made}
    assert len(ids) == len(secrets) == 60
    totals = {client.get("/api-keys?limit=0",
                         headers={"REB-APIKEY": key}).headers["Pagination-Total"] for _ in range(10)}
    assert totals == {str(before + 60)}  # whichever worker answers
    checks = parallel([lambda s=s: client.get("/user/api-keys", headers={"Authorization": f"Bearer {s}"})
                       for s in list(secrets)[:20]])
    assert {r.status_code for r in checks} == {200}


def test_racing_upserts_of_one_id_make_one_object(server):
    client, key = server
    results = parallel([lambda i=i: client.put("/api-keys/raced", json={"description": f"v{i}"},
                                               headers={"REB-APIKEY": key}) for i in range(THREADS)])
    statuses = sorted(r.status_code for r in results)
    assert statuses == [200] * (THREADS - 1) + [201]
    listed = client.get("/api-keys?filter=id:raced", headers={"REB-APIKEY": key})
    assert listed.headers["Pagination-Total"] == "1"
    assert listed.json()[0]["description"] in {f"v{i}" for i in range(THREADS)}


def test_a_revocation_is_seen_by_every_worker_at_once(server):
    client, key = server
    made = client.post("/api-keys", json={"description": "doomed"}, headers={"REB-APIKEY": key}).json()
    secret = {"REB-APIKEY": made["secretKey"]}
    assert client.get("/api-keys", headers=secret).status_code == 200
    assert client.delete(f"/api-keys/{made['id']}", headers={"REB-APIKEY": key}).status_code == 204
    after = parallel([lambda: client.get("/api-keys", headers=secret) for _ in range(40)])
    assert {r.status_code for r in after} == {401}


def test_racing_rerolls_and_revokes_leave_no_half_written_key(server):
    client, key = server
    made = client.post("/api-keys", json={"description": "contended"}, headers={"REB-APIKEY": key}).json()
    admin = {"Authorization": f"Bearer {key}"}
    calls = [lambda: client.post(f"/keys/{made['id']}/reroll", json={"grace_period_seconds": 0}, headers=admin)
             for _ in range(10)]
    calls.append(lambda: client.delete(f"/api-keys/{made['id']}", headers={"REB-APIKEY": key}))
    results = parallel(calls)
    assert {r.status_code for r in results} <= {201, 204, 404}
    # the key ends revoked: no secret it ever had authenticates, and it is gone from the lists
    secrets = [made["secretKey"]] + [r.json()["key"] for r in results if r.status_code == 201]
    assert {client.get("/api-keys", headers={"REB-APIKEY": s}).status_code for s in secrets} == {401}
    assert client.get(f"/api-keys/{made['id']}", headers={"REB-APIKEY": key}).status_code == 404


def test_racing_verifies_spend_each_credit_once(serving):
    """2 workers x 50 verifies of a key with 60 credits: exactly 60 VALID, on either database."""
    base, key = serving
    admin = {"Authorization": f"Bearer {key}"}
    with httpx.Client(base_url=base, timeout=30) as client:
        made = client.post("/keys", json={"name": "metered", "credits": {"remaining": 60}}, headers=admin)
        assert made.status_code == 201, made.text
        results = parallel([lambda: client.post("/keys/verify", json={"key": made.json()["key"]}, headers=admin)
                            for _ in range(100)])
        codes = [r.json()["code"] for r in results]
        assert (codes.count("VALID"), codes.count("USAGE_EXCEEDED")) == (60, 40)
        spent = sorted(r.json()["remaining"] for r in results if r.json()["code"] == "VALID")
        assert spent == list(range(60))  # every count from 59 down to 0, each once
        assert client.get(f"/keys/{made.json()['id']}", headers=admin).json()["credits"]["remaining"] == 0
