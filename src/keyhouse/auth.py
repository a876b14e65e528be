"""Credential to principal: which key is calling, and may it call this operation from here.

Connexion calls the function named by each security scheme of an operation, in the spec's order, and
stops at the first that succeeds. That alone would let a request through on its good `Authorization`
while its `REB-APIKEY` is revoked. keyhouse fails closed instead: every scheme function resolves the
request as a whole (once, cached in the ASGI scope), and every credential the operation accepts that the
request presents must be valid; the principal is the first of them in the spec's order. Then:

- expired, revoked and rerolled-past-grace keys are refused (401);
- a key restricted to `allowedIps` is refused from any other client address (403);
- a key may call only the operations its permissions name, and a member's key none that the spec
  keeps for admins (403); see keyhouse.permissions;
- a key, and its organization, may make only so many requests (429); see keyhouse.ratelimit.

Which headers carry which scheme is read from the spec's `securitySchemes`, not restated here. Keys
with a bad checksum are refused before any database work. Failures are recorded for the audit trail,
and uses for `last_used_at`, in memory (keyhouse.recorder): nothing here writes to the database.
"""

from __future__ import annotations

import functools
import hashlib
import hmac
import ipaddress
from collections.abc import Callable
from dataclasses import dataclass, replace
from datetime import datetime, timedelta
from typing import NamedTuple

import jwt
from connexion.security import NO_VALUE

from . import keys, metrics, runtime
from .errors import ApiError
from .store import queries
from .store.models import utcnow

_CACHE = "keyhouse.principal"
JWT_ALGORITHM = "HS256"
JWT_ISSUER = "keyhouse"


@dataclass(frozen=True)
class Principal:
    key_pk: int
    key_id: str
    user_id: str
    organization_id: str
    role: str
    key_type: str
    permissions: tuple[str, ...]
    ip: str | None  # the client address, for the audit trail
    secret_version: int  # of the secret the caller presented (or its token was made from)

    @property
    def is_admin(self) -> bool:
        return self.role == "admin"

    def actor(self) -> dict:
        """The fields of an audit event that say who did it."""
        return {"organization_id": self.organization_id, "actor_user_id": self.user_id,
                "actor_key_id": self.key_id, "ip": self.ip}


def principal(token_info: dict) -> Principal:
    return token_info["principal"]


# ------------------------------------------------------------------ reading credentials, per the spec

Extractor = Callable[[dict], "tuple[str, str] | None"]  # headers -> ("key" | "jwt", credential)


def _looks_like_jwt(value: str) -> bool:
    return value.count(".") == 2  # keys have no dots; a JWT is three base64url parts


def _extractor(scheme: dict) -> Extractor:
    if scheme["type"] == "http" and scheme["scheme"].lower() == "bearer":
        if scheme.get("bearerFormat") == "JWT":
            return lambda h: ("jwt", v) if (v := _authorization(h, "bearer")) and _looks_like_jwt(v) else None
        return lambda h: ("key", v) if (v := _authorization(h, "bearer")) is not None and not _looks_like_jwt(v) \
            else None
    if scheme["type"] == "apiKey" and scheme["in"] == "header":
        name = scheme["name"].lower()
        if name == "authorization":  # `Authorization: ApiKey <key>`
            return lambda h: ("key", v) if (v := _authorization(h, "apikey")) is not None else None
        return lambda h: ("key", h[name]) if name in h else None
    raise ValueError(f"keyhouse does not read credentials of scheme {scheme}")


def _authorization(headers, expected: str) -> str | None:
    value = headers.get("authorization")
    if value is None:
        return None
    scheme, _, credential = value.strip().partition(" ")
    return credential.strip() if scheme.lower() == expected else None


class Credentials(NamedTuple):
    """How an operation's credentials are read: one reader per scheme it accepts, in the spec's order,
    and the headers that carry them."""

    readers: list[Extractor]
    headers: dict[bytes, str]  # the lower-case name, as in the ASGI scope -> the name as the spec spells it


def _header_of(scheme: dict) -> str:
    return "Authorization" if scheme["type"] == "http" else scheme["name"]


def extractors_by_operation(spec: dict) -> dict[str, Credentials]:
    """operationId -> how to read each credential it accepts."""
    schemes = spec["components"]["securitySchemes"]
    readers = {name: _extractor(scheme) for name, scheme in schemes.items()}
    default = spec.get("security", [])
    table = {}
    for item in spec["paths"].values():
        for operation in item.values():
            if isinstance(operation, dict) and "operationId" in operation:
                names = [name for req in operation.get("security", default) for name in req]
                spelled = [_header_of(schemes[n]) for n in names]
                table[operation["operationId"]] = Credentials([readers[n] for n in names],
                                                              {h.lower().encode(): h for h in spelled})
    return table


