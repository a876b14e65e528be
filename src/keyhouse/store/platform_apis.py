"""The APIs an organization declares: what their keys may hold."""

from __future__ import annotations

from collections.abc import Callable, Iterable, Sequence

from sqlalchemy import Connection, Text, bindparam, select
from sqlalchemy.exc import IntegrityError
from sqlalchemy.orm import Session

from .models import ApiKey, PlatformApi, utcnow
from .organizations import count_under_lock
from .session import one_statement
from .trail import Actor, record, update_row


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
def definitions(db: Session | Connection, organization_id: str, names: Iterable[str]) -> dict:
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
    return count_under_lock(session, organization_id, PlatformApi)


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
    record(session, actor, "api.declared", "api", name)
    return row


def redefine_platform_api(session: Session, row: PlatformApi, *, actor: Actor, **definition) -> None:
    update_row(session, row, definition)
    record(session, actor, "api.redefined", "api", row.name)


def delete_platform_api(session: Session, row: PlatformApi, *, actor: Actor) -> None:
    session.delete(row)
    session.flush()
    record(session, actor, "api.deleted", "api", row.name)
