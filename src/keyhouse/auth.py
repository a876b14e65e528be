"""Credential to principal.

Connexion calls these functions (named in the spec's security schemes) with the presented credential.
A function returns NO_VALUE when the credential is not of its scheme, so that the next scheme of the
operation is tried; it raises ApiError("unauthorized") when the credential is its own and bad.
Malformed keys are refused on their checksum, before any database work.
"""

from __future__ import annotations

import hmac
from dataclasses import dataclass

from anyio import to_thread
from connexion.security import NO_VALUE

from . import keys, runtime
from .errors import ApiError
from .store import queries
from .store.models import utcnow


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


async def cloud_api_key(apikey: str, request=None):
    """`Authorization: ApiKey <key>`; any other Authorization scheme belongs to another handler."""
    scheme, _, key = apikey.strip().partition(" ")
    if scheme.lower() != "apikey":
        return NO_VALUE
    return await authenticate(key.strip())


async def billing_api_key(apikey: str, request=None):
    """`REB-APIKEY: <key>`."""
    return await authenticate(apikey.strip())


async def bearer_key(token: str, request=None):
    """`Authorization: Bearer <key>`."""
    return await authenticate(token.strip())


def _refuse(detail: str) -> ApiError:
    return ApiError("unauthorized", detail)


async def authenticate(presented: str) -> dict:
    if not keys.is_well_formed(presented):
        raise _refuse("The supplied API key is malformed.")
    rt = runtime.current()
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
    return {
        "sub": credential.user_id,
        "principal": Principal(
            key_pk=credential.key_pk,
            key_id=credential.key_id,
            user_id=credential.user_id,
            organization_id=credential.organization_id,
            role=credential.role,
            key_type=credential.type,
        ),
    }


def _lookup(rt: runtime.Runtime, digest: str):
    with rt.store.session() as s:
        return queries.credential_by_hash(s, digest)
