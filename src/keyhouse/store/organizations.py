"""Organizations and their users."""

from __future__ import annotations

from sqlalchemy import func, select
from sqlalchemy.orm import Session

from .models import Organization, PlatformApi, Ruleset, User, Webhook
from .trail import Actor, record


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


def count_under_lock(session: Session, organization_id: str,
                     model: type[Ruleset] | type[PlatformApi] | type[Webhook]) -> int:
    """How many rows of `model` the organization holds, with its row locked until the transaction ends, so
    that two creates cannot both pass a limit (SQLite's write transactions are serialized anyway)."""
    # FOR NO KEY UPDATE, not FOR UPDATE: it excludes the other writers all the same, but not the key-share
    # locks that inserting a row referring to the organization takes (a key, an event). FOR UPDATE conflicts
    # with those, and two transactions that had each inserted one and then asked for it would deadlock.
    session.execute(select(Organization.id).where(Organization.id == organization_id)
                    .with_for_update(key_share=True))
    return session.scalar(select(func.count()).select_from(model)
                          .where(model.organization_id == organization_id)) or 0


def leak_policy(session: Session, organization_id: str) -> str:
    """What a leak report does to the organization's keys: revoke or notify (models.Organization)."""
    return session.scalar(select(Organization.leak_policy).where(Organization.id == organization_id)) or "revoke"


def set_leak_policy(session: Session, organization_id: str, policy: str, *, actor: Actor) -> None:
    organization = session.get(Organization, organization_id, with_for_update=True)
    if organization is not None and organization.leak_policy != policy:
        changes = {"on_leak": [organization.leak_policy, policy]}
        organization.leak_policy = policy
        record(session, actor, "leak_policy.updated", "organization", organization_id, changes=changes)
