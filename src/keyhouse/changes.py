"""Waking the change feed's long-polls when an organization's change commits.

On PostgreSQL every transaction of the store that records a change of the feed `NOTIFY`s its
organization (notify_on_commit: delivered when, and only if, it commits), and a listener per process holds
one connection that `LISTEN`s on that channel and wakes the waits of that organization at once. On
SQLite, which has no such thing, a wait looks again every POLL_SECONDS. Either way a wait also looks
again every SAFETY_SECONDS, so a lost listener connection costs latency, never a missed change:
the feed's answer always comes from the database, never from the signal.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
import uuid
import weakref
from collections.abc import Callable

from sqlalchemy import func, select, text
from sqlalchemy.engine import URL

from . import metrics
from .store.models import AuditEvent
from .store.session import CONNECT_TIMEOUT_SECONDS, WRITES_CHANNEL, Store
from .store.trail import FEED_ACTIONS

log = logging.getLogger("keyhouse.changes")

POLL_SECONDS = 0.05  # SQLite: how often a wait looks again
SAFETY_SECONDS = 1.0  # PostgreSQL: how often a wait looks again though nothing woke it
RECONNECT_SECONDS = 1.0
PROBE_SECONDS = 3.0  # how long the listener goes without hearing its own probe before it says it is deaf
HEARTBEAT_SECONDS = 0.5  # how often the listener probes itself
# How long a probe heard vouches for the listener: the longest a dead listener connection could leave a
# process keeping credentials that a write unheard has changed.
HEARD_FOR_SECONDS = 1.0
PROBE_PREFIX = "probe:"

CHANGES_CHANNEL = "keyhouse_changes"  # PostgreSQL's NOTIFY channel; the payload is the organization's id

_signals: weakref.WeakSet[ChangeSignal] = weakref.WeakSet()


def notify_on_commit(store: Store) -> None:
    """On PostgreSQL: every transaction of `store` that records a change of the feed NOTIFYs its
    organization, in the transaction, so that the listeners hear of it when it commits and never before."""
    if store.engine.dialect.name != "postgresql":
        return

    def notify(session, _context, _instances) -> None:  # type: ignore[no-untyped-def]
        for organization_id in {new.organization_id for new in session.new
                                if isinstance(new, AuditEvent) and new.action in FEED_ACTIONS}:
            session.execute(select(func.pg_notify(CHANGES_CHANNEL, organization_id)))

    store.on_write("before_flush", notify)


def probe_through(store: Store) -> Callable[[str], None]:
    """NOTIFY `payload` the way a change is NOTIFYed: in a transaction on the store's engine (through
    PgBouncer, say); not a unit of work of the store, which would also tell every process it wrote."""
    def probe(payload: str) -> None:
        with store.engine.begin() as connection:
            connection.execute(text("SELECT pg_notify(:channel, :payload)"),
                               {"channel": CHANGES_CHANNEL, "payload": payload})
    return probe


_closing = False


def shut_down() -> None:
    """The server is stopping: every long-poll of this process answers now (and every later one at once),
    so that a graceful stop does not wait out their `wait`s. Called by keyhouse.protocol."""
    global _closing
    _closing = True
    for signal in list(_signals):
        for waiters in signal._waiters.values():  # noqa: SLF001 - this module's own
            for event in waiters:
                event.set()


class ChangeSignal:
    """Per process: `wait(organization_id, timeout)` returns when a change of that organization may have
    committed, or when it is time to look again anyway."""

    def __init__(self, url: URL, probe: Callable[[str], None] | None = None, store: Store | None = None):
        """`url`: where the listener connects (a direct connection: LISTEN behind PgBouncer in transaction
        mode hears nothing); `probe(payload)`: NOTIFYs the channel the way the store's writes do, so that
        the listener can tell it hears them; `store`: told of every write heard, and for how long its
        listener is known to hear them (Store.heard_writes), so that it may keep credentials meanwhile."""
        self._url = url
        self._listening = url.get_backend_name() == "postgresql"
        self._probe = probe
        self._store = store
        self._heard_at = 0.0  # when the listener last heard its own probe (time.monotonic)
        self._probe_payload = ""  # the probe it waits to hear
        self._said_deaf = False  # whether the present silence was logged
        self._waiters: dict[str, set[asyncio.Event]] = {}
        self._task: asyncio.Task | None = None
        # polling (SQLite), deaf (PostgreSQL, not yet or no longer hearing the store's NOTIFYs), listening
        self.state = "deaf" if self._listening else "polling"
        _signals.add(self)

    @property
    def closing(self) -> bool:
        """Whether the server is stopping (see shut_down): a long-poll answers what it has."""
        return _closing

    async def start(self) -> None:
        """Listen, from the running loop (an app whose lifespan ran on another loop before, as in tests
        that serve one app from several, gets a listener of its own loop)."""
        if not self._listening:
            return
        if self._task is not None and self._task.get_loop() is not asyncio.get_running_loop():
            self._forget()
        if self._task is None:
            self._task = asyncio.create_task(self._listen())

    async def stop(self) -> None:
        if self._task is None:
            return
        if self._task.get_loop() is not asyncio.get_running_loop():
            self._forget()
            return
        self._task.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await self._task
        self._task = None

    def _forget(self) -> None:
        """Let go of a listener on another loop: cancelled there, if that loop still runs."""
        task, self._task = self._task, None
        if task is not None and not task.get_loop().is_closed():
            task.get_loop().call_soon_threadsafe(task.cancel)

    async def wait(self, organization_id: str, timeout: float) -> None:
        listened = self._task is not None and self._task.get_loop() is asyncio.get_running_loop()
        interval = SAFETY_SECONDS if listened else POLL_SECONDS
        event = asyncio.Event()
        waiters = self._waiters.setdefault(organization_id, set())
        waiters.add(event)
        try:
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(event.wait(), min(timeout, interval))
        finally:
            waiters.discard(event)
            if not waiters:
                self._waiters.pop(organization_id, None)

    def _wake(self, organization_id: str) -> None:
        for event in self._waiters.get(organization_id, ()):
            event.set()

    def _heard(self, state: str) -> None:
        self.state = state
        if state == "deaf" and self._store is not None:
            self._store.heard_writes(0.0)  # writes may go unheard from now on
        metrics.CHANGE_LISTENER.set(1 if state == "listening" else 0)

    async def _listen(self) -> None:
        import psycopg  # PostgreSQL only

        conninfo = _conninfo(self._url)
        while True:
            try:
                async with await psycopg.AsyncConnection.connect(conninfo, autocommit=True) as connection:
                    await connection.execute(f"LISTEN {CHANGES_CHANNEL}")
                    await connection.execute(f"LISTEN {WRITES_CHANNEL}")
                    heartbeat = asyncio.create_task(self._heartbeat())
                    try:
                        async for notice in connection.notifies():
                            if notice.channel == WRITES_CHANNEL:
                                if self._store is not None:
                                    self._store.forget_answers()
                            elif notice.payload.startswith(PROBE_PREFIX):
                                if notice.payload == self._probe_payload:
                                    self._heard_probe()
                            else:
                                self._wake(notice.payload)
                    finally:
                        heartbeat.cancel()
            except asyncio.CancelledError:
                self._heard("deaf")
                raise
            except Exception:  # noqa: BLE001 - a lost connection: the waits poll meanwhile, and we reconnect
                self._heard("deaf")
                log.warning("change feed listener lost its connection; reconnecting", exc_info=True)
            await asyncio.sleep(RECONNECT_SECONDS)

    async def _heartbeat(self) -> None:
        """A probe every HEARTBEAT_SECONDS, NOTIFYed the way the store's writes are: each one heard proves the
        listener hears them for HEARD_FOR_SECONDS more (a connection can die without a word). None heard
        for PROBE_SECONDS: deaf, and said once."""
        started = time.monotonic()
        while True:
            self._probe_payload = f"{PROBE_PREFIX}{uuid.uuid4()}"
            if self._probe is not None:
                with contextlib.suppress(Exception):  # an unreachable database: not heard, so deaf in time
                    await asyncio.to_thread(self._probe, self._probe_payload)
            await asyncio.sleep(HEARTBEAT_SECONDS)
            if time.monotonic() - max(self._heard_at, started) <= PROBE_SECONDS:
                continue
            if self.state != "deaf":
                self._heard("deaf")
            if not self._said_deaf:
                self._said_deaf = True
                log.warning("the change feed's listener heard no NOTIFY sent through the database within %s s: is "
                            "its connection behind PgBouncer in transaction mode? Set KEYHOUSE_LISTEN_URL to a "
                            "direct connection to PostgreSQL. Until then long-polls look again every %s s, and "
                            "credentials are read from the database on every request.", PROBE_SECONDS,
                            SAFETY_SECONDS)

    def _heard_probe(self) -> None:
        self._heard_at = time.monotonic()
        self._said_deaf = False
        if self._store is not None:
            self._store.heard_writes(self._heard_at + HEARD_FOR_SECONDS)
        if self.state != "listening":
            self._heard("listening")


def _conninfo(url: URL) -> str:
    """libpq's connection string for `url`, as SQLAlchemy's psycopg dialect reads it: a URL naming several
    hosts (`?host=a,b&port=5432,5432&target_session_attrs=read-write`, or `host=a:5432&host=b:5432`) keeps
    them all, so the listener follows a failover as the pool does."""
    import psycopg

    url = url.set(drivername="postgresql+psycopg")
    _args, kwargs = url.get_dialect()().create_connect_args(url)
    kwargs.pop("context", None)
    return psycopg.conninfo.make_conninfo(connect_timeout=CONNECT_TIMEOUT_SECONDS, **kwargs)
