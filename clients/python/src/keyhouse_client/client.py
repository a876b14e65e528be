"""Clients of keyhouse's verify and change feed, sync (`Keyhouse`) and async (`AsyncKeyhouse`).

`verify` answers from the verdict cache while the change feed is heard from, and asks keyhouse
otherwise; concurrent verifies of one key and question make one lookup. A follower (a thread, or a
task) long-polls `GET /keys/changes` and evicts what each change touches; on 410, or after a silence, it
forgets everything. While the feed has not answered for FEED_SILENCE seconds, the cache is bypassed, not
trusted: a revoked key is never served from it for longer than a change takes to arrive.

The plaintext key leaves the process only in the body of the verify request; it is never logged, and
the cache knows it only by a keyed hash (BLAKE2b) under a per-process salt.
"""

from __future__ import annotations

import asyncio
import logging
import threading
import time
from collections.abc import Iterable
from typing import Any

import httpx
from httpx_aiohttp import AiohttpTransport
from httpx_retries import Retry, RetryTransport

from . import tracing
from .cache import MAX_VALID_TTL, VerdictCache
from .verdict import Verdict

log = logging.getLogger("keyhouse_client")

FEED_WAIT = 10  # seconds keyhouse holds a feed request open when nothing changes
FEED_SILENCE = FEED_WAIT + 5.0  # a feed not heard from for longer is not trusted
assert FEED_SILENCE <= MAX_VALID_TTL  # noqa: S101 - the cache's promise rests on it
FEED_BACKOFF = 1.0  # after a failed feed request
FEED_REFUSED_BACKOFF = 30.0  # after keyhouse refused the key on the feed (a permission may be granted later)
# What keyhouse's change feed may say: a change to a key, or (api.*) one that may touch any verdict.
_KEY_CHANGES = {"key.revoked", "key.rerolled", "key.updated", "key.credits_exhausted", "key.leaked"}


class KeyhouseUnavailable(Exception):
    """keyhouse did not answer (after retries), or answered what verify never should: no verdict."""


class FeedRefused(Exception):
    """keyhouse refused this client's key on the change feed (401, 403): nothing will be cached."""


def _retry() -> Retry:
    # 429 (the gateway's own key is rate limited) and 503 (keyhouse's database is away) mean the request was
    # not acted on, so a verify, a POST, is safe to send again.
    return Retry(total=3, backoff_factor=0.1, status_forcelist=[429, 503], allowed_methods=["GET", "POST"],
                 respect_retry_after_header=True, max_backoff_wait=5.0)


def _question(api: str | None, permissions: Iterable[str] | None, any_permissions: Iterable[str] | None,
              cost: int | None, ip: str | None) -> tuple:
    return (api, tuple(permissions or ()), None if any_permissions is None else tuple(any_permissions), cost, ip)


def _body(key: str, question: tuple) -> dict[str, Any]:
    api, permissions, any_permissions, cost, ip = question
    body: dict[str, Any] = {"key": key}
    for name, value in (("api", api), ("permissions", list(permissions) or None), ("cost", cost), ("ip", ip),
                        ("any_permissions", None if any_permissions is None else list(any_permissions))):
        if value is not None:
            body[name] = value
    return body


def _detail(response: httpx.Response) -> str:
    try:
        return str(response.json().get("detail", ""))[:200]
    except ValueError:
        return response.text[:200]


def _verdict(response: httpx.Response) -> Verdict:
    if response.status_code != 200:
        raise KeyhouseUnavailable(f"verify answered {response.status_code}: {response.text[:200]}")
    return Verdict.from_json(response.json())


class _Feed:
    """Where the change feed stands, and what to do with what it says (shared by both clients)."""

    def __init__(self, cache: VerdictCache | None):
        self.cache = cache
        self.cursor: str | None = None
        self.heard_at: float | None = None  # time.monotonic() of its last answer
        self.failing = False  # its last request failed: not trusted until one answers again
        self.refused = False  # keyhouse refused the key on the feed: said once, loudly

    def trusted(self) -> bool:
        return (self.heard_at is not None and not self.failing
                and time.monotonic() - self.heard_at <= FEED_SILENCE)

    def params(self) -> dict[str, Any]:
        return {} if self.cursor is None else {"after": self.cursor, "wait": FEED_WAIT}

    def heard(self, response: httpx.Response) -> None:
        """Apply one answer of the feed."""
        assert self.cache is not None  # noqa: S101 - a feed is followed only for a cache
        if response.status_code == 410:  # what follows our cursor is lost: so is everything we cached
            self.cache.clear()
            self.cursor = None
            return
        if response.status_code in (401, 403):
            raise FeedRefused(f"{response.status_code}: {_detail(response)}")
        response.raise_for_status()
        answer = response.json()
        for change in answer["changes"]:
            if change["action"] in _KEY_CHANGES and change["key_id"]:
                self.cache.invalidate(change["key_id"])
            else:
                self.cache.clear()
        self.cursor = answer["cursor"]
        self.heard_at, self.failing = time.monotonic(), False

    def lost(self, error: Exception) -> float:
        """A failed request: the cache is bypassed until the feed answers again, and then the changes
        missed meanwhile are applied (or, past the feed's retention, everything is forgotten on its 410).
        Returns how long to wait before asking again."""
        if isinstance(error, FeedRefused):
            if not self.refused:
                log.error("keyhouse refused this client's key on the change feed (%s). The key needs the "
                          "listKeyChanges permission beside verifyKey; until it has it, no verdict is cached "
                          "and every request is verified.", error)
            self.refused = self.failing = True
            return FEED_REFUSED_BACKOFF
        if not self.failing:
            log.warning("keyhouse change feed unreachable (%s); verifying without the cache", type(error).__name__)
        self.failing = True
        return FEED_BACKOFF


