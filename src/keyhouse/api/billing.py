"""The billing family: `/api-keys`, paged with limit/offset/sort/filter and `Pagination-*` headers.

Errors are problem details; validation failures list `invalidFields`.
"""

from __future__ import annotations

from collections.abc import Callable
from urllib.parse import quote

from .. import platforms, spec
from ..auth import Principal, principal
from ..runtime import Runtime
from ..store import api_keys
from ..store.api_keys import KeyRow
from ..store.models import ApiKey
from .common import granted, iso_z, new_secret, paging_headers, visible_key

# The billing view's field names -> the store's columns. Which of them a client may sort and filter on
# is the spec's to say (the `sort` enum, the `filter` pattern); their names in the store are the view's.
COLUMNS = {
    "id": "id",
    "description": "description",
    "type": "type",
    "apiUser": "api_user",
    "createdTime": "created_at",
    "updatedTime": "updated_at",
}
# Where a key's `self` link points: the resource's path, as the spec's server and path name it.
LINK = spec.base_path(spec.document()) + "/api-keys/{}"


def _key(row: ApiKey | KeyRow) -> dict:
    view = {
        "id": row.id,
        "description": row.description,
        "type": row.type,
        "allowedIps": row.allowed_ips,
        "createdTime": iso_z(row.created_at),
        "updatedTime": iso_z(row.updated_at),
        "_links": [{"href": LINK.format(quote(row.id, safe="")), "rel": "self"}],
    }
    if row.acl is not None:
        view["acl"] = row.acl
    if row.api_user is not None:
        view["apiUser"] = row.api_user
    return view


def _filter(expression: str | None) -> list[tuple[str, list[str]]]:
    """`field:value;field:a,b` as (column, values) conditions, all of which must hold.

    The spec's pattern has already refused unknown fields and malformed clauses.
    """
    if not expression:
        return []
    conditions = []
    for clause in expression.split(";"):
        name, _, values = clause.partition(":")
        conditions.append((COLUMNS[name], values.split(",")))
    return conditions


async def get_api_key_collection(token_info: dict, limit: int, offset: int, sort: list[str],
                                 filter_: str | None = None, *, rt: Runtime):
    me = principal(token_info)
    order = [(COLUMNS[field.lstrip("-")], field.startswith("-")) for field in sort]
    total, rows = await rt.store.read(
        api_keys.page_keys, me.organization_id, owner_id=None if me.is_admin else me.user_id,
        match=_filter(filter_), order=order, limit=limit, offset=offset,
    )
    return [_key(row) for row in rows], 200, paging_headers(total, limit, offset)


def acl_permissions(entry: dict) -> list[str]:
    """The permissions an ACL entry grants, as keys hold them: with `scope.api`, its names are that API's."""
    api = entry["scope"].get("api")
    return platforms.of(api, entry["permissions"]) if api is not None else entry["permissions"]


def acl_kept(acl: list[dict], keep: Callable[[list[str]], list[str]]) -> list[dict]:
    """The ACL without the names `keep` drops (each compared as keys hold it)."""
    return [{**entry, "permissions": [name for name, held in zip(entry["permissions"], acl_permissions(entry),
                                                                 strict=True) if keep([held])]} for entry in acl]


def _in_acl(acl: list[dict], permission: str) -> tuple[str, ...]:
    """Where a permission stands in an ACL: acl.<entry>.permissions.<index>."""
    return next((("acl", str(i), "permissions", str(acl_permissions(entry).index(permission)))
                 for i, entry in enumerate(acl) if permission in acl_permissions(entry)), ("acl",))


def _fields(rt: Runtime, me: Principal, body: dict) -> dict:
    """The stored fields of a key from a billing body; the ACL becomes the key's permissions."""
    acl = body.get("acl")
    requested = None
    if acl is not None:
        # An entry scoped to other organizations grants nothing here: a key lives in one organization.
        requested = [permission for entry in acl
                     if me.organization_id in (entry["scope"].get("organizationId") or [me.organization_id])
                     for permission in acl_permissions(entry)]
    return {
        "description": body["description"],
        "type": body["type"],
        "acl": acl,
        "permissions": granted(rt, me, requested, body["type"], lambda name: _in_acl(acl or [], name)),
        "allowed_ips": body.get("allowedIps"),
        "api_user": body.get("apiUser"),
    }


def post_api_key(body: dict, token_info: dict, *, rt: Runtime):
    me = principal(token_info)
    with rt.store.session() as s:
        plaintext, hashed = new_secret(rt)
        row = api_keys.issue_key(s, hashed, actor=me.actor(), organization_id=me.organization_id,
                                 user_id=me.user_id, **_fields(rt, me, body))
        return {**_key(row), "secretKey": plaintext}, 201


def get_api_key_resource(id_: str, token_info: dict, *, rt: Runtime):
    me = principal(token_info)
    with rt.store.reading() as s:
        return _key(visible_key(s, me, id_))


def put_api_key_resource(id_: str, body: dict, token_info: dict, *, rt: Runtime):
    """Upsert: 201 with the secret when the id is free (never used, or its key was deleted), else 200."""
    me = principal(token_info)
    fields = _fields(rt, me, body)
    with rt.store.session() as s:
        row = api_keys.get_key(s, me.organization_id, id_, include_revoked=True, for_update=True)
        if row is None:
            # Two PUTs of a new id can race; the unique (organization, id) index lets one insert win,
            # and the other becomes an update of what it made: one object, either way.
            plaintext, hashed = new_secret(rt)
            made = api_keys.try_issue_key(s, hashed, actor=me.actor(), id=id_, organization_id=me.organization_id,
                                          user_id=me.user_id, **fields)
            if made is not None:
                return {**_key(made), "secretKey": plaintext}, 201
        elif row.revoked_at is not None:
            plaintext, hashed = new_secret(rt)
            api_keys.reissue_key(s, hashed, row, actor=me.actor(), user_id=me.user_id, **fields)
            return {**_key(row), "secretKey": plaintext}, 201
        row = visible_key(s, me, id_, for_update=True)  # a live key: the caller's own, or any for an admin
        api_keys.update_key(s, row, actor=me.actor(), **fields)
        return _key(row), 200


def delete_api_key_resource(id_: str, token_info: dict, *, rt: Runtime):
    me = principal(token_info)
    with rt.store.session() as s:
        api_keys.revoke_keys(s, [visible_key(s, me, id_)], actor=me.actor())
    return None, 204
