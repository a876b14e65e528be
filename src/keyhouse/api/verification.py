"""Verification for gateways: `POST /keys/verify` tells whether a key presented to them is good, and for
what. Errors are problem details, as in keyhouse's other own operations."""

from __future__ import annotations

from .. import metrics, platforms, runtime
from ..auth import ip_allowed, lookup, principal, verdict
from ..store import queries
from ..store.models import utcnow
from ..store.queries import Credential
from .common import iso_z


async def _holds(rt: runtime.Runtime, credential: Credential, every: list[str], some: list[str] | None) -> bool:
    """Whether the key holds every one of `every` and, when asked, one of `some`: keyhouse's own
    permissions by the policy, the organization's own APIs' by what they declare now (one lookup, only
    when the question names them)."""
    asked = [*every, *(some or [])]
    apis = {q[0] for p in asked if (q := platforms.qualified(p)) is not None}
    definitions = await rt.store.read(queries.platform_definitions, credential.organization_id, apis) if apis else {}

    def one(permission: str) -> bool:
        if platforms.qualified(permission) is None:
            return rt.policy.allows(credential.permissions, credential.type, permission)
        return credential.type != "publishable" and platforms.holds(credential.permissions, permission, definitions)

    return all(one(p) for p in every) and (some is None or any(one(p) for p in some))


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
    code = verdict(credential, utcnow())
    if code == "VALID" and not ip_allowed(credential.allowed_ips, body.get("ip")):
        code = "FORBIDDEN"
    if code == "VALID" and not await _holds(rt, credential, body.get("permissions", []),
                                            body.get("any_permissions")):
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
        "name": credential.name, "owner_id": credential.owner_id, "meta": credential.meta,
    }
