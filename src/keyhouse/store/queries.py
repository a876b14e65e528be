"""Every query keyhouse runs. Handlers pass plain values in and get rows out; no SQL elsewhere.

Every mutation records its audit event here, in its own transaction: no change can miss the trail. A
mutation made for a request takes `actor`, who is making it (`auth.Principal.actor()`); one made outside
any request (the CLI's bootstrap, a test's setup) passes `actor=None` and records none.
"""

from __future__ import annotations

import functools
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import NamedTuple, cast

from sqlalchemy import (
    BigInteger,
    Connection,
    CursorResult,
    Table,
    Text,
    bindparam,
    delete,
    func,
    insert,
    null,
    or_,
    select,
    update,
)
from sqlalchemy.exc import IntegrityError
from sqlalchemy.orm import Session, aliased

from .. import credits, keys, spec
from .models import (
    ApiKey,
    Association,
    AuditEvent,
    ConsoleSession,
    Organization,
    PlatformApi,
    RetiredSecret,
    Ruleset,
    User,
    fold,
    utcnow,
)

Actor = dict | None  # organization_id, actor_user_id, actor_key_id, ip: the fields of an audit event


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


# The hot paths (authentication, verify, the billing list) run prebuilt Core statements on a plain
# connection: building a statement and loading ORM objects cost more than the indexed lookup itself.
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


def one_statement(query):
    """Marks a read that needs no transaction around it: `Store.read` runs it without one, which spares
    SQLite a BEGIN and a ROLLBACK, and PostgreSQL two round trips. Each of its statements is atomic on
    its own, and what it answers holds whichever writes land between them."""
    query.one_statement = True
    return query


def cached(query):
    """Marks a one-statement read whose answer the store may keep until anything commits (on SQLite,
    where it can tell at once: see Store): the lookups every request makes of its credentials."""
    query.cached = True
    return one_statement(query)


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
    for pk, (old, new) in rehashed.items():
        session.execute(update(ApiKey).where(ApiKey.pk == pk, ApiKey.key_hash == old).values(key_hash=new))


@cached
def credential_by_id(db: Session | Connection, organization_id: str, key_id: str) -> Credential | None:
    """The key with its current secret."""
    row = db.execute(_CREDENTIAL_BY_ID, {"organization_id": organization_id, "key_id": key_id}).first()
    return Credential(*row) if row else None


# ------------------------------------------------------------------ organizations and users

def create_organization(session: Session, name: str) -> Organization:
    org = Organization(name=name)
    session.add(org)
    session.flush()
    return org


def get_organization(session: Session, organization_id: str) -> Organization | None:
    return session.get(Organization, organization_id)


def create_user(session: Session, organization_id: str, email: str, role: str) -> User:
    user = User(organization_id=organization_id, email=email, role=role)
    session.add(user)
    session.flush()
    return user


def get_user(session: Session, organization_id: str, user_id: str) -> User | None:
    """The user, if it belongs to the organization: other organizations' users do not exist here."""
    return session.scalars(
        select(User).where(User.id == user_id, User.organization_id == organization_id)
    ).one_or_none()


def user_by_email(session: Session, email: str) -> User | None:
    return session.scalars(select(User).where(User.email == email)).one_or_none()


# ------------------------------------------------------------------ keys

def issue_key(session: Session, secret: bytes, *, actor: Actor, organization_id: str, user_id: str,
              description: str, permissions: list | None = None, **fields) -> tuple[ApiKey, str]:
    """A new key row and its plaintext, which the caller shows once and drops."""
    new = keys.new(secret)
    now = utcnow()
    row = ApiKey(key_hash=new.hash, key_hint=new.hint, organization_id=organization_id, user_id=user_id,
                 description=description, permissions=permissions if permissions is not None else ["*"],
                 created_at=now, updated_at=now, **fields)
    session.add(row)
    session.flush()
    _count_live(session, organization_id, +1)
    _audit(session, actor, "key.created", "api_key", row.id)
    return row, new.plaintext


def _count_live(session: Session, organization_id: str, delta: int) -> None:
    session.execute(update(Organization).where(Organization.id == organization_id)
                    .values(live_keys=Organization.live_keys + delta))


