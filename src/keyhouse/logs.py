"""Structured logs: one JSON object per line, each carrying the request id of the request it is about.

The request id comes from the client's `X-Request-Id` when it is a sane token, else a fresh one; it is
echoed on the response. Log lines name operations, statuses and paths, never credentials: no header
is logged, query strings are left out, and SQLAlchemy is told to keep statement parameters (such as
a key's hash) out of its error messages (keyhouse.store.session).
"""

from __future__ import annotations

import logging
import re
import uuid
from contextvars import ContextVar

_request_id: ContextVar[str | None] = ContextVar("keyhouse_request_id", default=None)
_SANE = re.compile(r"[A-Za-z0-9._:-]{1,128}")

access = logging.getLogger("keyhouse.access")

# What is learnt of a request on its way through (a dict in its ASGI scope, which the scope copies of one
# request share): its id, the routing of Connexion (`extensions`), the organization auth found. AccessLog
# puts it there; the access line and the request's span (keyhouse.tracing) read it.
OBSERVED = "keyhouse.observed"


def observe(scope, **learnt) -> None:
    """Note what was learnt of this request (auth: the organization)."""
    observed = scope.get(OBSERVED)
    if observed is not None:
        observed.update(learnt)


def operation(observed: dict) -> str | None:
    """The request's operationId, once Connexion has routed it."""
    return observed["extensions"].get("connexion_routing", {}).get("operation_id")


def request_id_from(presented: bytes | None) -> str:
    if presented:
        text = presented.decode("latin-1")
        if _SANE.fullmatch(text):
            return text
    return uuid.uuid4().hex


def bind_request_id(value: str):
    return _request_id.set(value)


def unbind_request_id(token) -> None:
    _request_id.reset(token)


class RequestIdFilter(logging.Filter):
    def filter(self, record: logging.LogRecord) -> bool:
        record.request_id = _request_id.get()
        return True


def config(level: str = "INFO", traced: bool = False) -> dict:
    """A logging.dictConfig for `keyhouse serve` (uvicorn's loggers included): JSON lines on stderr; with
    `traced` (keyhouse.tracing.wanted()), each line also names its trace and span."""
    filters = {"request_id": {"()": "keyhouse.logs.RequestIdFilter"}}
    fields = "%(asctime)s %(levelname)s %(name)s %(message)s %(request_id)s"
    if traced:
        filters["trace_ids"] = {"()": "keyhouse.tracing.TraceIds"}
        fields += " %(trace_id)s %(span_id)s"
    return {
        "version": 1,
        "disable_existing_loggers": False,
        "filters": filters,
        "formatters": {"json": {
            "()": "pythonjsonlogger.orjson.OrjsonFormatter",  # the same lines, in 60% of the time
            "fmt": fields,
            "rename_fields": {"asctime": "time", "levelname": "level", "name": "logger"},
        }},
        "handlers": {"stderr": {"class": "logging.StreamHandler", "formatter": "json", "filters": list(filters),
                                "stream": "ext://sys.stderr"}},
        "root": {"handlers": ["stderr"], "level": level},
        "loggers": {
            "uvicorn": {"handlers": ["stderr"], "level": level, "propagate": False},
            "uvicorn.error": {"handlers": ["stderr"], "level": level, "propagate": False},
            "uvicorn.access": {"handlers": [], "level": "WARNING", "propagate": False},  # keyhouse.access instead
        },
    }
