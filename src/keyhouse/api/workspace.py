"""The workspace family: `/user/api-keys`, the caller's own keys, shown masked."""

from __future__ import annotations

from ..auth import principal
from ..errors import ApiError
from ..runtime import secret, session
from ..store import queries
from ..store.models import ApiKey, utcnow
from . import iso_z


def _key(row: ApiKey) -> dict:
    now = utcnow()
    return {
        "id": row.id,
        "name": row.description,
        "masked_key": row.key_hint,
        "active": row.revoked_at is None and (row.expires_at is None or row.expires_at > now),
        "allow_self_revoke": row.allow_self_revoke,
        "allowed_scopes": row.scopes or [],
        "created_at": iso_z(row.created_at),
        "last_used_at": iso_z(row.last_used_at) if row.last_used_at else None,
        "org_id": row.organization_id,
        "workspace_id": row.workspace_id,
    }


def list_user_api_keys(token_info: dict):
    me = principal(token_info)
    with session() as s:
        return [_key(row) for row in queries.keys_of_user(s, me.organization_id, me.user_id, include_revoked=True)]


def create_user_api_key(body: dict, token_info: dict):
    me = principal(token_info)
    with session() as s:
        row, plaintext = queries.issue_key(
            s, secret(), organization_id=me.organization_id, user_id=me.user_id, description=body["name"],
            scopes=body.get("allowed_scopes", []), allow_self_revoke=body["allow_self_revoke"],
            workspace_id=body.get("workspace_id"),
        )
        return {**_key(row), "key": plaintext}, 201


def revoke_user_api_key(id_: str, token_info: dict):
    me = principal(token_info)
    with session() as s:
        row = queries.get_key(s, me.organization_id, id_)
        # Only the caller's own keys exist on this path; a colleague's key is not found, like any other.
        if row is None or row.user_id != me.user_id:
            raise ApiError("not_found", "The API key can't be found.")
        queries.revoke_key(s, row)
    return None, 204