def insert_keys(session: Session, organization_id: str, rows: Sequence[dict]) -> None:
    """Bulk insert (one multi-row statement per batch) for loading synthetic keys; counted as live. A bulk
    insert runs no ORM events: the folded forms are added here."""
    folded = ApiKey.FOLDED.items()
    session.execute(insert(ApiKey), [{**row, "organization_id": organization_id,
                                      **{f: fold(row.get(column)) for column, f in folded}} for row in rows])
    _count_live(session, organization_id, len(rows))


def try_issue_key(session: Session, secret: bytes, **fields) -> tuple[ApiKey, str] | None:
    """issue_key, or None when the key's unique (organization, id) is already taken (a lost race)."""
    try:
        with session.begin_nested():
            return issue_key(session, secret, **fields)
    except IntegrityError:
        return None


def reissue_key(session: Session, secret: bytes, row: ApiKey, *, actor: Actor, **fields) -> str:
    """Give a revoked key's id to a new key: new secret, new fields, the old secret dead for good."""
    now = utcnow()
    for name, value in fields.items():
        setattr(row, name, value)
    plaintext = _new_secret(session, secret, row, now, grace=timedelta(0))
    row.revoked_at = row.last_used_at = None
    row.created_at = row.updated_at = now
    session.flush()
    _count_live(session, row.organization_id, +1)
    _audit(session, actor, "key.created", "api_key", row.id)
    return plaintext


def _new_secret(session: Session, secret: bytes, row: ApiKey, now: datetime, grace: timedelta) -> str:
    """Retire the key's secret (accepted for `grace` more, and known as revoked after that) and give it
    a new one. One previous secret at a time: whatever grace an earlier one had left ends now."""
    session.execute(update(RetiredSecret).where(RetiredSecret.key_pk == row.pk, RetiredSecret.valid_until > now)
                    .values(valid_until=now))
    session.add(RetiredSecret(key_hash=row.key_hash, key_pk=row.pk, version=row.secret_version, retired_at=now,
                              valid_until=now + grace))
    new = keys.new(secret)
    row.key_hash, row.key_hint = new.hash, new.hint
    row.secret_version += 1
    return new.plaintext


def update_key(session: Session, row: ApiKey, *, actor: Actor, **fields) -> None:
    changes = _update(session, row, fields)
    _audit(session, actor, "key.updated", "api_key", row.id, changes=changes)


def reroll_key(session: Session, secret: bytes, row: ApiKey, grace: timedelta, *,
               actor: Actor) -> tuple[str, datetime]:
    """A new secret for the key; the old one stays valid for `grace` (not at all when it is zero)."""
    now = utcnow()
    plaintext = _new_secret(session, secret, row, now, grace)
    row.updated_at = now
    session.flush()
    _audit(session, actor, "key.rerolled", "api_key", row.id, detail=f"grace {int(grace.total_seconds())}s")
    return plaintext, now + grace


def keys_of_user(session: Session, organization_id: str, user_id: str, *, include_revoked: bool) -> Sequence[ApiKey]:
    query = select(ApiKey).where(ApiKey.organization_id == organization_id, ApiKey.user_id == user_id)
    if not include_revoked:
        query = query.where(ApiKey.revoked_at.is_(None))
    return session.scalars(query.order_by(ApiKey.created_at.desc(), ApiKey.pk.desc())).all()


def keys_of_organization(session: Session, organization_id: str) -> Sequence[ApiKey]:
    return session.scalars(
        select(ApiKey).where(ApiKey.organization_id == organization_id, ApiKey.revoked_at.is_(None))
        .order_by(ApiKey.created_at.desc(), ApiKey.pk.desc())
    ).all()


def get_key(session: Session, organization_id: str, key_id: str, *, include_revoked: bool = False,
            for_update: bool = False) -> ApiKey | None:
    query = select(ApiKey).where(ApiKey.organization_id == organization_id, ApiKey.id == key_id)
    if not include_revoked:
        query = query.where(ApiKey.revoked_at.is_(None))
    if for_update:
        query = query.with_for_update()
    return session.scalars(query).one_or_none()


