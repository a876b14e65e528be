"""The workspace family over HTTP: masked keys only, `{code,detail,type,errors}` errors."""

import pytest

from tests.conftest import count_keys
from tests.helpers import API


def error_of(response, status, type_):
    assert response.status_code == status
    body = response.json()
    assert body["code"] == status and body["type"] == type_ and body["detail"]
    return body


def test_create_then_list_masked(client, world):
    r = client.post(f"{API}/user/api-keys", json={"name": "CI", "allowed_scopes": ["listMyApiKeys"],
                                                   "allow_self_revoke": True, "workspace_id": "ws-1"},
                    headers=world.acme_member.bearer)
    assert r.status_code == 201
    created = r.json()
    key = created["key"]
    assert created["masked_key"] == key[:7] + "…" + key[-4:]
    assert created["allowed_scopes"] == ["listMyApiKeys"] and created["allow_self_revoke"] is True
    assert created["workspace_id"] == "ws-1" and created["org_id"] == world.acme_member.organization_id

    listed = client.get(f"{API}/user/api-keys", headers={"Authorization": f"Bearer {key}"})
    assert listed.status_code == 200
    assert key not in listed.text and world.acme_member.key not in listed.text
    assert [k["name"] for k in listed.json()] == ["CI", "first key of member@acme.test"]
    assert all(k["active"] for k in listed.json())


def test_list_holds_only_the_callers_keys(client, world):
    listed = client.get(f"{API}/user/api-keys", headers=world.acme_admin.bearer).json()
    assert [k["id"] for k in listed] == [world.acme_admin.key_id]


def test_defaults_come_from_the_spec(client, world):
    created = client.post(f"{API}/user/api-keys", json={"name": "plain"}, headers=world.acme_admin.bearer).json()
    # Without allowed_scopes a key holds what its creator holds: here, the admin's "*".
    assert created["allow_self_revoke"] is False and created["allowed_scopes"] == ["*"]
    assert created["workspace_id"] is None and created["last_used_at"] is None


def test_revoke_refuses_the_key_everywhere_and_keeps_it_listed(client, world):
    created = client.post(f"{API}/user/api-keys", json={"name": "doomed"}, headers=world.acme_member.bearer).json()
    r = client.delete(f"{API}/user/api-keys/{created['id']}", headers=world.acme_member.bearer)
    assert r.status_code == 204 and r.content == b""
    doomed = {"Authorization": f"Bearer {created['key']}"}
    assert client.get(f"{API}/user/api-keys", headers=doomed).status_code == 401
    assert client.get(f"{API}/api-keys", headers={"REB-APIKEY": created["key"]}).status_code == 401
    listed = {k["id"]: k for k in client.get(f"{API}/user/api-keys", headers=world.acme_member.bearer).json()}
    assert listed[created["id"]]["active"] is False
    body = error_of(client.get(f"{API}/user/api-keys", headers=doomed), 401, "authentication_error")
    assert "revoked" in body["detail"]


def test_revoking_a_colleagues_or_unknown_key_is_not_found(client, world):
    for key_id in (world.acme_admin.key_id, world.globex_admin.key_id, "no-such-key"):
        r = client.delete(f"{API}/user/api-keys/{key_id}", headers=world.acme_member.bearer)
        error_of(r, 404, "not_found")
    assert client.get(f"{API}/user/api-keys", headers=world.acme_admin.bearer).status_code == 200


@pytest.mark.parametrize("body, loc", [
    ({}, ["body", "name"]),
    ({"name": 3}, ["body", "name"]),
    ({"name": "x", "allow_self_revoke": "yes"}, ["body", "allow_self_revoke"]),
    ({"name": "x", "allowed_scopes": "listMyApiKeys"}, ["body", "allowed_scopes"]),
    ({"name": "x", "allowed_scopes": ["keys:read"]}, ["body", "allowed_scopes", "0"]),
    ({"name": "x", "key": "kh_chosen"}, ["body", "key"]),
])
def test_invalid_create_is_422_and_stores_nothing(client, world, app, body, loc):
    before = count_keys(app)
    r = client.post(f"{API}/user/api-keys", json=body, headers=world.acme_admin.bearer)
    assert [e["loc"] for e in error_of(r, 422, "validation_error")["errors"]] == [loc]
    assert count_keys(app) == before


def test_malformed_json_is_400_invalid_request(client, world):
    r = client.post(f"{API}/user/api-keys", content=b"[1,", headers={**world.acme_admin.bearer,
                                                                       "Content-Type": "application/json"})
    error_of(r, 400, "invalid_request")


def test_workspace_only_accepts_bearer(client, world):
    for headers in (world.acme_admin.cloud, world.acme_admin.billing, {}):
        error_of(client.get(f"{API}/user/api-keys", headers=headers), 401, "authentication_error")


def test_get_one_of_my_keys(client, world):
    r = client.get(f"{API}/user/api-keys/{world.acme_member.key_id}", headers=world.acme_member.bearer)
    assert r.status_code == 200 and r.json()["id"] == world.acme_member.key_id and "key" not in r.json()
    for other in (world.acme_admin.key_id, world.globex_admin.key_id, "nope"):
        error_of(client.get(f"{API}/user/api-keys/{other}", headers=world.acme_member.bearer), 404, "not_found")


def test_self_revoke_only_when_the_key_allows_it(client, world):
    error_of(client.delete(f"{API}/user/api-keys/self", headers=world.acme_member.bearer), 403, "permission_error")
    assert client.get(f"{API}/user/api-keys", headers=world.acme_member.bearer).status_code == 200
    made = client.post(f"{API}/user/api-keys", json={"name": "leaky", "allow_self_revoke": True},
                       headers=world.acme_member.bearer).json()
    leaked = {"Authorization": f"Bearer {made['key']}"}
    assert client.delete(f"{API}/user/api-keys/self", headers=leaked).status_code == 204
    assert client.get(f"{API}/user/api-keys", headers=leaked).status_code == 401
    assert client.get(f"{API}/user/api-keys", headers=world.acme_member.bearer).status_code == 200
