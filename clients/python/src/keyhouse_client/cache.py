"""A bounded cache of verdicts, keyed by a keyed hash of the key and the question (never the key itself).

How long a verdict may be served from here:
- a valid one at most `valid_ttl` seconds (60 at the most), and never past the key's `expires_at` or the
  presented secret's `secret_valid_until`;
- a refusal at most `refusal_ttl` seconds (5 at the most), a rate-limited one not past its reset;
- never, for a key with credits or a rate limit of its own: every use must reach keyhouse to be counted.

Changes from keyhouse's change feed evict what they touch (`invalidate`, `clear`). A lookup that was in
flight when a change to its key arrived is not stored (`mark` and `put(..., since=)`): it may have been
answered before the change committed.
"""

from __future__ import annotations

import hashlib
import secrets
import threading
import time
from collections import OrderedDict
from collections.abc import Callable
from datetime import UTC, datetime

from cachetools import TLRUCache

from .verdict import Verdict

MAX_VALID_TTL = 60.0
MAX_REFUSAL_TTL = 5.0
# Invalidations remembered for lookups still in flight; older ones are summed up in a floor (see put).
_MARKS = 10_000


class VerdictCache:
    def __init__(self, maxsize: int = 10_000, *, valid_ttl: float = MAX_VALID_TTL,
                 refusal_ttl: float = MAX_REFUSAL_TTL, timer: Callable[[], float] = time.monotonic):
        if not 0 <= valid_ttl <= MAX_VALID_TTL or not 0 <= refusal_ttl <= MAX_REFUSAL_TTL:
            raise ValueError(f"valid_ttl is at most {MAX_VALID_TTL} s and refusal_ttl at most {MAX_REFUSAL_TTL} s")
        self.valid_ttl, self.refusal_ttl = valid_ttl, refusal_ttl
        self._timer = timer
        self._entries: TLRUCache = TLRUCache(maxsize, lambda _digest, entry, now: now + entry[1], timer=timer)
        self._by_key_id: dict[str, set[str]] = {}
        self._salt = secrets.token_bytes(32)  # a process's own: its digests mean nothing anywhere else
        self._lock = threading.Lock()
        self._seq = 0  # counts the changes applied
        self._marks: OrderedDict[str, int] = OrderedDict()  # key id -> the change that last touched it
        self._floor = 0  # a lookup that started before this change is stored for no key

    def digest(self, key: str, question: tuple) -> str:
        """The cache's name for a key and what is asked of it: a MAC under this process's own salt (BLAKE2b
        in its keyed mode: half the time of an HMAC-SHA256, on every request a guarded app serves)."""
        return hashlib.blake2b(repr((key, question)).encode(), key=self._salt, digest_size=16).hexdigest()

    def get(self, digest: str) -> Verdict | None:
        with self._lock:
            entry = self._entries.get(digest)
        return None if entry is None else entry[0]

    def mark(self) -> int:
        """Where the feed stands as a lookup starts: hand it to `put` with what the lookup answered."""
        with self._lock:
            return self._seq

    def put(self, digest: str, verdict: Verdict, since: int) -> None:
        """Keep `verdict` for as long as it may be served, unless a change touched its key (or everything)
        after `since`: then the lookup may have seen the world before that change."""
        ttl = self.ttl(verdict)
        if ttl <= 0:
            return
        with self._lock:
            if since < self._floor or (verdict.key_id is not None and self._marks.get(verdict.key_id, -1) > since):
                return
            self._entries[digest] = (verdict, ttl)
            if verdict.key_id is not None:
                self._by_key_id.setdefault(verdict.key_id, set()).add(digest)
            if len(self._by_key_id) > 2 * self._entries.maxsize:  # evicted entries leave names behind
                live = set(self._entries.keys())
                self._by_key_id = {k: names & live for k, names in self._by_key_id.items() if names & live}

    def ttl(self, verdict: Verdict) -> float:
        """Seconds `verdict` may be served from the cache (0: not at all)."""
        if verdict.remaining is not None or (verdict.valid and verdict.rate_limit is not None):
            return 0.0
        now = datetime.now(UTC)
        limits = [self.valid_ttl if verdict.valid else self.refusal_ttl]
        ends = [verdict.expires_at, verdict.secret_valid_until] if verdict.valid else []
        if verdict.code == "RATE_LIMITED" and verdict.rate_limit:
            ends.append(datetime.fromisoformat(verdict.rate_limit["reset_at"]))
        limits += [(end - now).total_seconds() for end in ends if end is not None]
        return max(0.0, min(limits))

    def invalidate(self, key_id: str) -> None:
        """A change to the key: no verdict on it is served any more."""
        with self._lock:
            self._seq += 1
            self._marks[key_id] = self._seq
            self._marks.move_to_end(key_id)
            if len(self._marks) > _MARKS:
                _, oldest = self._marks.popitem(last=False)
                self._floor = max(self._floor, oldest)
            for digest in self._by_key_id.pop(key_id, ()):
                self._entries.pop(digest, None)

    def clear(self) -> None:
        """A change that may touch any verdict (an API redefined), or changes that were missed: forget all."""
        with self._lock:
            self._seq += 1
            self._floor = self._seq
            self._entries.clear()
            self._by_key_id.clear()
            self._marks.clear()

    def __len__(self) -> int:
        with self._lock:
            return len(self._entries)
