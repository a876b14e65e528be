"""The peer: keyhouse's billing list written the way a FastAPI user would write it.

FastAPI with a pydantic response model, reading the same database through keyhouse's own SQLAlchemy
models: the `REB-APIKEY` header is hashed and looked up (as keyhouse does), `limit` and `offset` are
validated by FastAPI, the page is the organization's live keys newest first, and the total comes from
the organization's counter. The endpoints are plain `def` functions with a session dependency, as the
FastAPI and SQLAlchemy tutorials write them. It answers the same JSON and `Pagination-*` headers.

    KEYHOUSE_DATABASE_URL=... KEYHOUSE_SECRET=... uvicorn benchmarks.peer:app
"""

from __future__ import annotations

from collections.abc import Iterator
from datetime import datetime
from typing import Annotated, Literal
from urllib.parse import quote

from fastapi import Depends, FastAPI, HTTPException, Query, Response, Security
from fastapi.security import APIKeyHeader
from pydantic import BaseModel, Field, field_serializer
from sqlalchemy import select
from sqlalchemy.orm import Session

from keyhouse import keys
from keyhouse.config import Settings
from keyhouse.store.models import ApiKey, Organization
from keyhouse.store.session import Store

settings = Settings.from_env()
store = Store(settings.database_url)
app = FastAPI()


class Link(BaseModel):
    href: str
    rel: Literal["self"]


class ApiKeyView(BaseModel):
    id: str
    description: str
    type: Literal["publishable", "secret"]
    allowedIps: list[str] | None
    createdTime: datetime
    updatedTime: datetime
    links: list[Link] = Field(serialization_alias="_links")
    acl: list[dict] | None = None
    apiUser: str | None = None

    @field_serializer("createdTime", "updatedTime")
    def _rfc3339(self, moment: datetime) -> str:
        return moment.strftime("%Y-%m-%dT%H:%M:%SZ")


def database() -> Iterator[Session]:
    with store.reading() as session:
        yield session


def caller(db: Annotated[Session, Depends(database)],
           presented: Annotated[str | None, Security(APIKeyHeader(name="REB-APIKEY", auto_error=False))]) -> ApiKey:
    if presented is None or not keys.is_well_formed(presented):
        raise HTTPException(401, "The supplied API key is invalid.")
    digest = keys.hash_key(settings.secret, presented)
    key = db.scalars(select(ApiKey).where(ApiKey.key_hash == digest)).first()
    if key is None or key.revoked_at is not None:
        raise HTTPException(401, "The supplied API key is invalid.")
    return key


@app.get("/api/v1/api-keys", response_model=list[ApiKeyView], response_model_exclude_unset=True)
def list_api_keys(response: Response, me: Annotated[ApiKey, Depends(caller)], db: Annotated[Session, Depends(database)],
                  limit: Annotated[int, Query(ge=0, le=1000)] = 100, offset: Annotated[int, Query(ge=0)] = 0):
    total = db.scalar(select(Organization.live_keys).where(Organization.id == me.organization_id))
    rows = db.scalars(select(ApiKey).where(ApiKey.organization_id == me.organization_id, ApiKey.revoked_at.is_(None))
                      .order_by(ApiKey.created_at.desc(), ApiKey.pk.desc()).limit(limit).offset(offset)).all()
    response.headers.update({"Pagination-Total": str(total), "Pagination-Limit": str(limit),
                             "Pagination-Offset": str(offset)})
    return [ApiKeyView(id=r.id, description=r.description, type=r.type, allowedIps=r.allowed_ips,
                       createdTime=r.created_at, updatedTime=r.updated_at,
                       links=[Link(href=f"/api/v1/api-keys/{quote(r.id, safe='')}", rel="self")],
                       **{k: v for k, v in (("acl", r.acl), ("apiUser", r.api_user)) if v is not None}) for r in rows]
