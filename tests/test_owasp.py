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

from keyhouse import keys
from keyhouse.store import credentials
from tests.conftest import SECRET, World, add_actor, add_organization, issue_key, make_app, populated
from tests.victims import IDS, OPERATIONS, SPEC, Victim, request_for

# One organization of victims for the module: each test asks what one operation does to it and asserts
# that nothing changed, so it is built once (building it per test was four fifths of the module's time).
# What a test adds (a narrow key, a revoked one) is its own and never the victim's; the attacking
# organization is each test's own; rate limits are counted afresh for every test, as on the shared app.

@pytest.fixture(scope="module")
def owasp_app(tmp_path_factory):
    application = make_app(tmp_path_factory.mktemp("owasp"))
    yield application
    application.runtime.store.dispose()


@pytest.fixture(scope="module")
def owasp_world(owasp_app) -> World:
    return populated(owasp_app)


@pytest.fixture(scope="module")
def owasp_victim(owasp_app, owasp_world) -> Victim:
    with owasp_app.test_client() as client:
        return Victim(owasp_app, client, owasp_world)


@pytest.fixture
def app(owasp_app):
    owasp_app.runtime.recorder.flush()
    owasp_app.runtime.limiter.forget()
    return owasp_app


@pytest.fixture
def world(app, owasp_world) -> World:
    """The victims, and an attacking organization of the test's own (what it makes under the victims' ids,
    as it may, must not be taken for theirs by a later test)."""
    attacker = add_organization(app, "globex")
    return World(owasp_world.acme_admin, owasp_world.acme_member,
                 add_actor(app, attacker, f"admin-{attacker}@globex.test", "admin"))


@pytest.fixture
def victim(app, owasp_victim) -> Victim:
    return owasp_victim


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
    _refused_and_changes_nothing(client, victim, operation_id, made.json()["key"])


def _refused_and_changes_nothing(client, victim: Victim, operation_id: str, key: str) -> None:
    """The operation, called with `key` at the victim's objects, is 403 and leaves them as they were."""
    method, path, op = next(o for o in OPERATIONS if o[2]["operationId"] == operation_id)
    request = request_for(method, path, op, victim)
    before = victim.snapshot()
    answer = client.request(**request, headers={"Authorization": f"Bearer {key}"})
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
    _refused_and_changes_nothing(client, victim, operation_id, made.json()["secretKey"])


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
