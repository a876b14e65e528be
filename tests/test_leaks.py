"""Leak intake: GitHub's secret scanning reports a key found in public, signed; the key's organization's
policy revokes it or keeps it, and either way the trail and the change feed say it leaked."""

from __future__ import annotations

import json

import pytest
from cryptography.hazmat.primitives.asymmetric import ec

from keyhouse import keys
from keyhouse.leaks import token_hash
from tests.helpers import API, create_key, github_signed, problem_of, report_leaks, verify
from tests.victims import SIGNED, SPEC

FOUND_AT = "https://github.com/octocat/Hello-World/blob/1234567/config.py"


def _report(token: str) -> dict:
    return {"token": token, "type": "keyhouse_api_key", "url": FOUND_AT, "source": "content"}


def _cursor(client, actor) -> str:
    return client.get(f"{API}/keys/changes", headers=actor.bearer).json()["cursor"]


def _changes(client, actor, after: str) -> list[tuple[str, str]]:
    answer = client.get(f"{API}/keys/changes", params={"after": after}, headers=actor.bearer)
    assert answer.status_code == 200, answer.text
    return [(c["action"], c["key_id"]) for c in answer.json()["changes"]]


def test_a_reported_key_is_revoked_and_the_feed_and_trail_say_it_leaked(client, world):
    admin = world.acme_admin
    key = create_key(client, admin, name="pushed to github")
    before = _cursor(client, admin)
    stranger = keys.generate()  # well formed, never issued
    answer = report_leaks(client, [_report(key["key"]), _report(stranger), _report("not a key at all")])
    assert answer.status_code == 200, answer.text
    assert answer.json() == [
        {"token_hash": token_hash(key["key"]), "token_type": "keyhouse_api_key", "label": "true_positive"},
        {"token_hash": token_hash(stranger), "token_type": "keyhouse_api_key", "label": "false_positive"},
        {"token_hash": token_hash("not a key at all"), "token_type": "keyhouse_api_key", "label": "false_positive"}]
    assert key["key"] not in answer.text  # named by its hash, never echoed
    assert verify(client, admin, key["key"])["code"] == "REVOKED"
    after = client.get(f"{API}/keys/changes", params={"after": before}, headers=admin.bearer).json()["changes"]
    assert [(c["action"], c["key_id"]) for c in after] == [("key.leaked", key["id"]), ("key.revoked", key["id"])]
    events = client.get(f"{API}/audit/events", params={"target_id": key["id"]}, headers=admin.bearer).json()
    leaked = next(e for e in events if e["action"] == "key.leaked")
    assert (leaked["detail"], leaked["actor_key_id"]) == (FOUND_AT, None)
    # Reported again: labelled again, and nothing more happens to a key already revoked.
    again = report_leaks(client, [_report(key["key"])])
    assert again.json()[0]["label"] == "true_positive"
    assert client.get(f"{API}/keys/changes", params={"after": before}, headers=admin.bearer).json()["changes"] == after


def test_under_a_notify_policy_the_key_keeps_working_and_its_leak_is_told(client, world):
    admin = world.acme_admin
    assert client.get(f"{API}/leaks/policy", headers=admin.bearer).json() == {"on_leak": "revoke"}
    answer = client.put(f"{API}/leaks/policy", json={"on_leak": "notify"}, headers=admin.bearer)
    assert answer.status_code == 200 and answer.json() == {"on_leak": "notify"}
    key = create_key(client, admin, name="kept")
    rerolled = create_key(client, admin, name="rerolled")
    old = rerolled["key"]
    assert client.post(f"{API}/keys/{rerolled['id']}/reroll", json={"grace_period_seconds": 3600},
                       headers=admin.bearer).status_code == 201
    before = _cursor(client, admin)
    assert [r["label"] for r in report_leaks(client, [_report(key["key"]), _report(old)]).json()] == [
        "true_positive", "true_positive"]  # a secret rerolled away is the key's too
    assert verify(client, admin, key["key"])["code"] == "VALID"
    actions = _changes(client, admin, before)
    assert ("key.leaked", key["id"]) in actions and ("key.leaked", rerolled["id"]) in actions
    assert ("key.revoked", key["id"]) not in actions
    trail = client.get(f"{API}/audit/events", params={"action": "leak_policy.updated"}, headers=admin.bearer).json()
    assert trail[0]["changes"] == {"on_leak": ["revoke", "notify"]}
    # Members may neither read nor set it; another organization's keys keep their own (revoke).
    assert client.get(f"{API}/leaks/policy", headers=world.acme_member.bearer).status_code == 403
    theirs = create_key(client, world.globex_admin, name="theirs")
    report_leaks(client, [_report(theirs["key"])])
    assert verify(client, world.globex_admin, theirs["key"])["code"] == "REVOKED"