def page_owned_keys(session: Session, organization_id: str, *, user_id: str | None, owner_id: str | None,
                    limit: int, offset: int, search: str | None = None) -> tuple[int, Sequence[ApiKey]]:
    """(total, one page) of the organization's live keys, newest first: of one user (a member's own), of one
    owner (keyhouse's `owner_id`), or all of them; with `search`, those whose name or id contains it,
    ignoring case (the folded forms, wildcards in it taken literally), or whose masked key does as written."""
    where = [ApiKey.organization_id == organization_id, ApiKey.revoked_at.is_(None)]
    if user_id is not None:
        where.append(ApiKey.user_id == user_id)
    if owner_id is not None:
        where.append(ApiKey.owner_id == owner_id)
    if search is not None:
        folded = fold(search)
        where.append(or_(ApiKey.description_folded.contains(folded, autoescape=True),
                         ApiKey.id_folded.contains(folded, autoescape=True),
                         ApiKey.key_hint.contains(search, autoescape=True)))
    total = session.scalar(select(func.count()).select_from(ApiKey).where(*where)) or 0
    rows = session.scalars(select(ApiKey).where(*where).order_by(ApiKey.created_at.desc(), ApiKey.pk.desc())
                           .limit(limit).offset(offset)).all() if limit else []
    return total, rows


def live_keys_by_id(session: Session, organization_id: str, key_ids: Iterable[str],
                    user_id: str | None = None) -> dict[str, ApiKey]:
    query = select(ApiKey).where(ApiKey.organization_id == organization_id, ApiKey.id.in_(list(key_ids)),
                                 ApiKey.revoked_at.is_(None))
    if user_id is not None:
        query = query.where(ApiKey.user_id == user_id)
    return {row.id: row for row in session.scalars(query)}


def page_keys(db: Session | Connection, organization_id: str, *, owner_id: str | None,
              match: Sequence[tuple[str, list[str]]], order: Sequence[tuple[str, bool]],
              limit: int, offset: int) -> tuple[int, list[KeyRow]]:
    """(total matching, one page). `match` holds (column, values) conditions, all of which must hold,
    each by any of its values, compared ignoring case (models.fold); `order` is (column, descending) pairs;
    ties always break on the primary key for stable pages. Rows carry the billing view's columns, under
    ApiKey's attribute names.

    One statement: every row of the page carries the total too. Only an empty page asks for it again."""
    params: dict[str, object] = {"organization_id": organization_id, "owner_id": owner_id, "limit": limit,
                                 "offset": offset}
    for i, (_column, values) in enumerate(match):
        params[f"match_{i}"] = [fold(v) for v in values]
    total, page = _page_statements(owner_id is not None, tuple(column for column, _ in match), tuple(order))
    rows = list(map(KeyRow._make, db.execute(page, params))) if limit else []
    return (rows[0].total if rows else db.execute(select(total), params).scalar()) or 0, rows


class KeyRow(NamedTuple):
    """A key as the billing list shows it, with the collection's size. A plain tuple: reading a
    SQLAlchemy Row's fields by name costs several times more, twenty rows a page."""

    pk: int
    id: str
    description: str
    type: str
    allowed_ips: list | None
    acl: list | None
    api_user: str | None
    created_at: datetime
    updated_at: datetime
    total: int


# What the billing list shows of a key: reading only these columns spares decoding the others.
_BILLING_VIEW = [_keys.c[name] for name in KeyRow._fields[:-1]]


@functools.lru_cache(maxsize=256)
def _page_statements(by_owner: bool, match: tuple[str, ...], order: tuple[tuple[str, bool], ...]):
    """(total, page) for one shape of list request, built once; values are bound per call."""
    conditions = [_keys.c.organization_id == bindparam("organization_id"), _keys.c.revoked_at.is_(None)]
    if by_owner:
        conditions.append(_keys.c.user_id == bindparam("owner_id"))
    for i, column in enumerate(match):
        # Compared folded: through the column's folded form, or the column itself where every value it
        # may hold is its own folded form (`type`: secret | publishable).
        compared = _keys.c[ApiKey.FOLDED.get(column, column)]
        conditions.append(compared.in_(bindparam(f"match_{i}", expanding=True)))
    if by_owner or match:
        total = select(func.count()).select_from(_keys).where(*conditions).scalar_subquery()
    else:  # the whole live collection: its size is kept on the organization
        orgs = Organization.__table__
        total = select(orgs.c.live_keys).where(orgs.c.id == bindparam("organization_id")).scalar_subquery()
    ordering = [_keys.c[c].desc() if desc else _keys.c[c].asc() for c, desc in order]
    # The tie-breaker runs in the direction of the last sort field, so that a single-field sort either
    # way is one walk of its index (forwards or backwards), not a sort of every matching row.
    tie = _keys.c.pk.desc() if order and order[-1][1] else _keys.c.pk.asc()
    page = (select(*_BILLING_VIEW, total.label("total")).where(*conditions).order_by(*ordering, tie)
            .limit(bindparam("limit")).offset(bindparam("offset")))
    return total, page


