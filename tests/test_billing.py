"""The billing family over HTTP: paging, sorting, filtering, creation, and problem details."""

import pytest

from tests.conftest import count_keys
from tests.helpers import API, problem_of
from tests.helpers import create_billing_key as create


def test_create_shows_the_secret_once_and_it_authenticates(client, world, app):
    created = create(client, world.acme_admin, description="Test", type="secret",
                     allowedIps=["192.0.2.10", "2001:db8::/32"], apiUser="ci-bot",
                     acl=[{"scope": {"organizationId": []}, "permissions": ["*"]}])
    assert created["type"] == "secret" and created["apiUser"] == "ci-bot"
    assert created["allowedIps"] == ["192.0.2.10", "2001:db8::/32"]
    assert created["acl"] == [{"scope": {"organizationId": []}, "permissions": ["*"]}]
    assert created["_links"] == [{"href": f"/api/v1/api-keys/{created['id']}", "rel": "self"}]
    secret = created["secretKey"]
    assert client.get(f"{API}/api-keys", headers={"REB-APIKEY": secret}).status_code == 403  # not an allowed IP
    with app.test_client(client=("2001:db8::7", 50000)) as allowed:
        listed = allowed.get(f"{API}/api-keys", headers={"REB-APIKEY": secret})
    assert listed.status_code == 200
    assert secret not in listed.text
    assert created["id"] in [k["id"] for k in listed.json()]


def test_type_defaults_to_secret_from_the_spec(client, world):
    assert create(client, world.acme_admin)["type"] == "secret"


def test_trailing_slash_reaches_the_same_operation(client, world):
    r = client.post(f"{API}/api-keys/", json={"description": "official client"}, headers=world.acme_admin.billing)
    assert r.status_code == 201
    assert r.json()["description"] == "official client"


def test_paging_headers_count_the_collection(client, world):
    for i in range(4):
        create(client, world.acme_admin, description=f"k{i}")
    r = client.get(f"{API}/api-keys?limit=2&offset=1&sort=description", headers=world.acme_admin.billing)
    assert r.status_code == 200
    assert r.headers["Pagination-Total"] == "6"  # 4 here + the two first keys of acme's users
    assert r.headers["Pagination-Limit"] == "2" and r.headers["Pagination-Offset"] == "1"
    assert [k["description"] for k in r.json()] == ["first key of member@acme.test", "k0"]


def test_limit_zero_still_counts(client, world):
    r = client.get(f"{API}/api-keys?limit=0", headers=world.acme_admin.billing)
    assert r.json() == [] and r.headers["Pagination-Total"] == "2"


def test_offset_past_the_end_is_an_empty_page(client, world):
    r = client.get(f"{API}/api-keys?offset=1000", headers=world.acme_admin.billing)
    assert r.status_code == 200 and r.json() == [] and r.headers["Pagination-Total"] == "2"


def test_default_sort_is_newest_first_and_comma_joined_sort_breaks_ties(client, world):
    create(client, world.acme_admin, description="b", type="publishable")
    create(client, world.acme_admin, description="a", type="publishable")
    create(client, world.acme_admin, description="c", type="secret")
    newest = client.get(f"{API}/api-keys?limit=1", headers=world.acme_admin.billing).json()
    assert newest[0]["description"] == "c"
    r = client.get(f"{API}/api-keys?sort=type,-description&filter=description:a,b,c",
                   headers=world.acme_admin.billing)
    assert [(k["type"], k["description"]) for k in r.json()] == [
        ("publishable", "b"), ("publishable", "a"), ("secret", "c")]


def test_filter_is_exact_case_insensitive_and_plus_is_space(client, world):
    create(client, world.acme_admin, description="Nightly Build")
    create(client, world.acme_admin, description="Nightly")
    create(client, world.acme_admin, description="nightly build", type="publishable")
    r = client.get(f"{API}/api-keys?filter=description:nightly+build", headers=world.acme_admin.billing)
    assert sorted(k["description"] for k in r.json()) == ["Nightly Build", "nightly build"]
    assert r.headers["Pagination-Total"] == "2"
    both = client.get(f"{API}/api-keys?filter=description:nightly+build%3Btype:secret",
                      headers=world.acme_admin.billing)
    assert [k["description"] for k in both.json()] == ["Nightly Build"]


def test_member_sees_own_keys_admin_sees_organization(client, world):
    create(client, world.acme_member, description="mine")
    member = client.get(f"{API}/api-keys", headers=world.acme_member.billing).json()
    admin = client.get(f"{API}/api-keys", headers=world.acme_admin.billing).json()
    assert sorted(k["description"] for k in member) == ["first key of member@acme.test", "mine"]
    assert len(admin) == 3
    other = client.get(f"{API}/api-keys", headers=world.globex_admin.billing).json()
    assert [k["description"] for k in other] == ["first key of admin@globex.test"]


@pytest.mark.parametrize("query, field", [
    ("limit=1001", "limit"),
    ("limit=-1", "limit"),
    ("limit=ten", "limit"),
    ("offset=-5", "offset"),
    ("sort=secretKey", "sort"),
    ("filter=secretKey:x", "filter"),
    ("filter=description", "filter"),
    ("filter=description:x' OR '1'='1;--", "filter"),
    ("page=2", "page"),
])
def test_bad_paging_is_400_with_invalid_fields(client, world, query, field):
    r = client.get(f"{API}/api-keys?{query}", headers=world.acme_admin.billing)
    body = problem_of(r, 400)
    assert [f["field"] for f in body["invalidFields"]] == [field]


def test_injection_looking_filter_value_is_just_a_value(client, world):
    r = client.get(f"{API}/api-keys?filter=description:x' OR '1'='1", headers=world.acme_admin.billing)
    assert r.status_code == 200 and r.json() == [] and r.headers["Pagination-Total"] == "0"


@pytest.mark.parametrize("body, field", [
    ({}, "description"),
    ({"description": ""}, "description"),
    ({"description": "x", "type": "root"}, "type"),
    ({"description": "x", "allowedIps": ["not-an-ip"]}, "allowedIps.0"),
    ({"description": "x", "allowedIps": "192.0.2.1"}, "allowedIps"),
    ({"description": "x", "acl": [{"permissions": ["*"]}]}, "acl.0.scope"),
    ({"description": "x", "secretKey": "kh_mine"}, "secretKey"),
    ({"description": "x", "id": "chosen"}, "id"),
    ({"description": "x", "createdTime": "2020-01-01T00:00:00Z"}, "createdTime"),
])
def test_invalid_create_is_422_with_invalid_fields_and_stores_nothing(client, world, app, body, field):
    before = count_keys(app)
    r = client.post(f"{API}/api-keys", json=body, headers=world.acme_admin.billing)
    problem = problem_of(r, 422)
    assert [f["field"] for f in problem["invalidFields"]] == [field]
    assert count_keys(app) == before


def test_allowed_ips_null_means_unrestricted(client, world):
    assert create(client, world.acme_admin, allowedIps=None)["allowedIps"] is None


def test_unicode_is_kept(client, world):
    created = create(client, world.acme_admin, description="клю́ч 🔑 鍵")
    r = client.get(f"{API}/api-keys?filter=description:клю́ч 🔑 鍵", headers=world.acme_admin.billing)
    assert [k["id"] for k in r.json()] == [created["id"]]


def test_bad_credentials_are_401_problems(client, world):
    body = problem_of(client.get(f"{API}/api-keys", headers={"REB-APIKEY": "nope"}), 401)
    assert "malformed" in body["detail"]
    problem_of(client.get(f"{API}/api-keys"), 401)
