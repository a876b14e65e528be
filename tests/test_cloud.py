"""The cloud family over HTTP: every call, its success and each documented error."""

from datetime import UTC, datetime, timedelta

import pytest

from tests.conftest import count_keys
from tests.helpers import API, RULESET, errors_of

# ------------------------------------------------------------------ GET /users/{user_id}/auth/keys

def test_admin_lists_a_member_of_their_organization(client, world):
    r = client.get(f"{API}/users/{world.acme_member.user_id}/auth/keys", headers=world.acme_admin.cloud)
    assert r.status_code == 200
    (key,) = r.json()["keys"]
    assert key["id"] == world.acme_member.key_id
    assert key["user_id"] == world.acme_member.user_id
    assert key["organization_id"] == world.acme_member.organization_id
    assert key["description"] == "first key of member@acme.test"
    assert datetime.fromisoformat(key["creation_date"]).tzinfo is not None
    assert "key" not in key and "expiration_date" not in key


def test_member_lists_themselves_with_either_scheme(client, world):
    for headers in (world.acme_member.cloud, world.acme_member.bearer):
        r = client.get(f"{API}/users/{world.acme_member.user_id}/auth/keys", headers=headers)
        assert r.status_code == 200
        assert [k["id"] for k in r.json()["keys"]] == [world.acme_member.key_id]


def test_member_may_not_list_a_colleague(client, world):
    r = client.get(f"{API}/users/{world.acme_admin.user_id}/auth/keys", headers=world.acme_member.cloud)
    assert r.status_code == 403
    errors_of(r, "root.forbidden")


@pytest.mark.parametrize("who", ["globex", "unknown"])
def test_user_of_another_organization_is_not_found(client, world, who):
    user_id = world.globex_admin.user_id if who == "globex" else "no-such-user"
    r = client.get(f"{API}/users/{user_id}/auth/keys", headers=world.acme_admin.cloud)
    assert r.status_code == 404
    errors_of(r, "api_keys.user_not_found")


@pytest.mark.parametrize("headers, detail", [
    ({}, "authentication"),
    ({"Authorization": "ApiKey"}, ""),
    ({"Authorization": "ApiKey kh_not-a-key"}, "malformed"),
    ({"Authorization": "Basic dXNlcjpwYXNz"}, "authentication"),
    ({"Authorization": "Bearer"}, "authentication"),
])
def test_bad_credentials_are_401_in_the_cloud_envelope(client, world, headers, detail):
    r = client.get(f"{API}/users/{world.acme_admin.user_id}/auth/keys", headers=headers)
    assert r.status_code == 401
    assert detail in errors_of(r, "root.unauthorized")["message"].lower()


def test_well_formed_unknown_key_is_401(client, world):
    from keyhouse import keys

    r = client.get(f"{API}/users/{world.acme_admin.user_id}/auth/keys",
                   headers={"Authorization": f"ApiKey {keys.generate()}"})
    assert r.status_code == 401
    assert "invalid" in errors_of(r, "root.unauthorized")["message"]


# ------------------------------------------------------------------ POST /users/auth/keys

def test_create_returns_the_key_once_and_it_works(client, world):
    r = client.post(f"{API}/users/auth/keys", json={"description": "deploys", "expiration": "3d"},
                    headers=world.acme_member.cloud)
    assert r.status_code == 201
    created = r.json()
    assert created["description"] == "deploys" and created["user_id"] == world.acme_member.user_id
    expires = datetime.fromisoformat(created["expiration_date"])
    assert timedelta(days=3) - timedelta(minutes=1) < expires - datetime.now(UTC) <= timedelta(days=3)
    new_key = created["key"]
    listed = client.get(f"{API}/users/{world.acme_member.user_id}/auth/keys",
                        headers={"Authorization": f"ApiKey {new_key}"})
    assert listed.status_code == 200
    assert new_key not in listed.text
    assert created["id"] in [k["id"] for k in listed.json()["keys"]]


def test_expired_key_is_refused(client, world, app):
    from keyhouse.store import api_keys

    r = client.post(f"{API}/users/auth/keys", json={"description": "short", "expiration": "1h"},
                    headers=world.acme_admin.cloud)
    key = r.json()["key"]
    with app.runtime.store.session() as s:
        row = api_keys.get_key(s, world.acme_admin.organization_id, r.json()["id"])
        row.expires_at = datetime.now(UTC) - timedelta(seconds=1)
    denied = client.get(f"{API}/users/{world.acme_admin.user_id}/auth/keys", headers={"Authorization": f"ApiKey {key}"})
    assert denied.status_code == 401
    assert "expired" in errors_of(denied, "root.unauthorized")["message"]


@pytest.mark.parametrize("body, field", [
    ({}, "description"),
    ({"description": ""}, "description"),
    ({"description": 7}, "description"),
    ({"description": "x", "expiration": "3w"}, "expiration"),
    ({"description": "x", "expiration": "0d"}, "expiration"),
    ({"description": "x", "owner": "someone-else"}, "owner"),
])
def test_invalid_create_is_400_and_stores_nothing(client, world, app, body, field):
    before = count_keys(app)
    r = client.post(f"{API}/users/auth/keys", json=body, headers=world.acme_admin.cloud)
    assert r.status_code == 400
    assert errors_of(r, "api_keys.invalid_input")["fields"] == [field]
    assert count_keys(app) == before


