"""keyhouse's own operations, beyond the three families: verification for gateways, reroll, tokens,
and the audit trail. Errors are problem details, as in the billing family."""

from __future__ import annotations

from datetime import timedelta

from .. import metrics, runtime
from ..auth import Principal, ip_allowed, issue_token, lookup, principal, verdict
from ..errors import ApiError
from ..runtime import reading, secret, session
from ..store import queries
from ..store.models import AuditEvent, utcnow
from . import iso_z, only_admins, paging_headers


async def verify_key(body: dict, token_info: dict):
    """The hot path: a checksum, one indexed lookup, no database write (last use is recorded in memory).

    A verification counts against the verified key's rate limit: it is a use of that key."""
    me = principal(token_info)
    rt = runtime.current()
    credential, digest = await lookup(rt, body["key"])
    if digest is None:
        return {"valid": False, "code": "NOT_FOUND"}
    # Keys of other organizations do not exist for this caller: no oracle across tenants.
    if credential is None or credential.organization_id != me.organization_id:
        return {"valid": False, "code": "NOT_FOUND"}
    known = {"key_id": credential.key_id, "organization_id": credential.organization_id,
             "user_id": credential.user_id}
    code = verdict(credential, digest, utcnow())
    if code == "VALID" and not ip_allowed(credential.allowed_ips, body.get("ip")):
        code = "FORBIDDEN"
    if code == "VALID" and not all(rt.policy.allows(credential.permissions, credential.type, p)
                                   for p in body.get("permissions", [])):
        code = "INSUFFICIENT_PERMISSIONS"
    if code == "VALID" and (exceeded := await rt.limiter.hit(credential.organization_id, credential.key_pk)):
        metrics.RATE_LIMITED.labels(exceeded.scope).inc()
        code = "RATE_LIMITED"
    if code != "VALID":
        return {"valid": False, "code": code, **known}
    rt.recorder.used(credential.key_pk, utcnow())
    return {
        "valid": True, "code": "VALID", **known, "type": credential.type,
        "permissions": list(credential.permissions),
        "expires_at": iso_z(credential.expires_at) if credential.expires_at else None,
    }


def reroll_key(key_id: str, body: dict, token_info: dict):
    me = principal(token_info)
    with session() as s:
        row = queries.get_key(s, me.organization_id, key_id, for_update=True)
        if row is None or (not me.is_admin and row.user_id != me.user_id):
            raise ApiError("not_found", "The API key can't be found.")
        plaintext, until = queries.reroll_key(s, secret(), row, timedelta(seconds=body["grace_period_seconds"]))
        queries.record(s, action="key.rerolled", target_type="api_key", target_id=row.id,
                       detail=f"grace {body['grace_period_seconds']}s", **me.actor())
        return {"id": row.id, "key": plaintext, "previous_secret_valid_until": iso_z(until)}, 201


def create_auth_token(body: dict, token_info: dict):
    me: Principal = principal(token_info)
    rt = runtime.current()
    token = issue_token(rt, me, body["expires_in"])
    with session() as s:
        queries.record(s, action="token.issued", target_type="api_key", target_id=me.key_id, **me.actor())
    return {"access_token": token, "token_type": "Bearer", "expires_in": body["expires_in"]}, 201


def _event(row: AuditEvent) -> dict:
    return {"id": row.id, "at": iso_z(row.at), "action": row.action, "actor_user_id": row.actor_user_id,
            "actor_key_id": row.actor_key_id, "target_type": row.target_type, "target_id": row.target_id,
            "ip": row.ip, "detail": row.detail}


def list_audit_events(token_info: dict, limit: int, offset: int):
    me = principal(token_info)
    only_admins(me)
    with reading() as s:
        total, rows = queries.page_events(s, me.organization_id, limit, offset)
        page = [_event(row) for row in rows]
    return page, 200, paging_headers(total, limit, offset)
