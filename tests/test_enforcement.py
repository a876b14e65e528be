"""What a key says about itself is enforced in every family: permissions, type, addresses, time."""

from datetime import UTC, datetime, timedelta

import jwt
import pytest

from keyhouse import keys
from keyhouse.auth import _jwt_key
from tests.conftest import SECRET
from tests.helpers import API


def billing_key(client, actor, **fields):
    r = client.post(f"{API}/api-keys", json={"description": "k", **fields}, headers=actor.billing)
    assert r.status_code == 201, r.text
    return r.json()["secretKey"]


# ------------------------------------------------------------------ permissions

def test_a_key_calls_only_the_operations_it_holds_in_every_family(client, world):
    key = billing_key(client, world.acme_admin, acl=[{"scope": {}, "permissions": ["getApiKeyCollection",
                                                                                   "listMyApiKeys"]}])
    assert client.get(f"{API}/api-keys", headers={"REB-APIKEY": key}).status_code == 200
    assert client.get(f"{API}/user/api-keys", headers={"Authorization": f"Bearer {key}"}).status_code == 200
    denied = client.post(f"{API}/api-keys", json={"description": "x"}, headers={"REB-APIKEY": key})
    assert denied.status_code == 403 and "postApiKey" in denied.json()["detail"]
    cloud = client.get(f"{API}/users/auth/keys", headers={"Authorization": f"ApiKey {key}"})
    assert cloud.status_code == 403 and cloud.headers["x-cloud-error-codes"] == "root.forbidden"


def test_workspace_scopes_are_the_same_permissions(client, world):
    made = client.post(f"{API}/user/api-keys", json={"name": "ro", "allowed_scopes": ["getApiKeyCollection"]},
                       headers=world.acme_admin.bearer).json()
    assert client.get(f"{API}/api-keys", headers={"REB-APIKEY": made["key"]}).status_code == 200
    r = client.get(f"{API}/user/api-keys", headers={"Authorization": f"Bearer {made['key']}"})
    assert r.status_code == 403 and r.json()["type"] == "permission_error"


def test_a_key_never_grants_more_than_its_creator_holds(client, world):
    narrow = billing_key(client, world.acme_admin, acl=[{"scope": {}, "permissions": ["postApiKey",
                                                                                      "getApiKeyCollection"]}])
    ok = client.post(f"{API}/api-keys", json={"description": "sub", "acl": [{"scope": {},
                                                                             "permissions": ["getApiKeyCollection"]}]},
                     headers={"REB-APIKEY": narrow})
    assert ok.status_code == 201
    for permissions in (["deleteApiKeyResource"], ["*"]):
        r = client.post(f"{API}/api-keys", json={"description": "wider", "acl": [{"scope": {},
                                                                                  "permissions": permissions}]},
                        headers={"REB-APIKEY": narrow})
        assert r.status_code == 403 and "more than its creator" in r.json()["detail"]
    # without an ACL the new key gets its creator's permissions, no more
    default = client.post(f"{API}/api-keys", json={"description": "default"}, headers={"REB-APIKEY": narrow}).json()
    assert "acl" not in default
    assert client.post(f"{API}/api-keys", json={"description": "x"},
                       headers={"REB-APIKEY": default["secretKey"]}).status_code == 201
    assert client.get(f"{API}/user/api-keys",
                      headers={"Authorization": f"Bearer {default['secretKey']}"}).status_code == 403


def test_publishable_keys_never_write(client, world):
    r = client.post(f"{API}/api-keys", json={"description": "p", "type": "publishable",
                                               "acl": [{"scope": {}, "permissions": ["postApiKey"]}]},
                    headers=world.acme_admin.billing)
    assert r.status_code == 403 and "publishable" in r.json()["detail"].lower()
    listing = client.post(f"{API}/api-keys", json={"description": "p", "type": "publishable",
                                                     "acl": [{"scope": {}, "permissions": ["getApiKeyCollection"]}]},
                          headers=world.acme_admin.billing)
    assert listing.status_code == 403, listing.text
    assert "publishable keys may hold only" in listing.json()["detail"].lower()
    publishable = billing_key(client, world.acme_admin, type="publishable")  # nothing named: it holds nothing
    shown = client.get(f"{API}/keys", headers=world.acme_admin.bearer).json()
    assert next(k for k in shown if k["type"] == "publishable")["permissions"] == []
    assert client.get(f"{API}/api-keys", headers={"REB-APIKEY": publishable}).status_code == 403
    for method, path, body in (("POST", "/api-keys", {"description": "x"}),
                               ("DELETE", f"/api-keys/{world.acme_admin.key_id}", None),
                               ("POST", "/user/api-keys", {"name": "x"})):
        r = client.request(method, f"{API}{path}", json=body, headers={"Authorization": f"Bearer {publishable}"})
        assert r.status_code == 403, (method, path)


