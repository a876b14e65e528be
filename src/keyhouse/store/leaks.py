"""Leaked keys: the keys whose secrets were found in public, and what each organization's policy does.

Handed the hashes of the reported secrets (keyhouse.keys hashes them; the store never sees a plaintext),
in one transaction: each key found gets `key.leaked` in the trail and the change feed, with where it was
found, and is revoked when its organization's policy says so. A key already revoked is left as it is.
"""

from __future__ import annotations

from collections.abc import Mapping

from sqlalchemy import select
from sqlalchemy.orm import Session

from .api_keys import revoke_keys
from .models import ApiKey, Organization, RetiredSecret
from .trail import record_all


def leaked(session: Session, found_at: Mapping[str, str], ip: str | None) -> set[str]:
    """{secret's hash: where it was found}: the hashes that are a key's secret (its current one, or one
    rerolled away), each live key among them reported (and revoked, by its organization's policy)."""
    hashes = list(found_at)
    current = session.execute(select(ApiKey.key_hash, ApiKey).where(ApiKey.key_hash.in_(hashes))
                              .order_by(ApiKey.pk).with_for_update()).all()
    retired = session.execute(select(RetiredSecret.key_hash, ApiKey).join(ApiKey, ApiKey.pk == RetiredSecret.key_pk)
                              .where(RetiredSecret.key_hash.in_(hashes)).order_by(ApiKey.pk)
                              .with_for_update(of=ApiKey)).all()
    keys = {digest: key for digest, key in [*current, *retired]}
    live: dict[str, dict[int, ApiKey]] = {}  # organization -> {pk: key}, the live keys found
    where: dict[int, str] = {}
    for digest, key in keys.items():
        if key.revoked_at is None:
            live.setdefault(key.organization_id, {})[key.pk] = key
            where[key.pk] = found_at[digest][:255]
    policies = dict(session.execute(select(Organization.id, Organization.leak_policy)
                                    .where(Organization.id.in_(list(live)))).tuples().all()) if live else {}
    for organization_id, found in sorted(live.items()):
        actor = {"organization_id": organization_id, "actor_user_id": None, "actor_key_id": None, "ip": ip}
        rows = [found[pk] for pk in sorted(found)]
        record_all(session, [(actor, "key.leaked", "api_key", row.id, where[row.pk]) for row in rows])
        if policies.get(organization_id, "revoke") == "revoke":
            revoke_keys(session, rows, actor=actor)
    return set(keys)