def revoke_keys(session: Session, rows: Iterable[ApiKey], *, actor: Actor) -> None:
    """Revoke the live ones among `rows`."""
    now = utcnow()
    for row in rows:
        if row.revoked_at is None:
            row.revoked_at = row.updated_at = now
            _count_live(session, row.organization_id, -1)
            _audit(session, actor, "key.revoked", "api_key", row.id)
    session.flush()


def spend_credits(session: Session, credential: Credential, cost: int, now: datetime, *,
                  actor: Actor) -> tuple[bool, int | None]:
    """Spend `cost` of the key's credits, topping them up first when a refill is due: (spent, what is left).

    Each step is one conditional UPDATE, so racing verifies (other workers' too) never spend one credit
    twice nor refill twice: PostgreSQL re-checks a condition on the row it waited for, SQLite runs one
    writer at a time. Spending the last credit records `key.credits_exhausted`."""
    pk, keys_table = _keys.c.pk == credential.key_pk, cast(Table, _keys)
    # Asked of what the lookup read first (keyhouse.credits, the one statement of the rule), so that a spend
    # with no refill due runs one statement; a stale read only ever sees an older refill, never a newer one.
    if credits.refill_due(credential.credits_refill_amount, credential.credits_refill_seconds,
                          credential.credits_refilled_at, now):
        due_before = now - timedelta(seconds=credential.credits_refill_seconds or 0)
        session.execute(update(keys_table).where(pk, _keys.c.credits_refilled_at <= due_before,
                                            _keys.c.credits_refill_amount.is_not(None))
                        .values(credits_remaining=_keys.c.credits_refill_amount, credits_refilled_at=now))
    left = session.execute(update(keys_table).where(pk, _keys.c.credits_remaining >= cost)
                           .values(credits_remaining=_keys.c.credits_remaining - cost)
                           .returning(_keys.c.credits_remaining)).scalar()
    if left is None:  # too few left, or credits taken off the key since it was looked up (then: unlimited)
        left = session.execute(select(_keys.c.credits_remaining).where(pk)).scalar()
        return left is None, left
    if left == 0:
        _audit(session, actor, "key.credits_exhausted", "api_key", credential.key_id)
    return True, left


def touch_keys(session: Session, last_used: dict[int, datetime]) -> None:
    """Record last uses gathered in memory; never moves a time backwards."""
    for key_pk, at in last_used.items():
        session.execute(
            update(ApiKey).where(ApiKey.pk == key_pk, or_(ApiKey.last_used_at.is_(None), ApiKey.last_used_at < at))
            .values(last_used_at=at)
        )


# ------------------------------------------------------------------ traffic-filter rulesets

def count_rulesets(session: Session, organization_id: str) -> int:
    return _count_under_lock(session, organization_id, Ruleset)


def _count_under_lock(session: Session, organization_id: str, model: type[Ruleset] | type[PlatformApi]) -> int:
    """How many rows of `model` the organization holds, with its row locked until the transaction ends, so
    that two creates cannot both pass a limit (SQLite's write transactions are serialized anyway)."""
    session.execute(select(Organization.id).where(Organization.id == organization_id).with_for_update())
    return session.scalar(select(func.count()).select_from(model)
                          .where(model.organization_id == organization_id)) or 0


def insert_ruleset(session: Session, organization_id: str, *, actor: Actor, **fields) -> Ruleset:
    now = utcnow()
    ruleset = Ruleset(organization_id=organization_id, created_at=now, updated_at=now, **fields)
    session.add(ruleset)
    session.flush()
    _audit(session, actor, "ruleset.created", "ruleset", ruleset.id)
    return ruleset


def update_ruleset(session: Session, ruleset: Ruleset, *, actor: Actor, **fields) -> None:
    changes = _update(session, ruleset, fields)
    _audit(session, actor, "ruleset.updated", "ruleset", ruleset.id, changes=changes)


def rulesets_of(session: Session, organization_id: str, region: str | None = None) -> Sequence[Ruleset]:
    query = select(Ruleset).where(Ruleset.organization_id == organization_id)
    if region is not None:
        query = query.where(Ruleset.region == region)
    return session.scalars(query.order_by(Ruleset.created_at, Ruleset.id)).all()