def test_acl_entries_for_other_organizations_grant_nothing(client, world):
    key = billing_key(client, world.acme_admin, acl=[
        {"scope": {"organizationId": [world.globex_admin.organization_id]}, "permissions": ["*"]},
        {"scope": {"organizationId": [world.acme_admin.organization_id]}, "permissions": ["getApiKeyCollection"]}])
    assert client.get(f"{API}/api-keys", headers={"REB-APIKEY": key}).status_code == 200
    assert client.post(f"{API}/api-keys", json={"description": "x"}, headers={"REB-APIKEY": key}).status_code == 403


def test_admin_only_operations(client, world):
    for path in ("/users/auth/keys/_all", "/audit/events"):
        assert client.get(f"{API}{path}", headers=world.acme_member.bearer).status_code == 403
        assert client.get(f"{API}{path}", headers=world.acme_admin.bearer).status_code == 200


# ------------------------------------------------------------------ addresses

@pytest.mark.parametrize("allowed, address, status", [
    (["203.0.113.5"], "203.0.113.5", 200),
    (["203.0.113.0/24"], "203.0.113.77", 200),
    (["203.0.113.0/24"], "198.51.100.1", 403),
    (["2001:db8::/32"], "2001:db8:1::9", 200),
    (["2001:db8::/32"], "2001:db9::1", 403),
    (None, "198.51.100.1", 200),
    ([], "198.51.100.1", 200),
])
def test_allowed_ips_are_checked_against_the_client_address(app, client, world, allowed, address, status):
    key = billing_key(client, world.acme_admin, allowedIps=allowed)
    with app.test_client(client=(address, 40000)) as there:
        r = there.get(f"{API}/users/auth/keys", headers={"Authorization": f"ApiKey {key}"})
    assert r.status_code == status
    if status == 403:
        assert r.headers["x-cloud-error-codes"] == "root.forbidden"


def test_forwarded_headers_are_not_trusted(app, client, world):
    key = billing_key(client, world.acme_admin, allowedIps=["203.0.113.5"])
    with app.test_client(client=("198.51.100.1", 40000)) as there:
        r = there.get(f"{API}/api-keys", headers={"REB-APIKEY": key, "X-Forwarded-For": "203.0.113.5",
                                                  "Forwarded": "for=203.0.113.5"})
    assert r.status_code == 403


# ------------------------------------------------------------------ reroll

def reroll(client, actor, key_id, grace):
    return client.post(f"{API}/keys/{key_id}/reroll", json={"grace_period_seconds": grace}, headers=actor.bearer)


def test_reroll_with_grace_keeps_both_secrets_until_it_ends(app, client, world):
    made = client.post(f"{API}/user/api-keys", json={"name": "rot", "allowed_scopes": ["listMyApiKeys"]},
                       headers=world.acme_member.bearer).json()
    r = reroll(client, world.acme_member, made["id"], 3600)
    assert r.status_code == 201
    new = r.json()
    assert new["id"] == made["id"] and new["key"] != made["key"]
    for secret in (made["key"], new["key"]):
        assert client.get(f"{API}/user/api-keys", headers={"Authorization": f"Bearer {secret}"}).status_code == 200
    listed = {k["id"]: k for k in client.get(f"{API}/user/api-keys", headers=world.acme_member.bearer).json()}
    assert listed[made["id"]]["allowed_scopes"] == ["listMyApiKeys"]  # everything else is kept
    assert listed[made["id"]]["masked_key"] == new["key"][:7] + "…" + new["key"][-4:]
    # past the grace window the old secret is refused
    from sqlalchemy import update

    from keyhouse.store.models import RetiredSecret
    with app.runtime.store.session() as s:
        s.execute(update(RetiredSecret).values(valid_until=datetime.now(UTC) - timedelta(seconds=1)))
    old = client.get(f"{API}/user/api-keys", headers={"Authorization": f"Bearer {made['key']}"})
    assert old.status_code == 401 and "revoked" in old.json()["detail"]
    assert client.get(f"{API}/user/api-keys", headers={"Authorization": f"Bearer {new['key']}"}).status_code == 200