def test_a_report_not_signed_by_githubs_key_changes_nothing(client, world):
    admin = world.acme_admin
    key = create_key(client, admin, name="safe")
    before = _cursor(client, admin)
    body = json.dumps([_report(key["key"])]).encode()
    forged = github_signed(body, key=ec.generate_private_key(ec.SECP256R1()))
    tampered = github_signed(json.dumps([_report(keys.generate())]).encode())
    unknown_key = {**github_signed(body), "Github-Public-Key-Identifier": "ab" * 32}
    unsigned = {"Content-Type": "application/json", "Github-Public-Key-Identifier": "ab" * 32}
    for headers in (forged, tampered, unknown_key, unsigned):
        answer = client.post(f"{API}/leaks/github", content=body, headers=headers)
        assert problem_of(answer, 401)["status"] == 401, headers
    assert verify(client, admin, key["key"])["code"] == "VALID"
    assert _changes(client, admin, before) == []
    # A key is no signature: the operation takes none.
    assert client.post(f"{API}/leaks/github", content=body, headers={**admin.bearer, "Content-Type":
                                                                     "application/json"}).status_code == 401


def test_a_report_of_1000_tokens_fits_and_1001_are_refused(client, world):
    admin = world.acme_admin
    key = create_key(client, admin, name="one of many")
    tokens = [keys.generate() for _ in range(999)] + [key["key"]]
    answer = report_leaks(client, [_report(t) for t in tokens])  # about 170 KB: above the default body cap
    assert answer.status_code == 200, answer.text[:300]
    labels = [r["label"] for r in answer.json()]
    assert labels.count("true_positive") == 1 and labels[-1] == "true_positive"
    assert problem_of(report_leaks(client, [_report(t) for t in [*tokens, keys.generate()]]), 422)


# Every operation a signature authenticates (the contract's `x-keyhouse-signed-body`), and how a test signs
# for each signer: an operation added with a signed scheme is held to the checks below by default.
SIGNERS = {"github": (github_signed, lambda secret: [_report(secret)])}


def _signer(op: dict) -> str:
    schemes = SPEC["components"]["securitySchemes"]
    return next(schemes[name]["x-keyhouse-signed-body"] for req in op["security"] for name in req)


@pytest.mark.parametrize("operation_id", [op["operationId"] for _, _, op in SIGNED])
def test_api2_a_signed_operation_takes_its_signers_signature_of_the_exact_body_and_nothing_else(
        client, world, operation_id):
    method, path, op = next(o for o in SIGNED if o[2]["operationId"] == operation_id)
    sign, body_for = SIGNERS[_signer(op)]
    admin = world.acme_admin
    key = create_key(client, admin, name="the target")
    before = _cursor(client, admin)
    body = json.dumps(body_for(key["key"])).encode()
    other = json.dumps(body_for(keys.generate())).encode()
    refused = {"unsigned": {"Content-Type": "application/json"},
               "signed by another key": sign(body, key=ec.generate_private_key(ec.SECP256R1())),
               "a signature of other bytes": sign(other),
               "a key instead": {"Content-Type": "application/json", **admin.bearer},
               "a token instead": {"Content-Type": "application/json", "Authorization": "Bearer a.b.c"}}
    for why, headers in refused.items():
        answer = client.request(method.upper(), API + path, content=body, headers=headers)
        assert problem_of(answer, 401)["status"] == 401, why
    assert verify(client, admin, key["key"])["code"] == "VALID" and _changes(client, admin, before) == []
    assert client.request(method.upper(), API + path, content=body, headers=sign(body)).status_code == 200
