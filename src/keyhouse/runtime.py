"""What a request needs from its process: the settings and the store.

Bound per request by :class:`keyhouse.middleware.RequestContext`, so that handlers and security
functions (which Connexion calls by dotted name, not as closures) reach the app they serve, and
several apps can live in one process (the tests make one per database).
"""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from contextvars import ContextVar
from dataclasses import dataclass, field

from sqlalchemy.orm import Session

from .changes import ChangeSignal
from .config import Settings
from .permissions import Policy
from .ratelimit import RateLimiter
from .recorder import Recorder
from .store.session import Store


@dataclass(frozen=True)
class Runtime:
    settings: Settings
    store: Store
    policy: Policy
    recorder: Recorder
    limiter: RateLimiter
    changes: ChangeSignal
    extractors: dict = field(default_factory=dict)  # operationId -> credential readers (keyhouse.auth)


_current: ContextVar[Runtime] = ContextVar("keyhouse_runtime")


def current() -> Runtime:
    return _current.get()


def bind(runtime: Runtime):
    return _current.set(runtime)


def unbind(token) -> None:
    _current.reset(token)


@contextmanager
def session() -> Iterator[Session]:
    """A unit of work that writes (on SQLite it holds the write lock from its first statement)."""
    with current().store.session() as s:
        yield s


@contextmanager
def reading() -> Iterator[Session]:
    """A unit of work that only reads: it never waits for, nor blocks, a writer."""
    with current().store.reading() as s:
        yield s


def secret() -> bytes:
    return current().settings.secret
