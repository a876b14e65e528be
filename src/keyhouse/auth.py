"""Credential to principal: which key is calling, and may it call this operation from here.

Connexion calls the function named by each security scheme of an operation, in the spec's order, and
stops at the first that succeeds. That alone would let a request through on its good `Authorization`
while its `REB-APIKEY` is revoked. keyhouse fails closed instead: every scheme function resolves the
request as a whole (once, cached in the ASGI scope), and every credential the operation accepts that the
request presents must be valid; the principal is the first of them in the spec's order.

Which headers carry which scheme is read from the spec's `securitySchemes`, not restated here. Keys
with a bad checksum are refused before any database work. What a credential may do is keyhouse.verifier's
to say (its state, address, permissions, limits: the same verdict `POST /keys/verify` gives); here it is
found (a key by its hash, a token or a console session by its key's id) and a refusal is answered (401,
403, 429), counted and recorded for the audit trail. Nothing here writes to the database.
"""

from __future__ import annotations

import hashlib
import hmac
from collections.abc import Callable
from dataclasses import dataclass, replace
from datetime import timedelta
from typing import NamedTuple

import jwt
from connexion.security import NO_VALUE

from . import keys, leaks, logs, metrics, runtime
from . import spec as contract
from .errors import ApiError
from .ratelimit import Exceeded
from .store import credentials
from .store.models import utcnow
from .verifier import Ask, verify

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
    if scheme.get("x-keyhouse-signed-body") == "github":  # a signature of the body, not a key
        name = scheme["name"].lower()
        return lambda h: ("github", h[name]) if name in h else None
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
    for _, _, operation in contract.operations(spec):
        names = [name for req in operation.get("security", default) for name in req]
        spelled = [_header_of(schemes[n]) for n in names]
        table[operation["operationId"]] = Credentials([readers[n] for n in names],
                                                      {h.lower().encode(): h for h in spelled})
    return table


def signed_operations(spec: dict) -> frozenset[str]:
    """The operations whose security scheme signs the body (keyhouse.middleware.SignedBodies keeps it)."""
    schemes = spec["components"]["securitySchemes"]
    return frozenset(operation["operationId"] for _, _, operation in contract.operations(spec)
                     for requirement in operation.get("security", spec.get("security", []))
                     for name in requirement if schemes[name].get("x-keyhouse-signed-body"))


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
    rt = runtime.of(scope)
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
    if presented[0][0] == "github":  # a leak report: GitHub's signature of the body is the credential
        return await _signed_by_github(rt, scope, headers, presented[0][1], ip, operation_id)
    principals: list[Principal] = []
    for kind, credential in dict.fromkeys(presented):
        # The principal (the first) is asked for the operation and counted against its limits; every other
        # credential presented must be valid from here too.
        found, within, what = await _found(rt, _token if kind == "jwt" else _key, credential, ip, operation_id)
        ask = Ask(ip=ip, within=within, every=(operation_id,), limit="request") if not principals \
            else Ask(ip=ip, within=within)
        principals.append(await _admitted(rt, found, ask, what, operation_id))
    logs.observe(scope, organization_id=principals[0].organization_id)  # the access line's, the span's
    return {"sub": principals[0].user_id, "principal": principals[0]}


async def _signed_by_github(rt: runtime.Runtime, scope, headers, signature: str, ip: str | None,  # type: ignore[no-untyped-def]
                            target: str) -> dict:
    """A body signed by one of GitHub's secret scanning keys (keyhouse.leaks): its reporter is GitHub."""
    if leaks.github_signed(rt.github_keys, headers.get("github-public-key-identifier"), signature,
                           scope.get(leaks.SIGNED_BODY, b"")):
        return {"sub": "github", "reporter": "github", "ip": ip}
    why = "The body is not signed by a GitHub secret scanning key this server knows." if rt.github_keys else \
        "This server takes no leak reports from GitHub: KEYHOUSE_GITHUB_SECRET_SCANNING_KEYS is not set."
    raise await _refusal(rt, Refused("bad signature", why), ip, target)


async def admit(rt: runtime.Runtime, who: Principal, operation_id: str) -> None:
    """Whether `who`, a console session's principal, may call the operation now: the verifier's whole
    question, as a request to it would ask it (the key as it is now, its address, the permission, the rate
    limits; the use recorded). Every console page's check before it calls an operation's handler."""
    credential = await _current(rt, who.organization_id, who.key_id, who.secret_version)
    ask = Ask(ip=who.ip, every=(operation_id,), limit="request", within=who.permissions)
    await _admitted(rt, credential, ask, "session", operation_id)


