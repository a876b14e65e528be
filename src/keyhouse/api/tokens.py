"""Tokens: `POST /auth/tokens` exchanges a key for a short-lived signed token (keyhouse.auth checks it)."""

from __future__ import annotations

from ..auth import issue_token, principal
from ..runtime import Runtime
from ..store import trail


def create_auth_token(body: dict, token_info: dict, *, rt: Runtime):
    me = principal(token_info)
    token = issue_token(rt, me, body["expires_in"])
    with rt.store.session() as s:
        trail.token_issued(s, actor=me.actor(), key_id=me.key_id)
    return {"access_token": token, "token_type": "Bearer", "expires_in": body["expires_in"]}, 201
