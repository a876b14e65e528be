"""The console over HTTP: sessions, CSRF, the headers of every page, and the refusals, for every page
and form of it (generated from keyhouse.console.ROUTES, so a new page is covered by default). The whole
path in a real browser is tests/test_console_browser.py."""

from __future__ import annotations

import base64
import hashlib
import json
import logging
import re

import pytest
from sqlalchemy import func, select

from keyhouse import spec
from keyhouse.console import ROUTES
from keyhouse.console.rendering import HERE, SECTIONS
from keyhouse.store.models import ApiKey, AuditEvent, ConsoleSession
from tests.conftest import make_app
from tests.helpers import API

SPEC = spec.document()
PAGES = [route.path for route in ROUTES if "GET" in route.methods]
FORMS = [route.path for route in ROUTES if "POST" in route.methods and route.path != "/sign-in"]
ON_A_KEY = [(method, route.path) for route in ROUTES if "{key_id}" in route.path
            for method in sorted(route.methods - {"HEAD"})]


def signed_in(client, actor) -> str:
    """Signs `client` in with the actor's key; the session's CSRF token."""
    answer = client.post("/console/sign-in", data={"key": actor.key, "next": "/console/keys"}, follow_redirects=False)
    assert answer.status_code == 303, answer.text
    return csrf_of(client.get("/console/keys").text)


def csrf_of(page: str) -> str:
    return re.search(r'name="csrf" value="([^"]+)"', page).group(1)


def create(client, csrf, **form) -> tuple[str, str]:
    """(id, secret) of a key made through the console's form: the POST leads to the page that shows it."""
    grant = "picked" if "permissions" in form else "mine"  # unless permissions are ticked: all of the creator's
    page = client.post("/console/keys", data={"csrf": csrf, "type": "secret", "expiry": "never", "grant": grant,
                                              **form})
    assert page.status_code == 200 and "/revealed/" in page.url.path, page.text
    return re.search(r'href="/console/keys/([^"/?]+)"', page.text).group(1), re.search(r'value="(kh_[^"]+)"',
                                                                                      page.text).group(1)


def state(app) -> tuple:
    """What a refused form must leave as it was: the keys and the trail."""
    with app.runtime.store.session() as s:
        keys = s.execute(select(ApiKey.id, ApiKey.description, ApiKey.revoked_at, ApiKey.key_hash,
                                ApiKey.permissions).order_by(ApiKey.id)).all()
        return keys, s.scalar(select(func.count()).select_from(AuditEvent).where(AuditEvent.action != "auth.failed"))


def url(path: str, key_id: str, **named: str) -> str:
    path = path.replace("{key_id}", key_id).replace("{reveal_id}", "seen-already")
    for name, value in named.items():
        path = path.replace("{" + name + "}", value)
    return "/console" + path


def test_signed_out_every_page_sends_one_to_sign_in_and_every_form_changes_nothing(app, client, world):
    before = state(app)
    for path in PAGES:
        if path == "/sign-in":
            continue
        answer = client.get(url(path, world.acme_admin.key_id), follow_redirects=False)
        assert (answer.status_code, answer.headers["location"].split("?")[0]) == (303, "/console/sign-in"), path
    for path in FORMS:
        answer = client.post(url(path, world.acme_admin.key_id), data={"name": "x"}, follow_redirects=False)
        assert answer.status_code == 303, path
    assert state(app) == before


def test_every_page_carries_the_policy_and_is_never_cached(app, client, world):
    csrf = signed_in(client, world.acme_admin)
    key_id, _ = create(client, csrf, name="shown")
    for path in PAGES:
        answer = client.get(url(path, key_id))
        # A reveal's page answers 410 once its secret was shown (here: never held).
        assert answer.status_code == (410 if "{reveal_id}" in path else 200), (path, answer.text)
        assert answer.headers["content-security-policy"].startswith("default-src 'self'"), path
        assert answer.headers["cache-control"] == "no-store", path
        assert answer.headers["x-frame-options"] == "DENY"
        inline = re.search(r"<script(?![^>]*\bsrc=)|<style|\sstyle=|\son[a-z]+=", answer.text)
        assert inline is None, f"inline script or style on {path}: {inline}"


