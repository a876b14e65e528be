"""Keys: issued, changed, rerolled, revoked, paged, and their credits spent.

The store is handed a new secret's hash and hint (keyhouse.keys makes them); it never sees a plaintext.
Every mutation records its audit event in its own transaction (store.trail).
"""

from __future__ import annotations

import functools
import random
from collections import Counter
from collections.abc import Iterable, Sequence
from datetime import datetime, timedelta
from typing import NamedTuple, cast

from sqlalchemy import Connection, Table, bindparam, delete, func, insert, or_, select, update
from sqlalchemy.dialects import postgresql, sqlite
from sqlalchemy.exc import IntegrityError
from sqlalchemy.orm import Session

from .credentials import Credential
from .models import ApiKey, LiveKeyCount, RetiredSecret, fold, utcnow
from .session import one_statement
from .trail import Actor, record, record_all, update_row

_keys, _counts = ApiKey.__table__, LiveKeyCount.__table__
# Rows an organization's live keys are counted in (models.LiveKeyCount): creates and revokes of one
# organization wait for each other only when they pick the same.
LIVE_KEY_SHARDS = 16


class Hashed(NamedTuple):
    """A new secret as the store keeps it: its keyed hash, and the hint people recognise it by."""

    hash: str
    hint: str


def issue_key(session: Session, new: Hashed, *, actor: Actor, organization_id: str, user_id: str,
              description: str, permissions: list | None = None, **fields) -> ApiKey:
    """A new key row, for the secret whose hash and hint are `new`."""
    now = utcnow()
    row = ApiKey(key_hash=new.hash, key_hint=new.hint, organization_id=organization_id, user_id=user_id,
                 description=description, permissions=permissions if permissions is not None else ["*"],
                 created_at=now, updated_at=now, **fields)
    session.add(row)
    session.flush()
    _count_live(session, organization_id, +1)
    record(session, actor, "key.created", "api_key", row.id)
    return row


def _count_live(session: Session, organization_id: str, delta: int) -> None:
    """Adds `delta` to the organization's live keys, in one of its LIVE_KEY_SHARDS counting rows: one per unit
    of work, chosen at random (two units of work that each took two rows, in other orders, could deadlock)."""
    shard = session.info.setdefault("live_key_shard", random.randrange(LIVE_KEY_SHARDS))  # noqa: S311 - spread
    upsert = (postgresql.insert if session.get_bind().dialect.name == "postgresql" else sqlite.insert)(LiveKeyCount)
    session.execute(upsert.values(organization_id=organization_id, shard=shard, live=delta).on_conflict_do_update(
        index_elements=["organization_id", "shard"], set_={"live": LiveKeyCount.live + delta}))


def recount_live_keys(session: Session, organization_id: str) -> None:
    """Counts the organization's live keys afresh (after keys were written around the store: a test's reset)."""
    session.execute(delete(LiveKeyCount).where(LiveKeyCount.organization_id == organization_id))
    live = session.scalar(select(func.count()).select_from(_keys).where(
        _keys.c.organization_id == organization_id, _keys.c.revoked_at.is_(None)))
    session.add(LiveKeyCount(organization_id=organization_id, shard=0, live=live or 0))


def insert_keys(session: Session, organization_id: str, rows: Sequence[dict]) -> None:
    """Bulk insert (one multi-row statement per batch) for loading synthetic keys; counted as live. A bulk
    insert runs no ORM events: the folded forms are added here."""
    folded = ApiKey.FOLDED.items()
    session.execute(insert(ApiKey), [{**row, "organization_id": organization_id,
                                      **{f: fold(row.get(column)) for column, f in folded}} for row in rows])
    _count_live(session, organization_id, len(rows))


def try_issue_key(session: Session, new: Hashed, **fields) -> ApiKey | None:
    """issue_key, or None when the key's unique (organization, id) is already taken (a lost race)."""
    try:
        with session.begin_nested():
            return issue_key(session, new, **fields)
    except IntegrityError:
        return None


def reissue_key(session: Session, new: Hashed, row: ApiKey, *, actor: Actor, **fields) -> None:
    """Give a revoked key's id to a new key: new secret, new fields, the old secret dead for good."""
    now = utcnow()
    for name, value in fields.items():
        setattr(row, name, value)
    _new_secret(session, new, row, now, grace=timedelta(0))
    row.revoked_at = row.last_used_at = None
    row.created_at = row.updated_at = now
    session.flush()
    _count_live(session, row.organization_id, +1)
    record(session, actor, "key.created", "api_key", row.id)


def _new_secret(session: Session, new: Hashed, row: ApiKey, now: datetime, grace: timedelta) -> None:
    """Retire the key's secret (accepted for `grace` more, and known as revoked after that) and give it
    a new one. One previous secret at a time: whatever grace an earlier one had left ends now."""
    session.execute(update(RetiredSecret).where(RetiredSecret.key_pk == row.pk, RetiredSecret.valid_until > now)
                    .values(valid_until=now))
    session.add(RetiredSecret(key_hash=row.key_hash, key_pk=row.pk, version=row.secret_version, retired_at=now,
                              valid_until=now + grace))
    row.key_hash, row.key_hint = new.hash, new.hint
    row.secret_version += 1


