"""Signing in to the console: a key exchanged for a session, held by the browser as a cookie.

The cookie carries a random token and nothing else: HttpOnly (no script reads it), SameSite=Strict (no
other site's page sends it), Secure when the console is reached over TLS, and no longer-lived than the
session. The store keeps only the token's SHA-256 (keyhouse.store.queries), so a copy of the database
signs no one in. The key a person signs in with is never stored, in the browser or anywhere else.

Every form a session posts carries its CSRF token (the synchronizer pattern: a random value kept with the
session, compared in constant time); a POST from another origin is refused before that. Both are written
here rather than taken from a library: the ones for Starlette read the token from a header only, and
the console's forms must work without JavaScript.
"""

from __future__ import annotations

import hashlib
import hmac
import secrets
from dataclasses import dataclass
from datetime import timedelta

from starlette.requests import Request
from starlette.responses import Response

from .. import runtime
from ..auth import Principal, client_ip, sign_in, signed_in
from ..errors import ApiError
from ..store import queries
from ..store.models import utcnow

COOKIE = "keyhouse_console"


def _hash(token: str) -> str:
    return hashlib.sha256(token.encode()).hexdigest()


@dataclass(frozen=True)
class Session:
    token_hash: str
    csrf_token: str
    me: Principal


async def open_session(request: Request, presented: str, response: Response) -> None:
    """Signs in with `presented` (refused as a request with it would be) and sets the session's cookie."""
    rt = runtime.current()
    me = await sign_in(rt, presented, client_ip(request.scope))
    token, lifetime = secrets.token_urlsafe(32), rt.settings.console_session_seconds
    with rt.store.session() as s:
        queries.start_console_session(s, _hash(token), secrets.token_urlsafe(32), actor=me.actor(),
                                      key_pk=me.key_pk, key_id=me.key_id, role=me.role,
                                      secret_version=me.secret_version, permissions=list(me.permissions),
                                      expires_at=utcnow() + timedelta(seconds=lifetime))
    response.set_cookie(COOKIE, token, max_age=lifetime, path="/console", httponly=True, samesite="strict",
                        secure=request.url.scheme == "https")


async def current_session(request: Request) -> Session | None:
    """The request's session, while it lasts and its key is valid; None when signed out.

    A session whose key was revoked, expired or rerolled past its grace is ended here (the refusal is
    recorded as a request's would be), so the next page asks to sign in again."""
    token = request.cookies.get(COOKIE)
    if not token:
        return None
    rt = runtime.current()
    with rt.store.reading() as s:
        row = queries.console_session(s, _hash(token))
        if row is None:
            return None
        found = (row.organization_id, row.key_id, row.secret_version, list(row.permissions), row.csrf_token)
    organization_id, key_id, version, permissions, csrf = found
    try:
        me = await signed_in(rt, organization_id, key_id, version, permissions, client_ip(request.scope),
                             f"console {request.method} {request.url.path}")
    except ApiError as refused:
        if refused.kind != "unauthorized":
            raise  # an address the key is not allowed from: refused, the session kept
        with rt.store.session() as s:
            queries.end_console_session(s, _hash(token), actor=None)
        return None
    return Session(_hash(token), csrf, me)


def close_session(session: Session, response: Response) -> None:
    with runtime.current().store.session() as s:
        queries.end_console_session(s, session.token_hash, actor=session.me.actor())
    response.delete_cookie(COOKIE, path="/console", httponly=True, samesite="strict")


def same_origin(request: Request) -> bool:
    """Whether a POST comes from the console's own pages: browsers say where a request comes from in
    `Sec-Fetch-Site` (and `Origin`); a request that says neither is not a browser's cross-site one."""
    site = request.headers.get("sec-fetch-site")
    if site is not None and site not in ("same-origin", "none"):
        return False
    origin = request.headers.get("origin")
    return origin is None or origin == f"{request.url.scheme}://{request.url.netloc}"


def csrf_ok(session: Session, sent: object) -> bool:
    return isinstance(sent, str) and hmac.compare_digest(sent.encode(), session.csrf_token.encode())