@pytest.mark.parametrize("path", FORMS)
@pytest.mark.parametrize("csrf", [None, "forged", ""])
def test_a_form_without_its_sessions_csrf_token_changes_nothing(app, client, world, path, csrf):
    good = signed_in(client, world.acme_admin)
    key_id, _ = create(client, good, name="target")
    other = signed_in_elsewhere(app, world.acme_admin)
    before = state(app)
    data = {"name": "changed", "grace_period_seconds": "0", "expiry": "never", "type": "secret"}
    if csrf is not None:
        data["csrf"] = csrf
    answer = client.post(url(path, key_id), data=data, follow_redirects=False)
    assert answer.status_code == 403, answer.text
    assert state(app) == before
    # Another session's token is no better.
    answer = client.post(url(path, key_id), data={**data, "csrf": other}, follow_redirects=False)
    assert answer.status_code == 403
    assert state(app) == before


def signed_in_elsewhere(app, actor) -> str:
    with app.test_client() as other:
        return signed_in(other, actor)


def test_a_form_from_another_origin_changes_nothing_even_with_the_token(app, client, world):
    csrf = signed_in(client, world.acme_admin)
    key_id, _ = create(client, csrf, name="target")
    before = state(app)
    for headers in ({"Origin": "https://evil.example"}, {"Sec-Fetch-Site": "cross-site"}):
        answer = client.post(f"/console/keys/{key_id}/revoke", data={"csrf": csrf}, headers=headers,
                             follow_redirects=False)
        assert answer.status_code == 403
    assert state(app) == before


@pytest.mark.parametrize(("method", "path"), ON_A_KEY)
def test_another_organizations_key_or_an_admins_is_not_found_to_a_member(app, client, world, method, path):
    admins = signed_in(client, world.acme_admin)
    admins_key, _ = create(client, admins, name="the admin's")
    with app.test_client() as globex:
        foreign_key, _ = create(globex, signed_in(globex, world.globex_admin), name="globex's")
    with app.test_client() as member:
        csrf = signed_in(member, world.acme_member)
        before = state(app)
        for key_id in (foreign_key, admins_key):
            data = {"csrf": csrf, "name": "mine now", "grace_period_seconds": "0", "expiry": "keep"}
            answer = member.request(method, url(path, key_id), data=data if method == "POST" else None)
            assert answer.status_code == 404, (method, path, answer.text)
            assert "be found" in answer.text
    # The admin does not see the other organization's either.
    data = {"csrf": admins, "name": "x", "grace_period_seconds": "0"} if method == "POST" else None
    answer = client.request(method, url(path, foreign_key), data=data)
    assert answer.status_code == 404
    assert state(app) == before


def test_a_session_is_a_cookie_for_the_console_only_and_holds_no_key(app, client, world):
    answer = client.post("/console/sign-in", data={"key": world.acme_admin.key}, follow_redirects=False)
    cookie = answer.headers["set-cookie"]
    assert re.match(r"keyhouse_console=[\w-]{43}; HttpOnly; Max-Age=28800; Path=/console; SameSite=strict$", cookie)
    assert world.acme_admin.key not in cookie
    with app.runtime.store.session() as s:
        row = s.scalars(select(ConsoleSession)).one()
        token = cookie.split(";")[0].split("=", 1)[1]
        assert row.token_hash == hashlib.sha256(token.encode()).hexdigest()  # the token itself is not kept
        assert world.acme_admin.key not in json.dumps([str(getattr(row, c.key)) for c in ConsoleSession.__table__.c])
    with app.test_client(base_url="https://keyhouse.example") as tls:
        answer = tls.post("/console/sign-in", data={"key": world.acme_admin.key}, follow_redirects=False)
        assert "; Secure" in answer.headers["set-cookie"]


def test_a_bad_key_does_not_sign_in_and_is_recorded(app, client, world):
    key = world.acme_admin.key
    mistyped = key[:-1] + ("x" if key[-1] != "x" else "y")  # (one in 62 keys ends in "x": then it was no typo)
    for key, status in (("kh_nonsense", 401), ("", 401), (mistyped, 401)):
        answer = client.post("/console/sign-in", data={"key": key}, follow_redirects=False)
        assert answer.status_code == status
        assert "set-cookie" not in answer.headers
    app.runtime.recorder.flush()
    with app.runtime.store.session() as s:
        assert s.scalar(select(func.count()).select_from(ConsoleSession)) == 0


