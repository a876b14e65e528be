"""The contract holds at the edges: what a careless or hostile client sends is answered inside the spec.

Each class of input is a mechanism, tested across every operation it applies to, read from the spec (as
tests/test_owasp.py does), so that a new operation is covered by default:

- media types: a body with no Content-Type is 415; a media type in another case is the same media type,
  and the body is validated either way;
- repeated credential headers are refused (401), never "the first one wins";
- case-insensitive filters fold Unicode alike on both databases, for every filterable field;
- a rerolled-away secret is REVOKED, and a token made from it dies when its grace window closes;
- an IPv4-mapped IPv6 client address is the IPv4 host it maps;
- ids `.` and `..` never name a resource; `Allow` lists every method the resource answers; a member
  learns nothing from an admin's key id that an unknown id would not tell.

The framing of requests on a real socket (the head limit counts head bytes only) is in tests/test_serve.py.
"""

from __future__ import annotations

import json
import re
from datetime import UTC, datetime, timedelta

import pytest
from sqlalchemy import update

from keyhouse.store.models import RetiredSecret
from tests.conftest import make_app, populated
from tests.documented import assert_documented, operation
from tests.helpers import API
from tests.victims import OPERATIONS, SPEC, Victim, request_for

WITH_BODY = [op["operationId"] for _, _, op in OPERATIONS if "requestBody" in op]
GUARDED = [op["operationId"] for _, _, op in OPERATIONS]


@pytest.fixture
def victim(app, client, world) -> Victim:
    """An organization's objects to aim at (tests/victims.py), for a test that may change them."""
    return Victim(app, client, world)


@pytest.fixture(scope="module")
def _standing(tmp_path_factory):
    application = make_app(tmp_path_factory.mktemp("edges"))
    with application.test_client() as test_client:
        yield application, test_client, Victim(application, test_client, populated(application))
    application.runtime.store.dispose()


@pytest.fixture
def standing(_standing) -> tuple:
    """(client, victim) for the tests that must change nothing: one victim for all of them, built once
    (building it per test was most of their time); rate limits counted afresh for each test."""
    application, test_client, built = _standing
    application.runtime.recorder.flush()
    application.runtime.limiter.forget()
    return test_client, built


# ------------------------------------------------------------------ 1. media types

@pytest.mark.parametrize("operation_id", WITH_BODY)
@pytest.mark.parametrize("content_type", [{}, {"Content-Type": ""}], ids=["absent", "empty"])
def test_a_body_without_a_media_type_is_415_and_changes_nothing(standing, operation_id, content_type):
    client, victim = standing
    method, path, op = operation(operation_id)
    request = request_for(method, path, op, victim)
    body = json.dumps(request.pop("json")).encode()  # as bytes, httpx sends no Content-Type of its own
    before = victim.snapshot()
    answer = client.request(**request, content=body, headers={**victim.admin.bearer, **content_type})
    assert answer.status_code == 415, answer.text
    assert_documented(op, answer)
    assert victim.snapshot() == before


@pytest.mark.parametrize("operation_id", WITH_BODY)
@pytest.mark.parametrize("media_type", ["Application/JSON", "APPLICATION/JSON; charset=UTF-8"])
def test_a_media_type_in_another_case_is_validated_like_any_other(client, victim, operation_id, media_type):
    method, path, op = operation(operation_id)
    request = request_for(method, path, op, victim)
    body = json.dumps(request.pop("json")).encode()
    headers = {**victim.admin.bearer, "Content-Type": media_type}
    before = victim.snapshot()
    refused = client.request(**request, content=b"[]", headers=headers)  # no body schema takes an array
    assert refused.status_code in (400, 422), refused.text
    assert_documented(op, refused)
    assert victim.snapshot() == before
    accepted = client.request(**request, content=body, headers=headers)
    assert 200 <= accepted.status_code < 300, accepted.text
    assert_documented(op, accepted)


# ------------------------------------------------------------------ 3. repeated credential headers

def _credential_headers(op: dict) -> dict[str, callable]:
    """Header name -> how a key is written in it, for each scheme the operation accepts."""
    written = {}
    for requirement in op.get("security", SPEC.get("security", [])):
        for name in requirement:
            scheme = SPEC["components"]["securitySchemes"][name]
            if scheme["type"] == "http":
                written["Authorization"] = lambda k: f"Bearer {k}"
            elif scheme["name"].lower() == "authorization":
                written["Authorization"] = lambda k: f"ApiKey {k}"
            else:
                written[scheme["name"]] = lambda k: k
    return written


