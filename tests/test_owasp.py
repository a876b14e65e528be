"""OWASP API Security Top 10 (2023), generated from the spec: every operation, two organizations, two roles.

Every operation of openapi/keyhouse.yaml is called by an outsider (the admin of another organization)
and by an insider without rights (a member of the victim's organization, or a key holding one
permission), aimed at the victim's objects. Whatever the status, the victim's data must not change and
must not be revealed. A new operation is covered by default: it is read from the spec, and a request
shape this file cannot build fails the test instead of being skipped.

- API1 broken object-level authorization: another organization's objects, another user's keys.
- API5 broken function-level authorization: admin-only operations, and keys without the permission.
- API2 broken authentication: credentials in the wrong scheme, malformed, revoked, expired keys.
- API3 broken object property level authorization (mass assignment): read-only fields on create.
- Timing: lookups are by keyed hash, and malformed guesses never reach the database.
"""

from __future__ import annotations

import re

import pytest
from sqlalchemy import select

from keyhouse import keys, spec
from keyhouse.store import credentials
from keyhouse.store.models import ApiKey, Association, PlatformApi, Ruleset
from keyhouse.validation import compiled
from tests.conftest import SECRET, issue_key

SPEC = spec.document()
OPERATIONS = [(method, path, op) for path, item in SPEC["paths"].items() for method, op in item.items()
              if method in {"get", "post", "put", "delete"} and op.get("security") != []]
IDS = [op["operationId"] for _, _, op in OPERATIONS]


def _resolved(node):
    """A schema with every local `$ref` replaced by what it names (the spec has no cycles)."""
    if isinstance(node, list):
        return [_resolved(n) for n in node]
    if not isinstance(node, dict):
        return node
    if "$ref" in node:
        target = SPEC
        for part in node["$ref"].removeprefix("#/").split("/"):
            target = target[part]
        return _resolved(target)
    return {k: _resolved(v) for k, v in node.items()}


class Victim:
    """Organization acme: its admin, a member, a second key of the admin's, a ruleset with an association, and
    an API it declared."""

    def __init__(self, app, client, world):
        self.admin, self.member = world.acme_admin, world.acme_member
        made = client.post("/api/v1/api-keys", json={"description": "the target"}, headers=self.admin.billing)
        assert made.status_code == 201
        self.key_id, self.key = made.json()["id"], made.json()["secretKey"]
        ruleset = client.post("/api/v1/deployments/traffic-filter/rulesets", headers=self.admin.cloud, json={
            "name": "office", "type": "ip", "region": "us-east-1", "rules": [{"source": "192.0.2.0/24"}]})
        assert ruleset.status_code in (200, 201), ruleset.text
        self.ruleset_id = ruleset.json()["id"]
        associated = client.post(f"/api/v1/deployments/traffic-filter/rulesets/{self.ruleset_id}/associations",
                                 headers=self.admin.cloud, json={"entity_type": "deployment", "id": "dep-acme-1"})
        assert associated.status_code in (200, 201), associated.text
        declared = client.post("/api/v1/apis", headers=self.admin.bearer,
                               json={"name": "victim-docs", "scopes": ["docs:read", "docs:write"]})
        assert declared.status_code == 201, declared.text
        self.app = app

    def path_values(self) -> dict:
        """A value for every path parameter of the spec, each naming a victim's object."""
        return {"api_key_id": self.key_id, "id": self.key_id, "key_id": self.key_id, "user_id": self.admin.user_id,
                "ruleset_id": self.ruleset_id, "association_type": "deployment",
                "associated_entity_id": "dep-acme-1", "api_name": "victim-docs"}

    def bodies(self) -> dict:
        """A valid body for every request schema of the spec, aimed at the victim's objects."""
        return {
            "CreateApiKeyRequest": {"description": "intruder"},
            "DeleteApiKeysRequest": {"keys": [self.key_id]},
            "DeleteUsersApiKeysRequest": {"user_api_keys": [{"user_id": self.admin.user_id,
                                                             "api_key_ids": [self.key_id]}]},
            "TrafficFilterRulesetRequest": {"name": "intruder", "type": "ip", "region": "us-east-1",
                                            "rules": [{"source": "0.0.0.0/0"}]},
            "FilterAssociation": {"entity_type": "deployment", "id": "dep-intruder"},
            "BillingApiKeyInput": {"description": "intruder"},
            "WorkspaceApiKeyInput": {"name": "intruder"},
            "VerifyKeyRequest": {"key": self.key},
            "LookupKeyRequest": {"key": self.key},
            "RerollKeyRequest": {"grace_period_seconds": 0},
            "CreateTokenRequest": {"expires_in": 60},
            "PlatformApiInput": {"name": "intruder", "scopes": ["intrude"]},
            "KeyInput": {"name": "intruder", "owner_id": "intruder"},
            "KeyUpdate": {"name": "intruder", "owner_id": "intruder"},
            "PlatformApiDefinition": {"scopes": ["intrude"]},
        }

    def secrets(self) -> set[str]:
        """What no one outside may learn: identifiers and keys of the victim's organization."""
        return {self.admin.organization_id, self.admin.user_id, self.member.user_id, self.admin.key_id,
                self.member.key_id, self.key_id, self.admin.key, self.member.key, self.key, self.ruleset_id,
                keys.hash_key(SECRET, self.key)}

    def snapshot(self, owner: str | None = None) -> list:
        """The victim's stored state (its keys, or only one owner's; its rulesets and associations)."""
        with self.app.runtime.store.session() as s:
            query = select(ApiKey).where(ApiKey.organization_id == self.admin.organization_id)
            if owner:
                query = query.where(ApiKey.user_id == owner)
            state = [(k.id, k.key_hash, k.secret_version, k.revoked_at, k.description, k.permissions, k.acl,
                      k.allowed_ips, k.expires_at, k.type, k.updated_at, k.owner_id, k.meta)
                     for k in s.scalars(query.order_by(ApiKey.pk))]
            if owner is None:
                state += [(r.id, r.name, r.rules, r.region, r.include_by_default) for r in s.scalars(
                    select(Ruleset).where(Ruleset.organization_id == self.admin.organization_id))]
                state += [(a.ruleset_id, a.entity_type, a.entity_id) for a in s.scalars(
                    select(Association).where(Association.ruleset_id == self.ruleset_id))]
                state += [(p.name, p.source, p.permissions, p.groups, p.document) for p in s.scalars(
                    select(PlatformApi).where(PlatformApi.organization_id == self.admin.organization_id))]
            return state