def test_sign_in_goes_back_only_to_a_page_of_the_console(client, world):
    for target, landed in (("/console/audit", "/console/audit"), ("https://evil.example/", "/console/keys"),
                           ("//evil.example", "/console/keys"), ("/console//evil.example", "/console/keys"),
                           ("/api/v1/keys", "/console/keys")):
        answer = client.post("/console/sign-in", data={"key": world.acme_admin.key, "next": target},
                             follow_redirects=False)
        assert answer.headers["location"] == landed, target


def test_a_session_ends_at_its_lifetime(tmp_path, world):
    """The session's end is set from the setting at sign-in, and a session past it opens nothing. Its end is
    moved into the past rather than waited for: the test does not depend on how busy the machine is."""
    from datetime import timedelta

    from sqlalchemy import update

    from keyhouse.store.models import utcnow
    from tests.conftest import add_actor, add_organization

    app = make_app(tmp_path, console_session_seconds=90)
    admin = add_actor(app, add_organization(app, "short"), "a@short.test", "admin")
    with app.test_client() as client:
        before = utcnow()
        answer = client.post("/console/sign-in", data={"key": admin.key}, follow_redirects=False)
        assert "Max-Age=90;" in answer.headers["set-cookie"]
        assert client.get("/console/keys", follow_redirects=False).status_code == 200
        with app.runtime.store.session() as s:
            ends = s.scalars(select(ConsoleSession.expires_at)).one()
            assert before + timedelta(seconds=89) <= ends <= utcnow() + timedelta(seconds=90)
            s.execute(update(ConsoleSession).values(expires_at=utcnow() - timedelta(seconds=1)))
        answer = client.get("/console/keys", follow_redirects=False)
        assert (answer.status_code, answer.headers["location"]) == (303, "/console/sign-in?next=%2Fconsole%2Fkeys")
    app.runtime.store.dispose()


def test_a_session_ends_with_its_key_and_with_sign_out(app, client, world):
    csrf = signed_in(client, world.acme_admin)
    key_id, secret = create(client, csrf, name="its own session")
    with app.test_client() as second:
        second.post("/console/sign-in", data={"key": secret}, follow_redirects=False)
        assert second.get("/console/keys", follow_redirects=False).status_code == 200
        assert client.post(f"/console/keys/{key_id}/revoke", data={"csrf": csrf},
                           follow_redirects=False).status_code == 303
        assert second.get("/console/keys", follow_redirects=False).status_code == 303
    assert client.post("/console/sign-out", data={"csrf": csrf}, follow_redirects=False).status_code == 303
    assert client.get("/console/keys", follow_redirects=False).status_code == 303
    app.runtime.recorder.flush()
    with app.runtime.store.session() as s:
        assert s.scalar(select(func.count()).select_from(ConsoleSession)) == 0
        actions = s.scalars(select(AuditEvent.action).where(AuditEvent.action != "auth.failed")
                            .order_by(AuditEvent.id)).all()
        refused = s.scalars(select(AuditEvent.detail).where(AuditEvent.action == "auth.failed")).all()
    assert actions == ["console.signed_in", "key.created", "console.signed_in", "key.revoked", "console.signed_out"]
    assert refused == ["session of a revoked key"]  # the revoked key's session, refused as a request is


def test_a_session_whose_key_may_not_be_used_from_here_is_refused_as_a_page(app, client, world):
    csrf = signed_in(client, world.acme_admin)
    key_id, secret = create(client, csrf, name="office only")
    with app.test_client() as office:
        office.post("/console/sign-in", data={"key": secret}, follow_redirects=False)
        assert office.get("/console/keys").status_code == 200
        assert client.patch(f"{API}/keys/{key_id}", json={"allowed_ips": ["192.0.2.10"]},
                            headers=world.acme_admin.bearer).status_code == 200
        refused = office.get("/console/keys")
        assert refused.status_code == 403
        assert refused.headers["content-type"].startswith("text/html") and 'role="alert"' in refused.text
        assert refused.headers["content-security-policy"].startswith("default-src 'self'")