@pytest.mark.parametrize("operation_id", GUARDED)
def test_a_repeated_credential_header_is_refused_and_changes_nothing(standing, operation_id):
    client, victim = standing
    method, path, op = operation(operation_id)
    request = request_for(method, path, op, victim)
    revoked = client.post(f"{API}/api-keys", json={"description": "soon gone"}, headers=victim.admin.billing).json()
    assert client.delete(f"{API}/api-keys/{revoked['id']}", headers=victim.admin.billing).status_code == 204
    before = victim.snapshot()
    for name, write in _credential_headers(op).items():
        for first, second in ((victim.admin.key, revoked["secretKey"]), (revoked["secretKey"], victim.admin.key),
                              (victim.admin.key, victim.admin.key)):
            answer = client.request(**request, headers=[(name, write(first)), (name, write(second))])
            assert answer.status_code == 401, (name, answer.text)
            assert_documented(op, answer)
    assert victim.snapshot() == before


# ------------------------------------------------------------------ 4. case folding in filters

FILTER_FIELDS = re.match(r"\^\(([\w|]+)\)", SPEC["components"]["parameters"]["Filter"]["schema"]["pattern"]).group(1)
# A value of every filterable field with letters whose case only Unicode folds (as far as the field's
# schema admits them: billing ids are ASCII), and how a client might spell it in a filter.
SPELLINGS = {
    "id": ("MiXeD-CaSe-Id", ["mixed-case-id", "MIXED-CASE-ID"]),
    "description": ("ÄRGER über Straße Ωmega", ["ärger ÜBER STRASSE ωMEGA", "ärger über strasse ωmega"]),
    "type": ("publishable", ["PUBLISHABLE", "Publishable"]),
    "apiUser": ("ÉLODIE Ærøskøbing", ["élodie ærøskøbing", "ÉLODIE ÆRØSKØBING"]),
}


@pytest.mark.parametrize("field", FILTER_FIELDS.split("|"))
def test_filters_ignore_case_in_all_of_unicode(client, world, field):
    assert field in SPELLINGS, f"the spec filters on {field}: add a value for it to SPELLINGS"
    value, spellings = SPELLINGS[field]
    me = world.acme_admin.billing
    body = {"description": "the one", "type": "secret", "apiUser": "someone"}
    key_id = value if field == "id" else "the-one"
    if field != "id":
        body[field] = value
    assert client.put(f"{API}/api-keys/{key_id}", json=body, headers=me).status_code == 201
    assert client.post(f"{API}/api-keys", json={"description": "another", "apiUser": "other"},
                       headers=me).status_code == 201
    for spelled in [value, *spellings]:
        found = client.get(f"{API}/api-keys", params={"filter": f"{field}:{spelled}"}, headers=me)
        assert found.status_code == 200, found.text
        assert [k["id"] for k in found.json()] == [key_id], (spelled, found.json())
        assert found.headers["Pagination-Total"] == "1"
    near_miss = client.get(f"{API}/api-keys", params={"filter": f"{field}:{value[:-1]}x"}, headers=me)
    assert near_miss.json() == []


# ------------------------------------------------------------------ 5. reroll

def _reroll(client, actor, key_id, grace):
    answer = client.post(f"{API}/keys/{key_id}/reroll", json={"grace_period_seconds": grace}, headers=actor.bearer)
    assert answer.status_code == 201, answer.text
    return answer.json()["key"]


def _verdict(client, actor, key):
    return client.post(f"{API}/keys/verify", json={"key": key}, headers=actor.bearer).json()["code"]


def _token(client, key):
    answer = client.post(f"{API}/auth/tokens", json={"expires_in": 600}, headers={"Authorization": f"Bearer {key}"})
    assert answer.status_code == 201, answer.text
    return answer.json()["access_token"]


def _list(client, credential):
    """The billing list, which takes a key or a token (`Authorization: Bearer`)."""
    return client.get(f"{API}/api-keys", headers={"Authorization": f"Bearer {credential}"})


def _close_grace_windows(app):
    with app.runtime.store.session() as s:
        s.execute(update(RetiredSecret).values(valid_until=datetime.now(UTC) - timedelta(seconds=1)))


def _made(client, actor, name="rot"):
    made = client.post(f"{API}/user/api-keys", json={"name": name}, headers=actor.bearer).json()
    return made["id"], made["key"]


