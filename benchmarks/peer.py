"""The peer: keyhouse's billing list and verify, written as a competent FastAPI user would, doing keyhouse's work.

Why it is a fair peer (issue 16 found the one before it was not):
- FastAPI as its documentation writes it: `async def` endpoints, an async `Security(APIKeyHeader(...))`
  dependency for the caller, `Query` validation, pydantic v2 `response_model`s serialized by
  pydantic-core, and an `@app.middleware("http")` for the request id, the access line and the metrics.
- The same data access as keyhouse: the same prebuilt statements through the same `Store.read` (one
  indexed lookup for a key, one statement for a page and its total), so the comparison is of the
  frameworks and the code around them, not of two ways to use a database.
- The same work per request: the key's checksum, hash, revocation, expiry and allowed IPs; the operation's
  permission (the key's permissions hold `getApiKeyCollection` or `verifyKey`, or `*`); a hit on the
  `limits` library's sliding-window counter per key and per organization (keyhouse's limits, in memory);
  the last use noted in memory; a request id (the client's, or a new one) on the answer and on the log
  line; one python-json-logger access line with keyhouse's fields; a Prometheus counter and histogram.
- Verify does keyhouse's lookups: the gateway's key (checked as above, for `verifyKey`), then the
  presented key, its verdict (expiry, revocation, a retired secret's grace, IPs), a rate-limit hit for the
  verified key, and the same verdict JSON.
- It answers the same JSON and `Pagination-*` headers (benchmarks/run.py checks before measuring).
What it does not do, and keyhouse does: validate the request and the response against the OpenAPI
contract (FastAPI validates the parameters it declares, pydantic the response model), and dress errors in
three families' envelopes (the benchmark's requests succeed).

    KEYHOUSE_DATABASE_URL=... KEYHOUSE_SECRET=... uvicorn benchmarks.peer:app

With KEYHOUSE_BENCH_PEER=bare it is the bare async peer, reported beside: the same endpoints, lookups and
answers, without the work around them (no rate limits, IP or expiry checks, request id, access line or
metrics).
"""

from __future__ import annotations

import ipaddress
import logging
import os
import time
import uuid
from datetime import UTC, datetime
from typing import Annotated, Any, Literal
from urllib.parse import quote

from fastapi import Depends, FastAPI, HTTPException, Query, Request, Response, Security
from fastapi.security import APIKeyHeader, HTTPAuthorizationCredentials, HTTPBearer
from limits import parse
from limits.aio.strategies import SlidingWindowCounterRateLimiter
from limits.storage import storage_from_string
from prometheus_client import Counter, Histogram
from pydantic import BaseModel, ConfigDict, Field
from pythonjsonlogger.json import JsonFormatter

from keyhouse import keys
from keyhouse.config import Settings
from keyhouse.store import api_keys, credentials
from keyhouse.store.credentials import Credential
from keyhouse.store.session import Store

settings = Settings.from_env()
store = Store(settings.database_url)
app = FastAPI(openapi_url=None, docs_url=None, redoc_url=None)
SAME_WORK = os.environ.get("KEYHOUSE_BENCH_PEER") != "bare"

limiter = SlidingWindowCounterRateLimiter(storage_from_string("async+memory://"))
PER_KEY, PER_ORGANIZATION = parse(settings.rate_limit), parse(settings.organization_rate_limit)
last_used: dict[int, datetime] = {}

REQUESTS = Counter("peer_requests", "Requests answered, by route and status.", ["route", "status"])
LATENCY = Histogram("peer_request_duration_seconds", "Time to answer a request, by route.", ["route"],
                    buckets=(0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5))
access = logging.getLogger("peer.access")
_handler = logging.StreamHandler()
_handler.setFormatter(JsonFormatter("%(asctime)s %(levelname)s %(name)s %(message)s",
                                    rename_fields={"asctime": "time", "levelname": "level", "name": "logger"}))
access.addHandler(_handler)
access.setLevel(logging.INFO)
access.propagate = False


async def observed(request: Request, call_next):
    presented = request.headers.get("x-request-id")
    request_id = presented if presented and len(presented) <= 200 and presented.isprintable() else uuid.uuid4().hex
    started = time.perf_counter()
    response = await call_next(request)
    response.headers["X-Request-Id"] = request_id
    elapsed = time.perf_counter() - started
    route = request.scope.get("route")
    name = route.name if route is not None else "unrouted"
    REQUESTS.labels(name, str(response.status_code)).inc()
    LATENCY.labels(name).observe(elapsed)
    access.info("request", extra={"method": request.method, "path": request.url.path, "status": response.status_code,
                                  "operation": name, "duration_ms": round(elapsed * 1000, 3),
                                  "client": request.client.host if request.client else None,
                                  "request_id": request_id})
    return response


if SAME_WORK:
    app.middleware("http")(observed)


# ------------------------------------------------------------------ keys and their checks


def state(key: Credential | None, now: datetime) -> str:
    if key is None:
        return "NOT_FOUND"
    if (key.retired_until is not None and key.retired_until <= now) or (key.revoked_at and key.revoked_at <= now):
        return "REVOKED"
    if key.expires_at is not None and key.expires_at <= now:
        return "EXPIRED"
    return "VALID"


def from_allowed_ip(key: Credential, client: str | None) -> bool:
    if not key.allowed_ips or not SAME_WORK:
        return True
    try:
        address = ipaddress.ip_address(client or "")
    except ValueError:
        return False
    return any(address in ipaddress.ip_network(entry, strict=False) for entry in key.allowed_ips)


