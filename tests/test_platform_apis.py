"""The APIs an organization guards with keyhouse: declared by their OpenAPI document or a list of scopes."""

from __future__ import annotations

import json

import pytest
from sqlalchemy import func, select

from keyhouse.store import platform_apis
from keyhouse.store.models import PlatformApi
from tests.helpers import API, DOCUMENTS, declare, the_rest_of_the_day, verify


def stored(app) -> int:
    with app.runtime.store.session() as s:
        return s.scalar(select(func.count()).select_from(PlatformApi))


@pytest.mark.parametrize("as_json", [False, True], ids=["yaml", "json"])
def test_a_document_declares_its_operations_and_groups_them_by_tag_and_scope(client, world, as_json):
    import yaml

    text = json.dumps(yaml.safe_load(DOCUMENTS)) if as_json else DOCUMENTS
    made = declare(client, world.acme_admin, name="documents", openapi=text)
    assert made.status_code == 201, made.text
    api = made.json()
    assert (api["name"], api["source"]) == ("documents", "openapi")
    assert api["permissions"] == ["deleteDocument", "getDocument", "getHealth"]
    assert api["groups"] == {"scope:documents:read": ["getDocument"], "scope:documents:write": ["deleteDocument"],
                             "tag:Documents": ["deleteDocument", "getDocument"]}
    assert client.get(f"{API}/apis/documents", headers=world.acme_admin.bearer).json() == api
    assert client.get(f"{API}/apis", headers=world.acme_admin.bearer).json() == [api]


def test_a_list_of_scopes_declares_those_scopes(client, world):
    made = declare(client, world.acme_admin, name="billing", scopes=["invoices:write", "invoices:read"])
    assert made.status_code == 201, made.text
    assert (made.json()["source"], made.json()["permissions"], made.json()["groups"]) == (
        "scopes", ["invoices:read", "invoices:write"], {})


def test_replacing_a_definition_keeps_the_name_and_changes_the_permissions(client, world):
    admin = world.acme_admin
    first = declare(client, admin, name="documents", openapi=DOCUMENTS).json()
    replaced = client.put(f"{API}/apis/documents", json={"scopes": ["documents:read"]}, headers=admin.bearer)
    assert replaced.status_code == 200, replaced.text
    api = replaced.json()
    assert (api["source"], api["permissions"], api["groups"]) == ("scopes", ["documents:read"], {})
    assert api["created_at"] == first["created_at"]
    assert client.get(f"{API}/apis/documents", headers=admin.bearer).json() == api


def test_a_deleted_api_is_gone(client, world):
    admin = world.acme_admin
    declare(client, admin, name="documents", scopes=["read"])
    assert client.delete(f"{API}/apis/documents", headers=admin.bearer).status_code == 204
    gone = client.get(f"{API}/apis/documents", headers=admin.bearer)
    assert gone.status_code == 404 and gone.json()["status"] == 404
    assert client.delete(f"{API}/apis/documents", headers=admin.bearer).status_code == 404
    assert client.get(f"{API}/apis", headers=admin.bearer).json() == []


