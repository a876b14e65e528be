"""Rotation: `POST /keys/{key_id}/reroll` gives a key a new secret, and the old one a grace window."""

from __future__ import annotations

from datetime import timedelta

from ..auth import principal
from ..runtime import Runtime
from ..store import api_keys
from .common import iso_z, new_secret, visible_key


def reroll_key(key_id: str, body: dict, token_info: dict, *, rt: Runtime):
    me = principal(token_info)
    with rt.store.session() as s:
        row = visible_key(s, me, key_id, for_update=True)
        plaintext, hashed = new_secret(rt)
        until = api_keys.reroll_key(s, hashed, row, timedelta(seconds=body["grace_period_seconds"]),
                                    actor=me.actor())
        return {"id": row.id, "key": plaintext, "previous_secret_valid_until": iso_z(until)}, 201