def test_a_secret_is_on_the_page_that_reveals_it_and_on_no_other_nor_in_any_log(app, client, world, caplog):
    caplog.set_level(logging.DEBUG)
    csrf = signed_in(client, world.acme_admin)
    key_id, secret = create(client, csrf, name="once")
    rerolled = client.post(f"/console/keys/{key_id}/reroll", data={"csrf": csrf, "grace_period_seconds": "3600"})
    assert rerolled.status_code == 200 and rerolled.headers["cache-control"] == "no-store"
    new_secret = re.search(r'value="(kh_[^"]+)"', rerolled.text).group(1)
    for path in PAGES:
        page = client.get(url(path, key_id)).text
        assert secret not in page and new_secret not in page, path
    assert secret not in caplog.text and new_secret not in caplog.text
    # The key works against the API, the old secret inside its grace, as rerolling promises.
    for presented in (secret, new_secret):
        assert client.get(f"{API}/keys", headers={"Authorization": f"Bearer {presented}"}).status_code == 200


def test_a_refused_form_shows_why_in_place_and_changes_nothing(app, client, world):
    csrf = signed_in(client, world.acme_admin)
    before = state(app)
    answer = client.post("/console/keys", data={"csrf": csrf, "name": "", "type": "secret", "expiry": "never",
                                                "allowed_ips": "not-an-address"})
    assert answer.status_code == 422
    assert 'role="alert"' in answer.text and "New key" in answer.text
    answer = client.post("/console/keys", data={"csrf": csrf, "name": "ok", "type": "secret", "expiry": "never",
                                                "allowed_ips": "300.1.1.1"})
    assert answer.status_code == 422 and "allowed_ips" in answer.text
    assert 'value="ok"' in answer.text  # what was typed is kept
    assert state(app) == before


def test_members_see_their_own_keys_and_the_console_offers_only_what_the_key_may_do(app, client, world):
    admins = signed_in(client, world.acme_admin)
    create(client, admins, name="admin key")
    with app.test_client() as member:
        csrf = signed_in(member, world.acme_member)
        create(member, csrf, name="member key")
        page = member.get("/console/keys").text
        assert "member key" in page and "admin key" not in page
        assert 'href="/console/audit"' not in page
        assert member.get("/console/audit").status_code == 403
    assert "admin key" in client.get("/console/keys").text and "member key" in client.get("/console/keys").text
    with app.test_client() as narrow:
        _, secret = create(client, admins, name="lists only", permissions=["listKeys", "getKey"])
        narrow.post("/console/sign-in", data={"key": secret}, follow_redirects=False)
        page = narrow.get("/console/keys").text
        assert 'href="/console/keys/new"' not in page
        before = state(app)
        assert narrow.post("/console/keys", data={"csrf": csrf_of(page), "name": "x", "type": "secret",
                                                  "expiry": "never"}).status_code == 403
        assert state(app) == before


def test_thousands_of_keys_are_paged_and_searched(app, client, world):
    from datetime import timedelta

    from keyhouse.store import api_keys
    from keyhouse.store.models import new_id, utcnow

    long_ago = utcnow() - timedelta(days=1)  # older than the admin's first key, which is then the last
    with app.runtime.store.session() as s:
        api_keys.insert_keys(s, world.acme_admin.organization_id, [
            {"id": new_id(), "user_id": world.acme_admin.user_id, "description": f"bulk {i:04d}", "type": "secret",
             "key_hash": f"{i:064x}", "key_hint": "kh_…", "permissions": ["listKeys"],
             "created_at": long_ago + timedelta(seconds=i), "updated_at": long_ago} for i in range(2000)])
    signed_in(client, world.acme_admin)
    first = client.get("/console/keys").text  # the world's three keys, then the bulk, newest first
    assert "2002 keys" in first and "page 1 of 81" in first and "first key of admin@acme.test" in first
    last = client.get("/console/keys?page=81").text
    assert "bulk 0000" in last and "bulk 0001" in last and "bulk 0002" not in last
    assert client.get("/console/keys?page=82").status_code == 200
    found = client.get("/console/keys?q=BULK 19").text
    assert "100 keys matching" in found
    assert client.get("/console/keys?page=abc&q=" + "x" * 129).status_code == 400