def test_a_secret_rerolled_away_without_grace_is_revoked(client, world):
    admin = world.acme_admin
    key_id, old = _made(client, admin)
    token = _token(client, old)
    new = _reroll(client, admin, key_id, 0)
    assert _verdict(client, admin, old) == "REVOKED"
    assert _verdict(client, admin, new) == "VALID"
    for credential in (old, token):
        assert _list(client, credential).status_code == 401


def test_a_secret_and_its_tokens_live_out_the_grace_window_and_no_longer(app, client, world):
    admin = world.acme_admin
    key_id, old = _made(client, admin)
    token_before = _token(client, old)
    new = _reroll(client, admin, key_id, 3600)
    token_in_grace = _token(client, old)  # made from the old secret inside its window: dies with it
    token_of_new = _token(client, new)
    assert _verdict(client, admin, old) == "VALID"
    for credential in (token_before, token_in_grace, token_of_new):
        assert _list(client, credential).status_code == 200
    _close_grace_windows(app)
    assert _verdict(client, admin, old) == "REVOKED"
    for credential in (old, token_before, token_in_grace):
        answer = _list(client, credential)
        assert answer.status_code == 401 and "revoked" in answer.json()["detail"], answer.text
    for credential in (new, token_of_new):
        assert _list(client, credential).status_code == 200


def test_every_secret_rerolled_away_stays_revoked_after_a_second_reroll(client, world):
    admin = world.acme_admin
    key_id, first = _made(client, admin)
    second = _reroll(client, admin, key_id, 3600)
    third = _reroll(client, admin, key_id, 3600)  # ends the first secret's grace (one previous secret at a time)
    assert [_verdict(client, admin, k) for k in (first, second, third)] == ["REVOKED", "VALID", "VALID"]
    fourth = _reroll(client, admin, key_id, 0)
    assert [_verdict(client, admin, k) for k in (first, second, third, fourth)] == ["REVOKED"] * 3 + ["VALID"]


@pytest.mark.parametrize("operation_id", GUARDED)
def test_a_rerolled_away_secret_and_its_token_are_refused_everywhere(app, client, victim, operation_id):
    method, path, op = operation(operation_id)
    request = request_for(method, path, op, victim)
    key_id, old = _made(client, victim.admin, "rerolled")
    token = _token(client, old)
    _reroll(client, victim.admin, key_id, 60)
    _close_grace_windows(app)
    before = victim.snapshot()
    for credential in (old, token):
        answer = client.request(**request, headers={"Authorization": f"Bearer {credential}"})
        assert answer.status_code == 401, answer.text
        assert_documented(op, answer)
    assert victim.snapshot() == before


# ------------------------------------------------------------------ 6. IPv4-mapped IPv6 addresses

def test_verify_reads_an_ipv4_mapped_address_as_its_ipv4_host(client, world):
    admin = world.acme_admin
    fenced = client.post(f"{API}/api-keys", json={"description": "fenced", "allowedIps": ["192.0.2.0/24"]},
                         headers=admin.billing).json()["secretKey"]
    verdicts = {ip: client.post(f"{API}/keys/verify", json={"key": fenced, "ip": ip},
                                headers=admin.bearer).json()["code"]
                for ip in ("192.0.2.10", "::ffff:192.0.2.10", "::ffff:c000:20a", "::ffff:198.51.100.7", "2001:db8::1")}
    assert verdicts == {"192.0.2.10": "VALID", "::ffff:192.0.2.10": "VALID", "::ffff:c000:20a": "VALID",
                        "::ffff:198.51.100.7": "FORBIDDEN", "2001:db8::1": "FORBIDDEN"}


@pytest.mark.parametrize("operation_id", GUARDED)
def test_a_client_at_an_ipv4_mapped_address_is_that_ipv4_host(app, client, victim, operation_id):
    method, path, op = operation(operation_id)
    request = request_for(method, path, op, victim)
    fenced = client.post(f"{API}/api-keys", json={"description": "fenced", "allowedIps": ["192.0.2.0/24"]},
                         headers=victim.admin.billing).json()["secretKey"]
    with app.test_client(client=("::ffff:198.51.100.7", 50000)) as outside:
        before = victim.snapshot()
        refused = outside.request(**request, headers={"Authorization": f"Bearer {fenced}"})
        assert refused.status_code == 403, refused.text
        assert_documented(op, refused)
        assert victim.snapshot() == before
    with app.test_client(client=("::ffff:192.0.2.10", 50000)) as inside:
        answer = inside.request(**request, headers={"Authorization": f"Bearer {fenced}"})
        assert not (answer.status_code == 403 and "address" in answer.text), answer.text
        assert_documented(op, answer)


