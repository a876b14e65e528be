"""For operators: liveness, readiness and metrics. No credential; nothing here reads a key."""

from __future__ import annotations

from anyio import to_thread

from .. import metrics
from ..runtime import Runtime


async def get_health():
    return {"status": "ok"}


async def get_readiness(*, rt: Runtime):
    store = rt.store
    database, schema = await to_thread.run_sync(store.readiness)
    ready = database == "ok" and schema == "current"
    # The change feed answers either way (its long-polls look again every second when the listener is deaf):
    # said, for operators and probes to alert on, not a reason to take the worker out of service.
    checks = {"database": database, "schema": schema, "change_feed": rt.changes.state}
    return {"status": "ok" if ready else "unavailable", "checks": checks}, 200 if ready else 503


async def get_metrics():
    body, content_type = await to_thread.run_sync(metrics.exposition)
    return body, 200, {"Content-Type": content_type}
