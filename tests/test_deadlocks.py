"""Deadlocks and serialization conflicts (PostgreSQL): told apart from an unreachable database, and the
unit of work that lost one run again where it happened. Hot keys are written in one order, so two hosts
flushing the same keys do not deadlock at all."""

from __future__ import annotations

import threading
import time
from collections import Counter

from sqlalchemy import select, update
from sqlalchemy.exc import OperationalError

from keyhouse.store import api_keys
from keyhouse.store.models import ApiKey, utcnow
from keyhouse.store.session import database_unreachable, retryable, retrying
from tests.conftest import issue_key
from tests.helpers import on_postgresql


def _on_postgresql(app) -> None:
    on_postgresql(app, "a deadlock needs PostgreSQL's row locks")


def _two_keys(app, world) -> tuple[int, int]:
    with app.runtime.store.session() as s:
        return tuple(issue_key(s, organization_id=world.acme_admin.organization_id, user_id=world.acme_admin.user_id,
                               description=name)[0].pk for name in ("a", "b"))


def _crossing(app, first: int, second: int, barrier: threading.Barrier, tries: Counter, name: str):
    """A unit of work locking `first`, then (once the other has locked its first) `second`."""
    def work() -> None:
        tries[name] += 1
        with app.runtime.store.session() as s:
            s.execute(update(ApiKey).where(ApiKey.pk == first).values(description=f"{name} first"))
            if tries[name] == 1:
                barrier.wait(timeout=10)
            s.execute(update(ApiKey).where(ApiKey.pk == second).values(description=f"{name} second"))
    return work


def _race(*works) -> None:
    threads = [threading.Thread(target=work) for work in works]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()


def test_a_deadlock_is_retryable_never_an_unreachable_database(app, world):
    _on_postgresql(app)
    a, b = _two_keys(app, world)
    barrier, tries, lost = threading.Barrier(2), Counter(), []

    def run(work) -> None:
        try:
            work()
        except OperationalError as e:
            lost.append(e)

    _race(lambda: run(_crossing(app, a, b, barrier, tries, "one")),
          lambda: run(_crossing(app, b, a, barrier, tries, "two")))
    assert len(lost) == 1, lost  # PostgreSQL picked one victim
    assert retryable(lost[0]) and not database_unreachable(lost[0])


def test_a_unit_of_work_that_lost_a_deadlock_is_run_again_and_both_commit(app, world):
    _on_postgresql(app)
    a, b = _two_keys(app, world)
    barrier, tries = threading.Barrier(2), Counter()
    _race(lambda: retrying(_crossing(app, a, b, barrier, tries, "one")),
          lambda: retrying(_crossing(app, b, a, barrier, tries, "two")))
    assert sorted(tries.values()) == [1, 2]  # one of the two lost, and ran again
    again = next(name for name, count in tries.items() if count == 2)
    with app.runtime.store.session() as s:
        written = {row.description for row in s.scalars(select(ApiKey).where(ApiKey.pk.in_([a, b])))}
    assert written == {f"{again} first", f"{again} second"}  # it committed whole, after the other


def test_hot_keys_are_touched_in_one_order(app, world, monkeypatch):
    """Two hosts flushing the same keys lock them in the same order: the flush writes in key order."""
    a, b = _two_keys(app, world)
    order = []
    with app.runtime.store.session() as s:
        real = s.execute

        def recording(statement, *args, **kwargs):
            order.append(statement.compile().params.get("pk_1"))
            return real(statement, *args, **kwargs)

        monkeypatch.setattr(s, "execute", recording)
        api_keys.touch_keys(s, {b: utcnow(), a: utcnow()})
    assert order == sorted([a, b])


def test_changes_of_one_organization_wait_for_each_other_and_never_deadlock(app, world):
    """A revocation counts the organization's live keys, then records its change of the feed; a creation
    inserts a key (whose foreign key takes a key-share lock on the organization's row), then counts, here
    in the same counting row (which makes it wait for the revocation). When the feed's order was the
    organization's row locked FOR UPDATE by the revocation's record, that lock conflicted with the
    creation's key-share lock while the creation waited for the revocation's count: a deadlock (seen under
    load across three hosts, 48 in 30 s). Since migration 0011 a change takes its place in the feed as it
    commits, and nothing in the transaction locks the organization's row."""
    _on_postgresql(app)
    from sqlalchemy import text

    from keyhouse import keys
    from keyhouse.store import trail
    from keyhouse.store.models import utcnow

    admin = world.acme_admin
    actor = {"organization_id": admin.organization_id, "actor_user_id": admin.user_id, "actor_key_id": None,
             "ip": "192.0.2.1"}
    store = app.runtime.store
    deadlocks = "SELECT deadlocks FROM pg_stat_database WHERE datname = current_database()"
    with store.engine.connect() as c:
        before = c.execute(text(deadlocks)).scalar()
    counted, failed = threading.Event(), []

    def revocation() -> None:
        with store.session() as s:
            s.info["live_key_shard"] = 0  # the row the creation counts in too
            api_keys._count_live(s, admin.organization_id, -1)  # noqa: SLF001 - the revocation's first step
            counted.set()
            with store.engine.connect() as watcher:  # until the creation waits for this transaction
                deadline = time.monotonic() + 10
                while not watcher.execute(text("SELECT count(*) FROM pg_locks WHERE NOT granted")).scalar():
                    assert time.monotonic() < deadline, "the creation never waited"
                    time.sleep(0.01)
            trail.record(s, actor, "key.revoked", "api_key", "a key")

    def creation() -> None:
        counted.wait(10)
        new = keys.new(b"secret")
        now = utcnow()
        with store.session() as s:  # inserts the key, then counts it
            s.info["live_key_shard"] = 0
            api_keys.insert_keys(s, admin.organization_id, [{
                "id": "raced", "user_id": admin.user_id, "description": "raced", "type": "secret", "api_user": None,
                "permissions": ["*"], "key_hash": new.hash, "key_hint": new.hint, "created_at": now,
                "updated_at": now}])

    def run(work) -> None:
        try:
            work()
        except Exception as e:  # noqa: BLE001 - what went wrong is the assertion's message
            failed.append(e)

    _race(lambda: run(revocation), lambda: run(creation))
    assert failed == []
    with store.engine.connect() as c:
        assert c.execute(text(deadlocks)).scalar() == before