def get_ruleset(session: Session, organization_id: str, ruleset_id: str) -> Ruleset | None:
    return session.scalars(
        select(Ruleset).where(Ruleset.organization_id == organization_id, Ruleset.id == ruleset_id)
    ).one_or_none()


def delete_ruleset(session: Session, ruleset: Ruleset, *, actor: Actor) -> None:
    session.execute(delete(Association).where(Association.ruleset_id == ruleset.id))
    session.execute(delete(Ruleset).where(Ruleset.id == ruleset.id))
    _audit(session, actor, "ruleset.deleted", "ruleset", ruleset.id)


def associations_of(session: Session, ruleset_ids: Sequence[str]) -> dict[str, list[Association]]:
    found: dict[str, list[Association]] = {rid: [] for rid in ruleset_ids}
    rows = session.scalars(
        select(Association).where(Association.ruleset_id.in_(list(ruleset_ids))).order_by(Association.pk)
    )
    for row in rows:
        found[row.ruleset_id].append(row)
    return found


def add_association(session: Session, ruleset: Ruleset, entity_type: str, entity_id: str, *, actor: Actor) -> bool:
    """True when made, False when it already existed (a race with a twin request included)."""
    exists = select(Association.pk).where(Association.ruleset_id == ruleset.id, Association.entity_type == entity_type,
                                          Association.entity_id == entity_id)
    if session.scalar(exists) is not None:
        return False
    try:
        with session.begin_nested():
            session.add(Association(ruleset_id=ruleset.id, organization_id=ruleset.organization_id,
                                    entity_type=entity_type, entity_id=entity_id))
    except IntegrityError:
        return False
    _audit(session, actor, "association.created", "association", f"{ruleset.id}/{entity_type}/{entity_id}")
    return True


def remove_association(session: Session, ruleset: Ruleset, entity_type: str, entity_id: str, *, actor: Actor) -> bool:
    done = cast(CursorResult, session.execute(  # a DELETE's result is a cursor's: it counts the rows
        delete(Association).where(Association.ruleset_id == ruleset.id, Association.entity_type == entity_type,
                                  Association.entity_id == entity_id)
    ))
    if done.rowcount == 0:
        return False
    _audit(session, actor, "association.deleted", "association", f"{ruleset.id}/{entity_type}/{entity_id}")
    return True


def rulesets_of_entity(session: Session, organization_id: str, entity_type: str, entity_id: str) -> Sequence[Ruleset]:
    return session.scalars(
        select(Ruleset).join(Association, Association.ruleset_id == Ruleset.id)
        .where(Association.organization_id == organization_id, Association.entity_type == entity_type,
               Association.entity_id == entity_id)
        .order_by(Ruleset.created_at, Ruleset.id)
    ).all()


# ------------------------------------------------------------------ the organizations' own APIs

def platform_apis(session: Session, organization_id: str) -> Sequence[PlatformApi]:
    return session.scalars(select(PlatformApi).where(PlatformApi.organization_id == organization_id)
                           .order_by(PlatformApi.name)).all()


def platform_api(session: Session, organization_id: str, name: str, *, for_update: bool = False) -> PlatformApi | None:
    query = select(PlatformApi).where(PlatformApi.organization_id == organization_id, PlatformApi.name == name)
    return session.scalars(query.with_for_update() if for_update else query).one_or_none()


_PLATFORM_APIS = PlatformApi.__table__
_DEFINITION = select(_PLATFORM_APIS.c.permissions, _PLATFORM_APIS.c.groups).where(
    _PLATFORM_APIS.c.organization_id == bindparam("organization_id"), _PLATFORM_APIS.c.name == bindparam("name"))


@one_statement
def platform_definitions(db: Session | Connection, organization_id: str, names: Iterable[str]) -> dict:
    """name -> (permissions, groups) of the organization's APIs among `names` (verify asks for a few)."""
    wanted = sorted(set(names))
    if not wanted:
        return {}
    rows = db.execute(select(_PLATFORM_APIS.c.name, _PLATFORM_APIS.c.permissions, _PLATFORM_APIS.c.groups).where(
        _PLATFORM_APIS.c.organization_id == organization_id, _PLATFORM_APIS.c.name.in_(wanted)))
    return {name: (permissions, groups) for name, permissions, groups in rows}


