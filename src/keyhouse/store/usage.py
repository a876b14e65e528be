"""Usage: the verdicts on each key counted per minute, hour and day and per outcome, the same summed per
organization, and the addresses each key was presented from.

The recorder gathers verdicts in memory and hands them here in batches (`count_verdicts`): one upsert per
row, adding to its count, so that every worker of every host adds to the same rows and no count is lost or
doubled. Rows are written in key order, so two hosts flushing the same keys never deadlock.
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Iterable, Mapping
from datetime import datetime, timedelta
from typing import NamedTuple, cast

from sqlalchemy import CursorResult, Table, delete, func, select
from sqlalchemy.dialects import postgresql, sqlite
from sqlalchemy.orm import Session

from .models import ApiKey, KeyAddress, KeyUsage, OrganizationUsage

_key_usage, _organization_usage, _addresses = (cast(Table, model.__table__)
                                               for model in (KeyUsage, OrganizationUsage, KeyAddress))
GRANULARITIES = ("minute", "hour", "day")
# How long each granularity's rows are kept: minutes for two days, hours for 90; days for the
# configured retention (KEYHOUSE_USAGE_RETENTION_DAYS), addresses as long as days.
KEPT = {"minute": timedelta(days=2), "hour": timedelta(days=90)}
PRUNE_BATCH = 1000


class Verdict(NamedTuple):
    """A verdict as counted: which key, of which organization, what it was, in which minute. (The recorder
    counts plain tuples of these four, equal to these: no class is built per request.)"""

    key_pk: int
    organization_id: str
    outcome: str
    minute: datetime


def truncate(moment: datetime, granularity: str) -> datetime:
    """The start of the minute, hour or day (UTC) that `moment` falls in."""
    if granularity == "minute":
        return moment.replace(second=0, microsecond=0)
    if granularity == "hour":
        return moment.replace(minute=0, second=0, microsecond=0)
    return moment.replace(hour=0, minute=0, second=0, microsecond=0)


def _upsert(session: Session, table: Table, keys: list[str], rows: list[dict], later: tuple[str, ...] = ()) -> None:
    """Inserts the rows, or adds each one's `count` to the row already there (and keeps the later of the
    columns in `later`). One statement, executed for every row (compiled once and cached: a statement of
    many rows' VALUES was compiled anew each flush, six times the cost)."""
    if not rows:
        return
    on_postgresql = session.get_bind().dialect.name == "postgresql"
    statement = (postgresql.insert if on_postgresql else sqlite.insert)(table)
    latest = func.greatest if on_postgresql else func.max  # SQLite's max() of two arguments is scalar
    set_ = {"count": table.c.count + statement.excluded.count,
            **{name: latest(table.c[name], statement.excluded[name]) for name in later}}
    session.execute(statement.on_conflict_do_update(index_elements=keys, set_=set_), rows)


def count_verdicts(session: Session, verdicts: Mapping[tuple, int],
                   addresses: Mapping[tuple[int, str], tuple[int, datetime, datetime]]) -> None:
    """Adds the verdicts ({Verdict or its plain tuple: how many}) to their keys' and organizations' rows of
    every granularity, and the addresses ({(key, ip): (verdicts, first seen, last seen)}) to their keys'."""
    per_key: Counter = Counter()
    per_organization: Counter = Counter()
    for (key_pk, organization_id, outcome, minute), n in verdicts.items():
        for granularity in GRANULARITIES:
            start = truncate(minute, granularity)
            per_key[key_pk, granularity, start, outcome] += n
            per_organization[organization_id, granularity, start, outcome] += n
    _upsert(session, _key_usage, ["key_pk", "granularity", "start", "outcome"],
            [{"key_pk": k, "granularity": g, "start": s, "outcome": o, "count": n}
             for (k, g, s, o), n in sorted(per_key.items())])
    _upsert(session, _organization_usage, ["organization_id", "granularity", "start", "outcome"],
            [{"organization_id": org, "granularity": g, "start": s, "outcome": o, "count": n}
             for (org, g, s, o), n in sorted(per_organization.items())])
    _upsert(session, _addresses, ["key_pk", "ip"],
            [{"key_pk": k, "ip": ip, "count": n, "first_seen_at": first, "last_seen_at": last}
             for (k, ip), (n, first, last) in sorted(addresses.items())], later=("last_seen_at",))


class Bucket(NamedTuple):
    start: datetime
    outcome: str
    verdicts: int


def key_buckets(session: Session, key_pks: Iterable[int], granularity: str, since: datetime,
                until: datetime) -> dict[int, list[Bucket]]:
    """{key: its buckets in [since, until), oldest first}, for the keys that have any."""
    rows = session.execute(
        select(KeyUsage.key_pk, KeyUsage.start, KeyUsage.outcome, KeyUsage.count)
        .where(KeyUsage.key_pk.in_(list(key_pks)), KeyUsage.granularity == granularity,
               KeyUsage.start >= since, KeyUsage.start < until)
        .order_by(KeyUsage.key_pk, KeyUsage.start, KeyUsage.outcome))
    found: dict[int, list[Bucket]] = {}
    for key_pk, start, outcome, count in rows:
        found.setdefault(key_pk, []).append(Bucket(start, outcome, count))
    return found


class Report(NamedTuple):
    keys: int  # how many keys were chosen
    total: list[Bucket]  # their buckets summed
    page: list[tuple[str, list[Bucket]]]  # (key id, its buckets) of a page of them, oldest key first


def report(session: Session, organization_id: str, granularity: str, since: datetime, until: datetime, *,
           user_id: str | None, owner_id: str | None, key_ids: list[str] | None, limit: int,
           offset: int) -> Report:
    """The usage of the organization's keys (revoked ones too) named by `key_ids`, or else of `owner_id`, or
    else all of them; of `user_id`'s only, when given (a member's)."""
    where = [ApiKey.organization_id == organization_id]
    if user_id is not None:
        where.append(ApiKey.user_id == user_id)
    if key_ids is not None:
        where.append(ApiKey.id.in_(key_ids))
    elif owner_id is not None:
        where.append(ApiKey.owner_id == owner_id)
    if len(where) == 1:  # every key of the organization: its own rows, however many keys it has
        total = organization_buckets(session, organization_id, granularity, since, until)
    else:
        summed = func.sum(KeyUsage.count)
        total = [Bucket(start, outcome, int(count)) for start, outcome, count in session.execute(
            select(KeyUsage.start, KeyUsage.outcome, summed)
            .where(KeyUsage.key_pk.in_(select(ApiKey.pk).where(*where)), KeyUsage.granularity == granularity,
                   KeyUsage.start >= since, KeyUsage.start < until)
            .group_by(KeyUsage.start, KeyUsage.outcome).order_by(KeyUsage.start, KeyUsage.outcome))]
    chosen = session.scalar(select(func.count()).select_from(ApiKey).where(*where)) or 0
    # Oldest first. Named keys or an owner's are few: found by their index and sorted by pk (the order they
    # were made in). By creation time, SQLite's planner would walk the organization's keys in that order
    # instead, every one of a million (500 ms). All the organization's (or a member's) are walked so.
    order = (ApiKey.pk,) if key_ids is not None or owner_id is not None else (ApiKey.created_at, ApiKey.pk)
    page = session.execute(select(ApiKey.pk, ApiKey.id).where(*where).order_by(*order)
                           .limit(limit).offset(offset)).all() if limit else []
    buckets = key_buckets(session, [pk for pk, _ in page], granularity, since, until)
    return Report(chosen, total, [(key_id, buckets.get(pk, [])) for pk, key_id in page])


def organization_buckets(session: Session, organization_id: str, granularity: str, since: datetime,
                         until: datetime) -> list[Bucket]:
    """All the organization's keys' buckets summed, oldest first."""
    rows = session.execute(
        select(OrganizationUsage.start, OrganizationUsage.outcome, OrganizationUsage.count)
        .where(OrganizationUsage.organization_id == organization_id, OrganizationUsage.granularity == granularity,
               OrganizationUsage.start >= since, OrganizationUsage.start < until)
        .order_by(OrganizationUsage.start, OrganizationUsage.outcome))
    return [Bucket(*row) for row in rows]


def addresses(session: Session, key_pk: int, limit: int) -> list[KeyAddress]:
    """The addresses a key was last presented from, the latest first."""
    return list(session.scalars(select(KeyAddress).where(KeyAddress.key_pk == key_pk)
                                .order_by(KeyAddress.last_seen_at.desc(), KeyAddress.ip).limit(limit)))


def prune(session: Session, now: datetime, day_retention: timedelta) -> int:
    """Deletes, of each granularity, the rows older than it is kept at the PRUNE_BATCH oldest moments (so
    each transaction stays small), and the addresses not seen within the retention; how many it deleted."""
    deleted = 0
    for granularity in GRANULARITIES:
        before = now - min(KEPT.get(granularity, day_retention), day_retention)
        for table in (KeyUsage, OrganizationUsage):
            oldest = (select(table.start).where(table.granularity == granularity, table.start < before)
                      .order_by(table.start).limit(1).offset(PRUNE_BATCH - 1))
            cutoff = session.scalar(oldest)
            bound = before if cutoff is None else min(before, cutoff + timedelta(microseconds=1))
            deleted += _deleted(session, delete(table).where(table.granularity == granularity, table.start < bound))
    return deleted + _deleted(session, delete(KeyAddress).where(KeyAddress.last_seen_at < now - day_retention))


def _deleted(session: Session, statement) -> int:  # type: ignore[no-untyped-def]
    return cast(CursorResult, session.execute(statement)).rowcount or 0
