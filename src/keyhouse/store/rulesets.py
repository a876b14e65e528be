"""Traffic-filter rulesets and their associations."""

from __future__ import annotations

from collections.abc import Sequence
from typing import cast

from sqlalchemy import CursorResult, delete, select
from sqlalchemy.exc import IntegrityError
from sqlalchemy.orm import Session

from .models import Association, Ruleset, utcnow
from .organizations import count_under_lock
from .trail import Actor, record, update_row


def count_rulesets(session: Session, organization_id: str) -> int:
    return count_under_lock(session, organization_id, Ruleset)

def insert_ruleset(session: Session, organization_id: str, *, actor: Actor, **fields) -> Ruleset:
    now = utcnow()
    ruleset = Ruleset(organization_id=organization_id, created_at=now, updated_at=now, **fields)
    session.add(ruleset)
    session.flush()
    record(session, actor, "ruleset.created", "ruleset", ruleset.id)
    return ruleset


def update_ruleset(session: Session, ruleset: Ruleset, *, actor: Actor, **fields) -> None:
    changes = update_row(session, ruleset, fields)
    record(session, actor, "ruleset.updated", "ruleset", ruleset.id, changes=changes)


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
    record(session, actor, "ruleset.deleted", "ruleset", ruleset.id)


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
    record(session, actor, "association.created", "association", f"{ruleset.id}/{entity_type}/{entity_id}")
    return True


def remove_association(session: Session, ruleset: Ruleset, entity_type: str, entity_id: str, *, actor: Actor) -> bool:
    done = cast(CursorResult, session.execute(  # a DELETE's result is a cursor's: it counts the rows
        delete(Association).where(Association.ruleset_id == ruleset.id, Association.entity_type == entity_type,
                                  Association.entity_id == entity_id)
    ))
    if done.rowcount == 0:
        return False
    record(session, actor, "association.deleted", "association", f"{ruleset.id}/{entity_type}/{entity_id}")
    return True


def rulesets_of_entity(session: Session, organization_id: str, entity_type: str, entity_id: str) -> Sequence[Ruleset]:
    return session.scalars(
        select(Ruleset).join(Association, Association.ruleset_id == Ruleset.id)
        .where(Association.organization_id == organization_id, Association.entity_type == entity_type,
               Association.entity_id == entity_id)
        .order_by(Ruleset.created_at, Ruleset.id)
    ).all()
