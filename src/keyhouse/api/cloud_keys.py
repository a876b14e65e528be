"""The cloud family's API keys: `/users/auth/keys...` (the caller's), `/users/auth/keys/_all` (every
user's, for admins) and `/users/{user_id}/auth/keys...` (one user's).

Errors carry the family's `api_keys.*` codes; see keyhouse.errors for the envelope. Deleting a key revokes
it: it is refused everywhere at once and leaves the lists, and the audit trail keeps what happened.
"""

from __future__ import annotations

from collections.abc import Iterable
from datetime import timedelta

from ..auth import Principal, principal
from ..errors import ApiError, FieldError
from ..runtime import Runtime
from ..store import api_keys, organizations
from ..store.models import ApiKey, User, utcnow
from .common import granted, iso_offset, may_see, new_secret

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


def _owner(s, me: Principal, user_id: str) -> User:
    """The user whose keys are addressed: any user of the organization for an admin, else oneself."""
    user = organizations.get_user(s, me.organization_id, user_id)
    if user is None:
        raise _user_not_found()
    if not may_see(me, user.id):
        raise ApiError("forbidden", "Members may only manage their own keys.")
    return user


def _live_keys(s, me: Principal, user_id: str, key_ids: list[str], field: str) -> list[ApiKey]:
    """All the listed keys of the user, or 404 naming the ones that are not there (nothing changes)."""
    found = api_keys.live_keys_by_id(s, me.organization_id, key_ids, user_id=user_id)
    missing = [f"{field}.{i}" for i, key_id in enumerate(key_ids) if key_id not in found]
    if missing:
        raise _key_not_found(missing)
    return [found[key_id] for key_id in dict.fromkeys(key_ids)]


# ------------------------------------------------------------------ the caller's own keys

def get_api_keys(token_info: dict, *, rt: Runtime):
    me = principal(token_info)
    with rt.store.reading() as s:
        return {"keys": [_key(row) for row in api_keys.keys_of_user(s, me.organization_id, me.user_id,
                                                                    include_revoked=False)]}


def create_api_key(body: dict, token_info: dict, *, rt: Runtime):
    me = principal(token_info)
    expires_at = None
    if "expiration" in body:  # the spec's pattern guarantees <number><d|h>
        amount, unit = int(body["expiration"][:-1]), body["expiration"][-1]
        expires_at = utcnow() + timedelta(**{_UNITS[unit]: amount})
    with rt.store.session() as s:
        plaintext, hashed = new_secret(rt)
        row = api_keys.issue_key(
            s, hashed, actor=me.actor(), organization_id=me.organization_id, user_id=me.user_id,
            description=body["description"], expires_at=expires_at,
            permissions=granted(rt, me, None, "secret"),
        )
        return {**_key(row), "key": plaintext}, 201


def delete_api_keys(body: dict, token_info: dict, *, rt: Runtime):
    me = principal(token_info)
    with rt.store.session() as s:
        api_keys.revoke_keys(s, _live_keys(s, me, me.user_id, body["keys"], "keys"), actor=me.actor())
    return {}, 200


def get_api_key(api_key_id: str, token_info: dict, *, rt: Runtime):
    me = principal(token_info)
    with rt.store.reading() as s:
        return _key(_live_keys(s, me, me.user_id, [api_key_id], "api_key_id")[0])


def delete_api_key(api_key_id: str, token_info: dict, *, rt: Runtime):
    me = principal(token_info)
    with rt.store.session() as s:
        api_keys.revoke_keys(s, _live_keys(s, me, me.user_id, [api_key_id], "api_key_id"), actor=me.actor())
    return {}, 200


# ------------------------------------------------------------------ every user's keys (admins)

def get_users_api_keys(token_info: dict, *, rt: Runtime):
    me = principal(token_info)
    with rt.store.reading() as s:
        return {"keys": [_key(row) for row in api_keys.keys_of_organization(s, me.organization_id)]}


def delete_users_api_keys(body: dict, token_info: dict, *, rt: Runtime):
    me = principal(token_info)
    with rt.store.session() as s:
        doomed = []
        for i, entry in enumerate(body["user_api_keys"]):
            if organizations.get_user(s, me.organization_id, entry["user_id"]) is None:
                raise ApiError("not_found", "The user can't be found.", code="api_keys.user_not_found",
                               fields=[FieldError(("user_api_keys", str(i), "user_id"), "can't be found")])
            doomed += _live_keys(s, me, entry["user_id"], entry["api_key_ids"], f"user_api_keys.{i}.api_key_ids")
        api_keys.revoke_keys(s, doomed, actor=me.actor())
    return {}, 200


# ------------------------------------------------------------------ one user's keys

def get_user_api_keys(user_id: str, token_info: dict, *, rt: Runtime):
    me = principal(token_info)
    with rt.store.reading() as s:
        user = _owner(s, me, user_id)
        return {"keys": [_key(row) for row in api_keys.keys_of_user(s, me.organization_id, user.id,
                                                                    include_revoked=False)]}


def delete_user_api_keys(user_id: str, body: dict, token_info: dict, *, rt: Runtime):
    me = principal(token_info)
    with rt.store.session() as s:
        user = _owner(s, me, user_id)
        api_keys.revoke_keys(s, _live_keys(s, me, user.id, body["keys"], "keys"), actor=me.actor())
    return {}, 200


def get_user_api_key(user_id: str, api_key_id: str, token_info: dict, *, rt: Runtime):
    me = principal(token_info)
    with rt.store.reading() as s:
        user = _owner(s, me, user_id)
        return _key(_live_keys(s, me, user.id, [api_key_id], "api_key_id")[0])


def delete_user_api_key(user_id: str, api_key_id: str, token_info: dict, *, rt: Runtime):
    me = principal(token_info)
    with rt.store.session() as s:
        user = _owner(s, me, user_id)
        api_keys.revoke_keys(s, _live_keys(s, me, user.id, [api_key_id], "api_key_id"), actor=me.actor())
    return {}, 200