@pytest.fixture
def victim(app, client, world) -> Victim:
    return Victim(app, client, world)


_SCHEMAS: dict = {}  # resolved once: the compiled validators are cached by schema object


def request_for(method: str, path: str, op: dict, victim: Victim) -> dict:
    values = victim.path_values()
    names = re.findall(r"{([^}]+)}", path)
    missing = [n for n in names if n not in values]
    assert not missing, f"{op['operationId']}: no value for path parameter(s) {missing}; add them to Victim"
    url = "/api/v1" + re.sub(r"{([^}]+)}", lambda m: values[m.group(1)], path)
    request = {"method": method.upper(), "url": url}
    if "requestBody" in op:
        schema_ref = op["requestBody"]["content"]["application/json"]["schema"]
        name = schema_ref["$ref"].rsplit("/", 1)[-1]
        bodies = victim.bodies()
        assert name in bodies, f"{op['operationId']}: no body for {name}; add one to Victim.bodies"
        # a body the schema accepts: authorization is tested
        compiled(_SCHEMAS.setdefault(name, _resolved(schema_ref)))(dict(bodies[name]))
        request["json"] = bodies[name]
    return request


def _reveals(response_text: str, request: dict, secrets: set[str], victim: Victim) -> set[str]:
    """The secrets in an answer that the request did not already hold. Whoever sends a key's plaintext
    (to verify it, say) holds the key: its ID tells them nothing more."""
    sent = request["url"] + str(request.get("json", ""))
    held = {key_id for plaintext, key_id in ((victim.key, victim.key_id), (victim.admin.key, victim.admin.key_id))
            if plaintext in sent}
    return {s for s in secrets if s in response_text and s not in sent and s not in held}


@pytest.mark.parametrize("operation_id", IDS)
def test_api1_another_organization_neither_changes_nor_sees_the_victims_objects(client, world, victim, operation_id):
    method, path, op = next(o for o in OPERATIONS if o[2]["operationId"] == operation_id)
    request = request_for(method, path, op, victim)
    before = victim.snapshot()
    answer = client.request(**request, headers=world.globex_admin.bearer)
    assert answer.status_code < 500, answer.text
    assert victim.snapshot() == before, f"{operation_id} as another organization changed the victim's data"
    assert not _reveals(answer.text, request, victim.secrets(), victim), answer.text