def strip_platform_permissions(session: Session, organization_id: str, api: str,
                               keep: Callable[[list[str]], list[str]],
                               keep_acl: Callable[[list[dict], Callable[[list[str]], list[str]]], list[dict]]) -> int:
    """Apply `keep` to the permissions of the organization's keys that name `api` (and, through `keep_acl`,
    to their billing ACLs): what an API no longer declares, no key keeps. How many keys changed."""
    changed = 0
    named = ApiKey.permissions.cast(Text).like(f'%"{api}:%')
    for row in session.scalars(select(ApiKey).where(ApiKey.organization_id == organization_id, named)):
        permissions = keep(list(row.permissions))
        if permissions == row.permissions:
            continue
        row.permissions = permissions
        if row.acl is not None:
            row.acl = keep_acl(row.acl, keep)
        changed += 1
    session.flush()
    return changed


def count_platform_apis(session: Session, organization_id: str) -> int:
    return _count_under_lock(session, organization_id, PlatformApi)


def declare_platform_api(session: Session, organization_id: str, name: str, *, actor: Actor,
                         **definition) -> PlatformApi | None:
    """The new API, or None when the organization declares one of that name already (a race included)."""
    now = utcnow()
    row = PlatformApi(organization_id=organization_id, name=name, created_at=now, updated_at=now, **definition)
    try:
        with session.begin_nested():
            session.add(row)
    except IntegrityError:
        return None
    _audit(session, actor, "api.declared", "api", name)
    return row


def redefine_platform_api(session: Session, row: PlatformApi, *, actor: Actor, **definition) -> None:
    _update(session, row, definition)
    _audit(session, actor, "api.redefined", "api", row.name)


def delete_platform_api(session: Session, row: PlatformApi, *, actor: Actor) -> None:
    session.delete(row)
    session.flush()
    _audit(session, actor, "api.deleted", "api", row.name)


# ------------------------------------------------------------------ audit trail

# What a column is called where people read the trail (the API's name for it, where the two differ).
_SHOWN_AS = {"description": "name", "verify_limit": "rate_limit.limit",
             "verify_window_seconds": "rate_limit.window_seconds", "credits_remaining": "credits.remaining",
             "credits_refill_amount": "credits.refill.amount",
             "credits_refill_seconds": "credits.refill.interval_seconds"}
# Bookkeeping, not something a person changed.
_UNSHOWN = {"credits_refilled_at", "document"}


def _update(session: Session, row: ApiKey | Ruleset | PlatformApi, fields: dict) -> dict:
    """Set the fields of a row and its `updated_at`; what changed, {field: [old, new]}, for the trail (none
    of the fields given here is secret: secrets change through _new_secret)."""
    changes = {}
    for name, value in fields.items():
        old = getattr(row, name)
        if old != value and name not in _UNSHOWN:
            changes[_SHOWN_AS.get(name, name)] = [_plain(old), _plain(value)]
        setattr(row, name, value)
    row.updated_at = utcnow()
    session.flush()
    return changes


def _plain(value: object) -> object:
    return value.isoformat() if isinstance(value, datetime) else value


# ------------------------------------------------------------------ the console's sessions

def start_console_session(session: Session, token_hash: str, csrf_token: str, *, actor: dict, key_pk: int,
                          key_id: str, role: str, secret_version: int, permissions: list,
                          expires_at: datetime) -> None:
    """A person signed in with a key (`actor` is that key). Sessions past their end are swept here."""
    now = utcnow()
    session.execute(delete(ConsoleSession).where(ConsoleSession.expires_at <= now))
    session.add(ConsoleSession(token_hash=token_hash, key_pk=key_pk, organization_id=actor["organization_id"],
                               user_id=actor["actor_user_id"], key_id=key_id, role=role,
                               secret_version=secret_version, permissions=permissions, csrf_token=csrf_token,
                               created_at=now, expires_at=expires_at))
    _audit(session, actor, "console.signed_in", "api_key", key_id)


class NamedSession(NamedTuple):
    """A console session, with the names the person signed in is known by (as they are now)."""

    row: ConsoleSession
    email: str
    key_name: str


def console_session(db: Session, token_hash: str) -> NamedSession | None:
    """The session of a token, while it lasts."""
    found = db.execute(select(ConsoleSession, User.email, ApiKey.description)
                       .join(User, User.id == ConsoleSession.user_id)
                       .join(ApiKey, ApiKey.pk == ConsoleSession.key_pk)
                       .where(ConsoleSession.token_hash == token_hash, ConsoleSession.expires_at > utcnow())).first()
    return NamedSession(*found) if found else None