def test_the_vendored_htmx_is_the_pinned_package_and_the_pages_say_so(client):
    vendored = json.loads((HERE / "static" / "VENDORED.json").read_text())["htmx.min.js"]
    body = (HERE / "static" / "htmx.min.js").read_bytes()
    assert vendored["sri"] == "sha384-" + base64.b64encode(hashlib.sha384(body).digest()).decode()
    assert vendored["package"] == "htmx.org" and re.fullmatch(r"2\.\d+\.\d+", vendored["version"])
    assert body.count(b"version:\"" + vendored["version"].encode()) == 1
    page = client.get("/console/sign-in").text
    assert f'<script src="/console/static/htmx.min.js" integrity="{vendored["sri"]}"' in page
    assert client.get("/console/static/htmx.min.js").content == body


def test_saving_a_key_keeps_what_the_picker_could_not_list(app, client, world):
    """A member may not list the organization's APIs, so the picker cannot offer their permissions; a key
    of theirs holding one keeps it when saved."""
    admin, member = world.acme_admin, world.acme_member
    assert client.post(f"{API}/apis", json={"name": "documents", "scopes": ["read", "write"]},
                       headers=admin.bearer).status_code == 201
    made = client.post(f"{API}/keys", json={"name": "reader", "permissions": ["listKeys", "documents:read"]},
                       headers=member.bearer)
    assert made.status_code == 201, made.text
    key_id = made.json()["id"]
    with app.test_client() as browser:
        csrf = signed_in(browser, member)
        page = browser.get(f"/console/keys/{key_id}").text
        ticked = re.findall(r'name="permissions" value="([^"]+)" checked', page)
        assert sorted(ticked) == ["documents:read", "listKeys"]
        saved = browser.post(f"/console/keys/{key_id}", data={"csrf": csrf, "name": "reader, renamed",
                                                              "permissions": ticked, "expiry": "keep"},
                             follow_redirects=False)
        assert saved.status_code == 303, saved.text
    key = client.get(f"{API}/keys/{key_id}", headers=member.bearer).json()
    assert (key["name"], sorted(key["permissions"])) == ("reader, renamed", ["documents:read", "listKeys"])


# ------------------------------------------------------------------ every answer under /console is a page

METHODS = ("GET", "POST", "PUT", "PATCH", "DELETE")
SERVED = {}
for route in ROUTES:
    SERVED.setdefault(route.path, set()).update(route.methods)
UNKNOWN = ["/console/no-such-page", "/console/keys/a/b/c", "/console/static/no-such-file.js",
           "/console/keys/x/revealed"]


def _is_a_console_page(answer) -> None:
    assert answer.headers["content-type"].startswith("text/html"), answer.headers
    assert answer.headers["content-security-policy"].startswith("default-src 'self'")
    assert (answer.headers["cache-control"], answer.headers["x-frame-options"]) == ("no-store", "DENY")
    assert answer.headers["x-content-type-options"] == "nosniff"
    assert 'href="/console/keys"' in answer.text  # a way back


@pytest.mark.parametrize("signed", [False, True])
def test_every_unknown_path_and_method_under_the_console_answers_a_console_page(app, client, world, signed):
    """Generated from ROUTES: each of the console's paths with every method it does not serve is 405 (with
    `Allow`), and unknown paths are 404, each the console's own page with its headers."""
    if signed:
        signed_in(client, world.acme_admin)
    before = state(app)
    for path, methods in SERVED.items():
        concrete = url(path, world.acme_admin.key_id)
        for method in METHODS:
            # (`/keys/new` is also `/keys/{key_id}`, whose POST is a form's)
            if any(r.path_regex.match(concrete[len("/console"):]) and method in r.methods for r in ROUTES):
                continue
            answer = client.request(method, concrete, follow_redirects=False)
            assert answer.status_code == 405, (method, path, answer.text)
            assert set(answer.headers["allow"].split(", ")) >= methods - {"HEAD"}, (method, path)
            _is_a_console_page(answer)
    for path in UNKNOWN:
        for method in ("GET", "POST"):
            answer = client.request(method, path, follow_redirects=False)
            assert answer.status_code in (404, 405), (method, path)
            _is_a_console_page(answer)
    assert state(app) == before


