"""The engine, sessions and schema state of one keyhouse process."""

from __future__ import annotations

import asyncio
import logging
import random
import sqlite3
import threading
import time
import typing as t
from collections import OrderedDict
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from datetime import timedelta
from typing import Any, TypeVar

from alembic import command
from alembic.config import Config
from alembic.runtime.migration import MigrationContext
from alembic.script import ScriptDirectory
from anyio import to_thread
from sqlalchemy import create_engine, event, func, inspect, select
from sqlalchemy.engine import Connection, Engine
from sqlalchemy.exc import DBAPIError, InterfaceError, OperationalError
from sqlalchemy.exc import TimeoutError as PoolTimeoutError
from sqlalchemy.ext.asyncio import AsyncEngine, create_async_engine
from sqlalchemy.orm import Session, sessionmaker

from . import models

# Bounded waits, so that an unreachable database answers 503 in seconds instead of hanging requests.
CONNECT_TIMEOUT_SECONDS = 3
POOL_TIMEOUT_SECONDS = 5
# SQLite: enough pooled connections for every thread of Starlette's pool (40), so that none is opened
# and closed per request.
SQLITE_POOL_SIZE = 40
# Answers of `cached` queries kept between commits (SQLite): the credentials of this many presented keys.
CACHED_ANSWERS = 10_000

T = TypeVar("T")
log = logging.getLogger("keyhouse.store")

# How often a server database's clock is read again (Store.keep_time), and how far off it is worth a word.
CLOCK_SECONDS = 30
CLOCK_WARNING = timedelta(seconds=1)


# ------------------------------------------------------------------ how a query is to be read

def one_statement(query):
    """Marks a read that needs no transaction around it: `Store.read` runs it without one, which spares
    SQLite a BEGIN and a ROLLBACK, and PostgreSQL two round trips. Each of its statements is atomic on
    its own, and what it answers holds whichever writes land between them."""
    query.one_statement = True
    return query


def cached(query):
    """Marks a one-statement read whose answer the store may keep until anything commits (see Store: on
    SQLite, which tells at once; on PostgreSQL, while a listener hears every commit's NOTIFY): the
    lookups every request makes of its credentials."""
    query.cached = True
    return one_statement(query)


# PostgreSQL: every write that can change a credential NOTIFYs this channel as it commits (a trigger: see
# migration 0010), whoever makes it, so that every process drops the answers it kept (Store.heard_writes).
WRITES_CHANNEL = "keyhouse_writes"


# PostgreSQL's deadlock_detected and serialization_failure: the transaction was rolled back, nothing of it
# committed, and the same work run again succeeds once the other transaction is through.
RETRYABLE_SQLSTATES = frozenset({"40P01", "40001"})
RETRIES = 5


def retryable(exc: BaseException) -> bool:
    """A transaction that lost a deadlock or a serialization conflict: to be run again where it happens,
    never reported as an unreachable database."""
    return isinstance(exc, DBAPIError) and getattr(exc.orig, "sqlstate", None) in RETRYABLE_SQLSTATES


def database_unreachable(exc: BaseException) -> bool:
    """A lost or refused connection, or a pool with none to give, as opposed to a bug in a query (or a lost
    deadlock, which psycopg raises as an OperationalError too: see `retryable`)."""
    if retryable(exc):
        return False
    if isinstance(exc, (OperationalError, InterfaceError, PoolTimeoutError)):
        return True
    return isinstance(exc, DBAPIError) and exc.connection_invalidated


def retrying(work: Callable[[], T]) -> T:
    """`work()` (a whole unit of work: nothing of a failed try committed), run again when it lost a deadlock
    or a serialization conflict, after a short, growing, jittered wait; at most RETRIES times."""
    for attempt in range(RETRIES):
        try:
            return work()
        except DBAPIError as e:
            if not retryable(e) or attempt == RETRIES - 1:
                raise
            time.sleep(random.uniform(0, 0.01 * 2 ** attempt))  # noqa: S311 - jitter, not a secret
    raise AssertionError("unreachable")


class SchemaOutOfDate(RuntimeError):
    """The database's schema is not the one this keyhouse expects."""


def _alembic(connection=None) -> Config:
    config = Config()
    config.set_main_option("script_location", "keyhouse:migrations")
    config.attributes["connection"] = connection
    return config


