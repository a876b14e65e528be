"""The cloud family: `/users/.../auth/keys` and `/deployments/traffic-filter/rulesets`.

Errors carry the family's codes (api_keys.*, traffic_filter.*); see keyhouse.errors for the envelope.
"""

from __future__ import annotations

from datetime import timedelta

from ..auth import principal
from ..errors import ApiError
from ..runtime import secret, session
from ..store import queries
from ..store.models import ApiKey, Ruleset, new_id, utcnow
from . import iso_offset

_UNITS = {"d": "days", "h": "hours"}


def _key(row: ApiKey) -> dict:
    view = {
        "id": row.id,
        "user_id": row.user_id,
        "organization_id": row.organization_id,
        "description": row.description,
        "creation_date": iso_offset(row.created_at),
    }
    if row.expires_at is not None:
        view["expiration_date"] = iso_offset(row.expires_at)
    return view


def get_user_api_keys(user_id: str, token_info: dict):
    me = principal(token_info)
    with session() as s:
        user = queries.get_user(s, me.organization_id, user_id)
        if user is None:
            raise ApiError("not_found", "The user can't be found.", code="api_keys.user_not_found")
        if not me.is_admin and user.id != me.user_id:
            raise ApiError("forbidden", "Members may only read their own keys.")
        rows = queries.keys_of_user(s, me.organization_id, user.id, include_revoked=False)
        return {"keys": [_key(row) for row in rows]}


def create_api_key(body: dict, token_info: dict):
    me = principal(token_info)
    expires_at = None
    if "expiration" in body:  # the spec's pattern guarantees <number><d|h>
        amount, unit = int(body["expiration"][:-1]), body["expiration"][-1]
        expires_at = utcnow() + timedelta(**{_UNITS[unit]: amount})
    with session() as s:
        row, plaintext = queries.issue_key(
            s, secret(), organization_id=me.organization_id, user_id=me.user_id,
            description=body["description"], expires_at=expires_at,
        )
        return {**_key(row), "key": plaintext}, 201


# ------------------------------------------------------------------ traffic-filter rulesets

def _ruleset(row: Ruleset) -> dict:
    view = {
        "id": row.id,
        "name": row.name,
        "type": row.type,
        "region": row.region,
        "include_by_default": row.include_by_default,
        "rules": row.rules,
        "total_associations": 0,
    }
    if row.description is not None:
        view["description"] = row.description
    return view


def _rules(body: dict) -> list[dict]:
    """The rules with ids of our own (the spec has already checked each source against the type)."""
    return [{"id": new_id(), **rule} for rule in body["rules"]]


def create_traffic_filter_ruleset(body: dict, token_info: dict):
    me = principal(token_info)
    rules = _rules(body)
    with session() as s:
        row = queries.insert_ruleset(
            s, me.organization_id, name=body["name"], description=body.get("description"), type=body["type"],
            region=body["region"], include_by_default=body["include_by_default"], rules=rules,
        )
        return {"id": row.id}, 200


def get_traffic_filter_rulesets(token_info: dict):
    me = principal(token_info)
    with session() as s:
        return {"rulesets": [_ruleset(row) for row in queries.rulesets_of(s, me.organization_id)]}


def _find_ruleset(s, organization_id: str, ruleset_id: str) -> Ruleset:
    row = queries.get_ruleset(s, organization_id, ruleset_id)
    if row is None:
        raise ApiError("not_found", "The traffic filter ruleset can't be found.", code="traffic_filter.not_found")
    return row


def get_traffic_filter_ruleset(ruleset_id: str, token_info: dict):
    me = principal(token_info)
    with session() as s:
        return _ruleset(_find_ruleset(s, me.organization_id, ruleset_id))


def delete_traffic_filter_ruleset(ruleset_id: str, token_info: dict, ignore_associations: bool = False):
    me = principal(token_info)
    with session() as s:
        queries.delete_ruleset(s, _find_ruleset(s, me.organization_id, ruleset_id))
    return {}, 200
