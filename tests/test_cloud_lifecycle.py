"""The cloud family's whole key life, across two organizations and two roles."""

import pytest

from tests.helpers import API, errors_of


def new_key(client, actor, description="k"):
    r = client.post(f"{API}/users/auth/keys", json={"description": description}, headers=actor.cloud)
    assert r.status_code == 201
    return r.json()


def test_own_keys_list_get_delete(client, world):
    me = world.acme_member
    made = new_key(client, me, "mine")
    listed = client.get(f"{API}/users/auth/keys", headers=me.cloud).json()["keys"]
    assert {k["id"] for k in listed} == {me.key_id, made["id"]}
    got = client.get(f"{API}/users/auth/keys/{made['id']}", headers=me.cloud)
    assert got.status_code == 200 and got.json()["description"] == "mine" and "key" not in got.json()
    gone = client.delete(f"{API}/users/auth/keys/{made['id']}", headers=me.cloud)
    assert gone.status_code == 200 and gone.json() == {}
    errors_of(client.get(f"{API}/users/auth/keys/{made['id']}", headers=me.cloud), "api_keys.key_not_found")
    assert client.get(f"{API}/users/auth/keys", headers={"Authorization": f"ApiKey {made['key']}"}).status_code == 401
    assert client.get(f"{API}/api-keys", headers={"REB-APIKEY": made["key"]}).status_code == 401


def test_someone_elses_key_is_not_found_on_own_paths(client, world):
    for key_id in (world.acme_admin.key_id, world.globex_admin.key_id):
        for call in (client.get, client.delete):
            r = call(f"{API}/users/auth/keys/{key_id}", headers=world.acme_member.cloud)
            assert r.status_code == 404
            errors_of(r, "api_keys.key_not_found")
    assert client.get(f"{API}/users/auth/keys", headers=world.acme_admin.cloud).status_code == 200


def test_batch_delete_is_all_or_nothing(client, world):
    me = world.acme_admin
    a, b = new_key(client, me)["id"], new_key(client, me)["id"]
    r = client.request("DELETE", f"{API}/users/auth/keys", json={"keys": [a, "missing", b]}, headers=me.cloud)
    assert r.status_code == 404
    assert errors_of(r, "api_keys.key_not_found")["fields"] == ["keys.1"]
    assert {a, b} <= {k["id"] for k in client.get(f"{API}/users/auth/keys", headers=me.cloud).json()["keys"]}
    ok = client.request("DELETE", f"{API}/users/auth/keys", json={"keys": [a, b]}, headers=me.cloud)
    assert ok.status_code == 200
    assert {k["id"] for k in client.get(f"{API}/users/auth/keys", headers=me.cloud).json()["keys"]} == {me.key_id}


def test_batch_delete_needs_a_list(client, world):
    r = client.request("DELETE", f"{API}/users/auth/keys", json={"keys": []}, headers=world.acme_admin.cloud)
    assert r.status_code == 400
    errors_of(r, "api_keys.invalid_input")


def test_all_users_keys_for_admins_only(client, world):
    listed = client.get(f"{API}/users/auth/keys/_all", headers=world.acme_admin.cloud)
    assert {k["id"] for k in listed.json()["keys"]} == {world.acme_admin.key_id, world.acme_member.key_id}
    errors_of(client.get(f"{API}/users/auth/keys/_all", headers=world.acme_member.cloud), "root.forbidden")
    other = client.get(f"{API}/users/auth/keys/_all", headers=world.globex_admin.cloud).json()["keys"]
    assert [k["id"] for k in other] == [world.globex_admin.key_id]


def test_delete_users_keys_for_admins(client, world):
    member_key = new_key(client, world.acme_member)["id"]
    body = {"user_api_keys": [{"user_id": world.acme_member.user_id, "api_key_ids": [member_key]}]}
    errors_of(client.request("DELETE", f"{API}/users/auth/keys/_all", json=body, headers=world.acme_member.cloud),
              "root.forbidden")
    wrong_org = {"user_api_keys": [{"user_id": world.globex_admin.user_id, "api_key_ids": [world.globex_admin.key_id]}]}
    r = client.request("DELETE", f"{API}/users/auth/keys/_all", json=wrong_org, headers=world.acme_admin.cloud)
    assert errors_of(r, "api_keys.user_not_found")["fields"] == ["user_api_keys.0.user_id"]
    mismatched = {"user_api_keys": [{"user_id": world.acme_member.user_id, "api_key_ids": [world.acme_admin.key_id]}]}
    r = client.request("DELETE", f"{API}/users/auth/keys/_all", json=mismatched, headers=world.acme_admin.cloud)
    assert errors_of(r, "api_keys.key_not_found")["fields"] == ["user_api_keys.0.api_key_ids.0"]
    assert client.request("DELETE", f"{API}/users/auth/keys/_all", json=body,
                          headers=world.acme_admin.cloud).status_code == 200
    keys = client.get(f"{API}/users/{world.acme_member.user_id}/auth/keys",
                      headers=world.acme_admin.cloud).json()["keys"]
    assert [k["id"] for k in keys] == [world.acme_member.key_id]
    # the globex key is untouched
    assert client.get(f"{API}/users/auth/keys", headers=world.globex_admin.cloud).status_code == 200


def test_user_scoped_get_and_delete(client, world):
    admin, member = world.acme_admin, world.acme_member
    made = new_key(client, member)["id"]
    r = client.get(f"{API}/users/{member.user_id}/auth/keys/{made}", headers=admin.cloud)
    assert r.status_code == 200 and r.json()["user_id"] == member.user_id
    errors_of(client.get(f"{API}/users/{admin.user_id}/auth/keys/{made}", headers=admin.cloud),
              "api_keys.key_not_found")
    errors_of(client.get(f"{API}/users/{admin.user_id}/auth/keys/{admin.key_id}", headers=member.cloud),
              "root.forbidden")
    errors_of(client.get(f"{API}/users/{world.globex_admin.user_id}/auth/keys/{world.globex_admin.key_id}",
                         headers=admin.cloud), "api_keys.user_not_found")
    assert client.delete(f"{API}/users/{member.user_id}/auth/keys/{made}", headers=admin.cloud).status_code == 200
    errors_of(client.delete(f"{API}/users/{member.user_id}/auth/keys/{made}", headers=admin.cloud),
              "api_keys.key_not_found")


def test_user_scoped_batch_delete(client, world):
    member = world.acme_member
    a = new_key(client, member)["id"]
    r = client.request("DELETE", f"{API}/users/{member.user_id}/auth/keys", json={"keys": [a]}, headers=member.cloud)
    assert r.status_code == 200
    r = client.request("DELETE", f"{API}/users/{world.acme_admin.user_id}/auth/keys",
                       json={"keys": [world.acme_admin.key_id]}, headers=member.cloud)
    errors_of(r, "root.forbidden")
    assert client.get(f"{API}/users/auth/keys", headers=world.acme_admin.cloud).status_code == 200


@pytest.mark.parametrize("path", ["/users/auth/keys/_all", "/users/auth/keys"])
def test_new_cloud_operations_keep_the_envelope_on_bad_input(client, world, path):
    r = client.request("DELETE", f"{API}{path}", json={"keys": "not-a-list", "user_api_keys": 3},
                       headers=world.acme_admin.cloud)
    assert r.status_code == 400
    errors_of(r, "api_keys.invalid_input")