# ------------------------------------------------------------------ a form sent again changes nothing

def _form_data(path: str, key_id: str) -> dict:
    """What each form of the console posts, filled in (read from the form's own fields where it has any)."""
    return {"/sign-out": {}, "/keys": {"name": "twice", "type": "secret", "expiry": "never", "grant": "mine"},
            "/keys/{key_id}": {"name": "renamed", "expiry": "keep", "permissions": ["*"]},
            "/keys/{key_id}/reroll": {"grace_period_seconds": "0"}, "/keys/{key_id}/revoke": {},
            "/find": {"key": ""}, "/webhooks/{webhook_id}/deliveries/{delivery_id}/replay": {}}[path]


def _a_delivery(app, client, actor) -> dict:
    """An endpoint of the actor's organization and a delivery to it (of the last key made): what the
    webhooks' forms act on."""
    from keyhouse.store import webhooks
    from keyhouse.store.models import WebhookDelivery, utcnow

    made = client.post(f"{API}/webhooks", headers=actor.bearer,
                       json={"url": "https://platform.example/hooks", "events": ["key.created"]})
    assert made.status_code == 201, made.text
    client.post(f"{API}/keys", json={"name": "told"}, headers=actor.bearer)
    with app.runtime.store.session() as s:
        webhooks.dispatch(s, utcnow())
        delivery = s.scalar(select(WebhookDelivery.id).where(WebhookDelivery.webhook_id == made.json()["id"]))
    return {"webhook_id": made.json()["id"], "delivery_id": str(delivery)}


@pytest.mark.parametrize("path", FORMS)
def test_a_form_sent_again_is_answered_with_its_first_outcome_and_changes_nothing(app, client, world, path):
    """Generated from ROUTES: every form of a signed-in page, sent twice with its one-time token (a reload
    of the page its POST answered, the back button): the second changes nothing and leads where the first did."""
    csrf = signed_in(client, world.acme_admin)
    key_id, secret = create(client, csrf, name="target")
    named = _a_delivery(app, client, world.acme_admin) if "{webhook_id}" in path else {}
    data = {**_form_data(path, key_id), "csrf": csrf, "once": "the-one-time-token"}
    if path == "/find":
        data["key"] = secret
    first = client.post(url(path, key_id, **named), data=data, follow_redirects=False)
    assert first.status_code == 303, (path, first.text)
    after_first = state(app)
    if path == "/sign-out":  # signed out: sent again, it changes nothing either (and goes to sign in)
        again = client.post(url(path, key_id), data=data, follow_redirects=False)
        assert again.status_code == 303 and again.headers["location"].startswith("/console/sign-in")
    else:
        again = client.post(url(path, key_id, **named), data=data, follow_redirects=False)
        assert (again.status_code, again.headers["location"]) == (303, first.headers["location"]), path
    assert state(app) == after_first, path


def test_a_new_secret_is_shown_once_on_a_get_and_a_reload_shows_it_no_more(app, client, world):
    csrf = signed_in(client, world.acme_admin)
    answer = client.post("/console/keys", data={"csrf": csrf, "once": "o1", "name": "night", "type": "secret",
                                                "expiry": "never", "grant": "mine"}, follow_redirects=False)
    assert answer.status_code == 303 and "kh_" not in answer.headers["location"]
    reveal = answer.headers["location"]
    shown = client.get(reveal)
    secret = re.search(r'value="(kh_[^"]+)"', shown.text).group(1)
    assert shown.status_code == 200 and shown.headers["cache-control"] == "no-store"
    with app.runtime.store.session() as s:  # held sealed until shown: no copy of it anywhere now
        assert secret not in json.dumps([r.reveals for r in s.scalars(select(ConsoleSession))])
    reloaded = client.get(reveal)
    assert reloaded.status_code == 410 and secret not in reloaded.text and "Shown already" in reloaded.text
    # Held sealed under the browser's cookie: not in the store as text, and another session cannot open it.
    key_id = reveal.split("/")[3]
    rerolled = client.post(f"/console/keys/{key_id}/reroll", data={"csrf": csrf, "once": "o2",
                                                                   "grace_period_seconds": "0"}, follow_redirects=False)
    with app.runtime.store.session() as s:
        held = json.dumps([r.reveals for r in s.scalars(select(ConsoleSession))])
    assert "sealed" in held and "kh_" not in held
    with app.test_client() as other:
        signed_in(other, world.acme_admin)
        assert other.get(rerolled.headers["location"]).status_code == 410
    new_secret = re.search(r'value="(kh_[^"]+)"', client.get(rerolled.headers["location"]).text).group(1)
    assert new_secret != secret
    assert client.get(f"{API}/keys", headers={"Authorization": f"Bearer {new_secret}"}).status_code == 200
    assert client.get(f"{API}/keys", headers={"Authorization": f"Bearer {secret}"}).status_code == 401