class _Flight:
    """A leader's request in a thread: its verdict, once `done` (None if it failed: followers ask)."""

    def __init__(self) -> None:
        self.done = threading.Event()
        self.verdict: Verdict | None = None


class _Core:
    """What both clients do, written once: the question asked, the answer the cache holds, and one request
    for concurrent verifies of one key and question (the leader asks; the others take its verdict when it
    may be cached, and ask themselves when it may not: a key with credits or limits counts every use).
    The two clients differ only in how they wait and how they send."""

    def __init__(self, cache: VerdictCache | None):
        self.cache = cache
        self.feed = _Feed(cache)
        self.flights: dict[str, Any] = {}  # digest -> the leader's flight (an Event, or a Future)

    def cached(self, key: str, question: tuple) -> tuple[str | None, Verdict | None]:
        """(digest, cached verdict): no digest when the cache is off or not trusted (then: ask)."""
        if self.cache is None or not self.feed.trusted():
            return None, None
        digest = self.cache.digest(key, question)
        return digest, self.cache.get(digest)

    def taken(self, verdict: Verdict | None) -> bool:
        """Whether a follower may take the leader's verdict rather than ask itself."""
        return verdict is not None and self.cache is not None and self.cache.ttl(verdict) > 0

    def keep(self, digest: str, verdict: Verdict, since: int) -> None:
        assert self.cache is not None  # noqa: S101 - a flight has a digest only with a cache
        self.cache.put(digest, verdict, since)


class Keyhouse:
    """A synchronous client (WSGI applications, scripts). `cache=None` verifies every time."""

    def __init__(self, base_url: str, key: str, *, cache: VerdictCache | None = None, caching: bool = True,
                 timeout: float = 5.0, transport: httpx.BaseTransport | None = None):
        self.cache = (cache if cache is not None else VerdictCache()) if caching else None  # (an empty cache is falsy)
        headers = {"Authorization": f"Bearer {key}"}
        self._http = httpx.Client(base_url=base_url, headers=headers, timeout=timeout, event_hooks=tracing.hooks(),
                                  transport=RetryTransport(transport or httpx.HTTPTransport(), retry=_retry()))
        self._feed_http = httpx.Client(base_url=base_url, headers=headers, timeout=FEED_WAIT + 5.0,
                                       transport=transport)
        self._core = _Core(self.cache)
        self._feed = self._core.feed
        self._flights_lock = threading.Lock()
        self._closed = threading.Event()
        self._follower: threading.Thread | None = None
        if self.cache is not None:
            self._follower = threading.Thread(target=self._follow, name="keyhouse-change-feed", daemon=True)
            self._follower.start()

    def verify(self, key: str, *, api: str | None = None, permissions: Iterable[str] | None = None,
               any_permissions: Iterable[str] | None = None, cost: int | None = None,
               ip: str | None = None) -> Verdict:
        """keyhouse's verdict on `key` for the question (see `POST /keys/verify`)."""
        question = _question(api, permissions, any_permissions, cost, ip)
        digest, cached = self._core.cached(key, question)
        if cached is not None:
            return cached
        if digest is None:
            return self._ask(key, question)
        with self._flights_lock:
            flight = self._core.flights.get(digest)
            leading = flight is None
            if flight is None:
                flight = self._core.flights[digest] = _Flight()
        if not leading:
            flight.done.wait(10)
            led = flight.verdict
            return led if led is not None and self._core.taken(led) else self._ask(key, question)
        try:
            since = self.cache.mark() if self.cache is not None else 0
            verdict = flight.verdict = self._ask(key, question)
            self._core.keep(digest, verdict, since)
            return verdict
        finally:
            with self._flights_lock:
                self._core.flights.pop(digest, None)
            flight.done.set()

    def _ask(self, key: str, question: tuple) -> Verdict:
        try:
            return _verdict(self._http.post("/keys/verify", json=_body(key, question)))
        except httpx.HTTPError as e:
            raise KeyhouseUnavailable(f"keyhouse unreachable: {type(e).__name__}") from None

    def _follow(self) -> None:
        while not self._closed.is_set():
            try:
                self._feed.heard(self._feed_http.get("/keys/changes", params=self._feed.params()))
            except Exception as e:  # noqa: BLE001 - whatever breaks, the cache stops being trusted in time
                if self._closed.is_set():
                    break
                self._closed.wait(self._feed.lost(e))
        self._feed_http.close()

    def wait_until_following(self, timeout: float = 10.0) -> bool:
        """Whether the feed was heard from within `timeout` seconds (then verdicts are cached)."""
        deadline = time.monotonic() + timeout
        while not self._feed.trusted() and time.monotonic() < deadline:
            time.sleep(0.01)
        return self._feed.trusted()

    def close(self) -> None:
        """Returns at once; the follower (a daemon thread) ends with its long-poll in flight, within FEED_WAIT s."""
        self._closed.set()
        self._http.close()

    def __enter__(self) -> Keyhouse:
        return self

    def __exit__(self, *_exc: object) -> None:
        self.close()


