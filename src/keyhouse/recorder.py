"""What requests leave behind without writing to the database on their way: last-use times, verdicts
counted for usage, failed authentications and keys to re-hash after a secret rotation, gathered in memory
and written in batches.

Precision: a key's `last_used_at` and its usage are at most FLUSH_SECONDS late, and a process killed hard
loses at most that much of them (a clean stop flushes). Usage is exact otherwise: every verdict is counted,
none sampled; while the database is away the counts are kept, up to MAX_PENDING_COUNTS rows' worth.
Failed authentications are bounded in memory: under a flood of guesses the oldest unwritten ones are
dropped and counted (`keyhouse_audit_events_dropped_total`), never the service.
"""

from __future__ import annotations

import asyncio
import logging
from collections import deque
from datetime import UTC, datetime, timedelta

from anyio import to_thread

from . import metrics
from .store import api_keys, credentials, trail, usage
from .store.models import utcnow
from .store.session import Store, database_unreachable, retryable

log = logging.getLogger("keyhouse.recorder")

FLUSH_SECONDS = 2.0
PRUNE_SECONDS = 60.0  # how often the trail is pruned (with KEYHOUSE_AUDIT_RETENTION)
PRUNE_BATCH = 1000  # events deleted per transaction
MAX_PENDING_EVENTS = 10_000
MINUTE = timedelta(minutes=1)
MAX_PENDING_COUNTS = 100_000  # (key, minute, outcome) and (key, address) pairs kept between flushes


class Recorder:
    def __init__(self, store: Store, *, count_usage: bool = True):
        self.store = store
        self.count_usage = count_usage
        self._last_used: dict[int, datetime] = {}
        self._events: deque[dict] = deque(maxlen=MAX_PENDING_EVENTS)
        self._rehash: dict[int, tuple[str, str]] = {}
        self._verdicts: dict[tuple, int] = {}  # (key pk, organization, outcome, minute) -> verdicts
        self._minute = self._next_minute = datetime.min.replace(tzinfo=UTC)
        self._addresses: dict[tuple[int, str], tuple[int, datetime, datetime]] = {}

    def rehash(self, key_pk: int, old_hash: str, new_hash: str) -> None:
        self._rehash[key_pk] = (old_hash, new_hash)

    def used(self, key_pk: int, at: datetime) -> None:
        self._last_used[key_pk] = at

    def verdict(self, key_pk: int, organization_id: str, outcome: str, at: datetime, ip: str | None) -> None:
        """A verdict on a key (VALID or a refusal's code), presented from `ip`, counted for its usage. Twice
        a request, so kept to a few dictionary operations: the minute is worked out once a minute."""
        if not self.count_usage:
            return
        if not self._minute <= at < self._next_minute:
            self._minute = at.replace(second=0, microsecond=0)
            self._next_minute = self._minute + MINUTE
        counted, verdicts = (key_pk, organization_id, outcome, self._minute), self._verdicts
        n = verdicts.get(counted)
        if n is not None:
            verdicts[counted] = n + 1
        elif len(verdicts) < MAX_PENDING_COUNTS:
            verdicts[counted] = 1
        else:
            metrics.DROPPED_USAGE.inc()
            return
        if ip is not None:
            seen = self._addresses.get((key_pk, ip))
            if seen is not None:
                self._addresses[key_pk, ip] = (seen[0] + 1, seen[1], at)
            elif len(self._addresses) < MAX_PENDING_COUNTS:
                self._addresses[key_pk, ip] = (1, at, at)

    def auth_failed(self, **event) -> None:
        if len(self._events) == self._events.maxlen:
            metrics.DROPPED_EVENTS.inc()
        self._events.append({"action": "auth.failed", "target_type": "request", "at": utcnow(), **event})

    def flush(self) -> None:
        """Write what has gathered (called from a worker thread, and at shutdown)."""
        last_used, self._last_used = self._last_used, {}
        rehash, self._rehash = self._rehash, {}
        verdicts, self._verdicts = self._verdicts, {}
        addresses, self._addresses = self._addresses, {}
        events = [self._events.popleft() for _ in range(len(self._events))]
        if not last_used and not events and not rehash and not verdicts:
            return
        try:
            with self.store.session() as s:
                credentials.rehash_keys(s, rehash)
                api_keys.touch_keys(s, last_used)
                usage.count_verdicts(s, verdicts, addresses)
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
            self._keep(verdicts, addresses)
            for event in reversed(events):
                if len(self._events) == self._events.maxlen:
                    metrics.DROPPED_EVENTS.inc()
                    break
                self._events.appendleft(event)

    def _keep(self, verdicts: dict[tuple, int],
              addresses: dict[tuple[int, str], tuple[int, datetime, datetime]]) -> None:
        """Counts a failed flush wrote nothing of, added back to those gathered since."""
        for counted, n in verdicts.items():
            if counted in self._verdicts or len(self._verdicts) < MAX_PENDING_COUNTS:
                self._verdicts[counted] = self._verdicts.get(counted, 0) + n
            else:
                metrics.DROPPED_USAGE.inc(n)
        for pair, (n, first, last) in addresses.items():
            if (seen := self._addresses.get(pair)) is not None:
                self._addresses[pair] = (seen[0] + n, min(first, seen[1]), max(last, seen[2]))
            elif len(self._addresses) < MAX_PENDING_COUNTS:
                self._addresses[pair] = (n, first, last)

    async def run(self) -> None:
        while True:
            await asyncio.sleep(FLUSH_SECONDS)
            await to_thread.run_sync(self.flush)

    async def prune(self, retention_seconds: int | None, usage_retention_days: int) -> None:
        """Every PRUNE_SECONDS, the trail's events older than its retention (if it has one) and the usage
        older than each granularity is kept, deleted in small batches (every worker prunes; deleting what
        another deleted deletes nothing)."""
        while True:
            if retention_seconds is not None:
                await to_thread.run_sync(self.prune_once, retention_seconds)
            await to_thread.run_sync(self.prune_usage, usage_retention_days)
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

    def prune_usage(self, retention_days: int) -> int:
        """Deletes, in batches, the usage older than it is kept; how many rows."""
        now, deleted = utcnow(), 0
        try:
            while True:
                with self.store.session() as s:
                    done = usage.prune(s, now, timedelta(days=retention_days))
                deleted += done
                if not done:
                    return deleted
        except Exception as e:  # noqa: BLE001 - as for the trail
            log.warning("could not prune usage (%s); trying again later", type(e).__name__)
            return deleted
