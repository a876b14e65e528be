"""Verification for gateways: `POST /keys/verify` tells whether a key presented to them is good, and for
what, and spends its credits. Errors are problem details, as in keyhouse's other own operations."""

from __future__ import annotations

from datetime import UTC, datetime

from .. import credits, metrics, platforms, runtime
from ..auth import ip_allowed, lookup, principal, verdict
from ..ratelimit import Exceeded, Standing, per_window
from ..store import queries
from ..store.models import utcnow
from ..store.queries import Credential
from .common import iso_ms, refuse_strangers


def _asked(body: dict, field: str) -> list[str] | None:
    """The permissions a verify asks about under `field`, as keys hold them. With `api`, every name is
    that API's; without it, a name must be one a key can hold (422 where it stands, otherwise)."""
    names: list[str] | None = body.get(field)
    if names is not None and "api" in body:
        return platforms.of(body["api"], names)
    if names is not None:
        refuse_strangers(names, lambda name: (field, str(names.index(name))))
    return names


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


def _standing(state: Standing | Exceeded) -> dict:
    remaining = state.remaining if isinstance(state, Standing) else 0
    return {"limit": state.limit, "remaining": remaining,
            "reset_at": iso_ms(datetime.fromtimestamp(state.reset_at, UTC))}


def _iso(moment: datetime | None) -> str | None:
    return iso_ms(moment) if moment is not None else None


async def verify_key(body: dict, token_info: dict):
    """The hot path: a checksum, one indexed lookup, and no database write unless the key has credits
    to spend (last use is recorded in memory).

    Checked in this order, the first failure being the verdict: the key's state, its allowed IPs, the
    permissions asked about, its rate limit, its credits. A verification counts against the verified
    key's own verify limit (or the server's default for verified keys, when one is set), never against
    the caller's request rate, which its own request already spent. A member verifies only their own
    keys, as they see only those: any other key is NOT_FOUND to them."""
    me = principal(token_info)
    rt = runtime.current()
    every, some = _asked(body, "permissions") or [], _asked(body, "any_permissions")
    credential, digest = await lookup(rt, body["key"])
    # Keys of other organizations (and, for a member, of other users) do not exist for this caller: no
    # oracle across tenants.
    if digest is None or credential is None or credential.organization_id != me.organization_id \
            or not (me.is_admin or credential.user_id == me.user_id):
        return {"valid": False, "code": "NOT_FOUND"}
    answer: dict = {"key_id": credential.key_id, "organization_id": credential.organization_id,
                    "user_id": credential.user_id}
    now = utcnow()
    code = verdict(credential, now)
    if code == "VALID" and not ip_allowed(credential.allowed_ips, body.get("ip")):
        code = "FORBIDDEN"
    if code == "VALID" and not await _holds(rt, credential, every, some):
        code = "INSUFFICIENT_PERMISSIONS"
    own = None if credential.verify_limit is None else per_window(credential.verify_limit,
                                                                  credential.verify_window_seconds or 1)
    if code == "VALID" and (limit := rt.limiter.verified_limit(own)) is not None:
        standing = await rt.limiter.verified(credential.organization_id, credential.key_pk, limit)
        if standing is not None:
            answer["rate_limit"] = _standing(standing)
        if isinstance(standing, Exceeded):
            metrics.RATE_LIMITED.labels("verified key").inc()
            code = "RATE_LIMITED"
    if code == "VALID" and credential.credits_remaining is not None:
        cost = body["cost"]  # its default is the spec's, filled in by validation
        if cost:
            spent, answer["remaining"] = await rt.store.write(queries.spend_credits, credential, cost, now,
                                                              actor=me.actor())
            code = "VALID" if spent else "USAGE_EXCEEDED"
        else:  # spends nothing, so it stays a read
            answer["remaining"] = credits.left(credential.credits_remaining, credential.credits_refill_amount,
                                               credential.credits_refill_seconds, credential.credits_refilled_at, now)
        answer["refill_at"] = _iso(credits.next_refill(credential.credits_refill_amount,
                                                       credential.credits_refill_seconds,
                                                       credential.credits_refilled_at, now))
    if code != "VALID":
        return {"valid": False, "code": code, **answer}
    rt.recorder.used(credential.key_pk, now)
    return {
        "valid": True, "code": "VALID", **answer, "type": credential.type,
        "permissions": list(credential.permissions),
        "expires_at": _iso(credential.expires_at),
        "name": credential.name, "owner_id": credential.owner_id, "meta": credential.meta,
        "remaining": answer.get("remaining"),
        "secret_valid_until": _iso(credential.retired_until),
    }