class AsyncKeyhouse:
    """An asynchronous client (ASGI applications). The feed is followed by a task of the running loop,
    started by the first verify (or `start`)."""

    def __init__(self, base_url: str, key: str, *, cache: VerdictCache | None = None, caching: bool = True,
                 timeout: float = 5.0, transport: httpx.AsyncBaseTransport | None = None):
        self.cache = (cache if cache is not None else VerdictCache()) if caching else None  # (an empty cache is falsy)
        headers = {"Authorization": f"Bearer {key}"}
        # aiohttp's connection pool under httpx's interface: httpcore's pool walks every pooled connection
        # (a socket check each) on every request, which cost a guarded app most of a verify's time.
        self._http = httpx.AsyncClient(base_url=base_url, headers=headers, timeout=timeout,
                                       event_hooks=tracing.async_hooks(),
                                       transport=RetryTransport(transport or AiohttpTransport(), retry=_retry()))
        self._feed_http = httpx.AsyncClient(base_url=base_url, headers=headers, timeout=FEED_WAIT + 5.0,
                                            transport=transport)
        self._core = _Core(self.cache)
        self._feed = self._core.feed
        self._follower: asyncio.Task | None = None

    async def start(self) -> None:
        if self.cache is not None and self._follower is None:
            self._follower = asyncio.get_running_loop().create_task(self._follow(), name="keyhouse-change-feed")

    async def verify(self, key: str, *, api: str | None = None, permissions: Iterable[str] | None = None,
                     any_permissions: Iterable[str] | None = None, cost: int | None = None,
                     ip: str | None = None) -> Verdict:
        """keyhouse's verdict on `key` for the question (see `POST /keys/verify`)."""
        await self.start()
        question = _question(api, permissions, any_permissions, cost, ip)
        digest, cached = self._core.cached(key, question)
        if cached is not None:
            return cached
        if digest is None:
            return await self._ask(key, question)
        if (flight := self._core.flights.get(digest)) is not None:
            verdict = await asyncio.shield(flight)  # the leader's answer is as fresh as ours would be
            return verdict if self._core.taken(verdict) else await self._ask(key, question)
        flight = self._core.flights[digest] = asyncio.get_running_loop().create_future()
        try:
            since = self.cache.mark() if self.cache is not None else 0
            verdict = await self._ask(key, question)
            self._core.keep(digest, verdict, since)
            flight.set_result(verdict)
            return verdict
        except BaseException as e:
            flight.set_exception(e)
            flight.exception()  # retrieved: a flight nobody else waited for raises no warning
            raise
        finally:
            self._core.flights.pop(digest, None)

    async def _ask(self, key: str, question: tuple) -> Verdict:
        try:
            return _verdict(await self._http.post("/keys/verify", json=_body(key, question)))
        except httpx.HTTPError as e:
            raise KeyhouseUnavailable(f"keyhouse unreachable: {type(e).__name__}") from None

    async def _follow(self) -> None:
        while True:
            try:
                self._feed.heard(await self._feed_http.get("/keys/changes", params=self._feed.params()))
            except asyncio.CancelledError:
                raise
            except Exception as e:  # noqa: BLE001 - whatever breaks, the cache stops being trusted in time
                await asyncio.sleep(self._feed.lost(e))

    async def wait_until_following(self, timeout: float = 10.0) -> bool:
        """Whether the feed was heard from within `timeout` seconds (then verdicts are cached)."""
        await self.start()
        deadline = time.monotonic() + timeout
        while not self._feed.trusted() and time.monotonic() < deadline:
            await asyncio.sleep(0.01)
        return self._feed.trusted()

    async def aclose(self) -> None:
        if self._follower is not None:
            self._follower.cancel()
            try:
                await self._follower
            except asyncio.CancelledError:
                pass
            self._follower = None
        await self._feed_http.aclose()
        await self._http.aclose()

    async def __aenter__(self) -> AsyncKeyhouse:
        return self

    async def __aexit__(self, *_exc: object) -> None:
        await self.aclose()
