"""The console's sessions: who signed in with which key, the forms they sent, the secrets held for them."""

from __future__ import annotations

from datetime import datetime
from typing import NamedTuple, cast

from sqlalchemy import CursorResult, delete, select
from sqlalchemy.orm import Session

from .models import ApiKey, ConsoleSession, User, utcnow
from .trail import Actor, record


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
    record(session, actor, "console.signed_in", "api_key", key_id)


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
        record(session, actor, "console.signed_out", "api_key", actor["actor_key_id"])