def update_key(session: Session, row: ApiKey, *, actor: Actor, **fields) -> None:
    changes = update_row(session, row, fields)
    record(session, actor, "key.updated", "api_key", row.id, changes=changes)


def reroll_key(session: Session, new: Hashed, row: ApiKey, grace: timedelta, *, actor: Actor) -> datetime:
    """A new secret for the key; the old one stays valid for `grace` (not at all when it is zero): until when."""
    now = utcnow()
    _new_secret(session, new, row, now, grace)
    row.updated_at = now
    session.flush()
    record(session, actor, "key.rerolled", "api_key", row.id, detail=f"grace {int(grace.total_seconds())}s")
    return now + grace


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


@one_statement
def page_keys(db: Session | Connection, organization_id: str, *, owner_id: str | None,
              match: Sequence[tuple[str, list[str]]], order: Sequence[tuple[str, bool]],
              limit: int, offset: int) -> tuple[int, list[KeyRow]]:
    """(total matching, one page). `match` holds (column, values) conditions, all of which must hold,
    each by any of its values, compared ignoring case (models.fold); `order` is (column, descending) pairs;
    ties always break on the primary key for stable pages. Rows carry the billing view's columns, under
    ApiKey's attribute names.

    One statement: every row of the page carries the total too. Only an empty page asks for it again (a
    change committed between the two shows in the total alone: the page was empty either way)."""
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
    else:  # the whole live collection: its size is kept (_count_live)
        total = (select(func.coalesce(func.sum(_counts.c.live), 0))
                 .where(_counts.c.organization_id == bindparam("organization_id")).scalar_subquery())
    ordering = [_keys.c[c].desc() if desc else _keys.c[c].asc() for c, desc in order]
    # The tie-breaker runs in the direction of the last sort field, so that a single-field sort either
    # way is one walk of its index (forwards or backwards), not a sort of every matching row.
    tie = _keys.c.pk.desc() if order and order[-1][1] else _keys.c.pk.asc()
    page = (select(*_BILLING_VIEW, total.label("total")).where(*conditions).order_by(*ordering, tie)
            .limit(bindparam("limit")).offset(bindparam("offset")))
    return total, page


def revoke_keys(session: Session, rows: Iterable[ApiKey], *, actor: Actor) -> None:
    """Revoke the live ones among `rows`, in one batch of statements however many there are."""
    now = utcnow()
    events: list[tuple[Actor, str, str, str, str | None]] = []
    revoked: Counter[str] = Counter()
    for row in rows:
        if row.revoked_at is None:
            row.revoked_at = row.updated_at = now
            revoked[row.organization_id] += 1
            events.append((actor, "key.revoked", "api_key", row.id, None))
    for organization_id, n in sorted(revoked.items()):
        _count_live(session, organization_id, -n)
    record_all(session, events)


def spend_credits(session: Session, credential: Credential, cost: int, now: datetime, refill_due: bool, *,
                  actor: Actor) -> tuple[bool, int | None]:
    """Spend `cost` of the key's credits, topping them up first when a refill is due: (spent, what is left).

    Each step is one conditional UPDATE, so racing verifies (other workers' too) never spend one credit
    twice nor refill twice: PostgreSQL re-checks a condition on the row it waited for, SQLite runs one
    writer at a time. Spending the last credit records `key.credits_exhausted`."""
    pk, keys_table = _keys.c.pk == credential.key_pk, cast(Table, _keys)
    # `refill_due` is keyhouse.credits' answer of what the lookup read (the one statement of the rule), so
    # that a spend with no refill due runs one statement; a stale read only ever sees an older refill.
    if refill_due:
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
        record(session, actor, "key.credits_exhausted", "api_key", credential.key_id)
    return True, left


def touch_keys(session: Session, last_used: dict[int, datetime]) -> None:
    """Record last uses gathered in memory; never moves a time backwards. In key order, so that hosts
    flushing the same hot keys lock them in one order and never deadlock one another."""
    for key_pk, at in sorted(last_used.items()):
        session.execute(
            update(ApiKey).where(ApiKey.pk == key_pk, or_(ApiKey.last_used_at.is_(None), ApiKey.last_used_at < at))
            .values(last_used_at=at)
        )


def key_looked_up(session: Session, organization_id: str, key_id: str, *, actor: Actor) -> ApiKey | None:
    """The live key a secret was found to belong to, its finding recorded (the secret is no part of it)."""
    row = get_key(session, organization_id, key_id)
    if row is not None:
        record(session, actor, "key.looked_up", "api_key", key_id)
    return row