# How many of a session's latest form submissions are remembered (a form sent again after more than this
# many others is acted on again: its CSRF token still holds, and the session is hours long at most).
SUBMISSIONS_KEPT = 64


def submit_console_form(session: Session, token_hash: str, once: str) -> str | None:
    """Claims a form's one-time token for a session: None when it is new (it is now taken, its outcome to
    come), else where its first submission led ('' while that one is still being acted on)."""
    row = session.scalars(select(ConsoleSession).where(ConsoleSession.token_hash == token_hash)
                          .with_for_update()).one_or_none()
    if row is None:
        return ""
    if once in row.submitted:
        return row.submitted[once]
    kept = list(row.submitted.items())[-(SUBMISSIONS_KEPT - 1):]
    row.submitted = {**dict(kept), once: ""}
    return None


def settle_console_form(session: Session, token_hash: str, once: str, outcome: str | None) -> None:
    """Where a claimed form's submission led; None (it was refused) lets the same form be sent again."""
    row = session.scalars(select(ConsoleSession).where(ConsoleSession.token_hash == token_hash)
                          .with_for_update()).one_or_none()
    if row is not None and once in row.submitted:
        submitted = dict(row.submitted)
        if outcome is None:
            del submitted[once]
        else:
            submitted[once] = outcome
        row.submitted = submitted


def hold_reveal(session: Session, token_hash: str, reveal_id: str, reveal: dict) -> None:
    """Keeps a sealed secret for the session's one view of it."""
    row = session.scalars(select(ConsoleSession).where(ConsoleSession.token_hash == token_hash)
                          .with_for_update()).one()
    row.reveals = {**row.reveals, reveal_id: reveal}


def take_reveal(session: Session, token_hash: str, reveal_id: str) -> dict | None:
    """A sealed secret, gone from the store as it is handed out: it is shown once."""
    row = session.scalars(select(ConsoleSession).where(ConsoleSession.token_hash == token_hash)
                          .with_for_update()).one_or_none()
    if row is None or reveal_id not in row.reveals:
        return None
    reveals = dict(row.reveals)
    reveal = reveals.pop(reveal_id)
    row.reveals = reveals
    return reveal


def end_console_session(session: Session, token_hash: str, *, actor: Actor) -> None:
    """A session ended: signed out (`actor`, recorded), or found dead with its key (None, not recorded)."""
    ended = cast(CursorResult, session.execute(delete(ConsoleSession).where(ConsoleSession.token_hash == token_hash)))
    if ended.rowcount and actor is not None:
        _audit(session, actor, "console.signed_out", "api_key", actor["actor_key_id"])


def key_looked_up(session: Session, organization_id: str, key_id: str, *, actor: Actor) -> ApiKey | None:
    """The live key a secret was found to belong to, its finding recorded (the secret is no part of it)."""
    row = get_key(session, organization_id, key_id)
    if row is not None:
        _audit(session, actor, "key.looked_up", "api_key", key_id)
    return row


def token_issued(session: Session, *, actor: Actor, key_id: str) -> None:
    """A token was made from a key: nothing is stored but the trail's event."""
    _audit(session, actor, "token.issued", "api_key", key_id)


def _audit(session: Session, actor: Actor, action: str, target_type: str, target_id: str,
           detail: str | None = None, changes: dict | None = None) -> None:
    if actor is None:
        return
    if action in FEED_ACTIONS:
        # The change feed serves these in cursor (id) order, so they must commit in it: the organization's
        # row stays locked from before the event takes its id until the transaction ends, and the next
        # change of the organization takes its id only then (SQLite runs one writer at a time anyway).
        session.execute(select(Organization.id).where(Organization.id == actor["organization_id"])
                        .with_for_update())
    session.add(AuditEvent(**actor, action=action, target_type=target_type, target_id=target_id, detail=detail,
                           changes=changes or None, at=utcnow()))
    if action in FEED_ACTIONS:
        session.flush()
        if session.get_bind().dialect.name == "postgresql":  # wakes the feed's long-polls when this commits
            session.execute(select(func.pg_notify(CHANGES_CHANNEL, actor["organization_id"])))


# ------------------------------------------------------------------ the change feed

# What may change a verdict: the audit events the change feed serves (`GET /keys/changes`), as its
# contract lists them.
FEED_ACTIONS = frozenset(spec.schema(spec.document(), "KeyChange")["properties"]["action"]["enum"])
CHANGES_CHANNEL = "keyhouse_changes"  # PostgreSQL's NOTIFY channel; the payload is the organization's id

