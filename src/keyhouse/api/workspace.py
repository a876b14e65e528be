"""The workspace family: `/user/api-keys`, the caller's own keys, shown masked.

`allowed_scopes` are the key's permissions (keyhouse.permissions): the same list a billing ACL sets.
Revoked keys stay listed, with `active: false`.
"""

from __future__ import annotations

from ..auth import principal
from ..errors import ApiError
from ..runtime import Runtime
from ..store import api_keys
from ..store.models import ApiKey, utcnow
from .common import granted, iso_z, new_secret, visible_key


def _key(row: ApiKey) -> dict:
    now = utcnow()
    return {
        "id": row.id,
        "name": row.description,
        "masked_key": row.key_hint,
        "active": row.revoked_at is None and (row.expires_at is None or row.expires_at > now),
        "allow_self_revoke": row.allow_self_revoke,
        "allowed_scopes": list(row.permissions),
        "created_at": iso_z(row.created_at),
        "last_used_at": iso_z(row.last_used_at) if row.last_used_at else None,
        "org_id": row.organization_id,
        "workspace_id": row.workspace_id,
    }


def _own(s, me, key_id: str) -> ApiKey:
    # Only the caller's own keys exist on these paths, for admins too; revoked ones stay listed.
    return visible_key(s, me, key_id, own_only=True, include_revoked=True)


def list_my_api_keys(token_info: dict, *, rt: Runtime):
    me = principal(token_info)
    with rt.store.reading() as s:
        return [_key(row) for row in api_keys.keys_of_user(s, me.organization_id, me.user_id, include_revoked=True)]


def create_my_api_key(body: dict, token_info: dict, *, rt: Runtime):
    me = principal(token_info)
    scopes: list[str] | None = body.get("allowed_scopes")
    permissions = granted(rt, me, scopes, "secret", lambda name: ("allowed_scopes", str((scopes or []).index(name))))
    with rt.store.session() as s:
        plaintext, hashed = new_secret(rt)
        row = api_keys.issue_key(
            s, hashed, actor=me.actor(), organization_id=me.organization_id, user_id=me.user_id,
            description=body["name"], permissions=permissions, allow_self_revoke=body["allow_self_revoke"],
            workspace_id=body.get("workspace_id"),
        )
        return {**_key(row), "key": plaintext}, 201


def get_my_api_key(id_: str, token_info: dict, *, rt: Runtime):
    me = principal(token_info)
    with rt.store.reading() as s:
        return _key(_own(s, me, id_))


def revoke_my_api_key(id_: str, token_info: dict, *, rt: Runtime):
    me = principal(token_info)
    with rt.store.session() as s:
        api_keys.revoke_keys(s, [_own(s, me, id_)], actor=me.actor())
    return None, 204


def revoke_current_api_key(token_info: dict, *, rt: Runtime):
    me = principal(token_info)
    with rt.store.session() as s:
        row = _own(s, me, me.key_id)
        if not row.allow_self_revoke:
            raise ApiError("forbidden", "This key does not allow self-revocation.")
        api_keys.revoke_keys(s, [row], actor=me.actor())
    return None, 204