REFUSED = {
    "not YAML": ("openapi: [unclosed", "not JSON or YAML"),
    "not a mapping": ("- just\n- a list", "its top level is no object"),
    "invalid": ("openapi: 3.0.3\ninfo: {title: x}\npaths: {}", '"version" is a required property'),
    "no operations": ("openapi: 3.0.3\ninfo: {title: x, version: '1'}\npaths: {}", "declares no operationId"),
    "aliases": ("openapi: 3.0.3\ninfo: &i {title: x, version: '1'}\nx-copy: *i\npaths: {}", "aliases are not accepted"),
    "remote $ref": (json.dumps({"openapi": "3.0.3", "info": {"title": "x", "version": "1"},
                                "paths": {"/a": {"$ref": "http://169.254.169.254/latest/meta-data"}}}),
                    "is not local to the document"),
    "a name no permission may have": (DOCUMENTS.replace("operationId: getDocument", "operationId: get document"),
                                      "cannot be a permission's name"),
    # 500 levels in 1.2 kB: the YAML composer recursed until Python gave up (a 500, before the bound).
    "nested 500 levels deep": ("openapi: '3.0.3'\ninfo: {title: x, version: '1'}\npaths: {}\nx-deep: "
                               + "[" * 500 + "]" * 500, "nested deeper than 64 levels"),
    "nested 500 levels deep, as JSON": ('{"openapi": "3.0.3", "x": ' + "{\"a\": " * 500 + "1" + "}" * 501,
                                        "nested deeper than 64 levels"),
    "Swagger 2.0": ("swagger: '2.0'\ninfo: {title: x, version: '1'}\nbasePath: /v1\npaths:\n  /a:\n    get:\n"
                    "      operationId: getA\n      responses: {'200': {description: ok}}", "a Swagger 2.0 document"),
    "an unquoted version": ("openapi: 3.0\ninfo: {title: x, version: '1'}\npaths: {}", "quote it"),
    "an unquoted 2.0": ("openapi: 2.0\ninfo: {title: x, version: '1'}\npaths: {}", "not a version string"),
    "a version that is not 3": ("openapi: '4.0.0'\ninfo: {title: x, version: '1'}\npaths: {}",
                                "only 3.0.x and 3.1.x"),
    "no openapi field": ("info: {title: x, version: '1'}\npaths: {}", "has no `openapi` field"),
    "an operation without an operationId": (
        DOCUMENTS + "\n  /b:\n    post:\n      responses: {'200': {description: ok}}", "these have none: POST /b"),
}


@pytest.mark.parametrize("case", list(REFUSED))
def test_a_document_that_cannot_be_declared_is_422_naming_why_and_stores_nothing(app, client, world, case):
    text, why = REFUSED[case]
    answer = declare(client, world.acme_admin, name="documents", openapi=text)
    assert answer.status_code == 422, answer.text
    body = answer.json()
    assert why in body["detail"] and body["invalidFields"][0]["field"] == "openapi", body
    assert stored(app) == 0


@pytest.mark.parametrize("body", [{"name": "both", "openapi": DOCUMENTS, "scopes": ["a"]}, {"name": "neither"},
                                  {"name": "Not-A-Name", "scopes": ["a"]}, {"name": "x", "scopes": []},
                                  {"name": "x", "scopes": ["has space"]}])
def test_a_definition_must_be_one_document_or_one_list_of_scopes(app, client, world, body):
    answer = client.post(f"{API}/apis", json=body, headers=world.acme_admin.bearer)
    assert answer.status_code == 422, answer.text
    assert stored(app) == 0


def test_a_name_is_declared_once_per_organization(client, world):
    assert declare(client, world.acme_admin, name="documents", scopes=["a"]).status_code == 201
    again = declare(client, world.acme_admin, name="documents", scopes=["b"])
    assert again.status_code == 409 and "already" in again.json()["detail"]
    assert declare(client, world.globex_admin, name="documents", scopes=["c"]).status_code == 201  # per organization
    assert client.get(f"{API}/apis/documents", headers=world.acme_admin.bearer).json()["permissions"] == ["a"]


def test_an_organization_declares_a_bounded_number_of_apis(app, client, world):
    from keyhouse.api.platform_apis import MAX_APIS

    with app.runtime.store.session() as s:
        for i in range(MAX_APIS - 1):
            platform_apis.declare_platform_api(s, world.acme_admin.organization_id, f"api-{i}", actor=None,
                                         source="scopes", document=None, permissions=["p"], groups={})
    assert declare(client, world.acme_admin, name="last", scopes=["p"]).status_code == 201
    over = declare(client, world.acme_admin, name="one-more", scopes=["p"])
    assert over.status_code == 422 and f"at most {MAX_APIS}" in over.json()["detail"]
    assert len(client.get(f"{API}/apis", headers=world.acme_admin.bearer).json()) == MAX_APIS


