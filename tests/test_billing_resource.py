"""Billing resources: get, upsert with a client-chosen id, delete; sort and filter on every field."""

import pytest

from tests.helpers import API, problem_of
from tests.helpers import create_billing_key as create


def test_get_put_delete(client, world):
    me = world.acme_admin
    r = client.put(f"{API}/api-keys/ci.bot@acme~1", json={"description": "CI", "apiUser": "ci"}, headers=me.billing)
    assert r.status_code == 201
    created = r.json()
    assert created["id"] == "ci.bot@acme~1" and created["secretKey"].startswith("kh_")
    assert created["_links"][0]["href"] == "/api/v1/api-keys/ci.bot%40acme~1"

    again = client.put(f"{API}/api-keys/ci.bot@acme~1", json={"description": "CI v2", "type": "secret"},
                       headers=me.billing)
    assert again.status_code == 200 and "secretKey" not in again.json()
    assert again.json()["description"] == "CI v2" and "apiUser" not in again.json()  # PUT replaces

    got = client.get(f"{API}/api-keys/ci.bot@acme~1", headers=me.billing)
    assert got.status_code == 200 and got.json()["description"] == "CI v2" and "secretKey" not in got.json()
    # the secret from the first PUT still works: an update does not rotate it
    assert client.get(f"{API}/api-keys", headers={"REB-APIKEY": created["secretKey"]}).status_code == 200

    assert client.delete(f"{API}/api-keys/ci.bot@acme~1", headers=me.billing).status_code == 204
    problem_of(client.get(f"{API}/api-keys/ci.bot@acme~1", headers=me.billing), 404)
    problem_of(client.delete(f"{API}/api-keys/ci.bot@acme~1", headers=me.billing), 404)
    assert client.get(f"{API}/api-keys", headers={"REB-APIKEY": created["secretKey"]}).status_code == 401


def test_put_on_a_deleted_id_makes_a_new_key_and_the_old_secret_stays_dead(client, world):
    me = world.acme_admin
    old = client.put(f"{API}/api-keys/reused", json={"description": "one"}, headers=me.billing).json()
    client.delete(f"{API}/api-keys/reused", headers=me.billing)
    new = client.put(f"{API}/api-keys/reused", json={"description": "two"}, headers=me.billing)
    assert new.status_code == 201 and new.json()["secretKey"] != old["secretKey"]
    assert client.get(f"{API}/api-keys", headers={"REB-APIKEY": old["secretKey"]}).status_code == 401
    assert client.get(f"{API}/api-keys", headers={"REB-APIKEY": new.json()["secretKey"]}).status_code == 200


def test_same_id_in_two_organizations_are_two_keys(client, world):
    a = client.put(f"{API}/api-keys/shared", json={"description": "acme"}, headers=world.acme_admin.billing)
    b = client.put(f"{API}/api-keys/shared", json={"description": "globex"}, headers=world.globex_admin.billing)
    assert (a.status_code, b.status_code) == (201, 201)
    assert client.get(f"{API}/api-keys/shared", headers=world.acme_admin.billing).json()["description"] == "acme"
    client.delete(f"{API}/api-keys/shared", headers=world.globex_admin.billing)
    assert client.get(f"{API}/api-keys/shared", headers=world.acme_admin.billing).status_code == 200


def test_members_manage_only_their_own(client, world):
    admin_key = create(client, world.acme_admin, description="admin's")["id"]
    problem_of(client.get(f"{API}/api-keys/{admin_key}", headers=world.acme_member.billing), 404)
    problem_of(client.delete(f"{API}/api-keys/{admin_key}", headers=world.acme_member.billing), 404)
    # As GET answers: another user's key does not exist for a member (issue 12; it was a telling 403).
    problem_of(client.put(f"{API}/api-keys/{admin_key}", json={"description": "mine now"},
                          headers=world.acme_member.billing), 404)
    assert client.get(f"{API}/api-keys/{admin_key}",
                      headers=world.acme_admin.billing).json()["description"] == "admin's"
    mine = create(client, world.acme_member, description="m")["id"]
    assert client.get(f"{API}/api-keys/{mine}", headers=world.acme_admin.billing).status_code == 200


@pytest.mark.parametrize("bad_id", ["has space", "x" * 51, "semi;colon", "percent%25", "Í³"])
def test_ids_are_limited_to_50_word_characters(client, world, bad_id):
    r = client.put(f"{API}/api-keys/{bad_id}", json={"description": "x"}, headers=world.acme_admin.billing)
    assert problem_of(r, 400)["invalidFields"][0]["field"] == "id"


@pytest.mark.parametrize("field", ["id", "description", "type", "apiUser", "createdTime", "updatedTime"])
def test_sort_by_every_listed_field_both_ways(client, world, field):
    for i, (description, type_, user) in enumerate([("b", "secret", "x"), ("a", "publishable", "z"), ("c", "secret",
                                                                                                      "y")]):
        client.put(f"{API}/api-keys/k{i}", json={"description": description, "type": type_, "apiUser": user},
                   headers=world.acme_admin.billing)
    up = client.get(f"{API}/api-keys?sort={field}&filter=id:k0,k1,k2", headers=world.acme_admin.billing).json()
    down = client.get(f"{API}/api-keys?sort=-{field}&filter=id:k0,k1,k2", headers=world.acme_admin.billing).json()
    assert [k[field] for k in up] == sorted(k[field] for k in up)
    assert [k[field] for k in down] == sorted((k[field] for k in down), reverse=True)
    if field not in ("type", "createdTime", "updatedTime"):  # two secrets tie; so can three quick PUTs
        assert [k["id"] for k in down] == [k["id"] for k in reversed(up)]


@pytest.mark.parametrize("expression, expected", [
    ("id:K1", ["k1"]),
    ("type:publishable", ["k1"]),
    ("apiUser:x,y", ["k0", "k2"]),
    ("description:a;type:secret", []),
])
def test_filter_on_every_filterable_field(client, world, expression, expected):
    for i, (description, type_, user) in enumerate([("b", "secret", "x"), ("a", "publishable", "z"), ("c", "secret",
                                                                                                      "y")]):
        client.put(f"{API}/api-keys/k{i}", json={"description": description, "type": type_, "apiUser": user},
                   headers=world.acme_admin.billing)
    r = client.get(f"{API}/api-keys?sort=id&filter={expression}", headers=world.acme_admin.billing)
    assert [k["id"] for k in r.json()] == expected


def test_official_client_conventions(client, world):
    """What the official billing JS SDK sends: trailing slash, comma-joined sort, `+` and `%3B` in filters,
    and what it reads: `detail` and `invalidFields` on 422."""
    me = world.acme_admin
    assert client.post(f"{API}/api-keys/", json={"description": "Nightly Build"}, headers=me.billing).status_code == 201
    r = client.get(f"{API}/api-keys?limit=10&offset=0&sort=-createdTime,description"
                   f"&filter=description%3ANightly+Build%3Btype%3Asecret", headers=me.billing)
    assert [k["description"] for k in r.json()] == ["Nightly Build"]
    assert {"pagination-total", "pagination-limit", "pagination-offset"} <= set(r.headers)
    bad = client.post(f"{API}/api-keys/", json={"description": ""}, headers=me.billing)
    body = problem_of(bad, 422)
    assert body["detail"] and body["invalidFields"] == [{"field": "description",
                                                         "message": body["invalidFields"][0]["message"]}]