async def _admitted(rt: runtime.Runtime, credential: credentials.Credential | None, ask: Ask, what: str,
                    target: str) -> Principal:
    """The verifier's verdict on a credential, as a request's answer: the principal, or the refusal (401 for
    the key's state, 403 for its address or permissions, 429 for its limits), counted and recorded."""
    verdict = await verify(rt, credential, ask)
    if verdict.valid:
        assert credential is not None  # noqa: S101 - a VALID verdict is on a key
        return Principal(credential.key_pk, credential.key_id, credential.user_id, credential.organization_id,
                         credential.role, credential.type, verdict.permissions, ask.ip, credential.secret_version)
    known = credential if verdict.code != "NOT_FOUND" else None
    if verdict.code == "RATE_LIMITED":
        exceeded = verdict.limit
        assert isinstance(exceeded, Exceeded)  # noqa: S101 - what a RATE_LIMITED verdict carries
        raise ApiError("rate_limited", f"Rate limit of {exceeded.limit} requests exceeded; retry in "
                       f"{exceeded.retry_after} s.", headers=exceeded.headers())
    if verdict.code == "INSUFFICIENT_PERMISSIONS":
        message = "Only administrators of the organization may do this." if verdict.why == "administrators only" \
            else f"This key is not permitted to call {target}."
        refused = Refused(verdict.why, message, "forbidden")
    elif verdict.code == "FORBIDDEN":
        refused = Refused(verdict.why, "This key may not be used from this address.", "forbidden")
    else:  # the key's state
        refused = Refused(verdict.why if what == "key" else f"{what} of a {verdict.why} key", _MESSAGES[verdict.code])
    refused.organization_id = known.organization_id if known else None
    refused.key_id = known.key_id if known else None
    raise await _refusal(rt, refused, ask.ip, target)


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
    it would be, and counted and recorded alike (keyhouse.console turns the principal into a session).
    A publishable key may ship in a web page: whoever has one is no one in particular, and is refused."""
    await _not_refusing(rt, ip)
    credential, within, what = await _found(rt, _key, presented, ip, "console.sign_in")
    me = await _admitted(rt, credential, Ask(ip=ip, within=within), what, "console.sign_in")
    if me.key_type == "publishable":
        raise await _refusal(rt, Refused("publishable key at the console", "A publishable key cannot sign in to "
                                         "the console; sign in with a secret key.", "forbidden", me.organization_id,
                                         me.key_id), ip, "console.sign_in")
    return me


async def signed_in(rt: runtime.Runtime, organization_id: str, key_id: str, secret_version: int,
                    permissions: list[str], ip: str | None, target: str) -> Principal:
    """The principal of a console session, as of now: like a token's, it dies with its key and with the
    secret it was signed in with (past a reroll's grace), and holds no more than the key holds now."""
    credential = await _current(rt, organization_id, key_id, secret_version)
    return await _admitted(rt, credential, Ask(ip=ip, within=permissions), "session", target)


# ------------------------------------------------------------------ finding the credential presented

class Refused(Exception):
    def __init__(self, reason: str, message: str, kind: str = "unauthorized", organization_id=None, key_id=None):
        super().__init__(message)
        self.reason, self.message, self.kind = reason, message, kind
        self.organization_id, self.key_id = organization_id, key_id


_MESSAGES = {
    "NOT_FOUND": "The supplied API key is invalid.",
    "EXPIRED": "The supplied API key has expired.",
    "REVOKED": "The supplied API key has been revoked.",
}

Found = tuple["credentials.Credential | None", "list[str] | None", str]  # credential, its bound, what it was


async def lookup(rt: runtime.Runtime, presented: str) -> tuple[credentials.Credential | None, str | None]:
    """The credential of a presented key and its hash; (None, None) for a bad checksum, unlooked."""
    if not keys.is_well_formed(presented):
        return None, None
    digest = keys.hash_key(rt.settings.secret, presented)
    credential = await rt.store.read(credentials.credential_by_hash, digest)
    for retired in rt.settings.previous_secrets if credential is None else ():
        # After a rotation: a key still hashed under a retired secret works, and is re-hashed under
        # the current one (in the background: the request writes nothing).
        old = keys.hash_key(retired, presented)
        if (credential := await rt.store.read(credentials.credential_by_hash, old)) is not None:
            if credential.retired_until is None:  # a current secret (a retired one stays as it was)
                rt.recorder.rehash(credential.key_pk, old, digest)
            return credential, old
    return credential, digest


async def _found(rt: runtime.Runtime, find, presented: str, ip: str | None, target: str) -> Found:  # type: ignore[no-untyped-def]
    """What `find` (_key or _token) finds of a presented credential; one that cannot even be read (a bad
    checksum, a forged or expired token) is refused here, counted and recorded."""
    try:
        return await find(rt, presented)
    except Refused as refused:
        raise await _refusal(rt, refused, ip, target) from None


async def _key(rt: runtime.Runtime, presented: str) -> Found:
    credential, digest = await lookup(rt, presented)
    if digest is None:
        raise Refused("malformed key", "The supplied API key is malformed.")
    return credential, None, "key"


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


async def _retired(rt: runtime.Runtime, credential: credentials.Credential,
                   version) -> credentials.Credential | None:
    """The key as seen through its secret `version`, which a reroll retired; None if it never had it."""
    if type(version) is not int:
        return None
    until = await rt.store.read(credentials.retired_until, credential.key_pk, version)
    return None if until is None else replace(credential, secret_version=version, retired_until=until)


async def _token(rt: runtime.Runtime, token: str) -> Found:
    try:
        claims = _decode(token, rt.settings.secret, rt.settings.previous_secrets)
    except jwt.ExpiredSignatureError:
        raise Refused("token expired", "The supplied token has expired.") from None
    except jwt.PyJWTError:
        raise Refused("bad token", "The supplied token is invalid.") from None
    perms = claims["perms"] if isinstance(claims["perms"], list) else []
    credential = await _current(rt, str(claims["org"]), str(claims["kid"]), claims["ver"])
    return credential, [str(p) for p in perms], "token"


async def _current(rt: runtime.Runtime, organization_id: str, key_id: str, version) -> credentials.Credential | None:
    """The key a token or a console session was made from, as it is now, seen through the secret it was made
    from: it dies with its key, and with that secret once a reroll's grace is over."""
    credential = await rt.store.read(credentials.credential_by_id, organization_id, key_id)
    if credential is not None and version != credential.secret_version:
        credential = await _retired(rt, credential, version)
    return credential
