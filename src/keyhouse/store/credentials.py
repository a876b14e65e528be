"""The hot path's lookups: a presented key's credential, by its secret's hash or by the key's id.

Authentication and verify run these prebuilt Core statements on a plain connection, once or twice a
request: building a statement and loading ORM objects would cost more than the indexed lookup itself.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime

from sqlalchemy import Connection, bindparam, null, select, update
from sqlalchemy.orm import Session

from .models import ApiKey, RetiredSecret, User
from .session import cached


@dataclass(frozen=True)
class Credential:
    """What authentication needs to know about a presented key, from one indexed lookup."""

    key_pk: int
    key_id: str
    key_hash: str  # the hash the lookup matched: the key's current secret, or a retired one
    secret_version: int  # that secret's version
    retired_until: datetime | None  # a retired secret's end of grace; None for the current secret
    organization_id: str
    user_id: str
    role: str
    type: str
    permissions: list
    allowed_ips: list | None
    expires_at: datetime | None
    revoked_at: datetime | None
    name: str
    owner_id: str | None
    meta: dict | None
    credits_remaining: int | None  # credits, as stored (see keyhouse.credits for what is left now)
    credits_refill_amount: int | None
    credits_refill_seconds: int | None
    credits_refilled_at: datetime | None
    verify_limit: int | None  # the key's own verify rate limit, per window
    verify_window_seconds: int | None


_keys, _users, _retired = ApiKey.__table__, User.__table__, RetiredSecret.__table__
_KEY_COLUMNS = (_keys.c.organization_id, _keys.c.user_id, _users.c.role, _keys.c.type, _keys.c.permissions,
                _keys.c.allowed_ips, _keys.c.expires_at, _keys.c.revoked_at, _keys.c.description, _keys.c.owner_id,
                _keys.c.meta, _keys.c.credits_remaining, _keys.c.credits_refill_amount, _keys.c.credits_refill_seconds,
                _keys.c.credits_refilled_at, _keys.c.verify_limit, _keys.c.verify_window_seconds)
_CREDENTIAL = select(
    _keys.c.pk, _keys.c.id, _keys.c.key_hash, _keys.c.secret_version, null(), *_KEY_COLUMNS,
).join(_users, _users.c.id == _keys.c.user_id)
_CREDENTIAL_BY_HASH = _CREDENTIAL.where(_keys.c.key_hash == bindparam("digest"))
_CREDENTIAL_BY_ID = _CREDENTIAL.where(
    _keys.c.organization_id == bindparam("organization_id"), _keys.c.id == bindparam("key_id"))
_RETIRED_BY_HASH = (
    select(_keys.c.pk, _keys.c.id, _retired.c.key_hash, _retired.c.version, _retired.c.valid_until, *_KEY_COLUMNS)
    .select_from(_retired.join(_keys, _keys.c.pk == _retired.c.key_pk).join(_users, _users.c.id == _keys.c.user_id))
    .where(_retired.c.key_hash == bindparam("digest")))
_RETIRED_UNTIL = select(_retired.c.valid_until).where(
    _retired.c.key_pk == bindparam("key_pk"), _retired.c.version == bindparam("version"))


@cached
def credential_by_hash(db: Session | Connection, key_hash: str) -> Credential | None:
    """The key whose current secret hashes to `key_hash`, or else the key that secret was retired from.

    The retired secrets are asked only on a miss, so a good key costs one statement. A reroll moves a
    hash from the key to its retired secrets in one transaction: the first statement finds it before
    the move commits, the second after, so no concurrent reroll makes a key unknown."""
    row = db.execute(_CREDENTIAL_BY_HASH, {"digest": key_hash}).first()
    if row is None:
        row = db.execute(_RETIRED_BY_HASH, {"digest": key_hash}).first()
    return Credential(*row) if row else None


@cached
def retired_until(db: Session | Connection, key_pk: int, version: int) -> datetime | None:
    """Until when the key's secret of that version is accepted, if it was retired; None if it never was."""
    return db.execute(_RETIRED_UNTIL, {"key_pk": key_pk, "version": version}).scalar()


def rehash_keys(session: Session, rehashed: dict[int, tuple[str, str]]) -> None:
    """key pk -> (old hash, new hash): a key found under a retired secret now hashes under the current
    one. Only a key still holding the old hash changes (a concurrent reroll or revoke wins)."""
    for pk, (old, new) in sorted(rehashed.items()):  # in key order: two flushers never lock in a cycle
        session.execute(update(ApiKey).where(ApiKey.pk == pk, ApiKey.key_hash == old).values(key_hash=new))


@cached
def credential_by_id(db: Session | Connection, organization_id: str, key_id: str) -> Credential | None:
    """The key with its current secret."""
    row = db.execute(_CREDENTIAL_BY_ID, {"organization_id": organization_id, "key_id": key_id}).first()
    return Credential(*row) if row else None