@pytest.mark.parametrize("operation_id", IDS)
def test_api1_a_member_neither_changes_nor_sees_another_users_keys(client, victim, operation_id):
    method, path, op = next(o for o in OPERATIONS if o[2]["operationId"] == operation_id)
    request = request_for(method, path, op, victim)
    before = victim.snapshot(owner=victim.admin.user_id)
    answer = client.request(**request, headers=victim.member.bearer)
    assert answer.status_code < 500, answer.text
    assert victim.snapshot(owner=victim.admin.user_id) == before, f"{operation_id} as a member changed the admin's keys"
    admin_keys = {victim.admin.key_id, victim.key_id, victim.admin.key, victim.key}
    assert not _reveals(answer.text, request, admin_keys, victim), answer.text


@pytest.mark.parametrize("operation_id", IDS)
def test_api5_a_key_without_the_permission_is_refused_and_changes_nothing(client, victim, operation_id):
    # The admin's own key with one permission only, and not this operation's (verify and the workspace
    # list are the two chosen; each is tested against the other).
    held = "listMyApiKeys" if operation_id != "listMyApiKeys" else "verifyKey"
    made = client.post("/api/v1/user/api-keys", headers=victim.admin.bearer,
                       json={"name": "narrow", "allowed_scopes": [held]})
    assert made.status_code == 201
    narrow = made.json()["key"]
    method, path, op = next(o for o in OPERATIONS if o[2]["operationId"] == operation_id)
    request = request_for(method, path, op, victim)
    before = victim.snapshot()
    answer = client.request(**request, headers={"Authorization": f"Bearer {narrow}"})
    assert answer.status_code == 403, answer.text
    assert victim.snapshot() == before


ADMIN_ONLY = {op["operationId"] for _, _, op in OPERATIONS if op.get("x-keyhouse-admins-only")}
PUBLISHABLE = {op["operationId"] for _, _, op in OPERATIONS if op.get("x-keyhouse-publishable")}


def test_the_contract_keeps_the_trail_and_the_organizations_apis_for_admins():
    assert {"getUsersApiKeys", "deleteUsersApiKeys", "listAuditEvents", "listPlatformApis", "createPlatformApi",
            "getPlatformApi", "replacePlatformApi", "deletePlatformApi"} <= ADMIN_ONLY
    assert PUBLISHABLE == {"createAuthToken"}


@pytest.mark.parametrize("operation_id", sorted(set(IDS) - PUBLISHABLE))
def test_api5_a_publishable_key_holding_everything_calls_only_what_the_contract_opens_to_it(client, victim,
                                                                                           operation_id):
    """A publishable key may ship in a web page: whatever it holds, it lists, reads and writes nothing of the
    organization (every operation but those marked `x-keyhouse-publishable`)."""
    made = client.post("/api/v1/api-keys", headers=victim.admin.billing, json={
        "description": "browser", "type": "publishable", "acl": [{"scope": {}, "permissions": ["*"]}]})
    assert made.status_code == 201, made.text
    publishable = made.json()["secretKey"]
    method, path, op = next(o for o in OPERATIONS if o[2]["operationId"] == operation_id)
    request = request_for(method, path, op, victim)
    before = victim.snapshot()
    answer = client.request(**request, headers={"Authorization": f"Bearer {publishable}"})
    assert answer.status_code == 403, answer.text
    assert victim.snapshot() == before


@pytest.mark.parametrize("operation_id", sorted(ADMIN_ONLY))
def test_api5_admin_only_operations_refuse_members(client, victim, operation_id):
    method, path, op = next(o for o in OPERATIONS if o[2]["operationId"] == operation_id)
    answer = client.request(**request_for(method, path, op, victim), headers=victim.member.bearer)
    assert answer.status_code == 403, answer.text


def _schemes_of(op: dict) -> set[str]:
    return {name for requirement in op.get("security", SPEC.get("security", [])) for name in requirement}


SCHEME_HEADERS = {"cloudApiKey": lambda k: {"Authorization": f"ApiKey {k}"},
                  "billingApiKey": lambda k: {"REB-APIKEY": k},
                  "bearerKey": lambda k: {"Authorization": f"Bearer {k}"}}


@pytest.mark.parametrize("operation_id", IDS)
def test_api2_credentials_in_a_scheme_the_operation_does_not_take_are_ignored(client, victim, operation_id):
    method, path, op = next(o for o in OPERATIONS if o[2]["operationId"] == operation_id)
    request = request_for(method, path, op, victim)
    for scheme, header in SCHEME_HEADERS.items():
        if scheme not in _schemes_of(op):
            answer = client.request(**request, headers=header(victim.admin.key))
            assert answer.status_code == 401, (scheme, answer.text)


