"""Credits and a key's own verify rate limit: what a gateway spends and how fast, and what verify says."""

from __future__ import annotations

from datetime import timedelta

import pytest
from sqlalchemy import update

from keyhouse.store.models import ApiKey, utcnow
from tests.helpers import API, DOCUMENTS, declare, verify
from tests.helpers import create_key as create


def events(client, admin) -> list[tuple[str, str]]:
    return [(e["action"], e["target_id"]) for e in client.get(f"{API}/audit/events", headers=admin.bearer).json()]


def test_the_day_of_a_key_with_three_credits(client, world):
    """The issue's day: a key for cus_42 holding getDocument only, with 3 credits."""
    admin = world.acme_admin
    assert declare(client, admin, name="documents", openapi=DOCUMENTS).status_code == 201
    key = create(client, admin, name="cus_42", owner_id="cus_42", permissions=["documents:getDocument"],
                 credits={"remaining": 3})
    assert key["credits"] == {"remaining": 3, "refill": None}
    answers = [verify(client, admin, key["key"], api="documents", permissions=["getDocument"]) for _ in range(4)]
    assert [(a["code"], a["remaining"]) for a in answers] == [("VALID", 2), ("VALID", 1), ("VALID", 0),
                                                              ("USAGE_EXCEEDED", 0)]
    assert answers[0]["owner_id"] == "cus_42" and answers[3]["valid"] is False
    assert verify(client, admin, key["key"], api="documents", permissions=["deleteDocument"])["code"] == \
        "INSUFFICIENT_PERMISSIONS"
    assert client.get(f"{API}/keys/{key['id']}", headers=admin.bearer).json()["credits"]["remaining"] == 0
    assert ("key.credits_exhausted", key["id"]) in events(client, admin)
    without = DOCUMENTS.replace("operationId: getDocument", "operationId: readDocument")
    assert client.put(f"{API}/apis/documents", json={"openapi": without}, headers=admin.bearer).status_code == 200
    assert client.get(f"{API}/keys/{key['id']}", headers=admin.bearer).json()["permissions"] == []


def test_a_cost_spends_that_many_and_too_few_spends_none(client, world):
    admin = world.acme_admin
    key = create(client, admin, name="k", credits={"remaining": 5})
    assert (verify(client, admin, key["key"], cost=3)["remaining"]) == 2
    refused = verify(client, admin, key["key"], cost=3)
    assert (refused["code"], refused["remaining"]) == ("USAGE_EXCEEDED", 2)
    free = verify(client, admin, key["key"], cost=0)
    assert (free["code"], free["remaining"]) == ("VALID", 2)
    assert verify(client, admin, key["key"], cost=2)["remaining"] == 0
    assert ("key.credits_exhausted", key["id"]) in events(client, admin)


def test_a_refused_verify_spends_nothing(client, world):
    admin = world.acme_admin
    key = create(client, admin, name="k", permissions=["getKey"], credits={"remaining": 1},
                 allowed_ips=["192.0.2.0/24"])
    assert verify(client, admin, key["key"], ip="198.51.100.1")["code"] == "FORBIDDEN"
    assert verify(client, admin, key["key"], ip="192.0.2.1", permissions=["listKeys"])["code"] == \
        "INSUFFICIENT_PERMISSIONS"
    assert verify(client, admin, key["key"], ip="192.0.2.1")["remaining"] == 0


def test_a_key_without_credits_spends_nothing_and_writes_nothing(client, world, app):
    """Verify of a key without credits writes no credits. The app's own background work (the recorder's
    flush of last uses and usage, its pruner) may write on the same engine meanwhile, on its schedule (CI
    once caught the pruner's DELETE here): so the statements looked for are those that touch credits."""
    admin = world.acme_admin
    key = create(client, admin, name="unlimited")
    statements = []
    from sqlalchemy import event

    def seen(_conn, _cursor, statement, *_):
        statements.append(statement)

    event.listen(app.runtime.store.engine, "before_cursor_execute", seen)
    try:
        answer = verify(client, admin, key["key"], cost=5)
    finally:
        event.remove(app.runtime.store.engine, "before_cursor_execute", seen)
    assert (answer["code"], answer["remaining"]) == ("VALID", None)
    writes = [s for s in statements if s.lstrip().upper().startswith(("UPDATE", "INSERT", "DELETE"))]
    assert not [s for s in writes if "credits" in s], writes


