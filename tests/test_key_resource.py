"""Keys in keyhouse's own shape (`/keys`): who a key is for, what it carries, and what verify says of it."""

from __future__ import annotations

from tests.helpers import API, DOCUMENTS, declare, the_rest_of_the_day, verify
from tests.helpers import create_key as create


def test_a_customers_key_for_the_documents_api_through_a_gateways_day(client, world):
    admin = world.acme_admin
    assert declare(client, admin, name="documents", openapi=DOCUMENTS).status_code == 201
    key = create(client, admin, name="cus_42 production", owner_id="cus_42", meta={"plan": "pro", "seats": 3},
                 permissions=["documents:getDocument"])
    assert (key["owner_id"], key["meta"], key["permissions"]) == ("cus_42", {"plan": "pro", "seats": 3},
                                                                  ["documents:getDocument"])
    verdict = verify(client, admin, key["key"], permissions=["documents:getDocument"])
    assert verdict["code"] == "VALID"
    assert (verdict["name"], verdict["owner_id"], verdict["meta"]) == ("cus_42 production", "cus_42",
                                                                       {"plan": "pro", "seats": 3})
    the_rest_of_the_day(client, admin, key["key"])
    assert client.get(f"{API}/keys/{key['id']}", headers=admin.bearer).json()["permissions"] == []


def test_keys_are_listed_by_owner_newest_first_and_members_see_their_own(client, world):
    admin, member = world.acme_admin, world.acme_member
    first = create(client, admin, name="a", owner_id="cus_1")
    second = create(client, admin, name="b", owner_id="cus_1")
    create(client, admin, name="c", owner_id="cus_2")
    mine = create(client, member, name="m", owner_id="cus_1")
    page = client.get(f"{API}/keys", params={"owner_id": "cus_1"}, headers=admin.bearer)
    assert [k["id"] for k in page.json()] == [mine["id"], second["id"], first["id"]]
    assert page.headers["Pagination-Total"] == "3"
    assert [k["id"] for k in client.get(f"{API}/keys", params={"owner_id": "cus_1"}, headers=member.bearer).json()] \
        == [mine["id"]]
    assert client.get(f"{API}/keys/{first['id']}", headers=member.bearer).status_code == 404
    outsiders = client.get(f"{API}/keys", headers=world.globex_admin.bearer).json()
    assert [k["id"] for k in outsiders] == [world.globex_admin.key_id]  # its own organization's only
    assert "key" not in client.get(f"{API}/keys/{first['id']}", headers=admin.bearer).json()  # shown once


def test_an_update_replaces_what_it_names_and_null_clears(client, world):
    admin = world.acme_admin
    key = create(client, admin, name="n", owner_id="cus_1", meta={"a": 1}, allowed_ips=["192.0.2.0/24"])
    updated = client.patch(f"{API}/keys/{key['id']}", json={"owner_id": None, "meta": {"b": 2},
                                                            "expires_at": "2099-01-01T00:00:00Z"}, headers=admin.bearer)
    assert updated.status_code == 200, updated.text
    body = updated.json()
    assert (body["name"], body["owner_id"], body["meta"], body["allowed_ips"], body["expires_at"]) == (
        "n", None, {"b": 2}, ["192.0.2.0/24"], "2099-01-01T00:00:00Z")
    verdict = verify(client, admin, key["key"], ip="192.0.2.1")
    assert (verdict["owner_id"], verdict["meta"], verdict["expires_at"]) == (None, {"b": 2}, "2099-01-01T00:00:00.000Z")
    events = client.get(f"{API}/audit/events", headers=admin.bearer).json()
    assert [(e["action"], e["target_id"]) for e in events[:2]] == [("key.updated", key["id"]),
                                                                 ("key.created", key["id"])]