@pytest.mark.parametrize("operation_id", IDS)
def test_api2_malformed_unknown_and_revoked_keys_are_refused(client, victim, operation_id):
    method, path, op = next(o for o in OPERATIONS if o[2]["operationId"] == operation_id)
    request = request_for(method, path, op, victim)
    revoked = client.post("/api/v1/api-keys", json={"description": "soon gone"}, headers=victim.admin.billing).json()
    assert client.delete(f"/api/v1/api-keys/{revoked['id']}", headers=victim.admin.billing).status_code == 204
    wrong_checksum = victim.admin.key[:-1] + ("A" if victim.admin.key[-1] != "A" else "B")
    for credential in ("kh_short", wrong_checksum, keys.generate(), revoked["secretKey"], "", "Bearer x"):
        answer = client.request(**request, headers={"Authorization": f"Bearer {credential}"})
        assert answer.status_code == 401, (credential, answer.text)


def test_api2_expired_keys_are_refused_everywhere(app, client, victim):
    from datetime import timedelta

    from keyhouse.store.models import utcnow

    with app.runtime.store.session() as s:
        _, plaintext = issue_key(s, organization_id=victim.admin.organization_id,
                                         user_id=victim.admin.user_id, description="expired",
                                         expires_at=utcnow() - timedelta(seconds=1))
    for method, path, op in OPERATIONS:
        answer = client.request(**request_for(method, path, op, victim),
                                headers={"Authorization": f"Bearer {plaintext}"})
        assert answer.status_code == 401, (op["operationId"], answer.text)


# ------------------------------------------------------------------ API3: mass assignment

READ_ONLY = {
    "/api/v1/api-keys": ("billing", {"id": "chosen-id", "secretKey": "kh_chosen", "createdTime": "2000-01-01T00:00:00Z",
                                     "updatedTime": "2000-01-01T00:00:00Z", "_links": [], "organization": "x"}),
    "/api/v1/users/auth/keys": ("cloud", {"id": "chosen-id", "key": "kh_chosen",
                                          "creation_date": "2000-01-01T00:00:00Z",
                                          "user_id": "someone", "organization_id": "x"}),
    "/api/v1/user/api-keys": ("bearer", {"id": "chosen-id", "key": "kh_chosen", "masked_key": "kh_x", "active": False,
                                         "created_at": "2000-01-01T00:00:00Z", "org_id": "x", "last_used_at": None}),
}
NAME_FIELD = {"/api/v1/api-keys": "description", "/api/v1/users/auth/keys": "description",
              "/api/v1/user/api-keys": "name"}


@pytest.mark.parametrize("url", sorted(READ_ONLY))
def test_api3_read_only_fields_are_refused_on_create_and_never_stored(app, client, victim, url):
    family, fields = READ_ONLY[url]
    before = victim.snapshot()
    for name, value in fields.items():
        answer = client.post(url, json={NAME_FIELD[url]: "mass", name: value}, headers=getattr(victim.admin, family))
        assert answer.status_code in (400, 422), (name, answer.text)
        assert name in answer.text  # the error names the field
    assert victim.snapshot() == before


# ------------------------------------------------------------------ timing

def test_lookups_are_by_keyed_hash_and_malformed_guesses_never_reach_the_database(client, victim, monkeypatch):
    looked_up = []
    real = credentials.credential_by_hash

    def spy(db, digest):
        looked_up.append(digest)
        return real(db, digest)

    monkeypatch.setattr(credentials, "credential_by_hash", spy)
    good = victim.admin.key
    body = good[:-keys.CHECKSUM_LENGTH]
    wrong_last = body[:-1] + ("a" if body[-1] != "a" else "b")
    # Well-formed (their checksums are right) but wrong: all but the last character right; all wrong.
    near_misses = [wrong_last + keys.checksum(wrong_last), keys.generate()]
    malformed = [good[:-1] + ("A" if good[-1] != "A" else "B"), "kh_" + "a" * 38, "kh_tooshort"]
    for guess in near_misses + malformed:
        client.get("/api/v1/api-keys", headers={"REB-APIKEY": guess})
    # Only well-formed keys are looked up, and only by their HMAC: the database never sees the key, so
    # no index walk can tell how much of a guess was right.
    assert len(looked_up) == sum(keys.is_well_formed(g) for g in near_misses)
    assert all(re.fullmatch(r"[0-9a-f]{64}", d) for d in looked_up)
    assert keys.hash_key(SECRET, near_misses[0]) in looked_up and body not in str(looked_up)
