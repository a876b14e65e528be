"""The APIs an organization guards with keyhouse: declared by their OpenAPI document or a list of scopes."""

from __future__ import annotations

import json

import pytest
from sqlalchemy import func, select

from keyhouse.store import queries
from keyhouse.store.models import PlatformApi

API = "/api/v1"

DOCUMENTS = """\
openapi: 3.0.3
info: {title: Documents, version: 1.0.0}
security: [{oauth: ['documents:read']}]
components:
  securitySchemes:
    oauth:
      type: oauth2
      flows:
        clientCredentials:
          tokenUrl: https://auth.example.test/token
          scopes: {'documents:read': Read documents, 'documents:write': Change documents}
paths:
  /documents/{id}:
    parameters: [{name: id, in: path, required: true, schema: {type: string}}]
    get:
      operationId: getDocument
      tags: [Documents]
      responses: {'200': {description: The document.}}
    delete:
      operationId: deleteDocument
      tags: [Documents]
      security: [{oauth: ['documents:write']}]
      responses: {'204': {description: Deleted.}}
  /health:
    get:
      operationId: getHealth
      security: []
      responses: {'200': {description: Up.}}
"""


def declare(client, actor, **body):
    return client.post(f"{API}/apis", json=body, headers=actor.bearer)


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
            queries.declare_platform_api(s, world.acme_admin.organization_id, f"api-{i}", actor=None,
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
