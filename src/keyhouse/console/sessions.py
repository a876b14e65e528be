"""Signing in to the console: a key exchanged for a session, held by the browser as a cookie.

The cookie carries a random token and nothing else: HttpOnly (no script reads it), SameSite=Strict (no
other site's page sends it), Secure when the console is reached over TLS, and no longer-lived than the
session. The store keeps only the token's SHA-256 (keyhouse.store.console_sessions), so a copy of the database
signs no one in. The key a person signs in with is never stored, in the browser or anywhere else.

Every form a session posts carries its CSRF token (the synchronizer pattern: a random value kept with the
session, compared in constant time); a POST from another origin is refused before that. Both are written
here rather than taken from a library: the ones for Starlette read the token from a header only, and
the console's forms must work without JavaScript.

Every form also carries a one-time token of its own: a form sent again (a reload of the page a POST
answered, the back button) is answered with where its first submission led, and changes nothing.

A new secret is shown on a page of its own (post/redirect/get), once: until then it is held with the
session, sealed (AES-GCM) under a key derived from the session's cookie token, which only the browser
holds (the store keeps the token's hash). Neither the store alone nor a log line can open it, and the
first view takes it out of the store.
"""

from __future__ import annotations

import base64
import hashlib
import hmac
import secrets
from dataclasses import dataclass
from datetime import timedelta

from cryptography.hazmat.primitives.ciphers.aead import AESGCM
from cryptography.hazmat.primitives.hashes import SHA256
from cryptography.hazmat.primitives.kdf.hkdf import HKDF
from starlette.requests import Request
from starlette.responses import Response

from .. import runtime
from ..auth import Principal, client_ip, sign_in, signed_in
from ..errors import ApiError
from ..store import console_sessions
from ..store.models import utcnow

COOKIE = "keyhouse_console"


def _hash(token: str) -> str:
    return hashlib.sha256(token.encode()).hexdigest()


@dataclass(frozen=True)
class Session:
    token_hash: str
    csrf_token: str
    me: Principal
    email: str  # of the person signed in, and the name of the key they signed in with: who the pages say it is
    key_name: str
    token: str  # the cookie's token, for this request only: it opens what was sealed for this session
    rt: runtime.Runtime  # the app's, which the session's pages act through


async def open_session(request: Request, presented: str, response: Response) -> None:
    """Signs in with `presented` (refused as a request with it would be) and sets the session's cookie."""
    rt = runtime.of(request.scope)
    me = await sign_in(rt, presented, client_ip(request.scope))
    if (current := await current_session(request)) is not None and \
            (current.me.key_id, current.me.secret_version) == (me.key_id, me.secret_version):
        return  # signed in with this key already (the sign-in form sent again): nothing more to open
    token, lifetime = secrets.token_urlsafe(32), rt.settings.console_session_seconds
    with rt.store.session() as s:
        console_sessions.start_console_session(s, _hash(token), secrets.token_urlsafe(32), actor=me.actor(),
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
    rt = runtime.of(request.scope)
    with rt.store.reading() as s:
        named = console_sessions.console_session(s, _hash(token))
        if named is None:
            return None
        row = named.row
        found = (row.organization_id, row.key_id, row.secret_version, list(row.permissions), row.csrf_token)
    organization_id, key_id, version, permissions, csrf = found
    try:
        me = await signed_in(rt, organization_id, key_id, version, permissions, client_ip(request.scope),
                             f"console {request.method} {request.url.path}")
    except ApiError as refused:
        if refused.kind != "unauthorized":
            raise  # an address the key is not allowed from: refused, the session kept
        with rt.store.session() as s:
            console_sessions.end_console_session(s, _hash(token), actor=None)
        return None
    return Session(_hash(token), csrf, me, named.email, named.key_name, token, rt)


def close_session(session: Session, response: Response) -> None:
    with session.rt.store.session() as s:
        console_sessions.end_console_session(s, session.token_hash, actor=session.me.actor())
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


# ------------------------------------------------------------------ forms sent once

async def claim(session: Session, once: str) -> str | None:
    """None when the form with this one-time token is sent for the first time (it is now claimed); else the
    page its first submission led to ('' while that one is still under way)."""
    return await session.rt.store.write(console_sessions.submit_console_form, session.token_hash, once)


async def settle(session: Session, once: str, outcome: str | None) -> None:
    """Where a claimed form led (None: it was refused, and may be sent again)."""
    await session.rt.store.write(console_sessions.settle_console_form, session.token_hash, once, outcome)


# ------------------------------------------------------------------ a new secret, for one view

def _sealing(session: Session) -> AESGCM:
    key = HKDF(algorithm=SHA256(), length=32, salt=None, info=b"keyhouse console reveal").derive(session.token.encode())
    return AESGCM(key)


async def hold_secret(session: Session, secret: str, **shown: str | None) -> str:
    """Holds a new secret, sealed, for its one page; the id of that page. `shown` goes beside it as is."""
    reveal_id, nonce = secrets.token_urlsafe(16), secrets.token_bytes(12)
    sealed = _sealing(session).encrypt(nonce, secret.encode(), reveal_id.encode())
    reveal = {**shown, "sealed": base64.b64encode(nonce + sealed).decode()}
    await session.rt.store.write(console_sessions.hold_reveal, session.token_hash, reveal_id, reveal)
    return reveal_id


async def take_secret(session: Session, reveal_id: str) -> tuple[str, dict] | None:
    """The held secret and what was held beside it, taken out of the store; None once it was shown."""
    reveal = await session.rt.store.write(console_sessions.take_reveal, session.token_hash, reveal_id)
    if reveal is None:
        return None
    raw = base64.b64decode(reveal.pop("sealed"))
    return _sealing(session).decrypt(raw[:12], raw[12:], reveal_id.encode()).decode(), reveal
