"""Verification for gateways: `POST /keys/verify` tells whether a key presented to them is good, and for
what, and spends its credits. Errors are problem details, as in keyhouse's other own operations."""

from __future__ import annotations

from datetime import UTC, datetime

from .. import platforms
from ..auth import lookup, principal
from ..ratelimit import Exceeded, Standing
from ..runtime import Runtime
from ..verifier import Ask, verify
from .common import iso_ms, refuse_unknown_permissions


def _asked(rt: Runtime, body: dict, field: str) -> list[str] | None:
    """The permissions a verify asks about under `field`, as keys hold them. With `api`, every name is
    that API's; without it, a name must be one a key can hold (422 where it stands, otherwise)."""
    names: list[str] | None = body.get(field)
    if names is not None and "api" in body:
        return platforms.of(body["api"], names)
    if names is not None:
        refuse_unknown_permissions(rt, names, lambda name: (field, str(names.index(name))))
    return names


def _standing(state: Standing | Exceeded) -> dict:
    remaining = state.remaining if isinstance(state, Standing) else 0
    return {"limit": state.limit, "remaining": remaining,
            "reset_at": iso_ms(datetime.fromtimestamp(state.reset_at, UTC))}


def _iso(moment: datetime | None) -> str | None:
    return iso_ms(moment) if moment is not None else None


async def verify_key(body: dict, token_info: dict, *, rt: Runtime):
    """The hot path: a checksum, one indexed lookup, and no database write unless the key has credits
    to spend (last use is recorded in memory). keyhouse.verifier decides, as it does for every request;
    here the question is read from the body and the verdict written for the gateway.

    A verification counts against the verified key's own verify limit (or the server's default for
    verified keys, when one is set), never against the caller's request rate, which its own request
    already spent. A member verifies only their own keys, as they see only those: any other key is
    NOT_FOUND to them."""
    me = principal(token_info)
    ask = Ask(ip=body.get("ip"), every=_asked(rt, body, "permissions") or [], some=_asked(rt, body, "any_permissions"),
              limit="verification", cost=body["cost"], actor=me.actor())  # cost's default is the spec's
    credential, digest = await lookup(rt, body["key"])
    # Keys of other organizations (and, for a member, of other users) do not exist for this caller: no
    # oracle across tenants.
    if digest is None or credential is None or credential.organization_id != me.organization_id \
            or not (me.is_admin or credential.user_id == me.user_id):
        return {"valid": False, "code": "NOT_FOUND"}
    verdict = await verify(rt, credential, ask)
    answer: dict = {"key_id": credential.key_id, "organization_id": credential.organization_id,
                    "user_id": credential.user_id}
    if verdict.limit is not None:
        answer["rate_limit"] = _standing(verdict.limit)
    if credential.credits_remaining is not None and verdict.code in ("VALID", "USAGE_EXCEEDED"):
        answer.update(remaining=verdict.remaining, refill_at=_iso(verdict.refill_at))
    if not verdict.valid:
        return {"valid": False, "code": verdict.code, **answer}
    return {
        "valid": True, "code": "VALID", **answer, "type": credential.type,
        "permissions": list(credential.permissions),
        "expires_at": _iso(credential.expires_at),
        "name": credential.name, "owner_id": credential.owner_id, "meta": credential.meta,
        "remaining": answer.get("remaining"),
        "secret_valid_until": _iso(credential.retired_until),
    }
