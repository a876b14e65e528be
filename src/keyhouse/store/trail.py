"""The audit trail, and the change feed that is part of it.

Every mutation of the store records its event here, in its own transaction: no change can miss the
trail. A mutation made for a request takes `actor`, who is making it (`auth.Principal.actor()`); one made
outside any request (the CLI's bootstrap, a test's setup) passes `actor=None` and records none.
"""

from __future__ import annotations

from collections.abc import Sequence
from datetime import datetime
from typing import NamedTuple

from sqlalchemy import BigInteger, Connection, bindparam, delete, func, or_, select
from sqlalchemy.orm import Session, aliased

from .models import ApiKey, AuditEvent, PlatformApi, Ruleset, User, utcnow
from .session import one_statement

Actor = dict | None  # organization_id, actor_user_id, actor_key_id, ip: the fields of an audit event


# What a column is called where people read the trail (the API's name for it, where the two differ).
_SHOWN_AS = {"description": "name", "verify_limit": "rate_limit.limit",
             "verify_window_seconds": "rate_limit.window_seconds", "credits_remaining": "credits.remaining",
             "credits_refill_amount": "credits.refill.amount",
             "credits_refill_seconds": "credits.refill.interval_seconds"}
# Bookkeeping, not something a person changed.
_UNSHOWN = {"credits_refilled_at", "document"}


def update_row(session: Session, row: ApiKey | Ruleset | PlatformApi, fields: dict) -> dict:
    """Set the fields of a row and its `updated_at`; what changed, {field: [old, new]}, for the trail (none
    of the fields given here is secret: secrets change through api_keys' _new_secret)."""
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


def token_issued(session: Session, *, actor: Actor, key_id: str) -> None:
    """A token was made from a key: nothing is stored but the trail's event."""
    record(session, actor, "token.issued", "api_key", key_id)


def record(session: Session, actor: Actor, action: str, target_type: str, target_id: str,
           detail: str | None = None, changes: dict | None = None) -> None:
    """The audit event of a mutation, in its transaction (none without an actor).

    An event of the change feed takes its place in the feed's order as its transaction commits (the
    database's trigger, migration 0011); whoever must hear of it then (keyhouse.changes, on PostgreSQL)
    sees it flushed here."""
    if actor is None:
        return
    session.add(AuditEvent(**actor, action=action, target_type=target_type, target_id=target_id, detail=detail,
                           changes=changes or None, at=utcnow(), webhook_pending=action in WEBHOOK_EVENTS or None))
    if action in FEED_ACTIONS:
        session.flush()


def record_all(session: Session, events: Sequence[tuple[Actor, str, str, str, str | None]]) -> None:
    """`record` for many events at once ((actor, action, target type, target id, detail) each), written
    together: one round trip for a batch instead of one per event of the feed."""
    now = utcnow()
    session.add_all(AuditEvent(**actor, action=action, target_type=target_type, target_id=target_id, detail=detail,
                               at=now, webhook_pending=action in WEBHOOK_EVENTS or None)
                    for actor, action, target_type, target_id, detail in events if actor is not None)
    session.flush()


# ------------------------------------------------------------------ the change feed

# What may change a verdict: the audit events the change feed serves (`GET /keys/changes`). The contract
# lists them as KeyChange's actions; tests/test_spec.py holds the two lists together.
FEED_ACTIONS = frozenset({"key.revoked", "key.rerolled", "key.updated", "key.credits_exhausted", "key.leaked",
                          "api.redefined", "api.deleted"})

# What webhooks may be told of (the contract's WebhookEvent): each such event is the webhooks' outbox,
# marked pending as it is written (keyhouse.webhooks makes its deliveries).
WEBHOOK_EVENTS = frozenset({"key.created", "key.updated", "key.rerolled", "key.revoked", "key.credits_exhausted",
                            "key.leaked", "api.redefined", "api.deleted"})

_events, _keys = AuditEvent.__table__, ApiKey.__table__
# A change's cursor is its feed_position: numbered as it commits, in the order the organization's changes
# become visible (migration 0011), so that nothing can later appear before a cursor a reader holds. Only
# the feed's actions are numbered (the trigger's list, held to FEED_ACTIONS by tests/test_store.py): null
# for every other event, and for a change whose transaction is still committing.
_position = _events.c.feed_position
_CHANGES = (select(_position, _events.c.at, _events.c.action, _events.c.target_type, _events.c.target_id)
            # A cursor may be any 18 digits (the spec's pattern): compared as a bigint, so that one beyond
            # the column's range finds nothing (and is gone, below) instead of failing.
            .where(_events.c.organization_id == bindparam("organization_id"),
                   _position > bindparam("after", type_=BigInteger))
            .order_by(_position).limit(bindparam("limit")))
# A member's feed: the changes to their own keys, and to the organization's APIs (which they cannot see
# but whose changes may change verdicts on their keys).
_CHANGES_OF_USER = _CHANGES.where(or_(
    _events.c.target_type != "api_key",
    select(_keys.c.pk).where(_keys.c.organization_id == _events.c.organization_id,
                             _keys.c.id == _events.c.target_id, _keys.c.user_id == bindparam("user_id")).exists()))
_LATEST_CHANGE = select(func.max(_position)).where(_events.c.organization_id == bindparam("organization_id"))


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


def prune_events(session: Session, before: datetime, batch: int) -> int:
    """Deletes up to `batch` of the oldest events that happened before `before`; how many it deleted. Small
    batches: each transaction holds few row locks, and writers are never queued behind one big delete."""
    oldest = select(_events.c.id).where(_events.c.at < before).order_by(_events.c.id).limit(batch)
    ids = [row[0] for row in session.execute(oldest)]
    if ids:
        session.execute(delete(AuditEvent).where(AuditEvent.id.in_(ids)))
    return len(ids)


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
