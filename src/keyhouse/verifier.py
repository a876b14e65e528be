"""One verifier: what keyhouse thinks of a key, whichever door the key comes through.

A request to keyhouse (keyhouse.auth: its key, token or console session), a gateway's `POST /keys/verify`
(api.verification) and every call the console makes (through auth) ask `verify` the same question, in
the same order, the first failure being the verdict:

1. the key's state: unknown, revoked, expired, or a secret rerolled away past its grace;
2. the address it is presented from, against its allowed IPs;
3. the permissions asked about: keyhouse's own by the policy (admins-only operations for admins), the
   organization's own APIs' by what they declare now;
4. a rate limit: the key's and its organization's request rates (a request), or how often the key may
   be verified (a verification);
5. its credits: what the question costs, spent in one conditional UPDATE.

A rule added here holds at every door. The callers say what a failure looks like to their clients (a
401/403/429 in the family's envelope, or a verdict's code), and nothing else.
"""

from __future__ import annotations

import functools
import ipaddress
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import datetime
from typing import Literal

from . import credits, metrics, platforms
from .ratelimit import Exceeded, Standing, per_window
from .runtime import Runtime
from .store import api_keys, platform_apis
from .store.credentials import Credential
from .store.models import utcnow


@dataclass(frozen=True)
class Ask:
    """What is asked of a key beyond its state."""

    ip: str | None = None  # where it is presented from (a key with allowed IPs is refused without one)
    every: Sequence[str] = ()  # permissions it must all hold (operationIds, or `<api>:<name>`)
    some: Sequence[str] | None = None  # permissions of which it must hold one
    # A token's or a console session's permissions: what the key holds now, bounded by these.
    within: Sequence[str] | None = None
    # Whose rate limit counts: the key's and its organization's requests to keyhouse, or how often the key
    # may be verified (its own limit, or the server's default for verified keys); None: no limit counts.
    limit: Literal["request", "verification"] | None = None
    cost: int = 0  # credits a VALID verdict spends (keys with credits only)
    actor: dict | None = None  # who spends them, for the trail (`Principal.actor()`)


@dataclass(frozen=True)
class Verdict:
    """VALID, or the first check the key failed (the codes of `POST /keys/verify`), with what was found."""

    code: str  # VALID, NOT_FOUND, EXPIRED, REVOKED, FORBIDDEN, INSUFFICIENT_PERMISSIONS, RATE_LIMITED, USAGE_EXCEEDED
    credential: Credential | None
    permissions: tuple[str, ...] = ()  # what it holds here (bounded by `within`)
    why: str = ""  # for the operators: which rule refused it (the audit trail's and the metrics' words)
    limit: Standing | Exceeded | None = None  # where it stands against the limit that counted
    remaining: int | None = None  # credits left, for a key with credits
    refill_at: datetime | None = None  # when they are next topped up

    @property
    def valid(self) -> bool:
        return self.code == "VALID"


def state(credential: Credential | None, now: datetime) -> str:
    """VALID, NOT_FOUND, EXPIRED or REVOKED: what the store says of a presented secret (the credential the
    lookup found: the key's current secret, or a retired one with its `retired_until`)."""
    if credential is None:
        return "NOT_FOUND"
    if credential.retired_until is not None and credential.retired_until <= now:
        return "REVOKED"  # rerolled away, its grace over: valid only inside the window
    if credential.revoked_at is not None and credential.revoked_at <= now:
        return "REVOKED"
    if credential.expires_at is not None and credential.expires_at <= now:
        return "EXPIRED"
    return "VALID"


async def verify(rt: Runtime, credential: Credential | None, ask: Ask, now: datetime | None = None) -> Verdict:
    """keyhouse's verdict on a key for `ask`, counted in the key's usage; on VALID its last use is recorded
    (both in memory, written in batches)."""
    now = now or utcnow()
    verdict = await _verdict(rt, credential, ask, now)
    if credential is not None:  # a secret found nowhere is no key's usage
        rt.recorder.verdict(credential.key_pk, credential.organization_id, verdict.code, now, ask.ip)
        if verdict.valid:
            rt.recorder.used(credential.key_pk, now)
    return verdict