def test_reroll_without_grace_revokes_the_old_secret_at_once(client, world):
    made = client.post(f"{API}/user/api-keys", json={"name": "rot"}, headers=world.acme_admin.bearer).json()
    new = reroll(client, world.acme_admin, made["id"], 0).json()
    assert client.get(f"{API}/user/api-keys", headers={"Authorization": f"Bearer {made['key']}"}).status_code == 401
    assert client.get(f"{API}/user/api-keys", headers={"Authorization": f"Bearer {new['key']}"}).status_code == 200


def test_reroll_is_for_the_owner_or_an_admin_of_the_organization(client, world):
    assert reroll(client, world.acme_member, world.acme_admin.key_id, 0).status_code == 404
    assert reroll(client, world.globex_admin, world.acme_member.key_id, 0).status_code == 404
    assert reroll(client, world.acme_admin, world.acme_member.key_id, 60).status_code == 201
    r = reroll(client, world.acme_admin, world.acme_admin.key_id, 10**9)
    assert r.status_code == 422 and r.json()["invalidFields"][0]["field"] == "grace_period_seconds"


# ------------------------------------------------------------------ verify

def verify(client, actor, **body):
    r = client.post(f"{API}/keys/verify", json=body, headers=actor.bearer)
    assert r.status_code == 200, r.text
    return r.json()


def test_verify_codes(app, client, world):
    gateway = world.acme_admin
    good = billing_key(client, gateway, acl=[{"scope": {}, "permissions": ["getApiKeyCollection"]}])
    v = verify(client, gateway, key=good)
    assert v["valid"] and v["code"] == "VALID" and v["permissions"] == ["getApiKeyCollection"]
    assert v["organization_id"] == gateway.organization_id and v["expires_at"] is None
    assert verify(client, gateway, key=good, permissions=["getApiKeyCollection"])["code"] == "VALID"
    assert verify(client, gateway, key=good, permissions=["postApiKey"])["code"] == "INSUFFICIENT_PERMISSIONS"
    assert verify(client, gateway, key="kh_nonsense") == {"valid": False, "code": "NOT_FOUND"}
    assert verify(client, gateway, key=keys.generate()) == {"valid": False, "code": "NOT_FOUND"}
    # another organization's key does not exist for this gateway
    assert verify(client, gateway, key=world.globex_admin.key) == {"valid": False, "code": "NOT_FOUND"}

    fenced = billing_key(client, gateway, allowedIps=["192.0.2.0/24"])
    assert verify(client, gateway, key=fenced, ip="192.0.2.9")["code"] == "VALID"
    assert verify(client, gateway, key=fenced, ip="198.51.100.9")["code"] == "FORBIDDEN"
    assert verify(client, gateway, key=fenced)["code"] == "FORBIDDEN"

    doomed = client.post(f"{API}/api-keys", json={"description": "d"}, headers=gateway.billing).json()
    client.delete(f"{API}/api-keys/{doomed['id']}", headers=gateway.billing)
    revoked = verify(client, gateway, key=doomed["secretKey"])
    assert revoked["code"] == "REVOKED" and revoked["key_id"] == doomed["id"] and not revoked["valid"]

    short = client.post(f"{API}/users/auth/keys", json={"description": "s", "expiration": "1h"},
                        headers=gateway.cloud).json()
    from keyhouse.store import api_keys
    with app.runtime.store.session() as s:
        api_keys.get_key(s, gateway.organization_id, short["id"]).expires_at = datetime.now(UTC) - timedelta(1)
    assert verify(client, gateway, key=short["key"])["code"] == "EXPIRED"