def test_credits_refill_once_their_interval_has_passed(client, world, app):
    admin = world.acme_admin
    key = create(client, admin, name="k", credits={"remaining": 1, "refill": {"amount": 2, "interval_seconds": 60}})
    assert verify(client, admin, key["key"])["remaining"] == 0
    assert verify(client, admin, key["key"])["code"] == "USAGE_EXCEEDED"
    with app.runtime.store.session() as s:  # a minute later
        s.execute(update(ApiKey).where(ApiKey.id == key["id"])
                  .values(credits_refilled_at=utcnow() - timedelta(seconds=61)))
    assert client.get(f"{API}/keys/{key['id']}", headers=admin.bearer).json()["credits"] == {
        "remaining": 2, "refill": {"amount": 2, "interval_seconds": 60}}
    assert [verify(client, admin, key["key"])["remaining"] for _ in range(2)] == [1, 0]
    assert verify(client, admin, key["key"])["code"] == "USAGE_EXCEEDED"  # refilled once, not twice


def test_credits_and_rate_limit_are_replaced_whole_and_null_clears(client, world):
    admin = world.acme_admin
    key = create(client, admin, name="k", credits={"remaining": 1}, rate_limit={"limit": 5, "window_seconds": 60})
    assert key["rate_limit"] == {"limit": 5, "window_seconds": 60}
    changed = client.patch(f"{API}/keys/{key['id']}", json={"credits": {"remaining": 7}}, headers=admin.bearer)
    assert changed.status_code == 200 and changed.json()["credits"] == {"remaining": 7, "refill": None}
    cleared = client.patch(f"{API}/keys/{key['id']}", json={"credits": None, "rate_limit": None},
                           headers=admin.bearer).json()
    assert (cleared["credits"], cleared["rate_limit"]) == (None, None)
    assert verify(client, admin, key["key"])["remaining"] is None


def test_a_keys_own_rate_limit_says_when_it_resets(client, world):
    admin = world.acme_admin
    key = create(client, admin, name="k", rate_limit={"limit": 2, "window_seconds": 60}, credits={"remaining": 10})
    first, second, third = (verify(client, admin, key["key"]) for _ in range(3))
    assert (first["rate_limit"]["limit"], first["rate_limit"]["remaining"]) == (2, 1)
    assert second["rate_limit"]["remaining"] == 0
    assert (third["code"], third["rate_limit"]["remaining"]) == ("RATE_LIMITED", 0)
    assert third["rate_limit"]["reset_at"] > utcnow().strftime("%Y-%m-%dT%H:%M:%SZ")
    assert "remaining" not in third  # a refused verify spent no credit
    assert client.get(f"{API}/keys/{key['id']}", headers=admin.bearer).json()["credits"]["remaining"] == 8
    other = create(client, admin, name="other")  # the default limit per key: counted apart
    assert verify(client, admin, other["key"])["code"] == "VALID"


@pytest.mark.parametrize("field", ["permissions", "any_permissions"])
def test_a_bare_name_without_its_api_is_refused_where_it_stands(client, world, field):
    admin = world.acme_admin
    key = create(client, admin, name="k", credits={"remaining": 1})
    answer = client.post(f"{API}/keys/verify", json={"key": key["key"], field: ["getKey", "getDocument"]},
                         headers=admin.bearer)
    assert answer.status_code == 422, answer.text
    assert [f["field"] for f in answer.json()["invalidFields"]] == [f"{field}.1"]
    assert client.get(f"{API}/keys/{key['id']}", headers=admin.bearer).json()["credits"]["remaining"] == 1


def test_a_billing_acl_entry_names_the_api_it_is_for(client, world):
    admin = world.acme_admin
    declare(client, admin, name="documents", openapi=DOCUMENTS)
    made = client.post(f"{API}/api-keys", headers=admin.billing, json={
        "description": "scoped", "acl": [{"scope": {"api": "documents"}, "permissions": ["getDocument"]},
                                         {"scope": {}, "permissions": ["getApiKeyCollection"]}]})
    assert made.status_code == 201, made.text
    assert made.json()["acl"][0] == {"scope": {"api": "documents"}, "permissions": ["getDocument"]}
    secret = made.json()["secretKey"]
    assert verify(client, admin, secret, permissions=["documents:getDocument", "getApiKeyCollection"])["valid"]
    assert verify(client, admin, secret, api="documents", permissions=["getDocument"])["valid"]
    assert not verify(client, admin, secret, api="documents", permissions=["deleteDocument"])["valid"]
    unknown = client.post(f"{API}/api-keys", headers=admin.billing, json={
        "description": "x", "acl": [{"scope": {"api": "documents"}, "permissions": ["getDocument", "nope"]}]})
    assert unknown.status_code == 422 and unknown.json()["invalidFields"][0]["field"] == "acl.0.permissions.1"
    bare = client.post(f"{API}/api-keys", headers=admin.billing, json={
        "description": "x", "acl": [{"scope": {}, "permissions": ["getDocument"]}]})
    assert bare.status_code == 422 and bare.json()["invalidFields"][0]["field"] == "acl.0.permissions.0"
    # the API forgets getDocument: the key loses it, and so does its ACL as the billing view shows it
    without = DOCUMENTS.replace("operationId: getDocument", "operationId: readDocument")
    assert client.put(f"{API}/apis/documents", json={"openapi": without}, headers=admin.bearer).status_code == 200
    shown = client.get(f"{API}/api-keys/{made.json()['id']}", headers=admin.billing).json()
    assert shown["acl"] == [{"scope": {"api": "documents"}, "permissions": []},
                            {"scope": {}, "permissions": ["getApiKeyCollection"]}]


