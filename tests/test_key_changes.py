"""The change feed (`GET /keys/changes`): what may change a verdict, in commit order, woken at once."""

from __future__ import annotations

import threading
import time
from datetime import timedelta

import httpx
from sqlalchemy import select, update

from keyhouse.store.models import AuditEvent, utcnow
from tests.helpers import API, DOCUMENTS, declare, on_postgresql
from tests.helpers import create_key as create


def changes(client, actor, **params) -> httpx.Response:
    return client.get(f"{API}/keys/changes", params=params, headers=actor.bearer)


def test_without_a_cursor_the_feed_answers_where_to_start(client, world):
    admin = world.acme_admin
    start = changes(client, admin)
    assert start.status_code == 200 and start.json() == {"cursor": "0", "changes": []}
    key = create(client, admin, name="k")
    client.delete(f"{API}/api-keys/{key['id']}", headers=admin.billing)
    latest = changes(client, admin).json()
    assert latest["changes"] == [] and int(latest["cursor"]) > 0
    assert changes(client, admin, after=latest["cursor"]).json() == {"cursor": latest["cursor"], "changes": []}


def test_every_change_that_moves_a_verdict_is_in_the_feed_in_order(client, world):
    admin = world.acme_admin
    declare(client, admin, name="documents", openapi=DOCUMENTS)
    start = changes(client, admin).json()["cursor"]
    key = create(client, admin, name="k", credits={"remaining": 1})  # made: no verdict to change
    client.patch(f"{API}/keys/{key['id']}", json={"meta": {"a": 1}}, headers=admin.bearer)
    client.post(f"{API}/keys/{key['id']}/reroll", json={"grace_period_seconds": 0}, headers=admin.bearer)
    client.post(f"{API}/keys/verify", json={"key": create(client, admin, name="metered",
                                                          credits={"remaining": 1})["key"]}, headers=admin.bearer)
    client.put(f"{API}/apis/documents", json={"scopes": ["read"]}, headers=admin.bearer)
    client.delete(f"{API}/apis/documents", headers=admin.bearer)
    client.delete(f"{API}/user/api-keys/{key['id']}", headers=admin.bearer)
    answer = changes(client, admin, after=start).json()
    seen = [(c["action"], c["key_id"] is not None, c["api"]) for c in answer["changes"]]
    assert seen == [("key.updated", True, None), ("key.rerolled", True, None), ("key.credits_exhausted", True, None),
                    ("api.redefined", False, "documents"), ("api.deleted", False, "documents"),
                    ("key.revoked", True, None)]
    cursors = [int(c["cursor"]) for c in answer["changes"]]
    assert cursors == sorted(cursors) and answer["cursor"] == str(cursors[-1])
    paged = changes(client, admin, after=start, limit=2).json()
    assert [c["cursor"] for c in paged["changes"]] == [str(c) for c in cursors[:2]]
    assert paged["cursor"] == str(cursors[1])


def test_the_feed_is_the_organizations_own(client, world):
    acme, globex = world.acme_admin, world.globex_admin
    start = changes(client, globex).json()["cursor"]
    key = create(client, acme, name="k")
    client.delete(f"{API}/api-keys/{key['id']}", headers=acme.billing)
    assert changes(client, globex, after=start).json()["changes"] == []
    acme_cursor = changes(client, acme).json()["cursor"]
    gone = changes(client, globex, after=acme_cursor)  # a cursor of another organization's feed
    assert gone.status_code == 410 and "start again" in gone.json()["detail"]


def test_a_member_follows_only_the_changes_to_their_own_keys(client, world):
    """A member sees only their own keys, so their feed carries only those keys' changes (and the APIs'):
    no admin's key id reaches them."""
    admin, member = world.acme_admin, world.acme_member
    start = changes(client, member).json()["cursor"]
    theirs, admins = create(client, member, name="mine"), create(client, admin, name="admin's")
    for key, who in ((admins, admin), (theirs, member)):
        assert client.delete(f"{API}/keys/{key['id']}", headers=who.bearer).status_code == 204
    declare(client, admin, name="documents", scopes=["read"])
    client.put(f"{API}/apis/documents", json={"scopes": ["write"]}, headers=admin.bearer)
    seen = changes(client, member, after=start).json()["changes"]
    assert [(c["action"], c["key_id"], c["api"]) for c in seen] == [("key.revoked", theirs["id"], None),
                                                                    ("api.redefined", None, "documents")]
    everything = changes(client, admin, after=start).json()["changes"]
    assert [c["key_id"] for c in everything if c["key_id"]] == [admins["id"], theirs["id"]]