def test_meta_is_bounded_and_a_refused_body_changes_nothing(client, world):
    admin = world.acme_admin
    big = {"note": "x" * 5000}
    refused = client.post(f"{API}/keys", json={"name": "big", "meta": big}, headers=admin.bearer)
    assert refused.status_code == 422 and refused.json()["invalidFields"][0]["field"] == "meta"
    assert client.get(f"{API}/keys", headers=admin.bearer).headers["Pagination-Total"] == "2"  # the world's keys
    key = create(client, admin, name="small", meta={"note": "x"})
    assert client.patch(f"{API}/keys/{key['id']}", json={"meta": big}, headers=admin.bearer).status_code == 422
    assert client.get(f"{API}/keys/{key['id']}", headers=admin.bearer).json()["meta"] == {"note": "x"}
    assert client.patch(f"{API}/keys/{key['id']}", json={}, headers=admin.bearer).status_code == 422


def test_a_key_never_holds_more_than_its_creator(client, world):
    member = world.acme_member
    narrow = create(client, member, name="narrow", permissions=["createKey", "verifyKey"])["key"]
    as_narrow = {"Authorization": f"Bearer {narrow}"}
    wider = client.post(f"{API}/keys", json={"name": "wider", "permissions": ["listKeys"]}, headers=as_narrow)
    assert wider.status_code == 403 and "more than its creator holds" in wider.json()["detail"]
    default = client.post(f"{API}/keys", json={"name": "default"}, headers=as_narrow)
    assert default.status_code == 201 and default.json()["permissions"] == ["createKey", "verifyKey"]


def test_a_revoked_key_is_refused_at_once_and_members_revoke_only_their_own(client, world):
    admin, member = world.acme_admin, world.acme_member
    key = create(client, admin, name="to revoke")
    theirs = create(client, admin, name="the admin's")
    # A member's view: the admin's key does not exist for it; another organization's neither.
    assert client.delete(f"{API}/keys/{theirs['id']}", headers=member.bearer).status_code == 404
    assert client.delete(f"{API}/keys/{key['id']}", headers=world.globex_admin.bearer).status_code == 404
    revoked = client.delete(f"{API}/keys/{key['id']}", headers=admin.bearer)
    assert (revoked.status_code, revoked.content) == (204, b"")
    assert verify(client, admin, key["key"])["code"] == "REVOKED"
    assert client.get(f"{API}/keys", headers={"Authorization": f"Bearer {key['key']}"}).status_code == 401
    assert client.delete(f"{API}/keys/{key['id']}", headers=admin.bearer).status_code == 404
    assert client.get(f"{API}/keys/{theirs['id']}", headers=admin.bearer).status_code == 200
    changes = client.get(f"{API}/keys/changes", params={"after": 0}, headers=admin.bearer).json()["changes"]
    assert [(c["action"], c["key_id"]) for c in changes] == [("key.revoked", key["id"])]


def test_a_search_finds_keys_by_any_part_of_their_name_or_id_ignoring_case(client, world):
    admin, member = world.acme_admin, world.acme_member
    checkout = create(client, admin, name="Checkout PRODUCTION")
    create(client, admin, name="billing 100%_done")
    create(client, member, name="checkout of the member")

    def found(search, actor=admin):
        page = client.get(f"{API}/keys", params={"search": search}, headers=actor.bearer)
        assert page.status_code == 200, page.text
        return sorted(k["name"] for k in page.json()), page.headers["Pagination-Total"]

    assert found("checkout") == (["Checkout PRODUCTION", "checkout of the member"], "2")
    assert found("CHECKOUT", member) == (["checkout of the member"], "1")
    assert found(checkout["id"][4:12].upper()) == (["Checkout PRODUCTION"], "1")
    assert found("0%_") == (["billing 100%_done"], "1")  # wildcards are text
    assert found("%") == (["billing 100%_done"], "1")
    assert found("nothing like it") == ([], "0")
    assert client.get(f"{API}/keys", params={"search": ""}, headers=admin.bearer).status_code == 400


def test_the_trail_is_filtered_by_action_and_by_what_it_is_about(client, world):
    admin = world.acme_admin
    one, two = create(client, admin, name="one"), create(client, admin, name="two")
    assert client.patch(f"{API}/keys/{one['id']}", json={"name": "one again"}, headers=admin.bearer).status_code == 200
    assert client.delete(f"{API}/keys/{two['id']}", headers=admin.bearer).status_code == 204

    def trail(**params):
        page = client.get(f"{API}/audit/events", params=params, headers=admin.bearer)
        assert page.status_code == 200, page.text
        return [(e["action"], e["target_id"]) for e in page.json()], page.headers["Pagination-Total"]

    assert trail(target_id=one["id"]) == ([("key.updated", one["id"]), ("key.created", one["id"])], "2")
    assert trail(action="key.revoked,key.updated") == ([("key.revoked", two["id"]), ("key.updated", one["id"])], "2")
    assert trail(action="key.created", target_id=two["id"]) == ([("key.created", two["id"])], "1")
    assert client.get(f"{API}/audit/events", params={"action": "key.exploded"}, headers=admin.bearer).status_code == 400