# ------------------------------------------------------------------ what the console offers

@pytest.mark.parametrize("section", [s[0] for s in SECTIONS])
def test_the_header_offers_only_the_sections_the_key_may_open(app, client, world, section):
    """Generated from the console's sections: a key holding only a section's operation sees that section
    in the header and no other, and the section opens."""
    label, path, operation_id = next(s for s in SECTIONS if s[0] == section)
    csrf = signed_in(client, world.acme_admin)
    _, secret = create(client, csrf, name=f"only {operation_id}", permissions=[operation_id])
    with app.test_client() as narrow:
        narrow.post("/console/sign-in", data={"key": secret}, follow_redirects=False)
        page = narrow.get(path)
        assert page.status_code == 200, page.text
        nav = re.search(r'<nav aria-label="Sections">(.*?)</nav>', page.text, re.S).group(1)
        assert re.findall(r'href="([^"]+)"', nav) == [path], nav
    with app.test_client() as member:  # a member's key holding everything still sees no admin's section
        signed_in(member, world.acme_member)
        nav = re.search(r'<nav aria-label="Sections">(.*?)</nav>', member.get("/console/keys").text, re.S).group(1)
        shown = set(re.findall(r'href="([^"]+)"', nav))
        admins = {p for _, p, op in SECTIONS if op in app.runtime.policy.admins_only}
        assert shown == {p for _, p, _ in SECTIONS} - admins, shown


def test_a_publishable_key_cannot_sign_in(app, client, world):
    made = client.post(f"{API}/api-keys", json={"description": "browser", "type": "publishable"},
                       headers=world.acme_admin.billing)
    refused = client.post("/console/sign-in", data={"key": made.json()["secretKey"]}, follow_redirects=False)
    assert refused.status_code == 403 and "publishable" in refused.text.lower()
    assert "set-cookie" not in refused.headers


def test_the_key_page_offers_first_what_to_do_when_it_leaked(app, client, world):
    csrf = signed_in(client, world.acme_admin)
    key_id, secret = create(client, csrf, name="leaky")
    page = client.get(f"/console/keys/{key_id}").text
    assert page.index("If this key leaked") < page.index("<h2>Reroll</h2>") < page.index("<h2>Edit</h2>")
    assert re.search(r'<option value="0" selected>none', page), "a reroll offers no grace first"
    leak = page[page.index("If this key leaked"):page.index("<dl")]
    assert "Revoke now" in leak and "Reroll with no grace" in leak and 'name="grace_period_seconds" value="0"' in leak
    assert "refused" in leak  # each says what it does to callers
    with app.test_client() as found:  # the operator has only the secret: find, then revoke now
        form_csrf = signed_in(found, world.acme_admin)
        opened = found.post("/console/find", data={"csrf": form_csrf, "key": secret}, follow_redirects=False)
        assert opened.status_code == 303 and secret not in opened.headers["location"]
        assert opened.headers["location"] == f"/console/keys/{key_id}?notice=found"
        assert found.post(f"/console/keys/{key_id}/revoke", data={"csrf": form_csrf},
                          follow_redirects=False).headers["location"] == "/console/keys?notice=revoked"
    assert client.get(f"{API}/keys", headers={"Authorization": f"Bearer {secret}"}).status_code == 401
    unknown = client.post("/console/find", data={"csrf": csrf, "key": "kh_unknown"})
    assert unknown.status_code == 404 and 'role="alert"' in unknown.text and "kh_unknown" not in unknown.text