def test_verify_rejects_malformed_requests(client, world):
    r = client.post(f"{API}/keys/verify", json={"key": 5}, headers=world.acme_admin.bearer)
    assert r.status_code == 422
    r = client.post(f"{API}/keys/verify", json={"key": "x", "ip": "not-an-ip"}, headers=world.acme_admin.bearer)
    assert r.status_code == 422 and r.json()["invalidFields"][0]["field"] == "ip"


# ------------------------------------------------------------------ tokens

def token_for(client, headers, **body):
    r = client.post(f"{API}/auth/tokens", json=body, headers=headers)
    assert r.status_code == 201, r.text
    return r.json()


def test_a_token_works_on_billing_operations_and_dies_with_its_key(client, world):
    made = client.post(f"{API}/api-keys", json={"description": "for tokens"}, headers=world.acme_admin.billing).json()
    issued = token_for(client, {"REB-APIKEY": made["secretKey"]}, expires_in=120)
    assert issued["token_type"] == "Bearer" and issued["expires_in"] == 120
    bearer = {"Authorization": f"Bearer {issued['access_token']}"}
    assert client.get(f"{API}/api-keys", headers=bearer).status_code == 200
    # not a credential of the other families
    assert client.get(f"{API}/user/api-keys", headers=bearer).status_code == 401
    client.delete(f"{API}/api-keys/{made['id']}", headers=world.acme_admin.billing)
    assert client.get(f"{API}/api-keys", headers=bearer).status_code == 401


def test_a_token_carries_its_keys_permissions(client, world):
    narrow = billing_key(client, world.acme_admin, acl=[{"scope": {}, "permissions": ["getApiKeyCollection",
                                                                                      "createAuthToken"]}])
    bearer = {"Authorization": f"Bearer {token_for(client, {'REB-APIKEY': narrow})['access_token']}"}
    assert client.get(f"{API}/api-keys", headers=bearer).status_code == 200
    assert client.post(f"{API}/api-keys", json={"description": "x"}, headers=bearer).status_code == 403


def _claims(world, **overrides):
    now = datetime.now(UTC)
    return {"iss": "keyhouse", "sub": world.acme_admin.user_id, "org": world.acme_admin.organization_id,
            "kid": world.acme_admin.key_id, "ver": 1, "perms": ["*"], "iat": now,
            "exp": now + timedelta(minutes=5), **overrides}


@pytest.mark.parametrize("forge", [
    lambda w: jwt.encode(_claims(w), b"not-the-server-secret-but-long-enough-for-hs256", algorithm="HS256"),
    lambda w: jwt.encode(_claims(w), _jwt_key(SECRET), algorithm="HS512"),
    lambda w: jwt.encode(_claims(w), None, algorithm="none"),
    lambda w: jwt.encode(_claims(w, exp=datetime.now(UTC) - timedelta(seconds=5)), _jwt_key(SECRET), algorithm="HS256"),
    lambda w: jwt.encode(_claims(w, iss="someone-else"), _jwt_key(SECRET), algorithm="HS256"),
    lambda w: jwt.encode(_claims(w, kid=w.globex_admin.key_id), _jwt_key(SECRET), algorithm="HS256"),
    lambda w: "a.b.c",
])
def test_forged_expired_or_foreign_tokens_are_refused(client, world, forge):
    r = client.get(f"{API}/api-keys", headers={"Authorization": f"Bearer {forge(world)}"})
    assert r.status_code == 401 and r.json()["status"] == 401


def test_a_genuine_token_signed_like_ours_works(client, world):
    token = jwt.encode(_claims(world), _jwt_key(SECRET), algorithm="HS256")
    assert client.get(f"{API}/api-keys", headers={"Authorization": f"Bearer {token}"}).status_code == 200


# ------------------------------------------------------------------ audit trail and last use