class Store:
    def __init__(self, database_url: str, *, pool_size: int = 7, max_overflow: int = 0,
                 prepared_statements: bool = True):
        # A server database: at most pool_size + max_overflow connections of this process (and one more for
        # the change feed's listener): the budget to fit under the server's max_connections.
        self._pool_size, self._max_overflow = pool_size, max_overflow
        self._connect_args = _connect_args(prepared_statements)
        self.engine: Engine = _engine(database_url, pool_size, max_overflow, self._connect_args)
        # (loop, engine): a server database's one-statement reads on the app's loop (open_on_loop)
        self._loop_engine: tuple[asyncio.AbstractEventLoop, AsyncEngine] | None = None
        self._sessions = sessionmaker(self.engine.execution_options(keyhouse_writes=True), expire_on_commit=False)
        self._reads = sessionmaker(self.engine, expire_on_commit=False)
        self._autocommit = self.engine.execution_options(isolation_level="AUTOCOMMIT")  # one-statement reads
        # SQLite runs in this process and its readers never wait (WAL): a read costs tens of
        # microseconds, less than the hop to a worker thread. A server is a network round trip away.
        self.reads_inline = self.engine.dialect.name == "sqlite"
        # Inline one-statement reads all run on the event loop's thread, one after another: they share
        # one connection, kept checked out, instead of a pool checkout and checkin per read.
        self._kept: Connection | None = None
        # What `cached` queries answered on it, while SQLite's data_version says no other connection (this
        # process's writers, other workers, the CLI) has committed anything since: a commit anywhere
        # empties it before the next read, so a revocation is seen at once.
        self._answers: OrderedDict[tuple, Any] = OrderedDict()
        self._data_version: int | None = None
        # An in-memory database is one connection's own: there a commit by the same connection would not
        # move data_version, so nothing is kept.
        self._keeps_answers = self.reads_inline and self.engine.url.database not in (None, "", ":memory:")
        # PostgreSQL: answers are kept while a listener hears every commit's NOTIFY (heard_writes), each of
        # which empties them; a read in flight while they were emptied keeps nothing (the generation).
        self._answers_lock = threading.Lock()
        self._generation = 0
        self._heard_until = 0.0
        if self.engine.dialect.name == "postgresql":
            # This process's own writes are forgotten at once; everyone's are, as their NOTIFY arrives.
            event.listen(self._sessions, "after_commit", lambda _session: self.forget_answers())

    def on_write(self, name: str, listener: Callable) -> None:
        """Has `listener` hear the session event `name` of every unit of work that writes (see changes)."""
        event.listen(self._sessions, name, listener)

    @contextmanager
    def session(self) -> Iterator[Session]:
        """One unit of work: committed when the block ends, rolled back if it raises.

        On SQLite it takes the write lock when it begins (BEGIN IMMEDIATE): a transaction that reads
        and then writes would otherwise fail when another writer commits in between."""
        with self._sessions.begin() as session:
            yield session

    @contextmanager
    def reading(self) -> Iterator[Session]:
        """A read-only unit of work for the hot paths (authentication, verify): never waits for writers."""
        with self._reads.begin() as session:
            yield session

    async def read(self, query: Callable[..., T], *args: Any, **kwargs: Any) -> T:
        """`query(connection, *args, **kwargs)` in a read-only transaction, for the async hot paths:
        on the event loop for SQLite, in a worker thread for a server database."""
        if self.reads_inline:
            return self._read(query, *args, **kwargs)
        if not (getattr(query, "cached", False) and self._heard_until > time.monotonic()):
            return await self._read_server(query, *args, **kwargs)
        key = (query, args, tuple(kwargs.items()))
        with self._answers_lock:
            if key in self._answers:
                self._answers.move_to_end(key)
                return self._answers[key]
            generation = self._generation
        answer = await self._read_server(query, *args, **kwargs)
        with self._answers_lock:
            if generation == self._generation:  # nothing committed anywhere since the read began
                self._keep(key, answer)
        return answer

    async def _read_server(self, query: Callable[..., T], *args: Any, **kwargs: Any) -> T:
        """A read of a server database: a one-statement read on the loop when the store has an async engine
        for it (open_on_loop), anything else in a worker thread. A connection found dead is answered by one
        more try on a new one, since reads may be run again, and that engine does not ping each connection
        before use."""
        loop_engine = self._loop_engine
        if (loop_engine is None or loop_engine[0] is not asyncio.get_running_loop()
                or not getattr(query, "one_statement", False)):
            return await to_thread.run_sync(lambda: self._read(query, *args, **kwargs))
        engine = loop_engine[1]
        for attempt in range(2):
            try:
                async with engine.connect() as connection:
                    return await connection.run_sync(query, *args, **kwargs)
            except DBAPIError as e:
                if not e.connection_invalidated or attempt:
                    raise
        raise AssertionError("unreachable")

    def measure_clock(self) -> timedelta | None:
        """A server database: how far its clock is ahead of this host's, from one round trip (taken at its
        middle), set as the process's correction (models.utcnow). None on SQLite, whose clock is this host's."""
        if self.reads_inline:
            return None
        with self._autocommit.connect() as connection:
            before = models._system_now()  # noqa: SLF001 - the uncorrected clock is the one measured
            theirs = connection.execute(select(func.clock_timestamp())).scalar_one()
            after = models._system_now()  # noqa: SLF001
        offset = theirs - (before + (after - before) / 2)
        models.set_clock_offset(offset)
        return offset

    async def keep_time(self) -> None:
        """Every CLOCK_SECONDS, the database's clock read again (measure_clock); said when it is far off."""
        while not self.reads_inline:
            try:
                offset = await to_thread.run_sync(self.measure_clock)
            except (DBAPIError, PoolTimeoutError):
                offset = None  # unreachable: the last correction stands
            if offset is not None and abs(offset) > CLOCK_WARNING:
                log.warning("this host's clock is %.3f s off the database's; keyhouse decides expiry and refills by "
                            "the database's", -offset.total_seconds())
            await asyncio.sleep(CLOCK_SECONDS)

    async def open_on_loop(self) -> None:
        """Server databases: one-statement reads from now on run on the running loop, through an async engine
        of their own (the app's lifespan: one loop per worker), in autocommit: they need no transaction.
        Connections belong to the loop that opened them, so reads from any other loop go on in worker
        threads."""
        if self.reads_inline or self._loop_engine is not None:
            return
        engine = create_async_engine(self.engine.url, isolation_level="AUTOCOMMIT", pool_timeout=POOL_TIMEOUT_SECONDS,
                                     hide_parameters=True, pool_size=self._pool_size,
                                     max_overflow=self._max_overflow, connect_args=self._connect_args)
        self._loop_engine = (asyncio.get_running_loop(), engine)

    def engines(self) -> list[Engine]:
        """The engines statements go through (the loop's async one by its sync core), for instrumentation
        (keyhouse.tracing)."""
        return [self.engine] + ([self._loop_engine[1].sync_engine] if self._loop_engine is not None else [])

    async def close_on_loop(self) -> None:
        """The end of the lifespan that opened them (another lifespan's end, on another loop, leaves them)."""
        loop_engine = self._loop_engine
        if loop_engine is not None and loop_engine[0] is asyncio.get_running_loop():
            self._loop_engine = None
            await loop_engine[1].dispose()

    def heard_writes(self, until: float) -> None:
        """PostgreSQL: a listener hears the WRITES_CHANNEL (its probe came back) and will until
        time.monotonic() `until` at least; past it (a listener lost, or silent), nothing is kept. Answers
        kept before are dropped either way: writes may have gone unheard."""
        with self._answers_lock:
            if self._heard_until <= time.monotonic():
                self._answers.clear()
                self._generation += 1
            self._heard_until = until

    def forget_answers(self) -> None:
        """Something committed (here, or anywhere: a NOTIFY on WRITES_CHANNEL): every kept answer is dropped."""
        with self._answers_lock:
            self._answers.clear()
            self._generation += 1

    def _keep(self, key: tuple, answer: Any) -> None:
        self._answers[key] = answer
        if len(self._answers) > CACHED_ANSWERS:
            self._answers.popitem(last=False)

    async def write(self, query: Callable[..., T], *args: Any, **kwargs: Any) -> T:
        """`query(session, *args, **kwargs)` in a unit of work that writes, for the async paths: always in a
        worker thread, since a write may wait for a lock (SQLite's, or a row's)."""
        def run() -> T:
            with self.session() as session:
                return query(session, *args, **kwargs)

        return await to_thread.run_sync(lambda: retrying(run))

    def _read(self, query: Callable[..., T], *args: Any, **kwargs: Any) -> T:
        # A plain connection, not a Session: these queries are Core statements, and a Session's
        # bookkeeping costs more than they do. Leaving the block ends the read transaction; a query
        # marked `one_statement` needs none.
        one_statement = getattr(query, "one_statement", False)
        if one_statement and self.reads_inline:
            return self._read_kept(query, *args, **kwargs)
        with (self._autocommit if one_statement else self.engine).connect() as connection:
            return query(connection, *args, **kwargs)

    def _read_kept(self, query: Callable[..., T], *args: Any, **kwargs: Any) -> T:
        if self._kept is None or self._kept.invalidated or self._kept.closed:
            self._kept = self._autocommit.connect()
            self._data_version = None
        try:
            if not (self._keeps_answers and getattr(query, "cached", False)):
                return query(self._kept, *args, **kwargs)
            # PRAGMA data_version changes, for this connection, whenever another one commits.
            driver = t.cast(sqlite3.Connection, self._kept.connection.dbapi_connection)
            version = driver.execute("PRAGMA data_version").fetchone()[0]
            if version != self._data_version:
                self._answers.clear()
                self._data_version = version
            key = (query, args, tuple(kwargs.items()))
            if key in self._answers:
                self._answers.move_to_end(key)
                return self._answers[key]
            answer = query(self._kept, *args, **kwargs)
            self._keep(key, answer)
            return answer
        except DBAPIError as e:
            if e.connection_invalidated:
                self._kept = None  # a new one next time
            raise

    # ------------------------------------------------------------------ schema

    def upgrade(self) -> None:
        """Apply every migration not yet applied (`keyhouse db upgrade`)."""
        with self.engine.begin() as connection:
            command.upgrade(_alembic(connection), "head")

    def revision(self) -> str | None:
        with self.engine.connect() as connection:
            return MigrationContext.configure(connection).get_current_revision()

    @staticmethod
    def head() -> str | None:
        return ScriptDirectory.from_config(_alembic()).get_current_head()

    def is_empty(self) -> bool:
        return not inspect(self.engine).get_table_names()

    def readiness(self) -> tuple[str, str]:
        """("ok" | "unreachable", "current" | "out_of_date" | "unknown"), for /readyz."""
        try:
            current = self.revision()
        except Exception:  # noqa: BLE001 - whatever the driver raises, the answer is "not reachable"
            return "unreachable", "unknown"
        return "ok", "current" if current == self.head() else "out_of_date"

    def require_current(self) -> None:
        current, head = self.revision(), self.head()
        if current != head:
            state = "has no keyhouse schema" if current is None else f"is at schema revision {current}"
            raise SchemaOutOfDate(f"The database {self.engine.url.render_as_string(hide_password=True)} {state}; "
                                  f"this keyhouse needs revision {head}. Run `keyhouse db upgrade` first.")

    def dispose(self) -> None:
        if self._kept is not None:
            self._kept.close()
            self._kept = None
        self.engine.dispose()