def test_the_trail_says_who_did_what_from_where(app, client, world):
    csrf = signed_in(client, world.acme_admin)
    key_id, _ = create(client, csrf, name="before")
    client.post(f"/console/keys/{key_id}", data={"csrf": csrf, "name": "after", "expiry": "keep",
                                                 "permissions": ["listKeys"]})
    events = client.get(f"{API}/audit/events", params={"target_id": key_id}, headers=world.acme_admin.bearer).json()
    updated = next(e for e in events if e["action"] == "key.updated")
    assert updated["changes"]["name"] == ["before", "after"]
    assert updated["changes"]["permissions"] == [["*"], ["listKeys"]]
    assert (updated["actor_email"], updated["target_name"]) == ("admin@acme.test", "after")
    for page in (client.get("/console/audit").text, client.get(f"/console/keys/{key_id}").text):
        assert "admin@acme.test" in page and "<del>before</del> → <ins>after</ins>" in page
        assert "testclient" in page  # from where: the client address the test client reports
    header = client.get("/console/keys").text
    assert re.search(r'class="signed-in"[^>]*>admin@acme.test · first key of admin@acme.test', header), header[:2000]


def test_the_picker_groups_permissions_by_the_contracts_tags_and_the_choice_is_explicit(app, client, world):
    csrf = signed_in(client, world.acme_admin)
    page = client.get("/console/keys/new").text
    headings = re.findall(r"<summary>([^<]+) <span", page)
    tags = [t["name"] for t in SPEC["tags"] if t["x-keyhouse-family"] == "keyhouse"] + \
        [t["name"] for t in SPEC["tags"] if t["x-keyhouse-family"] != "keyhouse"]
    assert headings == [t for t in tags if t in headings] and headings[0] == "Keys", headings
    assert "Find a key by its secret" in page  # each operation with its summary
    assert 'name="grant" value="picked" checked' in page and 'name="grant" value="mine"' in page
    nothing, _ = create(client, csrf, name="none ticked", grant="picked")
    everything, _ = create(client, csrf, name="all mine", grant="mine")
    held = {k["id"]: k["permissions"] for k in client.get(f"{API}/keys", headers=world.acme_admin.bearer).json()}
    assert (held[nothing], held[everything]) == ([], ["*"])


def test_the_sign_in_form_sent_again_opens_no_second_session(app, client, world):
    for _ in range(2):
        answer = client.post("/console/sign-in", data={"key": world.acme_admin.key}, follow_redirects=False)
        assert answer.status_code == 303
    with app.runtime.store.session() as s:
        assert s.scalar(select(func.count()).select_from(ConsoleSession)) == 1
        assert s.scalar(select(func.count()).select_from(AuditEvent)
                        .where(AuditEvent.action == "console.signed_in")) == 1
    with app.test_client() as other:  # another key, in the same browser: a session of its own
        other.cookies = client.cookies
        other.post("/console/sign-in", data={"key": world.acme_member.key}, follow_redirects=False)
    with app.runtime.store.session() as s:
        assert s.scalar(select(func.count()).select_from(ConsoleSession)) == 2


def test_the_console_calls_an_operation_as_a_request_would_reach_it(app, client, world, monkeypatch):
    """Through one adapter: a parameter the operation would refuse is the API's 400, and an answer that
    does not conform to the operation's response is never shown (a 500, as the API answers it)."""
    from keyhouse.api import HANDLERS

    signed_in(client, world.acme_admin)
    too_long = client.get("/console/audit?target_id=" + "x" * 256)
    assert too_long.status_code == 400 and "target_id" in too_long.text
    real = HANDLERS["listKeys"]

    def nonconforming(*, rt, **kwargs):
        page, status, headers = real(rt=rt, **kwargs)
        return [{**page[0], "masked_key": 42}], status, headers

    monkeypatch.setitem(HANDLERS, "listKeys", nonconforming)
    answer = client.get("/console/keys")
    assert answer.status_code == 500 and "does not conform" in answer.text
    assert "<table" not in answer.text  # nothing of the answer is shown