# ------------------------------------------------------------------ 7. dot ids, Allow, what a member learns

PATH_PARAMETERS = sorted({(op["operationId"], name) for _, path, op in OPERATIONS
                          for name in re.findall(r"{([^}]+)}", path)})


@pytest.mark.parametrize("operation_id, parameter", PATH_PARAMETERS)
@pytest.mark.parametrize("dots", ["%2E", "%2E%2E"])
def test_dot_segments_never_name_a_resource(standing, operation_id, parameter, dots):
    """A client resolves `.` and `..` in a URL before sending it (RFC 3986 5.2.4): an object with such an
    id could not be addressed, and a link to it would name another resource. Sent encoded, they name none."""
    client, victim = standing
    method, path, op = operation(operation_id)
    request = request_for(method, path, op, victim)
    values = dict(victim.path_values(), **{parameter: dots})
    request["url"] = API + re.sub(r"{([^}]+)}", lambda m: values[m.group(1)], path)
    before = victim.snapshot()
    answer = client.request(**request, headers=victim.admin.bearer)
    assert answer.status_code in (400, 404), answer.text
    assert_documented(op, answer)
    assert victim.snapshot() == before


METHODS = ["GET", "HEAD", "POST", "PUT", "DELETE", "PATCH", "OPTIONS"]


def _declared(template: str) -> set[str]:
    methods = {m.upper() for m in SPEC["paths"][template] if m.upper() in METHODS}
    return methods | {"HEAD"} if "GET" in methods else methods


@pytest.mark.parametrize("template", list(SPEC["paths"]))
def test_allow_lists_exactly_the_methods_the_resource_answers(client, victim, template):
    values = victim.path_values()
    url = API + re.sub(r"{([^}]+)}", lambda m: values[m.group(1)], template)
    answers = {method: client.request(method, url, headers=victim.admin.bearer) for method in METHODS}
    answered = {method for method, answer in answers.items() if answer.status_code != 405}
    # `/user/api-keys/self` is also a value of `/user/api-keys/{id}`: what that template declares is
    # answered there too, by its own operation.
    also = set().union(*(_declared(other) for other in SPEC["paths"] if other != template
                         and re.fullmatch(re.sub(r"{[^}]+}", "[^/]+", other), url.removeprefix(API))))
    refused = [answer for answer in answers.values() if answer.status_code == 405]
    assert refused, f"{template} answers every method"
    for answer in refused:
        allow = set(answer.headers["allow"].split(", "))
        assert allow == _declared(template) and allow <= answered <= allow | also, (template, allow, answered)


KEY_PARAMETERS = {"id", "api_key_id", "key_id"}
BY_KEY_ID = sorted({op["operationId"] for _, path, op in OPERATIONS
                    if KEY_PARAMETERS & set(re.findall(r"{([^}]+)}", path))})


@pytest.mark.parametrize("operation_id", BY_KEY_ID)
def test_a_member_learns_no_more_from_an_admins_key_id_than_from_an_unknown_one(standing, operation_id):
    client, victim = standing
    method, path, op = operation(operation_id)
    request = request_for(method, path, op, victim)
    before = victim.snapshot(owner=victim.admin.user_id)
    admins = client.request(**request, headers=victim.member.bearer)
    if method == "put":  # an upsert makes a key at an unknown id: it answers as a read of that id does
        unknown = dict(method="GET", url=request["url"])
    else:
        unknown = dict(request, url=request["url"].replace(victim.key_id, "no-such-key"))
    nobodys = client.request(**unknown, headers=victim.member.bearer)
    assert admins.status_code == nobodys.status_code, (admins.text, nobodys.text)
    assert admins.json() == nobodys.json()
    assert_documented(op, admins)
    assert victim.snapshot(owner=victim.admin.user_id) == before


def test_times_are_written_in_utc_whatever_zone_they_come_in():
    from datetime import UTC, datetime, timedelta, timezone
    from zoneinfo import ZoneInfo

    from keyhouse.api.common import iso_offset, iso_z
    moment = datetime(2026, 12, 1, 10, 0, 5, 999_999, tzinfo=UTC)
    for same in (moment, moment.astimezone(timezone(timedelta(hours=-5))), moment.astimezone(ZoneInfo("Asia/Tokyo"))):
        assert (iso_z(same), iso_offset(same)) == ("2026-12-01T10:00:05Z", "2026-12-01T10:00:05+00:00")