def _connect_args(prepared_statements: bool) -> dict:
    """A server database's connection arguments: a bounded connect; None: psycopg never prepares (behind
    PgBouncer in transaction mode)."""
    return {"connect_timeout": CONNECT_TIMEOUT_SECONDS, **({} if prepared_statements else {"prepare_threshold": None})}


def _engine(url: str, pool_size: int, max_overflow: int, connect_args: dict) -> Engine:
    if url.startswith("sqlite"):
        # Handlers run in a thread pool; SQLite connections may cross threads under SQLAlchemy's pool.
        in_memory = url in ("sqlite://", "sqlite:///:memory:")
        pool = {} if in_memory else {"pool_size": SQLITE_POOL_SIZE, "max_overflow": 0,
                                     "pool_timeout": POOL_TIMEOUT_SECONDS}
        # The driver in autocommit, said to SQLAlchemy (so that it keeps it so): pysqlite's own transaction
        # handling begins late and never for reads, so keyhouse emits BEGIN itself (below).
        engine = create_engine(url, connect_args={"check_same_thread": False, "timeout": 15}, hide_parameters=True,
                               isolation_level="AUTOCOMMIT", **pool)

        @event.listens_for(engine, "connect")
        def _sqlite_pragmas(connection, _record):
            cursor = connection.cursor()
            cursor.execute("PRAGMA foreign_keys=ON")
            # Readers do not wait for the writer. The mode is kept in the file; setting it takes a lock.
            if not in_memory and cursor.execute("PRAGMA journal_mode").fetchone()[0] != "wal":
                cursor.execute("PRAGMA journal_mode=WAL")
            cursor.close()

        @event.listens_for(engine, "begin")
        def _sqlite_begin(connection):
            options = connection.get_execution_options()
            if options.get("isolation_level") == "AUTOCOMMIT":
                return  # asked for explicitly (Store.read of a one-statement query): no transaction
            connection.exec_driver_sql("BEGIN IMMEDIATE" if options.get("keyhouse_writes") else "BEGIN")

        return engine
    # hide_parameters: a statement's values (a key's hash, say) stay out of error messages and logs.
    return create_engine(url, pool_pre_ping=True, pool_timeout=POOL_TIMEOUT_SECONDS, hide_parameters=True,
                         pool_size=pool_size, max_overflow=max_overflow,
                         connect_args=connect_args)