def test_only_admins_declare_and_read_apis_and_only_their_organizations(client, world):
    declare(client, world.acme_admin, name="documents", scopes=["a"])
    member = world.acme_member.bearer
    assert client.get(f"{API}/apis", headers=member).status_code == 403
    assert client.post(f"{API}/apis", json={"name": "mine", "scopes": ["a"]}, headers=member).status_code == 403
    assert client.get(f"{API}/apis/documents", headers=member).status_code == 403
    outsider = world.globex_admin.bearer
    assert client.get(f"{API}/apis/documents", headers=outsider).status_code == 404
    assert client.put(f"{API}/apis/documents", json={"scopes": ["x"]}, headers=outsider).status_code == 404
    assert client.delete(f"{API}/apis/documents", headers=outsider).status_code == 404
    assert client.get(f"{API}/apis", headers=outsider).json() == []


def test_every_change_is_in_the_audit_trail(client, world):
    admin = world.acme_admin
    declare(client, admin, name="documents", scopes=["a"])
    client.put(f"{API}/apis/documents", json={"openapi": DOCUMENTS}, headers=admin.bearer)
    client.delete(f"{API}/apis/documents", headers=admin.bearer)
    events = client.get(f"{API}/audit/events", headers=admin.bearer).json()
    assert [(e["action"], e["target_type"], e["target_id"], e["actor_key_id"]) for e in events] == [
        ("api.deleted", "api", "documents", admin.key_id), ("api.redefined", "api", "documents", admin.key_id),
        ("api.declared", "api", "documents", admin.key_id)]


# ------------------------------------------------------------------ keys that hold their permissions

def workspace_key(client, actor, *scopes):
    made = client.post(f"{API}/user/api-keys", json={"name": "for the gateway", "allowed_scopes": list(scopes)},
                       headers=actor.bearer)
    assert made.status_code == 201, made.text
    return made.json()


def test_a_gateways_day_with_a_key_for_the_documents_api(client, world):
    admin = world.acme_admin
    assert declare(client, admin, name="documents", openapi=DOCUMENTS).status_code == 201
    key = workspace_key(client, admin, "documents:getDocument")
    assert key["allowed_scopes"] == ["documents:getDocument"]
    allowed = verify(client, admin, key["key"], permissions=["documents:getDocument"])
    assert (allowed["valid"], allowed["code"], allowed["permissions"]) == (True, "VALID", ["documents:getDocument"])
    the_rest_of_the_day(client, admin, key["key"])
    listed = client.get(f"{API}/user/api-keys/{key['id']}", headers=admin.bearer).json()
    assert listed["allowed_scopes"] == []


def test_groups_all_and_the_any_of_form(client, world):
    admin = world.acme_admin
    declare(client, admin, name="documents", openapi=DOCUMENTS)
    reader = workspace_key(client, admin, "documents:scope:documents:read")["key"]
    tagged = workspace_key(client, admin, "documents:tag:Documents")["key"]
    every = workspace_key(client, admin, "documents:*")["key"]
    assert verify(client, admin, reader, permissions=["documents:getDocument"])["valid"]
    assert not verify(client, admin, reader, permissions=["documents:deleteDocument"])["valid"]
    assert verify(client, admin, tagged, permissions=["documents:getDocument", "documents:deleteDocument"])["valid"]
    assert not verify(client, admin, tagged, permissions=["documents:getHealth"])["valid"]  # untagged
    assert verify(client, admin, every, permissions=["documents:getHealth", "documents:tag:Documents"])["valid"]
    assert verify(client, admin, reader, any_permissions=["documents:deleteDocument", "documents:getDocument"])["valid"]
    assert not verify(client, admin, reader, any_permissions=["documents:deleteDocument", "documents:getHealth"])[
        "valid"]
    # The admin's own key holds `*`: keyhouse's operations and every permission of the organization's APIs.
    assert verify(client, admin, admin.key, permissions=["documents:deleteDocument", "verifyKey"])["valid"]
    # A permission nobody declares is held by nobody, `*` included.
    assert not verify(client, admin, admin.key, permissions=["documents:noSuchThing"])["valid"]
    assert not verify(client, admin, admin.key, permissions=["nowhere:getDocument"])["valid"]