async def _verdict(rt: Runtime, credential: Credential | None, ask: Ask, now: datetime) -> Verdict:
    code = state(credential, now)
    if credential is None or code != "VALID":
        return Verdict(code, credential, why=code.lower().replace("_", " "))
    if not ip_allowed(credential.allowed_ips, ask.ip):
        return Verdict("FORBIDDEN", credential, why="ip not allowed")
    held = tuple(credential.permissions) if ask.within is None else tuple(
        p for p in ask.within if p in credential.permissions or platforms.ALL in credential.permissions)
    if why := await _lacks(rt, credential, held, ask):
        return Verdict("INSUFFICIENT_PERMISSIONS", credential, held, why)
    limit = await _limit(rt, credential, ask.limit)
    if isinstance(limit, Exceeded):
        metrics.RATE_LIMITED.labels(limit.scope if ask.limit == "request" else "verified key").inc()
        return Verdict("RATE_LIMITED", credential, held, "rate limited", limit)
    code, remaining, refill_at = await _credits(rt, credential, ask, now)
    return Verdict(code, credential, held, "" if code == "VALID" else "usage exceeded", limit, remaining, refill_at)


async def _lacks(rt: Runtime, credential: Credential, held: tuple[str, ...], ask: Ask) -> str:
    """Why the key does not hold what is asked ('' when it does): every one of `every`, and one of `some`."""
    asked = [*ask.every, *(ask.some or [])]
    if not asked:
        return ""
    apis = {q[0] for p in asked if (q := platforms.qualified(p)) is not None}
    definitions = await rt.store.read(platform_apis.definitions, credential.organization_id, apis) if apis else {}
    admins_only = False

    def one(permission: str) -> bool:
        nonlocal admins_only
        if platforms.qualified(permission) is not None:
            return credential.type != "publishable" and platforms.holds(list(held), permission, definitions)
        if not rt.policy.allows(list(held), credential.type, permission):
            return False
        admins_only = not rt.policy.admits(list(held), credential.type, credential.role, permission)
        return not admins_only

    if all(one(p) for p in ask.every) and (ask.some is None or any(one(p) for p in ask.some)):
        return ""
    return "administrators only" if admins_only else "operation not permitted"


async def _limit(rt: Runtime, credential: Credential, whose: str | None) -> Standing | Exceeded | None:
    if whose == "request":
        return await rt.limiter.hit(credential.organization_id, credential.key_pk)
    if whose == "verification":
        own = None if credential.verify_limit is None else per_window(credential.verify_limit,
                                                                      credential.verify_window_seconds or 1)
        if (item := rt.limiter.verified_limit(own)) is not None:
            return await rt.limiter.verified(credential.organization_id, credential.key_pk, item)
    return None


async def _credits(rt: Runtime, credential: Credential, ask: Ask,
                   now: datetime) -> tuple[str, int | None, datetime | None]:
    """(VALID or USAGE_EXCEEDED, credits left, next refill): `ask.cost` spent of a key with credits."""
    if credential.credits_remaining is None:
        return "VALID", None, None
    amount, seconds, refilled_at = (credential.credits_refill_amount, credential.credits_refill_seconds,
                                    credential.credits_refilled_at)
    refill_at = credits.next_refill(amount, seconds, refilled_at, now)
    if not ask.cost:  # spends nothing, so it stays a read
        return "VALID", credits.left(credential.credits_remaining, amount, seconds, refilled_at, now), refill_at
    due = credits.refill_due(amount, seconds, refilled_at, now)
    spent, left = await rt.store.write(api_keys.spend_credits, credential, ask.cost, now, due, actor=ask.actor)
    return ("VALID" if spent else "USAGE_EXCEEDED"), left, refill_at


def ip_allowed(allowed_ips: list | None, ip: str | None) -> bool:
    if not allowed_ips:
        return True
    try:
        address = _unmapped(ipaddress.ip_address(ip or ""))
    except ValueError:
        return False  # a peer that is no IP address (a Unix socket, a test client) matches no rule
    return any(address in network for network in _networks(tuple(allowed_ips)))


def _unmapped(address):  # type: ignore[no-untyped-def]
    """An IPv4-mapped IPv6 address (`::ffff:192.0.2.10`, as dual-stack sockets report IPv4 peers) is the
    IPv4 host it maps; every other address is itself."""
    return getattr(address, "ipv4_mapped", None) or address


@functools.lru_cache(maxsize=4096)
def _networks(allowed_ips: tuple[str, ...]) -> list:
    networks = []
    for entry in allowed_ips:
        try:
            network = ipaddress.ip_network(entry, strict=False)
        except ValueError:
            continue  # the spec's patterns admit a few forms ipaddress does not: such an entry matches nothing
        mapped = _unmapped(network.network_address)
        if network.version == 6 and mapped is not network.network_address and network.prefixlen >= 96:
            network = ipaddress.ip_network(f"{mapped}/{network.prefixlen - 96}")  # ::ffff:a.b.c.d/n as IPv4
        networks.append(network)
    return networks
