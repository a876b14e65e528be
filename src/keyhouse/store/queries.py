"""Every query keyhouse runs. Handlers pass plain values in and get rows out; no SQL elsewhere."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime
from typing import Sequence

from sqlalchemy import delete, func, select
from sqlalchemy.orm import Session

from .. import keys
from .models import ApiKey, Organization, Ruleset, User, utcnow


@dataclass(frozen=True)
class Credential:
    """What authentication needs to know about a presented key, from one indexed lookup."""

    key_pk: int
    key_id: str
    key_hash: str
    organization_id: str
    user_id: str
    role: str
    type: str
    expires_at: datetime | None
    revoked_at: datetime | None


def credential_by_hash(session: Session, key_hash: str) -> Credential | None:
    row = session.execute(
        select(
            ApiKey.pk, ApiKey.id, ApiKey.key_hash, ApiKey.organization_id, ApiKey.user_id, User.role,
            ApiKey.type, ApiKey.expires_at, ApiKey.revoked_at,
        )
        .join(User, User.id == ApiKey.user_id)
        .where(ApiKey.key_hash == key_hash)
    ).one_or_none()
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

def issue_key(session: Session, secret: bytes, *, organization_id: str, user_id: str, description: str,
              **fields) -> tuple[ApiKey, str]:
    """A new key row and its plaintext, which the caller shows once and drops."""
    new = keys.new(secret)
    now = utcnow()
    row = ApiKey(key_hash=new.hash, key_hint=new.hint, organization_id=organization_id, user_id=user_id,
                 description=description, created_at=now, updated_at=now, **fields)
    session.add(row)
    session.flush()
    return row, new.plaintext


def keys_of_user(session: Session, organization_id: str, user_id: str, *, include_revoked: bool) -> Sequence[ApiKey]:
    query = select(ApiKey).where(ApiKey.organization_id == organization_id, ApiKey.user_id == user_id)
    if not include_revoked:
        query = query.where(ApiKey.revoked_at.is_(None))
    return session.scalars(query.order_by(ApiKey.created_at.desc(), ApiKey.pk.desc())).all()


def get_key(session: Session, organization_id: str, key_id: str) -> ApiKey | None:
    return session.scalars(
        select(ApiKey).where(ApiKey.organization_id == organization_id, ApiKey.id == key_id)
    ).one_or_none()


def page_keys(session: Session, organization_id: str, *, owner_id: str | None,
              match: Sequence[tuple[str, list[str]]], order: Sequence[tuple[str, bool]],
              limit: int, offset: int) -> tuple[int, Sequence[ApiKey]]:
    """(total matching, one page). `match` holds (column, values) conditions, all of which must hold,
    each by any of its values, compared case-insensitively;
    `order` is (column, descending) pairs; ties always break on the primary key for stable pages."""
    conditions = [ApiKey.organization_id == organization_id, ApiKey.revoked_at.is_(None)]
    if owner_id is not None:
        conditions.append(ApiKey.user_id == owner_id)
    for column, values in match:
        conditions.append(func.lower(getattr(ApiKey, column)).in_([v.lower() for v in values]))
    total = session.scalar(select(func.count()).select_from(ApiKey).where(*conditions))
    ordering = [getattr(ApiKey, c).desc() if desc else getattr(ApiKey, c).asc() for c, desc in order]
    rows = session.scalars(
        select(ApiKey).where(*conditions).order_by(*ordering, ApiKey.pk.asc()).limit(limit).offset(offset)
    ).all() if limit else []
    return total or 0, rows


def revoke_key(session: Session, key: ApiKey) -> None:
    if key.revoked_at is None:
        key.revoked_at = key.updated_at = utcnow()
        session.flush()


# ------------------------------------------------------------------ traffic-filter rulesets

def insert_ruleset(session: Session, organization_id: str, **fields) -> Ruleset:
    now = utcnow()
    ruleset = Ruleset(organization_id=organization_id, created_at=now, updated_at=now, **fields)
    session.add(ruleset)
    session.flush()
    return ruleset


def rulesets_of(session: Session, organization_id: str) -> Sequence[Ruleset]:
    return session.scalars(
        select(Ruleset).where(Ruleset.organization_id == organization_id).order_by(Ruleset.created_at, Ruleset.id)
    ).all()


def get_ruleset(session: Session, organization_id: str, ruleset_id: str) -> Ruleset | None:
    return session.scalars(
        select(Ruleset).where(Ruleset.organization_id == organization_id, Ruleset.id == ruleset_id)
    ).one_or_none()


def delete_ruleset(session: Session, ruleset: Ruleset) -> None:
    session.execute(delete(Ruleset).where(Ruleset.id == ruleset.id))