def test_an_admin_finds_a_key_by_its_secret_and_the_secret_is_kept_nowhere(app, client, world, caplog):
    import logging

    caplog.set_level(logging.DEBUG)
    admin = world.acme_admin
    key = create(client, admin, name="leaked")
    found = client.post(f"{API}/keys/lookup", json={"key": f"  {key['key']}\n"}, headers=admin.bearer)
    assert found.status_code == 200, found.text
    assert (found.json()["id"], found.json()["masked_key"]) == (key["id"], key["masked_key"])
    assert key["masked_key"].startswith(key["key"][:7]) and key["key"] not in found.text
    events = client.get(f"{API}/audit/events", params={"action": "key.looked_up"}, headers=admin.bearer).json()
    assert [(e["action"], e["target_id"], e["actor_key_id"]) for e in events] == [
        ("key.looked_up", key["id"], admin.key_id)]
    with app.runtime.store.session() as s:
        from sqlalchemy import text

        for table in ("api_keys", "audit_events", "console_sessions"):
            assert key["key"] not in str(s.execute(text(f"select * from {table}")).all()), table  # noqa: S608
    assert key["key"] not in caplog.text
    # What it does not find, and who may not ask.
    assert client.post(f"{API}/keys/lookup", json={"key": key["key"]}, headers=world.acme_member.bearer
                       ).status_code == 403
    assert client.post(f"{API}/keys/lookup", json={"key": key["key"]}, headers=world.globex_admin.bearer
                       ).status_code == 404
    assert client.post(f"{API}/keys/lookup", json={"key": "kh_nonsense"}, headers=admin.bearer).status_code == 404
    assert client.delete(f"{API}/keys/{key['id']}", headers=admin.bearer).status_code == 204
    gone = client.post(f"{API}/keys/lookup", json={"key": key["key"]}, headers=admin.bearer)
    assert gone.status_code == 404 and "revoked already" in gone.json()["detail"]


def test_the_list_shows_masked_keys_and_finds_a_key_by_its_masked_start(client, world):
    admin = world.acme_admin
    key = create(client, admin, name="checkout")
    listed = client.get(f"{API}/keys", headers=admin.bearer).json()
    assert {k["masked_key"] for k in listed} >= {key["masked_key"]}
    found = client.get(f"{API}/keys", params={"search": key["key"][:7]}, headers=admin.bearer).json()
    assert [k["id"] for k in found] == [key["id"]]


def test_a_deployments_own_prefix_is_on_every_new_key_and_earlier_keys_keep_working(tmp_path):
    """KEYHOUSE_KEY_PREFIX: every key made from now on starts with it (in every family), shows it in its mask
    and authenticates; keys made under keyhouse's own `kh_` (the world's actors') keep working beside them."""
    from tests.conftest import make_app, populated

    app = make_app(tmp_path, key_prefix="acme_live_")
    admin = populated(app).acme_admin
    assert admin.key.startswith("kh_")
    with app.test_client() as client:
        made = create(client, admin, name="new")
        billing = client.post(f"{API}/api-keys", json={"description": "billing"}, headers=admin.billing)
        assert billing.status_code == 201, billing.text
        for key in (made["key"], billing.json()["secretKey"]):
            assert key.startswith("acme_live_"), key
            assert client.get(f"{API}/keys", headers={"Authorization": f"Bearer {key}"}).status_code == 200
        shown = client.get(f"{API}/keys/{made['id']}", headers=admin.bearer).json()
        assert shown["masked_key"] == f"{made['key'][:14]}…{made['key'][-4:]}"
        assert verify(client, admin, made["key"])["code"] == "VALID"
