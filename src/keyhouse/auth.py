"""Credential to principal.

Connexion calls the function named by each security scheme of an operation, in the spec's order, and
stops at the first that succeeds. That alone would let a request through on its good `Authorization`
while its `REB-APIKEY` is revoked. keyhouse fails closed instead: every scheme function resolves the
request as a whole (once, cached in the ASGI scope), and every credential the operation accepts that the
request presents must be valid; the principal is the first of them in the spec's order.

Which headers carry which scheme is read from the spec's `securitySchemes`, not restated here.
Malformed keys are refused on their checksum, before any database work.
"""

from __future__ import annotations

import hmac
from dataclasses import dataclass
from typing import Callable

from anyio import to_thread
from connexion.security import NO_VALUE

from . import keys, runtime
from .errors import ApiError
from .store import queries
from .store.models import utcnow

Extractor = Callable[[dict], "str | None"]  # request headers -> the credential of one scheme, if present
_CACHE = "keyhouse.principal"


@dataclass(frozen=True)
class Principal:
    key_pk: int
    key_id: str
    user_id: str
    organization_id: str
    role: str
    key_type: str

    @property
    def is_admin(self) -> bool:
        return self.role == "admin"


def principal(token_info: dict) -> Principal:
    return token_info["principal"]


# ------------------------------------------------------------------ reading credentials, per the spec

def _extractor(scheme: dict) -> Extractor:
    if scheme["type"] == "http" and scheme["scheme"].lower() == "bearer":
        return lambda headers: _authorization(headers, "bearer")
    if scheme["type"] == "apiKey" and scheme["in"] == "header":
        name = scheme["name"].lower()
        if name == "authorization":  # `Authorization: ApiKey <key>`
            return lambda headers: _authorization(headers, "apikey")
        return lambda headers: headers.get(name)
    raise ValueError(f"keyhouse does not read credentials of scheme {scheme}")


def _authorization(headers, expected: str) -> str | None:
    value = headers.get("authorization")
    if value is None:
        return None
    scheme, _, credential = value.strip().partition(" ")
    return credential if scheme.lower() == expected else None


def extractors_by_operation(spec: dict) -> dict[str, list[Extractor]]:
    """operationId -> how to read each credential it accepts, in the spec's order."""
    schemes = {name: _extractor(s) for name, s in spec["components"]["securitySchemes"].items()}
    default = spec.get("security", [])
    table = {}
    for item in spec["paths"].values():
        for operation in item.values():
            if isinstance(operation, dict) and "operationId" in operation:
                requirements = operation.get("security", default)
                table[operation["operationId"]] = [schemes[name] for req in requirements for name in req]
    return table


# ------------------------------------------------------------------ the security functions of the spec

async def cloud_api_key(apikey: str, request):
    return await resolve(request)


async def billing_api_key(apikey: str, request):
    return await resolve(request)


async def bearer_key(token: str, request):
    return await resolve(request)


async def resolve(request) -> dict:
    """The request's principal, computed once: the operation's other schemes get the same answer."""
    scope = request.scope
    if _CACHE not in scope:
        try:
            scope[_CACHE] = await _resolve(request)
        except ApiError as refused:
            scope[_CACHE] = refused
    if isinstance(scope[_CACHE], ApiError):
        raise scope[_CACHE]
    return scope[_CACHE]


async def _resolve(request):
    rt = runtime.current()
    operation_id = scope_operation_id(request.scope)
    presented = [c for read in rt.extractors[operation_id] if (c := read(request.headers)) is not None]
    if not presented:
        return NO_VALUE
    found = [await authenticate(rt, credential.strip()) for credential in dict.fromkeys(presented)]
    return {"sub": found[0].user_id, "principal": found[0]}


def scope_operation_id(scope) -> str:
    return scope["extensions"]["connexion_routing"]["operation_id"]


def _refuse(detail: str) -> ApiError:
    return ApiError("unauthorized", detail)


async def authenticate(rt: runtime.Runtime, presented: str) -> Principal:
    if not keys.is_well_formed(presented):
        raise _refuse("The supplied API key is malformed.")
    digest = keys.hash_key(rt.settings.secret, presented)
    credential = await to_thread.run_sync(_lookup, rt, digest)
    # The row was found by its hash; comparing the hashes again in constant time costs nothing
    # and keeps the check independent of how the database compares strings.
    if credential is None or not hmac.compare_digest(credential.key_hash, digest):
        raise _refuse("The supplied API key is invalid.")
    now = utcnow()
    if credential.revoked_at is not None and credential.revoked_at <= now:
        raise _refuse("The supplied API key has been revoked.")
    if credential.expires_at is not None and credential.expires_at <= now:
        raise _refuse("The supplied API key has expired.")
    return Principal(
        key_pk=credential.key_pk,
        key_id=credential.key_id,
        user_id=credential.user_id,
        organization_id=credential.organization_id,
        role=credential.role,
        key_type=credential.type,
    )


def _lookup(rt: runtime.Runtime, digest: str):
    with rt.store.session() as s:
        return queries.credential_by_hash(s, digest)