async def lookup(presented: str | None) -> Credential | None:
    if not presented or not keys.is_well_formed(presented):
        return None
    return await store.read(credentials.credential_by_hash, keys.hash_key(settings.secret, presented))


async def within_limits(key: Credential) -> bool:
    return not SAME_WORK or (await limiter.hit(PER_KEY, f"key:{key.organization_id}:{key.key_pk}")
            and await limiter.hit(PER_ORGANIZATION, f"org:{key.organization_id}"))


async def caller(request: Request, presented: str | None, operation: str) -> Credential:
    """The calling key, checked as keyhouse checks it for `operation`."""
    key = await lookup(presented)
    now = datetime.now(UTC)
    if key is None or state(key, now) != "VALID":
        raise HTTPException(401, "The supplied API key is invalid.")
    if not from_allowed_ip(key, request.client.host if request.client else None):
        raise HTTPException(403, "This key may not be used from this address.")
    if "*" not in key.permissions and operation not in key.permissions:
        raise HTTPException(403, f"This key is not permitted to call {operation}.")
    if not await within_limits(key):
        raise HTTPException(429, "Rate limit exceeded.")
    last_used[key.key_pk] = now
    return key


async def billing_caller(request: Request,
                         presented: Annotated[str | None, Security(APIKeyHeader(name="REB-APIKEY", auto_error=False))]):
    return await caller(request, presented, "getApiKeyCollection")


async def gateway(request: Request,
                  bearer: Annotated[HTTPAuthorizationCredentials | None, Security(HTTPBearer(auto_error=False))]):
    return await caller(request, bearer.credentials if bearer else None, "verifyKey")


# ------------------------------------------------------------------ the billing list


class Link(BaseModel):
    href: str
    rel: Literal["self"]


class BillingKey(BaseModel):
    id: str
    description: str
    type: Literal["secret", "publishable"]
    allowedIps: list[str] | None
    createdTime: str
    updatedTime: str
    links: list[Link] = Field(serialization_alias="_links")
    acl: list[dict[str, Any]] | None = None
    apiUser: str | None = None


def rfc3339(moment: datetime) -> str:
    return moment.astimezone(UTC).strftime("%Y-%m-%dT%H:%M:%SZ")


@app.get("/api/v1/api-keys", response_model=list[BillingKey], response_model_exclude_unset=True,
         response_model_by_alias=True)
async def get_api_key_collection(response: Response, me: Annotated[Credential, Depends(billing_caller)],
                                 limit: Annotated[int, Query(ge=0, le=1000)] = 100,
                                 offset: Annotated[int, Query(ge=0)] = 0):
    owner = None if me.role == "admin" else me.user_id
    total, rows = await store.read(api_keys.page_keys, me.organization_id, owner_id=owner, match=[],
                                   order=[("created_at", True)], limit=limit, offset=offset)
    response.headers.update({"Pagination-Total": str(total), "Pagination-Limit": str(limit),
                             "Pagination-Offset": str(offset)})
    page = []
    for r in rows:
        extra = {name: value for name, value in (("acl", r.acl), ("apiUser", r.api_user)) if value is not None}
        page.append(BillingKey(id=r.id, description=r.description, type=r.type, allowedIps=r.allowed_ips,
                               createdTime=rfc3339(r.created_at), updatedTime=rfc3339(r.updated_at),
                               links=[Link(href=f"/api/v1/api-keys/{quote(r.id, safe='')}", rel="self")], **extra))
    return page


# ------------------------------------------------------------------ verify


class VerifyRequest(BaseModel):
    model_config = ConfigDict(extra="forbid")
    key: str = Field(max_length=200)
    permissions: list[str] = []
    ip: str | None = None


class Verdict(BaseModel):
    valid: bool
    code: str
    key_id: str | None = None
    organization_id: str | None = None
    user_id: str | None = None
    type: str | None = None
    permissions: list[str] | None = None
    expires_at: str | None = None
    name: str | None = None
    owner_id: str | None = None
    meta: dict[str, Any] | None = None
    remaining: int | None = None
    secret_valid_until: str | None = None


@app.post("/api/v1/keys/verify", response_model=Verdict, response_model_exclude_unset=True)
async def verify_key(body: VerifyRequest, me: Annotated[Credential, Depends(gateway)]):
    found = await lookup(body.key)
    if found is None or found.organization_id != me.organization_id:
        return Verdict(valid=False, code="NOT_FOUND")
    known = {"key_id": found.key_id, "organization_id": found.organization_id, "user_id": found.user_id}
    now = datetime.now(UTC)
    code = state(found, now)
    if code == "VALID" and not from_allowed_ip(found, body.ip):
        code = "FORBIDDEN"
    if code == "VALID" and body.permissions and "*" not in found.permissions \
            and not set(body.permissions) <= set(found.permissions):
        code = "INSUFFICIENT_PERMISSIONS"
    if code == "VALID" and not await within_limits(found):
        code = "RATE_LIMITED"
    if code != "VALID":
        return Verdict(valid=False, code=code, **known)
    last_used[found.key_pk] = now
    return Verdict(valid=True, code="VALID", **known, type=found.type, permissions=list(found.permissions),
                   expires_at=rfc3339(found.expires_at) if found.expires_at else None, name=found.name,
                   owner_id=found.owner_id, meta=found.meta, remaining=None,
                   secret_valid_until=rfc3339(found.retired_until) if found.retired_until else None)