def test_a_deleted_api_takes_its_permissions_from_every_key(app, client, world):
    admin = world.acme_admin
    declare(client, admin, name="documents", openapi=DOCUMENTS)
    declare(client, admin, name="invoices", scopes=["invoices:read"])
    billing = client.post(f"{API}/api-keys", headers=admin.billing, json={"description": "gateway", "acl": [
        {"scope": {}, "permissions": ["documents:getDocument", "invoices:invoices:read", "listMyApiKeys"]}]})
    assert billing.status_code == 201, billing.text
    assert client.delete(f"{API}/apis/documents", headers=admin.bearer).status_code == 204
    kept = client.get(f"{API}/api-keys/{billing.json()['id']}", headers=admin.billing).json()
    assert kept["acl"][0]["permissions"] == ["invoices:invoices:read", "listMyApiKeys"]
    key = billing.json()["secretKey"]
    assert verify(client, admin, key, permissions=["invoices:invoices:read", "listMyApiKeys"])["valid"]
    assert not verify(client, admin, key, permissions=["documents:getDocument"])["valid"]
    # Declared again, the API grants nothing to the keys that lost it.
    declare(client, admin, name="documents", openapi=DOCUMENTS)
    assert not verify(client, admin, key, permissions=["documents:getDocument"])["valid"]


@pytest.mark.parametrize("family", ["workspace", "billing"])
def test_names_no_api_declares_are_refused_where_they_stand(app, client, world, family):
    admin = world.acme_admin
    declare(client, admin, name="documents", openapi=DOCUMENTS)
    before = stored_keys(app)
    wanted = ["listMyApiKeys", "documents:getDocument", "documents:noSuchThing", "nowhere:x"]
    if family == "workspace":
        answer = client.post(f"{API}/user/api-keys", json={"name": "x", "allowed_scopes": wanted}, headers=admin.bearer)
        assert answer.status_code == 422, answer.text
        assert [e["loc"] for e in answer.json()["errors"]] == [["body", "allowed_scopes", "2"],
                                                               ["body", "allowed_scopes", "3"]]
    else:
        acl = [{"scope": {}, "permissions": wanted}]
        answer = client.post(f"{API}/api-keys", json={"description": "x", "acl": acl}, headers=admin.billing)
        assert answer.status_code == 422, answer.text
        assert [f["field"] for f in answer.json()["invalidFields"]] == ["acl.0.permissions.2", "acl.0.permissions.3"]
    assert stored_keys(app) == before


def test_a_key_never_grants_more_of_an_api_than_its_creator_holds(app, client, world):
    admin = world.acme_admin
    declare(client, admin, name="documents", openapi=DOCUMENTS)
    creator = workspace_key(client, admin, "documents:getDocument", "createMyApiKey")["key"]
    as_creator = {"Authorization": f"Bearer {creator}"}
    narrower = client.post(f"{API}/user/api-keys", headers=as_creator,
                           json={"name": "n", "allowed_scopes": ["documents:getDocument"]})
    assert narrower.status_code == 201, narrower.text
    for wider in (["documents:deleteDocument"], ["documents:*"], ["documents:tag:Documents"]):
        refused = client.post(f"{API}/user/api-keys", headers=as_creator, json={"name": "w", "allowed_scopes": wider})
        assert refused.status_code == 403 and "more than its creator holds" in refused.json()["detail"], refused.text


def test_publishable_keys_hold_none_of_an_apis_permissions(client, world):
    admin = world.acme_admin
    declare(client, admin, name="documents", openapi=DOCUMENTS)
    refused = client.post(f"{API}/api-keys", headers=admin.billing, json={
        "description": "browser", "type": "publishable",
        "acl": [{"scope": {}, "permissions": ["documents:getDocument"]}]})
    assert refused.status_code == 403 and "publishable" in refused.json()["detail"].lower(), refused.text
    publishable = client.post(f"{API}/api-keys", headers=admin.billing,
                              json={"description": "browser", "type": "publishable"}).json()["secretKey"]
    assert not verify(client, admin, publishable, permissions=["documents:getDocument"])["valid"]


def stored_keys(app) -> int:
    from keyhouse.store.models import ApiKey

    with app.runtime.store.session() as s:
        return s.scalar(select(func.count()).select_from(ApiKey))