def test_a_cursor_older_than_the_feed_keeps_is_gone(client, world, app):
    admin = world.acme_admin
    start = changes(client, admin).json()["cursor"]
    key = create(client, admin, name="k")
    client.delete(f"{API}/api-keys/{key['id']}", headers=admin.billing)
    with app.runtime.store.session() as s:
        s.execute(update(AuditEvent).values(at=utcnow() - timedelta(seconds=app.runtime.settings.change_feed_retention
                                                                      + 1)))
    answer = changes(client, admin, after=start)
    assert answer.status_code == 410 and answer.json()["status"] == 410
    assert changes(client, admin, after="999999999").status_code == 410  # beyond the latest: not this feed


def test_a_long_poll_answers_as_soon_as_a_change_commits(client, world):
    admin = world.acme_admin
    key = create(client, admin, name="k")
    start = changes(client, admin).json()["cursor"]
    timer = threading.Timer(0.5, lambda: client.delete(f"{API}/api-keys/{key['id']}", headers=admin.billing))
    began = time.monotonic()
    timer.start()
    try:
        answer = changes(client, admin, after=start, wait=10).json()
    finally:
        timer.join()
    took = time.monotonic() - began
    assert [(c["action"], c["key_id"]) for c in answer["changes"]] == [("key.revoked", key["id"])]
    assert 0.4 < took < 3, took
    began = time.monotonic()
    assert changes(client, admin, after=answer["cursor"], wait=1).json()["changes"] == []  # nothing: waits it out
    assert time.monotonic() - began >= 0.9


def test_on_postgresql_a_commit_wakes_the_waits_at_once(app):
    """LISTEN/NOTIFY, not the safety poll: a wait that would look again only after SAFETY_SECONDS returns
    as soon as a change of its organization commits."""
    import asyncio

    import pytest

    from keyhouse.changes import SAFETY_SECONDS
    from keyhouse.store import api_keys
    from tests.conftest import POSTGRES_URL, add_actor, add_organization

    if not POSTGRES_URL:
        pytest.skip("LISTEN/NOTIFY needs PostgreSQL: the PostgreSQL leg runs this")
    org = add_organization(app, "o")
    actor = add_actor(app, org, "a@o.test", "admin")
    signal = app.runtime.changes

    async def scenario() -> float:
        await signal.start()
        try:
            await asyncio.sleep(0.3)  # the listener is connected and listening

            def revoke():
                with app.runtime.store.session() as s:
                    row = api_keys.get_key(s, org, actor.key_id)
                    api_keys.revoke_keys(s, [row], actor={"organization_id": org, "actor_user_id": actor.user_id,
                                                         "actor_key_id": actor.key_id, "ip": None})

            loop = asyncio.get_running_loop()
            began = loop.time()
            loop.call_later(0.1, lambda: loop.run_in_executor(None, revoke))
            await signal.wait(org, timeout=10)
            return loop.time() - began
        finally:
            await signal.stop()

    took = asyncio.run(scenario())
    assert took < SAFETY_SECONDS * 0.8, took


def test_a_cursor_beyond_any_id_is_gone_not_an_error(client, world):
    """The spec admits 18 digits; the ids are smaller (PostgreSQL's integer): such a cursor is no cursor of
    this feed, answered 410 (found by the stateful fuzz on PostgreSQL as a 500)."""
    assert changes(client, world.acme_admin, after="999999999999999999").status_code == 410


