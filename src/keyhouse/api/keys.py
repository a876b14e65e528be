"""Keys in keyhouse's own shape: `/keys` and `/keys/{key_id}`, for the customers of a platform.

Beside what the three families show, a key here says who it is for (`owner_id`, the platform's own id
for a customer or tenant) and carries free-form `meta`; verify returns both, and the key's name, so a
gateway needs no second lookup. Errors are problem details, as in keyhouse's other own operations.
"""

from __future__ import annotations

from datetime import datetime

import orjson

from .. import credits, spec
from ..auth import Principal, lookup, principal
from ..errors import ApiError, FieldError
from ..runtime import Runtime
from ..store import api_keys
from ..store.models import ApiKey, utcnow
from .common import granted, iso_z, new_secret, paging_headers, visible_key

# What verify hands every gateway back on every call stays small: the spec bounds it as JSON.
MAX_META_BYTES = spec.schema(spec.document(), "KeyMeta")["x-keyhouse-max-json-bytes"]


def _key(row: ApiKey) -> dict:
    return {"id": row.id, "name": row.description, "masked_key": row.key_hint, "owner_id": row.owner_id,
            "meta": row.meta, "type": row.type,
            "permissions": list(row.permissions), "allowed_ips": row.allowed_ips,
            "expires_at": iso_z(row.expires_at) if row.expires_at else None, "credits": _credits_view(row),
            "rate_limit": {"limit": row.verify_limit, "window_seconds": row.verify_window_seconds}
            if row.verify_limit is not None else None,
            "created_at": iso_z(row.created_at), "updated_at": iso_z(row.updated_at),
            "last_used_at": iso_z(row.last_used_at) if row.last_used_at else None}


def _credits_view(row: ApiKey) -> dict | None:
    left = credits.left(row.credits_remaining, row.credits_refill_amount, row.credits_refill_seconds,
                        row.credits_refilled_at, utcnow())
    if left is None:
        return None
    refill = {"amount": row.credits_refill_amount, "interval_seconds": row.credits_refill_seconds} \
        if row.credits_refill_amount is not None else None
    return {"remaining": left, "refill": refill}


def _limits(body: dict) -> dict:
    """The columns of the body's `credits` and `rate_limit` (each replaced whole; null clears it)."""
    fields: dict = {}
    if "credits" in body:
        given = body["credits"] or {}
        refill = given.get("refill") or {}
        fields.update(credits_remaining=given.get("remaining"), credits_refill_amount=refill.get("amount"),
                      credits_refill_seconds=refill.get("interval_seconds"),
                      credits_refilled_at=utcnow() if given else None)
    if "rate_limit" in body:
        given = body["rate_limit"] or {}
        fields.update(verify_limit=given.get("limit"), verify_window_seconds=given.get("window_seconds"))
    return fields


def _meta(body: dict) -> None:
    if body.get("meta") is not None and len(orjson.dumps(body["meta"])) > MAX_META_BYTES:
        raise ApiError("invalid_body", f"meta: at most {MAX_META_BYTES} bytes as JSON.",
                       fields=[FieldError(("meta",), f"longer than {MAX_META_BYTES} bytes as JSON", "maxLength")])


def _permissions(rt: Runtime, me: Principal, body: dict, key_type: str) -> list[str]:
    requested: list[str] | None = body.get("permissions")
    return granted(rt, me, requested, key_type, lambda name: ("permissions", str((requested or []).index(name))))


def _moment(text: str | None) -> datetime | None:
    return datetime.fromisoformat(text) if text else None  # the spec checked it is RFC 3339


def list_keys(token_info: dict, limit: int, offset: int, owner_id: str | None = None, search: str | None = None,
              *, rt: Runtime):
    me = principal(token_info)
    with rt.store.reading() as s:
        total, rows = api_keys.page_owned_keys(s, me.organization_id, user_id=None if me.is_admin else me.user_id,
                                              owner_id=owner_id, search=search, limit=limit, offset=offset)
        page = [_key(row) for row in rows]
    return page, 200, paging_headers(total, limit, offset)


def create_key(body: dict, token_info: dict, *, rt: Runtime):
    me = principal(token_info)
    _meta(body)
    key_type = body["type"]
    with rt.store.session() as s:
        plaintext, hashed = new_secret(rt)
        row = api_keys.issue_key(
            s, hashed, actor=me.actor(), organization_id=me.organization_id, user_id=me.user_id,
            description=body["name"], permissions=_permissions(rt, me, body, key_type), type=key_type,
            owner_id=body.get("owner_id"), meta=body.get("meta"), expires_at=_moment(body.get("expires_at")),
            allowed_ips=body.get("allowed_ips"), **_limits(body))
        return {**_key(row), "key": plaintext}, 201


def get_key(key_id: str, token_info: dict, *, rt: Runtime):
    me = principal(token_info)
    with rt.store.reading() as s:
        return _key(visible_key(s, me, key_id))


def update_key(key_id: str, body: dict, token_info: dict, *, rt: Runtime):
    me = principal(token_info)
    _meta(body)
    with rt.store.session() as s:
        row = visible_key(s, me, key_id, for_update=True)
        fields: dict = {column: body[name] for name, column in (("name", "description"), ("owner_id", "owner_id"),
                                                                ("meta", "meta"), ("allowed_ips", "allowed_ips"))
                        if name in body}
        if "expires_at" in body:
            fields["expires_at"] = _moment(body["expires_at"])
        if "permissions" in body:
            fields["permissions"] = _permissions(rt, me, body, row.type)
        fields.update(_limits(body))
        api_keys.update_key(s, row, actor=me.actor(), **fields)
        return _key(row), 200


def revoke_key(key_id: str, token_info: dict, *, rt: Runtime):
    me = principal(token_info)
    with rt.store.session() as s:
        api_keys.revoke_keys(s, [visible_key(s, me, key_id, for_update=True)], actor=me.actor())
    return None, 204


async def lookup_key(body: dict, token_info: dict, *, rt: Runtime):
    """The live key a secret belongs to: hashed as authentication hashes it (keyhouse.auth.lookup), and
    nothing of it kept; the finding is in the audit trail."""
    me = principal(token_info)
    credential, _ = await lookup(rt, body["key"].strip())
    if credential is None or credential.organization_id != me.organization_id:
        raise ApiError("not_found", "No key of the organization has this secret.")
    row = await rt.store.write(api_keys.key_looked_up, me.organization_id, credential.key_id, actor=me.actor())
    if row is None:
        raise ApiError("not_found", "The key this secret belongs to is revoked already: it works nowhere.")
    return _key(row)
