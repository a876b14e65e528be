"""Leaks: `POST /leaks/github`, the keys GitHub's secret scanning found in public, and each
organization's policy for them (`GET`/`PUT /leaks/policy`).

The report's signature was checked before it got here (keyhouse.auth, keyhouse.leaks): its reporter is
GitHub. Each token that could be a key is hashed as authentication hashes one (under the server's secret
and any secret retired by a rotation), and the store finds and handles the keys in one transaction.
"""

from __future__ import annotations

from .. import keys, leaks
from ..auth import principal
from ..runtime import Runtime
from ..store import leaks as leaked_keys
from ..store import organizations


def report_github_leaks(body: list[dict], token_info: dict, *, rt: Runtime):
    secrets = (rt.settings.secret, *rt.settings.previous_secrets)
    candidates = [[keys.hash_key(secret, report["token"]) for secret in secrets]
                  if keys.is_well_formed(report["token"]) else [] for report in body]
    found_at = {digest: report["url"] for report, digests in zip(body, candidates, strict=True) for digest in digests}
    with rt.store.session() as s:
        found = leaked_keys.leaked(s, found_at, token_info.get("ip")) if found_at else set()
    return [{"token_hash": leaks.token_hash(report["token"]), "token_type": report["type"],
             "label": "true_positive" if found.intersection(digests) else "false_positive"}
            for report, digests in zip(body, candidates, strict=True)]


def get_leak_policy(token_info: dict, *, rt: Runtime):
    me = principal(token_info)
    with rt.store.reading() as s:
        return {"on_leak": organizations.leak_policy(s, me.organization_id)}


def set_leak_policy(body: dict, token_info: dict, *, rt: Runtime):
    me = principal(token_info)
    with rt.store.session() as s:
        organizations.set_leak_policy(s, me.organization_id, body["on_leak"], actor=me.actor())
    return {"on_leak": body["on_leak"]}