def test_the_listener_says_whether_it_hears_the_stores_notifies(tmp_path, caplog):
    """On PostgreSQL the listener probes itself at start-up: a NOTIFY sent the way the store sends changes
    must reach it. Listening on another database (as LISTEN behind PgBouncer in transaction mode hears
    nothing) it says it is deaf, in /readyz and in the metric; on SQLite the waits poll."""
    from sqlalchemy.engine import make_url

    from tests.conftest import POSTGRES_URL, make_app

    def change_feed(listen_url=None) -> tuple[str, str]:
        app = make_app(tmp_path, listen_url=listen_url)
        with app.test_client() as client:
            deadline = time.monotonic() + 8
            while True:
                state = client.get(f"{API}/readyz").json()["checks"]["change_feed"]
                # the probe's answer comes within PROBE_SECONDS (3 s); deaf is also the state before it
                if state != "deaf" or time.monotonic() > deadline or (listen_url and time.monotonic() > deadline - 4):
                    break
                time.sleep(0.1)
            metric = client.get(f"{API}/metrics").text
        app.runtime.store.dispose()
        return state, metric

    if not POSTGRES_URL:  # SQLite: nothing to listen to, the waits poll
        assert change_feed()[0] == "polling"
        return
    state, metric = change_feed()
    assert state == "listening" and "keyhouse_change_feed_listener_listening 1.0" in metric
    elsewhere = make_url(POSTGRES_URL).set(database="postgres").render_as_string(hide_password=False)
    state, metric = change_feed(listen_url=elsewhere)
    assert state == "deaf" and "keyhouse_change_feed_listener_listening 0.0" in metric
    assert "heard no NOTIFY sent through the database" in caplog.text  # its probe went unheard, and it said so


def _on_postgresql(app) -> None:
    on_postgresql(app, "concurrent writers need PostgreSQL (SQLite runs one at a time)")


def _event(organization_id: str, target_id: str, action: str = "key.updated") -> dict:
    return {"organization_id": organization_id, "at": utcnow(), "action": action, "target_type": "api_key",
            "target_id": target_id}


def test_a_change_that_commits_late_is_never_behind_a_cursor_already_read(app, world):
    """The feed's order is the order changes commit, though no lock is held while they are written
    (migration 0011): a change made first and committed last comes after a cursor read in between. Had
    its event's id (taken first) been its cursor, a reader at the later change would never see it."""
    _on_postgresql(app)
    from sqlalchemy import insert

    from keyhouse.store import trail

    org, store, long_ago = world.acme_admin.organization_id, app.runtime.store, utcnow() - timedelta(days=1)
    start = store._read(trail.changes_after, org, None, 10, long_ago).cursor  # noqa: SLF001 - the store's own read
    with store.engine.connect() as late:
        with late.begin():
            late.execute(insert(AuditEvent), [_event(org, "made first")])
            with store.session() as s:  # meanwhile, another change commits
                s.execute(insert(AuditEvent), [_event(org, "made second")])
            read = store._read(trail.changes_after, org, start, 10, long_ago)  # noqa: SLF001
            assert [row[4] for row in read.rows] == ["made second"]
        after = store._read(trail.changes_after, org, read.cursor, 10, long_ago)  # noqa: SLF001
    assert [row[4] for row in after.rows] == ["made first"]


def test_a_reader_following_many_writers_of_one_organization_misses_nothing(app, world):
    """Eight writers of one organization, each changing its own keys in order, and a reader following the
    feed by its cursors while they write: every change read exactly once, each key's in the order made."""
    _on_postgresql(app)
    from sqlalchemy import insert

    from keyhouse.store import trail

    org, store, long_ago = world.acme_admin.organization_id, app.runtime.store, utcnow() - timedelta(days=1)
    cursor = store._read(trail.changes_after, org, None, 10, long_ago).cursor  # noqa: SLF001
    writers, each, done = 8, 40, threading.Event()

    def write(n: int) -> None:
        for i in range(each):
            with store.session() as s:
                s.execute(insert(AuditEvent), [_event(org, f"w{n}"), {**_event(org, f"w{n}"), "detail": str(i)}])

    seen: list = []

    def follow() -> None:
        nonlocal cursor
        while True:
            last_look = done.is_set()
            found = store._read(trail.changes_after, org, cursor, 50, long_ago)  # noqa: SLF001
            seen.extend(found.rows)
            cursor = found.cursor
            if last_look and not found.rows:
                return

    threads = [threading.Thread(target=write, args=(n,)) for n in range(writers)]
    reader = threading.Thread(target=follow)
    reader.start()
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    done.set()
    reader.join(30)
    assert len(seen) == writers * each * 2 and len({row[0] for row in seen}) == len(seen)
    with store.engine.connect() as c:
        details = dict(c.execute(select(AuditEvent.feed_position, AuditEvent.detail)
                                 .where(AuditEvent.organization_id == org)).all())
    for n in range(writers):
        mine = [details[row[0]] for row in seen if row[4] == f"w{n}"]
        assert mine == [d for i in range(each) for d in (None, str(i))]