def test_audit_trail_records_changes_and_failures_without_secrets(app, client, world):
    admin = world.acme_admin
    made = client.post(f"{API}/api-keys", json={"description": "audited"}, headers=admin.billing).json()
    client.put(f"{API}/api-keys/{made['id']}", json={"description": "audited 2"}, headers=admin.billing)
    rerolled = client.post(f"{API}/keys/{made['id']}/reroll", json={"grace_period_seconds": 0},
                           headers=admin.bearer).json()
    client.delete(f"{API}/api-keys/{made['id']}", headers=admin.billing)
    client.get(f"{API}/api-keys", headers={"REB-APIKEY": rerolled["key"]})  # revoked: a failed authentication
    rid = client.post(f"{API}/deployments/traffic-filter/rulesets", json={"name": "n", "type": "ip", "region": "r",
                                                                         "rules": []}, headers=admin.cloud).json()["id"]
    client.delete(f"{API}/deployments/traffic-filter/rulesets/{rid}", headers=admin.cloud)
    app.runtime.recorder.flush()

    r = client.get(f"{API}/audit/events?limit=50", headers=admin.bearer)
    assert r.status_code == 200
    events = r.json()
    actions = [(e["action"], e["target_id"]) for e in reversed(events)]
    assert ("key.created", made["id"]) in actions and ("key.updated", made["id"]) in actions
    assert ("key.rerolled", made["id"]) in actions and ("key.revoked", made["id"]) in actions
    assert ("ruleset.created", rid) in actions and ("ruleset.deleted", rid) in actions
    failed = [e for e in events if e["action"] == "auth.failed"]
    assert failed and failed[0]["actor_key_id"] == made["id"] and failed[0]["detail"] == "revoked"
    assert failed[0]["ip"] == "testclient" and failed[0]["target_id"] == "getApiKeyCollection"
    changes = [e for e in events if e["action"] != "auth.failed"]
    assert all(e["actor_user_id"] == admin.user_id and e["actor_key_id"] == admin.key_id for e in changes)
    assert r.headers["Pagination-Total"] == str(len(events))
    assert made["secretKey"] not in r.text and rerolled["key"] not in r.text and admin.key not in r.text
    # nothing of acme's trail is visible to globex
    assert client.get(f"{API}/audit/events", headers=world.globex_admin.bearer).json() == []


def test_last_use_is_recorded_in_batches(app, client, world):
    me = world.acme_member
    before = client.get(f"{API}/user/api-keys/{me.key_id}", headers=me.bearer).json()
    app.runtime.recorder.flush()
    after = client.get(f"{API}/user/api-keys/{me.key_id}", headers=me.bearer).json()
    assert before["last_used_at"] is None  # the first use is still in memory when it reads
    assert after["last_used_at"] is not None
    used = datetime.fromisoformat(after["last_used_at"].replace("Z", "+00:00"))
    assert abs(used - datetime.now(UTC)) < timedelta(minutes=1)


def test_last_uses_and_failures_wait_out_a_database_outage(app, client, world, monkeypatch):
    from sqlalchemy.exc import OperationalError

    me = world.acme_member
    assert client.get(f"{API}/user/api-keys/{me.key_id}", headers=me.bearer).status_code == 200
    assert client.get(f"{API}/api-keys", headers={"REB-APIKEY": keys.generate()}).status_code == 401
    store, real = app.runtime.store, app.runtime.store.session

    def unreachable():
        raise OperationalError("BEGIN", {}, Exception("connection refused"))

    monkeypatch.setattr(store, "session", unreachable)
    app.runtime.recorder.flush()  # fails: everything is kept for the next flush
    monkeypatch.setattr(store, "session", real)
    app.runtime.recorder.flush()
    assert client.get(f"{API}/user/api-keys/{me.key_id}", headers=me.bearer).json()["last_used_at"] is not None
    from sqlalchemy import func, select

    from keyhouse.store.models import AuditEvent

    with store.session() as s:  # the refused unknown key's event (it names no organization) was kept too
        assert s.scalar(select(func.count()).select_from(AuditEvent).where(AuditEvent.action == "auth.failed")) == 1


def test_failed_authentications_dropped_unwritten_are_counted_for_operators(app):
    from prometheus_client import REGISTRY

    from keyhouse.recorder import MAX_PENDING_EVENTS, Recorder

    def dropped() -> float:
        return REGISTRY.get_sample_value("keyhouse_audit_events_dropped_total") or 0.0

    before = dropped()
    recorder = Recorder(app.runtime.store)  # one that never flushes: as while the database is away
    for _ in range(MAX_PENDING_EVENTS + 5):
        recorder.auth_failed(organization_id=None, actor_key_id=None, ip="192.0.2.1", detail="not found")
    assert dropped() - before == 5
