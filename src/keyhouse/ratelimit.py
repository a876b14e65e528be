"""Rate limits per key and per organization, with the `limits` library.

In memory by default (one process); shared by every worker through Redis when KEYHOUSE_REDIS_URL is
set. A sliding-window counter: two numbers per key and window, whatever the traffic. If Redis cannot be
reached the request is let through and the failure logged: losing the limiter must not take
authentication down with it.
"""

from __future__ import annotations

import logging
import math
import time
from dataclasses import dataclass

from limits import RateLimitItem, RateLimitItemPerSecond, parse
from limits.aio.strategies import SlidingWindowCounterRateLimiter
from limits.storage import storage_from_string

log = logging.getLogger("keyhouse.ratelimit")


def per_window(limit: int, window_seconds: int) -> RateLimitItem:
    """A key's own limit: `limit` requests per `window_seconds`."""
    return RateLimitItemPerSecond(limit, window_seconds)


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
                 refused_per_client: str = "100/minute"):
        self._storage = f"async+{redis_url}" if redis_url else "async+memory://"
        self._limiter = SlidingWindowCounterRateLimiter(storage_from_string(self._storage))
        self.per_key: RateLimitItem = parse(per_key)
        self.per_organization: RateLimitItem = parse(per_organization)
        self.refused_per_client: RateLimitItem = parse(refused_per_client)

    def forget(self) -> None:
        """Start counting afresh in this process (the in-memory counts; shared counts stay in Redis,
        where every identity carries an organization id). The test suite shares one app between tests."""
        self._limiter = SlidingWindowCounterRateLimiter(storage_from_string(self._storage))

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

    async def standing(self, organization_id: str, key_pk: int, own: RateLimitItem) -> Standing | None:
        """Where a key stands against its own limit (None if the storage cannot say)."""
        try:
            stats = await self._limiter.get_window_stats(own, f"key:{organization_id}:{key_pk}")
        except Exception:  # noqa: BLE001
            log.exception("rate limit storage unavailable; no standing to report")
            return None
        return Standing(own.amount, stats.remaining, stats.reset_time)
