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
    return {"status": "ok" if ready else "unavailable", "checks": {"database": database, "schema": schema}}, \
        200 if ready else 503


async def get_metrics():
    body, content_type = await to_thread.run_sync(metrics.exposition)
    return body, 200, {"Content-Type": content_type}
