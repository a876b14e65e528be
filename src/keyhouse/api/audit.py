"""The audit trail: `GET /audit/events`, an organization's events newest first, for its admins."""

from __future__ import annotations

from ..auth import principal
from ..runtime import Runtime
from ..store import trail
from .common import iso_z, paging_headers


def _event(named: trail.NamedEvent) -> dict:
    row = named.event
    return {"id": row.id, "at": iso_z(row.at), "action": row.action, "actor_user_id": row.actor_user_id,
            "actor_email": named.actor_email, "actor_key_id": row.actor_key_id,
            "actor_key_name": named.actor_key_name, "target_type": row.target_type, "target_id": row.target_id,
            "target_name": named.target_name, "ip": row.ip, "detail": row.detail, "changes": row.changes}


def list_audit_events(token_info: dict, limit: int, offset: int, action: list[str] | None = None,
                      target_id: str | None = None, *, rt: Runtime):
    me = principal(token_info)
    with rt.store.reading() as s:
        total, rows = trail.page_events(s, me.organization_id, limit, offset, actions=action, target_id=target_id)
        page = [_event(row) for row in rows]
    return page, 200, paging_headers(total, limit, offset)