_events = AuditEvent.__table__
_IN_FEED = _events.c.action.in_(sorted(FEED_ACTIONS))
_CHANGES = (select(_events.c.id, _events.c.at, _events.c.action, _events.c.target_type, _events.c.target_id)
            # A cursor may be any 18 digits (the spec's pattern): compared as a bigint, so that one beyond
            # the id column's range finds nothing (and is gone, below) instead of failing.
            .where(_events.c.organization_id == bindparam("organization_id"),
                   _events.c.id > bindparam("after", type_=BigInteger), _IN_FEED)
            .order_by(_events.c.id).limit(bindparam("limit")))
# A member's feed: the changes to their own keys, and to the organization's APIs (which they cannot see
# but whose changes may change verdicts on their keys).
_CHANGES_OF_USER = _CHANGES.where(or_(
    _events.c.target_type != "api_key",
    select(_keys.c.pk).where(_keys.c.organization_id == _events.c.organization_id,
                             _keys.c.id == _events.c.target_id, _keys.c.user_id == bindparam("user_id")).exists()))
_LATEST_CHANGE = select(func.max(_events.c.id)).where(_events.c.organization_id == bindparam("organization_id"),
                                                      _IN_FEED)


class Changes(NamedTuple):
    cursor: int  # of the last change in `rows`, or the one asked after
    rows: list  # (id, at, action, target_type, target_id), oldest first
    gone: bool  # the cursor is one the feed no longer serves (too old) or never did


@one_statement
def changes_after(db: Session | Connection, organization_id: str, after: int | None, limit: int,
                  oldest: datetime, user_id: str | None = None) -> Changes:
    """The organization's changes after cursor `after` (None: none, and the latest cursor), at most `limit`;
    with `user_id`, only those to that user's keys (and to the organization's APIs).

    Gone when the first change after the cursor is older than `oldest` (the feed keeps what came since),
    or when the cursor is beyond the organization's latest (another database's, or made up)."""
    if after is None:
        return Changes(db.execute(_LATEST_CHANGE, {"organization_id": organization_id}).scalar() or 0, [], False)
    values = {"organization_id": organization_id, "after": after, "limit": limit}
    rows = list(db.execute(_CHANGES, values) if user_id is None
                else db.execute(_CHANGES_OF_USER, {**values, "user_id": user_id}))
    if rows:
        return Changes(rows[-1][0], rows, rows[0][1] < oldest)
    latest = db.execute(_LATEST_CHANGE, {"organization_id": organization_id}).scalar() or 0
    return Changes(after, [], after > latest)


def insert_events(session: Session, events: Sequence[dict]) -> None:
    if events:
        session.add_all(AuditEvent(**event) for event in events)


class NamedEvent(NamedTuple):
    """An event of the trail, with the names people know its actor and target by (as they are now)."""

    event: AuditEvent
    actor_email: str | None
    actor_key_name: str | None
    target_name: str | None


def page_events(session: Session, organization_id: str, limit: int, offset: int, *,
                actions: Sequence[str] | None = None,
                target_id: str | None = None) -> tuple[int, list[NamedEvent]]:
    """(total, one page) of the organization's audit trail, newest first, of some actions or one target."""
    where = [AuditEvent.organization_id == organization_id]
    if actions:
        where.append(AuditEvent.action.in_(actions))
    if target_id is not None:
        where.append(AuditEvent.target_id == target_id)
    total = session.scalar(select(func.count()).select_from(AuditEvent).where(*where))
    if not limit:
        return total or 0, []
    actor_key, target_key = aliased(ApiKey), aliased(ApiKey)
    page = (select(AuditEvent, User.email, actor_key.description, target_key.description).where(*where)
            .outerjoin(User, User.id == AuditEvent.actor_user_id)
            .outerjoin(actor_key, (actor_key.organization_id == AuditEvent.organization_id)
                       & (actor_key.id == AuditEvent.actor_key_id))
            .outerjoin(target_key, (target_key.organization_id == AuditEvent.organization_id)
                       & (target_key.id == AuditEvent.target_id) & (AuditEvent.target_type == "api_key"))
            .order_by(AuditEvent.id.desc()).limit(limit).offset(offset))
    return total or 0, [NamedEvent(*row) for row in session.execute(page)]