def _repeated(raw_headers: list[tuple[bytes, bytes]], credential_headers: dict[bytes, str]) -> str | None:
    """The first credential header the request sends more than once. `Authorization` is no list header
    (RFC 9110 11.6.2): a proxy that reads the last copy and keyhouse the first would see two callers."""
    seen = set()
    for name, _ in raw_headers:
        if name in credential_headers:
            if name in seen:
                return credential_headers[name]
            seen.add(name)
    return None


# ------------------------------------------------------------------ the security functions of the spec

async def authenticate_request(credential: str, request):
    """The function every security scheme of the spec names: whichever scheme Connexion tries, the
    answer is the request's, from `resolve` (the credential it hands over is one of those read there)."""
    return await resolve(request)


async def resolve(request) -> dict:
    """The request's principal, computed once: the operation's other schemes get the same answer."""
    scope = request.scope
    if _CACHE not in scope:
        try:
            scope[_CACHE] = await _resolve(scope, request.headers)
        except ApiError as refused:
            scope[_CACHE] = refused
    if isinstance(scope[_CACHE], ApiError):
        raise scope[_CACHE]
    return scope[_CACHE]


def client_ip(scope) -> str | None:
    client = scope.get("client")
    return client[0] if client else None


async def _resolve(scope, headers):
    rt = runtime.current()
    operation_id = scope["extensions"]["connexion_routing"]["operation_id"]
    accepted = rt.extractors[operation_id]
    if (repeated := _repeated(scope["headers"], accepted.headers)) is not None:
        metrics.AUTH_FAILURES.labels("repeated credential header").inc()
        raise ApiError("unauthorized", f"The {repeated} header is sent more than once; send one.")
    presented = [found for read in accepted.readers if (found := read(headers)) is not None]
    if not presented:
        return NO_VALUE
    ip = client_ip(scope)
    await _not_refusing(rt, ip)
    principals = []
    for kind, credential in dict.fromkeys(presented):
        try:
            principals.append(await (_from_jwt if kind == "jwt" else _from_key)(rt, credential, ip))
        except Refused as refused:
            raise await _refusal(rt, refused, ip, operation_id) from None
    first = principals[0]
    await admit(rt, first, operation_id)
    for p in principals[1:]:
        rt.recorder.used(p.key_pk, utcnow())
    return {"sub": first.user_id, "principal": first}


async def admit(rt: runtime.Runtime, who: Principal, operation_id: str) -> None:
    """Whether `who` may call the operation now: its permissions (403, recorded), its and its organization's
    rate limits (429); then the use is recorded. Every request's last check, and every console page's
    before it calls an operation's handler (keyhouse.console.acting)."""
    if not rt.policy.allows(list(who.permissions), who.key_type, operation_id):
        metrics.AUTH_FAILURES.labels("operation not permitted").inc()
        rt.recorder.auth_failed(organization_id=who.organization_id, actor_key_id=who.key_id, ip=who.ip,
                                detail="operation not permitted", target_id=operation_id)
        raise ApiError("forbidden", f"This key is not permitted to call {operation_id}.")
    if not rt.policy.admits(list(who.permissions), who.key_type, who.role, operation_id):
        metrics.AUTH_FAILURES.labels("administrators only").inc()
        rt.recorder.auth_failed(organization_id=who.organization_id, actor_key_id=who.key_id, ip=who.ip,
                                detail="administrators only", target_id=operation_id)
        raise ApiError("forbidden", "Only administrators of the organization may do this.")
    exceeded = await rt.limiter.hit(who.organization_id, who.key_pk)
    if exceeded is not None:
        metrics.RATE_LIMITED.labels(exceeded.scope).inc()
        raise ApiError("rate_limited", f"Rate limit of {exceeded.limit} requests exceeded; retry in "
                       f"{exceeded.retry_after} s.", headers=exceeded.headers())
    rt.recorder.used(who.key_pk, utcnow())


async def _not_refusing(rt: runtime.Runtime, ip: str | None) -> None:
    """429 for an address that has presented too many refused credentials of late."""
    if ip is not None and (refusing := await rt.limiter.refusing(ip)) is not None:
        metrics.RATE_LIMITED.labels(refusing.scope).inc()
        raise ApiError("rate_limited", f"Too many refused credentials from this address; retry in "
                       f"{refusing.retry_after} s.", headers=refusing.headers())


