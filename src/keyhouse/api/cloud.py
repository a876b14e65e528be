"""The cloud family: `/users/.../auth/keys` and `/deployments/traffic-filter/...`.

Errors carry the family's codes (api_keys.*, traffic_filter.*); see keyhouse.errors for the envelope.
Deleting a key revokes it: it is refused everywhere at once and leaves the lists, and the audit trail
keeps what happened.
"""

from __future__ import annotations

from datetime import timedelta
from typing import Iterable

from ..auth import Principal, principal
from ..errors import ApiError, FieldError
from ..runtime import reading, secret, session
from ..store import queries
from ..store.models import ApiKey, Ruleset, new_id, utcnow
from . import granted, iso_offset, only_admins

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


def _user_not_found() -> ApiError:
    return ApiError("not_found", "The user can't be found.", code="api_keys.user_not_found")


def _key_not_found(fields: Iterable[str] = ()) -> ApiError:
    return ApiError("not_found", "The API key can't be found.", code="api_keys.key_not_found",
                    fields=[FieldError(tuple(f.split(".")), "can't be found", "not_found") for f in fields])


def _owner(s, me: Principal, user_id: str):
    """The user whose keys are addressed: any user of the organization for an admin, else oneself."""
    user = queries.get_user(s, me.organization_id, user_id)
    if user is None:
        raise _user_not_found()
    if not me.is_admin and user.id != me.user_id:
        raise ApiError("forbidden", "Members may only manage their own keys.")
    return user


def _live_keys(s, me: Principal, user_id: str, key_ids: list[str], field: str) -> list[ApiKey]:
    """All the listed keys of the user, or 404 naming the ones that are not there (nothing changes)."""
    found = queries.live_keys_by_id(s, me.organization_id, key_ids, user_id=user_id)
    missing = [f"{field}.{i}" for i, key_id in enumerate(key_ids) if key_id not in found]
    if missing:
        raise _key_not_found(missing)
    return [found[key_id] for key_id in dict.fromkeys(key_ids)]


# ------------------------------------------------------------------ the caller's own keys

def get_api_keys(token_info: dict):
    me = principal(token_info)
    with reading() as s:
        return {"keys": [_key(row) for row in queries.keys_of_user(s, me.organization_id, me.user_id,
                                                                    include_revoked=False)]}


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
            permissions=granted(me, None, "secret"),
        )
        queries.record(s, action="key.created", target_type="api_key", target_id=row.id, **me.actor())
        return {**_key(row), "key": plaintext}, 201


def delete_api_keys(body: dict, token_info: dict):
    me = principal(token_info)
    with session() as s:
        queries.revoke_keys(s, _live_keys(s, me, me.user_id, body["keys"], "keys"), actor=me.actor())
    return {}, 200


def get_api_key(api_key_id: str, token_info: dict):
    me = principal(token_info)
    with reading() as s:
        return _key(_live_keys(s, me, me.user_id, [api_key_id], "api_key_id")[0])


def delete_api_key(api_key_id: str, token_info: dict):
    me = principal(token_info)
    with session() as s:
        queries.revoke_keys(s, _live_keys(s, me, me.user_id, [api_key_id], "api_key_id"), actor=me.actor())
    return {}, 200


# ------------------------------------------------------------------ every user's keys (admins)

def get_users_api_keys(token_info: dict):
    me = principal(token_info)
    only_admins(me)
    with reading() as s:
        return {"keys": [_key(row) for row in queries.keys_of_organization(s, me.organization_id)]}


def delete_users_api_keys(body: dict, token_info: dict):
    me = principal(token_info)
    only_admins(me)
    with session() as s:
        doomed = []
        for i, entry in enumerate(body["user_api_keys"]):
            if queries.get_user(s, me.organization_id, entry["user_id"]) is None:
                raise ApiError("not_found", "The user can't be found.", code="api_keys.user_not_found",
                               fields=[FieldError(("user_api_keys", str(i), "user_id"), "can't be found")])
            doomed += _live_keys(s, me, entry["user_id"], entry["api_key_ids"], f"user_api_keys.{i}.api_key_ids")
        queries.revoke_keys(s, doomed, actor=me.actor())
    return {}, 200


# ------------------------------------------------------------------ one user's keys

def get_user_api_keys(user_id: str, token_info: dict):
    me = principal(token_info)
    with reading() as s:
        user = _owner(s, me, user_id)
        return {"keys": [_key(row) for row in queries.keys_of_user(s, me.organization_id, user.id,
                                                                    include_revoked=False)]}


def delete_user_api_keys(user_id: str, body: dict, token_info: dict):
    me = principal(token_info)
    with session() as s:
        user = _owner(s, me, user_id)
        queries.revoke_keys(s, _live_keys(s, me, user.id, body["keys"], "keys"), actor=me.actor())
    return {}, 200


def get_user_api_key(user_id: str, api_key_id: str, token_info: dict):
    me = principal(token_info)
    with reading() as s:
        user = _owner(s, me, user_id)
        return _key(_live_keys(s, me, user.id, [api_key_id], "api_key_id")[0])


def delete_user_api_key(user_id: str, api_key_id: str, token_info: dict):
    me = principal(token_info)
    with session() as s:
        user = _owner(s, me, user_id)
        queries.revoke_keys(s, _live_keys(s, me, user.id, [api_key_id], "api_key_id"), actor=me.actor())
    return {}, 200


# ------------------------------------------------------------------ traffic-filter rulesets

