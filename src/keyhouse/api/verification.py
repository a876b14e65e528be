"""Verification for gateways: `POST /keys/verify` tells whether a key presented to them is good, and for
what. Errors are problem details, as in keyhouse's other own operations."""

from __future__ import annotations

from .. import metrics, runtime
from ..auth import ip_allowed, lookup, principal, verdict
from ..store.models import utcnow
from .common import iso_z


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