async def _refusal(rt: runtime.Runtime, refused: Refused, ip: str | None, target: str) -> ApiError:
    """A refused credential counted (against its address too, when it is unknown or dead) and recorded for
    the audit trail; the error to answer."""
    metrics.AUTH_FAILURES.labels(refused.reason).inc()
    if ip is not None and refused.kind == "unauthorized":
        await rt.limiter.refused(ip)
    rt.recorder.auth_failed(organization_id=refused.organization_id, actor_key_id=refused.key_id,
                            ip=ip, detail=refused.reason, target_id=target)
    return ApiError(refused.kind, refused.message)


# ------------------------------------------------------------------ people, in the console

async def sign_in(rt: runtime.Runtime, presented: str, ip: str | None) -> Principal:
    """The principal of the key a person signs in to the console with: refused as a request presenting
    it would be, and counted and recorded alike (keyhouse.console turns the principal into a session)."""
    await _not_refusing(rt, ip)
    try:
        me = await _from_key(rt, presented, ip)
        if me.key_type == "publishable":  # it may ship in a web page: whoever has one is no one in particular
            raise Refused("publishable key at the console", "A publishable key cannot sign in to the console; "
                          "sign in with a secret key.", "forbidden", me.organization_id, me.key_id)
    except Refused as refused:
        raise await _refusal(rt, refused, ip, "console.sign_in") from None
    return me


async def signed_in(rt: runtime.Runtime, organization_id: str, key_id: str, secret_version: int,
                    permissions: list[str], ip: str | None, target: str) -> Principal:
    """The principal of a console session, as of now: like a token's, it dies with its key and with the
    secret it was signed in with (past a reroll's grace), and holds no more than the key holds now."""
    try:
        return await _as_of_now(rt, organization_id, key_id, secret_version, permissions, ip, "session")
    except Refused as refused:
        raise await _refusal(rt, refused, ip, target) from None


# ------------------------------------------------------------------ checking one credential

class Refused(Exception):
    def __init__(self, reason: str, message: str, kind: str = "unauthorized", organization_id=None, key_id=None):
        super().__init__(message)
        self.reason, self.message, self.kind = reason, message, kind
        self.organization_id, self.key_id = organization_id, key_id


def verdict(credential: queries.Credential | None, now: datetime) -> str:
    """VALID, NOT_FOUND, EXPIRED or REVOKED: what the store says of a presented secret (the credential the
    lookup by its hash found: the key's current secret, or a retired one with its `retired_until`).

    Shared by authentication and the gateways' verify operation, so the two can never disagree.
    """
    if credential is None:
        return "NOT_FOUND"
    if credential.retired_until is not None and credential.retired_until <= now:
        return "REVOKED"  # rerolled away, its grace over: valid only inside the window
    if credential.revoked_at is not None and credential.revoked_at <= now:
        return "REVOKED"
    if credential.expires_at is not None and credential.expires_at <= now:
        return "EXPIRED"
    return "VALID"


def ip_allowed(allowed_ips: list | None, ip: str | None) -> bool:
    if not allowed_ips:
        return True
    try:
        address = _unmapped(ipaddress.ip_address(ip or ""))
    except ValueError:
        return False  # a peer that is no IP address (a Unix socket, a test client) matches no rule
    return any(address in network for network in _networks(tuple(allowed_ips)))


def _unmapped(address):
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


_MESSAGES = {
    "NOT_FOUND": "The supplied API key is invalid.",
    "EXPIRED": "The supplied API key has expired.",
    "REVOKED": "The supplied API key has been revoked.",
}


def _principal(credential: queries.Credential, ip: str | None, permissions=None) -> Principal:
    if not ip_allowed(credential.allowed_ips, ip):
        raise Refused("ip not allowed", "This key may not be used from this address.", "forbidden",
                      credential.organization_id, credential.key_id)
    held = credential.permissions if permissions is None else [p for p in permissions if p in credential.permissions
                                                                 or "*" in credential.permissions]
    return Principal(credential.key_pk, credential.key_id, credential.user_id, credential.organization_id,
                     credential.role, credential.type, tuple(held), ip, credential.secret_version)