def _time_fields(schema: dict, document: dict, prefix: str = "") -> list[str]:
    """The date-time fields of a schema of the contract, nested ones as `a.b`."""
    from keyhouse import spec

    if "$ref" in schema:
        schema = spec.schema(document, schema["$ref"].rsplit("/", 1)[-1])
    found = []
    for name, field in schema.get("properties", {}).items():
        field = spec.schema(document, field["$ref"].rsplit("/", 1)[-1]) if "$ref" in field else field
        if field.get("format") == "date-time":
            found.append(prefix + name)
        elif field.get("type") == "object":
            found += _time_fields(field, document, f"{prefix}{name}.")
    return found


def test_every_time_in_a_verdict_carries_milliseconds(client, world):
    """Generated from VerifyKeyResponse: each of its date-time fields, filled in, is written to the
    millisecond (a reset cut to the second read up to a second early)."""
    from keyhouse import spec

    document = spec.document()
    fields = _time_fields(spec.schema(document, "VerifyKeyResponse"), document)
    assert {"expires_at", "secret_valid_until", "refill_at", "rate_limit.reset_at"} <= set(fields)
    admin = world.acme_admin
    key = create(client, admin, name="k", expires_at=(utcnow() + timedelta(days=1)).strftime("%Y-%m-%dT%H:%M:%SZ"),
                 credits={"remaining": 5, "refill": {"amount": 5, "interval_seconds": 3600}},
                 rate_limit={"limit": 10, "window_seconds": 60})
    rerolled = client.post(f"{API}/keys/{key['id']}/reroll", json={"grace_period_seconds": 600},
                           headers=admin.bearer).json()
    assert rerolled["key"] != key["key"]
    verdict = verify(client, admin, key["key"])  # the old secret, in its grace
    seen = 0
    for field in fields:
        value = verdict
        for part in field.split("."):
            value = (value or {}).get(part)
        assert value is not None, (field, verdict)
        assert len(value) == len("2026-12-05T09:14:23.611Z") and value[19] == "." and value.endswith("Z"), \
            (field, value)
        seen += 1
    assert seen == len(fields)


def test_usage_exceeded_says_when_the_credits_come_back(client, world):
    admin = world.acme_admin
    key = create(client, admin, name="k", credits={"remaining": 1, "refill": {"amount": 3, "interval_seconds": 3600}})
    spent, refused = verify(client, admin, key["key"]), verify(client, admin, key["key"])
    assert (spent["code"], refused["code"]) == ("VALID", "USAGE_EXCEEDED")
    from datetime import datetime

    came_back = datetime.fromisoformat(refused["refill_at"])
    assert timedelta(minutes=59) < came_back - utcnow() <= timedelta(hours=1), refused
    never = create(client, admin, name="never", credits={"remaining": 0})
    assert verify(client, admin, never["key"])["refill_at"] is None


def test_a_member_verifies_only_the_keys_they_see(client, world):
    """A member sees only their own keys; every other key of the organization is NOT_FOUND to their verify,
    as it is to their GET."""
    admin, member = world.acme_admin, world.acme_member
    theirs = create(client, member, name="mine")
    others = create(client, admin, name="admin's")
    assert verify(client, member, theirs["key"])["code"] == "VALID"
    assert verify(client, member, others["key"]) == {"valid": False, "code": "NOT_FOUND"}
    assert verify(client, member, admin.key) == {"valid": False, "code": "NOT_FOUND"}
    assert verify(client, admin, theirs["key"])["code"] == "VALID"
