"""Rate limits per key and per organization, with the `limits` library.

In memory by default (one process); shared by every worker through Redis when KEYHOUSE_REDIS_URL is
set. A sliding-window counter: two numbers per key and window, whatever the traffic. If Redis cannot be
reached the request is let through and the failure logged: losing the limiter must not take
authentication down with it.

Two kinds of use are counted apart: requests a key makes to keyhouse (its request rate, and its
organization's), and verifications of a key by a gateway (`POST /keys/verify`: the key's own limit, or
the server's default for verified keys, if one is set). A gateway verifying many keys spends its own
request rate, never theirs.
"""

from __future__ import annotations

import logging
import math
import time
from dataclasses import dataclass
from typing import cast

from limits import RateLimitItem, RateLimitItemPerSecond, parse
from limits.aio.storage import SlidingWindowCounterSupport
from limits.aio.strategies import SlidingWindowCounterRateLimiter
from limits.storage import storage_from_string

log = logging.getLogger("keyhouse.ratelimit")


def per_window(limit: int, window_seconds: int) -> RateLimitItem:
    """A key's own limit: `limit` requests per `window_seconds`."""
    return RateLimitItemPerSecond(limit, window_seconds)


def admitted_at(item: RateLimitItem, previous: int, previous_expires_in: float, current: int,
                current_expires_in: float, now: float) -> float:
    """When one more use is admitted (epoch seconds), from the sliding window as the storage reports it:
    the first moment its weighted count (the previous window's count, weighted by how much of that window
    still overlaps, plus the current one's) is below the limit again, as the limiter checks it. Never
    earlier than the limiter admits: what a verdict's `reset_at` says.

    `previous_expires_in` is how long the previous window still weighs, `current_expires_in` how long the
    current count is kept (its window's end, plus one window). The `limits` library's own `reset_time` is
    when the count next drops by one, which is not when a use is admitted again."""
    limit, expiry = item.amount, item.get_expiry()
    room = limit - current  # admitted while previous * overlap / expiry < room
    if room > 0:
        if previous == 0 or previous * previous_expires_in / expiry < room:
            return now
        return now + previous_expires_in - room * expiry / previous + _AFTER
    # The current window alone is full: it must roll over, then weigh less than the limit.
    rollover = max(0.0, current_expires_in - expiry)
    return now + rollover + max(0.0, expiry - limit * expiry / current) + _AFTER


# At the moment computed above the weighted count equals the limit, which still refuses; a millisecond
# after, it is below: the time a verdict names is one the limiter admits at.
_AFTER = 0.001


@dataclass(frozen=True)
class Standing:
    """Where an identity stands against a limit: what it allows, what is left, and when it resets (epoch s)."""

    limit: int
    remaining: int
    reset_at: float


@dataclass(frozen=True)
class Exceeded:
    limit: int
    retry_after: int
    scope: str  # "key", "organization", or "client" (an address presenting refused credentials)
    reset_at: float = 0.0  # when the window resets (epoch seconds)

    def headers(self) -> dict[str, str]:
        return {"Retry-After": str(self.retry_after), "X-RateLimit-Limit": str(self.limit),
                "X-RateLimit-Remaining": "0"}


class RateLimiter:
    def __init__(self, per_key: str, per_organization: str, redis_url: str | None,
                 refused_per_client: str = "100/minute", per_verified_key: str | None = None):
        self._storage = f"async+{redis_url}" if redis_url else "async+memory://"
        self._limiter = self._new_limiter()
        self.per_key: RateLimitItem = parse(per_key)
        self.per_organization: RateLimitItem = parse(per_organization)
        self.refused_per_client: RateLimitItem = parse(refused_per_client)
        # Verifications of a key without a limit of its own: none, unless the deployment sets one.
        self.per_verified_key: RateLimitItem | None = parse(per_verified_key) if per_verified_key else None

    def forget(self) -> None:
        """Start counting afresh in this process (the in-memory counts; shared counts stay in Redis,
        where every identity carries an organization id). The test suite shares one app between tests."""
        self._limiter = self._new_limiter()

    def _new_limiter(self) -> SlidingWindowCounterRateLimiter:
        # redis-py rather than limits' default coredis: OpenTelemetry's Redis instrumentation traces redis-py.
        options = {"implementation": "redispy"} if self._storage.startswith("async+redis") else {}
        return SlidingWindowCounterRateLimiter(storage_from_string(self._storage, **options))

    async def refused(self, client: str) -> None:
        """Count one refused credential presented from `client` (an address)."""
        try:
            await self._limiter.hit(self.refused_per_client, f"refused:{client}")
        except Exception:  # noqa: BLE001 - fail open, loudly, as below
            log.exception("rate limit storage unavailable; not counting a refused credential")

    async def refusing(self, client: str) -> Exceeded | None:
        """Whether `client` has presented too many refused credentials to be heard now."""
        identity = f"refused:{client}"
        try:
            if await self._limiter.test(self.refused_per_client, identity):
                return None
            stats = await self._limiter.get_window_stats(self.refused_per_client, identity)
        except Exception:  # noqa: BLE001
            log.exception("rate limit storage unavailable; letting the request through")
            return None
        return Exceeded(self.refused_per_client.amount, max(1, math.ceil(stats.reset_time - time.time())), "client")

    async def hit(self, organization_id: str, key_pk: int, own: RateLimitItem | None = None) -> Exceeded | None:
        """Count one request; what was exceeded, if anything (the key's limit is checked first: `own`, the
        key's own, or else the server's default per key)."""
        # Identities carry the organization id (a UUID), so deployments sharing a Redis never collide.
        for item, identity, scope in ((own or self.per_key, f"key:{organization_id}:{key_pk}", "key"),
                                      (self.per_organization, f"org:{organization_id}", "organization")):
            try:
                if not await self._limiter.hit(item, identity):
                    stats = await self._limiter.get_window_stats(item, identity)
                    return Exceeded(item.amount, max(1, math.ceil(stats.reset_time - time.time())), scope,
                                    stats.reset_time)
            except Exception:  # noqa: BLE001 - any storage failure: fail open, loudly
                log.exception("rate limit storage unavailable; letting the request through")
                return None
        return None

    def verified_limit(self, own: RateLimitItem | None) -> RateLimitItem | None:
        """The limit a verification of a key counts against: its own, else the default for verified keys."""
        return own or self.per_verified_key

    async def verified(self, organization_id: str, key_pk: int, item: RateLimitItem) -> Standing | Exceeded | None:
        """Count one verification of a key against `item`: where it stands after it, or what it exceeded
        (with the moment it is admitted again); None if the storage cannot say."""
        identity = f"verify:{organization_id}:{key_pk}"
        try:
            admitted = await self._limiter.hit(item, identity)
            storage = cast(SlidingWindowCounterSupport, self._limiter.storage)
            previous, previous_expires_in, current, current_expires_in = await storage.get_sliding_window(
                item.key_for(identity), item.get_expiry())
        except Exception:  # noqa: BLE001 - fail open, loudly, as above
            log.exception("rate limit storage unavailable; letting the verification through")
            return None
        now = time.time()
        reset_at = admitted_at(item, previous, previous_expires_in, current, current_expires_in, now)
        if not admitted:
            return Exceeded(item.amount, max(1, math.ceil(reset_at - now)), "key", reset_at)
        weighted = previous * previous_expires_in / item.get_expiry() + current
        return Standing(item.amount, max(0, item.amount - math.ceil(weighted)), reset_at)
