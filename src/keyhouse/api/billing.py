"""The billing family: `/api-keys`, paged with limit/offset/sort/filter and `Pagination-*` headers.

Errors are problem details; validation failures list `invalidFields`.
"""

from __future__ import annotations

from urllib.parse import quote

from ..auth import principal
from ..runtime import secret, session
from ..store import queries
from ..store.models import ApiKey
from . import iso_z

# Billing field name -> column, for the fields the spec lets clients sort and filter on.
COLUMNS = {
    "id": "id",
    "description": "description",
    "type": "type",
    "apiUser": "api_user",
    "createdTime": "created_at",
    "updatedTime": "updated_at",
}
DEFAULT_SORT = ["-createdTime"]


def _key(row: ApiKey) -> dict:
    view = {
        "id": row.id,
        "description": row.description,
        "type": row.type,
        "allowedIps": row.allowed_ips,
        "createdTime": iso_z(row.created_at),
        "updatedTime": iso_z(row.updated_at),
        "_links": [{"href": f"/api/v1/api-keys/{quote(row.id, safe='')}", "rel": "self"}],
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


def get_api_key_collection(token_info: dict, limit: int, offset: int, sort: list[str] | None = None,
                           filter_: str | None = None):
    me = principal(token_info)
    order = [(COLUMNS[field.lstrip("-")], field.startswith("-")) for field in (sort or DEFAULT_SORT)]
    with session() as s:
        total, rows = queries.page_keys(
            s, me.organization_id, owner_id=None if me.is_admin else me.user_id,
            match=_filter(filter_), order=order, limit=limit, offset=offset,
        )
        page = [_key(row) for row in rows]
    headers = {"Pagination-Total": str(total), "Pagination-Limit": str(limit), "Pagination-Offset": str(offset)}
    return page, 200, headers


def post_api_key(body: dict, token_info: dict):
    me = principal(token_info)
    with session() as s:
        row, plaintext = queries.issue_key(
            s, secret(), organization_id=me.organization_id, user_id=me.user_id,
            description=body["description"], type=body["type"], acl=body.get("acl"),
            allowed_ips=body.get("allowedIps"), api_user=body.get("apiUser"),
        )
        return {**_key(row), "secretKey": plaintext}, 201
