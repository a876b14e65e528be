"""What requests leave behind without writing to the database on their way: last-use times, failed
authentications and keys to re-hash after a secret rotation, gathered in memory and written in batches.

Precision: a key's `last_used_at` is at most FLUSH_SECONDS late, and a process killed hard loses at
most that much of it (a clean stop flushes). Failed authentications are bounded in memory: under a flood
of guesses the oldest unwritten ones are dropped and counted (`keyhouse_audit_events_dropped_total`),
never the service.
"""

from __future__ import annotations

import asyncio
import logging
from collections import deque
from datetime import datetime, timedelta

from anyio import to_thread

from . import metrics
from .store import api_keys, credentials, trail
from .store.models import utcnow
from .store.session import Store, database_unreachable, retryable

log = logging.getLogger("keyhouse.recorder")

FLUSH_SECONDS = 2.0
PRUNE_SECONDS = 60.0  # how often the trail is pruned (with KEYHOUSE_AUDIT_RETENTION)
PRUNE_BATCH = 1000  # events deleted per transaction
MAX_PENDING_EVENTS = 10_000


class Recorder:
    def __init__(self, store: Store):
        self.store = store
        self._last_used: dict[int, datetime] = {}
        self._events: deque[dict] = deque(maxlen=MAX_PENDING_EVENTS)
        self._rehash: dict[int, tuple[str, str]] = {}

    def rehash(self, key_pk: int, old_hash: str, new_hash: str) -> None:
        self._rehash[key_pk] = (old_hash, new_hash)

    def used(self, key_pk: int, at: datetime) -> None:
        self._last_used[key_pk] = at

    def auth_failed(self, **event) -> None:
        if len(self._events) == self._events.maxlen:
            metrics.DROPPED_EVENTS.inc()
        self._events.append({"action": "auth.failed", "target_type": "request", "at": utcnow(), **event})

    def flush(self) -> None:
        """Write what has gathered (called from a worker thread, and at shutdown)."""
        last_used, self._last_used = self._last_used, {}
        rehash, self._rehash = self._rehash, {}
        events = [self._events.popleft() for _ in range(len(self._events))]
        if not last_used and not events and not rehash:
            return
        try:
            with self.store.session() as s:
                credentials.rehash_keys(s, rehash)
                api_keys.touch_keys(s, last_used)
                trail.insert_events(s, events)
        except Exception as e:
            if not (database_unreachable(e) or retryable(e)):
                log.exception("could not record %d last uses and %d events", len(last_used), len(events))
                return
            # The database is away (requests are answering 503 meanwhile), or this flush lost a deadlock:
            # keep it all for the next flush. Newer last uses win; events stay bounded, the oldest dropped.
            log.warning("%s; keeping %d last uses and %d events for the next flush",
                        "lost a deadlock" if retryable(e) else "database unreachable", len(last_used), len(events))
            for pk, at in last_used.items():
                if pk not in self._last_used or self._last_used[pk] < at:
                    self._last_used[pk] = at
            self._rehash = {**rehash, **self._rehash}
            for event in reversed(events):
                if len(self._events) == self._events.maxlen:
                    metrics.DROPPED_EVENTS.inc()
                    break
                self._events.appendleft(event)

    async def run(self) -> None:
        while True:
            await asyncio.sleep(FLUSH_SECONDS)
            await to_thread.run_sync(self.flush)

    async def prune(self, retention_seconds: int | None) -> None:
        """Every PRUNE_SECONDS, the trail's events older than the retention deleted, PRUNE_BATCH at a time
        (every worker prunes; deleting what another deleted deletes nothing)."""
        while retention_seconds is not None:
            await to_thread.run_sync(self.prune_once, retention_seconds)
            await asyncio.sleep(PRUNE_SECONDS)

    def prune_once(self, retention_seconds: int) -> int:
        """Deletes, in batches, the events older than the retention; how many."""
        before, deleted = utcnow() - timedelta(seconds=retention_seconds), 0
        try:
            while True:
                with self.store.session() as s:
                    done = trail.prune_events(s, before, PRUNE_BATCH)
                deleted += done
                if done < PRUNE_BATCH:
                    return deleted
        except Exception as e:  # noqa: BLE001 - pruning waits for the next round, whatever went wrong
            log.warning("could not prune the audit trail (%s); trying again later", type(e).__name__)
            return deleted
