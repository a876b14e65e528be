"""The change feed: `GET /keys/changes`, what may change a verdict, for gateways that cache them.

A member follows the changes to their own keys (and to the organization's APIs), as they see only
those keys; an admin, the whole organization's. The feed is the audit trail's events that change
verdicts (store.trail.FEED_ACTIONS), written in the transaction of the change itself, so a change is
in the feed exactly when it has committed. A long-poll (`wait`) looks again whenever keyhouse.changes
says a change of the organization may have committed.
"""

from __future__ import annotations

import time
from datetime import timedelta

from connexion.context import request as current_request

from ..auth import principal
from ..errors import ApiError
from ..runtime import Runtime
from ..store import trail
from ..store.models import utcnow
from .common import iso_z


def _change(row) -> dict:
    change_id, at, action, target_type, target_id = row
    return {"cursor": str(change_id), "at": iso_z(at), "action": action,
            "key_id": target_id if target_type == "api_key" else None,
            "api": target_id if target_type == "api" else None}


async def list_key_changes(token_info: dict, after: str | None = None, wait: int = 0, limit: int = 100, *, rt: Runtime):
    me = principal(token_info)
    cursor = None if after is None else int(after)  # the spec's pattern: digits only
    deadline = time.monotonic() + wait
    while True:
        oldest = utcnow() - timedelta(seconds=rt.settings.change_feed_retention)
        found = await rt.store.read(trail.changes_after, me.organization_id, cursor, limit, oldest,
                                    None if me.is_admin else me.user_id)
        if found.gone:
            raise ApiError("gone", f"The change feed no longer holds what follows cursor {after}; drop every "
                           "cached verdict and start again without `after`.")
        left = deadline - time.monotonic()
        # Answered: a change, the latest cursor, the wait over, the server stopping, or the client gone (its
        # long-poll would otherwise hold a graceful stop for the rest of its `wait`).
        if found.rows or cursor is None or left <= 0 or rt.changes.closing \
                or await current_request.is_disconnected():
            return {"cursor": str(found.cursor), "changes": [_change(row) for row in found.rows]}
        await rt.changes.wait(me.organization_id, left)