def test_malformed_json_is_400(client, world, app):
    before = count_keys(app)
    r = client.post(f"{API}/users/auth/keys", content=b'{"description": ',
                    headers={**world.acme_admin.cloud, "Content-Type": "application/json"})
    assert r.status_code == 400
    errors_of(r, "root.malformed_request")
    assert count_keys(app) == before


# ------------------------------------------------------------------ traffic-filter rulesets


def test_ruleset_create_get_list_delete(client, world):
    r = client.post(f"{API}/deployments/traffic-filter/rulesets", json=RULESET, headers=world.acme_admin.cloud)
    assert r.status_code == 200
    ruleset_id = r.json()["id"]

    got = client.get(f"{API}/deployments/traffic-filter/rulesets/{ruleset_id}", headers=world.acme_member.cloud)
    assert got.status_code == 200
    info = got.json()
    assert info["name"] == "offices" and info["include_by_default"] is False
    assert [rule["source"] for rule in info["rules"]] == ["192.0.2.0/24", "2001:db8::1"]
    assert all(rule["id"] for rule in info["rules"])
    assert info["total_associations"] == 0

    listed = client.get(f"{API}/deployments/traffic-filter/rulesets", headers=world.acme_admin.cloud)
    assert [x["id"] for x in listed.json()["rulesets"]] == [ruleset_id]

    deleted = client.delete(f"{API}/deployments/traffic-filter/rulesets/{ruleset_id}", headers=world.acme_admin.cloud)
    assert deleted.status_code == 200 and deleted.json() == {}
    again = client.delete(f"{API}/deployments/traffic-filter/rulesets/{ruleset_id}", headers=world.acme_admin.cloud)
    assert again.status_code == 404
    errors_of(again, "traffic_filter.not_found")


def test_rulesets_of_another_organization_are_not_found(client, world):
    ruleset_id = client.post(f"{API}/deployments/traffic-filter/rulesets", json=RULESET,
                             headers=world.acme_admin.cloud).json()["id"]
    for call in (client.get, client.delete):
        r = call(f"{API}/deployments/traffic-filter/rulesets/{ruleset_id}", headers=world.globex_admin.cloud)
        assert r.status_code == 404
        errors_of(r, "traffic_filter.not_found")
    assert client.get(f"{API}/deployments/traffic-filter/rulesets",
                      headers=world.globex_admin.cloud).json() == {"rulesets": []}
    assert client.get(f"{API}/deployments/traffic-filter/rulesets/{ruleset_id}",
                      headers=world.acme_admin.cloud).status_code == 200


def test_delete_with_ignore_associations(client, world):
    ruleset_id = client.post(f"{API}/deployments/traffic-filter/rulesets", json=RULESET,
                             headers=world.acme_admin.cloud).json()["id"]
    r = client.delete(f"{API}/deployments/traffic-filter/rulesets/{ruleset_id}?ignore_associations=true",
                      headers=world.acme_admin.cloud)
    assert r.status_code == 200


def test_ignore_associations_must_be_boolean(client, world):
    ruleset_id = client.post(f"{API}/deployments/traffic-filter/rulesets", json=RULESET,
                             headers=world.acme_admin.cloud).json()["id"]
    r = client.delete(f"{API}/deployments/traffic-filter/rulesets/{ruleset_id}?ignore_associations=maybe",
                      headers=world.acme_admin.cloud)
    assert r.status_code == 400
    assert errors_of(r, "traffic_filter.invalid_input")["fields"] == ["ignore_associations"]
    assert client.get(f"{API}/deployments/traffic-filter/rulesets/{ruleset_id}",
                      headers=world.acme_admin.cloud).status_code == 200


@pytest.mark.parametrize("source", ["10.0.0.300", "192.0.2.0/33", "not an ip", "2001:db8::/129"])
def test_ip_ruleset_sources_are_validated(client, world, source):
    body = {**RULESET, "rules": [{"source": "192.0.2.1"}, {"source": source}]}
    r = client.post(f"{API}/deployments/traffic-filter/rulesets", json=body, headers=world.acme_admin.cloud)
    assert r.status_code == 400
    assert errors_of(r, "traffic_filter.invalid_input")["fields"] == ["rules.1.source"]
    assert client.get(f"{API}/deployments/traffic-filter/rulesets",
                      headers=world.acme_admin.cloud).json() == {"rulesets": []}


def test_non_ip_ruleset_sources_are_endpoint_ids(client, world):
    body = {**RULESET, "type": "vpce", "rules": [{"source": "vpce-0123456789abcdef"}]}
    r = client.post(f"{API}/deployments/traffic-filter/rulesets", json=body, headers=world.acme_admin.cloud)
    assert r.status_code == 200


def test_unknown_ruleset_type_is_400(client, world):
    r = client.post(f"{API}/deployments/traffic-filter/rulesets", json={**RULESET, "type": "carrier-pigeon"},
                    headers=world.acme_admin.cloud)
    assert r.status_code == 400
    assert errors_of(r, "traffic_filter.invalid_input")["fields"] == ["type"]


@pytest.mark.parametrize("type_", [{}, None, 3, ["ip"]])
def test_ruleset_type_of_the_wrong_kind_is_400(client, world, type_):
    r = client.post(f"{API}/deployments/traffic-filter/rulesets", json={**RULESET, "type": type_},
                    headers=world.acme_admin.cloud)
    assert r.status_code == 400
    assert errors_of(r, "traffic_filter.invalid_input")["fields"] == ["type"]