def _ruleset(row: Ruleset, associations: list | None, with_associations: bool) -> dict:
    associations = associations or []
    view = {
        "id": row.id,
        "name": row.name,
        "type": row.type,
        "region": row.region,
        "include_by_default": row.include_by_default,
        "rules": row.rules,
        "total_associations": len(associations),
    }
    if row.description is not None:
        view["description"] = row.description
    if with_associations:
        view["associations"] = [{"entity_type": a.entity_type, "id": a.entity_id} for a in associations]
    return view


def _definition(body: dict) -> dict:
    """The stored fields of a ruleset body; every rule gets an id of ours (the spec checked sources)."""
    return {
        "name": body["name"],
        "description": body.get("description"),
        "type": body["type"],
        "region": body["region"],
        "include_by_default": body["include_by_default"],
        "rules": [{"id": new_id(), **rule} for rule in body["rules"]],
    }


def _find_ruleset(s, me: Principal, ruleset_id: str) -> Ruleset:
    row = queries.get_ruleset(s, me.organization_id, ruleset_id)
    if row is None:
        raise ApiError("not_found", "The traffic filter ruleset can't be found.", code="traffic_filter.not_found")
    return row


def _audit_ruleset(s, me: Principal, action: str, target_type: str, target_id: str) -> None:
    queries.record(s, action=action, target_type=target_type, target_id=target_id, **me.actor())


# Rulesets per organization (the rules of one are bounded by the spec: 512).
MAX_RULESETS = 1024


def create_traffic_filter_ruleset(body: dict, token_info: dict):
    me = principal(token_info)
    with session() as s:
        if queries.count_rulesets(s, me.organization_id) >= MAX_RULESETS:
            raise ApiError("invalid_body", f"An organization holds at most {MAX_RULESETS} rulesets; delete one first.",
                           code="traffic_filter.rulesets_limit_exceeded")
        row = queries.insert_ruleset(s, me.organization_id, **_definition(body))
        _audit_ruleset(s, me, "ruleset.created", "ruleset", row.id)
        return {"id": row.id}, 200


def get_traffic_filter_rulesets(token_info: dict, region: str | None = None, include_associations: bool = False):
    me = principal(token_info)
    with reading() as s:
        rows = queries.rulesets_of(s, me.organization_id, region)
        associations = queries.associations_of(s, [r.id for r in rows])
        return {"rulesets": [_ruleset(r, associations[r.id], include_associations) for r in rows]}


def get_traffic_filter_ruleset(ruleset_id: str, token_info: dict, include_associations: bool = False):
    me = principal(token_info)
    with reading() as s:
        row = _find_ruleset(s, me, ruleset_id)
        return _ruleset(row, queries.associations_of(s, [row.id])[row.id], include_associations)


def update_traffic_filter_ruleset(ruleset_id: str, body: dict, token_info: dict):
    me = principal(token_info)
    with session() as s:
        row = _find_ruleset(s, me, ruleset_id)
        queries.update_ruleset(s, row, **_definition(body))
        _audit_ruleset(s, me, "ruleset.updated", "ruleset", row.id)
        return {"id": row.id}, 200


def delete_traffic_filter_ruleset(ruleset_id: str, token_info: dict, ignore_associations: bool = False):
    me = principal(token_info)
    with session() as s:
        row = _find_ruleset(s, me, ruleset_id)
        count = len(queries.associations_of(s, [row.id])[row.id])
        if count and not ignore_associations:
            raise ApiError("conflict", f"The ruleset has {count} association(s); delete them first or pass "
                           "ignore_associations=true.", code="traffic_filter.ruleset_has_associations")
        queries.delete_ruleset(s, row)
        _audit_ruleset(s, me, "ruleset.deleted", "ruleset", row.id)
    return {}, 200


def get_traffic_filter_ruleset_deployment_associations(ruleset_id: str, token_info: dict):
    me = principal(token_info)
    with reading() as s:
        row = _find_ruleset(s, me, ruleset_id)
        associations = queries.associations_of(s, [row.id])[row.id]
        return {"associations": [{"entity_type": a.entity_type, "id": a.entity_id} for a in associations],
                "total_associations": len(associations)}


def create_traffic_filter_ruleset_association(ruleset_id: str, body: dict, token_info: dict):
    me = principal(token_info)
    with session() as s:
        row = _find_ruleset(s, me, ruleset_id)
        made = queries.add_association(s, row, body["entity_type"], body["id"])
        if made:
            _audit_ruleset(s, me, "association.created", "association", f"{row.id}/{body['entity_type']}/{body['id']}")
    return {}, 201 if made else 200


def delete_traffic_filter_ruleset_association(ruleset_id: str, association_type: str, associated_entity_id: str,
                                              token_info: dict):
    me = principal(token_info)
    with session() as s:
        row = _find_ruleset(s, me, ruleset_id)
        if not queries.remove_association(s, row, association_type, associated_entity_id):
            raise ApiError("not_found", "The association can't be found.", code="traffic_filter.association_not_found")
        _audit_ruleset(s, me, "association.deleted", "association", f"{row.id}/{association_type}/{associated_entity_id}")
    return {}, 200


def get_traffic_filter_deployment_ruleset_associations(association_type: str, associated_entity_id: str,
                                                       token_info: dict):
    me = principal(token_info)
    with reading() as s:
        rows = queries.rulesets_of_entity(s, me.organization_id, association_type, associated_entity_id)
        associations = queries.associations_of(s, [r.id for r in rows])
        return {"rulesets": [_ruleset(r, associations[r.id], False) for r in rows]}