async def lookup(rt: runtime.Runtime, presented: str) -> tuple[queries.Credential | None, str | None]:
    """The credential of a presented key and its hash; (None, None) for a bad checksum, unlooked."""
    if not keys.is_well_formed(presented):
        return None, None
    digest = keys.hash_key(rt.settings.secret, presented)
    credential = await rt.store.read(queries.credential_by_hash, digest)
    for retired in rt.settings.previous_secrets if credential is None else ():
        # After a rotation: a key still hashed under a retired secret works, and is re-hashed under
        # the current one (in the background: the request writes nothing).
        old = keys.hash_key(retired, presented)
        if (credential := await rt.store.read(queries.credential_by_hash, old)) is not None:
            if credential.retired_until is None:  # a current secret (a retired one stays as it was)
                rt.recorder.rehash(credential.key_pk, old, digest)
            return credential, old
    return credential, digest


async def _from_key(rt: runtime.Runtime, presented: str, ip: str | None) -> Principal:
    credential, digest = await lookup(rt, presented)
    if digest is None:
        raise Refused("malformed key", "The supplied API key is malformed.")
    state = verdict(credential, utcnow())
    if credential is None or state != "VALID":
        known = credential if state != "NOT_FOUND" else None
        raise Refused(state.lower().replace("_", " "), _MESSAGES[state],
                      organization_id=known.organization_id if known else None, key_id=known.key_id if known else None)
    return _principal(credential, ip)


# ------------------------------------------------------------------ tokens

def _jwt_key(secret: bytes) -> bytes:
    # Derived, so that the token signing key is never the key-hashing pepper itself.
    return hmac.new(secret, b"keyhouse jwt signing key", hashlib.sha256).digest()


def issue_token(rt: runtime.Runtime, who: Principal, expires_in: int) -> str:
    now = utcnow()
    claims = {"iss": JWT_ISSUER, "sub": who.user_id, "org": who.organization_id, "kid": who.key_id,
              "ver": who.secret_version, "perms": list(who.permissions), "iat": now,
              "exp": now + timedelta(seconds=expires_in)}
    return jwt.encode(claims, _jwt_key(rt.settings.secret), algorithm=JWT_ALGORITHM)


def _decode(token: str, secret: bytes, retired: tuple[bytes, ...]) -> dict:
    """The claims of a token signed with the current secret, or with a retired one (tokens issued before
    a rotation live out their short lives)."""
    for signing in (secret, *retired):
        try:
            return jwt.decode(token, _jwt_key(signing), algorithms=[JWT_ALGORITHM], issuer=JWT_ISSUER,
                              options={"require": ["exp", "iat", "iss", "sub", "org", "kid", "ver", "perms"]})
        except jwt.InvalidSignatureError:
            continue
    raise jwt.InvalidSignatureError("no secret signed this token")


async def _retired(rt: runtime.Runtime, credential: queries.Credential, version) -> queries.Credential | None:
    """The key as seen through its secret `version`, which a reroll retired; None if it never had it."""
    if type(version) is not int:
        return None
    until = await rt.store.read(queries.retired_until, credential.key_pk, version)
    return None if until is None else replace(credential, secret_version=version, retired_until=until)


async def _from_jwt(rt: runtime.Runtime, token: str, ip: str | None) -> Principal:
    try:
        claims = _decode(token, rt.settings.secret, rt.settings.previous_secrets)
    except jwt.ExpiredSignatureError:
        raise Refused("token expired", "The supplied token has expired.") from None
    except jwt.PyJWTError:
        raise Refused("bad token", "The supplied token is invalid.") from None
    perms = claims["perms"] if isinstance(claims["perms"], list) else []
    return await _as_of_now(rt, str(claims["org"]), str(claims["kid"]), claims["ver"], [str(p) for p in perms],
                            ip, "token")


async def _as_of_now(rt: runtime.Runtime, organization_id: str, key_id: str, version, permissions: list[str],
                     ip: str | None, what: str) -> Principal:
    # A token (or a console session) dies with its key, and with the secret it was made from: the key is
    # looked up again, its permissions bound the token's, and a secret rerolled away since counts only
    # inside its grace window.
    credential = await rt.store.read(queries.credential_by_id, organization_id, key_id)
    if credential is not None and version != credential.secret_version:
        credential = await _retired(rt, credential, version)
    state = verdict(credential, utcnow())
    if credential is None or state != "VALID":
        raise Refused(f"{what} of a " + state.lower().replace("_", " ") + " key", _MESSAGES[state],
                      organization_id=organization_id, key_id=key_id)
    return _principal(credential, ip, permissions=permissions)
