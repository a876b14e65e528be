"""The caller's trace, continued in keyhouse: with OpenTelemetry's API installed (`keyhouse-client[otel]`),
every verify request carries the current span's context, in the headers of the propagators the
application configured (W3C `traceparent` unless it chose others). keyhouse's span of the verify then
belongs to the application's trace. The change feed's long polls carry none: they belong to no request.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import httpx

inject: Callable[..., None] | None
try:
    from opentelemetry.propagate import inject as _inject

    inject = _inject
except ImportError:  # no OpenTelemetry in this application: nothing to carry
    inject = None


def _carry(request: httpx.Request) -> None:
    inject(request.headers)  # type: ignore[misc]


async def _carry_async(request: httpx.Request) -> None:
    inject(request.headers)  # type: ignore[misc]


def hooks() -> dict[str, list[Callable[..., Any]]]:
    """httpx event hooks of a synchronous client."""
    return {"request": [_carry]} if inject is not None else {}


def async_hooks() -> dict[str, list[Callable[..., Any]]]:
    """httpx event hooks of an asynchronous client."""
    return {"request": [_carry_async]} if inject is not None else {}
